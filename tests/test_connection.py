"""Connecting: embedded, my_launchpad.yaml, URI; retryWrites off; credentials never shown."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pymongo
import pytest
import yaml

from nft_fw.launchpad import connection as conn_mod
from nft_fw.launchpad import server

pytestmark = pytest.mark.integration

SECRET = "s3cr3t-Pa55word"


def _retry_writes(lp: object) -> bool:
    return lp.connection.options.retry_writes  # type: ignore[attr-defined,no-any-return]


def test_embedded_file_and_uri_reach_the_same_database(
    db_server: server.ServerInfo, tmp_path: Path
) -> None:
    emb = conn_mod.embedded(db_server.data_dir, db_name="conn_same", start=False)
    emb.db.marks.insert_one({"from": "embedded"})
    lp_file = emb.write_launchpad_file(tmp_path / "lp.yaml")
    assert oct(lp_file.stat().st_mode & 0o777) == "0o600"
    via_file = conn_mod.from_file(lp_file)
    via_uri = conn_mod.from_uri(f"mongodb://{db_server.address}/conn_same?retryWrites=true")
    try:
        for conn in (emb, via_file, via_uri):
            assert conn.db.marks.find_one({"from": "embedded"}) is not None
            assert _retry_writes(conn.launchpad) is False
        assert via_uri.db_name == "conn_same"
        assert yaml.safe_load(lp_file.read_text())["mongoclient_kwargs"]["retryWrites"] is False
    finally:
        emb.launchpad.connection.drop_database("conn_same")
        for conn in (emb, via_file, via_uri):
            conn.close(stop_server=False)


def test_a_uri_s_own_server_selection_timeout_is_kept(db_server: server.ServerInfo) -> None:
    """pymongo gives keyword arguments precedence over URI options: nft-fw's 30 s default
    must stay out where the URI (or a URI-mode my_launchpad.yaml host) sets its own."""
    default = conn_mod.from_uri(f"mongodb://{db_server.address}/conn_timeout")
    own = conn_mod.from_uri(
        f"mongodb://{db_server.address}/conn_timeout?serverSelectionTimeoutMS=2500"
    )
    # a host (FireWorks' host-and-port form) or a URI pymongo cannot parse sets none
    assert not conn_mod._uri_sets_timeout("127.0.0.1")
    assert not conn_mod._uri_sets_timeout("mongodb://[::1")
    assert not conn_mod._uri_sets_timeout(None)
    try:
        assert default.launchpad.connection.options.server_selection_timeout == 30.0
        assert own.launchpad.connection.options.server_selection_timeout == 2.5
    finally:
        default.close()
        own.close()


def test_env_uri_is_used_when_no_option_given(
    db_server: server.ServerInfo, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(conn_mod.URI_ENV, f"mongodb://{db_server.address}/from_env")
    conn = conn_mod.open_connection(data_dir="/nonexistent/never-started")
    try:
        assert conn.kind == "uri" and conn.db_name == "from_env"
    finally:
        conn.close()


def test_env_launchpad_file_is_used_after_the_env_uri(
    db_server: server.ServerInfo, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """The images' ``docker compose exec`` commands: no URI in their environment, the file
    the entry point wrote named by ``$NFT_FW_LAUNCHPAD_FILE``; never an embedded server."""
    lp_file = tmp_path / "my_launchpad.yaml"
    lp_file.write_text(
        yaml.safe_dump({"host": f"mongodb://{db_server.address}/from_file", "uri_mode": True,
                        "name": "from_file"})
    )  # fmt: skip
    monkeypatch.delenv(conn_mod.URI_ENV, raising=False)
    monkeypatch.setenv(conn_mod.LAUNCHPAD_FILE_ENV, str(lp_file))
    conn = conn_mod.open_connection(data_dir=str(tmp_path / "never-started"))
    try:
        assert conn.kind == "file" and conn.db_name == "from_file"
        assert not (tmp_path / "never-started").exists()
    finally:
        conn.close()
    monkeypatch.setenv(conn_mod.URI_ENV, f"mongodb://{db_server.address}/from_env")
    conn = conn_mod.open_connection()
    try:
        assert conn.kind == "uri" and conn.db_name == "from_env"
    finally:
        conn.close()
    monkeypatch.delenv(conn_mod.URI_ENV)
    monkeypatch.setenv(conn_mod.LAUNCHPAD_FILE_ENV, str(tmp_path / "missing.yaml"))
    with pytest.raises(
        conn_mod.DatabaseConnectionError, match=r"NFT_FW_LAUNCHPAD_FILE=.*entry point"
    ):
        conn_mod.open_connection(data_dir=str(tmp_path / "never-started"))
    assert not (tmp_path / "never-started").exists()


def test_bad_uri_and_missing_file_are_clear_errors(tmp_path: Path) -> None:
    with pytest.raises(
        conn_mod.DatabaseConnectionError, match="not a valid MongoDB connection string"
    ):
        conn_mod.from_uri("http://example.org")
    with pytest.raises(conn_mod.DatabaseConnectionError, match="no such file"):
        conn_mod.from_file(tmp_path / "missing.yaml")
    with pytest.raises(conn_mod.DatabaseConnectionError, match="no embedded server is running"):
        conn_mod.embedded(tmp_path, start=False)


def test_redact_hides_passwords() -> None:
    text = f"mongodb://alice:{SECRET}@db.example.org:27017/x and {{'password': '{SECRET}'}} password={SECRET}"
    assert SECRET not in conn_mod.redact(text)
    assert "alice" in conn_mod.redact(text)


@pytest.fixture(scope="module")
def auth_server(tmp_path_factory: pytest.TempPathFactory) -> object:
    """A second real server with SCRAM authentication and one user (provisioned, then restarted with --auth)."""
    data_dir = tmp_path_factory.mktemp("auth-db")
    info, _ = server.start(data_dir)
    client = pymongo.MongoClient(info.uri(), directConnection=True)
    client.admin.command("createUser", "alice", pwd=SECRET, roles=[{"role": "root", "db": "admin"}])
    client.close()
    server.stop(data_dir)
    info, _ = server.start(data_dir, auth=True, port=info.port)
    yield info
    server.stop(data_dir)


def test_credentials_never_printed(auth_server: server.ServerInfo, tmp_path: Path) -> None:
    good = f"mongodb://alice:{SECRET}@{auth_server.address}/nft_auth?authSource=admin"
    bad = f"mongodb://alice:wrong-{SECRET}@{auth_server.address}/nft_auth?authSource=admin&serverSelectionTimeoutMS=3000"
    conn = conn_mod.from_uri(good)
    assert SECRET not in conn.description
    conn.db.probe.insert_one({"ok": 1})
    conn.close()

    env = {k: v for k, v in os.environ.items() if k != conn_mod.URI_ENV}
    outputs = []
    for uri in (good, bad):
        for args in (
            ["worker", "--uri", uri, "--idle-timeout", "0", "-vv", "--work-dir", str(tmp_path)],
        ):
            proc = subprocess.run(
                [sys.executable, "-m", "nft_fw", *args],
                capture_output=True,
                text=True,
                timeout=120,
                env=env,
            )
            outputs.append((proc.returncode, proc.stdout + proc.stderr))
    (good_rc, good_out), (bad_rc, bad_out) = outputs
    assert good_rc == 0, good_out
    assert bad_rc == 1 and "refused the login: wrong user name or password" in bad_out
    for _, out in outputs:
        assert SECRET not in out
    for path in tmp_path.rglob("*"):
        if path.is_file():
            assert SECRET not in path.read_text(errors="replace"), path


def test_another_database_gets_its_own_launchpad_file(db_server: server.ServerInfo) -> None:
    """A command given --db-name writes that database's my_launchpad.NAME.yaml and leaves
    the data directory's my_launchpad.yaml (the default database, which workers and
    rlaunch -l read) as it was."""
    default = conn_mod.embedded(db_server.data_dir, start=False)
    other = conn_mod.embedded(db_server.data_dir, db_name="conn_other", start=False)
    try:
        data = Path(db_server.data_dir)
        assert conn_mod.launchpad_file(data) == data / "my_launchpad.yaml"
        assert conn_mod.launchpad_file(data, "conn_other") == data / "my_launchpad.conn_other.yaml"
        assert yaml.safe_load((data / "my_launchpad.yaml").read_text())["name"] == "nft_fw"
        other_file = data / "my_launchpad.conn_other.yaml"
        assert yaml.safe_load(other_file.read_text())["name"] == "conn_other"
        assert oct(other_file.stat().st_mode & 0o777) == "0o600"
    finally:
        default.close(stop_server=False)
        other.close(stop_server=False)
