"""A transfer target's follow-up campaign continued from its own export: the campaign file
submitted again with the target's ``prior_labels`` (and ``follow_up`` settings) replays the
follow-up's exported iterations with no parent call, completes the iteration the export cut
off with the chunks it had chosen, and labels only past them. Real server, real worker
processes, EMT."""

from __future__ import annotations

import copy
import uuid
from pathlib import Path
from typing import Any

import pytest
from service import cli, submit, tail, worker
from specs import tiny

pytestmark = pytest.mark.integration

# stretched by a third: far outside what the tiny model saw, so its δ there is flagged
# (2.6× the trained target's in one process)
BIG = {
    "builder": {"kind": "octahedron", "element": "Pt", "length": 4, "cutoff": 1,
                "lattice_constant": 5.2},
    "rattle": {"stdev": 0.1, "seed": 3},
}  # fmt: skip


def _campaign(name: str, **target: Any) -> dict[str, Any]:
    spec = tiny(name)
    spec["transfer"] = [{**BIG, "name": "big", "retrain": True, **target}]
    return spec


def _run(conn: Any, spec: dict[str, Any], work: Path) -> str:
    """Submit the campaign and run it with one worker process until no work can come: the
    campaign, its flagged transfer target and the follow-up campaign that target becomes;
    returns the follow-up's name."""
    from nft_fw.launchpad import records

    submit(conn, spec)
    proc = worker(conn, work, "--until-done", "--idle-timeout", "8", "--poll", "0.2")
    assert proc.wait(timeout=600) == 0, tail(work)
    db = conn.launchpad.db
    (transfer,) = records.iterations(db, spec["name"], phase="transfer")
    assert transfer["flagged"], transfer["uncertainty_ratio"]
    (child,) = records.follow_ups(db, spec["name"])
    assert records.get_campaign(db, child)["state"] == "completed", tail(work)
    return child


@pytest.fixture
def conn(db_server: Any) -> Any:
    from nft_fw.launchpad.connection import embedded

    conn = embedded(db_server.data_dir, db_name=f"t_{uuid.uuid4().hex[:12]}", start=False)
    conn.launchpad.reset("", require_password=False)
    yield conn
    conn.launchpad.connection.drop_database(conn.db_name)
    conn.close(stop_server=False)


def test_a_follow_up_continued_from_its_export_labels_only_past_it(
    conn: Any, tmp_path: Path
) -> None:
    from nft_fw.labels import files as labelset
    from nft_fw.launchpad import records

    first = _run(conn, _campaign("fu", follow_up={"nft.max_iterations": 1}), tmp_path / "a")
    db = conn.launchpad.db
    out = cli(conn, "labels", first, "--export", str(tmp_path / "first.extxyz"))
    assert out.returncode == 0, out.stderr
    every = labelset.read(tmp_path / "first.extxyz")
    own = [f for f in every if f.info.get("nft_phase") == "nft"]
    assert len(own) == 3 and {f.info["nft_number"] for f in own} == {1}
    # exported while its iteration 1 was labelled: one chunk not yet in
    dropped = own[-1]
    labelset.write(tmp_path / "cut.extxyz", [f for f in every if f is not dropped])

    spec = _campaign(
        "again",
        prior_labels={"file": str(tmp_path / "cut.extxyz")},
        follow_up={"nft.max_iterations": 2},
    )
    second = _run(conn, copy.deepcopy(spec), tmp_path / "b")
    assert second == "again-big"
    doc = records.get_campaign(db, second)
    assert doc["prior"]["labels"]["chunk"] == sum(f.info["nft_kind"] == "chunk" for f in every) - 1
    assert doc["spec"]["nft"]["max_iterations"] == 2
    labels = [d for d in records.labels(db, second) if d.get("phase") == "nft"]
    given = [d for d in labels if "prior_campaign" in d]
    computed = [d for d in labels if "prior_campaign" not in d]
    # iteration 1 replayed from the file and completed with the chunk the export lacked
    # (the same model chose it again); only iteration 2 is new
    assert {d["hash"] for d in given} == {f.info["nft_hash"] for f in own[:-1]}
    assert {d["prior_campaign"] for d in given} == {first}
    assert [d["hash"] for d in computed if d["iteration"] == 1] == [dropped.info["nft_hash"]]
    assert {d["iteration"] for d in computed} == {1, 2}
    assert sum(d["iteration"] == 2 for d in computed) == 3
    label_fws = conn.launchpad.fireworks.find(
        {"spec.campaign": second, "spec.nft_role": "label"}, {"spec._tasks": 1}
    )
    items = [i for fw in label_fws for t in fw["spec"]["_tasks"] for i in t["items"]]
    assert len(items) == len(computed)
    first_iterations = records.iterations(db, first)
    second_iterations = records.iterations(db, second)
    assert [r["iteration"] for r in second_iterations] == [0, 1, 2]
    for a, b in zip(first_iterations, second_iterations[:2], strict=True):
        assert b["structure_uncertainty"] == pytest.approx(a["structure_uncertainty"], rel=1e-6)
    assert second_iterations[0]["next_from_prior"] == 2
