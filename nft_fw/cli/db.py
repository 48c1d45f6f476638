"""``nft-fw db start|stop|status``: the embedded database server."""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from nft_fw.cli.common import (
    EXIT_FAILURE,
    EXIT_OK,
    UsageError,
    _add_connection_options,
    _examples,
    _reading,
    console,
    err_console,
    logger,
)

# ---------------------------------------------------------------- db


def _db_start_checks(args: argparse.Namespace) -> None:
    """Refuse an unsafe or inconsistent ``db start`` before anything is started."""
    from nft_fw.launchpad.server import is_loopback

    if not is_loopback(args.host) and not args.auth and not args.insecure_no_auth_on_network:
        raise UsageError(
            f"db start --host {args.host} would open the database to the network with no "
            "login: anyone who reaches the port could read and change every campaign. "
            f"Add --auth and --tls (nft-fw db start --host {args.host} --auth --tls, "
            "password from NFT_FW_DB_PASSWORD), or keep --host 127.0.0.1. Only on an "
            "isolated network: --insecure-no-auth-on-network"
        )
    own = {"--tls-cert": args.tls_cert, "--tls-key": args.tls_key, "--tls-ca": args.tls_ca}
    given = [opt for opt, value in own.items() if value]
    if given and not (args.tls_cert and args.tls_key):
        raise UsageError(
            f"{' and '.join(given)} given without "
            f"{' and '.join(o for o in ('--tls-cert', '--tls-key') if not own[o])}: your own "
            "certificate needs --tls-cert and --tls-key (and --tls-ca for the CA that signed "
            "it, unless the system trust store has it); or use --tls alone to have one made"
        )
    for opt, value in own.items():
        if value and not Path(value).expanduser().is_file():
            raise UsageError(f"{opt} {value}: no such file")


def _tls_files(args: argparse.Namespace, data_dir: Path) -> tuple[Any, str | None]:
    """The TLS files to start the server with (or None) and the local host name to use."""
    from nft_fw.launchpad import tls
    from nft_fw.launchpad.server import WILDCARD_HOSTS

    if args.tls_cert:
        files = tls.TlsFiles(
            cert_file=str(Path(args.tls_cert).expanduser().resolve()),
            key_file=str(Path(args.tls_key).expanduser().resolve()),
            ca_file=str(Path(args.tls_ca).expanduser().resolve()) if args.tls_ca else None,
        )
        names = tls.certificate_names(files.cert_file)
        wanted = (
            ["127.0.0.1", "localhost", *tls.server_names(args.host)]
            if args.host in WILDCARD_HOSTS
            else [args.host]
        )
        local = next((n for n in wanted if n in names), None)
        if local is None:
            raise UsageError(
                f"--tls-cert {args.tls_cert} names {sorted(names) or 'no host'} in its "
                f"SubjectAltName, but clients will connect to {' or '.join(wanted)}: issue "
                "the certificate for that name, or use --tls alone to have one made"
            )
        key_mode = Path(files.key_file).stat().st_mode & 0o077
        if key_mode:
            logger.warning("--tls-key %s is readable by other users: chmod 600 it", files.key_file)
        return files, local
    if args.tls:
        return tls.ensure_certificates(data_dir, args.host), None
    return None, None


def cmd_db_start(args: argparse.Namespace) -> int:
    from nft_fw.launchpad import server
    from nft_fw.launchpad.connection import embedded

    _db_start_checks(args)
    want_tls = bool(args.tls or args.tls_cert)
    data_dir = Path(args.data_dir).expanduser() if args.data_dir else server.default_data_dir()
    running = _running_server(args, data_dir, want_tls)
    username, password = _login(args, data_dir, running)
    files, local_host = _tls_files(args, data_dir) if running is None else (None, None)
    _warn_exposure(args, want_tls)
    options = _server_options(args, files, local_host)
    if args.foreground:
        err_console.print(
            f"embedded server for {data_dir} in the foreground on {args.host}:"
            f"{args.port or 'a free port'} ({'login required' if args.auth else 'NO LOGIN'}, "
            f"{'TLS' if files else 'no TLS'}); it stops on SIGTERM"
        )
        server.serve(data_dir, **options)
    info, started = server.start(data_dir, **options)
    if args.auth and not info.auth:
        raise UsageError(
            f"the embedded server for {info.data_dir} already runs without authentication; "
            "stop it (nft-fw db stop) and start it again with --auth"
        )
    conn = embedded(info.data_dir, args.db_name, start=False, username=username, password=password)
    conn.close(stop_server=False)
    _print_db_started(args, info, started)
    return EXIT_OK


