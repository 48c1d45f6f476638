"""A FireWorks worker loop: pull Fireworks of some categories and run them.

This is FireWorks' own ``launch_rocket`` in a loop that, unlike ``rapidfire``,
keeps polling while the queue is empty (NFT rounds are appended dynamically
by the trainer, so "nothing ready now" does not mean "finished") until an
idle timeout or a launch budget is reached. Plain ``rlaunch rapidfire`` works
against the same LaunchPad too, as many at once as wanted: reading an nft-fw Firework
imports :mod:`nft_fw.firetasks`, which makes the process's id draws safe on SecantusDB
(``nft_fw.launchpad.connection.install_id_draws``).
"""

from __future__ import annotations

import dataclasses
import datetime
import logging
import os
import re
import socket
import time
from pathlib import Path
from typing import Literal

from fireworks import FWorker, LaunchPad
from fireworks.core.rocket_launcher import launch_rocket
from fireworks.utilities.fw_utilities import create_datestamp_dir
from pymongo.errors import ConnectionFailure

from nft_fw.launchpad import wflock

logger = logging.getLogger(__name__)


@dataclasses.dataclass
class WorkerReport:
    """What one worker did before it stopped."""

    name: str
    launches: int
    reason: str  # "max launches" | "idle timeout"
    wall_s: float


class DatabaseLost(RuntimeError):
    """The database stayed unreachable for longer than the worker's ``db_wait_s``."""

    def __init__(self, seconds: float, error: Exception) -> None:
        super().__init__(f"unreachable for {seconds:.0f} s ({type(error).__name__})")
        self.seconds = seconds
        self.error = error


def _behind(err: BaseException, kinds: tuple[type[BaseException], ...]) -> BaseException | None:
    """The error of one of ``kinds`` behind ``err`` (itself, or what it was raised from or
    while handling: FireWorks' ``_refresh_wf`` turns every error into a RuntimeError), or
    None."""
    seen: set[int] = set()
    e: BaseException | None = err
    while e is not None and id(e) not in seen:
        if isinstance(e, kinds):
            return e
        seen.add(id(e))
        e = e.__cause__ or e.__context__
    return None


def _connection_failure(err: BaseException) -> ConnectionFailure | None:
    """The ConnectionFailure behind ``err`` (:func:`_behind`), or None."""
    found = _behind(err, (ConnectionFailure,))
    return found if isinstance(found, ConnectionFailure) else None


# the last line of a launch's stack trace when FireWorks' own database calls around a task
# (checkpoint, ping) lost the connection: the task itself retries its database work
_DB_ERRORS = (
    "pymongo.errors.AutoReconnect",
    "pymongo.errors.ConnectionFailure",
    "pymongo.errors.NetworkTimeout",
    "pymongo.errors.ServerSelectionTimeoutError",
)


def fizzled_by_lost_database(lp: LaunchPad, query: dict | None = None) -> list[int]:
    """Ids of FIZZLED Fireworks (matching ``query``) that failed on a lost database
    connection rather than in their task: the last launch's trace ends in a connection
    error, or the launch has no outcome at all (FireWorks marks a Firework FIZZLED when the
    refresh of its workflow fails, e.g. at check-out, before its task ran). Rerunning them
    is safe (every nft-fw task is idempotent) and FireWorks reruns what depends on them."""
    out = []
    for fw in lp.fireworks.find({**(query or {}), "state": "FIZZLED"}, {"fw_id": 1, "launches": 1}):
        if not fw.get("launches"):
            continue
        launch = lp.launches.find_one(
            {"launch_id": fw["launches"][-1]}, {"action.stored_data._exception._stacktrace": 1}
        )
        action = (launch or {}).get("action")
        if not action:
            out.append(fw["fw_id"])
            continue
        trace = action.get("stored_data", {}).get("_exception", {}).get("_stacktrace", "")
        last = trace.strip().splitlines()[-1] if trace.strip() else ""
        if last.startswith(_DB_ERRORS):
            out.append(fw["fw_id"])
    return sorted(out)


