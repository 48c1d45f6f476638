"""The embedded MongoDB-wire server (SecantusDB) for tests and single-machine use.

One server per data directory: WiredTiger takes an exclusive lock on its
storage, so a second start on the same directory finds the running server
(recorded in ``server.json``) instead of launching another. Production
deployments point nft-fw at any MongoDB instead (see ``connection.py``).
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import ipaddress
import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, NoReturn
from urllib.parse import quote

import pymongo
from pymongo.errors import PyMongoError

logger = logging.getLogger(__name__)

SERVER_EXECUTABLE = "secantusd-py"
STATE_FILE = "server.json"
LOCK_FILE = "server.lock"
LOG_FILE = "server.log"
STORAGE_SUBDIR = "db"
WILDCARD_HOSTS = frozenset({"0.0.0.0", "::", ""})


class ServerError(RuntimeError):
    """The embedded server could not be started, reached or stopped."""


@dataclasses.dataclass(frozen=True)
class ServerInfo:
    """A running embedded server: where it listens and which process it is."""

    host: str
    port: int
    pid: int
    data_dir: str
    auth: bool = False
    tls: bool = False
    # The CA certificate clients verify the server's certificate with (None: their system
    # trust store). Only clients use it: the server is not asked to check client certificates.
    tls_ca_file: str | None = None
    # The name this machine's own clients connect to (default: ``host``, or 127.0.0.1 for
    # a wildcard address); with TLS it must be a name the server's certificate holds.
    local_host: str | None = None
    # The name other machines reach the server by, written to my_launchpad.yaml (default:
    # ``host``, or this machine's host name for a wildcard address).
    public_host: str | None = None

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def client_host(self) -> str:
        """Where clients on this machine connect (0.0.0.0 and :: are not addresses to reach)."""
        if self.local_host:
            return self.local_host
        return "127.0.0.1" if self.host in WILDCARD_HOSTS else self.host

    @property
    def advertised_host(self) -> str:
        """Where clients on other machines connect."""
        if self.public_host:
            return self.public_host
        return socket.gethostname() if self.host in WILDCARD_HOSTS else self.host

    def tls_client_kwargs(self) -> dict[str, Any]:
        """pymongo options a client needs for this server: TLS verified against its CA."""
        if not self.tls:
            return {}
        kwargs: dict[str, Any] = {"tls": True}
        if self.tls_ca_file:
            kwargs["tlsCAFile"] = self.tls_ca_file
        return kwargs

    def uri(self) -> str:
        """Connection string without credentials (always ``retryWrites=false``)."""
        options = "retryWrites=false"
        if self.tls:
            options += "&tls=true"
            if self.tls_ca_file:
                options += f"&tlsCAFile={quote(self.tls_ca_file, safe='/')}"
        return f"mongodb://{self.client_host}:{self.port}/?{options}"


def is_loopback(host: str) -> bool:
    """True for hosts only this machine can reach (127.0.0.0/8, ::1, localhost)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def default_data_dir() -> Path:
    """``$NFT_FW_HOME`` if set, else ``~/.nft-fw``."""
    return Path(os.environ.get("NFT_FW_HOME", Path.home() / ".nft-fw")).expanduser()


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that was free on ``host`` a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def _server_executable() -> str:
    # Prefer the script next to the running interpreter (the .venv), so a
    # worker started by absolute path finds it without an activated venv.
    candidate = Path(sys.executable).with_name(SERVER_EXECUTABLE)
    if candidate.exists():
        return str(candidate)
    found = shutil.which(SERVER_EXECUTABLE)
    if found is None:
        raise ServerError(
            f"{SERVER_EXECUTABLE!r} was not found next to {sys.executable} or on PATH; "
            "install the 'secantusdb' package (make setup does) or pass --uri/--launchpad "
            "to use another MongoDB server"
        )
    return found


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie child still answers kill(0); treat it as dead.
    with contextlib.suppress(ChildProcessError, OSError):
        done, _ = os.waitpid(pid, os.WNOHANG)
        if done == pid:
            return False
    return True


def ping(host: str, port: int, timeout_s: float = 2.0, **client_kwargs: Any) -> bool:
    """True if a MongoDB-wire server answers ``ping`` at host:port."""
    client: pymongo.MongoClient = pymongo.MongoClient(
        host,
        port,
        retryWrites=False,
        serverSelectionTimeoutMS=int(timeout_s * 1000),
        connectTimeoutMS=int(timeout_s * 1000),
        directConnection=True,
        **client_kwargs,
    )
    try:
        client.admin.command("ping")
        return True
    except PyMongoError:
        return False
    finally:
        client.close()


