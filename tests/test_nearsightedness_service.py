"""The nearsightedness analysis as a campaign (kind: nearsightedness): submitted through the
CLI, labelled by a real worker process against the real server, compared with the
in-process analysis; its labels never reach training."""

from __future__ import annotations

import json
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
from ase import Atoms
from ase.calculators.emt import EMT
from service import cli

from nft_fw.parents.parent import Parent, get_parent, register_parent

pytestmark = pytest.mark.integration

RADII = [4.0, 6.0, 8.0, 12.0]
CENTRES = [0, 20, 40]
EXAMPLE = (
    Path(__file__).resolve().parent.parent
    / "nft_fw"
    / "examples"
    / "pt260-nearsightedness-emt.yaml"
)


def ns_campaign(name: str, parent: str = "emt", **extra: Any) -> dict[str, Any]:
    """79-atom rattled Pt octahedron, 3 centres × 4 radii, whole particle included."""
    spec: dict[str, Any] = {
        "kind": "nearsightedness",
        "name": name,
        "target": {
            "builder": {"kind": "octahedron", "element": "Pt", "length": 5, "cutoff": 1},
            "rattle": {"stdev": 0.1, "seed": 0},
        },
        "parent": {"name": parent, "params": {}},
        "centres": CENTRES,
        "radii": RADII,
        "tolerance_eV_per_A": 0.05,
        "service": {"labels_per_firework": 3},
    }
    spec.update(extra)
    return spec


def _worker(conn: Any, work_dir: Path, *extra: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "nft_fw", "worker", "--data-dir", str(conn.server.data_dir),
         "--db-name", conn.db_name, "--work-dir", str(work_dir), "--until-done", "--idle-timeout", "8",
         "--poll", "0.2", *extra],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip


def _states(lp: Any, name: str) -> dict[int, str]:
    return {d["fw_id"]: d["state"] for d in lp.fireworks.find({"spec.campaign": name})}


@pytest.fixture(scope="module")
def finished(db_server: Any, tmp_path_factory: pytest.TempPathFactory) -> Any:
    """The campaign submitted with `nft-fw submit` and drained by one `nft-fw worker`."""
    from nft_fw.launchpad.connection import embedded

    tmp = tmp_path_factory.mktemp("ns")
    conn = embedded(db_server.data_dir, db_name=f"t_{uuid.uuid4().hex[:12]}", start=False)
    conn.launchpad.reset("", require_password=False)
    name = f"ns-{uuid.uuid4().hex[:6]}"
    path = tmp / "ns.yaml"
    path.write_text(yaml.safe_dump(ns_campaign(name)))
    out = cli(conn, "submit", str(path), "--json")
    assert out.returncode == 0, out.stderr
    fw_ids = json.loads(out.stdout)["fw_ids"]
    worker = _worker(conn, tmp / "worker")
    assert worker.wait(timeout=300) == 0
    yield conn, name, path, fw_ids, tmp
    conn.launchpad.connection.drop_database(conn.db_name)
    conn.close(stop_server=False)


def _report(conn: Any, name: str) -> dict[str, Any]:
    from bson import ObjectId

    from nft_fw.launchpad import records

    doc = records.get_campaign(conn.launchpad.db, name)
    data = records.get_bytes(conn.launchpad.db, ObjectId(doc["report_files"]["json"]))
    return json.loads(data)


