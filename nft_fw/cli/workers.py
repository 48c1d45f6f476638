"""``nft-fw worker`` and ``nft-fw recover``: running Fireworks, and re-queueing lost runs."""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from nft_fw.cli.common import (
    EXIT_FAILURE,
    EXIT_OK,
    UsageError,
    _add_connection_options,
    _open,
    console,
    err_console,
)

# ---------------------------------------------------------------- worker


def cmd_worker(args: argparse.Namespace) -> int:
    from nft_fw.parents import parallel
    from nft_fw.parents.parent import get_parent

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
    # the campaign tasks' modules (JAX, Flax, ASE) before the first poll, not at the first
    # check-out: FireWorks reads a READY Firework's tasks while reserving it, so 32 workers
    # that see the campaign's first Firework at once would all import them then, and the
    # first check-out waited 14 s instead of 0.1 s (bench/load_workers.py --standing)
    import nft_fw.firetasks.nft  # noqa: F401
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
            lock_takeover_s=args.lock_takeover,
            until_done=args.until_done,
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
    not pinged the database for ``--lost-after`` seconds, RESERVED ones whose check-out was
    cut off before FireWorks wrote their launch (or after: a RESERVED Firework whose RUNNING
    launch stopped pinging), and Fireworks that fizzled because
    the database connection was lost in FireWorks' own bookkeeping (not in their task); bring
    up to date workflows whose update a lost connection cut off (locked, a completed run
    whose Firework still shows RUNNING, children left WAITING on completed parents,
    appended Fireworks the workflow never got)."""
    conn = _open(args, start_embedded=False)
    try:
        out = _recover(conn, args)
    except KeyError as err:
        raise UsageError(err.args[0]) from err
    finally:
        conn.close(stop_server=False)
    _print_recovery(args, out)
    return EXIT_OK


def _recover(conn: Any, args: argparse.Namespace) -> dict[str, Any]:
    """Run every repair of ``nft-fw recover`` in order; what each found, by JSON key."""
    query = {"spec.campaign": args.name} if args.name else None
    if args.name:
        from nft_fw.launchpad import records

        records.get_campaign(conn.launchpad.db, args.name)
    from nft_fw.launchpad.worker import (
        fizzled_by_lost_database,
        refresh_stuck_waiting,
        release_stale_locks,
        repair_orphans,
        requeue_cut_off_checkouts,
        rerun_lost_runs,
    )

    unlocked = release_stale_locks(conn.launchpad, query, dry_run=args.dry_run)
    # before lost runs: an orphan a worker checked out looks like one, and FireWorks
    # cannot rerun a Firework that no workflow lists
    orphans, appenders = repair_orphans(conn.launchpad, query, dry_run=args.dry_run)
    unstarted = requeue_cut_off_checkouts(
        conn.launchpad, query, older_than_s=args.lost_after, dry_run=args.dry_run
    )
    lost_launches, lost_fws, inconsistent = rerun_lost_runs(
        conn.launchpad, args.lost_after, query, dry_run=args.dry_run
    )

    cut_off = fizzled_by_lost_database(conn.launchpad, query)
    for fw_id in [] if args.dry_run else cut_off:
        conn.launchpad.rerun_fw(fw_id)
    stuck = refresh_stuck_waiting(conn.launchpad, query, dry_run=args.dry_run)
    return {
        "lost_fw_ids": sorted(lost_fws),
        "lost_launch_ids": sorted(lost_launches),
        "inconsistent_fw_ids": sorted(inconsistent),
        "database_fizzled_fw_ids": cut_off,
        "unlocked_workflow_fw_ids": unlocked,
        "stuck_waiting_fw_ids": stuck,
        "orphaned_fw_ids": orphans,
        "unstarted_checkout_fw_ids": unstarted,
        "rerun_appender_fw_ids": appenders,
        "requeued": not args.dry_run,
    }


def _print_recovery(args: argparse.Namespace, out: dict[str, Any]) -> None:
    """Print what ``nft-fw recover`` found and did (the JSON object with --json)."""
    if args.json:
        console.print_json(json.dumps(out))
    elif out["lost_fw_ids"]:
        verb = "found (dry run)" if args.dry_run else "re-queued"
        console.print(f"lost runs {verb}: Fireworks {', '.join(map(str, out['lost_fw_ids']))}")
    else:
        console.print(f"no run silent for more than {args.lost_after:g} s")

    def say(ids: Sequence[int], what: str, done: str, prefix: str = "Fireworks ") -> None:
        if ids and not args.json:
            verb = "found (dry run)" if args.dry_run else done
            console.print(f"{what}, {verb}: {prefix}{', '.join(map(str, ids))}")

    unlocked, inconsistent = out["unlocked_workflow_fw_ids"], out["inconsistent_fw_ids"]
    orphans, appenders = out["orphaned_fw_ids"], out["rerun_appender_fw_ids"]
    stuck, cut_off = out["stuck_waiting_fw_ids"], out["database_fizzled_fw_ids"]
    unstarted = out["unstarted_checkout_fw_ids"]
    say(unlocked, "workflows left locked by a lost connection", "unlocked")
    say(inconsistent, "runs that completed while their workflow was not updated",
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
    say(unstarted, "checked out but never started (a check-out cut off)", "re-queued")


def register(sub: Any) -> None:
    """Add ``worker`` and ``recover`` to the command parser ``sub``."""
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
        "--lock-takeover",
        type=float,
        default=60.0,
        metavar="S",
        help="take over a workflow lock one holder has held for S seconds (left by a process "
        "that lost the database while refreshing; a live refresh takes well under a second; "
        "default 60; "
        "FireWorks' rlaunch waits 300 s and then skips the update)",
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
        "--until-done",
        action="store_true",
        help="stop once no work can come any more: no Firework READY, RESERVED or RUNNING "
        "anywhere on the LaunchPad (what a batch job wants; combine with --idle-timeout for "
        "an upper bound on idle time)",
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
    p.set_defaults(func=cmd_worker, compiles=True)

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