STALE_LOCK_S = 10.0
#: an nft-fw worker takes over a workflow lock it has waited this long for (FireWorks' own
#: default waits 300 s and then skips the update, "Can't refresh"): a live refresh takes well
#: under a second, so a lock held this long was left by a process that lost the database
#: while refreshing — possibly this one, inside FireWorks' own handling of the failure,
#: before the worker loop could release it
LOCK_TAKEOVER_S = 60.0


def take_over_locks_after(seconds: float) -> None:
    """Make FireWorks' workflow lock (``WFLock``) in this process owned, and taken over once
    one owner has held it ``seconds`` (:mod:`nft_fw.launchpad.wflock`; FireWorks' own lock
    is taken over by whoever has *waited* that long, which under load is a queue of live
    holders, not a dead one)."""
    wflock.install(seconds)


def release_stale_locks(
    lp: LaunchPad, query: dict | None = None, wait_s: float = STALE_LOCK_S, dry_run: bool = False
) -> list[int]:
    """Unlock workflows (of Fireworks matching ``query``) whose FireWorks lock outlives
    ``wait_s``: a worker that lost the database while refreshing a workflow cannot release
    its lock, and every later refresh of that workflow then waits for it. Returns the id of
    one Firework of each workflow released."""
    fw_ids = None if query is None else [d["fw_id"] for d in lp.fireworks.find(query, {"fw_id": 1})]
    where: dict = {"locked": True}
    if fw_ids is not None:
        where["nodes"] = {"$in": fw_ids}
    end = time.monotonic() + wait_s
    shown = {"nodes": 1, "locked": 1, wflock.FIELD: 1}
    # (first node, owner) of each locked workflow: only a lock one owner held all along is
    # stale (under load one live holder follows another, and the flag never drops)
    locked = {
        d["_id"]: (d["nodes"][0], wflock.owner_of(d)) for d in lp.workflows.find(where, shown)
    }
    while locked and time.monotonic() < end:
        time.sleep(0.5)  # a live refresh holds the lock for well under a second
        now = {d["_id"]: wflock.owner_of(d) for d in lp.workflows.find(where, shown)}
        locked = {k: v for k, v in locked.items() if k in now and now[k] == v[1]}
    for wf_id, (fw_id, owner) in locked.items():
        held_by = {f"{wflock.FIELD}.by": owner if owner else {"$exists": False}}
        if not dry_run:
            lp.workflows.update_one(
                {"_id": wf_id, "locked": True, **held_by},
                {"$unset": {"locked": True, wflock.FIELD: True}},
            )
        logger.warning(
            "workflow of Firework %s was locked for over %.0f s: released", fw_id, wait_s
        )
    return sorted(fw_id for fw_id, _ in locked.values())


def refresh_stuck_waiting(
    lp: LaunchPad, query: dict | None = None, dry_run: bool = False
) -> list[int]:
    """Ids of WAITING Fireworks (matching ``query``) whose parents have all COMPLETED (or
    ended, for one that allows fizzled parents): the workflow refresh that should have made
    them READY was cut off (the database went away while FireWorks wrote the workflow back). Refreshing each of them in its workflow makes it
    READY; nothing runs twice."""
    where: dict = {"state": "WAITING"}
    if query is not None:
        where.update(query)
    waiting = {
        d["fw_id"]: ("COMPLETED", "FIZZLED")
        if d.get("spec", {}).get("_allow_fizzled_parents")
        else ("COMPLETED",)
        for d in lp.fireworks.find(where, {"fw_id": 1, "spec._allow_fizzled_parents": 1})
    }
    if not waiting:
        return []
    stuck: set[int] = set()
    for wf in lp.workflows.find({"nodes": {"$in": sorted(waiting)}}, {"links": 1, "nodes": 1}):
        parents: dict[int, list[int]] = {}
        for parent, children in wf["links"].items():
            for child in children:
                parents.setdefault(int(child), []).append(int(parent))
        ids = {p for ps in parents.values() for p in ps}
        states = {d["fw_id"]: d["state"] for d in lp.fireworks.find(
            {"fw_id": {"$in": sorted(ids)}}, {"fw_id": 1, "state": 1})}  # fmt: skip
        for child in set(wf["nodes"]) & waiting.keys():
            ps = parents.get(child, [])
            if ps and all(states.get(p) in waiting[child] for p in ps):
                stuck.add(child)
    for child in sorted(stuck):
        if not dry_run:
            lp._refresh_wf(child)  # recomputes its state from its (completed) parents
        logger.warning("Firework %s waited on completed parents: workflow refreshed", child)
    return sorted(stuck)


