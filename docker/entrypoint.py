#!/opt/venv/bin/python
"""Entry point of the nft-fw images: connect every command in the container to the database.

From ``NFT_FW_MONGODB_URI``, or else from the parts below, it sets ``NFT_FW_MONGODB_URI``
(read by every ``nft-fw`` command) and writes ``my_launchpad.yaml`` (mode 0600) in the
working directory, where ``rlaunch`` and ``lpad`` look for it; then it runs the command.
``nft-fw-entrypoint --ping`` instead exits 0 when the database answers (the healthcheck).

| variable | default | meaning |
|---|---|---|
| ``NFT_FW_DB_HOST`` | ``mongo:27017`` | host:port (comma-separated for a replica set) |
| ``NFT_FW_DB_NAME`` | ``nft_fw`` | database |
| ``NFT_FW_DB_USER`` | ``nft`` | user |
| ``NFT_FW_DB_PASSWORD`` / ``NFT_FW_DB_PASSWORD_FILE`` | required | password, or a file holding it |
| ``NFT_FW_DB_AUTH_SOURCE`` | ``admin`` | database the user is defined in |
| ``NFT_FW_DB_TLS`` | ``false`` | ``true``: connect with TLS |
| ``NFT_FW_DB_TLS_CA_FILE`` | | CA bundle of a server certificate from a private CA |
| ``NFT_FW_DB_OPTIONS`` | | more connection options, ``key=value&…`` (they win over the ones above); ``directConnection=true`` for nft-fw's embedded server, which advertises itself as a one-node replica set under the address it listens on |
| ``NFT_FW_LAUNCHPAD_FILE`` | ``./my_launchpad.yaml`` | where the LaunchPad file goes (images: ``/work/my_launchpad.yaml``, which ``nft-fw`` then reads in ``docker compose exec`` commands) |
| ``NFT_FW_PING_TIMEOUT_S`` | ``5`` | how long ``--ping`` waits for the server, s |

Passwords are never printed; errors name the variable to set.
"""

from __future__ import annotations

import os
import sys
import urllib.parse
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

URI_ENV = "NFT_FW_MONGODB_URI"
TRUE = {"1", "true", "yes", "on"}


class ConfigError(ValueError):
    """The environment does not say how to reach the database."""


def _password(env: Mapping[str, str]) -> str:
    path = env.get("NFT_FW_DB_PASSWORD_FILE")
    if path:
        try:
            return Path(path).read_text().strip()
        except OSError as err:
            raise ConfigError(f"NFT_FW_DB_PASSWORD_FILE={path} cannot be read: {err}") from err
    password = env.get("NFT_FW_DB_PASSWORD", "")
    if not password:
        raise ConfigError(
            "no database password: set NFT_FW_DB_PASSWORD (docker/.env) or "
            "NFT_FW_DB_PASSWORD_FILE, or give the whole NFT_FW_MONGODB_URI"
        )
    return password


def database_uri(env: Mapping[str, str]) -> str:
    """The connection string: ``NFT_FW_MONGODB_URI`` as given, or built from NFT_FW_DB_*."""
    if env.get(URI_ENV):
        return env[URI_ENV]
    quote = urllib.parse.quote_plus
    name = env.get("NFT_FW_DB_NAME") or "nft_fw"
    options = {
        "authSource": env.get("NFT_FW_DB_AUTH_SOURCE") or "admin",
        "retryWrites": "false",
    }
    if env.get("NFT_FW_DB_TLS", "").lower() in TRUE:
        options["tls"] = "true"
        if env.get("NFT_FW_DB_TLS_CA_FILE"):
            options["tlsCAFile"] = env["NFT_FW_DB_TLS_CA_FILE"]
    try:
        extra = urllib.parse.parse_qsl(env.get("NFT_FW_DB_OPTIONS", ""), strict_parsing=True)
    except ValueError as err:
        raise ConfigError(
            f"NFT_FW_DB_OPTIONS={env['NFT_FW_DB_OPTIONS']!r} is not key=value&key=value "
            f"({err}); e.g. NFT_FW_DB_OPTIONS=directConnection=true"
        ) from err
    options.update(extra)
    credentials = f"{quote(env.get('NFT_FW_DB_USER') or 'nft')}:{quote(_password(env))}"
    host = env.get("NFT_FW_DB_HOST") or "mongo:27017"
    return f"mongodb://{credentials}@{host}/{name}?{urllib.parse.urlencode(options)}"


def launchpad_dict(uri: str) -> dict[str, Any]:
    """A FireWorks ``my_launchpad.yaml`` body in URI mode for ``uri``."""
    from pymongo import uri_parser

    name = uri_parser.parse_uri(uri).get("database") or "nft_fw"
    return {
        "host": uri,
        "name": name,
        "uri_mode": True,
        "mongoclient_kwargs": {"retryWrites": False},
    }


def write_launchpad_file(uri: str, path: Path) -> Path:
    import yaml

    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        yaml.safe_dump(launchpad_dict(uri), handle, sort_keys=True)
    return path


def ping(uri: str, timeout_s: float = 5.0) -> bool:
    """True if the database at ``uri`` answers ``ping``."""
    import pymongo
    from pymongo.errors import PyMongoError

    client: pymongo.MongoClient = pymongo.MongoClient(
        uri, serverSelectionTimeoutMS=int(timeout_s * 1000), connectTimeoutMS=int(timeout_s * 1000)
    )
    try:
        client.admin.command("ping")
        return True
    except PyMongoError:
        return False
    finally:
        client.close()


def main(argv: Sequence[str]) -> int:
    try:
        uri = database_uri(os.environ)
    except ConfigError as err:
        sys.stderr.write(f"nft-fw-entrypoint: {err}\n")
        return 2
    if list(argv) == ["--ping"]:
        return 0 if ping(uri, float(os.environ.get("NFT_FW_PING_TIMEOUT_S", "5"))) else 1
    if not argv:
        sys.stderr.write(
            "nft-fw-entrypoint: no command given (e.g. nft-fw worker --category label)\n"
        )
        return 2
    os.environ[URI_ENV] = uri
    write_launchpad_file(uri, Path(os.environ.get("NFT_FW_LAUNCHPAD_FILE", "my_launchpad.yaml")))
    try:
        os.execvp(argv[0], list(argv))
    except OSError as err:
        sys.stderr.write(f"nft-fw-entrypoint: cannot run {argv[0]!r}: {err}\n")
        return 127
    return 0  # not reached: execvp replaces this process


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