def test_every_firework_completes_and_the_report_is_stored(finished: Any) -> None:
    from bson import ObjectId

    from nft_fw.launchpad import records

    conn, name, path, fw_ids, _ = finished
    lp, db = conn.launchpad, conn.launchpad.db
    states = _states(lp, name)
    assert sorted(states) == fw_ids and set(states.values()) == {"COMPLETED"}
    roles = [d["spec"]["nft_role"] for d in lp.fireworks.find({"spec.campaign": name})]
    assert roles.count("full") == 1 and roles.count("analysis") == 1
    analysis = lp.fireworks.find_one({"spec.campaign": name, "spec.nft_role": "analysis"})
    assert analysis["spec"]["_allow_fizzled_parents"] is True
    wf = lp.workflows.find_one({"nodes": analysis["fw_id"]})
    assert wf["name"] == name  # one workflow, named after the campaign
    parents = sorted(wf["parent_links"][str(analysis["fw_id"])])
    assert parents == [i for i in fw_ids if i != analysis["fw_id"]]  # every label Firework
    doc = records.get_campaign(db, name)
    assert doc["state"] == "completed" and doc["kind"] == "nearsightedness"
    summary = doc["summary"]
    assert summary["recommended_radius_A"] in RADII and summary["reference"] == "full"
    assert summary["missing"] == 0
    assert [row["radius_A"] for row in summary["table"]] == RADII
    for row in summary["table"]:
        assert row["full_q1"] <= row["full_median"] <= row["full_q3"] <= row["full_max"]
    png = records.get_bytes(db, ObjectId(doc["report_files"]["figure"]))
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    assert _report(conn, name)["recommended_radius_A"] == summary["recommended_radius_A"]
    # the name is taken now: a second submit is refused and adds nothing
    again = cli(conn, "submit", str(path))
    assert again.returncode == 2 and "already exists" in again.stderr
    assert sorted(_states(lp, name)) == fw_ids


def test_stored_deviations_equal_the_in_process_analysis(finished: Any) -> None:
    from nft_fw.spec.campaign import load_any_campaign, prepare_any
    from nft_fw.steps.nearsightedness import nearsightedness

    conn, name, path, _, _ = finished
    prepared = prepare_any(load_any_campaign(path))
    emt = get_parent("emt")
    local = nearsightedness(prepared.target, emt, CENTRES, RADII, full=True)
    stored = _report(conn, name)
    assert stored["centres"] == CENTRES and stored["radii_A"] == RADII
    full = np.asarray(stored["deviation_from_full"])
    largest = np.asarray(stored["deviation_from_largest"])
    np.testing.assert_allclose(full, local.deviation_from_full(), rtol=0, atol=1e-8)
    np.testing.assert_allclose(largest, local.deviation_from_largest(), rtol=0, atol=1e-8)
    assert stored["recommended_radius_A"] == local.recommend(0.05)
    assert stored["labels"] == local.labels
    np.testing.assert_array_equal(stored["chunk_atoms"], local.n_atoms)
    # EMT's force reaches exactly force_locality_A: beyond it the chunk force is exact
    assert emt.force_locality_A == pytest.approx(11.75, abs=0.01)
    beyond = [k for k, r in enumerate(RADII) if r >= emt.force_locality_A]
    assert beyond == [3]
    assert full[beyond].max() < 1e-6
    assert full[0].min() > 0.01  # a 4 Å chunk misses neighbours that matter


def test_labels_stay_out_of_training_and_are_distinct(finished: Any) -> None:
    from nft_fw.launchpad import nearsightedness as ns
    from nft_fw.launchpad import records

    conn, name, _, _, _ = finished
    db = conn.launchpad.db
    assert db[records.LABELS].count_documents({"campaign": name}) == 0
    assert db[records.LABELS].count_documents({}) == 0
    labels = ns.labels(db, name)
    hashes = [d["hash"] for d in labels]
    assert len(set(hashes)) == len(hashes)
    doc = records.get_campaign(db, name)
    assert len(labels) == doc["n_chunks"] + 1  # distinct chunks and the whole particle
    assert doc["n_chunks"] < len(CENTRES) * len(RADII) + 1
    assert sum(d["kind"] == "full" for d in labels) == 1
    unique = [i for i in db[ns.NS_LABELS].index_information().values() if i.get("unique")]
    assert [k for k, _ in unique[0]["key"]] == ["campaign", "hash", "parent_hash"]