def requeue_cut_off_checkouts(
    lp: LaunchPad, query: dict | None = None, older_than_s: float = 60.0, dry_run: bool = False
) -> list[int]:
    """Ids of RESERVED Fireworks (matching ``query``) that no launch holds: FireWorks checks
    a Firework out by marking it RESERVED first and writing its launch after, so a database
    outage between the two leaves a Firework that no process runs, that no worker takes and
    that no launch ping can show lost. Those reserved longer than ``older_than_s`` ago (a
    live check-out writes its launch within milliseconds) are rerun: made READY again.
    Reservations of FireWorks' queue mode (``qlaunch -r``) hold a RESERVED launch and are
    left alone (``lpad detect_unreserved`` is their tool)."""
    where: dict = {"state": "RESERVED"}
    if query is not None:
        where.update(query)
    cutoff = datetime.datetime.now(datetime.UTC) - datetime.timedelta(seconds=older_than_s)
    found = []
    for d in lp.fireworks.find(where, {"fw_id": 1, "updated_on": 1}):
        updated = d.get("updated_on")
        if isinstance(updated, str):
            updated = datetime.datetime.fromisoformat(updated)
        if updated is not None and updated.tzinfo is None:
            updated = updated.replace(tzinfo=datetime.UTC)
        if updated is None or updated > cutoff:
            continue
        held = lp.launches.count_documents(
            {"fw_id": d["fw_id"], "state": {"$in": ["RESERVED", "RUNNING"]}}, limit=1
        )
        if not held:
            found.append(int(d["fw_id"]))
    for fw_id in [] if dry_run else found:
        lp.rerun_fw(fw_id)
        logger.warning(
            "Firework %s was RESERVED with no launch (a check-out cut off): re-queued", fw_id
        )
    return sorted(found)


def rerun_lost_runs(
    lp: LaunchPad, older_than_s: float, query: dict | None = None, dry_run: bool = False
) -> tuple[list[int], list[int], list[int]]:
    """Lost runs (RUNNING Fireworks matching ``query`` whose every launch has not pinged for
    ``older_than_s``) made READY again, as ``lpad detect_lostruns --rerun`` would, but in the
    other order. FireWorks marks each lost launch FIZZLED first, which refreshes the
    workflow: the Firework turns FIZZLED, and its children that allow fizzled parents (a
    round's trainer, the report) turn READY until the rerun a moment later — a waiting
    trainer worker then trains the round without the lost label (seen under a real SLURM:
    a label job on a node taken down). Here the Firework is rerun first (its launches
    archived, its children still WAITING), and only then is the archived launch marked
    FIZZLED, which no workflow reads any more. Returns (lost launch ids, lost Firework ids,
    inconsistent Firework ids refreshed), as ``LaunchPad.detect_lostruns``."""
    lost_launches, lost_fws, inconsistent = lp.detect_lostruns(
        expiration_secs=older_than_s, rerun=False, fizzle=False, refresh=not dry_run, query=query
    )
    # a check-out cut off after FireWorks wrote the launch (RUNNING) but before the Firework
    # turned RUNNING: FireWorks counts the launch lost, not its Firework, which would stay
    # RESERVED with no live launch and never run
    lost_fws = list(lost_fws)
    for launch in lp.launches.find({"launch_id": {"$in": list(lost_launches)}}, {"fw_id": 1}):
        fw_id = int(launch["fw_id"])
        if fw_id not in lost_fws and lp.fireworks.count_documents(
            {"fw_id": fw_id, "state": "RESERVED"}, limit=1
        ):
            lost_fws.append(fw_id)
    if dry_run:
        return list(lost_launches), lost_fws, list(inconsistent)
    for fw_id in lost_fws:
        lp.rerun_fw(fw_id)
        logger.warning("Firework %s: its run is lost (no ping for %.0f s): re-queued", fw_id,
                       older_than_s)  # fmt: skip
    for launch_id in lost_launches:
        lp.mark_fizzled(launch_id)
        if lp.offline_runs.count_documents({"launch_id": launch_id, "deprecated": False}):
            lp.forget_offline(launch_id, launch_mode=True)  # as FireWorks does for offline runs
    return list(lost_launches), list(lost_fws), list(inconsistent)


