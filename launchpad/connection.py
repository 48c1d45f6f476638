"""Where the LaunchPad lives: the embedded server, a ``my_launchpad.yaml``, or a URI.

Resolution order: an explicit ``uri`` argument, then ``launchpad_file``, then
``$NFT_FW_MONGODB_URI``, then the file ``$NFT_FW_LAUNCHPAD_FILE`` names (the nft-fw images
set it to the file their entry point writes, so a ``docker compose exec`` command, which
bypasses the entry point, reaches the same database), and otherwise the embedded server
on ``data_dir`` (started if it is not running). Every client is created with
``retryWrites=false``: with retryable writes SecantusDB scans its retry
registry on every write and slows ~12x after ~10,000 writes; MongoDB itself
does not need them for anything nft-fw does (labels are idempotent upserts).

Credentials (in a URI, a launchpad file, or the environment) are passed to
pymongo and nowhere else: everything printable goes through ``redact``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal

import yaml
from fireworks import Firework, LaunchPad, Workflow
from pymongo import ReturnDocument, uri_parser
from pymongo.errors import InvalidURI, OperationFailure, PyMongoError

from nft_fw.launchpad import server as server_mod

logger = logging.getLogger(__name__)

URI_ENV = "NFT_FW_MONGODB_URI"
LAUNCHPAD_FILE_ENV = "NFT_FW_LAUNCHPAD_FILE"
DEFAULT_DB_NAME = "nft_fw"
LAUNCHPAD_FILE = "my_launchpad.yaml"

_URI_CREDENTIALS = re.compile(r"(mongodb(?:\+srv)?://)([^:/@\s]+):([^@\s]*)@")
_KEY_VALUE_SECRET = re.compile(
    r"(?i)(password|passwd|pwd|secret|token)(['\"]?\s*[:=]\s*['\"]?)([^'\",\s}]+)"
)


class DatabaseConnectionError(RuntimeError):
    """The database could not be reached or the connection options are wrong."""


def redact(text: str) -> str:
    """``text`` with passwords in URIs and ``password: x`` pairs replaced by ``***``."""
    text = _URI_CREDENTIALS.sub(r"\1\2:***@", text)
    return _KEY_VALUE_SECRET.sub(r"\1\2***", text)


@dataclasses.dataclass
class Connection:
    """An open LaunchPad and how it was reached."""

    kind: Literal["embedded", "file", "uri"]
    launchpad: LaunchPad
    description: str  # safe to print: no credentials
    db_name: str
    server: server_mod.ServerInfo | None = None
    started_server: bool = False
    source_file: str | None = None

    @property
    def db(self) -> Any:
        return self.launchpad.db

    def launchpad_dict(self) -> dict[str, Any]:
        """A ``my_launchpad.yaml`` body that reaches the same database (may hold credentials)."""
        d = self.launchpad.to_dict()
        d = {k: v for k, v in d.items() if v not in (None, [], {})}
        kwargs = dict(self.launchpad.mongoclient_kwargs or {})
        kwargs["retryWrites"] = False
        d["mongoclient_kwargs"] = kwargs
        d.pop("strm_lvl", None)
        return d

    def write_launchpad_file(self, path: str | os.PathLike[str], host: str | None = None) -> Path:
        """Write a ``my_launchpad.yaml`` for ``rlaunch -l`` (mode 0600: it may hold a password);
        ``host`` replaces the host this connection uses (not for a URI-mode LaunchPad)."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        body = self.launchpad_dict()
        if host is not None and not self.launchpad.uri_mode:
            body["host"] = host
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as handle:
            yaml.safe_dump(body, handle, sort_keys=True)
        # O_CREAT's mode applies to new files only: an older file keeps its looser mode
        os.chmod(path, 0o600)
        return path

    def close(self, stop_server: bool | None = None) -> None:
        """Close the client; stop the embedded server if this connection started it."""
        with contextlib.suppress(Exception):
            self.launchpad.connection.close()
        if stop_server is None:
            stop_server = self.started_server
        if stop_server and self.server is not None:
            server_mod.stop(self.server.data_dir)


def _uri_sets_timeout(uri: Any) -> bool:
    """Whether a ``mongodb://`` URI sets its own server-selection timeout (pymongo gives
    keyword arguments precedence over URI options, so nft-fw's default must then stay out)."""
    if not isinstance(uri, str) or "://" not in uri:
        return False
    try:
        return "serverSelectionTimeoutMS" in uri_parser.parse_uri(uri)["options"]
    except (InvalidURI, ValueError):
        return False