def test_status_and_report_commands_show_the_campaign(finished: Any) -> None:
    conn, name, _, _, tmp = finished
    out = cli(conn, "status", name, "--json")
    assert out.returncode == 0, out.stderr
    (row,) = json.loads(out.stdout)
    assert row["state"] == "completed" and row["labels"] == row["nearsightedness"]["labels"]
    assert row["nearsightedness"]["planned_labels"] == row["labels"]
    text = cli(conn, "status", name)
    assert text.returncode == 0 and "recommended chunk radius" in text.stdout
    report = cli(conn, "report", name, "-o", str(tmp / "report"))
    assert report.returncode == 0, report.stderr
    data = json.loads((tmp / "report" / "nearsightedness.json").read_text())
    assert data["recommended_radius_A"] == _report(conn, name)["recommended_radius_A"]
    assert (tmp / "report" / "nearsightedness.png").read_bytes()[:4] == b"\x89PNG"
    from browser import render

    seen = render(tmp / "report" / "report.html", tmp / "browser")
    assert seen["images"] == seen["decoded"] == 1 and seen["fetched"] == []
    assert seen["tables"] == [1 + len(data["radii_A"])]
    assert "recommended chunk radius" in seen["text"] and f"name: {name}" in seen["text"]
    listed = cli(conn, "labels", name, "--json")
    assert listed.returncode == 0, listed.stderr
    rows = json.loads(listed.stdout)
    assert len(rows) == row["labels"]
    assert {r["kind"] for r in rows} == {"chunk", "full"}
    assert {r["radius_A"] for r in rows if r["kind"] == "chunk"} <= set(RADII)
    history = cli(conn, "history", name, "--json")  # its result: the per-radius table
    assert history.returncode == 0, history.stderr
    assert json.loads(history.stdout) == row["nearsightedness"]
    export = cli(conn, "export", name, "-o", str(tmp / "model"))
    assert export.returncode == 2 and "trains no model" in " ".join(export.stderr.split())
    assert not (tmp / "model").exists()


def test_rerun_of_a_label_firework_adds_no_label(finished: Any) -> None:
    from nft_fw.launchpad import nearsightedness as ns

    conn, name, _, _, tmp = finished
    lp, db = conn.launchpad, conn.launchpad.db
    before = sorted((d["hash"], str(d["_id"])) for d in ns.labels(db, name))
    label_fw = lp.fireworks.find_one({"spec.campaign": name, "spec.nft_role": "label"})["fw_id"]
    lp.rerun_fw(label_fw)
    assert _states(lp, name)[label_fw] == "READY"
    worker = _worker(conn, tmp / "rerun", "--max", "2")  # the label, then the analysis
    assert worker.wait(timeout=300) == 0
    assert set(_states(lp, name).values()) == {"COMPLETED"}
    assert sorted((d["hash"], str(d["_id"])) for d in ns.labels(db, name)) == before
    launch = lp.get_fw_by_id(label_fw).launches[-1]
    assert launch.action.stored_data["new"] == 0
    assert launch.action.stored_data["existing"] == 3


@pytest.mark.parametrize(
    ("change", "field"),
    [({"radii": [4.0, -2.0]}, "radii.1"), ({"centres": [0, 1], "spread": 3}, "spread")],
)
def test_bad_file_is_refused_before_the_database(
    connection: Any, tmp_path: Path, change: dict[str, Any], field: str
) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(ns_campaign("bad", **change)))
    out = cli(connection, "submit", str(path))
    assert out.returncode == 2
    assert f"{field}:" in out.stderr and "bad.yaml" in out.stderr
    db = connection.launchpad.db
    assert connection.launchpad.fireworks.count_documents({}) == 0
    assert db["nft_campaigns"].count_documents({}) == 0
    assert "nft_ns_labels" not in db.list_collection_names()
    assert db["nft_files.files"].count_documents({}) == 0
    assert cli(connection, "validate", str(path)).returncode == 2


class _BrokenEMT(EMT):
    """EMT that raises on structures of 30–60 atoms: middle-sized chunks fail."""

    def calculate(self, atoms: Any = None, *args: Any, **kwargs: Any) -> None:
        if atoms is not None and 30 <= len(atoms) <= 60:
            raise RuntimeError(f"injected failure on {len(atoms)} atoms")
        super().calculate(atoms, *args, **kwargs)


