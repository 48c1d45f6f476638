"""`nft-fw serve`: the live page of a running campaign, in a real headless Chromium held open
while a real worker lands the next iteration; read-only, loopback unless given a password."""

from __future__ import annotations

import base64
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path
from typing import Any

import pytest
from browser import LivePage
from specs import small_campaign

pytestmark = pytest.mark.integration

NAME = "live"


def _wait(what: str, check: Any, timeout: float, every: float = 0.2) -> Any:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        value = check()
        if value:
            return value
        time.sleep(every)
    raise AssertionError(f"waited {timeout:.0f} s for {what}")


def _serve(conn: Any, *extra: str, env: dict[str, str] | None = None) -> tuple[Any, str]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "nft_fw", "serve", "--port", "0", "--refresh", "0.5",
         "--data-dir", str(conn.server.data_dir), "--db-name", conn.db_name, *extra],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
    )  # fmt: skip
    assert proc.stdout is not None
    line = proc.stdout.readline()
    assert "http://" in line, line + proc.stderr.read() if proc.stderr else line
    return proc, line.split("http://", 1)[1].split("/", 1)[0]


def test_the_live_page_shows_the_next_iteration_without_a_reload(
    connection: Any, tmp_path: Path
) -> None:
    from nft_fw.firetasks.submission import submit
    from nft_fw.launchpad import queue, records
    from nft_fw.spec.campaign import load_campaign, prepare

    submit(connection.launchpad, prepare(load_campaign(small_campaign(NAME))))
    db = connection.launchpad.db
    server, address = _serve(connection)
    worker = subprocess.Popen(
        [sys.executable, "-m", "nft_fw", "worker", "--until-done", "--data-dir",
         str(connection.server.data_dir), "--db-name", connection.db_name,
         "--work-dir", str(tmp_path / "worker")],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    page = None
    try:
        _wait("iteration 0", lambda: records.iterations(db, NAME), 300)

        def held_in_a_label() -> bool:
            """Stop the worker; keep it stopped if it is inside a label Firework."""
            os.kill(worker.pid, signal.SIGSTOP)
            if any(f["role"] == "label" for f in queue.running(connection.launchpad, NAME)):
                return True
            os.kill(worker.pid, signal.SIGCONT)
            return False

        # hold the campaign inside a label Firework of iteration 1 while the page opens
        _wait("the worker inside a label Firework", held_in_a_label, 300, every=0.01)
        landed = len(records.iterations(db, NAME))
        # nft-fw status names the running label Firework, its host and its age
        status = subprocess.run(
            [sys.executable, "-m", "nft_fw", "status", NAME, "--data-dir",
             str(connection.server.data_dir), "--db-name", connection.db_name],
            capture_output=True, text=True, timeout=120, check=False,
        )  # fmt: skip
        said = " ".join(status.stdout.split())
        assert status.returncode == 0 and f"{NAME}: running fw" in said, said
        assert "(label) on" in said and " for " in said, said
        page = LivePage(f"http://{address}/campaign/{NAME}", tmp_path / "browser")
        _wait("the page's first drawing", lambda: page.evaluate("document.body.dataset.drawn"), 60)
        assert int(page.evaluate("document.body.dataset.records")) == landed
        page.evaluate("window.nftMark = 'first load'")  # gone if the page reloads
        os.kill(worker.pid, signal.SIGCONT)
        _wait("the next iteration", lambda: len(records.iterations(db, NAME)) > landed, 300)
        now = len(records.iterations(db, NAME))
        _wait(
            "the page to show it",
            lambda: int(page.evaluate("document.body.dataset.records")) >= now,
            30,
        )
        assert page.evaluate("window.nftMark") == "first load"
        assert page.evaluate("performance.getEntriesByType('navigation').length") == 1
        rows = page.evaluate(
            "[...document.querySelectorAll('#history tbody tr')].map((r) => r.dataset.iteration)"
        )
        assert [str(i) for i in range(now)] == rows[:now]
        text = page.evaluate("document.body.innerText")
        assert "label Fireworks:" in text and "Workers seen" in text
        worker.wait(timeout=600)
        index = LivePage(f"http://{address}/", tmp_path / "index")
        try:
            _wait("the index", lambda: index.evaluate("document.body.dataset.drawn"), 60)
            assert NAME in index.evaluate("document.querySelector('#campaigns').innerText")
        finally:
            index.close()
    finally:
        if page is not None:
            page.close()
        if worker.poll() is None:
            os.kill(worker.pid, signal.SIGCONT)
            worker.kill()
        server.terminate()
        server.wait(timeout=30)


def test_serve_is_loopback_unless_given_a_password(connection: Any) -> None:
    open_address = subprocess.run(
        [sys.executable, "-m", "nft_fw", "serve", "--host", "0.0.0.0",
         "--data-dir", str(connection.server.data_dir), "--db-name", connection.db_name],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert open_address.returncode == 2 and "--password-env" in open_address.stderr
    password = uuid.uuid4().hex
    env = {**os.environ, "NFT_FW_TEST_PAGE": password}
    server, address = _serve(connection, "--password-env", "NFT_FW_TEST_PAGE", env=env)
    try:
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(f"http://{address}/api/campaigns", timeout=30)
        assert refused.value.code == 401
        token = base64.b64encode(f"nft-fw:{password}".encode()).decode()
        request = urllib.request.Request(
            f"http://{address}/api/campaigns", headers={"Authorization": f"Basic {token}"}
        )
        with urllib.request.urlopen(request, timeout=30) as answer:
            assert answer.status == 200 and answer.read() == b"[]"
        post = urllib.request.Request(
            f"http://{address}/api/campaigns", data=b"{}", method="POST",
            headers={"Authorization": f"Basic {token}"},
        )  # fmt: skip
        with pytest.raises(urllib.error.HTTPError) as not_allowed:
            urllib.request.urlopen(post, timeout=30)
        assert not_allowed.value.code == 501  # read-only: no method but GET
    finally:
        server.terminate()
        server.wait(timeout=30)
