"""Driving the service from the tests: the nft-fw command line against a test database,
worker processes with their logs, waiting for a condition or for every log to say so, submitting a campaign dict."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path
from typing import Any

SUPPORT = Path(__file__).resolve().parent


def cli(conn: Any, *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    """``nft-fw ARGS`` against the test connection's server and database."""
    return subprocess.run(
        [sys.executable, "-m", "nft_fw", *args, "--data-dir", str(conn.server.data_dir),
         "--db-name", conn.db_name],
        capture_output=True, text=True, timeout=timeout, check=False,
    )  # fmt: skip


def worker(conn: Any, tmp: Path, *args: str) -> subprocess.Popen[bytes]:
    """A worker process (tests/support/worker.py) whose output goes to ``tmp``.log
    (:func:`tail` shows it on failure)."""
    tmp.parent.mkdir(parents=True, exist_ok=True)
    with open(tmp.with_suffix(".log"), "wb") as log:
        return subprocess.Popen(
            [sys.executable, str(SUPPORT / "worker.py"), "--data-dir", str(conn.server.data_dir),
             "--db-name", conn.db_name, "--work-dir", str(tmp), *args],
            stdout=log, stderr=subprocess.STDOUT,
        )  # fmt: skip


def tail(tmp: Path, n: int = 40) -> str:
    """The last lines of the log of the worker started on ``tmp``."""
    lines = tmp.with_suffix(".log").read_text(errors="replace").splitlines()
    return "\n".join(lines[-n:])


def wait(predicate: Any, timeout: float, what: str) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if predicate():
            return
        time.sleep(0.3)
    raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")


def every_log_says(
    logs: list[Path], text: str, procs: list[subprocess.Popen[Any]], timeout: float = 300
) -> None:
    """Wait until each of ``logs`` holds ``text`` (every process up and at that point);
    fails with the logs' tails at the timeout, or at once if a process in ``procs`` ended."""
    end = time.monotonic() + timeout
    while not all(text in log.read_text(errors="replace") for log in logs):
        assert time.monotonic() < end and all(p.poll() is None for p in procs), [
            log.read_text(errors="replace")[-2000:] for log in logs
        ]
        time.sleep(0.2)


def submit(conn: Any, spec: dict[str, Any]) -> None:
    from nft_fw.firetasks.submission import submit as submit_campaign
    from nft_fw.spec.campaign import load_campaign, prepare

    submit_campaign(conn.launchpad, prepare(load_campaign(spec)))