def _mongo_kwargs(extra: dict[str, Any] | None, uri: Any = None) -> dict[str, Any]:
    kwargs = dict(extra or {})
    if kwargs.get("retryWrites") not in (None, False):
        logger.warning(
            "retryWrites=%r overridden to false (see nft_fw.launchpad.connection)",
            kwargs["retryWrites"],
        )
    kwargs["retryWrites"] = False
    if not _uri_sets_timeout(uri):
        kwargs.setdefault("serverSelectionTimeoutMS", 30_000)
    return kwargs


def _fw_id_after(self: LaunchPad, quantity: int = 1) -> int:
    doc = self.fw_id_assigner.find_one_and_update(
        {}, {"$inc": {"next_fw_id": quantity}}, return_document=ReturnDocument.AFTER
    )
    if doc is None:
        raise ValueError(
            "Could not get next FW id! If you have not yet initialized the database, please "
            "do so by performing a database reset (e.g., lpad reset)"
        )
    return int(doc["next_fw_id"]) - quantity


def _launch_id_after(self: LaunchPad) -> int:
    doc = self.fw_id_assigner.find_one_and_update(
        {}, {"$inc": {"next_launch_id": 1}}, return_document=ReturnDocument.AFTER
    )
    if doc is None:
        raise ValueError(
            "Could not get next launch id! If you have not yet initialized the database, "
            "please do so by performing a database reset (e.g., lpad reset)"
        )
    return int(doc["next_launch_id"]) - 1


def _bulk_add_wfs(self: LaunchPad, wfs: list[Any]) -> None:
    """FireWorks' ``LaunchPad.bulk_add_wfs`` (all Fireworks and workflows in two
    ``insert_many``), drawing its id range through :func:`_fw_id_after` instead of reading
    the counter's pre-image, and without the progress bar."""
    wfs = [Workflow.from_firework(wf) if isinstance(wf, Firework) else wf for wf in wfs]
    if not wfs:
        return
    counter = _fw_id_after(self, quantity=sum(len(wf) for wf in wfs))
    for wf in wfs:
        old_new = dict(zip(wf.id_fw, range(counter, counter + len(wf)), strict=True))
        for fw in wf:
            fw.fw_id = old_new[fw.fw_id]
        wf._reassign_ids(old_new)
        counter += len(wf)
        for fw_id in wf.root_fw_ids:
            wf.id_fw[fw_id].state = "READY"
            wf.fw_states[fw_id] = "READY"
    # workflows first, so that no Firework is checked out before its workflow exists
    self.workflows.insert_many(wf.to_db_dict() for wf in wfs)
    self.fireworks.insert_many(fw.to_db_dict() for wf in wfs for fw in wf)


def install_id_draws() -> None:
    """Make every FireWorks LaunchPad in this process draw Firework and launch ids that stay
    distinct under concurrency.

    FireWorks draws ids with ``find_one_and_update({}, {"$inc": …})`` and reads the returned
    pre-image. SecantusDB 0.7.0b3 builds that pre-image from a read made before the write,
    so concurrent draws can return the same id (4 processes drawing 1,000 ids each got 2,543
    distinct values) and a launch record drawn twice replaces another Firework's. The
    post-image comes from the write itself, on SecantusDB as on MongoDB; the draws here ask
    for it and subtract the increment, which is exactly the id FireWorks expects.

    It patches the LaunchPad class, so it also covers LaunchPads made before it runs. Every
    process that handles an nft-fw Firework runs it: :mod:`nft_fw.firetasks` calls it on
    import, and FireWorks imports a Firework's tasks when it reads the Firework — in
    ``rlaunch`` at check-out, before the launch id is drawn. Idempotent.
    """
    LaunchPad.get_new_fw_id = _fw_id_after  # type: ignore[method-assign]
    LaunchPad.get_new_launch_id = _launch_id_after  # type: ignore[method-assign]
    # bulk_add_wfs draws its range with its own find_one_and_update
    LaunchPad.bulk_add_wfs = _bulk_add_wfs  # type: ignore[method-assign]


install_id_draws()


def _check_reachable(lp: LaunchPad, description: str) -> None:
    try:
        lp.connection.admin.command("ping")
        # ping needs no login; listing the database's collections does
        lp.db.list_collection_names(filter={"name": "fireworks"})
    except OperationFailure as err:
        if err.code == 13:
            raise DatabaseConnectionError(
                f"the database at {description} requires a login: put a user and password in "
                "the --uri / NFT_FW_MONGODB_URI connection string (with authSource=admin) or "
                "as username / password in my_launchpad.yaml"
            ) from None
        if err.code == 18 or "auth" in str(err).lower():
            raise DatabaseConnectionError(
                f"the database at {description} refused the login: wrong user name or password "
                "(or the user has no access to this database). Check the credentials in "
                "--uri / NFT_FW_MONGODB_URI / my_launchpad.yaml (they are never printed)."
            ) from None
        raise DatabaseConnectionError(
            f"the database at {description} refused the request: {redact(str(err))}"
        ) from None
    except PyMongoError as err:
        raise DatabaseConnectionError(_unreachable_message(description, redact(str(err)))) from err


