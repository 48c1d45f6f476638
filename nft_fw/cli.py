"""The ``nft-fw`` command line: the one place that ties the science core, FireWorks and the database together.

Every command that touches the database takes the same connection options:
``--uri U`` (or ``$NFT_FW_MONGODB_URI``), ``--launchpad my_launchpad.yaml``, or
by default the embedded server on ``--data-dir`` (``~/.nft-fw``).
Exit codes: 0 success, 1 runtime failure, 2 bad input or usage.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

logger = logging.getLogger("nft_fw.cli")
console = Console()
err_console = Console(stderr=True)

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
    group.add_argument("--launchpad", "-l", metavar="FILE", help="a FireWorks my_launchpad.yaml")
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


# ---------------------------------------------------------------- db


def cmd_db_start(args: argparse.Namespace) -> int:
    from nft_fw.launchpad import server
    from nft_fw.launchpad.connection import embedded

    info, started = server.start(args.data_dir, host=args.host, port=args.port)
    conn = embedded(info.data_dir, args.db_name, start=False)
    conn.close(stop_server=False)
    lp_file = Path(info.data_dir) / "my_launchpad.yaml"
    payload = {
        "address": info.address,
        "pid": info.pid,
        "data_dir": info.data_dir,
        "launchpad_file": str(lp_file),
        "started": started,
    }
    if args.json:
        console.print_json(json.dumps(payload))
    else:
        verb = "started" if started else "already running"
        console.print(
            f"embedded server {verb}: {info.address} (pid {info.pid}, data {info.data_dir})"
        )
        console.print(
            f"workers: rlaunch -l {lp_file} rapidfire   or   nft-fw worker --launchpad {lp_file}"
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
    responding = info is not None and server.ping(info.host, info.port)
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
    from nft_fw.launchpad.worker import run_worker

    conn = _open(args, start_embedded=False, fw_log_default="INFO")
    try:
        report = run_worker(
            conn.launchpad,
            category=args.category,
            max_launches=args.max,
            idle_timeout_s=args.idle_timeout,
            poll_s=args.poll,
            work_dir=args.work_dir,
            name=args.name,
        )
    finally:
        conn.close(stop_server=False)
    err_console.print(
        f"worker {report.name}: {report.launches} launches, stopped on {report.reason}"
    )
    return EXIT_OK


# ---------------------------------------------------------------- demo


def _worker_command(conn: Any, extra: Sequence[str]) -> list[str]:
    cmd = [sys.executable, "-m", "nft_fw", "worker"]
    if conn.kind == "embedded":
        cmd += ["--data-dir", conn.server.data_dir, "--db-name", conn.db_name]
    elif conn.source_file:
        cmd += ["--launchpad", conn.source_file, "--db-name", conn.db_name]
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
    """Placeholder main job: prove the stack (embedded server, a workflow, two real workers)."""
    from nft_fw.launchpad.connection import connect
    from nft_fw.workflows.smoke import expected_total, smoke_workflow

    data_dir = Path(args.data_dir or ".nft-fw-demo").resolve()
    t0 = time.monotonic()
    with connect(
        data_dir=data_dir, db_name="nft_fw_smoke", fw_log_level=_fw_stream_level(args)
    ) as conn:
        console.print(f"database: {conn.description}")
        conn.launchpad.reset("", require_password=False)
        n_leaves = 12
        wf = smoke_workflow(n_leaves=n_leaves, n_added=4, name="stack-check")
        conn.launchpad.add_wf(wf)
        procs = spawn_workers(conn, args.workers, data_dir / "runs", ["--idle-timeout", "5"])
        for proc in procs:
            proc.wait()
        lp = conn.launchpad
        states: dict[str, int] = {}
        for doc in lp.fireworks.find({}, {"state": 1}):
            states[doc["state"]] = states.get(doc["state"], 0) + 1
        total_doc = lp.launches.find_one(
            {
                "action.stored_data.sum": {"$exists": True},
                "fw_id": {"$in": lp.get_fw_ids({"name": "total"})},
            }
        )
        result = total_doc["action"]["stored_data"]["sum"] if total_doc else None
        hosts = sorted({d["fworker"]["name"] for d in lp.launches.find({}, {"fworker.name": 1})})
    table = Table(title="stack check: workflow result")
    table.add_column("quantity")
    table.add_column("value")
    table.add_row("Fireworks by state", ", ".join(f"{k}: {v}" for k, v in sorted(states.items())))
    table.add_row("workers that ran Fireworks", ", ".join(hosts))
    table.add_row("final sum (expected)", f"{result} ({expected_total(n_leaves)})")
    table.add_row("wall time", f"{time.monotonic() - t0:.1f} s")
    console.print(table)
    ok = result == expected_total(n_leaves) and set(states) == {"COMPLETED"}
    return EXIT_OK if ok else EXIT_FAILURE


# ---------------------------------------------------------------- parser


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
        return _add_parser(name, parents=[common], **kwargs)

    sub.add_parser = add  # type: ignore[method-assign]

    db = _add_parser("db", help="the embedded database server")
    db_sub = db.add_subparsers(dest="db_command", required=True)
    _add_db_parser = db_sub.add_parser

    def add_db(name: str, **kwargs: Any) -> argparse.ArgumentParser:
        return _add_db_parser(name, parents=[common], **kwargs)

    db_sub.add_parser = add_db  # type: ignore[method-assign]
    p = db_sub.add_parser("start", help="start the embedded server (or report the running one)")
    p.add_argument("--data-dir", metavar="DIR")
    p.add_argument("--db-name", metavar="NAME")
    p.add_argument(
        "--host", default="127.0.0.1", help="interface to listen on (default loopback only)"
    )
    p.add_argument("--port", type=int, help="port (default: a free one)")
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
        help="only Fireworks with this _category (label, train, dft, …); default any",
    )
    p.add_argument("--max", type=int, metavar="N", help="stop after N launches")
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

    p = sub.add_parser(
        "demo", help="the main job (currently: a stack check with two local workers)"
    )
    p.add_argument(
        "--data-dir", metavar="DIR", help="embedded server data directory (default ./.nft-fw-demo)"
    )
    p.add_argument("--workers", type=int, default=2)
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
