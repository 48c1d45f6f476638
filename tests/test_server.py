"""The embedded server: start, find-the-running-one, ping, stop (real SecantusDB processes)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from nft_fw.launchpad import server

pytestmark = pytest.mark.integration


def test_start_is_idempotent_and_stop_cleans_up(tmp_path: Path) -> None:
    info, started = server.start(tmp_path)
    try:
        assert started
        assert server.ping(info.host, info.port)
        again, started_again = server.start(tmp_path)
        assert not started_again
        assert again == info
        assert server.status(tmp_path) == info
    finally:
        assert server.stop(tmp_path)
    assert server.status(tmp_path) is None
    assert not server.ping(info.host, info.port, timeout_s=0.5)
    assert not server.stop(tmp_path)


def test_data_survive_a_restart(tmp_path: Path) -> None:
    import pymongo

    info, _ = server.start(tmp_path)
    try:
        client = pymongo.MongoClient(info.uri(), directConnection=True)
        client.keep.docs.insert_one({"x": 42})
        client.close()
    finally:
        server.stop(tmp_path)
    info2, started = server.start(tmp_path)
    try:
        assert started
        client = pymongo.MongoClient(info2.uri(), directConnection=True)
        assert client.keep.docs.find_one({"x": 42}) is not None
        client.close()
    finally:
        server.stop(tmp_path)


def test_cli_db_start_status_stop(tmp_path: Path) -> None:
    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "nft_fw", *args], capture_output=True, text=True, timeout=120
        )

    started = run("db", "start", "--data-dir", str(tmp_path), "--json")
    assert started.returncode == 0, started.stderr
    payload = json.loads(started.stdout)
    assert payload["started"] is True
    assert Path(payload["launchpad_file"]).is_file()
    status = run("db", "status", "--data-dir", str(tmp_path), "--json")
    assert json.loads(status.stdout) == {
        "running": True,
        "responding": True,
        "address": payload["address"],
        "pid": payload["pid"],
        "data_dir": payload["data_dir"],
    }
    stopped = run("db", "stop", "--data-dir", str(tmp_path))
    assert stopped.returncode == 0 and "stopped" in stopped.stdout
    status = run("db", "status", "--data-dir", str(tmp_path), "--json")
    assert json.loads(status.stdout)["running"] is False


def test_cli_db_start_foreground_becomes_the_server_and_stops_on_sigterm(tmp_path: Path) -> None:
    """``db start --foreground`` (a container's command): the server replaces the process,
    logs in and answers only with the password, and a record left by a dead container's
    server (here naming a live process that is no server) does not stop it starting."""
    import os
    import signal

    import pymongo
    from pymongo.errors import OperationFailure

    decoy = subprocess.Popen(["sleep", "300"])  # a live pid that serves nothing
    port = server.free_port()
    stale = server.ServerInfo(host="127.0.0.1", port=server.free_port(), pid=decoy.pid,
                              data_dir=str(tmp_path))  # fmt: skip
    (tmp_path / server.STATE_FILE).write_text(json.dumps(stale.__dict__))
    env = {**os.environ, "NFT_FW_DB_PASSWORD": "foreground-pass"}
    # the server's log goes to a file: a pipe nobody reads until the end fills up and blocks
    # the server's writes, and with them its shutdown
    log = tmp_path / "server.log"
    proc = subprocess.Popen(
        [sys.executable, "-m", "nft_fw", "db", "start", "--foreground", "--auth",
         "--host", "127.0.0.1", "--port", str(port), "--data-dir", str(tmp_path)],
        env=env, stderr=log.open("w"), text=True,
    )  # fmt: skip
    try:
        client: pymongo.MongoClient = pymongo.MongoClient(
            f"mongodb://nft:foreground-pass@127.0.0.1:{port}/?authSource=admin",
            retryWrites=False, directConnection=True, serverSelectionTimeoutMS=60_000,
        )  # fmt: skip
        client.nft_fw.probe.insert_one({"x": 1})
        client.close()
        info = server.status(tmp_path)
        assert info is not None and info.pid == proc.pid and info.port == port and info.auth
        assert decoy.poll() is None  # the stale record's pid was left alone
        anonymous: pymongo.MongoClient = pymongo.MongoClient(
            "127.0.0.1", port, directConnection=True, serverSelectionTimeoutMS=5_000
        )
        with pytest.raises(OperationFailure):
            anonymous.nft_fw.probe.find_one()
        anonymous.close()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 0, log.read_text()[-3000:]
        assert not server.ping("127.0.0.1", port, timeout_s=0.5)
        assert server.status(tmp_path) is None
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        decoy.kill()
        decoy.wait()


@pytest.mark.slow
def test_read_only_commands_leave_no_server_running(tmp_path: Path) -> None:
    """status, history and labels on a stopped embedded server read it through a server
    they start, and stop it again; only db start leaves one running."""

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "nft_fw", *args, "--data-dir", str(tmp_path)],
            capture_output=True, text=True, timeout=180,
        )  # fmt: skip

    assert run("db", "start").returncode == 0
    assert run("db", "stop").returncode == 0
    for command in (("status", "--json"), ("history", "nothing-here"), ("labels", "nothing-here")):
        out = run(*command)
        assert "stopped it again" in out.stderr, (command, out.stderr)
        assert server.status(tmp_path) is None, f"{command} left the server running"
    assert json.loads(run("status", "--json").stdout) == []  # it did read the database
    assert "no campaign named 'nothing-here'" in run("history", "nothing-here").stderr