def _broken_factory(params: dict[str, Any]) -> Parent:
    emt = get_parent("emt")
    return Parent(
        name="ns-broken-emt",
        params=params,
        make_calculator=_BrokenEMT,
        supported_elements=emt.supported_elements,
        force_locality_A=emt.force_locality_A,
        lattice_constant_fn=emt.lattice_constant_fn,
    )


register_parent("ns-broken-emt", _broken_factory)


def test_a_failed_chunk_is_recorded_and_the_analysis_reports_it_missing(
    connection: Any, tmp_path: Path
) -> None:
    from fireworks import FWorker
    from fireworks.core.rocket_launcher import rapidfire

    from nft_fw.firetasks.submission import submit
    from nft_fw.launchpad import nearsightedness as ns
    from nft_fw.launchpad import records
    from nft_fw.spec.campaign import load_any_campaign, prepare_any

    lp, db = connection.launchpad, connection.launchpad.db
    prepared = prepare_any(load_any_campaign(ns_campaign("broken", parent="ns-broken-emt")))
    submit(lp, prepared)
    rapidfire(lp, FWorker(), nlaunches=0, m_dir=str(tmp_path), strm_lvl="ERROR")
    states = {d["spec"]["nft_role"] + str(d["fw_id"]): d["state"] for d in lp.fireworks.find()}
    assert "FIZZLED" in states.values()
    assert [s for k, s in states.items() if k.startswith("analysis")] == ["COMPLETED"]
    n_atoms = np.asarray(prepared.plan.n_atoms)
    broken = (n_atoms >= 30) & (n_atoms <= 60)
    assert broken.any() and not broken.all()
    failures = records.failures(db, "broken")
    assert failures and all(f["phase"] == "nearsightedness" for f in failures)
    assert all("injected failure" in f["error"] for f in failures)
    assert db[ns.NS_LABELS].count_documents({"hash": {"$in": [f["hash"] for f in failures]}}) == 0
    doc = records.get_campaign(db, "broken")
    assert doc["state"] == "completed" and doc["summary"]["missing"] == len(failures)
    data = _report(connection, "broken")
    assert {m["hash"] for m in data["missing"]} == {f["hash"] for f in failures}
    full = np.asarray(data["deviation_from_full"], dtype=float)  # null → NaN
    np.testing.assert_array_equal(np.isnan(full), broken)
    local = _local(prepared)  # the complete analysis, EMT in this process
    ok = ~broken
    np.testing.assert_allclose(full[ok], local.deviation_from_full()[ok], rtol=0, atol=1e-8)
    for k, row in enumerate(data["table"]):
        if broken[k].all():
            assert row["full_max"] is None
        else:
            assert row["full_max"] == pytest.approx(local.deviation_from_full()[k][ok[k]].max())


def _local(prepared: Any) -> Any:
    from nft_fw.steps.nearsightedness import nearsightedness

    return nearsightedness(prepared.target, get_parent("emt"), CENTRES, RADII, full=True)


def test_tasks_round_trip_and_the_example_validates() -> None:
    from nft_fw.firetasks.nearsightedness import (
        NearsightednessLabelTask,
        NearsightednessReportTask,
    )
    from nft_fw.spec.campaign import load_any_campaign, prepare_any

    for task in (
        NearsightednessLabelTask(campaign="c", items=[{"kind": "full"}]),
        NearsightednessReportTask(campaign="c"),
    ):
        d = task.to_dict()
        assert d["_fw_name"] == f"{{{{nft_fw.firetasks.nearsightedness.{type(task).__name__}}}}}"
        back = type(task).from_dict(d)
        assert type(back) is type(task) and back.to_dict() == d
    prepared = prepare_any(load_any_campaign(EXAMPLE))
    assert len(prepared.centres) == 8 and prepared.radii == [4.0, 6.0, 8.0, 10.0, 12.0]
    assert prepared.parent.name == "emt" and len(prepared.target) == 260
    assert isinstance(prepared.target, Atoms) and prepared.warnings == []