def _read_state(data_dir: Path) -> ServerInfo | None:
    path = data_dir / STATE_FILE
    if not path.exists():
        return None
    try:
        return ServerInfo(**json.loads(path.read_text()))
    except (OSError, ValueError, TypeError) as err:
        logger.warning("ignoring unreadable %s (%s)", path, err)
        return None


def status(data_dir: str | os.PathLike[str] | None = None) -> ServerInfo | None:
    """The server running on ``data_dir``, or None if none is running there."""
    data_dir = Path(data_dir) if data_dir is not None else default_data_dir()
    info = _read_state(data_dir)
    if info is None or not _pid_alive(info.pid):
        return None
    return info


@contextlib.contextmanager
def _locked(data_dir: Path) -> Iterator[None]:
    data_dir.mkdir(parents=True, exist_ok=True)
    with open(data_dir / LOCK_FILE, "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _check_options(
    host: str,
    auth: bool,
    tls_cert_file: str | None,
    tls_key_file: str | None,
    insecure_no_auth_on_network: bool,
) -> None:
    if not auth and not is_loopback(host) and not insecure_no_auth_on_network:
        raise ServerError(
            f"refusing to listen on {host} without authentication: anyone who reaches the "
            "port could read and change every campaign. Start it with auth=True (nft-fw db "
            "start --auth --tls), or on loopback (127.0.0.1)"
        )
    if bool(tls_cert_file) != bool(tls_key_file):
        raise ServerError(
            "TLS needs both a certificate and its key (tls_cert_file and tls_key_file); "
            f"got only {'tls_cert_file' if tls_cert_file else 'tls_key_file'}"
        )


def _server_command(
    data_dir: Path,
    host: str,
    port: int,
    auth: bool,
    tls_cert_file: str | None,
    tls_key_file: str | None,
    cache_size: str,
) -> list[str]:
    """The server's command line for ``data_dir`` (storage in ``data_dir/db``, created)."""
    storage = data_dir / STORAGE_SUBDIR
    storage.mkdir(parents=True, exist_ok=True)
    cmd = [
        _server_executable(),
        "--host",
        host,
        "--port",
        str(port),
        "--storage-path",
        str(storage),
        "--cache-size",
        cache_size,
        "--log-level",
        "WARNING",
    ]
    if auth:
        cmd.append("--auth")
    if tls_cert_file and tls_key_file:
        cmd += ["--tls-cert-file", tls_cert_file, "--tls-key-file", tls_key_file]
    return cmd


def _info(
    host: str,
    port: int,
    pid: int,
    data_dir: Path,
    auth: bool,
    tls_cert_file: str | None,
    tls_key_file: str | None,
    tls_ca_file: str | None,
    local_host: str | None,
    public_host: str | None,
) -> ServerInfo:
    """The record of a server started (or exec'd) with these options."""
    return ServerInfo(
        host=host,
        port=port,
        pid=pid,
        data_dir=str(data_dir),
        auth=auth,
        tls=bool(tls_cert_file and tls_key_file),
        tls_ca_file=tls_ca_file if tls_cert_file else None,
        local_host=local_host,
        public_host=public_host,
    )


def start(
    data_dir: str | os.PathLike[str] | None = None,
    *,
    host: str = "127.0.0.1",
    port: int | None = None,
    auth: bool = False,
    tls_cert_file: str | None = None,
    tls_key_file: str | None = None,
    tls_ca_file: str | None = None,
    local_host: str | None = None,
    public_host: str | None = None,
    insecure_no_auth_on_network: bool = False,
    cache_size: str = "256M",
    timeout_s: float = 60.0,
) -> tuple[ServerInfo, bool]:
    """Start the embedded server on ``data_dir`` or find the one already running.

    Returns (info, started): ``started`` is False when a server was already
    running on this directory, so callers know whether they own it.

    A ``host`` other than loopback needs ``auth`` (anyone who reaches the port could
    otherwise read and change every campaign), unless ``insecure_no_auth_on_network``
    says the network is isolated; that start logs a warning each time. With
    ``tls_cert_file`` and ``tls_key_file`` the server speaks TLS only; ``tls_ca_file`` is
    the CA nft-fw's own clients verify the certificate with (see :class:`ServerInfo`).
    """
    _check_options(host, auth, tls_cert_file, tls_key_file, insecure_no_auth_on_network)
    data_dir = Path(data_dir) if data_dir is not None else default_data_dir()
    data_dir = data_dir.expanduser().resolve()
    with _locked(data_dir):
        running = status(data_dir)
        if running is not None:
            _check_answers(running, data_dir, timeout_s)
            return running, False
        port = port or free_port(host)
        cmd = _server_command(data_dir, host, port, auth, tls_cert_file, tls_key_file, cache_size)
        proc = _spawn(cmd, data_dir)
        info = _info(
            host, port, proc.pid, data_dir, auth, tls_cert_file, tls_key_file, tls_ca_file,
            local_host, public_host,
        )  # fmt: skip
        _wait_started(info, proc, data_dir, timeout_s)
        (data_dir / STATE_FILE).write_text(json.dumps(dataclasses.asdict(info)))
        _log_started(info, cmd, auth)
        return info, True


