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
import logging
import os
import socket
import time
from pathlib import Path

from fireworks import FWorker, LaunchPad
from fireworks.core.rocket_launcher import launch_rocket
from fireworks.utilities.fw_utilities import create_datestamp_dir
from pymongo.errors import ConnectionFailure

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
) -> WorkerReport:
    """Run Fireworks until ``max_launches`` ran or nothing was runnable for ``idle_timeout_s``.

    ``idle_timeout_s=None`` polls forever (a service worker); each launch runs in
    its own ``launcher_*`` directory under ``work_dir`` (default: cwd). ``ping_s``: how often
    a running Firework tells the database it is alive (FireWorks' default: 3600 s); a run
    silent for longer than ``nft-fw recover --lost-after`` counts as lost. ``fworker``: a
    ready FWorker (from a ``my_fworker.yaml``) instead of ``category`` and ``name``.

    The database may go away (a restart, a network blip): pymongo waits up to its server
    selection timeout (30 s) for it on every operation, and the worker then keeps retrying
    with backoff; once it has been unreachable for ``db_wait_s`` seconds, DatabaseLost.
    A Firework running when the database went away is left to ``nft-fw recover``.
    """
    if ping_s is not None:
        if ping_s <= 0:
            raise ValueError(f"ping_s is {ping_s}; it must be > 0 seconds")
        import fireworks.core.rocket as rocket

        rocket.PING_TIME_SECS = ping_s  # read by the rocket's ping thread at each wait
    if max_launches is not None and max_launches < 1:
        raise ValueError(
            f"max_launches is {max_launches}; it must be at least 1 (or None for no limit)"
        )
    if idle_timeout_s is not None and idle_timeout_s < 0:
        raise ValueError(
            f"idle_timeout_s is {idle_timeout_s}; it must be >= 0 (or None to wait forever)"
        )
    if fworker is None:
        fworker = make_fworker(category, name)
    root = Path(work_dir or os.getcwd()).resolve()
    root.mkdir(parents=True, exist_ok=True)
    start = last_work = time.monotonic()
    launches = 0
    logger.info(
        "worker %s started (category %r, dir %s)", fworker.name, fworker.category or "any", root
    )
    down_since: float | None = None
    backoff = 1.0
    ran = False
    while True:
        asked = time.monotonic()
        try:
            # after a launch, try the next checkout at once: asking first costs one more
            # scan of the READY Fireworks per launch (1,000-Firework round, 4 workers:
            # 2.47 -> 2.68 labels/s; bench/round_fanout.py --labels-only)
            runnable = ran or lp.run_exists(fworker)
        except ConnectionFailure as err:
            now = time.monotonic()
            down_since = down_since or asked
            if now - down_since >= db_wait_s:
                raise DatabaseLost(now - down_since, err) from None
            logger.warning(
                "worker %s: database unreachable (%.0f s so far), retrying in %.0f s",
                fworker.name,
                now - down_since,
                backoff,
            )
            time.sleep(backoff)
            backoff = min(2 * backoff, 30.0)
            continue
        down_since, backoff = None, 1.0
        if runnable:
            launcher_dir = create_datestamp_dir(str(root), logger, prefix="launcher_")
            cwd = os.getcwd()
            os.chdir(launcher_dir)
            try:
                ran = launch_rocket(lp, fworker)
            except ConnectionFailure as err:
                # the database went away inside FireWorks' own bookkeeping (checkout, launch
                # record): a Firework it had checked out is re-queued by nft-fw recover; the
                # next poll waits for the database like any other outage
                logger.warning(
                    "worker %s: database connection lost during a launch (%s)",
                    fworker.name,
                    type(err).__name__,
                )
                ran = False
            finally:
                os.chdir(cwd)
            if ran:
                launches += 1
                last_work = time.monotonic()
            elif not os.listdir(launcher_dir):
                os.rmdir(launcher_dir)  # another worker claimed it first
            if max_launches is not None and launches >= max_launches:
                reason = "max launches"
                break
            continue
        if idle_timeout_s is not None and time.monotonic() - last_work >= idle_timeout_s:
            reason = "idle timeout"
            break
        time.sleep(poll_s)
    report = WorkerReport(fworker.name, launches, reason, time.monotonic() - start)
    logger.info("worker %s stopped after %d launches (%s)", report.name, launches, reason)
    return report
