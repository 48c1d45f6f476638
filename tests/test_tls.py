"""The embedded server on the network: refused without a login, TLS with its own CA, and a
campaign run to its end by two workers through an ``--auth --tls`` server (real servers,
real worker processes)."""

from __future__ import annotations

import json
import os
import socket
import stat
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import pymongo
import pytest
import yaml
from pymongo.errors import PyMongoError
from specs import tiny

from nft_fw.launchpad import server, tls

pytestmark = pytest.mark.integration

PASSWORD = "Tl5-unguessable-Qw"


def _nft(*args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "nft_fw", *args],
        capture_output=True, text=True, timeout=timeout, check=False,
        env={**os.environ, "NFT_FW_DB_PASSWORD": PASSWORD},
    )  # fmt: skip


def _listening(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(1.0)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def _variant(lp_file: Path, out: Path, **kwargs: Any) -> Path:
    """A copy of ``lp_file`` with these mongoclient_kwargs changed (None removes one) and a
    short server-selection timeout, so a refused client fails in seconds."""
    body = yaml.safe_load(lp_file.read_text())
    options = {**body["mongoclient_kwargs"], "serverSelectionTimeoutMS": 3000, **kwargs}
    body["mongoclient_kwargs"] = {k: v for k, v in options.items() if v is not None}
    out.write_text(yaml.safe_dump(body))
    return out


@pytest.fixture(scope="module")
def secure_server(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """``nft-fw db start --auth --tls`` on loopback; yields its data dir and --json output."""
    data = tmp_path_factory.mktemp("tls")
    out = _nft("db", "start", "--auth", "--tls", "--data-dir", str(data), "--json")
    assert out.returncode == 0, out.stderr
    try:
        yield data, json.loads(out.stdout)
    finally:
        _nft("db", "stop", "--data-dir", str(data))


def test_network_start_without_auth_is_refused_before_anything_listens(tmp_path: Path) -> None:
    port = server.free_port()
    data = tmp_path / "db"
    out = _nft("db", "start", "--host", "0.0.0.0", "--port", str(port), "--data-dir", str(data))
    assert out.returncode == 2, out.stdout + out.stderr
    message = " ".join(out.stderr.split())
    assert "--host 0.0.0.0" in message and "--auth" in message and "--tls" in message
    assert "Traceback" not in out.stderr
    assert not data.exists()  # no state file, no storage, no certificates
    assert not _listening(port)
    # the library refuses too, for callers that do not go through the command line
    with pytest.raises(server.ServerError, match="without authentication"):
        server.start(data, host="0.0.0.0", port=port)
    assert server.status(data) is None and not _listening(port)


def test_tls_options_are_checked_before_anything_starts(tmp_path: Path) -> None:
    cert = tmp_path / "server.pem"
    cert.write_text("not used")
    alone = _nft("db", "start", "--data-dir", str(tmp_path / "a"), "--tls-cert", str(cert))
    assert alone.returncode == 2 and "--tls-key" in alone.stderr
    missing = _nft("db", "start", "--data-dir", str(tmp_path / "b"),
                   "--tls-cert", str(cert), "--tls-key", str(tmp_path / "nope.key"))  # fmt: skip
    assert (
        missing.returncode == 2
        and "--tls-key" in missing.stderr
        and "no such file" in (missing.stderr)
    )
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


def test_certificates_name_the_host_and_are_made_once(tmp_path: Path) -> None:
    from cryptography import x509

    files = tls.ensure_certificates(tmp_path, "0.0.0.0")
    names = tls.certificate_names(files.cert_file)
    assert {"127.0.0.1", "localhost", socket.gethostname()} <= names
    assert "0.0.0.0" not in names  # not an address a client connects to
    for key in (files.key_file, tmp_path / "tls" / tls.CA_KEY):
        assert stat.S_IMODE(os.stat(key).st_mode) == 0o600
    assert stat.S_IMODE((tmp_path / "tls").stat().st_mode) == 0o700
    ca = x509.load_pem_x509_certificate(Path(str(files.ca_file)).read_bytes())
    cert = x509.load_pem_x509_certificate(Path(files.cert_file).read_bytes())
    cert.verify_directly_issued_by(ca)  # raises if the CA did not sign it
    before = {p.name: p.read_bytes() for p in (tmp_path / "tls").iterdir()}
    assert tls.ensure_certificates(tmp_path, "0.0.0.0") == files
    assert {p.name: p.read_bytes() for p in (tmp_path / "tls").iterdir()} == before
    # another interface: a new server certificate from the same CA (workers keep ca.pem)
    tls.ensure_certificates(tmp_path, "10.1.2.3")
    assert "10.1.2.3" in tls.certificate_names(files.cert_file)
    assert (tmp_path / "tls" / tls.CA_CERT).read_bytes() == before[tls.CA_CERT]
    assert (tmp_path / "tls" / tls.CA_KEY).read_bytes() == before[tls.CA_KEY]


def test_launchpad_file_carries_tls_and_the_ca(secure_server: Any) -> None:
    data, info = secure_server
    assert info["auth"] is True and info["tls"] is True
    lp_file = Path(info["launchpad_file"])
    body = yaml.safe_load(lp_file.read_text())
    options = body["mongoclient_kwargs"]
    assert options["tls"] is True and options["retryWrites"] is False
    assert options["tlsCAFile"] == info["tls_ca_file"] == str(data / "tls" / "ca.pem")
    assert not any("Invalid" in k for k in options)  # verified, never tlsAllowInvalid*
    assert stat.S_IMODE(lp_file.stat().st_mode) == 0o600
    assert stat.S_IMODE((data / "tls" / "server.key").stat().st_mode) == 0o600
    out = _nft("db", "status", "--data-dir", str(data), "--json")
    assert out.returncode == 0 and json.loads(out.stdout)["responding"] is True


def test_plain_client_is_refused_by_a_tls_server(secure_server: Any, tmp_path: Path) -> None:
    _, info = secure_server
    port = int(info["address"].rsplit(":", 1)[1])
    client: pymongo.MongoClient = pymongo.MongoClient(
        "127.0.0.1", port, directConnection=True, serverSelectionTimeoutMS=3000
    )
    with pytest.raises(PyMongoError):
        client.admin.command("ping")
    client.close()
    plain = _variant(Path(info["launchpad_file"]), tmp_path / "plain.yaml", tls=None,
                     tlsCAFile=None)  # fmt: skip
    out = _nft("status", "--launchpad", str(plain))
    assert out.returncode == 1, out.stdout + out.stderr
    assert "tls: true" in " ".join(out.stderr.split()) and "Traceback" not in out.stderr


def test_client_with_the_ca_connects(secure_server: Any) -> None:
    _, info = secure_server
    port = int(info["address"].rsplit(":", 1)[1])
    client: pymongo.MongoClient = pymongo.MongoClient(
        "localhost", port, username="nft", password=PASSWORD, authSource="admin",
        tls=True, tlsCAFile=info["tls_ca_file"], directConnection=True, retryWrites=False,
        serverSelectionTimeoutMS=5000,
    )  # fmt: skip
    try:
        client.tls_probe.docs.insert_one({"x": 1})
        assert client.tls_probe.docs.find_one({"x": 1}) is not None
        assert client.server_info()["ok"] == 1
    finally:
        client.drop_database("tls_probe")
        client.close()
    out = _nft("status", "--json", "--launchpad", info["launchpad_file"])
    assert out.returncode == 0, out.stderr


def test_client_with_a_wrong_ca_is_refused_naming_the_certificate(
    secure_server: Any, tmp_path: Path
) -> None:
    _, info = secure_server
    other = tls.ensure_certificates(tmp_path / "other", "127.0.0.1")  # another CA
    wrong = _variant(Path(info["launchpad_file"]), tmp_path / "wrong.yaml",
                     tlsCAFile=other.ca_file)  # fmt: skip
    out = _nft("status", "--launchpad", str(wrong))
    assert out.returncode == 1, out.stdout + out.stderr
    message = " ".join(out.stderr.split())
    assert "TLS certificate verify failed" in message and "tlsCAFile" in message
    assert "Traceback" not in out.stderr and PASSWORD not in out.stdout + out.stderr


def test_restart_reuses_the_certificates(tmp_path: Path) -> None:
    first = _nft("db", "start", "--tls", "--data-dir", str(tmp_path), "--json")
    assert first.returncode == 0, first.stderr
    made = {p.name: p.read_bytes() for p in (tmp_path / "tls").iterdir()}
    assert set(made) == {"ca.pem", "ca.key", "server.pem", "server.key"}
    assert _nft("db", "stop", "--data-dir", str(tmp_path)).returncode == 0
    again = _nft("db", "start", "--tls", "--data-dir", str(tmp_path), "--json")
    try:
        assert again.returncode == 0, again.stderr
        assert json.loads(again.stdout)["started"] is True
        assert {p.name: p.read_bytes() for p in (tmp_path / "tls").iterdir()} == made
        # secret material never reaches the terminal
        key_lines = [ln for ln in made["ca.key"].decode().splitlines() if "PRIVATE" not in ln]
        assert not any(line in first.stdout + again.stdout for line in key_lines)
    finally:
        _nft("db", "stop", "--data-dir", str(tmp_path))


def test_campaign_runs_to_its_end_through_auth_and_tls_with_two_workers(
    secure_server: Any, tmp_path: Path
) -> None:
    from nft_fw.launchpad import records
    from nft_fw.launchpad.connection import from_file

    _, info = secure_server
    lp_file = info["launchpad_file"]
    db_name = f"t_{uuid.uuid4().hex[:12]}"
    name = f"tls-{uuid.uuid4().hex[:6]}"
    spec = tmp_path / "campaign.yaml"
    spec.write_text(yaml.safe_dump(tiny(name, {"name": "emt"})))
    out = _nft("submit", str(spec), "--launchpad", lp_file, "--db-name", db_name, "--json")
    assert out.returncode == 0, out.stderr
    workers = []
    for i in range(2):
        with open(tmp_path / f"w{i}.log", "wb") as log:
            workers.append(subprocess.Popen(
                [sys.executable, "-m", "nft_fw", "worker", "--launchpad", lp_file,
                 "--db-name", db_name, "--work-dir", str(tmp_path / f"w{i}"),
                 "--until-done", "--idle-timeout", "8", "--poll", "0.2"],
                stdout=log, stderr=subprocess.STDOUT,
            ))  # fmt: skip
    codes = [w.wait(timeout=600) for w in workers]
    whole = [(tmp_path / f"w{i}.log").read_text(errors="replace") for i in range(2)]
    logs = [text[-2000:] for text in whole]
    assert codes == [0, 0], logs
    # no operation waited out a server selection over TLS (each would log and retry)
    assert not any("unreachable" in text for text in whole), logs
    conn = from_file(lp_file, db_name)
    try:
        lp = conn.launchpad
        states = [d["state"] for d in lp.fireworks.find({"spec.campaign": name})]
        assert len(states) >= 4 and set(states) == {"COMPLETED"}, states
        assert lp.workflows.find_one({"name": name})["state"] == "COMPLETED"
        labels = records.labels(conn.db, name)
        assert len(labels) >= 3 and len({d["hash"] for d in labels}) == len(labels)
        assert records.get_campaign(conn.db, name)["state"] == "completed"
        conn.launchpad.connection.drop_database(db_name)
    finally:
        conn.close()