def _running_server(args: argparse.Namespace, data_dir: Path, want_tls: bool) -> Any:
    """The server already running on ``data_dir`` (or None), refusing one that conflicts."""
    from nft_fw.launchpad import server

    if args.foreground:
        # a container's volume or a service's directory may hold the record of a server
        # that died with its container; its pid can be this very process now
        server.drop_stale_state(data_dir)
    running = server.status(data_dir)
    if running is not None and args.foreground:
        raise UsageError(
            f"a server (pid {running.pid}) already serves {running.data_dir} on "
            f"{running.address}; stop it (nft-fw db stop --data-dir {running.data_dir}) "
            "before serving it in the foreground"
        )
    if running is not None and want_tls and not running.tls:
        raise UsageError(
            f"the embedded server for {running.data_dir} already runs without TLS; "
            "stop it (nft-fw db stop) and start it again with --tls"
        )
    return running


def _login(args: argparse.Namespace, data_dir: Path, running: Any) -> tuple[str | None, str | None]:
    """The --auth user and password (None, None without --auth), created on a new server."""
    from nft_fw.launchpad import server

    username = password = None
    if args.auth:
        username = args.user
        password = os.environ.get("NFT_FW_DB_PASSWORD")
        if not password:
            if not sys.stdin.isatty():
                raise UsageError(
                    "db start --auth needs a password: set NFT_FW_DB_PASSWORD or run it in a "
                    "terminal to be asked"
                )
            import getpass

            password = getpass.getpass(f"password for database user {username}: ")
        if len(password) < 8:
            raise UsageError("the database password must have at least 8 characters")
        if running is None:
            server.create_user(data_dir, username, password, None)
    return username, password


def _warn_exposure(args: argparse.Namespace, want_tls: bool) -> None:
    """Warn about a database on the network without a login, or with a login but no TLS."""
    from nft_fw.launchpad import server

    if args.insecure_no_auth_on_network and not args.auth and not server.is_loopback(args.host):
        err_console.print(
            f"[bold red]WARNING:[/bold red] the database listens on {args.host} WITHOUT A LOGIN "
            "(--insecure-no-auth-on-network): anyone who reaches the port can read, change and "
            "delete every campaign. Use --auth --tls unless the network is isolated."
        )
    elif args.auth and not want_tls and not server.is_loopback(args.host):
        err_console.print(
            f"[yellow]note:[/yellow] the database listens on {args.host} without TLS: labels, "
            "models and Fireworks cross the network in clear text; add --tls"
        )


def _server_options(args: argparse.Namespace, files: Any, local_host: str | None) -> dict[str, Any]:
    """The keyword arguments of ``server.start`` / ``server.serve`` for these options."""
    return {
        "host": args.host,
        "port": args.port,
        "auth": args.auth,
        "tls_cert_file": files.cert_file if files else None,
        "tls_key_file": files.key_file if files else None,
        "tls_ca_file": files.ca_file if files else None,
        "local_host": local_host,
        "insecure_no_auth_on_network": args.insecure_no_auth_on_network,
    }


def _print_db_started(args: argparse.Namespace, info: Any, started: bool) -> None:
    """Print where the server listens and how workers reach it (a JSON object with --json)."""
    from nft_fw.launchpad.connection import launchpad_file

    lp_file = launchpad_file(info.data_dir, args.db_name)
    payload = {
        "address": info.address,
        "pid": info.pid,
        "data_dir": info.data_dir,
        "launchpad_file": str(lp_file),
        "started": started,
        "auth": info.auth,
        "tls": info.tls,
        "tls_ca_file": info.tls_ca_file,
    }
    if args.json:
        console.print_json(json.dumps(payload))
        return
    verb = "started" if started else "already running"
    security = ", ".join(
        [
            "login required" if info.auth else "NO LOGIN",
            "TLS" if info.tls else "no TLS",
        ]
    )
    console.print(
        f"embedded server {verb}: {info.address} ({security}; pid {info.pid}, data {info.data_dir})"
    )
    if info.tls_ca_file:
        console.print(
            f"other machines: copy {lp_file} and {info.tls_ca_file} (the CA certificate; "
            "its key stays here) and set tlsCAFile in the copy to where the CA file lies"
        )
    console.print(f"workers: nft-fw worker --launchpad {lp_file} [--category C | --fworker FILE]")


def cmd_db_stop(args: argparse.Namespace) -> int:
    from nft_fw.launchpad import server

    stopped = server.stop(args.data_dir)
    console.print("stopped" if stopped else "no embedded server was running")
    return EXIT_OK


