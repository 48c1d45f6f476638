"""Faults survived with real worker processes against the real server: a worker killed in
the middle of a label, trainers and label batches run twice, a parent failing on some
chunks (with retries), a database restart, a database that stays down, a campaign defused
and reignited with FireWorks' own lpad, and a trainer whose completion was cut off between
FireWorks' writes."""

from __future__ import annotations

import datetime
import json
import os
import re
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
import slow_parent  # registers slow-emt in this process; started(flag)
import yaml
from service import cli
from service import submit as _submit
from service import tail as _tail
from service import wait as _wait
from service import worker as _worker
from specs import tiny

pytestmark = pytest.mark.integration


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


@pytest.mark.slow
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

    # inside the label's calculation, not in FireWorks' check-out (a kill there leaves a
    # workflow lock that `nft-fw recover` waits out first — not what this test is about)
    _wait(lambda: slow_parent.started(flag).exists() and label_running(), 120, "a label")
    running = lp.fireworks.find_one(
        {"spec.campaign": name, "spec.nft_role": "label", "state": "RUNNING"}
    )["fw_id"]
    os.kill(victim.pid, signal.SIGKILL)
    victim.wait(timeout=10)
    assert lp.get_fw_by_id(running).state == "RUNNING"  # the database still believes it runs

    early = json.loads(cli(connection, "recover", name, "--lost-after", "30", "--json").stdout)
    assert early["lost_fw_ids"] == []  # not silent long enough yet
    time.sleep(3)
    out = cli(connection, "recover", name, "--lost-after", "2", "--json")
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["lost_fw_ids"] == [running]
    assert lp.get_fw_by_id(running).state == "READY"

    flag.unlink()
    rescuer = _worker(
        connection, tmp_path / "b", "--until-done", "--idle-timeout", "8", "--poll", "0.2"
    )
    assert rescuer.wait(timeout=600) == 0
    doc = lp.db["nft_campaigns"].find_one({"_id": name})
    assert doc["state"] == "completed"
    states = {d["state"] for d in lp.fireworks.find({"spec.campaign": name})}
    assert states == {"COMPLETED"}
    labels = _labels_are_distinct_and_complete(lp.db, name)
    assert sum(1 for d in labels if d["kind"] == "image") == 4
    assert sum(1 for d in labels if d["kind"] == "chunk") == 3