ORPHAN = re.compile(r"Could not find workflow in database: (\d+)")


def _orphans(lp: LaunchPad, query: dict | None) -> dict[int, dict]:
    """Fireworks (matching ``query``) that no workflow document lists, by id."""
    docs = {
        d["fw_id"]: d
        for d in lp.fireworks.find(
            query or {}, {"fw_id": 1, "state": 1, "launches": 1, "spec.nft_appended_by": 1}
        )
    }
    listed: set[int] = set()
    for wf in lp.workflows.find({"nodes": {"$in": sorted(docs)}}, {"nodes": 1}):
        listed.update(wf["nodes"])
    return {k: v for k, v in docs.items() if k not in listed}


def repair_orphans(
    lp: LaunchPad, query: dict | None = None, dry_run: bool = False, wait_s: float = 2.0
) -> tuple[list[int], list[int]]:
    """Fireworks that no workflow lists: FireWorks writes appended Fireworks first and the
    workflow document after them, so a database outage between the two leaves Fireworks
    that cannot run (a worker that checks one out fails in its workflow refresh) while the
    workflow never got them. A live append fills that gap in milliseconds with its workflow
    locked, so only Fireworks still unlisted after ``wait_s`` with their appender's workflow
    unlocked count. They are deleted with their launches (they never ran a task), and the
    Firework that appended them (``spec.nft_appended_by``) is rerun: it appends them again
    (its task is idempotent). Returns (orphan ids, rerun appender ids)."""
    first = _orphans(lp, query)
    if not first:
        return [], []
    time.sleep(wait_s)
    still = _orphans(lp, query)
    orphans = {k: v for k, v in still.items() if k in first}
    appenders = {
        int(by)
        for d in orphans.values()
        if (by := d.get("spec", {}).get("nft_appended_by")) is not None
    }
    for by in sorted(appenders):
        wf = lp.workflows.find_one({"nodes": by}, {"locked": 1})
        if wf is None or wf.get("locked"):  # an update in progress, or itself unlisted
            appenders.discard(by)
            orphans = {
                k: v for k, v in orphans.items() if v.get("spec", {}).get("nft_appended_by") != by
            }
    if not dry_run and orphans:
        ids = sorted(orphans)
        lp.launches.delete_many({"fw_id": {"$in": ids}})
        lp.fireworks.delete_many({"fw_id": {"$in": ids}})
        for by in sorted(appenders):
            lp.rerun_fw(by)
        logger.warning(
            "Fireworks %s were in no workflow (an append cut off by a lost database): deleted; "
            "Fireworks %s that appended them rerun",
            ids,
            sorted(appenders),
        )
    return sorted(orphans), sorted(appenders)


# states in which a Firework can still change without anyone's action: READY (a worker may
# run it), RESERVED and RUNNING (it may complete, unlock its children or append work)
MOVING = ("READY", "RESERVED", "RUNNING")


def work_can_come(lp: LaunchPad) -> bool:
    """Whether anything in the LaunchPad can still move by itself: a Firework READY, RESERVED
    or RUNNING, or a workflow under FireWorks' refresh lock (a completion whose children are
    being unlocked). When nothing is, no Firework becomes runnable until someone acts (a new
    submission, ``lpad rerun_fws``, a reignite): what ``run_worker(until_done=True)`` stops
    on. A READY Firework of a category no worker serves counts as work that can come: a
    label worker waits for the trainer that will append its labels."""
    if lp.fireworks.count_documents({"state": {"$in": list(MOVING)}}, limit=1):
        return True
    return bool(lp.workflows.count_documents({"locked": True}, limit=1))


def make_fworker(category: str | list[str] | None = None, name: str | None = None) -> FWorker:
    """An FWorker for ``category`` (None or "" takes Fireworks of any category)."""
    name = name or f"{socket.gethostname()}-{os.getpid()}"
    return FWorker(name=name, category=category or "")


