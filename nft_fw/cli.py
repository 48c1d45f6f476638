"""The ``nft-fw`` command line: the one place that ties the science core, FireWorks and the database together.

Every command that touches the database takes the same connection options:
``--uri U`` (or ``$NFT_FW_MONGODB_URI``), ``--launchpad my_launchpad.yaml``, or
by default the embedded server on ``--data-dir`` (``~/.nft-fw``).
Exit codes: 0 success, 1 runtime failure, 2 bad input or usage.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import shlex
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

logger = logging.getLogger("nft_fw.cli")
# Piped output (logs, CI) is 120 columns wide unless $COLUMNS says otherwise; tables leave
# out the columns that do not fit (_fitted), so no cell is ever cut.
PIPED_WIDTH = int(os.environ.get("COLUMNS") or 120)
console = Console(width=None if sys.stdout.isatty() else PIPED_WIDTH)
err_console = Console(stderr=True, width=None if sys.stderr.isatty() else PIPED_WIDTH)

EXIT_OK, EXIT_FAILURE, EXIT_USAGE = 0, 1, 2


class UsageError(Exception):
    """Bad input from the user: reported without a traceback, exit code 2."""


def _setup_logging(verbosity: int) -> None:
    level = max(logging.WARNING - 10 * verbosity, logging.DEBUG)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    # The handler filters too: FireWorks' loggers are DEBUG-level and propagate.
    handler.setLevel(level)
    logging.basicConfig(level=level, handlers=[handler])


def _fw_stream_level(args: argparse.Namespace, default: str = "WARNING") -> str:
    """FireWorks prints its own log lines to stdout; -v raises them to INFO, -vv DEBUG."""
    return {0: default, 1: "INFO"}.get(getattr(args, "verbose", 0), "DEBUG")


def _add_connection_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("database connection (default: the embedded server)")
    group.add_argument("--uri", help="MongoDB connection string (or set $NFT_FW_MONGODB_URI)")
    group.add_argument(
        "--launchpad",
        "-l",
        metavar="FILE",
        help="a FireWorks my_launchpad.yaml (or set $NFT_FW_LAUNCHPAD_FILE)",
    )
    group.add_argument(
        "--data-dir", metavar="DIR", help="embedded server data directory (default ~/.nft-fw)"
    )
    group.add_argument("--db-name", metavar="NAME", help="database name (default nft_fw)")


def _open(
    args: argparse.Namespace, start_embedded: bool = True, fw_log_default: str = "WARNING"
) -> Any:
    from nft_fw.launchpad.connection import open_connection

    return open_connection(
        uri=args.uri,
        launchpad_file=args.launchpad,
        data_dir=args.data_dir,
        db_name=args.db_name,
        start_embedded=start_embedded,
        fw_log_level=_fw_stream_level(args, default=fw_log_default),
    )


@contextlib.contextmanager
def _reading(args: argparse.Namespace) -> Iterator[Any]:
    """A connection for a read-only command: an embedded server it had to start for the
    query is stopped again when the command ends (never left running unasked)."""
    conn = _open(args)
    try:
        yield conn
    finally:
        if conn.started_server:
            err_console.print(
                f"[dim]started the embedded server of {conn.server.data_dir} for this query; "
                "stopped it again (nft-fw db start keeps one running)[/dim]"
            )
        conn.close(stop_server=conn.started_server)


def _fitted(
    title: str,
    columns: Sequence[str],
    rows: Sequence[Sequence[str]],
    optional: Sequence[str],
    wide: bool,
) -> tuple[Table, int | None]:
    """A table whose columns fit the terminal: the ``optional`` columns (least wanted
    first) are left out until the rest fits the console's width, and the caption names them
    (``--wide`` shows every column, at the width they need). Returns the table and the
    width to print it at (None: the console's)."""
    natural = {
        c: max([max(len(w) for w in c.split()), *(len(r[i]) for r in rows)])
        for i, c in enumerate(columns)
    }

    def width(cols: Sequence[str]) -> int:
        return sum(natural[c] + 3 for c in cols) + 1

    shown = list(columns)
    dropped: list[str] = []
    if not wide:
        for c in optional:
            if width(shown) <= console.width:
                break
            shown.remove(c)
            dropped.append(c)
    caption = f"not shown (--wide shows them): {', '.join(dropped)}" if dropped else None
    table = Table(title=title, caption=caption)
    for c in shown:
        table.add_column(c, justify="right", width=natural[c])
    keep = [columns.index(c) for c in shown]
    for r in rows:
        table.add_row(*(r[i] for i in keep))
    return table, (max(width(shown), console.width) if wide else None)


def _print_tables(tables: Sequence[tuple[Table, int | None]]) -> None:
    for table, at in tables:
        console.print(table, width=at)


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
    files, local_host = _tls_files(args, data_dir) if running is None else (None, None)
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
    options: dict[str, Any] = {
        "host": args.host,
        "port": args.port,
        "auth": args.auth,
        "tls_cert_file": files.cert_file if files else None,
        "tls_key_file": files.key_file if files else None,
        "tls_ca_file": files.ca_file if files else None,
        "local_host": local_host,
        "insecure_no_auth_on_network": args.insecure_no_auth_on_network,
    }
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
    lp_file = Path(info.data_dir) / "my_launchpad.yaml"
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
    else:
        verb = "started" if started else "already running"
        security = ", ".join(
            [
                "login required" if info.auth else "NO LOGIN",
                "TLS" if info.tls else "no TLS",
            ]
        )
        console.print(
            f"embedded server {verb}: {info.address} ({security}; pid {info.pid}, "
            f"data {info.data_dir})"
        )
        if info.tls_ca_file:
            console.print(
                f"other machines: copy {lp_file} and {info.tls_ca_file} (the CA certificate; "
                "its key stays here) and set tlsCAFile in the copy to where the CA file lies"
            )
        console.print(
            f"workers: nft-fw worker --launchpad {lp_file} [--category C | --fworker FILE]"
        )
    return EXIT_OK


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


# ---------------------------------------------------------------- worker


def cmd_worker(args: argparse.Namespace) -> int:
    from nft_fw import parallel
    from nft_fw.parents import get_parent

    ranks = parallel.launched_ranks()
    if ranks > 1:
        # one FireWorks client per job: rank 0 runs the worker, the other ranks join its
        # parallel parent calculations (GPAW built with MPI)
        try:
            comm = parallel.gpaw_world(ranks)
        except parallel.MPIUnavailable as err:
            raise UsageError(str(err)) from err
        if comm.rank != 0:
            parallel.serve(comm, get_parent)
            return EXIT_OK
        with parallel.coordinating(comm):
            return _worker(args)
    return _worker(args)


def _fworker(args: argparse.Namespace) -> Any:
    """The FWorker of ``--fworker FILE`` (name overridden by ``--name``), or None."""
    if args.fworker is None:
        return None
    from fireworks import FWorker

    if args.category:
        raise UsageError(
            "--fworker and --category both set the categories: put them in the FWorker "
            "file's 'category' or pass --category alone"
        )
    path = Path(args.fworker).expanduser()
    try:
        fworker = FWorker.from_file(str(path))
    except OSError as err:
        raise UsageError(f"--fworker {path}: cannot read it ({err.strerror})") from None
    except Exception as err:  # yaml errors, a file that is not an FWorker mapping
        raise UsageError(
            f"--fworker {path} is not a FireWorks my_fworker.yaml ({type(err).__name__}: "
            f"{err}); expected keys name, category, query, env"
        ) from None
    if args.name:
        fworker.name = args.name
    return fworker


def _worker(args: argparse.Namespace) -> int:
    from nft_fw.launchpad.connection import redact
    from nft_fw.launchpad.worker import DatabaseLost, run_worker

    fworker = _fworker(args)
    conn = _open(args, start_embedded=False, fw_log_default="INFO")
    try:
        report = run_worker(
            conn.launchpad,
            fworker=fworker,
            category=args.category,
            max_launches=args.max,
            idle_timeout_s=args.idle_timeout,
            poll_s=args.poll,
            work_dir=args.work_dir,
            name=args.name,
            ping_s=args.ping,
            db_wait_s=args.db_wait,
        )
    except DatabaseLost as err:
        # no conn.close(): closing a client ends its server sessions, which would wait
        # another server-selection timeout for the lost database; the process ends here
        err_console.print(
            f"[red]error:[/red] worker lost the database at {conn.description}: "
            f"{err.seconds:.0f} s without an answer ({redact(str(err.error))[:300]}). "
            "Start the server again (nft-fw db status / start) and restart the worker; "
            "Fireworks it was running are re-queued by nft-fw recover"
        )
        return EXIT_FAILURE
    conn.close(stop_server=False)
    err_console.print(
        f"worker {report.name}: {report.launches} launches, stopped on {report.reason}"
    )
    return EXIT_OK


def cmd_recover(args: argparse.Namespace) -> int:
    """Re-queue runs whose worker died: RUNNING Fireworks of the campaign (or all) that have
    not pinged the database for ``--lost-after`` seconds, and Fireworks that fizzled because
    the database connection was lost in FireWorks' own bookkeeping (not in their task); bring
    up to date workflows whose update a lost connection cut off (locked, a completed run
    whose Firework still shows RUNNING, children left WAITING on completed parents,
    appended Fireworks the workflow never got)."""
    conn = _open(args, start_embedded=False)
    try:
        query = {"spec.campaign": args.name} if args.name else None
        if args.name:
            from nft_fw.launchpad import records

            records.get_campaign(conn.launchpad.db, args.name)
        from nft_fw.launchpad.worker import (
            fizzled_by_lost_database,
            refresh_stuck_waiting,
            release_stale_locks,
            repair_orphans,
        )

        unlocked = release_stale_locks(conn.launchpad, query, dry_run=args.dry_run)
        # before lost runs: an orphan a worker checked out looks like one, and FireWorks
        # cannot rerun a Firework that no workflow lists
        orphans, appenders = repair_orphans(conn.launchpad, query, dry_run=args.dry_run)
        lost_launches, lost_fws, inconsistent = conn.launchpad.detect_lostruns(
            expiration_secs=args.lost_after,
            rerun=not args.dry_run,
            refresh=not args.dry_run,
            query=query,
        )

        cut_off = fizzled_by_lost_database(conn.launchpad, query)
        for fw_id in [] if args.dry_run else cut_off:
            conn.launchpad.rerun_fw(fw_id)
        stuck = refresh_stuck_waiting(conn.launchpad, query, dry_run=args.dry_run)
    except KeyError as err:
        raise UsageError(err.args[0]) from err
    finally:
        conn.close(stop_server=False)
    out = {
        "lost_fw_ids": sorted(lost_fws),
        "lost_launch_ids": sorted(lost_launches),
        "inconsistent_fw_ids": sorted(inconsistent),
        "database_fizzled_fw_ids": cut_off,
        "unlocked_workflow_fw_ids": unlocked,
        "stuck_waiting_fw_ids": stuck,
        "orphaned_fw_ids": orphans,
        "rerun_appender_fw_ids": appenders,
        "requeued": not args.dry_run,
    }
    if args.json:
        console.print_json(json.dumps(out))
    elif lost_fws:
        verb = "found (dry run)" if args.dry_run else "re-queued"
        console.print(f"lost runs {verb}: Fireworks {', '.join(map(str, sorted(lost_fws)))}")
    else:
        console.print(f"no run silent for more than {args.lost_after:g} s")

    def say(ids: Sequence[int], what: str, done: str, prefix: str = "Fireworks ") -> None:
        if ids and not args.json:
            verb = "found (dry run)" if args.dry_run else done
            console.print(f"{what}, {verb}: {prefix}{', '.join(map(str, ids))}")

    say(unlocked, "workflows left locked by a lost connection", "unlocked")
    say(sorted(inconsistent), "runs that completed while their workflow was not updated",
        "brought up to date")  # fmt: skip
    if orphans and not args.json:
        again = "to rerun" if args.dry_run else "rerun"
        rerun = ", ".join(map(str, appenders)) or "none (no appender recorded)"
        say(orphans, "Fireworks in no workflow (an append cut off by a lost connection)",
            "deleted", prefix="")  # fmt: skip
        console.print(f"{again} to append them again: Fireworks {rerun}")
    say(stuck, "Fireworks left waiting on completed parents by a cut-off update", "made ready",
        prefix="")  # fmt: skip
    say(cut_off, "fizzled on a lost database connection", "re-queued")
    return EXIT_OK


# ---------------------------------------------------------------- campaigns


def _load(path: str) -> Any:
    """Validate and prepare a campaign file of any kind (NFT, or ``kind: nearsightedness``);
    bad input becomes a UsageError (exit 2)."""
    from nft_fw.campaign import CampaignError, load_any_campaign, prepare_any

    try:
        return prepare_any(load_any_campaign(path))
    except CampaignError as err:
        raise UsageError(str(err)) from err


def _is_nearsightedness(prepared: Any) -> bool:
    from nft_fw.campaign import PreparedNearsightedness

    return isinstance(prepared, PreparedNearsightedness)


def _validate_nearsightedness(args: argparse.Namespace, prepared: Any) -> int:
    spec = prepared.spec
    out = {
        "name": spec.name,
        "kind": spec.kind,
        "atoms": len(prepared.target),
        "formula": prepared.target.get_chemical_formula(),
        "parent": prepared.parent.name,
        "force_locality_A": prepared.parent.force_locality_A,
        "centres": prepared.centres,
        "radii_A": prepared.radii,
        "chunks": len(prepared.radii) * len(prepared.centres),
        "distinct_chunks": len(prepared.plan.distinct()),
        "full": spec.full,
        "label_fireworks": prepared.n_label_fireworks,
        "tolerance_eV_per_A": spec.tolerance_eV_per_A,
        "warnings": prepared.warnings,
    }
    if args.json:
        console.print_json(json.dumps(out))
        return EXIT_OK
    console.print(
        f"{out['name']}: valid nearsightedness campaign; target {out['formula']} "
        f"({out['atoms']} atoms), parent {out['parent']}, {len(out['centres'])} centres × "
        f"radii {', '.join(f'{r:g}' for r in out['radii_A'])} Å = {out['chunks']} chunks "
        f"({out['distinct_chunks']} distinct)"
        + (" + the whole structure" if spec.full else "")
        + f" in {out['label_fireworks']} label Fireworks"
    )
    for w in prepared.warnings:
        err_console.print(f"[yellow]warning:[/yellow] {w}")
    return EXIT_OK


def cmd_validate(args: argparse.Namespace) -> int:
    prepared = _load(args.campaign)
    if _is_nearsightedness(prepared):
        return _validate_nearsightedness(args, prepared)
    out = {
        "name": prepared.spec.name,
        "atoms": len(prepared.target),
        "formula": prepared.target.get_chemical_formula(),
        "elements": list(prepared.elements),
        "parent": prepared.parent.name,
        "chunk_radius_A": prepared.chunk_radius_A,
        "relax": prepared.spec.relax is not None,
        "transfer": [
            {"name": name, "atoms": len(a), "formula": a.get_chemical_formula()}
            for name, a in prepared.transfers
        ],
        "warnings": prepared.warnings,
    }
    if args.json:
        console.print_json(json.dumps(out))
    else:
        console.print(
            f"{out['name']}: valid; target {out['formula']} ({out['atoms']} atoms), parent "
            f"{out['parent']}, chunk radius {out['chunk_radius_A']:g} Å"
            + ("; relaxation phase on" if out["relax"] else "")
        )
        for t in out["transfer"]:
            console.print(f"  transfer target {t['name']}: {t['formula']} ({t['atoms']} atoms)")
        for w in prepared.warnings:
            err_console.print(f"[yellow]warning:[/yellow] {w}")
    return EXIT_OK


def _submit(conn: Any, prepared: Any) -> list[int]:
    from nft_fw.firetasks.submission import submit
    from nft_fw.launchpad.records import CampaignExists

    try:
        return submit(conn.launchpad, prepared)
    except CampaignExists as err:
        raise UsageError(str(err)) from err


def cmd_submit(args: argparse.Namespace) -> int:
    prepared = _load(args.campaign)  # everything is checked before the database is touched
    conn = _open(args)
    try:
        fw_ids = _submit(conn, prepared)
    finally:
        conn.close(stop_server=False)
    if args.json:
        console.print_json(json.dumps({"campaign": prepared.spec.name, "fw_ids": fw_ids}))
    elif _is_nearsightedness(prepared):
        console.print(
            f"submitted nearsightedness campaign [bold]{prepared.spec.name}[/] "
            f"({len(fw_ids) - 1} label Fireworks and the analysis, Fireworks {fw_ids[0]}–"
            f"{fw_ids[-1]}); start workers with: nft-fw worker {_conn_hint(conn)}"
        )
    else:
        console.print(
            f"submitted campaign [bold]{prepared.spec.name}[/] (init Firework {fw_ids}); "
            f"start workers with: nft-fw worker {_conn_hint(conn)}"
        )
    return EXIT_OK


def _conn_hint(conn: Any) -> str:
    """The connection options that reach this campaign's database again."""
    from nft_fw.launchpad.connection import DEFAULT_DB_NAME

    if conn.kind == "embedded":
        hint = f"--data-dir {conn.server.data_dir}"
    elif conn.source_file:
        hint = f"--launchpad {conn.source_file}"
    else:
        hint = "--uri …"
    if conn.db_name != DEFAULT_DB_NAME and conn.kind != "uri":
        hint += f" --db-name {conn.db_name}"
    return hint


def _follow(conn: Any, name: str, procs: Sequence[subprocess.Popen[bytes]]) -> str:
    """Show each new iteration until the campaign completes or nothing can run any more."""
    from nft_fw.launchpad import queue, records

    db = conn.launchpad.db
    shown = -1
    seen: set[tuple[str, str, int]] = set()
    while True:
        family = [name, *records.follow_ups(db, name)]
        for rec in records.phase_records(db, family, ("relax", "transfer")):
            key = (rec["campaign"], rec["phase"], rec["iteration"])
            if key not in seen:
                seen.add(key)
                console.print(_phase_line(rec))
        for rec in records.iterations(db, name):
            if rec["iteration"] > shown:
                shown = rec["iteration"]
                line = (
                    f"{name} iteration {rec['iteration']:>2}: chunks {rec['n_chunks']:>4} "
                    f"(+{rec['new_chunks']}), δ max {rec['structure_uncertainty']:.3f} "
                    f"mean {rec['mean_uncertainty']:.3f} eV/Å, "
                    f"loss {rec['training']['loss']:.4g}, train {rec['timings']['train_s']:.0f} s"
                )
                if "true_force_mae" in rec:
                    line += (
                        f", true MAE {rec['true_force_mae']:.3f} max {rec['true_force_max']:.3f}"
                    )
                if "oos_mae" in rec:
                    line += f", new chunks' MAE before training {rec['oos_mae']:.3f}"
                if "calibration_scale" in rec:
                    line += f", calibrated δ = {rec['calibration_scale']:.2f}·δ"
                console.print(line)
        states = [records.get_campaign(db, n)["state"] for n in family]
        fw: dict[str, int] = {}
        for n in family:
            for k, v in queue.state_counts(conn.launchpad, n).items():
                fw[k] = fw.get(k, 0) + v
        active = sum(fw.get(s, 0) for s in ("READY", "RESERVED", "RUNNING", "WAITING"))
        # the report task marks the campaign completed just before its worker marks the
        # Firework COMPLETED: stopping the workers then would leave that Firework RUNNING
        if all(s == "completed" for s in states) and not fw.get("RUNNING"):
            return "completed"
        if not active and fw:
            return "stalled" if not fw.get("FIZZLED") else "failed"
        if procs and all(p.poll() is not None for p in procs):
            return "workers exited"
        time.sleep(1.0)


def _phase_line(rec: dict[str, Any]) -> str:
    name = rec["campaign"]
    if rec["phase"] == "relax":
        line = (
            f"{name} relax round {rec['iteration']}: chunks {rec['n_chunks']} "
            f"(+{rec['new_chunks']} from trajectories), {rec['n_steps']} steps, δ max along "
            f"{rec['structure_uncertainty']:.3f} eV/Å, at end {rec['final_max_uncertainty']:.3f}"
        )
    else:
        line = (
            f"{name} transfer {rec['name']} ({rec['n_atoms']} atoms): {rec['n_steps']} steps, "
            f"δ max {rec['structure_uncertainty']:.3f} eV/Å = {rec['uncertainty_ratio']:.1f}× "
            f"trained{' FLAGGED' if rec['flagged'] else ''}"
        )
    if "end_true_force_mae" in rec:
        line += (
            f", true MAE start {rec['start_true_force_mae']:.3f} end "
            f"{rec['end_true_force_mae']:.3f}"
        )
    return line


def _stop_workers(procs: Sequence[subprocess.Popen[bytes]]) -> None:
    for p in procs:
        if p.poll() is None:
            p.terminate()
    for p in procs:
        try:
            p.wait(timeout=30)
        except subprocess.TimeoutExpired:
            p.kill()


def run_campaign(conn: Any, prepared: Any, workers: int, work_dir: Path, report_dir: Path) -> int:
    from nft_fw.launchpad import queue, records, reports

    name = prepared.spec.name
    t0 = time.monotonic()
    _submit(conn, prepared)
    console.print(f"campaign [bold]{name}[/] submitted; {workers} local workers in {work_dir}")
    procs = spawn_workers(conn, workers, work_dir) if workers else []
    try:
        outcome = _follow(conn, name, procs)
    finally:
        _stop_workers(procs)
    db = conn.launchpad.db
    history = records.iterations(db, name)
    everything = [r for phase in PHASES for r in records.iterations(db, name, phase=phase)]
    _print_tables(_phase_tables(name, everything))
    doc = records.get_campaign(db, name)
    ended = (
        f"Fireworks {queue.state_counts(conn.launchpad, name)}; wall {time.monotonic() - t0:.0f} s"
    )
    if _is_nearsightedness(prepared):
        from nft_fw.launchpad import nearsightedness

        console.print(f"{name}: {outcome}; {ended}")
        _print_nearsightedness(name, nearsightedness.status(db, name))
        _print_report(nearsightedness.report(db, name, report_dir))
        return EXIT_OK if outcome == "completed" else EXIT_FAILURE
    console.print(
        f"{name}: {outcome}; stop: {doc.get('stop_reason')} ({doc.get('stop_detail')}); " + ended
    )
    if history:
        _print_report(reports.report(db, name, report_dir))
        for child in records.follow_ups(db, name):
            if records.iterations(db, child):
                _print_report(reports.report(db, child, report_dir / child), child)
    return EXIT_OK if outcome == "completed" else EXIT_FAILURE


def _print_report(paths: dict[str, Any], follow_up: str | None = None) -> None:
    """Where the report went: its page, then the other files beside it."""
    page = Path(paths["html"])
    others = ", ".join(Path(p).name for key, p in paths.items() if key != "html")
    what = f"report of follow-up {follow_up}" if follow_up else "report"
    console.print(f"{what}: {_shown(page)} (beside it: {others})", highlight=False)


def cmd_run(args: argparse.Namespace) -> int:
    prepared = _load(args.campaign)
    conn = _open(args)
    name = prepared.spec.name
    base = Path(args.work_dir or f"{name}-run").resolve()
    try:
        return run_campaign(
            conn, prepared, args.workers, base / "workers", Path(args.report_dir or base / "report")
        )
    finally:
        conn.close()


def cmd_status(args: argparse.Namespace) -> int:
    from nft_fw.launchpad import queue, records

    with _reading(args) as conn, _campaign_errors():
        db = conn.launchpad.db
        docs = [records.get_campaign(db, args.name)] if args.name else records.list_campaigns(db)
        rows = []
        for doc in docs:
            name = doc["_id"]
            if doc.get("kind") == "nearsightedness":
                rows.append(_nearsightedness_row(conn, doc))
                continue
            history = records.iterations(db, name)
            last = history[-1] if history else {}
            failed = queue.fireworks(
                conn.launchpad, name, states=("FIZZLED",), fields=("fw_id", "name")
            )
            failed_chunks = [
                {
                    "kind": d["kind"],
                    "phase": d.get("phase"),
                    "iteration": d.get("iteration"),
                    "centre": d.get("centre"),
                    "hash": d["hash"],
                    "fw_id": d.get("fw_id"),
                    "error": d.get("error"),
                }
                for d in records.failures(db, name)
            ]
            waiting = queue.labelling_rounds(conn.launchpad, name)
            rows.append(
                {
                    "campaign": name,
                    "state": doc.get("state"),
                    "labelling": waiting,
                    "iteration": last.get("iteration"),
                    "structure_uncertainty": last.get("structure_uncertainty"),
                    "best_iteration": last.get("best_iteration"),
                    "labels": records.count_labels(db, name),
                    "fireworks": queue.state_counts(conn.launchpad, name),
                    "fizzled": failed,
                    "failed_labels": failed_chunks,
                    "stop_reason": doc.get("stop_reason"),
                    "relax_round": doc.get("relax_round"),
                    "relax_stop_reason": doc.get("relax_stop_reason"),
                    "flagged_transfers": [
                        r["name"]
                        for r in records.iterations(db, name, phase="transfer")
                        if r.get("flagged")
                    ],
                }
            )
    if args.json:
        console.print_json(json.dumps(rows, default=str))
        return EXIT_OK
    table = Table(title="campaigns")
    columns = ("campaign", "state", "iteration", "δ max (eV/Å)", "best", "relax", "labels")
    for col in (*columns, "Fireworks"):
        table.add_column(col)
    for r in rows:
        d = r["structure_uncertainty"]
        table.add_row(
            r["campaign"],
            str(r["state"]) + (f" ({r['stop_reason']})" if r["stop_reason"] else ""),
            "—" if r["iteration"] is None else str(r["iteration"]),
            "—" if d is None else f"{d:.3f}",
            "—" if r["best_iteration"] is None else str(r["best_iteration"]),
            "—"
            if r["relax_round"] is None
            else f"round {r['relax_round']}"
            + (f" ({r['relax_stop_reason']})" if r["relax_stop_reason"] else ""),
            str(r["labels"]),
            ", ".join(f"{k} {v}" for k, v in sorted(r["fireworks"].items())),
        )
    console.print(table)
    for r in rows:
        for w in r["labelling"]:
            console.print(
                f"{r['campaign']}: {w['phase']} round {w['round']} labelling, "
                f"{w['label_fireworks_ended']}/{w['label_fireworks']} label Fireworks ended"
                + ("" if w["trainer"] == "WAITING" else f", trainer {w['trainer']}")
            )
        for f in r["fizzled"]:
            err_console.print(f"[red]fizzled[/red] {r['campaign']}: fw {f['fw_id']} {f['name']}")
        for f in r["failed_labels"]:
            where = f"centre {f['centre']}" if f["kind"] == "chunk" else "initial image"
            err_console.print(
                f"[red]failed label[/red] {r['campaign']}: {f['phase']} iteration "
                f"{f['iteration']} {where} (fw {f['fw_id']}, hash {f['hash'][:12]}): "
                f"{f['error']}"
            )
        for t in r["flagged_transfers"]:
            console.print(
                f"[yellow]flagged[/yellow] {r['campaign']}: transfer target {t} has δ ≥ 2× the "
                "trained target's (see nft-fw history --phase transfer)"
            )
        if "nearsightedness" in r:
            _print_nearsightedness(r["campaign"], r["nearsightedness"])
    return EXIT_OK


def _nearsightedness_row(conn: Any, doc: dict[str, Any]) -> dict[str, Any]:
    """A status row of a nearsightedness campaign (the NFT columns stay empty)."""
    from nft_fw.launchpad import nearsightedness, queue

    name = doc["_id"]
    info = nearsightedness.status(conn.launchpad.db, name)
    return {
        "campaign": name,
        "kind": "nearsightedness",
        "state": doc.get("state"),
        "labelling": [],
        "iteration": None,
        "structure_uncertainty": None,
        "best_iteration": None,
        "labels": info["labels"],
        "fireworks": queue.state_counts(conn.launchpad, name),
        "fizzled": queue.fireworks(
            conn.launchpad, name, states=("FIZZLED",), fields=("fw_id", "name")
        ),
        "failed_labels": [],  # listed under nearsightedness (they have radii, no iteration)
        "stop_reason": None,
        "relax_round": None,
        "relax_stop_reason": None,
        "flagged_transfers": [],
        "nearsightedness": info,
    }


def _print_nearsightedness(name: str, info: dict[str, Any]) -> None:
    rec = info["recommended_radius_A"]
    line = f"{name}: nearsightedness, {info['labels']}/{info['planned_labels']} labels stored"
    if info["reference"] is not None:
        line += (
            "; recommended chunk radius "
            + (f"{rec:g} Å" if rec is not None else "none of the radii")
            + f" (deviation vs {info['reference']} below {info['tolerance_eV_per_A']:g} eV/Å)"
        )
        if info["missing"]:
            line += f", {info['missing']} labels missing"
    console.print(line)
    for f in info["failed_labels"]:
        where = (
            f"centre {f['centre']} radius {f['radius']:g} Å"
            if f["kind"] == "chunk"
            else "the whole structure"
        )
        err_console.print(
            f"[red]failed label[/red] {name}: nearsightedness {where} (fw {f['fw_id']}, "
            f"hash {f['hash'][:12]}): {f['error']}"
        )


@contextlib.contextmanager
def _campaign_errors() -> Iterator[None]:
    """A missing campaign (KeyError with the message) as a usage error."""
    try:
        yield
    except KeyError as err:
        raise UsageError(err.args[0]) from err


def _with_campaign(args: argparse.Namespace, fn: Callable[[Any], Any]) -> Any:
    from nft_fw.model import ModelFormatError

    with _reading(args) as conn:
        try:
            return fn(conn.launchpad.db)
        except KeyError as err:
            raise UsageError(err.args[0]) from err
        except ModelFormatError as err:  # a campaign trained by an older nft-fw
            raise UsageError(f"{getattr(args, 'name', 'campaign')}: {err}") from err


def cmd_history(args: argparse.Namespace) -> int:
    from nft_fw.launchpad import records

    phases = PHASES if args.phase == "all" else (args.phase,)

    def get(db: Any) -> Any:
        from nft_fw.launchpad import nearsightedness

        if nearsightedness.is_nearsightedness(records.get_campaign(db, args.name)):
            return nearsightedness.status(db, args.name)  # its result: the per-radius table
        return [r for phase in phases for r in records.iterations(db, args.name, phase=phase)]

    history = _with_campaign(args, get)
    if isinstance(history, dict):  # a nearsightedness campaign trains nothing
        if args.json:
            console.print_json(json.dumps(history, default=str))
        else:
            _print_nearsightedness(args.name, history)
        return EXIT_OK
    if args.json:
        console.print_json(json.dumps(history, default=str))
        return EXIT_OK
    _print_tables(_phase_tables(args.name, history, wide=args.wide))
    return EXIT_OK


PHASES = ("nft", "relax", "transfer")


# columns a narrow terminal leaves out first (--wide shows every column)
HISTORY_OPTIONAL = (
    "OOS ≤ sδ", "OOS ≤ δ", "δ scale", "OOS max (eV/Å)", "loss", "true max (eV/Å)", "new",
    "train (s)",
)  # fmt: skip
RELAX_OPTIONAL = (
    "parent fmax at end (eV/Å)", "δ scale", "converged", "OOS MAE (eV/Å)", "new",
    "true MAE start/end (eV/Å)",
)  # fmt: skip
TRANSFER_OPTIONAL = (
    "relax (s)", "× trained at end", "flagged at end", "true MAE start/end (eV/Å)", "steps",
)  # fmt: skip


def _phase_tables(
    name: str, history: list[dict[str, Any]], wide: bool = False
) -> list[tuple[Table, int | None]]:
    from nft_fw import plots, relax_plots

    tables = []
    for phase, title, columns, rows, optional in (
        ("nft", "NFT iterations", plots.HISTORY_COLUMNS, plots.history_table, HISTORY_OPTIONAL),
        ("relax", "relax", relax_plots.RELAX_COLUMNS, relax_plots.relax_table, RELAX_OPTIONAL),
        (
            "transfer", "transfer", relax_plots.TRANSFER_COLUMNS, relax_plots.transfer_table,
            TRANSFER_OPTIONAL,
        ),
    ):  # fmt: skip
        selected = [r for r in history if r["phase"] == phase]
        if selected:
            tables.append(_fitted(f"{name}: {title}", columns, rows(selected), optional, wide))
    return tables


def cmd_labels(args: argparse.Namespace) -> int:
    from nft_fw.launchpad import records

    if args.export:
        return _export_labels(args)

    def get(db: Any) -> list[dict[str, Any]]:
        from nft_fw.launchpad import nearsightedness

        doc = records.get_campaign(db, args.name)
        ns_kind = nearsightedness.is_nearsightedness(doc)
        stored = nearsightedness.labels(db, args.name) if ns_kind else records.labels(db, args.name)
        out = []
        for d in stored:
            force = d.get("central_force")
            out.append(
                {
                    "kind": d["kind"],
                    "iteration": d.get("iteration"),
                    "radius_A": d.get("radius"),
                    "centre": d.get("centre"),
                    "hash": d["hash"],
                    "atoms": d.get("n_atoms") or len(d["numbers"]),
                    "energy_eV": d["energy"],
                    "central_force_eV_per_A": force,
                    "seconds": d.get("seconds"),
                    "scf_iterations": d.get("scf_iterations"),
                    "attempt": d.get("attempt"),
                    "peak_rss_MiB": d.get("peak_rss_MiB"),
                    "mpi_ranks": d.get("mpi_ranks", 1),
                    "log_file": d.get("log_file"),
                    "host": d.get("host"),
                    "fw_id": d.get("fw_id"),
                }
            )
        return out

    rows = _with_campaign(args, get)
    if args.json:
        console.print_json(json.dumps(rows, default=str))
        return EXIT_OK
    table = Table(title=f"{args.name}: labels")
    columns = ("kind", "iteration", "centre", "hash", "atoms", "|F_c| (eV/Å)", "s", "SCF")
    for col in (*columns, "host", "fw"):
        table.add_column(col)
    for r in rows:
        f = r["central_force_eV_per_A"]
        table.add_row(
            r["kind"],
            str(r["iteration"]),
            "—" if r["centre"] is None else str(r["centre"]),
            r["hash"][:12],
            str(r["atoms"]),
            "—" if f is None else f"{sum(x * x for x in f) ** 0.5:.3f}",
            f"{r['seconds']:.2f}" if r["seconds"] is not None else "—",
            "—" if r["scf_iterations"] is None else str(r["scf_iterations"]),
            str(r["host"]),
            str(r["fw_id"]),
        )
    console.print(table)
    return EXIT_OK


def _export_labels(args: argparse.Namespace) -> int:
    """``nft-fw labels NAME --export FILE``: every label as exact extended XYZ."""
    from collections import Counter

    from nft_fw import labelset
    from nft_fw.launchpad import labels

    frames = _with_campaign(args, lambda db: labels.frames(db, args.name))
    path = Path(args.export)
    labelset.write(path, frames)
    counts = Counter((f.info["nft_phase"], f.info["nft_kind"]) for f in frames)
    parts = ", ".join(f"{n} {phase} {kind}" for (phase, kind), n in sorted(counts.items()))
    console.print(
        f"{args.name}: {len(frames)} labels ({parts or 'none yet'}) written to {path} "
        "(extended XYZ; ase.io.read(path, ':') reads it; fields: docs/labels.md)"
    )
    return EXIT_OK


def cmd_export(args: argparse.Namespace) -> int:
    from nft_fw.calculator import EnsembleCalculator
    from nft_fw.launchpad import relaxation

    def get(db: Any) -> Any:
        from nft_fw.launchpad import nearsightedness, records

        if nearsightedness.is_nearsightedness(records.get_campaign(db, args.name)):
            raise UsageError(
                f"{args.name} is a nearsightedness campaign: it trains no model to export. "
                f"Its per-radius table is in 'nft-fw history {args.name}' and its figure in "
                f"'nft-fw report {args.name}'"
            )
        return relaxation.final_model(db, args.name)

    ensemble, rec = _with_campaign(args, get)
    calc = EnsembleCalculator(ensemble)
    path = calc.save(args.output)
    console.print(
        f"{args.name}: model of {rec['phase']} iteration {rec['iteration']} (δ max "
        f"{rec['structure_uncertainty']:.3f} eV/Å) written to {path}; load it with "
        "nft_fw.EnsembleCalculator.load"
    )
    if calc.calibration is not None:
        cal = calc.calibration
        console.print(
            f"calibrated δ = {cal.scale:.3f}·δ ({cal.coverage:.0%} of {cal.n_points} "
            "out-of-sample errors within it): results['calibrated_uncertainties'] next to "
            "results['uncertainties']"
        )
    return EXIT_OK


def _numbers(text: str, kind: type, what: str) -> list[Any]:
    try:
        return [kind(x) for x in text.split(",") if x.strip()]
    except ValueError as err:
        raise UsageError(f"{what} {text!r}: expected comma-separated numbers ({err})") from err


def cmd_nearsightedness(args: argparse.Namespace) -> int:

    from nft_fw import nearsightedness as ns

    prepared = _load(args.campaign)
    atoms = prepared.target
    radii = _numbers(args.radii, float, "--radii")
    if args.centres == "all":
        centres = list(range(len(atoms)))
    elif args.centres:
        centres = _numbers(args.centres, int, "--centres")
    else:
        centres = ns.random_centres(len(atoms), args.n_centres, args.seed)
    try:
        result = ns.nearsightedness(atoms, prepared.parent, centres, radii, full=not args.no_full)
    except ValueError as err:
        raise UsageError(str(err)) from err
    out = Path(args.out or f"{prepared.spec.name}-nearsightedness")
    paths = ns.write(result, out, args.tolerance)
    data = result.to_dict(args.tolerance)
    if args.json:
        console.print_json(
            json.dumps(
                {k: v for k, v in data.items() if k not in ("central_forces", "full_forces")}
            )
        )
        return EXIT_OK
    table = Table(
        title=f"{prepared.spec.name}: parent {result.parent}, {len(atoms)} atoms, "
        f"{len(centres)} centres; |ΔF| of the centre, eV/Å"
    )
    ref = [k for k in ("full", "largest") if f"{k}_max" in data["table"][0]]
    for col in ("radius (Å)", "atoms (mean)", "parent (s)"):
        table.add_column(col, justify="right")
    for k in ref:
        for stat in ("median", "q3", "max"):
            table.add_column(f"vs {k} {stat}", justify="right")
    for row in data["table"]:
        cells = [f"{row['radius_A']:g}", f"{row['mean_atoms']:.0f}", f"{row['parent_seconds']:.1f}"]
        cells += [f"{row[f'{k}_{stat}']:.2e}" for k in ref for stat in ("median", "q3", "max")]
        table.add_row(*cells)
    console.print(table)
    rec = data["recommended_radius_A"]
    console.print(
        f"parent labels run: {result.labels}"
        + (f"; whole structure {result.full_seconds:.1f} s" if result.full_seconds else "")
    )
    console.print(
        f"recommended chunk radius (max deviation vs {data['reference']} below "
        f"{args.tolerance:g} eV/Å from there on): "
        + (f"{rec:g} Å" if rec is not None else "none of the radii; try larger ones")
    )
    whole = data["whole_structure_from_A"]
    if rec is not None and whole is not None and rec >= whole:
        err_console.print(
            f"[yellow]warning:[/yellow] from {whole:g} Å on every chunk is the whole structure: "
            "the recommendation only says the structure is too small to tell; use a larger one"
        )
    console.print(f"figure: {paths['figure']}; data: {paths['json']}")
    return EXIT_OK


def cmd_report(args: argparse.Namespace) -> int:
    from nft_fw.launchpad import nearsightedness, records, reports

    out = Path(args.output or f"{args.name}-report")

    def write(db: Any) -> dict[str, Any]:
        if nearsightedness.is_nearsightedness(records.get_campaign(db, args.name)):
            return nearsightedness.report(db, args.name, out)  # from the labels stored so far
        return reports.report(db, args.name, out)

    paths = _with_campaign(args, write)
    for key, p in paths.items():
        console.print(f"{key}: {p}")
    return EXIT_OK


# ---------------------------------------------------------------- demo


def _worker_command(conn: Any, extra: Sequence[str]) -> list[str]:
    cmd = [sys.executable, "-m", "nft_fw", "worker"]
    if conn.kind == "embedded":
        cmd += ["--data-dir", conn.server.data_dir, "--db-name", conn.db_name]
    elif conn.source_file:
        cmd += ["--launchpad", conn.source_file, "--db-name", conn.db_name]
    else:  # a URI: it travels in the environment (spawn_workers), the database name here
        cmd += ["--db-name", conn.db_name]
    return cmd + list(extra)


def spawn_workers(
    conn: Any, n: int, work_dir: Path, extra: Sequence[str] = ()
) -> list[subprocess.Popen[bytes]]:
    """Start ``n`` ``nft-fw worker`` processes on this connection, logs in ``work_dir``."""
    work_dir.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ)
    if conn.kind == "uri":
        # The URI reaches the child through its environment, never its argv.
        env["NFT_FW_MONGODB_URI"] = conn.launchpad.host
    procs = []
    for i in range(n):
        wdir = work_dir / f"worker{i}"
        wdir.mkdir(exist_ok=True)
        log = open(wdir / "worker.log", "ab")  # noqa: SIM115 (owned by the child)
        procs.append(
            subprocess.Popen(
                [*_worker_command(conn, extra), "--work-dir", str(wdir), "--name", f"local-{i}"],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=env,
            )
        )
        log.close()
    return procs


