"""Real worker processes against the real server: every Firework runs exactly once."""

from __future__ import annotations

import collections
import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from service import every_log_says

from nft_fw.firetasks.smoke import expected_total, smoke_workflow

pytestmark = pytest.mark.integration

N_LEAVES, N_ADDED = 47, 5  # 47 leaves + root + fan-out + total = 50 Fireworks, +5 at run time


def _ledger(path: Path) -> collections.Counter[str]:
    return collections.Counter(json.loads(line)["tag"] for line in path.read_text().splitlines())


def _assert_all_ran_once(lp: object, ledger: Path, n_expected: int) -> None:
    fws = list(lp.fireworks.find({}, {"fw_id": 1, "state": 1, "launches": 1}))  # type: ignore[attr-defined]
    assert len(fws) == n_expected
    assert {fw["state"] for fw in fws} == {"COMPLETED"}
    assert all(len(fw["launches"]) == 1 for fw in fws)
    launches = collections.Counter(d["fw_id"] for d in lp.launches.find({}, {"fw_id": 1}))  # type: ignore[attr-defined]
    assert sorted(launches) == sorted(fw["fw_id"] for fw in fws)
    assert set(launches.values()) == {1}
    tags = _ledger(ledger)
    assert len(tags) == n_expected and set(tags.values()) == {1}