def cmd_db_status(args: argparse.Namespace) -> int:
    from nft_fw.launchpad import server

    info = server.status(args.data_dir)
    responding = info is not None and server.ping(
        info.client_host, info.port, **info.tls_client_kwargs()
    )
    payload: dict[str, Any] = {"running": info is not None, "responding": responding}
    if info is not None:
        payload.update(address=info.address, pid=info.pid, data_dir=info.data_dir)
    if args.json:
        console.print_json(json.dumps(payload))
    elif info is None:
        console.print(
            f"no embedded server running for {args.data_dir or server.default_data_dir()}"
        )
    else:
        state = "responding" if responding else "NOT responding"
        console.print(
            f"embedded server {info.address} pid {info.pid} {state} (data {info.data_dir})"
        )
    return EXIT_OK if info is None or responding else EXIT_FAILURE


def cmd_db_migrate(args: argparse.Namespace) -> int:
    """Bring every campaign of the database to this nft-fw's schema (docs/upgrading.md)."""
    from nft_fw.launchpad import migrate, records

    with _reading(args) as conn:
        reports = migrate.migrate(conn.launchpad.db, dry_run=args.dry_run)
    if args.json:
        console.print_json(json.dumps([dataclasses.asdict(r) for r in reports]))
    for r in [] if args.json else reports:
        if r.refused:
            err_console.print(f"{r.campaign}: not migrated — {r.refused}")
        elif r.changes:
            console.print(f"{r.campaign}: schema {r.schema_from} → {r.schema_to}")
            for change in r.changes:
                console.print(f"  {change}")
        else:
            console.print(f"{r.campaign}: schema {r.schema_from}, current")
    if not reports and not args.json:
        console.print(f"no campaigns; this nft-fw stores schema {records.SCHEMA_VERSION}")
    return EXIT_FAILURE if any(r.refused for r in reports) else EXIT_OK


def register(
    sub: Any, _add_parser: Callable[..., argparse.ArgumentParser], common: argparse.ArgumentParser
) -> None:
    """Add ``db`` and its subcommands to the command parser ``sub``."""
    db = _add_parser("db", help="the embedded database server")
    db_sub = db.add_subparsers(dest="db_command", required=True)
    _add_db_parser = db_sub.add_parser

    def add_db(name: str, **kwargs: Any) -> argparse.ArgumentParser:
        return _add_db_parser(name, parents=[common], **_examples(f"db {name}"), **kwargs)

    db_sub.add_parser = add_db  # type: ignore[method-assign]
    p = db_sub.add_parser("start", help="start the embedded server (or report the running one)")
    p.add_argument("--data-dir", metavar="DIR")
    p.add_argument("--db-name", metavar="NAME")
    p.add_argument(
        "--host",
        default="127.0.0.1",
        help="interface to listen on (default loopback only); any other needs --auth",
    )
    p.add_argument("--port", type=int, help="port (default: a free one)")
    p.add_argument(
        "--auth",
        action="store_true",
        help="require authentication: creates (or updates) the user --user with the password "
        "from NFT_FW_DB_PASSWORD (or asked); the data directory's my_launchpad.yaml (mode 0600) "
        "then holds the credentials",
    )
    p.add_argument("--user", default="nft", help="database user for --auth (default nft)")
    p.add_argument(
        "--tls",
        action="store_true",
        help="TLS only: makes once, in DIR/tls, a private CA (ca.pem; ca.key stays here) and a "
        "certificate for --host, and writes tls/tlsCAFile into my_launchpad.yaml",
    )
    p.add_argument("--tls-cert", metavar="PEM", help="your own server certificate (implies TLS)")
    p.add_argument("--tls-key", metavar="PEM", help="the key of --tls-cert (mode 0600)")
    p.add_argument(
        "--tls-ca",
        metavar="PEM",
        help="the CA that signed --tls-cert, for clients' tlsCAFile (default: system trust store)",
    )
    p.add_argument(
        "--insecure-no-auth-on-network",
        action="store_true",
        help="allow a --host other than loopback WITHOUT --auth (isolated networks only; "
        "warns at every start)",
    )
    p.add_argument(
        "--foreground",
        action="store_true",
        help="become the server instead of starting it in the background (a container's "
        "command, a systemd unit's ExecStart): it logs to this terminal and stops on SIGTERM",
    )
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_db_start)
    p = db_sub.add_parser("stop", help="stop the embedded server")
    p.add_argument("--data-dir", metavar="DIR")
    p.set_defaults(func=cmd_db_stop)
    p = db_sub.add_parser(
        "migrate",
        help="bring the campaigns stored by an older nft-fw to this one's schema (once, after "
        "an upgrade; safe to repeat)",
    )
    _add_connection_options(p)
    p.add_argument("--dry-run", action="store_true", help="say what is behind; change nothing")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_db_migrate)
    p = db_sub.add_parser("status", help="is the embedded server running and answering?")
    p.add_argument("--data-dir", metavar="DIR")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_db_status)