def _unreachable_message(description: str, error: str) -> str:
    """Why a server did not answer, with the fix for the TLS cases pymongo only hints at."""
    first = error.split(" (configured timeouts")[0]
    if "CERTIFICATE_VERIFY_FAILED" in error or "certificate verify failed" in error:
        if "match" in error and "hostname" in error.lower():
            return (
                f"TLS certificate verify failed for {description}: the server's certificate "
                f"does not name the host connected to ({first}). Connect by a name the "
                "certificate holds (nft-fw db start --tls puts the --host given, localhost, "
                "127.0.0.1 and, for 0.0.0.0, this machine's host name in it)."
            )
        return (
            f"TLS certificate verify failed for {description}: {first}. The server's "
            "certificate is not signed by the CA the client trusts: check tlsCAFile in "
            "my_launchpad.yaml or the URI — it must be the CA file of that server (for "
            "nft-fw db start --tls: tls/ca.pem in its data directory, copied to this machine)."
        )
    if "SSL" in error or "TLS" in error:
        return (
            f"TLS handshake with the database at {description} failed: {first}. Check tls "
            "and tlsCAFile in my_launchpad.yaml or the URI."
        )
    hint = ""
    if "Connection reset by peer" in error or "connection closed" in error.lower():
        hint = (
            " A server that speaks TLS drops clients that do not: if it was started with "
            "--tls, set tls: true and tlsCAFile in mongoclient_kwargs of my_launchpad.yaml "
            "(or tls=true&tlsCAFile=… in the URI)."
        )
    return (
        f"cannot reach the database at {description}: {error}. "
        "Check that the server runs and the host/port/credentials are right "
        f"(nft-fw db status shows the embedded server).{hint}"
    )


def from_uri(
    uri: str,
    db_name: str | None = None,
    mongoclient_kwargs: dict[str, Any] | None = None,
    fw_log_level: str = "INFO",
) -> Connection:
    """A LaunchPad on the database named in ``uri`` (or ``db_name``, or ``nft_fw``)."""
    try:
        parsed = uri_parser.parse_uri(uri)
    except (InvalidURI, ValueError) as err:
        raise DatabaseConnectionError(
            f"--uri / {URI_ENV} is not a valid MongoDB connection string ({redact(str(err))}); "
            "expected mongodb://[user:password@]host[:port][/database][?options]"
        ) from err
    name = db_name or parsed.get("database") or DEFAULT_DB_NAME
    hosts = ",".join(f"{h}:{p}" for h, p in parsed["nodelist"])
    description = f"mongodb://{hosts}/{name}" + (
        " (authenticated)" if parsed.get("username") else ""
    )
    lp = LaunchPad(
        host=uri,
        name=name,
        uri_mode=True,
        mongoclient_kwargs=_mongo_kwargs(mongoclient_kwargs, uri),
        strm_lvl=fw_log_level,
    )
    _check_reachable(lp, description)
    return Connection(kind="uri", launchpad=lp, description=description, db_name=name)