def test_recovering_a_lost_label_never_lets_its_trainer_start_without_it(
    connection: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """FireWorks' ``detect_lostruns --rerun`` fizzles a lost launch before it reruns the
    Firework, and in between the round's trainer (which allows fizzled parents) is READY:
    a waiting trainer worker trains without the label (a real SLURM node taken down under a
    label showed it). ``nft-fw recover`` reruns first: at every rerun the trainer and the
    report are still WAITING, and the lost launch ends FIZZLED in the archive."""
    from nft_fw.launchpad.worker import rerun_lost_runs

    lp = connection.launchpad
    flag = tmp_path / "hold"
    flag.touch()
    name = f"lostorder-{uuid.uuid4().hex[:6]}"
    spec = tiny(name, {"name": "slow-emt", "params": {"flag": str(flag)}})
    spec["service"] = {"labels_per_firework": 4}  # round 0: one label Firework, 4 cells
    _submit(connection, spec)
    victim = _worker(connection, tmp_path / "a", "--ping", "0.5", "--poll", "0.2")

    def label_running() -> bool:
        doc = lp.fireworks.find_one(
            {"spec.campaign": name, "spec.nft_role": "label", "state": "RUNNING"}, {"fw_id": 1}
        )
        # and FireWorks' check-out done: a worker killed while it still holds the workflow
        # lock leaves a lock that `nft-fw recover` releases first (release_stale_locks) —
        # not what this test is about
        return doc is not None and not lp.workflows.count_documents(
            {"nodes": doc["fw_id"], "locked": True}
        )

    _wait(
        lambda: slow_parent.started(flag).exists() and label_running(),
        120,
        "the label Firework to start",
    )
    running = lp.fireworks.find_one(
        {"spec.campaign": name, "spec.nft_role": "label", "state": "RUNNING"}
    )["fw_id"]
    os.kill(victim.pid, signal.SIGKILL)
    victim.wait(timeout=10)
    time.sleep(3)

    def waiting_ones() -> dict[int, str]:
        return {
            d["fw_id"]: d["state"]
            for d in lp.fireworks.find(
                {"spec.campaign": name, "spec.nft_role": {"$in": ["train", "report"]}}
            )
        }

    assert set(waiting_ones().values()) == {"WAITING"}
    seen: list[dict[int, str]] = []
    rerun = lp.rerun_fw

    def spy(fw_id: int, *args: Any, **kwargs: Any) -> Any:
        seen.append(waiting_ones())
        return rerun(fw_id, *args, **kwargs)

    monkeypatch.setattr(lp, "rerun_fw", spy)
    lost_launches, lost_fws, _ = rerun_lost_runs(lp, 2.0, {"spec.campaign": name})
    assert lost_fws == [running] and len(lost_launches) == 1
    assert seen and all(set(states.values()) == {"WAITING"} for states in seen), seen
    assert set(waiting_ones().values()) == {"WAITING"}
    fw = lp.get_fw_by_id(running)
    assert fw.state == "READY" and not fw.launches
    (archived,) = fw.archived_launches
    assert lp.launches.find_one({"launch_id": archived.launch_id})["state"] == "FIZZLED"
    assert rerun_lost_runs(lp, 2.0, {"spec.campaign": name})[1] == []  # nothing twice


@pytest.mark.slow
def test_rerun_trainers_add_no_record_and_no_firework_twice(
    connection: Any, tmp_path: Path
) -> None:
    from nft_fw.launchpad import records

    lp = connection.launchpad
    name = f"rerun-{uuid.uuid4().hex[:6]}"
    relax = {"max_steps": 8, "chunks_per_round": 2, "max_rounds": 1, "max_frames": 3}
    _submit(connection, tiny(name, {"name": "emt"}, relax=relax))
    worker = _worker(
        connection, tmp_path / "a", "--until-done", "--idle-timeout", "6", "--poll", "0.2"
    )
    assert worker.wait(timeout=600) == 0
    assert records.get_campaign(lp.db, name)["state"] == "completed"

    def snapshot() -> tuple[Any, ...]:
        fws = sorted((d["name"], d["fw_id"]) for d in lp.fireworks.find({"spec.campaign": name}))
        its = sorted(
            (r["phase"], r["iteration"]) for r in lp.db[records.ITERATIONS].find({"campaign": name})
        )
        return fws, its, len(records.labels(lp.db, name))

    before = snapshot()
    # every trainer-like Firework that appends what comes next, run again: as after a crash
    # between writing its record and completing (the rerun finds its round appended)
    roles = ("train", "relax")
    rerun = [
        d["fw_id"]
        for d in lp.fireworks.find({"spec.campaign": name, "spec.nft_role": {"$in": roles}})
    ]
    assert len(rerun) == 4  # train 0, train 1, relax 0, relax 1
    # and every label batch (FireWorks reruns everything after each of them)
    labels = [
        d["fw_id"] for d in lp.fireworks.find({"spec.campaign": name, "spec.nft_role": "label"})
    ]
    assert len(labels) == 4 + 3 + 2  # initial images, NFT chunks, relax chunks
    rerun += labels
    for fw_id in rerun:
        lp.rerun_fw(fw_id)
    worker = _worker(
        connection, tmp_path / "b", "--until-done", "--idle-timeout", "6", "--poll", "0.2"
    )
    assert worker.wait(timeout=600) == 0
    after = snapshot()
    assert after == before
    assert not _fizzled(lp, name)
    reports = lp.fireworks.count_documents({"spec.campaign": name, "spec.nft_role": "report"})
    assert reports == 1


def _states(lp: Any, name: str) -> list[tuple[int, str, str, list[str]]]:
    """Each Firework of the campaign: id, name, state, its launches' states."""
    out = []
    for d in lp.fireworks.find({"spec.campaign": name}, {"fw_id": 1, "name": 1, "state": 1,
                                                          "launches": 1}):  # fmt: skip
        runs = [x["state"] for x in lp.launches.find({"launch_id": {"$in": d["launches"]}})]
        out.append((d["fw_id"], d["name"], d["state"], runs))
    return sorted(out)


@pytest.mark.slow
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
            _worker(
                conn, tmp_path / f"w{i}", "--until-done", "--idle-timeout", "20", "--poll", "0.2"
            )
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
        found: dict[str, Any] = {}
        if doc["state"] != "completed" or states != {"COMPLETED"}:
            # a Firework checked out, or completing, at the instant the server stopped has no
            # process left (its task may have finished: then the campaign went on), and one
            # whose worker lost the database in FireWorks' checkpoint after its task fizzled:
            # the operator's nft-fw recover re-queues both, and a worker finishes the campaign
            out = cli(conn, "recover", name, "--lost-after", "5", "--json")
            assert out.returncode == 0, out.stderr
            found = json.loads(out.stdout)
            assert (
                found["lost_fw_ids"]
                or found["database_fizzled_fw_ids"]
                or found["unlocked_workflow_fw_ids"]
                or found["inconsistent_fw_ids"]
                or found["stuck_waiting_fw_ids"]
                or found["orphaned_fw_ids"]
                or found["unstarted_checkout_fw_ids"]
            ), f"unfinished, yet nothing lost: {_states(lp, name)}"
            again_worker = _worker(
                conn, tmp_path / "w2", "--until-done", "--idle-timeout", "10", "--poll", "0.2"
            )
            assert again_worker.wait(timeout=600) == 0, _tail(tmp_path / "w2")
            doc = lp.db[records.CAMPAIGNS].find_one({"_id": name})
        assert doc["state"] == "completed", (found, _states(lp, name))
        assert {d["state"] for d in lp.fireworks.find({"spec.campaign": name})} == {"COMPLETED"}
        labels = _labels_are_distinct_and_complete(lp.db, name)
        chunks = sum(1 for d in labels if d["kind"] == "chunk")
        history = records.iterations(lp.db, name)
        assert [r["iteration"] for r in history] == [0, 1, 2]
        assert history[-1]["n_chunks"] == chunks  # every label trained on, none twice
        # 3 chunks per round; a label Firework cut off by the outage fizzles and the trainer
        # goes on without it, so the next round may pick the same centre: the chunk labels are
        # exactly the distinct chunks the label Fireworks asked for (same centre, same hash:
        # one label), each stored by one of those Fireworks
        label_fws = list(lp.fireworks.find({"spec.campaign": name, "spec.nft_role": "label"}))
        asked = {
            (item["source"], item.get("frame", 0), item["centre"], item["radius"])
            for fw in label_fws
            for task in fw["spec"]["_tasks"]
            for item in task.get("items", [])
            if item["kind"] == "chunk"
        }
        assert 6 - 3 <= len(asked) <= 6
        assert chunks == len(asked), (chunks, sorted(asked), _states(lp, name))
        fw_ids = {fw["fw_id"] for fw in label_fws}
        assert all(d["fw_id"] in fw_ids for d in labels if d["kind"] == "chunk")
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
    # the site's own server-selection timeout (my_launchpad.yaml) bounds each wait too
    settings = yaml.safe_load(lp_file.read_text())
    settings["mongoclient_kwargs"]["serverSelectionTimeoutMS"] = 5000
    lp_file.write_text(yaml.safe_dump(settings))
    worker = subprocess.Popen(
        [sys.executable, "-m", "nft_fw", "worker", "--launchpad", str(lp_file),
         "--db-wait", "5", "--poll", "0.2", "--work-dir", str(tmp_path), "-v"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    # the server goes away once the worker is polling (on a loaded machine its start alone,
    # imports and connection, can take seconds: a fixed sleep then stopped the server first)
    said = []
    for line in worker.stderr:  # type: ignore[union-attr]
        said.append(line)
        if "started (category" in line:
            break
    time.sleep(1)  # polling an empty queue
    server.stop(data)
    _, err = worker.communicate(timeout=120)
    err = "".join(said) + err
    assert worker.returncode == 1
    assert "lost the database" in err and "Traceback" not in err
    # bounded, by the worker's own count (free of a loaded machine's process start and
    # exit): --db-wait (5 s), then at most a backoff and one server-selection timeout (5 s)
    found = re.search(r"(\d+) s without an answer", " ".join(err.split()))
    assert found is not None, err
    assert 5 <= int(found.group(1)) <= 15, err


def test_failing_parent_fizzles_its_labels_retries_and_the_campaign_goes_on(
    connection: Any, tmp_path: Path
) -> None:
    """A parent raising on some chunks (flaky-emt, registered only in tests): transient
    failures are retried with the configured override and become labels; permanent ones
    fizzle their Fireworks with the parent's message, are recorded and listed by status,
    and the trainer goes on with the rest."""
    import flaky_parent

    from nft_fw.firetasks import labels as label_tasks
    from nft_fw.launchpad import records

    lp = connection.launchpad
    name = f"flaky-{uuid.uuid4().hex[:6]}"
    parent = {"name": "flaky-emt", "params": {"retries": [{"recovered": True}]}}
    spec = tiny(name, parent)
    spec["nft"]["chunks_per_iteration"] = 6
    _submit(connection, spec)
    worker = _worker(
        connection, tmp_path / "w", "--until-done", "--idle-timeout", "8", "--poll", "0.2"
    )
    assert worker.wait(timeout=900) == 0
    assert lp.db["nft_campaigns"].find_one({"_id": name})["state"] == "completed"

    # the chunks of every round and what the parent does with each (round 1: six)
    chunk_fws = list(
        lp.fireworks.find(
            {"spec.campaign": name, "spec.nft_role": "label", "spec.nft_round": {"$gte": 1}}
        )
    )
    assert sum(fw["spec"]["nft_round"] == 1 for fw in chunk_fws) == 6
    sources: dict[str, Any] = {}
    fate = {}
    for fw in chunk_fws:
        (item,) = fw["spec"]["_tasks"][0]["items"]
        atoms, label_hash = label_tasks._item_atoms(lp.db, sources, item)
        fate[fw["fw_id"]] = (flaky_parent.bucket(atoms), label_hash, fw["spec"]["nft_round"])
    failing = {i for i, (b, _, _) in fate.items() if b == 0}
    transient = {i for i, (b, _, _) in fate.items() if b == 1}
    assert failing and transient, "the fixed seeds must give both kinds of chunk"

    for fw_id, (b, label_hash, _) in fate.items():
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
    # the trainer of iteration 1 trained on round 1's recovered chunks, without the failed ones
    it1 = records.iterations(lp.db, name)[1]
    assert it1["n_chunks"] == sum(fate[i][2] == 1 for i in transient)

    status = json.loads(cli(connection, "status", name, "--json").stdout)[0]
    assert {f["hash"] for f in status["failed_labels"]} == failed
    assert {f["fw_id"] for f in status["fizzled"]} == failing
    assert all("injected parent failure" in f["error"] for f in status["failed_labels"])


def _lpad(conn: Any, tmp: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """FireWorks' own lpad on the test database."""
    lp_file = conn.write_launchpad_file(tmp / "my_launchpad.yaml")
    return subprocess.run(
        [str(Path(sys.executable).parent / "lpad"), "-l", str(lp_file), *args],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip


@pytest.mark.slow
def test_a_campaign_defused_and_reignited_with_lpad_finishes_with_every_label_once(
    connection: Any, tmp_path: Path
) -> None:
    """Defusing a campaign's waiting Fireworks with lpad mid-campaign stops it as a whole (a
    worker finds nothing to run), status shows the round waiting, and `lpad reignite_wflows
    -n NAME` lets it finish."""
    from nft_fw.launchpad import records

    lp = connection.launchpad
    name = f"defuse-{uuid.uuid4().hex[:6]}"
    _submit(connection, tiny(name, {"name": "emt"}))
    # init and two of the four initial labels
    first = _worker(connection, tmp_path / "a", "--max", "3", "--poll", "0.2")
    assert first.wait(timeout=300) == 0, _tail(tmp_path / "a")
    # FireWorks 2.1.4's `lpad defuse_wflows` pauses (its parser calls pause_wfs), and
    # reignite_wflows then finds nothing defused: docs/service.md gives this pair instead
    query = json.dumps({"spec.campaign": name, "state": {"$in": ["WAITING", "READY"]}})
    out = _lpad(connection, tmp_path, "defuse_fws", "-q", query)
    assert out.returncode == 0, out.stderr
    states = {d["state"] for d in lp.fireworks.find({"spec.campaign": name})}
    assert states == {"COMPLETED", "DEFUSED"}
    idle = _worker(
        connection, tmp_path / "b", "--until-done", "--idle-timeout", "3", "--poll", "0.2"
    )
    assert idle.wait(timeout=120) == 0
    assert lp.launches.count_documents({}) == 3  # nothing ran while defused
    status = json.loads(cli(connection, "status", name, "--json").stdout)[0]
    assert status["labelling"] == [
        {"phase": "nft", "round": 0, "label_fireworks_ended": 2, "label_fireworks": 4,
         "trainer": "DEFUSED"}
    ]  # fmt: skip

    out = _lpad(connection, tmp_path, "reignite_wflows", "-n", name)
    assert out.returncode == 0, out.stderr
    last = _worker(
        connection, tmp_path / "c", "--until-done", "--idle-timeout", "6", "--poll", "0.2"
    )
    assert last.wait(timeout=600) == 0, _tail(tmp_path / "c")
    assert records.get_campaign(lp.db, name)["state"] == "completed"
    assert {d["state"] for d in lp.fireworks.find({"spec.campaign": name})} == {"COMPLETED"}
    labels = _labels_are_distinct_and_complete(lp.db, name)
    assert sum(1 for d in labels if d["kind"] == "image") == 4
    assert sum(1 for d in labels if d["kind"] == "chunk") == 3
    # every Firework ran once
    fw_ids = [d["fw_id"] for d in lp.fireworks.find({"spec.campaign": name})]
    assert lp.launches.count_documents({"fw_id": {"$in": fw_ids}}) == len(fw_ids)


def test_a_trainer_completion_cut_off_before_its_workflow_update_is_appended_once_on_rerun(
    connection: Any, tmp_path: Path
) -> None:
    """FireWorks writes the Fireworks a completion appends before the workflow document: a
    database outage in between leaves Fireworks no worker can check out and a workflow that
    never links them. Rerunning the Firework (lpad rerun_fws) deletes them and appends its
    round again; the campaign completes with every image labelled once."""
    from nft_fw.launchpad import records

    lp = connection.launchpad
    name = f"cut-{uuid.uuid4().hex[:6]}"
    _submit(connection, tiny(name, {"name": "emt"}))
    init = lp.fireworks.find_one({"spec.campaign": name, "spec.nft_role": "init"})["fw_id"]
    before = lp.workflows.find_one({"nodes": init})
    worker = _worker(connection, tmp_path / "a", "--max", "1", "--poll", "0.2")
    assert worker.wait(timeout=300) == 0, _tail(tmp_path / "a")
    appended = [d["fw_id"] for d in lp.fireworks.find({"spec.nft_appended_by": init})]
    assert len(appended) == 5  # four initial labels and train 0
    lp.workflows.replace_one({"_id": before["_id"]}, before)  # the cut: workflow not updated

    lp.rerun_fw(init)
    worker = _worker(
        connection, tmp_path / "b", "--until-done", "--idle-timeout", "6", "--poll", "0.2"
    )
    assert worker.wait(timeout=600) == 0, _tail(tmp_path / "b")
    assert records.get_campaign(lp.db, name)["state"] == "completed"
    assert lp.fireworks.count_documents({"fw_id": {"$in": appended}}) == 0  # deleted
    (wf,) = list(lp.workflows.find({"metadata.campaign": name}))
    fws = list(lp.fireworks.find({"spec.campaign": name}))
    assert sorted(wf["nodes"]) == sorted(d["fw_id"] for d in fws)
    assert {d["state"] for d in fws} == {"COMPLETED"}
    labels = _labels_are_distinct_and_complete(lp.db, name)
    assert sum(1 for d in labels if d["kind"] == "image") == 4


def _first_firework_fizzles(lp: Any, name: str) -> str:
    """Run the campaign's init Firework in this process; it must fizzle: the last line of
    its stack trace."""
    from fireworks import FWorker
    from fireworks.core.rocket_launcher import launch_rocket

    assert launch_rocket(lp, FWorker())
    init = lp.fireworks.find_one({"spec.campaign": name, "spec.nft_role": "init"})
    assert init["state"] == "FIZZLED"
    trace = lp.get_fw_by_id(init["fw_id"]).launches[-1].action.stored_data["_exception"]
    return str(trace["_stacktrace"].strip().splitlines()[-1])


def test_a_campaign_of_the_old_layout_is_refused_by_its_first_firework(
    connection: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A campaign record without ``layout`` (submitted by nft-fw 0.1, whose Fireworks were
    linked by round records) fizzles at its first Firework with the way out, not a
    traceback from deep inside."""
    from nft_fw.launchpad import records

    lp = connection.launchpad
    name = f"old-{uuid.uuid4().hex[:6]}"
    _submit(connection, tiny(name, {"name": "emt"}))
    lp.db[records.CAMPAIGNS].update_one({"_id": name}, {"$unset": {"layout": ""}})
    monkeypatch.chdir(tmp_path)
    last = _first_firework_fizzles(lp, name)
    assert last.startswith("nft_fw.launchpad.records.OldLayoutError")
    assert "submitted by nft-fw 0.1" in last and "new name" in last
    assert records.labels(lp.db, name) == []  # nothing was labelled


def test_a_campaign_labelled_under_an_older_parent_hash_is_refused_by_its_next_firework(
    connection: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Labels stored under a parent-settings hash this release does not give the campaign's
    parent (nft-fw 0.4.0 hashed GPAW's mixer) would be labelled again beside the old ones:
    the next Firework fizzles with the way out instead, and nothing is labelled."""
    from nft_fw.launchpad import records

    lp = connection.launchpad
    name = f"oldhash-{uuid.uuid4().hex[:6]}"
    _submit(connection, tiny(name, {"name": "emt"}))
    # the fault, injected: one label of the campaign under another hash
    lp.db[records.LABELS].insert_one(
        {"campaign": name, "hash": "f" * 64, "parent_hash": "0" * 64, "kind": "image"}
    )
    monkeypatch.chdir(tmp_path)
    last = _first_firework_fizzles(lp, name)
    assert last.startswith("nft_fw.launchpad.records.OldLayoutError")
    assert "parent-settings hash 000000000000" in last and "prior_labels" in last
    assert len(records.labels(lp.db, name)) == 1  # only the injected one: nothing labelled


def test_a_workflow_lock_left_by_a_lost_connection_is_released_and_a_live_one_is_not(
    connection: Any,
) -> None:
    """A refresh cut off by a lost connection cannot release FireWorks' lock on the
    workflow; a lock that outlives the wait is released, one that a live refresh lets go of
    in time is left alone."""
    import threading

    from nft_fw.launchpad.worker import release_stale_locks

    lp = connection.launchpad
    stale, live = f"stale-{uuid.uuid4().hex[:6]}", f"live-{uuid.uuid4().hex[:6]}"
    _submit(connection, tiny(stale, {"name": "emt"}))
    _submit(connection, tiny(live, {"name": "emt"}))
    ids = {n: lp.fireworks.find_one({"spec.campaign": n})["fw_id"] for n in (stale, live)}
    for fw_id in ids.values():
        lp.workflows.update_one({"nodes": fw_id}, {"$set": {"locked": True}})
    unlock = threading.Timer(
        0.5, lambda: lp.workflows.update_one({"nodes": ids[live]}, {"$unset": {"locked": True}})
    )
    unlock.start()
    try:
        # the live holder lets go after 0.5 s; 5 s leave a loaded machine's timer thread room
        released = release_stale_locks(lp, {"spec.campaign": {"$in": [stale, live]}}, wait_s=5)
    finally:
        unlock.join()
    (one,) = released
    assert lp.workflows.find_one({"nodes": one})["metadata"]["campaign"] == stale
    assert not lp.workflows.find_one({"nodes": ids[stale]}).get("locked")
    assert release_stale_locks(lp, {"spec.campaign": stale}, wait_s=1) == []


def test_a_worker_survives_the_database_going_away_in_a_poll_and_inside_a_launch(
    connection: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: Any
) -> None:
    """Faults injected on purpose where a real outage lands by chance (the restart test above
    meets one or the other depending on timing): a poll that finds the database gone, a
    launch cut off inside FireWorks' workflow refresh (a RuntimeError raised from the lost
    connection, its workflow left locked), and a Firework checked out that no workflow lists
    (an append cut off). The worker waits, releases the stale lock once the database answers,
    skips the orphan, runs everything else once and stops; any other error is raised."""
    import logging

    from fireworks.core import launchpad as fw_launchpad
    from pymongo.errors import AutoReconnect

    from nft_fw.firetasks.smoke import smoke_workflow
    from nft_fw.launchpad import worker as worker_mod

    # run_worker sets FireWorks' lock takeover for this process: restored afterwards
    monkeypatch.setattr(
        fw_launchpad.WFLock.__init__, "__defaults__", fw_launchpad.WFLock.__init__.__defaults__
    )
    monkeypatch.setattr(worker_mod, "STALE_LOCK_S", 1.0)
    lp = connection.launchpad
    ledger = tmp_path / "ledger.jsonl"
    lp.add_wf(smoke_workflow(3, 1, ledger=str(ledger)))
    real_launch, real_exists = worker_mod.launch_rocket, lp.run_exists
    polls = ["down"]
    launches = ["lost", "orphan"]

    def run_exists(fworker: Any = None) -> bool:
        if polls:
            polls.pop()
            raise AutoReconnect("connection closed")
        return bool(real_exists(fworker))

    def launch(lp_: Any, fworker: Any) -> bool:
        if not launches:
            return bool(real_launch(lp_, fworker))
        fault = launches.pop(0)
        if fault == "lost":
            lp_.workflows.update_one({}, {"$set": {"locked": True}})  # the cut-off refresh's
            try:
                raise AutoReconnect("connection closed")
            except AutoReconnect as err:
                raise RuntimeError("refresh of the workflow failed") from err
        if fault == "orphan":
            raise RuntimeError("Could not find workflow in database: 99999")
        raise RuntimeError("a bug, not an outage")

    monkeypatch.setattr(lp, "run_exists", run_exists)
    monkeypatch.setattr(worker_mod, "launch_rocket", launch)
    caplog.set_level(logging.WARNING, logger="nft_fw.launchpad.worker")
    report = worker_mod.run_worker(
        lp, until_done=True, idle_timeout_s=120, poll_s=0.2, work_dir=tmp_path / "w"
    )
    assert report.reason == "no work can come" and report.launches == 3 + 3 + 1
    assert sorted(json.loads(x)["tag"] for x in ledger.read_text().splitlines()) == sorted(
        ["root", "leaf0", "leaf1", "leaf2", "fan", "fan.0", "total"]
    )
    assert {d["state"] for d in lp.fireworks.find({})} == {"COMPLETED"}
    assert lp.workflows.count_documents({"locked": True}) == 0
    said = caplog.text
    assert "database unreachable" in said
    assert "database connection lost during a launch (AutoReconnect)" in said
    assert "was locked for over 1 s: released" in said
    assert "Firework 99999 is in no workflow" in said

    lp.add_wf(smoke_workflow(1, 0, ledger=str(ledger), name="again"))
    launches.append("bug")
    with pytest.raises(RuntimeError, match="a bug, not an outage"):
        worker_mod.run_worker(lp, until_done=True, poll_s=0.2, work_dir=tmp_path / "w")


def test_a_worker_takes_over_a_lock_left_by_a_lost_connection_and_updates_the_workflow(
    connection: Any, tmp_path: Path
) -> None:
    """A lock no live process holds (left by a refresh the database cut off, possibly in
    this very worker, inside FireWorks' own failure handling) is taken over after
    --lock-takeover seconds: the Firework runs and its workflow is updated (its children
    become READY). FireWorks' default would wait 300 s at check-out and at check-in and skip
    both updates, leaving the children WAITING."""
    lp = connection.launchpad
    name = f"locked-{uuid.uuid4().hex[:6]}"
    _submit(connection, tiny(name, {"name": "emt"}))
    (root,) = [d["fw_id"] for d in lp.fireworks.find({"spec.campaign": name, "state": "READY"})]
    lp.workflows.update_one({"nodes": root}, {"$set": {"locked": True}})
    worker = _worker(connection, tmp_path / "w", "--max", "1", "--poll", "0.2",
                     "--lock-takeover", "3")  # fmt: skip
    assert worker.wait(timeout=300) == 0, _tail(tmp_path / "w")
    assert lp.get_fw_by_id(root).state == "COMPLETED"
    children = [int(c) for c in lp.get_wf_by_fw_id(root).links[root]]
    assert children and any(lp.get_fw_by_id(c).state == "READY" for c in children)
    assert not lp.workflows.find_one({"nodes": root}).get("locked")
    assert "Can't refresh" not in (tmp_path / "w.log").read_text()


def test_fireworks_left_waiting_on_completed_parents_are_made_ready_by_recover(
    connection: Any, tmp_path: Path
) -> None:
    """A workflow update cut off by a lost connection can leave a Firework COMPLETED and its
    children WAITING; nft-fw recover refreshes that workflow (children become READY, nothing
    runs again) and leaves children of unfinished parents alone."""
    lp = connection.launchpad
    cut, whole = f"cut-{uuid.uuid4().hex[:6]}", f"whole-{uuid.uuid4().hex[:6]}"
    _submit(connection, tiny(cut, {"name": "emt"}))
    (root,) = [d["fw_id"] for d in lp.fireworks.find({"spec.campaign": cut, "state": "READY"})]
    worker = _worker(connection, tmp_path / "w", "--max", "1", "--poll", "0.2")
    assert worker.wait(timeout=300) == 0, _tail(tmp_path / "w")
    assert lp.get_fw_by_id(root).state == "COMPLETED"
    below = [int(c) for c in lp.get_wf_by_fw_id(root).links[root]]
    # the root's label Fireworks are READY; the trainer below them waits on them, rightly
    children = sorted(c for c in below if lp.get_fw_by_id(c).state == "READY")
    assert children and any(lp.get_fw_by_id(c).state == "WAITING" for c in below)
    # the fault: the root's completion was written, the update of its children was not
    lp.fireworks.update_many({"fw_id": {"$in": children}}, {"$set": {"state": "WAITING"}})
    _submit(connection, tiny(whole, {"name": "emt"}))
    dry = cli(connection, "recover", cut, "--dry-run", "--json")
    assert dry.returncode == 0, dry.stderr
    assert json.loads(dry.stdout)["stuck_waiting_fw_ids"] == children
    assert all(lp.get_fw_by_id(c).state == "WAITING" for c in children)
    out = cli(connection, "recover", cut, "--json")
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["stuck_waiting_fw_ids"] == children
    assert all(lp.get_fw_by_id(c).state == "READY" for c in children)
    assert len(lp.get_fw_by_id(root).launches) == 1
    untouched = cli(connection, "recover", whole, "--json")
    assert json.loads(untouched.stdout)["stuck_waiting_fw_ids"] == []
    assert {d["state"] for d in lp.fireworks.find({"spec.campaign": whole})} == {
        "READY", "WAITING"}  # fmt: skip


def test_a_check_out_cut_off_before_its_launch_is_requeued_by_recover(
    connection: Any, tmp_path: Path
) -> None:
    """FireWorks marks a Firework RESERVED and writes its launch after: an outage between the
    two leaves it RESERVED with no launch, so no process runs it and no ping shows it lost.
    nft-fw recover re-queues it once it is older than --lost-after; a fresh one, and a
    reservation of queue mode (which holds a RESERVED launch), are left alone."""
    from fireworks import FWorker

    lp = connection.launchpad
    cut, queued = f"cut-{uuid.uuid4().hex[:6]}", f"queued-{uuid.uuid4().hex[:6]}"
    _submit(connection, tiny(cut, {"name": "emt"}))
    _submit(connection, tiny(queued, {"name": "emt"}))
    (root,) = [d["fw_id"] for d in lp.fireworks.find({"spec.campaign": cut, "state": "READY"})]
    # the fault: the reservation was written, the launch was not
    old = datetime.datetime.now(datetime.UTC) - datetime.timedelta(seconds=120)
    lp.fireworks.update_one({"fw_id": root}, {"$set": {"state": "RESERVED", "updated_on": old}})
    young = cli(connection, "recover", cut, "--lost-after", "600", "--json")
    assert young.returncode == 0, young.stderr
    assert json.loads(young.stdout)["unstarted_checkout_fw_ids"] == []
    dry = cli(connection, "recover", cut, "--lost-after", "60", "--dry-run", "--json")
    assert json.loads(dry.stdout)["unstarted_checkout_fw_ids"] == [root]
    assert lp.get_fw_by_id(root).state == "RESERVED"
    # queue mode's reservation of the other campaign's first Firework holds a launch
    (other,) = [d["fw_id"] for d in lp.fireworks.find({"spec.campaign": queued, "state": "READY"})]
    fw, launch_id = lp.reserve_fw(FWorker(), str(tmp_path), fw_id=other)
    assert fw.fw_id == other and launch_id is not None
    lp.fireworks.update_one({"fw_id": other}, {"$set": {"updated_on": old}})
    out = cli(connection, "recover", "--lost-after", "60", "--json")
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["unstarted_checkout_fw_ids"] == [root]
    assert lp.get_fw_by_id(root).state == "READY"
    assert lp.get_fw_by_id(other).state == "RESERVED"
    # a worker can take it again (by id: other tests' campaigns share this database)
    from fireworks.core.rocket_launcher import launch_rocket

    os.chdir(tmp_path)
    assert launch_rocket(lp, FWorker(), fw_id=root)
    ran = lp.get_fw_by_id(root)
    assert ran.state == "COMPLETED" and len(ran.launches) == 1


@pytest.mark.slow
def test_appended_fireworks_the_workflow_never_got_are_appended_again_by_recover(
    connection: Any, tmp_path: Path
) -> None:
    """FireWorks writes appended Fireworks before the workflow document; an outage between
    the two leaves Fireworks no workflow lists (a worker that checks one out fails in its
    refresh). nft-fw recover deletes them and reruns the Firework that appended them; the
    campaign then finishes with every label once."""
    from nft_fw.launchpad import records

    lp = connection.launchpad
    name = f"orphan-{uuid.uuid4().hex[:6]}"
    _submit(connection, tiny(name, {"name": "emt"}))
    (root,) = [d["fw_id"] for d in lp.fireworks.find({"spec.campaign": name, "state": "READY"})]
    before = lp.workflows.find_one({"nodes": root})
    worker = _worker(connection, tmp_path / "w0", "--max", "1", "--poll", "0.2")
    assert worker.wait(timeout=300) == 0, _tail(tmp_path / "w0")
    appended = sorted(
        d["fw_id"] for d in lp.fireworks.find({"spec.nft_appended_by": root}, {"fw_id": 1})
    )
    assert appended
    # the fault: the workflow document as it was before the append reached it
    lp.workflows.replace_one({"_id": before["_id"]}, before)
    dry = cli(connection, "recover", name, "--dry-run", "--json")
    assert dry.returncode == 0, dry.stderr
    found = json.loads(dry.stdout)
    assert found["orphaned_fw_ids"] == appended and found["rerun_appender_fw_ids"] == [root]
    assert lp.fireworks.count_documents({"fw_id": {"$in": appended}}) == len(appended)
    out = cli(connection, "recover", name, "--json")
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["orphaned_fw_ids"] == appended
    assert lp.fireworks.count_documents({"fw_id": {"$in": appended}}) == 0
    worker = _worker(
        connection, tmp_path / "w1", "--until-done", "--idle-timeout", "10", "--poll", "0.2"
    )
    assert worker.wait(timeout=600) == 0, _tail(tmp_path / "w1")
    assert records.get_campaign(lp.db, name)["state"] == "completed", _states(lp, name)
    assert {d["state"] for d in lp.fireworks.find({"spec.campaign": name})} == {"COMPLETED"}
    labels = _labels_are_distinct_and_complete(lp.db, name)
    assert sum(1 for d in labels if d["kind"] == "chunk") == 3


def test_a_check_out_cut_off_after_its_launch_is_requeued_by_recover(connection: Any) -> None:
    """The other half of a cut-off check-out: FireWorks wrote the launch (RUNNING) but the
    Firework never turned RUNNING (seen when the database stopped mid-campaign). FireWorks'
    lost-run detection counts the launch lost, not the Firework, which stayed RESERVED with
    no live launch; nft-fw recover re-queues it, and a worker runs it once."""
    from fireworks import FWorker

    lp = connection.launchpad
    name = f"cutlate-{uuid.uuid4().hex[:6]}"
    _submit(connection, tiny(name, {"name": "emt"}))
    (root,) = [d["fw_id"] for d in lp.fireworks.find({"spec.campaign": name, "state": "READY"})]
    # the fault: the launch written and running, the Firework left RESERVED without it
    _, launch_id = lp.reserve_fw(FWorker(), "/tmp", fw_id=root)
    old = datetime.datetime.now(datetime.UTC) - datetime.timedelta(seconds=600)
    lp.launches.update_one(
        {"launch_id": launch_id},
        {"$set": {"state": "RUNNING", "state_history": [
            {"state": "RUNNING", "created_on": old.isoformat(), "updated_on": old.isoformat()}]}},
    )  # fmt: skip
    lp.fireworks.update_one({"fw_id": root}, {"$set": {"launches": [], "updated_on": old}})
    out = cli(connection, "recover", name, "--lost-after", "60", "--json")
    assert out.returncode == 0, out.stderr
    found = json.loads(out.stdout)
    assert found["lost_fw_ids"] == [root] and launch_id in found["lost_launch_ids"]
    assert lp.get_fw_by_id(root).state == "READY"
    again = cli(connection, "recover", name, "--lost-after", "60", "--json")
    assert json.loads(again.stdout)["lost_fw_ids"] == []  # nothing twice