def cmd_demo(args: argparse.Namespace) -> int:
    """The main job: the Pt260/EMT campaign on the embedded server with local workers, then an
    independent check of the exported model against EMT on the whole particle."""
    from ase.calculators.emt import EMT

    from nft_fw.calculator import EnsembleCalculator
    from nft_fw.launchpad import campaigns
    from nft_fw.launchpad.connection import connect
    from nft_fw.step import error_figures

    campaign = args.campaign or str(Path(__file__).parent / "examples" / "pt260-emt.yaml")
    prepared = _load(campaign)
    if _is_nearsightedness(prepared):
        raise UsageError(
            f"{campaign} is a nearsightedness campaign; the demo trains a potential (give an "
            "NFT campaign file), or run it with nft-fw run"
        )
    base = Path(args.data_dir or ".nft-fw-demo").resolve()
    with connect(data_dir=base / "db", db_name="nft_fw_demo", fw_log_level="WARNING") as conn:
        console.print(f"database: {conn.description} (reset for the demo)")
        # the demo's own database: drop whatever an earlier demo left in it (FireWorks'
        # reset keeps nft-fw's collections, so a second demo would find its campaign)
        conn.launchpad.connection.drop_database(conn.launchpad.db.name)
        code = run_campaign(conn, prepared, args.workers, base / "workers", base / "report")
        if code != EXIT_OK:
            return code
        ensemble, rec = campaigns.best_model(conn.launchpad.db, prepared.spec.name)
    model_dir = EnsembleCalculator(ensemble).save(base / "model")
    atoms = prepared.target.copy()
    atoms.calc = EnsembleCalculator.load(model_dir)
    predicted = atoms.get_forces()
    delta = atoms.calc.results["uncertainties"]
    reference = prepared.target.copy()
    reference.calc = EMT()
    figures = error_figures(predicted, reference.get_forces(), delta)
    table = Table(title=f"exported model (iteration {rec['iteration']}) vs EMT on the whole target")
    table.add_column("quantity")
    table.add_column("value")
    table.add_column("bar")
    table.add_row("true-force MAE (eV/Å)", f"{figures['true_force_mae']:.3f}", "≤ 0.08")
    table.add_row("true-force max (eV/Å)", f"{figures['true_force_max']:.3f}", "≤ 0.40")
    table.add_row("atoms with residual ≤ δ_i", f"{figures['fraction_within_delta']:.0%}", "≥ 90 %")
    table.add_row("rank correlation residual/δ", f"{figures['rank_correlation']:.2f}", "")
    table.add_row("model", str(model_dir), "")
    console.print(table)
    page = base / "report" / "report.html"
    console.print(
        f"report: open {_shown(page)} in a browser (one self-contained page: figures, history, "
        f"stop, campaign file; {page.resolve().as_uri()}); the same figures as PNG, history.md "
        "and summary.json beside it"
    )
    console.print("next, to look at the demo's campaign (its own database, not the default):")
    for cmd, why in demo_next_steps(base / "db", "nft_fw_demo", prepared.spec.name):
        console.print(f"  [dim]# {why}[/dim]\n  {cmd}", highlight=False, soft_wrap=True)
    return EXIT_OK


