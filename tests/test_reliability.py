"""Faults survived with real worker processes against the real server: a worker killed in
the middle of a label, trainers and label batches run twice, a parent failing on some
chunks (with retries), a database restart, a database that stays down, and a round whose
labels ended without releasing its trainer."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent / "support"))

import slow_parent  # noqa: F401  (registers slow-emt in this process)

pytestmark = pytest.mark.integration

SUPPORT = Path(__file__).resolve().parent / "support"


def tiny(name: str, parent: dict[str, Any], **extra: Any) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "name": name,
        "target": {
            "builder": {"kind": "octahedron", "element": "Pt", "length": 4, "cutoff": 1},
            "rattle": {"stdev": 0.1, "seed": 0},
        },
        "parent": parent,
        "initial": {"generator": "bulk", "n_structures": 4, "n_candidates": 8},
        "model": {"cutoff": 4.5, "hidden_layers": [8], "ensemble_size": 3, "n_radial": 6},
        "training": {"initial_steps": 100, "steps_per_iteration": 50},
        "nft": {"chunks_per_iteration": 3, "max_iterations": 1, "threshold": 0.01},
        "service": {"labels_per_firework": 1},
    }
    spec.update(extra)
    return spec


def _worker(conn: Any, tmp: Path, *args: str) -> subprocess.Popen[bytes]:
    """A worker process whose output goes to ``tmp``.log (``_tail`` shows it on failure)."""
    tmp.parent.mkdir(parents=True, exist_ok=True)
    with open(tmp.with_suffix(".log"), "wb") as log:
        return subprocess.Popen(
            [sys.executable, str(SUPPORT / "worker.py"), "--data-dir", str(conn.server.data_dir),
             "--db-name", conn.db_name, "--work-dir", str(tmp), *args],
            stdout=log, stderr=subprocess.STDOUT,
        )  # fmt: skip


def _tail(tmp: Path, n: int = 40) -> str:
    """The last lines of the log of the worker started on ``tmp``."""
    lines = tmp.with_suffix(".log").read_text(errors="replace").splitlines()
    return "\n".join(lines[-n:])


def _cli(conn: Any, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "nft_fw", *args, "--data-dir", str(conn.server.data_dir),
         "--db-name", conn.db_name],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip


def _wait(predicate: Any, timeout: float, what: str) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if predicate():
            return
        time.sleep(0.3)
    raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")


def _submit(conn: Any, spec: dict[str, Any]) -> None:
    from nft_fw.campaign import load_campaign, prepare
    from nft_fw.workflows.campaign import submit

    submit(conn.launchpad, prepare(load_campaign(spec)))


def _labels_are_distinct_and_complete(db: Any, name: str) -> list[dict[str, Any]]:
    from nft_fw.launchpad import records

    labels = records.labels(db, name)
    assert len({d["hash"] for d in labels}) == len(labels)
    return labels


def _fizzled(lp: Any, name: str) -> list[str]:
    """Name and last error line of each fizzled Firework of the campaign (assert messages)."""
    out = []
    for d in lp.fireworks.find({"spec.campaign": name, "state": "FIZZLED"}):
        trace = lp.get_fw_by_id(d["fw_id"]).launches[-1].action.stored_data
        out.append(f"{d['name']}: {str(trace.get('_exception', {}).get('_stacktrace'))[-600:]}")
    return out


def test_worker_killed_mid_label_is_recovered_and_nothing_duplicates(
    connection: Any, tmp_path: Path
) -> None:
    import json

    lp = connection.launchpad
    flag = tmp_path / "hold"
    flag.touch()  # labels block while this exists
    name = f"kill-{uuid.uuid4().hex[:6]}"
    _submit(connection, tiny(name, {"name": "slow-emt", "params": {"flag": str(flag)}}))
    victim = _worker(connection, tmp_path / "a", "--ping", "0.5", "--poll", "0.2")

    def label_running() -> bool:
        return (
            lp.fireworks.count_documents(
                {"spec.campaign": name, "spec.nft_role": "label", "state": "RUNNING"}
            )
            > 0
        )

    _wait(label_running, 120, "a label Firework to start")
    running = lp.fireworks.find_one(
        {"spec.campaign": name, "spec.nft_role": "label", "state": "RUNNING"}
    )["fw_id"]
    os.kill(victim.pid, signal.SIGKILL)
    victim.wait(timeout=10)
    assert lp.get_fw_by_id(running).state == "RUNNING"  # the database still believes it runs

    early = json.loads(_cli(connection, "recover", name, "--lost-after", "30", "--json").stdout)
    assert early["lost_fw_ids"] == []  # not silent long enough yet
    time.sleep(3)
    out = _cli(connection, "recover", name, "--lost-after", "2", "--json")
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["lost_fw_ids"] == [running]
    assert lp.get_fw_by_id(running).state == "READY"

    flag.unlink()
    rescuer = _worker(connection, tmp_path / "b", "--idle-timeout", "8", "--poll", "0.2")
    assert rescuer.wait(timeout=600) == 0
    doc = lp.db["nft_campaigns"].find_one({"_id": name})
    assert doc["state"] == "completed"
    states = {d["state"] for d in lp.fireworks.find({"spec.campaign": name})}
    assert states == {"COMPLETED"}
    labels = _labels_are_distinct_and_complete(lp.db, name)
    assert sum(1 for d in labels if d["kind"] == "image") == 4
    assert sum(1 for d in labels if d["kind"] == "chunk") == 3


def test_rerun_trainers_add_no_record_and_no_firework_twice(
    connection: Any, tmp_path: Path
) -> None:
    from nft_fw.launchpad import records

    lp = connection.launchpad
    name = f"rerun-{uuid.uuid4().hex[:6]}"
    relax = {"max_steps": 8, "chunks_per_round": 2, "max_rounds": 1, "max_frames": 3}
    _submit(connection, tiny(name, {"name": "emt"}, relax=relax))
    worker = _worker(connection, tmp_path / "a", "--idle-timeout", "6", "--poll", "0.2")
    assert worker.wait(timeout=600) == 0
    assert records.get_campaign(lp.db, name)["state"] == "completed"

    def snapshot() -> tuple[Any, ...]:
        fws = sorted((d["name"], d["fw_id"]) for d in lp.fireworks.find({"spec.campaign": name}))
        its = sorted(
            (r["phase"], r["iteration"]) for r in lp.db[records.ITERATIONS].find({"campaign": name})
        )
        rounds = lp.db[records.ROUNDS].count_documents({"campaign": name})
        return fws, its, rounds, len(records.labels(lp.db, name))

    before = snapshot()
    # every trainer-like Firework that submits what comes next, run again: as after a crash
    # between writing its record and submitting (the rerun finds the record and the round)
    roles = ("train", "relax")
    rerun = [
        d["fw_id"]
        for d in lp.fireworks.find({"spec.campaign": name, "spec.nft_role": {"$in": roles}})
    ]
    assert len(rerun) == 4  # train 0, train 1, relax 0, relax 1
    # and every label batch: the last batch of a round submits its trainer only once
    labels = [
        d["fw_id"] for d in lp.fireworks.find({"spec.campaign": name, "spec.nft_role": "label"})
    ]
    assert len(labels) == 4 + 3 + 2  # initial images, NFT chunks, relax chunks
    rerun += labels
    for fw_id in rerun:
        lp.rerun_fw(fw_id)
    worker = _worker(connection, tmp_path / "b", "--idle-timeout", "6", "--poll", "0.2")
    assert worker.wait(timeout=600) == 0
    after = snapshot()
    assert after == before
    assert not _fizzled(lp, name)
    reports = lp.fireworks.count_documents({"spec.campaign": name, "spec.nft_role": "report"})
    assert reports == 1


def test_database_restart_mid_campaign_loses_nothing(
    tmp_path_factory: pytest.TempPathFactory, tmp_path: Path
) -> None:
    """Stop the server for ~10 s while workers label and train, start it again on the same
    data directory and port: the campaign completes with every label exactly once."""
    from nft_fw.launchpad import records, server
    from nft_fw.launchpad.connection import embedded

    data = tmp_path_factory.mktemp("restart")
    info, _ = server.start(data)
    conn = embedded(data, db_name="restart", start=False)
    try:
        conn.launchpad.reset("", require_password=False)
        name = "restart"
        spec = tiny(name, {"name": "emt"}, nft={"chunks_per_iteration": 3, "max_iterations": 2,
                                                 "threshold": 0.01, "patience": 5})  # fmt: skip
        _submit(conn, spec)
        workers = [
            _worker(conn, tmp_path / f"w{i}", "--idle-timeout", "20", "--poll", "0.2")
            for i in range(2)
        ]
        lp = conn.launchpad
        _wait(
            lambda: lp.db[records.ITERATIONS].count_documents({"campaign": name}) >= 1,
            300,
            "the first trained iteration",
        )
        server.stop(data)
        time.sleep(10)
        again, started = server.start(data, port=info.port)
        assert started and again.port == info.port
        for i, w in enumerate(workers):
            assert w.wait(timeout=600) == 0, _tail(tmp_path / f"w{i}")
        doc = lp.db[records.CAMPAIGNS].find_one({"_id": name})
        states = {d["state"] for d in lp.fireworks.find({"spec.campaign": name})}
        if doc["state"] != "completed" or states != {"COMPLETED"}:
            # a Firework checked out, or completing, at the instant the server stopped has no
            # process left (its task may have finished: then the campaign went on): the
            # operator's nft-fw recover re-queues it, and a worker finishes the campaign
            out = _cli(conn, "recover", name, "--lost-after", "5", "--json")
            assert out.returncode == 0, out.stderr
            assert json.loads(out.stdout)["lost_fw_ids"], "unfinished, yet nothing lost"
            again_worker = _worker(conn, tmp_path / "w2", "--idle-timeout", "10", "--poll", "0.2")
            assert again_worker.wait(timeout=600) == 0, _tail(tmp_path / "w2")
            doc = lp.db[records.CAMPAIGNS].find_one({"_id": name})
        assert doc["state"] == "completed"
        assert {d["state"] for d in lp.fireworks.find({"spec.campaign": name})} == {"COMPLETED"}
        labels = _labels_are_distinct_and_complete(lp.db, name)
        assert sum(1 for d in labels if d["kind"] == "chunk") == 6
        its = [r["iteration"] for r in records.iterations(lp.db, name)]
        assert its == [0, 1, 2]
    finally:
        conn.close(stop_server=False)
        server.stop(data)


def test_a_database_that_stays_down_ends_the_worker_with_a_clear_error(
    tmp_path_factory: pytest.TempPathFactory, tmp_path: Path
) -> None:
    from nft_fw.launchpad import server
    from nft_fw.launchpad.connection import embedded

    data = tmp_path_factory.mktemp("down")
    server.start(data)
    conn = embedded(data, db_name="down", start=False)
    conn.launchpad.reset("", require_password=False)
    lp_file = conn.write_launchpad_file(tmp_path / "my_launchpad.yaml")
    conn.close(stop_server=False)
    worker = subprocess.Popen(
        [sys.executable, "-m", "nft_fw", "worker", "--launchpad", str(lp_file),
         "--db-wait", "5", "--poll", "0.2", "--work-dir", str(tmp_path)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    time.sleep(3)  # polling an empty queue
    server.stop(data)
    start = time.monotonic()
    _, err = worker.communicate(timeout=120)
    waited = time.monotonic() - start
    assert worker.returncode == 1
    assert "lost the database" in err and "Traceback" not in err
    assert waited < 60  # bounded: --db-wait plus one server-selection timeout


def test_failing_parent_fizzles_its_labels_retries_and_the_campaign_goes_on(
    connection: Any, tmp_path: Path
) -> None:
    """A parent raising on some chunks (flaky-emt, registered only in tests): transient
    failures are retried with the configured override and become labels; permanent ones
    fizzle their Fireworks with the parent's message, are recorded and listed by status,
    and the trainer goes on with the rest."""
    import flaky_parent

    from nft_fw.launchpad import campaigns, records

    lp = connection.launchpad
    name = f"flaky-{uuid.uuid4().hex[:6]}"
    parent = {"name": "flaky-emt", "params": {"retries": [{"recovered": True}]}}
    spec = tiny(name, parent)
    spec["nft"]["chunks_per_iteration"] = 6
    _submit(connection, spec)
    worker = _worker(connection, tmp_path / "w", "--idle-timeout", "8", "--poll", "0.2")
    assert worker.wait(timeout=900) == 0
    assert lp.db["nft_campaigns"].find_one({"_id": name})["state"] == "completed"

    # the six chunks of round 1 and what the parent does with each
    chunk_fws = list(
        lp.fireworks.find({"spec.campaign": name, "spec.nft_role": "label", "spec.nft_round": 1})
    )
    assert len(chunk_fws) == 6
    sources: dict[str, Any] = {}
    fate = {}
    for fw in chunk_fws:
        (item,) = fw["spec"]["_tasks"][0]["items"]
        atoms, label_hash = campaigns._item_atoms(lp.db, sources, item)
        fate[fw["fw_id"]] = (flaky_parent.bucket(atoms), label_hash)
    failing = {i for i, (b, _) in fate.items() if b == 0}
    transient = {i for i, (b, _) in fate.items() if b == 1}
    assert failing and transient, "the fixed seeds must give both kinds of chunk"

    for fw_id, (b, label_hash) in fate.items():
        fw = lp.get_fw_by_id(fw_id)
        if b == 0:
            assert fw.state == "FIZZLED"
            trace = fw.launches[-1].action.stored_data["_exception"]["_stacktrace"]
            assert "injected parent failure" in trace
            assert "1 retry override" in trace  # the retry was made, and failed too
        else:
            assert fw.state == "COMPLETED"
            (doc,) = [d for d in records.labels(lp.db, name) if d["hash"] == label_hash]
            assert doc["attempt"] == 1 and doc["overrides"] == {"recovered": True}
            assert "injected transient failure" in doc["retry_errors"][0]

    failed = {d["hash"] for d in records.failures(lp.db, name)}
    assert failed == {fate[i][1] for i in failing}
    labels = _labels_are_distinct_and_complete(lp.db, name)
    assert {d["hash"] for d in labels if d["kind"] == "chunk"} == {fate[i][1] for i in transient}
    # the trainer of iteration 1 trained on the recovered chunks, without the failed ones
    it1 = records.iterations(lp.db, name)[1]
    assert it1["n_chunks"] == len(transient)

    status = json.loads(_cli(connection, "status", name, "--json").stdout)[0]
    assert {f["hash"] for f in status["failed_labels"]} == failed
    assert {f["fw_id"] for f in status["fizzled"]} == failing
    assert all("injected parent failure" in f["error"] for f in status["failed_labels"])


def test_a_round_whose_labels_ended_without_its_trainer_is_released_by_recover(
    connection: Any, tmp_path: Path
) -> None:
    """An operator defuses one label Firework of a round: the other batches end, none of
    them is the last, so no trainer is submitted; status shows the round labelling and
    `nft-fw recover` submits its trainer; the campaign completes without that label."""
    from nft_fw.launchpad import campaigns, records
    from nft_fw.workflows.campaign import submit_round

    lp = connection.launchpad
    name = f"stall-{uuid.uuid4().hex[:6]}"
    _submit(connection, tiny(name, {"name": "emt"}))
    init = lp.fireworks.find_one({"spec.campaign": name, "spec.nft_role": "init"})
    lp.defuse_fw(init["fw_id"])  # its work, here, so that a label can be defused before it runs
    label_ids = submit_round(lp, name, "nft", 0, campaigns.initial_items(lp.db, name))
    assert len(label_ids) == 4
    lp.defuse_fw(label_ids[0])
    worker = _worker(connection, tmp_path / "a", "--idle-timeout", "5", "--poll", "0.2")
    assert worker.wait(timeout=300) == 0
    assert lp.fireworks.count_documents({"spec.campaign": name, "spec.nft_role": "train"}) == 0
    status = json.loads(_cli(connection, "status", name, "--json").stdout)[0]
    assert status["labelling"] == [{"phase": "nft", "round": 0, "batches_done": 3, "batches": 4}]

    dry = json.loads(_cli(connection, "recover", name, "--lost-after", "5", "--dry-run",
                          "--json").stdout)  # fmt: skip
    assert [(r["phase"], r["round"]) for r in dry["released_rounds"]] == [("nft", 0)]
    assert lp.fireworks.count_documents({"spec.campaign": name, "spec.nft_role": "train"}) == 0
    out = json.loads(_cli(connection, "recover", name, "--lost-after", "5", "--json").stdout)
    (released,) = out["released_rounds"]
    assert len(released["trainer_fw_ids"]) == 1
    again = json.loads(_cli(connection, "recover", name, "--lost-after", "5", "--json").stdout)
    assert again["released_rounds"] == []  # released once

    worker = _worker(connection, tmp_path / "b", "--idle-timeout", "6", "--poll", "0.2")
    assert worker.wait(timeout=600) == 0
    assert records.get_campaign(lp.db, name)["state"] == "completed"
    labels = _labels_are_distinct_and_complete(lp.db, name)
    assert sum(1 for d in labels if d["kind"] == "image") == 3
    assert lp.fireworks.count_documents({"spec.campaign": name, "spec.nft_role": "train"}) == 2


def test_a_round_cut_off_between_fireworks_and_workflows_is_completed_by_the_rerun(
    connection: Any, tmp_path: Path
) -> None:
    """FireWorks writes a workflow's Fireworks before the workflow document: a submitter
    stopped in between (the server went down) leaves Fireworks no worker can check out.
    The submitter's rerun deletes them and adds those batches again; a worker then drains
    the campaign without an error and every image is labelled once."""
    from nft_fw.launchpad import campaigns, records
    from nft_fw.workflows.campaign import submit_round

    lp = connection.launchpad
    name = f"cut-{uuid.uuid4().hex[:6]}"
    _submit(connection, tiny(name, {"name": "emt"}))
    init = lp.fireworks.find_one({"spec.campaign": name, "spec.nft_role": "init"})
    lp.defuse_fw(init["fw_id"])  # its work, here, so that the submission can be cut
    items = campaigns.initial_items(lp.db, name)
    first = submit_round(lp, name, "nft", 0, items)
    assert len(first) == 4
    # the state a cut between the two writes leaves: two batches' Fireworks, no workflow,
    # and a round record whose submission was never marked
    lp.workflows.delete_many({"nodes": {"$in": first[:2]}})
    key = {"campaign": name, "phase": "nft", "round": 0}
    lp.db[records.ROUNDS].update_one(key, {"$set": {"fw_ids": None}})

    again = submit_round(lp, name, "nft", 0, items)  # the init Firework's rerun
    assert len(again) == 4 and set(first[2:]) <= set(again) and not set(first[:2]) & set(again)
    assert lp.fireworks.count_documents({"fw_id": {"$in": first[:2]}}) == 0
    assert lp.workflows.count_documents({"nodes": {"$in": again}}) == 4
    assert submit_round(lp, name, "nft", 0, items) == again  # and a third call adds nothing

    worker = _worker(connection, tmp_path / "a", "--idle-timeout", "6", "--poll", "0.2")
    assert worker.wait(timeout=600) == 0, _tail(tmp_path / "a")
    assert records.get_campaign(lp.db, name)["state"] == "completed"
    assert {
        d["state"]
        for d in lp.fireworks.find({"spec.campaign": name})
        if d["fw_id"] != init["fw_id"]
    } == {"COMPLETED"}
    labels = _labels_are_distinct_and_complete(lp.db, name)
    assert sum(1 for d in labels if d["kind"] == "image") == 4