def run_worker(
    lp: LaunchPad,
    *,
    category: str | list[str] | None = None,
    max_launches: int | None = None,
    idle_timeout_s: float | None = None,
    poll_s: float = 1.0,
    work_dir: str | os.PathLike[str] | None = None,
    name: str | None = None,
    ping_s: float | None = None,
    db_wait_s: float = 300.0,
    fworker: FWorker | None = None,
    lock_takeover_s: float = LOCK_TAKEOVER_S,
    until_done: bool = False,
) -> WorkerReport:
    """Run Fireworks until ``max_launches`` ran, nothing was runnable for ``idle_timeout_s``,
    or (``until_done``) no work can come any more (:func:`work_can_come` false at two
    successive polls: what a batch job wants, instead of guessing an idle timeout).

    ``idle_timeout_s=None`` polls forever (a service worker); each launch runs in
    its own ``launcher_*`` directory under ``work_dir`` (default: cwd). ``ping_s``: how often
    a running Firework tells the database it is alive (FireWorks' default: 3600 s); a run
    silent for longer than ``nft-fw recover --lost-after`` counts as lost. ``fworker``: a
    ready FWorker (from a ``my_fworker.yaml``) instead of ``category`` and ``name``.

    The database may go away (a restart, a network blip): pymongo waits up to its server
    selection timeout (30 s) for it on every operation, and the worker then keeps retrying
    with backoff; once it has been unreachable for ``db_wait_s`` seconds, DatabaseLost.
    A Firework running when the database went away is left to ``nft-fw recover``.
    ``lock_takeover_s``: a workflow lock
    waited on this long is taken over (:func:`take_over_locks_after`).
    """
    _set_ping_time(ping_s)
    _check_limits(max_launches, idle_timeout_s)
    if fworker is None:
        fworker = make_fworker(category, name)
    take_over_locks_after(lock_takeover_s)
    root = Path(work_dir or os.getcwd()).resolve()
    root.mkdir(parents=True, exist_ok=True)
    start = time.monotonic()
    logger.info(
        "worker %s started (category %r, dir %s)", fworker.name, fworker.category or "any", root
    )
    launches, reason = _poll_and_launch(
        lp, fworker, root, start, max_launches, idle_timeout_s, poll_s, db_wait_s, until_done
    )
    report = WorkerReport(fworker.name, launches, reason, time.monotonic() - start)
    logger.info("worker %s stopped after %d launches (%s)", report.name, launches, reason)
    return report


def _set_ping_time(ping_s: float | None) -> None:
    """Make a running Firework ping the database every ``ping_s`` s (None: FireWorks' own)."""
    if ping_s is not None:
        if ping_s <= 0:
            raise ValueError(f"ping_s is {ping_s}; it must be > 0 seconds")
        import fireworks.core.rocket as rocket

        rocket.PING_TIME_SECS = ping_s  # read by the rocket's ping thread at each wait


def _check_limits(max_launches: int | None, idle_timeout_s: float | None) -> None:
    """Refuse a launch budget below 1 or a negative idle timeout."""
    if max_launches is not None and max_launches < 1:
        raise ValueError(
            f"max_launches is {max_launches}; it must be at least 1 (or None for no limit)"
        )
    if idle_timeout_s is not None and idle_timeout_s < 0:
        raise ValueError(
            f"idle_timeout_s is {idle_timeout_s}; it must be >= 0 (or None to wait forever)"
        )