def _nft_fw_worker(connection: object, cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """``nft-fw worker --launchpad <the test's file> ARGS`` run to its end in ``cwd``."""
    return subprocess.run(
        [sys.executable, "-m", "nft_fw", "worker", "--launchpad",
         str(connection.lp_file), *args],  # type: ignore[attr-defined]
        capture_output=True, text=True, timeout=300, cwd=cwd,
    )  # fmt: skip


def test_two_concurrent_worker_processes(connection: object, tmp_path: Path) -> None:
    """Two workers at once (rapidfire, polling) share one workflow: each Firework runs once.

    nft-fw workers, not plain ``rlaunch``: FireWorks' own clients draw launch ids in a
    way SecantusDB does not make atomic (``tests/test_ids.py``); plain ``rlaunch`` is
    tested alone below."""
    lp = connection.launchpad  # type: ignore[attr-defined]
    ledger = tmp_path / "ledger.jsonl"
    lp.add_wf(smoke_workflow(N_LEAVES, N_ADDED, ledger=str(ledger)))
    # the root held RESERVED until both workers poll: work can come, none is runnable, so
    # a worker that starts late (imports on a loaded machine) does not find the run over
    (root,) = lp.get_fw_ids({"name": "root"})
    lp.fireworks.update_one({"fw_id": root}, {"$set": {"state": "RESERVED"}})
    logs = [tmp_path / f"w{i}.log" for i in range(2)]
    procs = []
    for i, log in enumerate(logs):
        with open(log, "w") as out:
            procs.append(subprocess.Popen(
                [sys.executable, "-m", "nft_fw", "worker", "-v",
                 "--launchpad", str(connection.lp_file),  # type: ignore[attr-defined]
                 # stops when no work can come: not while the other worker runs a Firework
                 # that appends the fan-out (both must take part, below)
                 "--until-done", "--poll", "0.5", "--work-dir", str(tmp_path / f"w{i}")],
                stdout=out, stderr=subprocess.STDOUT, text=True,
            ))  # fmt: skip
    every_log_says(logs, "started (category", procs)
    lp.fireworks.update_one({"fw_id": root}, {"$set": {"state": "READY"}})
    for p in procs:
        p.wait(timeout=600)
    outs = [log.read_text() for log in logs]
    assert [p.returncode for p in procs] == [0, 0], outs
    assert all("stopped on no work can come" in out for out in outs), outs
    _assert_all_ran_once(lp, ledger, N_LEAVES + 3 + N_ADDED)
    # Both processes did work (the claim is concurrency, not one worker idling).
    pids = collections.Counter(json.loads(line)["pid"] for line in ledger.read_text().splitlines())
    assert len(pids) == 2
    total_id = lp.get_fw_ids({"name": "total"})[0]
    total = lp.launches.find_one({"fw_id": total_id})["action"]["stored_data"]["sum"]
    assert total == pytest.approx(expected_total(N_LEAVES))
    added = lp.get_fw_ids({"name": {"$regex": r"^fan\."}})
    assert len(added) == N_ADDED


def test_nft_fw_worker_respects_category_and_max(connection: object, tmp_path: Path) -> None:
    lp = connection.launchpad  # type: ignore[attr-defined]
    ledger = tmp_path / "ledger.jsonl"
    lp.add_wf(smoke_workflow(4, 2, ledger=str(ledger), name="cat-label", category="label"))
    lp.add_wf(
        smoke_workflow(
            2, 1, ledger=str(tmp_path / "other.jsonl"), name="cat-train", category="train"
        )
    )

    runs = ("--work-dir", str(tmp_path / "runs"), "--poll", "0.2")
    out = _nft_fw_worker(connection, tmp_path, *runs, "--category", "label", "--max", "3")
    assert out.returncode == 0, out.stderr
    assert sum(_ledger(ledger).values()) == 3
    # the train workflow's READY Fireworks are work that can still come (a trainer appends
    # label work in a campaign): --until-done keeps waiting, so the idle timeout ends it
    out = _nft_fw_worker(
        connection, tmp_path, *runs, "--category", "label", "--until-done", "--idle-timeout", "2"
    )
    assert out.returncode == 0, out.stderr
    assert "stopped on idle timeout" in out.stderr
    label_fws = lp.get_fw_ids({"spec._category": "label"})
    train_fws = lp.get_fw_ids({"spec._category": "train"})
    assert {lp.get_fw_by_id(i).state for i in label_fws} == {"COMPLETED"}
    assert len(label_fws) == 4 + 3 + 2
    assert {lp.fireworks.find_one({"fw_id": i})["state"] for i in train_fws} <= {"READY", "WAITING"}
    assert not (tmp_path / "other.jsonl").exists()


def test_work_can_come_while_anything_is_ready_reserved_running_or_locked(
    connection: object, tmp_path: Path
) -> None:
    from nft_fw.launchpad.worker import work_can_come

    lp = connection.launchpad  # type: ignore[attr-defined]
    assert not work_can_come(lp)  # an empty LaunchPad
    out = _nft_fw_worker(connection, tmp_path, "--until-done", "--poll", "0.2")
    assert out.returncode == 0, out.stderr
    assert "0 launches, stopped on no work can come" in " ".join(out.stderr.split())
    lp.add_wf(smoke_workflow(1, 0, ledger=str(tmp_path / "l.jsonl"), name="one"))
    assert work_can_come(lp)  # its root is READY
    root = lp.get_fw_ids({"state": "READY"})[0]
    for state in ("RESERVED", "RUNNING", "COMPLETED"):
        lp.fireworks.update_one({"fw_id": root}, {"$set": {"state": state}})
        assert work_can_come(lp) == (state != "COMPLETED"), state
    # WAITING children of a completed root whose workflow refresh is under way
    lp.workflows.update_one({"nodes": root}, {"$set": {"locked": True}})
    assert work_can_come(lp)
    lp.workflows.update_one({"nodes": root}, {"$unset": {"locked": True}})
    assert not work_can_come(lp)  # WAITING alone moves by nobody's hand


def test_plain_rlaunch_with_fworker_file(
    connection: object, tmp_path: Path, venv_bin: Path
) -> None:
    lp = connection.launchpad  # type: ignore[attr-defined]
    ledger = tmp_path / "ledger.jsonl"
    lp.add_wf(smoke_workflow(3, 1, ledger=str(ledger), name="dft-only", category="dft"))
    lp.add_wf(
        smoke_workflow(3, 1, ledger=str(tmp_path / "no.jsonl"), name="train-only", category="train")
    )
    fworker = tmp_path / "my_fworker.yaml"
    fworker.write_text(yaml.safe_dump({"name": "dft-cluster", "category": "dft", "query": "{}"}))
    out = subprocess.run(
        [
            str(venv_bin / "rlaunch"),
            "-l",
            str(connection.lp_file),
            "-w",
            str(fworker),
            "-s",
            "rapidfire",
            "--sleep",
            "1",
        ],  # type: ignore[attr-defined]
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    assert sum(_ledger(ledger).values()) == 3 + 3 + 1
    assert not (tmp_path / "no.jsonl").exists()
    names = {d["fworker"]["name"] for d in lp.launches.find({}, {"fworker.name": 1})}
    assert names == {"dft-cluster"}


def test_worker_fworker_file_errors_name_the_option(connection: object, tmp_path: Path) -> None:
    def worker(*extra: str) -> tuple[int, str]:
        out = _nft_fw_worker(connection, tmp_path, "--idle-timeout", "0", *extra)
        return out.returncode, " ".join(out.stderr.split())  # the console wraps long lines

    fworker = tmp_path / "my_fworker.yaml"
    fworker.write_text(yaml.safe_dump({"name": "a", "category": ["dft", "label"], "query": "{}"}))
    code, err = worker("--fworker", str(fworker), "--category", "train")
    assert code == 2 and "--fworker and --category" in err
    code, err = worker("--fworker", str(tmp_path / "missing.yaml"))
    assert code == 2 and "missing.yaml: cannot read it" in err
    (tmp_path / "list.yaml").write_text("- not\n- a mapping\n")
    code, err = worker("--fworker", str(tmp_path / "list.yaml"))
    assert code == 2 and "is not a FireWorks my_fworker.yaml" in err
    code, err = worker("--fworker", str(fworker), "--name", "site-a")
    assert code == 0, err
    assert "worker site-a: 0 launches, stopped on idle timeout" in err


def test_a_worker_process_keeps_the_structure_files_it_parsed_last(connection: object) -> None:
    """records.get_structure parses a stored file once per process and keeps the last
    STRUCTURE_CACHE_FILES; a copy is returned, so a caller cannot change what is kept."""
    from ase import Atoms

    from nft_fw.launchpad import records

    db = connection.launchpad.db  # type: ignore[attr-defined]
    n = records.STRUCTURE_CACHE_FILES + 1
    ids = [
        records.put_structures(db, [Atoms("Pt", positions=[[0, 0, i]])], f"s{i}") for i in range(n)
    ]
    cache = records._stored_frames
    cache.cache_clear()
    first = records.get_structure(db, ids[0])
    first.positions[0, 2] = 99.0
    assert records.get_structure(db, ids[0]).positions[0, 2] == 0.0  # the kept one unchanged
    assert cache.cache_info().misses == 1  # parsed once
    for file_id in ids[1:]:
        records.get_structure(db, file_id)
    assert cache.cache_info().currsize == records.STRUCTURE_CACHE_FILES
    misses = cache.cache_info().misses
    assert records.get_structure(db, ids[-1]).positions[0, 2] == float(n - 1)
    assert cache.cache_info().misses == misses  # kept
    records.get_structure(db, ids[0])
    assert cache.cache_info().misses == misses + 1  # the least recently used went first