def _shown(path: Path) -> str:
    """``path`` relative to the working directory when it is below it."""
    try:
        return str(path.resolve().relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def demo_next_steps(data_dir: Path, db_name: str, name: str) -> list[tuple[str, str]]:
    """Commands that inspect a campaign in the embedded database of ``data_dir`` (each starts
    the server for itself, except lpad, which needs it started)."""
    where = f"--data-dir {shlex.quote(_shown(data_dir))} --db-name {db_name}"
    lp_file = shlex.quote(_shown(data_dir / "my_launchpad.yaml"))
    return [
        (f"nft-fw status {name} {where}", "state, stop reason, Fireworks"),
        (
            f"nft-fw history {name} {where}",
            "each iteration: δ, chunks, true and out-of-sample errors",
        ),
        (f"nft-fw labels {name} {where}", "every EMT single point and its cost"),
        (f"nft-fw report {name} -o {name}-report {where}", "the figures again, elsewhere"),
        (f"nft-fw export {name} -o {name}-model {where}", "the kept model for ASE"),
        (f"nft-fw db start {where}", "keep the server up for FireWorks' own lpad"),
        (f"lpad -l {lp_file} get_wflows -d more", "the campaign's workflow, as FireWorks sees it"),
        (f"nft-fw db stop --data-dir {shlex.quote(_shown(data_dir))}", "stop it again"),
    ]


# ---------------------------------------------------------------- parser


# Shown under each command's --help (tests parse every line with this parser).
EXAMPLES: dict[str, list[tuple[str, str]]] = {
    "db start": [
        ("nft-fw db start", "embedded server in ~/.nft-fw, this machine only"),
        ("nft-fw db start --data-dir /scratch/nft --host 0.0.0.0 --auth --tls",
         "for workers on other machines: login ($NFT_FW_DB_PASSWORD or asked) and TLS"),
    ],
    "db stop": [("nft-fw db stop", "stop the server of ~/.nft-fw")],
    "db status": [("nft-fw db status --json", "running? answering? where?")],
    "worker": [
        ("nft-fw worker", "run anything ready on the default database, keep polling"),
        ("nft-fw worker --category dft --idle-timeout 600",
         "only DFT labels; stop after 10 idle minutes"),
        ("nft-fw worker --launchpad my_launchpad.yaml --work-dir /scratch/w1",
         "a worker on another machine"),
    ],
    "validate": [("nft-fw validate nft_fw/examples/pt260-emt.yaml", "check, write nothing")],
    "submit": [
        ("nft-fw submit nft_fw/examples/pt260-emt.yaml", "add it to the default database"),
        ("nft-fw submit campaign.yaml --launchpad my_launchpad.yaml", "to a shared MongoDB"),
    ],
    "run": [
        ("nft-fw run nft_fw/examples/pt260-emt.yaml --workers 2",
         "submit and run to the end with two local workers"),
    ],
    "recover": [
        ("nft-fw recover --dry-run", "list what would be re-queued or repaired"),
        ("nft-fw recover pt260-emt --lost-after 600",
         "re-queue its runs silent for 10 minutes"),
    ],
    "status": [
        ("nft-fw status", "every campaign"),
        ("nft-fw status pt260-emt --json", "one campaign, machine-readable"),
    ],
    "history": [
        ("nft-fw history pt260-emt", "NFT iterations: δ, chunks, errors, calibration"),
        ("nft-fw history pt260-relax --phase all", "with relaxation rounds and transfers"),
    ],
    "labels": [
        ("nft-fw labels pt260-emt", "every parent single point and its cost"),
        ("nft-fw labels pt260-emt --export pt260-labels.extxyz", "all of them as a data set"),
    ],
    "export": [("nft-fw export pt260-emt -o model/", "the kept model, for EnsembleCalculator")],
    "report": [("nft-fw report pt260-emt -o report/", "figures and summary")],
    "nearsightedness": [
        ("nft-fw nearsightedness nft_fw/examples/pt260-emt.yaml --radii 4,6,8,10 "
         "--n-centres 4", "how far the parent's force reaches, in this process"),
    ],
    "demo": [
        ("nft-fw demo", "the Pt260/EMT campaign with two local workers"),
        ("nft-fw demo --data-dir /tmp/nft-demo --workers 1", "elsewhere, one worker"),
    ],
}  # fmt: skip


def _examples(command: str) -> dict[str, Any]:
    lines = EXAMPLES.get(command)
    if not lines:
        return {}
    text = "\n".join(f"  # {why}\n  {cmd}" for cmd, why in lines)
    return {"epilog": "examples:\n" + text, "formatter_class": argparse.RawDescriptionHelpFormatter}


def build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "-v", "--verbose", action="count", default=0, help="more log output (-v info, -vv debug)"
    )
    parser = argparse.ArgumentParser(
        prog="nft-fw", description="Nearsighted force training on FireWorks."
    )
    sub = parser.add_subparsers(dest="command", required=True)
    _add_parser = sub.add_parser

    def add(name: str, **kwargs: Any) -> argparse.ArgumentParser:
        return _add_parser(name, parents=[common], **_examples(name), **kwargs)

    sub.add_parser = add  # type: ignore[method-assign]

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
    p = db_sub.add_parser("status", help="is the embedded server running and answering?")
    p.add_argument("--data-dir", metavar="DIR")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_db_status)

    p = sub.add_parser(
        "worker", help="run Fireworks from the LaunchPad (FireWorks rlaunch rapidfire, polling)"
    )
    _add_connection_options(p)
    p.add_argument(
        "--category",
        "-c",
        action="append",
        help="only Fireworks with this _category (label, train, dft, …); repeat for several; "
        "default any",
    )
    p.add_argument(
        "--fworker",
        "-w",
        metavar="FILE",
        help="a FireWorks my_fworker.yaml (name, category, query, env), as rlaunch -w takes",
    )
    p.add_argument("--max", type=int, metavar="N", help="stop after N launches")
    p.add_argument(
        "--db-wait",
        type=float,
        default=300.0,
        metavar="S",
        help="keep retrying an unreachable database for S seconds, then stop with an error "
        "(default 300)",
    )
    p.add_argument(
        "--ping",
        type=float,
        metavar="S",
        help="a running Firework pings the database every S seconds (default 3600); keep it "
        "well below the --lost-after of nft-fw recover",
    )
    p.add_argument(
        "--idle-timeout",
        type=float,
        metavar="S",
        help="stop after S seconds with nothing to run (default: keep polling)",
    )
    p.add_argument(
        "--poll",
        type=float,
        default=1.0,
        metavar="S",
        help="seconds between queue polls (default 1)",
    )
    p.add_argument("--work-dir", metavar="DIR", help="where launch directories go (default cwd)")
    p.add_argument("--name", help="worker name recorded with each launch (default host-pid)")
    p.set_defaults(func=cmd_worker)

    p = sub.add_parser("validate", help="check a campaign file (nothing is written)")
    p.add_argument("campaign", help="campaign YAML file")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_validate)

    p = sub.add_parser("submit", help="validate a campaign file and add it to the LaunchPad")
    p.add_argument("campaign", help="campaign YAML file")
    p.add_argument("--json", action="store_true")
    _add_connection_options(p)
    p.set_defaults(func=cmd_submit)

    p = sub.add_parser("run", help="submit a campaign and run it with local workers to the end")
    p.add_argument("campaign", help="campaign YAML file")
    p.add_argument("--workers", type=int, default=2, help="local worker processes (default 2)")
    p.add_argument("--work-dir", metavar="DIR", help="worker launch directories (./NAME-run)")
    p.add_argument("--report-dir", metavar="DIR", help="plots and summary (./NAME-run/report)")
    _add_connection_options(p)
    p.set_defaults(func=cmd_run)

    p = sub.add_parser(
        "recover",
        help="re-queue Fireworks whose worker died (no ping for --lost-after seconds) or that "
        "fizzled on a lost database connection; finish workflow updates a lost connection "
        "cut off",
    )
    p.add_argument("name", nargs="?", help="only this campaign's Fireworks (default: all)")
    p.add_argument(
        "--lost-after",
        type=float,
        default=4 * 3600.0,
        metavar="S",
        help="a RUNNING Firework silent for S seconds is lost (default 14400, FireWorks' own); "
        "must exceed the workers' --ping",
    )
    p.add_argument("--dry-run", action="store_true", help="only list the lost runs")
    p.add_argument("--json", action="store_true")
    _add_connection_options(p)
    p.set_defaults(func=cmd_recover)

    p = sub.add_parser("status", help="campaigns: state, iteration, δ, labels, Fireworks")
    p.add_argument("name", nargs="?", help="one campaign (default: all)")
    p.add_argument("--json", action="store_true")
    _add_connection_options(p)
    p.set_defaults(func=cmd_status)

    p = sub.add_parser("history", help="the per-iteration records of a campaign")
    p.add_argument("name")
    p.add_argument(
        "--phase",
        choices=["all", "nft", "relax", "transfer"],
        default="all",
        help="which records: NFT iterations, relax rounds, transfer targets (default all)",
    )
    p.add_argument("--json", action="store_true")
    p.add_argument(
        "--wide",
        action="store_true",
        help="every column, however wide (default: columns that do not fit the terminal "
        "are left out, and named under the table)",
    )
    _add_connection_options(p)
    p.set_defaults(func=cmd_history)

    p = sub.add_parser("labels", help="the labels (parent single points) of a campaign")
    p.add_argument("name")
    p.add_argument("--json", action="store_true")
    p.add_argument(
        "--export",
        metavar="FILE",
        help="write every label (structure, energy, forces of every atom, which atoms are "
        "trained on, phase, parent settings, cost) to FILE as extended XYZ",
    )
    _add_connection_options(p)
    p.set_defaults(func=cmd_labels)

    p = sub.add_parser("export", help="write the best model (EnsembleCalculator.load reads it)")
    p.add_argument("name")
    p.add_argument("-o", "--output", required=True, metavar="DIR")
    _add_connection_options(p)
    p.set_defaults(func=cmd_export)

    p = sub.add_parser("report", help="plots (PNG) and summary of a campaign")
    p.add_argument("name")
    p.add_argument("-o", "--output", metavar="DIR", help="default ./NAME-report")
    _add_connection_options(p)
    p.set_defaults(func=cmd_report)

    p = sub.add_parser(
        "nearsightedness",
        help="how the parent's central force converges with chunk radius (no database)",
    )
    p.add_argument("campaign", help="campaign YAML file: its target and parent are used")
    p.add_argument(
        "--radii", default="3,4,5,6,7,8", help="chunk radii, Å, comma-separated (3,4,5,6,7,8)"
    )
    p.add_argument("--centres", help="atom indices, comma-separated, or 'all'")
    p.add_argument(
        "--n-centres", type=int, default=10, help="without --centres: this many random atoms"
    )
    p.add_argument("--seed", type=int, default=0, help="seed of the random centres")
    p.add_argument(
        "--no-full", action="store_true", help="skip the whole structure (too expensive)"
    )
    p.add_argument(
        "--tolerance",
        type=float,
        default=0.05,
        help="eV/Å: recommend the smallest radius whose deviation stays below it (0.05)",
    )
    p.add_argument("--out", metavar="DIR", help="figure and JSON (./NAME-nearsightedness)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_nearsightedness)

    p = sub.add_parser(
        "demo", help="the main job: the Pt260/EMT campaign with two local workers, checked vs EMT"
    )
    p.add_argument(
        "--data-dir",
        metavar="DIR",
        help="demo directory: database, workers, report, model (default ./.nft-fw-demo)",
    )
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--campaign", help="another campaign file (default: the Pt260/EMT example)")
    p.set_defaults(func=cmd_demo)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    _setup_logging(args.verbose)
    func: Callable[[argparse.Namespace], int] = args.func
    from nft_fw.launchpad.connection import DatabaseConnectionError, redact
    from nft_fw.launchpad.server import ServerError

    try:
        return func(args)
    except UsageError as err:
        err_console.print(f"[red]error:[/red] {redact(str(err))}")
        return EXIT_USAGE
    except (DatabaseConnectionError, ServerError) as err:
        err_console.print(f"[red]error:[/red] {redact(str(err))}")
        return EXIT_FAILURE
    except KeyboardInterrupt:
        err_console.print("interrupted")
        return 130


if __name__ == "__main__":
    sys.exit(main())