def _check_answers(running: ServerInfo, data_dir: Path, timeout_s: float) -> None:
    """Wait for the server already running on ``data_dir`` to answer; ServerError if not."""
    if not _wait_ready(running, timeout_s):
        raise ServerError(
            f"a server process (pid {running.pid}) owns {data_dir} but does not answer "
            f"on {running.address}; stop it with 'nft-fw db stop --data-dir {data_dir}'"
        )


def _spawn(cmd: list[str], data_dir: Path) -> subprocess.Popen[bytes]:
    """Launch the server command in its own session, logging to ``data_dir``'s server log."""
    log = open(data_dir / LOG_FILE, "ab")  # noqa: SIM115 (owned by the child)
    # A new session: the server outlives a Ctrl-C in the terminal that
    # started it and is stopped explicitly (stop()).
    proc = subprocess.Popen(
        cmd,
        cwd=data_dir,
        stdout=log,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        start_new_session=True,
    )
    log.close()
    return proc


def _wait_started(
    info: ServerInfo, proc: subprocess.Popen[bytes], data_dir: Path, timeout_s: float
) -> None:
    """Wait for a server just started to answer; stop it and raise ServerError if it does not."""
    if not _wait_ready(info, timeout_s, proc=proc):
        _terminate(proc.pid, grace_s=5)
        tail = _log_tail(data_dir)
        hint = (
            f" With TLS, check that the certificate names {info.client_host} and is signed "
            f"by {info.tls_ca_file or 'a CA in the system trust store'}."
            if info.tls
            else ""
        )
        raise ServerError(
            f"the embedded server did not answer on {info.address} within {timeout_s:.0f} s."
            f"{hint} Its log ({data_dir / LOG_FILE}) ends with:\n{tail}"
        )


def _log_started(info: ServerInfo, cmd: list[str], auth: bool) -> None:
    """Log where a server just started listens, warning when it accepts anyone."""
    logger.info(
        "embedded server pid %d listening on %s (data %s, auth %s, TLS %s)",
        info.pid, info.address, cmd[cmd.index("--storage-path") + 1],
        "on" if auth else "off", "on" if info.tls else "off",
    )  # fmt: skip
    if not auth and not is_loopback(info.host):
        logger.warning(
            "the embedded server on %s accepts anyone who reaches port %d WITHOUT A LOGIN "
            "(insecure_no_auth_on_network): every campaign, label and model in it can be "
            "read, changed and deleted from the network",
            info.host, info.port,
        )  # fmt: skip


def serve(
    data_dir: str | os.PathLike[str] | None = None,
    *,
    host: str = "127.0.0.1",
    port: int | None = None,
    auth: bool = False,
    tls_cert_file: str | None = None,
    tls_key_file: str | None = None,
    tls_ca_file: str | None = None,
    local_host: str | None = None,
    public_host: str | None = None,
    insecure_no_auth_on_network: bool = False,
    cache_size: str = "256M",
) -> NoReturn:
    """Become the server of ``data_dir``: for a container or a service manager (systemd).

    The same checks and command line as :func:`start`, but the server replaces this
    process (``exec``): it keeps this pid, logs to this process's output and stops on the
    SIGTERM its supervisor sends. ``server.json`` records it, so ``nft-fw db status`` and
    ``stop`` find it. A record left by a server that no longer answers (a container killed
    before, whose pid may now belong to another process) is dropped; a server that answers
    on ``data_dir`` is an error: one server per data directory.
    """
    _check_options(host, auth, tls_cert_file, tls_key_file, insecure_no_auth_on_network)
    data_dir = Path(data_dir) if data_dir is not None else default_data_dir()
    data_dir = data_dir.expanduser().resolve()
    with _locked(data_dir):
        drop_stale_state(data_dir, locked=True)
        running = status(data_dir)
        if running is not None:
            raise ServerError(
                f"a server (pid {running.pid}) already serves {data_dir} on "
                f"{running.address}; stop it first (nft-fw db stop --data-dir {data_dir})"
            )
        port = port or free_port(host)
        cmd = _server_command(data_dir, host, port, auth, tls_cert_file, tls_key_file, cache_size)
        info = _info(  # os.getpid(): exec keeps it
            host, port, os.getpid(), data_dir, auth, tls_cert_file, tls_key_file, tls_ca_file,
            local_host, public_host,
        )  # fmt: skip
        (data_dir / STATE_FILE).write_text(json.dumps(dataclasses.asdict(info)))
        logger.info(
            "embedded server pid %d serving %s in the foreground (data %s, auth %s, TLS %s)",
            info.pid, info.address, data_dir / STORAGE_SUBDIR,
            "on" if auth else "off", "on" if info.tls else "off",
        )  # fmt: skip
        for handler in logging.getLogger().handlers:
            handler.flush()
        sys.stdout.flush()
        sys.stderr.flush()
        # The lock's file is closed on exec (Python opens files non-inheritable).
        os.execv(cmd[0], cmd)