def from_file(
    path: str | os.PathLike[str], db_name: str | None = None, fw_log_level: str = "INFO"
) -> Connection:
    """A LaunchPad from a standard FireWorks ``my_launchpad.yaml``."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise DatabaseConnectionError(
            f"--launchpad {path}: no such file; write one with 'nft-fw db start' or by hand"
        )
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as err:
        raise DatabaseConnectionError(f"--launchpad {path} is not valid YAML: {err}") from err
    if not isinstance(data, dict) or "host" not in data:
        raise DatabaseConnectionError(
            f"--launchpad {path} has no 'host' key; see FireWorks' my_launchpad.yaml format"
        )
    data = dict(data)
    if db_name:
        data["name"] = db_name
    data["mongoclient_kwargs"] = _mongo_kwargs(data.get("mongoclient_kwargs"), data.get("host"))
    data["strm_lvl"] = fw_log_level
    lp = LaunchPad.from_dict(data)
    if lp.uri_mode:
        name = lp.name
        description = f"{path} ({redact(str(data['host']))})"
    else:
        name = lp.name
        description = f"{path} (mongodb://{lp.host}:{lp.port}/{name}" + (
            ", authenticated)" if lp.username else ")"
        )
    _check_reachable(lp, description)
    return Connection(
        kind="file", launchpad=lp, description=description, db_name=name, source_file=str(path)
    )


def embedded(
    data_dir: str | os.PathLike[str] | None = None,
    db_name: str | None = None,
    start: bool = True,
    username: str | None = None,
    password: str | None = None,
    fw_log_level: str = "INFO",
) -> Connection:
    """A LaunchPad on the embedded server for ``data_dir`` (started if needed and ``start``)."""
    data_dir = (
        Path(data_dir).expanduser() if data_dir is not None else server_mod.default_data_dir()
    )
    started = False
    info = server_mod.status(data_dir)
    if info is None:
        if not start:
            raise DatabaseConnectionError(
                f"no embedded server is running for {data_dir}; start one with "
                f"'nft-fw db start --data-dir {data_dir}' or pass --uri/--launchpad"
            )
        info, started = server_mod.start(data_dir)
    name = db_name or DEFAULT_DB_NAME
    if info.auth and username is None:
        username, password = _stored_credentials(Path(info.data_dir) / LAUNCHPAD_FILE)
    # TLS verified against the server's CA (tls, tlsCAFile), never tlsAllowInvalid*
    kwargs: dict[str, Any] = {"directConnection": True, **info.tls_client_kwargs()}
    lp = LaunchPad(
        host=info.client_host,
        port=info.port,
        name=name,
        username=username,
        password=password,
        authsource="admin" if username else None,
        mongoclient_kwargs=_mongo_kwargs(kwargs),
        strm_lvl=fw_log_level,
    )
    description = f"embedded server {info.address}/{name} (data {info.data_dir})"
    _check_reachable(lp, description)
    conn = Connection(
        kind="embedded",
        launchpad=lp,
        description=description,
        db_name=name,
        server=info,
        started_server=started,
    )
    # the file is for workers on other machines too: the name they reach the server by
    conn.write_launchpad_file(launchpad_file(info.data_dir, name), host=info.advertised_host)
    return conn


def launchpad_file(data_dir: str | os.PathLike[str], db_name: str | None = None) -> Path:
    """The ``my_launchpad.yaml`` an embedded server's data directory keeps for database
    ``db_name``: ``my_launchpad.yaml`` for the default one, ``my_launchpad.NAME.yaml`` for
    another — so that a command given ``--db-name`` never redirects the workers and
    ``rlaunch -l`` users reading the default file to its database."""
    name = db_name or DEFAULT_DB_NAME
    stem = LAUNCHPAD_FILE if name == DEFAULT_DB_NAME else f"my_launchpad.{name}.yaml"
    return Path(data_dir) / stem


def _stored_credentials(path: Path) -> tuple[str | None, str | None]:
    """User and password from the embedded server's own my_launchpad.yaml (mode 0600)."""
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except OSError:
        return None, None
    return data.get("username"), data.get("password")


def open_connection(
    *,
    uri: str | None = None,
    launchpad_file: str | os.PathLike[str] | None = None,
    data_dir: str | os.PathLike[str] | None = None,
    db_name: str | None = None,
    start_embedded: bool = True,
    fw_log_level: str = "INFO",
) -> Connection:
    """Resolve the connection options every ``nft-fw`` command shares (see module doc)."""
    if uri and launchpad_file:
        raise DatabaseConnectionError("pass either --uri or --launchpad, not both")
    if uri:
        return from_uri(uri, db_name, fw_log_level=fw_log_level)
    if launchpad_file:
        return from_file(launchpad_file, db_name, fw_log_level=fw_log_level)
    env_uri = os.environ.get(URI_ENV)
    if env_uri:
        return from_uri(env_uri, db_name, fw_log_level=fw_log_level)
    env_file = os.environ.get(LAUNCHPAD_FILE_ENV)
    if env_file:
        if not Path(env_file).expanduser().is_file():
            raise DatabaseConnectionError(
                f"{LAUNCHPAD_FILE_ENV}={env_file}: no such file. In the nft-fw images the "
                "entry point writes it when the container starts (a container whose command "
                "is not run by nft-fw-entrypoint has none); elsewhere unset the variable, or "
                "pass --launchpad or --uri"
            )
        return from_file(env_file, db_name, fw_log_level=fw_log_level)
    return embedded(data_dir, db_name, start=start_embedded, fw_log_level=fw_log_level)


@contextlib.contextmanager
def connect(**kwargs: Any) -> Iterator[Connection]:
    """``open_connection`` as a context: closes it and stops an embedded server it started."""
    keep_server = kwargs.pop("keep_server", False)
    conn = open_connection(**kwargs)
    try:
        yield conn
    finally:
        conn.close(stop_server=conn.started_server and not keep_server)