def _poll_and_launch(
    lp: LaunchPad,
    fworker: FWorker,
    root: Path,
    started: float,
    max_launches: int | None,
    idle_timeout_s: float | None,
    poll_s: float,
    db_wait_s: float,
    until_done: bool,
) -> tuple[int, str]:
    """The worker loop of :func:`run_worker`: (launches, the reason it stopped)."""
    last_work = started
    launches = 0
    down_since: float | None = None
    backoff = 1.0
    ran = False
    quiet_polls = 0  # successive polls at which no work could come (until_done)
    # set when the database went away inside a launch: this process may have been holding
    # its workflow's FireWorks lock, which it could not release
    lost_in_launch = False
    while True:
        asked = time.monotonic()
        try:
            # after a launch, try the next checkout at once: asking first costs one more
            # scan of the READY Fireworks per launch (1,000-Firework round, 4 workers:
            # 2.47 -> 2.68 labels/s; bench/round_fanout.py --labels-only)
            runnable = ran or lp.run_exists(fworker)
            if until_done:  # successive looks only: a launch in between starts over
                quiet_polls = 0 if runnable or work_can_come(lp) else quiet_polls + 1
        except ConnectionFailure as err:
            down_since = down_since or asked
            backoff = _wait_for_database(fworker.name, down_since, backoff, db_wait_s, err)
            continue
        down_since, backoff = None, 1.0
        if lost_in_launch:
            if not _release_locks_left_behind(lp):
                continue
            lost_in_launch = False
        if runnable:
            launcher_dir = create_datestamp_dir(str(root), logger, prefix="launcher_")
            outcome = _launch_in(lp, fworker, launcher_dir)
            ran = outcome == "ran"
            if outcome == "orphan":
                continue
            lost_in_launch = outcome == "lost"
            if ran:
                launches += 1
                last_work = time.monotonic()
            elif not os.listdir(launcher_dir):
                os.rmdir(launcher_dir)  # another worker claimed it first
            if max_launches is not None and launches >= max_launches:
                return launches, "max launches"
            continue
        if idle_timeout_s is not None and time.monotonic() - last_work >= idle_timeout_s:
            return launches, "idle timeout"
        if quiet_polls >= 2:  # two looks a poll apart: no completion in between
            return launches, "no work can come"
        time.sleep(poll_s)


def _wait_for_database(
    name: str, down_since: float, backoff: float, db_wait_s: float, err: ConnectionFailure
) -> float:
    """Sleep ``backoff`` s before asking an unreachable database again; the next backoff."""
    now = time.monotonic()
    if now - down_since >= db_wait_s:
        raise DatabaseLost(now - down_since, err) from None
    logger.warning(
        "worker %s: database unreachable (%.0f s so far), retrying in %.0f s",
        name,
        now - down_since,
        backoff,
    )
    time.sleep(backoff)
    return min(2 * backoff, 30.0)


def _release_locks_left_behind(lp: LaunchPad) -> bool:
    """Release workflow locks a launch cut off by the database left; False if it is away."""
    try:
        # a lock held for STALE_LOCK_S is no live refresh (those take well under a
        # second): release it, or every worker of the campaign waits FireWorks'
        # 5 minutes for it at each check-out and check-in
        release_stale_locks(lp, None, wait_s=STALE_LOCK_S)
    except ConnectionFailure:
        return False
    return True


# what came of one launch attempt: a Firework ran (completed or fizzled); none was checked out
# (another worker took it first); the database went away in FireWorks' bookkeeping; or the
# Firework checked out is in no workflow
_LaunchOutcome = Literal["ran", "none", "lost", "orphan"]


def _launch_in(lp: LaunchPad, fworker: FWorker, launcher_dir: str) -> _LaunchOutcome:
    """Run one Firework in ``launcher_dir``: "ran", "none", "lost" or "orphan" (see above)."""
    cwd = os.getcwd()
    os.chdir(launcher_dir)
    try:
        return "ran" if launch_rocket(lp, fworker) else "none"
    except (ConnectionFailure, RuntimeError) as err:
        # the database went away inside FireWorks' own bookkeeping (checkout, launch
        # record, workflow refresh, which re-raises it as a RuntimeError): a Firework
        # it had checked out is re-queued by nft-fw recover; the next poll waits for
        # the database like any other outage
        lost = _behind(err, (ConnectionFailure, wflock.LockLost))
        orphan = ORPHAN.search(str(err)) if isinstance(err, RuntimeError) else None
        if lost is None and orphan is not None:
            # checked out a Firework no workflow lists (an append cut off by a
            # database outage): it cannot run; nft-fw recover deletes it and reruns
            # the Firework that appended it
            logger.warning(
                "worker %s: Firework %s is in no workflow (an append cut off by a "
                "lost database); run nft-fw recover to append it again",
                fworker.name,
                orphan.group(1),
            )
            return "orphan"
        if lost is None:
            raise
        logger.warning(
            "worker %s: %s during a launch (%s)",
            fworker.name,
            "workflow lock taken over"
            if isinstance(lost, wflock.LockLost)
            else "database connection lost",
            type(lost).__name__,
        )
        return "lost"
    finally:
        os.chdir(cwd)
