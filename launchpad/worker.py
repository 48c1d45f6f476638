"""A FireWorks worker loop: pull Fireworks of one category and run them.

This is FireWorks' own ``launch_rocket`` in a loop that, unlike ``rapidfire``,
keeps polling while the queue is empty (NFT rounds are appended dynamically
by the trainer, so "nothing ready now" does not mean "finished") until an
idle timeout or a launch budget is reached. Plain ``rlaunch rapidfire`` works
against the same LaunchPad too.
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

logger = logging.getLogger(__name__)


@dataclasses.dataclass
class WorkerReport:
    """What one worker did before it stopped."""

    name: str
    launches: int
    reason: str  # "max launches" | "idle timeout"
    wall_s: float


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
) -> WorkerReport:
    """Run Fireworks until ``max_launches`` ran or nothing was runnable for ``idle_timeout_s``.

    ``idle_timeout_s=None`` polls forever (a service worker); each launch runs in
    its own ``launcher_*`` directory under ``work_dir`` (default: cwd). ``ping_s``: how often
    a running Firework tells the database it is alive (FireWorks' default: 3600 s); a run
    silent for longer than ``nft-fw recover --lost-after`` counts as lost.
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
    fworker = make_fworker(category, name)
    root = Path(work_dir or os.getcwd()).resolve()
    root.mkdir(parents=True, exist_ok=True)
    start = last_work = time.monotonic()
    launches = 0
    logger.info(
        "worker %s started (category %r, dir %s)", fworker.name, fworker.category or "any", root
    )
    while True:
        if lp.run_exists(fworker):
            launcher_dir = create_datestamp_dir(str(root), logger, prefix="launcher_")
            cwd = os.getcwd()
            os.chdir(launcher_dir)
            try:
                ran = launch_rocket(lp, fworker)
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
