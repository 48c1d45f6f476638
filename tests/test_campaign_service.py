"""A whole NFT campaign through the service: real server, two real worker processes, EMT."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from service import cli
from specs import small_campaign

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def finished(db_server: Any, tmp_path_factory: pytest.TempPathFactory) -> Any:
    """Run the small campaign once with `nft-fw run`'s own code and two worker processes."""
    import uuid

    from nft_fw.cli import run_campaign
    from nft_fw.launchpad.connection import embedded
    from nft_fw.spec.campaign import load_campaign, prepare

    tmp = tmp_path_factory.mktemp("campaign")
    conn = embedded(db_server.data_dir, db_name=f"t_{uuid.uuid4().hex[:12]}", start=False)
    conn.launchpad.reset("", require_password=False)
    prepared = prepare(load_campaign(small_campaign("p79")))
    code = run_campaign(conn, prepared, 2, tmp / "workers", tmp / "report")
    yield conn, prepared, code, tmp
    conn.launchpad.connection.drop_database(conn.db_name)
    conn.close(stop_server=False)


def test_campaign_completes_with_every_firework_completed(finished: Any) -> None:
    from nft_fw.launchpad import records

    conn, _, code, tmp = finished
    assert code == 0
    lp = conn.launchpad
    states = {d["state"] for d in lp.fireworks.find({"spec.campaign": "p79"})}
    assert states == {"COMPLETED"}
    roles = [d["spec"]["nft_role"] for d in lp.fireworks.find({"spec.campaign": "p79"})]
    assert roles.count("train") == 3 and roles.count("init") == 1 and roles.count("report") == 1
    # one workflow, named after the campaign, holds every Firework of it
    (wf,) = list(lp.workflows.find({"metadata.campaign": "p79"}))
    assert wf["name"] == "p79" and wf["state"] == "COMPLETED"
    fws = {d["fw_id"]: d for d in lp.fireworks.find({"spec.campaign": "p79"})}
    assert sorted(wf["nodes"]) == sorted(fws)
    # each trainer's round was appended after it: trainer k → labels of k+1 → trainer k+1,
    # and the report waits at the end
    links = {int(k): v for k, v in wf["links"].items()}
    by = {(d["spec"]["nft_role"], d["spec"].get("nft_round")): i for i, d in fws.items()}
    report = by["report", None]
    assert links[report] == []
    for k in (0, 1):
        labels = {i for i, d in fws.items() if d["spec"]["nft_role"] == "label"
                  and d["spec"]["nft_round"] == k + 1}  # fmt: skip
        assert labels and labels <= set(links[by["train", k]])
        assert all(fws[i]["spec"]["nft_appended_by"] == by["train", k] for i in labels)
        assert all(links[i] == [by["train", k + 1]] for i in labels)
    assert report in links[by["train", 2]]
    workers = {d["fworker"]["name"] for d in lp.launches.find({})}
    assert workers and workers <= {"local-0", "local-1"}  # which of the two is up to the queue
    doc = records.get_campaign(lp.db, "p79")
    assert doc["state"] == "completed" and doc["stop_reason"] == "max_iterations"
    for name in ("history.png", "parity.png", "residual_vs_uncertainty.png", "summary.json"):
        assert (tmp / "report" / name).stat().st_size > 0


def test_report_html_opens_in_a_browser_with_figures_table_and_campaign(finished: Any) -> None:
    """report.html, as the campaign's own report task and ``nft-fw run`` write it: every
    figure decodes in a real browser with the network shut off, the history table has one
    row per iteration with the kept one marked, and the page names the stop, the true and
    out-of-sample errors and the campaign file."""
    from browser import render
    from bson import ObjectId

    from nft_fw.launchpad import records

    conn, _, code, tmp = finished
    assert code == 0
    seen = render(tmp / "report" / "report.html", tmp / "browser")
    assert seen["title"] == "NFT campaign p79"
    # history, parity, residual against δ (the campaign has true forces)
    assert seen["images"] == seen["decoded"] == 3 and seen["fetched"] == []
    assert all(w > 100 and h > 100 for w, h in seen["image_sizes"])
    history = records.iterations(conn.launchpad.db, "p79")
    assert seen["tables"] == [1 + len(history)]
    doc = records.get_campaign(conn.launchpad.db, "p79")
    kept = doc["summary"]["best_iteration"]
    assert seen["kept_rows"] == [str(kept)]
    text = seen["text"]
    assert f"max_iterations: {doc['stop_detail']}" in text
    assert "true MAE" in text and "OOS MAE" in text and "out-of-sample MAE" in text
    best = next(r for r in history if r["iteration"] == kept)
    assert f"{best['true_force_mae']:.3f} eV/Å" in text
    assert "name: p79" in text and "chunks_per_iteration: 6" in text
    stored = records.get_bytes(conn.launchpad.db, ObjectId(doc["report_files"]["html"]))
    assert stored.decode().count("data:image/png;base64,") == 3  # kept with the campaign