def drop_stale_state(data_dir: str | os.PathLike[str], *, locked: bool = False) -> bool:
    """Remove ``data_dir``'s server record if its server does not answer; True if removed.

    A record names a pid; after a container restart or a reboot that pid may belong to an
    unrelated process (in a container, often this very one), which :func:`status` cannot
    tell from a server. A server that answers its recorded address is kept.
    """
    data_dir = Path(data_dir).expanduser().resolve()
    if not locked:
        with _locked(data_dir):
            return drop_stale_state(data_dir, locked=True)
    info = _read_state(data_dir)
    if info is None:
        return False
    alive = info.pid != os.getpid() and _pid_alive(info.pid)
    if alive and ping(info.client_host, info.port, timeout_s=2.0, **info.tls_client_kwargs()):
        return False
    logger.warning(
        "dropping the record of a server (pid %d, %s) that no longer serves %s",
        info.pid, info.address, data_dir,
    )  # fmt: skip
    (data_dir / STATE_FILE).unlink(missing_ok=True)
    return True


def create_user(
    data_dir: str | os.PathLike[str], username: str, password: str, db_names: list[str] | None
) -> None:
    """Add a user to the embedded server's store: start it without authentication on
    loopback, create the user (readWrite and dbAdmin on ``db_names``, or on every database
    when None), and stop it. Then start the server with ``auth=True``."""
    data_dir = Path(data_dir).expanduser().resolve()
    if status(data_dir) is not None:
        raise ServerError(
            f"the embedded server for {data_dir} is running; stop it first "
            f"(nft-fw db stop --data-dir {data_dir})"
        )
    info, _ = start(data_dir, host="127.0.0.1")
    try:
        client: pymongo.MongoClient = pymongo.MongoClient(
            info.host, info.port, retryWrites=False, directConnection=True
        )
        roles: list[Any] = (
            ["readWriteAnyDatabase", "dbAdminAnyDatabase"]
            if db_names is None
            else [r for db in db_names for r in ({"role": "readWrite", "db": db},
                                                  {"role": "dbAdmin", "db": db})]
        )  # fmt: skip
        try:
            client.admin.command("createUser", username, pwd=password, roles=roles)
        except pymongo.errors.OperationFailure as err:
            if err.code != 51003:  # user exists: set the new password
                raise
            client.admin.command("updateUser", username, pwd=password, roles=roles)
        finally:
            client.close()
    finally:
        stop(data_dir)


def _wait_ready(
    info: ServerInfo, timeout_s: float, proc: subprocess.Popen[bytes] | None = None
) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            return False
        if ping(info.client_host, info.port, timeout_s=1.0, **info.tls_client_kwargs()):
            return True
        time.sleep(0.2)
    return False


def _log_tail(data_dir: Path, lines: int = 15) -> str:
    try:
        return "\n".join((data_dir / LOG_FILE).read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def _terminate(pid: int, grace_s: float) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    while time.monotonic() < deadline:
        if not _pid_alive(pid):
            return
        time.sleep(0.1)
    logger.warning("server pid %d ignored SIGTERM for %.0f s; sending SIGKILL", pid, grace_s)
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)
    while _pid_alive(pid):
        time.sleep(0.05)


def stop(data_dir: str | os.PathLike[str] | None = None, grace_s: float = 30.0) -> bool:
    """Stop the server running on ``data_dir``; False if none was running."""
    data_dir = Path(data_dir) if data_dir is not None else default_data_dir()
    data_dir = data_dir.expanduser().resolve()
    with _locked(data_dir):
        info = status(data_dir)
        if info is None:
            (data_dir / STATE_FILE).unlink(missing_ok=True)
            return False
        _terminate(info.pid, grace_s)
        (data_dir / STATE_FILE).unlink(missing_ok=True)
        logger.info("stopped embedded server pid %d (%s)", info.pid, data_dir)
        return True
