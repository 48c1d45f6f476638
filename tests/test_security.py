"""Authentication on the embedded server, and credentials never written anywhere: a whole
campaign runs through an authenticated server and nothing it wrote holds the password."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from specs import tiny

pytestmark = pytest.mark.integration

PASSWORD = "Zq7-unguessable-Xy"


def _nft(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "nft_fw", *args],
        capture_output=True, text=True, timeout=300, check=False,
        env={**os.environ, **(env or {})},
    )  # fmt: skip


@pytest.fixture(scope="module")
def auth_server(tmp_path_factory: pytest.TempPathFactory) -> Any:
    data = tmp_path_factory.mktemp("auth")
    out = _nft("db", "start", "--auth", "--data-dir", str(data), "--json",
               env={"NFT_FW_DB_PASSWORD": PASSWORD})  # fmt: skip
    assert out.returncode == 0, out.stderr
    info = json.loads(out.stdout)
    yield data, info
    _nft("db", "stop", "--data-dir", str(data))


def test_db_start_auth_requires_a_login(auth_server: Any) -> None:
    data, info = auth_server
    assert info["auth"] is True
    lp_file = Path(info["launchpad_file"])
    assert stat.S_IMODE(lp_file.stat().st_mode) == 0o600  # holds the password
    host = info["address"]
    wrong = _nft("status", "--uri", f"mongodb://nft:not-the-password@{host}/?authSource=admin")
    assert wrong.returncode != 0
    assert "refused the login: wrong user name or password" in wrong.stderr
    assert "not-the-password" not in wrong.stdout + wrong.stderr
    assert "Traceback" not in wrong.stderr
    anonymous = _nft("status", "--uri", f"mongodb://{host}/")
    assert anonymous.returncode != 0 and "requires a login" in anonymous.stderr
    good = _nft("status", "--json", "--uri", f"mongodb://nft:{PASSWORD}@{host}/?authSource=admin")
    assert good.returncode == 0, good.stderr
    # the embedded connection finds the credentials in the data directory's own file
    embedded = _nft("status", "--json", "--data-dir", str(data))
    assert embedded.returncode == 0, embedded.stderr


@pytest.mark.slow
def test_no_credentials_in_anything_a_campaign_writes(auth_server: Any, tmp_path: Path) -> None:
    from nft_fw.cli import run_campaign
    from nft_fw.launchpad.connection import from_uri
    from nft_fw.spec.campaign import load_campaign, prepare

    _, info = auth_server
    uri = f"mongodb://nft:{PASSWORD}@{info['address']}/?authSource=admin"
    conn = from_uri(uri, "secure_campaign")
    try:
        spec = tiny("sec", {"name": "emt"}, validation={"true_forces": True})
        code = run_campaign(conn, prepare(load_campaign(spec)), 2, tmp_path / "w", tmp_path / "r")
        assert code == 0
        db = conn.launchpad.db
        dumped = [
            json.dumps(doc, default=str)
            for name in db.list_collection_names()
            for doc in db[name].find({})
        ]
        assert len(dumped) > 20  # Fireworks, launches, labels, iterations, files ...
        assert not [d for d in dumped if PASSWORD in d]
        files = [p for p in tmp_path.rglob("*") if p.is_file()]
        assert any(p.name == "FW.json" for p in files) and any(p.suffix == ".png" for p in files)
        leaking = [p for p in files if PASSWORD.encode() in p.read_bytes()]
        assert not leaking, leaking
        env = {"NFT_FW_MONGODB_URI": uri}
        for args in (("status", "--json"), ("history", "sec", "--json"),
                     ("labels", "sec", "--json"), ("status",), ("history", "sec")):  # fmt: skip
            out = _nft(*args, "--db-name", "secure_campaign", env=env)
            assert out.returncode == 0, out.stderr
            assert PASSWORD not in out.stdout + out.stderr
        # an unreachable address, told within the URI's own server-selection timeout
        dead = uri.replace(info["address"], "127.0.0.1:1") + "&serverSelectionTimeoutMS=2000"
        failed = _nft("status", "--db-name", "secure_campaign", "--uri", dead)
        assert failed.returncode != 0 and PASSWORD not in failed.stdout + failed.stderr
    finally:
        conn.close()