def test_labels_are_distinct_chunks_and_match_the_history(finished: Any) -> None:
    from nft_fw.launchpad import records

    conn, _, _, _ = finished
    db = conn.launchpad.db
    labels = records.labels(db, "p79")
    hashes = [d["hash"] for d in labels]
    assert len(hashes) == len(set(hashes))
    chunks = [d for d in labels if d["kind"] == "chunk"]
    assert len([d for d in labels if d["kind"] == "image"]) == 6
    assert len(chunks) == 12  # 2 iterations × 6 chunks, every centre distinct
    assert len({d["centre"] for d in chunks}) == 12
    history = records.iterations(db, "p79")
    assert [r["iteration"] for r in history] == [0, 1, 2]
    assert [r["n_chunks"] for r in history] == [0, 6, 12]
    # the trained MAE against EMT falls as chunks are added
    assert history[-1]["true_force_mae"] < history[0]["true_force_mae"]
    # out of sample: iteration k records iteration k−1's error on the chunks it chose
    from bson import ObjectId

    assert "oos_mae" not in history[0]
    for k in (1, 2):
        before = records.get_array(db, ObjectId(history[k - 1]["forces_file"]))
        delta = records.get_array(db, ObjectId(history[k - 1]["delta_file"]))
        new = [d for d in chunks if d["iteration"] == k]
        err = [np.linalg.norm(np.asarray(d["central_force"]) - before[d["centre"]]) for d in new]
        assert history[k]["oos_n"] == 6
        assert history[k]["oos_mae"] == pytest.approx(np.mean(err), rel=1e-9)
        assert history[k]["oos_max"] == pytest.approx(np.max(err), rel=1e-9)
        within = np.mean([e <= delta[d["centre"]] for e, d in zip(err, new, strict=True)])
        assert history[k]["oos_fraction_within_delta"] == pytest.approx(within)
    # the most uncertain atoms are harder than the average atom
    assert history[1]["oos_mae"] > history[0]["true_force_mae"] * 0.5
    # the calibration of δ: none below 10 points, then the 95 % quantile of error / δ
    assert "calibration_scale" not in history[1]
    errors = history[1]["oos_errors"] + history[2]["oos_errors"]
    deltas = history[1]["oos_deltas"] + history[2]["oos_deltas"]
    ratio = np.asarray(errors) / np.asarray(deltas)
    assert history[2]["calibration_n"] == 12
    assert history[2]["calibration_scale"] == pytest.approx(
        np.quantile(ratio, 0.95, method="higher")
    )
    assert np.mean(ratio <= history[2]["calibration_scale"]) >= 0.95
    assert history[2]["calibrated_structure_uncertainty"] == pytest.approx(
        history[2]["calibration_scale"] * history[2]["structure_uncertainty"]
    )
    assert 0.0 <= history[2]["fraction_within_calibrated_delta"] <= 1.0


def test_history_tables_fit_the_terminal_and_wide_shows_every_column(finished: Any) -> None:
    import os

    from nft_fw.report import plots

    conn, _, _, _ = finished

    def history(columns: int, *extra: str) -> list[str]:
        out = subprocess.run(
            [sys.executable, "-m", "nft_fw", "history", "p79", *extra, "--data-dir",
             str(conn.server.data_dir), "--db-name", conn.db_name],
            capture_output=True, text=True, timeout=300, env={**os.environ, "COLUMNS": str(columns)},
        )  # fmt: skip
        assert out.returncode == 0, out.stderr
        return out.stdout.splitlines()

    def header_columns(lines: list[str]) -> int:
        return next(line for line in lines if line.startswith("┏")).count("┳") + 1

    narrow = history(80)
    assert max(len(line) for line in narrow) <= 80
    assert any("not shown (--wide shows them)" in line for line in narrow)
    assert header_columns(narrow) < len(plots.HISTORY_COLUMNS)
    assert not any("…" in line for line in narrow)  # no cell cut
    wide = history(80, "--wide")
    assert header_columns(wide) == len(plots.HISTORY_COLUMNS)
    assert not any("…" in line or "not shown" in line for line in wide)


def test_history_json_matches_the_records(finished: Any) -> None:
    from nft_fw.launchpad import records

    conn, _, _, _ = finished
    out = cli(conn, "history", "p79", "--json")
    assert out.returncode == 0, out.stderr
    printed = json.loads(out.stdout)
    stored = records.iterations(conn.launchpad.db, "p79")
    assert [r["structure_uncertainty"] for r in printed] == [
        r["structure_uncertainty"] for r in stored
    ]
    assert [r["training"]["loss"] for r in printed] == [r["training"]["loss"] for r in stored]


def test_history_against_whole_structure_labels_gives_each_models_true_error(
    finished: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``history --against`` on the campaign's own export: its whole-target validation
    frame gives every iteration's model the very true MAE and max the campaign recorded
    for it (two paths: the trainer's validation and the stored model loaded afresh); its
    chunk frames are skipped; bad files are refused naming the file and the fix."""
    import ase.io

    from nft_fw.cli import main
    from nft_fw.launchpad import records
    from nft_fw.report import references

    conn, _, _, _ = finished
    where = ["--data-dir", str(conn.server.data_dir), "--db-name", conn.db_name]
    path = tmp_path / "p79-labels.extxyz"
    assert main(["labels", "p79", "--export", str(path), *where]) == 0
    frames = ase.io.read(path, ":")
    (full,) = [k for k, f in enumerate(frames) if f.info["nft_kind"] == "full"]
    images = [k for k, f in enumerate(frames) if f.info["nft_kind"] == "image"]
    capsys.readouterr()
    assert main(["history", "p79", "--against", str(path), "--json", *where]) == 0
    rows = json.loads(capsys.readouterr().out)
    stored = records.iterations(conn.launchpad.db, "p79")
    assert [(r["phase"], r["iteration"]) for r in rows] == [
        (r["phase"], r["iteration"]) for r in stored
    ]
    names = {f"p79-labels[{k}]" for k in [full, *images]}
    for row, rec in zip(rows, stored, strict=True):
        assert set(row["against"]) == names  # no chunk frame among them
        mine = row["against"][f"p79-labels[{full}]"]
        assert mine["true_force_mae"] == pytest.approx(rec["true_force_mae"], rel=1e-5)
        assert mine["true_force_max"] == pytest.approx(rec["true_force_max"], rel=1e-5)
        assert mine["structure_uncertainty"] == pytest.approx(
            rec["structure_uncertainty"], rel=1e-5
        )
    assert main(["history", "p79", "--against", str(path), *where]) == 0
    table = capsys.readouterr().out
    assert f"p79-labels[{full}]" in table and "mean" in table
    # only chunks, or no file: refused, naming the file and what to give
    chunks = tmp_path / "chunks.extxyz"
    ase.io.write(chunks, [f for f in frames if f.info["nft_kind"] == "chunk"], format="extxyz")
    with pytest.raises(references.ReferenceFileError, match="whole-structure labels") as err:
        references.read_references([chunks])
    assert str(chunks) in str(err.value)
    with pytest.raises(references.ReferenceFileError, match=r"none\.extxyz"):
        references.read_references([tmp_path / "none.extxyz"])
    # an element the model never saw: the command refuses, saying which
    other = frames[full].copy()
    other.numbers[:] = 29
    other.calc = frames[full].calc
    ase.io.write(tmp_path / "cu.extxyz", other, format="extxyz")
    assert main(["history", "p79", "--against", str(tmp_path / "cu.extxyz"), *where]) == 2
    said = capsys.readouterr().err
    assert "Cu" in said and "not trained on" in said


def test_an_export_appended_to_only_grows(
    finished: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``labels --export FILE --append`` on a file holding part of the labels (as an export
    made before the last labels came): the frames there stay byte for byte, the missing ones
    follow, and the file then holds every label once; again, it adds nothing."""
    import ase
    import ase.io

    from nft_fw.cli import main
    from nft_fw.labels import files as labelset

    conn, _, _, _ = finished
    where = ["--data-dir", str(conn.server.data_dir), "--db-name", conn.db_name]
    whole = tmp_path / "whole.extxyz"
    assert main(["labels", "p79", "--export", str(whole), *where]) == 0
    frames = labelset.read(whole)
    part = tmp_path / "part.extxyz"
    labelset.write(part, frames[::2])  # every other label, as an earlier export might hold
    before = part.read_bytes()
    capsys.readouterr()
    assert main(["labels", "p79", "--export", str(part), "--append", *where]) == 0
    said = capsys.readouterr().out
    missing = len(frames) - len(frames[::2])
    assert f"{missing} new labels appended" in said and f"{len(frames[::2])} already" in said
    after = part.read_bytes()
    assert after.startswith(before) and len(after) > len(before)
    grown = [f.info["nft_hash"] for f in ase.io.read(part, ":")]
    assert sorted(grown) == sorted(f.info["nft_hash"] for f in frames)
    assert len(set(grown)) == len(grown)
    assert main(["labels", "p79", "--export", str(part), "--append", *where]) == 0
    assert "0 new labels appended" in capsys.readouterr().out and part.read_bytes() == after
    # a file that is not an export is refused, untouched
    plain = tmp_path / "plain.extxyz"
    ase.io.write(plain, ase.Atoms(frames[0].numbers, frames[0].positions), format="extxyz")
    text = plain.read_bytes()
    assert main(["labels", "p79", "--export", str(plain), "--append", *where]) == 2
    assert "not a label export" in capsys.readouterr().err and plain.read_bytes() == text


def test_exported_labels_read_back_with_plain_ase_equal_to_the_database(
    finished: Any, tmp_path: Path
) -> None:
    import ase.io
    import numpy as np
    from bson import ObjectId

    from nft_fw.launchpad import records

    conn, _, _, _ = finished
    db = conn.launchpad.db
    path = tmp_path / "p79-labels.extxyz"
    out = cli(conn, "labels", "p79", "--export", str(path))
    assert out.returncode == 0, out.stderr
    frames = {f.info["nft_hash"]: f for f in ase.io.read(path, ":")}
    stored = records.labels(db, "p79")
    doc = records.get_campaign(db, "p79")
    assert len(frames) == len(stored) + 1  # every label, and the whole-target validation label
    for d in stored:
        f = frames[d["hash"]]
        assert np.array_equal(f.positions, np.asarray(d["positions"]))  # float64, exact
        assert np.array_equal(f.get_forces(), np.asarray(d["forces"]))
        assert f.get_potential_energy() == d["energy"]
        assert f.info["nft_parent_hash"] == d["parent_hash"] == doc["parent_hash"]
        assert f.info["nft_number"] == d["iteration"]
        if d["kind"] == "chunk":
            assert f.info["nft_phase"] == "nft" and f.info["nft_centre"] == d["centre"]
            assert f.info["nft_radius_A"] == d["radius"]
            assert np.flatnonzero(f.arrays["nft_trained"]).tolist() == [0]
            assert np.array_equal(f.get_forces()[0], np.asarray(d["central_force"]))
        else:
            assert f.info["nft_phase"] == "initial" and f.pbc.all()
            assert np.array_equal(f.cell.array, np.asarray(d["cell"]))
            assert f.arrays["nft_trained"].all()
    (full,) = [f for f in frames.values() if f.info["nft_phase"] == "validation"]
    true = records.get_array(db, ObjectId(doc["true_forces_file"]))
    target = records.get_structure(db, ObjectId(doc["target_file"]))
    assert np.array_equal(full.get_forces(), true) and np.array_equal(
        full.positions, target.positions
    )
    assert not full.arrays["nft_trained"].any()


def test_exported_model_reproduces_the_trainer(finished: Any, tmp_path: Path) -> None:
    from bson import ObjectId

    from nft_fw.launchpad import campaigns, records
    from nft_fw.potential.calculator import EnsembleCalculator

    conn, _, _, _ = finished
    out = cli(conn, "export", "p79", "-o", str(tmp_path / "model"))
    assert out.returncode == 0, out.stderr
    # an NFT-only campaign made no structures; asking for nothing is a usage error
    made = cli(conn, "export", "p79", "--structures", str(tmp_path / "made"))
    assert made.returncode == 0 and "nothing to write" in made.stdout, made.stdout + made.stderr
    neither = cli(conn, "export", "p79")
    assert neither.returncode != 0 and "--structures DIR" in neither.stderr
    calc = EnsembleCalculator.load(tmp_path / "model")
    atoms = campaigns.context(conn.launchpad.db, "p79").target
    atoms.calc = calc
    _, rec = campaigns.best_model(conn.launchpad.db, "p79")
    stored = records.get_array(conn.launchpad.db, ObjectId(rec["forces_file"]))
    np.testing.assert_allclose(atoms.get_forces(), stored, atol=1e-5)
    delta = records.get_array(conn.launchpad.db, ObjectId(rec["delta_file"]))
    np.testing.assert_allclose(calc.results["uncertainties"], delta, rtol=1e-4, atol=1e-5)
    # the model carries the campaign's latest calibration of δ
    latest = records.iterations(conn.launchpad.db, "p79")[-1]
    assert calc.calibration is not None
    assert calc.calibration.scale == pytest.approx(latest["calibration_scale"])
    assert calc.calibration.n_points == 12 and "p79" in calc.calibration.source
    assert f"calibrated δ = {calc.calibration.scale:.3f}·δ" in out.stdout
    np.testing.assert_allclose(
        calc.get_calibrated_uncertainties(atoms), calc.calibration.scale * delta, rtol=1e-4
    )


def test_lpad_shows_the_campaign_as_one_workflow(finished: Any, tmp_path: Path) -> None:
    conn, _, _, _ = finished
    lp_file = conn.write_launchpad_file(tmp_path / "my_launchpad.yaml")
    out = subprocess.run(
        [str(Path(sys.executable).parent / "lpad"), "-l", str(lp_file), "get_wflows", "-n",
         "p79", "-d", "more"],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    (wf,) = (
        json.loads(out.stdout) if out.stdout.lstrip().startswith("[") else [json.loads(out.stdout)]
    )
    assert wf["name"].rsplit("--", 1)[0] == "p79" and wf["state"] == "COMPLETED"  # NAME--ID
    n = conn.launchpad.fireworks.count_documents({"spec.campaign": "p79"})
    assert len(wf["states"]) == n  # {"NAME--ID": state} of every Firework of the campaign
    assert set(wf["states"].values()) == {"COMPLETED"}


def test_rerun_label_firework_reruns_what_follows_once_and_label_worker_skips_trainers(
    finished: Any,
) -> None:
    """``lpad rerun_fws`` on a label Firework: FireWorks reruns it and everything after it;
    the label is not stored twice, no trainer appends its round twice, and a label worker
    leaves the trainers to a train worker."""
    from nft_fw.launchpad import records

    conn, _, _, tmp = finished
    lp = conn.launchpad
    db = lp.db

    def snapshot() -> tuple[Any, ...]:
        fws = sorted((d["fw_id"], d["name"]) for d in lp.fireworks.find({"spec.campaign": "p79"}))
        its = [(r["phase"], r["iteration"]) for r in records.iterations(db, "p79")]
        return fws, its, db[records.LABELS].count_documents({"campaign": "p79"})

    before = snapshot()
    fw = lp.fireworks.find_one(
        {"spec.campaign": "p79", "spec.nft_role": "label", "spec.nft_round": 1}
    )
    trainer = lp.fireworks.find_one(
        {"spec.campaign": "p79", "spec.nft_role": "train", "spec.nft_round": 1}
    )
    lp.rerun_fw(fw["fw_id"])
    assert lp.get_fw_by_id(trainer["fw_id"]).state == "WAITING"  # rerun after its label
    work = ["--work-dir", str(tmp / "rerun")]  # launch directories go there, not the cwd
    out = cli(conn, "worker", "--category", "label", "--idle-timeout", "3", *work)
    assert out.returncode == 0, out.stderr
    assert lp.get_fw_by_id(fw["fw_id"]).state == "COMPLETED"
    assert lp.get_fw_by_id(trainer["fw_id"]).state == "READY"  # left to a train worker
    out = cli(conn, "worker", "--until-done", "--idle-timeout", "3", *work)
    assert out.returncode == 0, out.stderr
    assert {d["state"] for d in lp.fireworks.find({"spec.campaign": "p79"})} == {"COMPLETED"}
    assert snapshot() == before
    assert records.get_campaign(db, "p79")["state"] == "completed"


def test_the_next_steps_the_demo_prints_work_as_printed(finished: Any, tmp_path: Path) -> None:
    """Each command the demo prints after its campaign, run from the working directory it
    prints them for (except 'db stop', which would stop the tests' shared server)."""
    import os
    import shlex

    from nft_fw.cli import demo_next_steps

    conn, _, _, _ = finished
    data_dir = Path(conn.server.data_dir)
    steps = demo_next_steps(data_dir, conn.db_name, "p79")
    commands = [c for c, _ in steps]
    assert commands[-1].startswith("nft-fw db stop")
    bin_dir = Path(sys.executable).parent
    for cmd in commands[:-1]:
        argv = shlex.split(cmd)
        exe = [sys.executable, "-m", "nft_fw"] if argv[0] == "nft-fw" else [str(bin_dir / argv[0])]
        out = subprocess.run(
            [*exe, *argv[1:]], capture_output=True, text=True, timeout=300, check=False,
            cwd=tmp_path, env={**os.environ, "COLUMNS": "200"},
        )  # fmt: skip
        assert out.returncode == 0, (cmd, out.stdout[-2000:], out.stderr[-2000:])
        if "history" in argv or "status" in argv or "get_wflows" in argv:
            assert "p79" in out.stdout, (cmd, out.stdout[-2000:])
    assert (tmp_path / "p79-report" / "history.png").is_file()
    assert (tmp_path / "p79-model").is_dir()


def test_status_json_and_bad_submission_writes_nothing(finished: Any, tmp_path: Path) -> None:
    import yaml

    from nft_fw.launchpad import records

    conn, _, _, _ = finished
    out = cli(conn, "status", "--json")
    assert out.returncode == 0, out.stderr
    (row,) = json.loads(out.stdout)
    assert row["campaign"] == "p79" and row["state"] == "completed"
    assert row["labels"] == 18 and row["fizzled"] == []

    db = conn.launchpad.db
    before = (
        db[records.CAMPAIGNS].count_documents({}),
        conn.launchpad.fireworks.count_documents({}),
    )
    bad = small_campaign("bad-one")
    bad["nft"]["chunk_radius"] = -3.0
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(bad))
    out = cli(conn, "submit", str(path))
    assert out.returncode == 2
    assert "nft.chunk_radius" in out.stderr
    after = (
        db[records.CAMPAIGNS].count_documents({}),
        conn.launchpad.fireworks.count_documents({}),
    )
    assert after == before
    out = cli(conn, "history", "no-such-campaign")
    assert out.returncode == 2 and "no campaign named 'no-such-campaign'" in out.stderr
    # the message names the database and server it looked in (rich may wrap the line)
    said = " ".join(out.stderr.split())
    assert f"in database '{conn.db_name}' at 127.0.0.1:" in said, said


def test_submit_to_a_brand_new_database(db_server: Any) -> None:
    import uuid

    from nft_fw.firetasks.submission import submit
    from nft_fw.launchpad.connection import embedded
    from nft_fw.spec.campaign import load_campaign, prepare

    conn = embedded(db_server.data_dir, db_name=f"fresh_{uuid.uuid4().hex[:8]}", start=False)
    try:
        fw_ids = submit(conn.launchpad, prepare(load_campaign(small_campaign("first"))))
        assert fw_ids == [1, 2]
        roles = {conn.launchpad.get_fw_by_id(i).spec["nft_role"] for i in fw_ids}
        assert roles == {"init", "report"}
    finally:
        conn.launchpad.connection.drop_database(conn.db_name)
        conn.close(stop_server=False)


def test_submit_names_the_database_its_workers_must_use(db_server: Any, tmp_path: Path) -> None:
    """The worker command ``nft-fw submit`` prints reaches the campaign's own database."""
    import shlex
    import uuid

    import yaml

    from nft_fw.launchpad.connection import embedded

    conn = embedded(db_server.data_dir, db_name=f"hint_{uuid.uuid4().hex[:8]}", start=False)
    try:
        path = tmp_path / "hint.yaml"
        path.write_text(yaml.safe_dump(small_campaign("hinted")))
        out = cli(conn, "submit", str(path))
        assert out.returncode == 0, out.stderr
        said = " ".join(out.stdout.split())
        hint = said.split("start workers with: nft-fw worker ", 1)[1]
        assert f"--db-name {conn.db_name}" in hint, said
        status = subprocess.run(
            [sys.executable, "-m", "nft_fw", "status", "hinted", "--json", *shlex.split(hint)],
            capture_output=True, text=True, timeout=120, check=False,
        )  # fmt: skip
        assert status.returncode == 0, status.stderr
        assert "hinted" in status.stdout
    finally:
        conn.launchpad.connection.drop_database(conn.db_name)
        conn.close(stop_server=False)


def test_docker_check_verify_passes_a_well_routed_run_and_names_each_fault(finished: Any) -> None:
    """docker/check/verify.py (what ``make docker-check`` asserts about its campaign) on a
    copy of this finished campaign: the routing of a compose run written into its launch
    records (label workers L1 and L2, the trainer T) passes; a label Firework run by the
    trainer, a launch outside its category, a second launch and a doubled label fail."""
    import importlib.util
    import uuid

    conn, _, code, _ = finished
    assert code == 0
    spec = importlib.util.spec_from_file_location(
        "docker_check_verify", Path(__file__).parent.parent / "docker" / "check" / "verify.py"
    )
    assert spec is not None and spec.loader is not None
    verify = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(verify)

    from nft_fw.launchpad import records

    client = conn.launchpad.connection
    copy = client[f"verify_{uuid.uuid4().hex[:8]}"]
    try:
        for name in ("fireworks", "launches", records.CAMPAIGNS, records.LABELS):
            copy[name].insert_many(list(conn.db[name].find()))
        # the module's rerun test ran Fireworks of this campaign again: the copy keeps each
        # Firework's latest launch only, as a compose run that ran each once would have
        for d in copy.fireworks.find({"spec.campaign": "p79"}):
            copy.fireworks.update_one(
                {"_id": d["_id"]},
                {"$set": {"launches": d["launches"][-1:], "archived_launches": []}},
            )
        fws = {d["fw_id"]: d for d in copy.fireworks.find({"spec.campaign": "p79"})}
        label_fws = sorted(i for i, d in fws.items() if d["spec"]["nft_role"] == "label")
        for fw_id, fw in fws.items():
            label = fw["spec"]["nft_role"] == "label"
            host = ("L1", "L2")[fw_id % 2] if label else "T"
            worker = {"name": f"{host}-1", "category": fw["spec"]["_category"]}
            copy.launches.update_one(
                {"launch_id": fw["launches"][0]}, {"$set": {"host": host, "fworker": worker}}
            )
            copy[records.LABELS].update_many({"fw_id": fw_id}, {"$set": {"host": host}})
        problems, summary = verify.check(copy, "p79", {"L1", "L2"}, "T")
        assert problems == [] and summary["labels"] == summary["label_items"] > 0

        first = fws[label_fws[0]]
        copy.launches.update_one({"launch_id": first["launches"][0]}, {"$set": {"host": "T"}})
        copy.launches.update_one(
            {"launch_id": fws[label_fws[1]]["launches"][0]},
            {"$set": {"fworker.category": ["train"]}},
        )
        copy.fireworks.update_one({"fw_id": label_fws[2]}, {"$push": {"archived_launches": 99}})
        label = copy[records.LABELS].find_one({"fw_id": label_fws[3]}, {"_id": 0})
        copy[records.LABELS].drop_indexes()
        copy[records.LABELS].insert_one(label)
        problems, _ = verify.check(copy, "p79", {"L1", "L2"}, "T")
        text = "\n".join(problems)
        assert f"fw {label_fws[0]} " in text and "ran on host 'T'" in text
        assert f"fw {label_fws[1]} " in text and "that takes ['train']" in text
        assert f"fw {label_fws[2]} " in text and "expected exactly one launch" in text
        assert "stored more than once" in text
        assert f"label fw {label_fws[3]} had" in text
        assert len(problems) == 5, problems
    finally:
        client.drop_database(copy.name)
