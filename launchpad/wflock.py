"""FireWorks' workflow lock with an owner, so that only a dead holder's lock is taken over.

FireWorks serialises the updates of one workflow with a flag on its document (``locked``,
``fireworks.core.launchpad.WFLock``): a process sets it, reads the workflow, refreshes it
and writes it back whole (``LaunchPad._update_wf`` replaces the document), then unsets it.
A waiter that has *waited* ``expire_secs`` takes the lock by force. Under load the wait
is a queue, not a dead holder: 32 workers completing labels of one 700-Firework workflow
on the embedded server each waited over a minute behind live holders, forced the lock
while another process was writing, and the two whole-document writes lost each other's
Firework states — the workflow document kept 30 finished labels RUNNING and the report
never became READY (bench/load_workers.py --octahedron 12 4, before this module).

Here each holder writes a random owner token beside the flag (``nft_lock``); a waiter takes
the lock over only after it has watched *the same owner* hold it for ``expire_secs`` (a
live refresh holds it for well under a second), so successive live holders never count as
one stuck lock. Waiters retry after 10 ms doubling to 1 s and look at the owner every 2 s
(FireWorks' own wait grows by 0.1 s per try, to seconds). A process
taken over — presumed dead — neither releases nor overwrites the new owner's lock: its
write-back is refused. Locks set by plain FireWorks processes (no owner) are watched the
same way, as one owner. :func:`install` puts this in the FireWorks of this process (every
``nft-fw worker`` does).
"""

from __future__ import annotations

import datetime
import logging
import random
import socket
import threading
import time
import uuid
from typing import Any

logger = logging.getLogger(__name__)

FIELD = "nft_lock"  # on a locked workflow document: {"by": token, "host": ..., "at": UTC}
# a waiter tries again after 10 ms, doubling to 1 s (times 1–2 at random), and reads who
# holds the lock every LOOK_S: about one operation per waiter-second, a freed lock taken
# within tens of milliseconds when many wait
FIRST_WAIT_S, MAX_WAIT_S, LOOK_S = 0.01, 1.0, 2.0
MISSING_S = 5.0  # a workflow document not found for this long is gone, not being replaced

_held = threading.local()  # the (fw_id, token) of the locks this thread holds, innermost last
_installed: dict[str, Any] = {}


class LockLost(RuntimeError):
    """This process's workflow lock was taken over while it held it (it was presumed dead):
    its write-back is refused, and the Firework's state is left for ``nft-fw recover``."""


def _stack() -> list[tuple[int, str]]:
    if not hasattr(_held, "stack"):
        _held.stack = []
    return _held.stack  # type: ignore[no-any-return]


def _owner(token: str) -> dict[str, Any]:
    return {"by": token, "host": socket.gethostname(), "at": datetime.datetime.now(datetime.UTC)}


def owner_of(doc: dict[str, Any] | None) -> str | None:
    """The owner token of a locked workflow document (None: unlocked, or a plain FireWorks
    holder that records none)."""
    if not doc or not doc.get("locked"):
        return None
    return (doc.get(FIELD) or {}).get("by")


def _enter(self: Any) -> None:
    lp, fw_id = self.lp, self.fw_id
    token = uuid.uuid4().hex
    watched: tuple[Any, float] | None = None  # (owner, since) of the lock as this waiter saw it
    missing_since: float | None = None
    next_look = 0.0
    wait = FIRST_WAIT_S
    while True:
        got = lp.workflows.find_one_and_update(
            {"nodes": fw_id, "locked": {"$exists": False}},
            {"$set": {"locked": True, FIELD: _owner(token)}},
        )
        if got is not None:
            break
        now = time.monotonic()
        if now >= next_look:  # who holds it: one read every LOOK_S, not at every try
            next_look = now + LOOK_S
            doc = lp.workflows.find_one({"nodes": fw_id}, {"locked": 1, FIELD: 1})
            if doc is None:
                # the embedded server answers nothing while a holder's write-back replaces
                # the document: only a workflow missing for MISSING_S is missing
                missing_since = missing_since or now
                if now - missing_since > MISSING_S:
                    raise ValueError(f"Could not find workflow in database: {fw_id}")
            elif not doc.get("locked"):
                missing_since, watched = None, None
                continue  # released in between: try again at once
            else:
                missing_since = None
                owner = owner_of(doc)
                if watched is None or watched[0] != owner:
                    watched = (owner, now)
                elif now - watched[1] > self.expire_secs and _take_over(self, owner, token):
                    break
        time.sleep(wait * (1.0 + random.random()))
        wait = min(2.0 * wait, MAX_WAIT_S)
    _stack().append((fw_id, token))


def _take_over(self: Any, owner: str | None, token: str) -> bool:
    """Take the lock ``owner`` has held too long (None: a holder that records no owner);
    False if it changed hands meanwhile."""
    if not self.kill:
        from fireworks.core.launchpad import LockedWorkflowError

        raise LockedWorkflowError(f"Could not get workflow - LOCKED: {self.fw_id}")
    held_by = {f"{FIELD}.by": owner} if owner else {f"{FIELD}.by": {"$exists": False}}
    got = self.lp.workflows.find_one_and_update(
        {"nodes": self.fw_id, "locked": True, **held_by},
        {"$set": {"locked": True, FIELD: _owner(token)}},
    )
    if got is None:
        return False
    logger.warning(
        "workflow of Firework %s: its lock was held by %s for over %.0f s: taken over (a "
        "holder that lost the database or died)",
        self.fw_id,
        owner or "a process without owner",
        self.expire_secs,
    )
    return True


def _exit(self: Any, exc_type: Any, exc_val: Any, exc_tb: Any) -> None:
    stack = _stack()
    token = stack.pop()[1] if stack else None
    workflows = self.lp.workflows
    if token is None:  # entered before install(): FireWorks' own release
        workflows.find_one_and_update({"nodes": self.fw_id}, {"$unset": {"locked": True}})
        return
    released = workflows.find_one_and_update(
        {"nodes": self.fw_id, f"{FIELD}.by": token}, {"$unset": {"locked": True, FIELD: True}}
    )
    if released is None:
        # taken over while this process held it (it was presumed dead): the lock is
        # someone else's now, unless a write-back dropped the owner field (see _update_wf)
        workflows.find_one_and_update(
            {"nodes": self.fw_id, "locked": True, FIELD: {"$exists": False}},
            {"$unset": {"locked": True}},
        )


def _update_wf(self: Any, wf: Any, updated_ids: Any) -> None:
    """FireWorks' write-back, refused to a holder whose lock was taken over, and keeping
    the owner on the document (FireWorks replaces the document whole, keeping only
    ``locked``)."""
    stack = _stack()
    if not stack:
        _installed["update_wf"](self, wf, updated_ids)
        return
    fw_id, token = stack[-1]
    if self.workflows.find_one({"nodes": fw_id, f"{FIELD}.by": token}, {"_id": 1}) is None:
        raise LockLost(
            f"workflow of Firework {fw_id}: this process's lock was taken over (it held it "
            "too long); its update is not written"
        )
    _installed["update_wf"](self, wf, updated_ids)
    self.workflows.update_one(
        {"nodes": fw_id, "locked": True, FIELD: {"$exists": False}},
        {"$set": {FIELD: _owner(token)}},
    )


def install(expire_s: float) -> None:
    """Make FireWorks' workflow lock in this process owned (this module) and taken over
    after one owner has held it ``expire_s`` seconds. Idempotent; the last ``expire_s``
    wins."""
    if expire_s <= 0:
        raise ValueError(f"lock takeover after {expire_s} s; it must be > 0")
    from fireworks.core import launchpad as fw_launchpad

    lock, pad = fw_launchpad.WFLock, fw_launchpad.LaunchPad
    if not _installed:
        _installed.update(
            enter=lock.__enter__,
            exit=lock.__exit__,
            update_wf=pad._update_wf,
            defaults=lock.__init__.__defaults__,
        )
        lock.__enter__ = _enter  # type: ignore[method-assign]
        lock.__exit__ = _exit  # type: ignore[method-assign]
        pad._update_wf = _update_wf  # type: ignore[method-assign]
    lock.__init__.__defaults__ = (expire_s, True)


def uninstall() -> None:
    """Give this process FireWorks' own lock back (for tests)."""
    if not _installed:
        return
    from fireworks.core import launchpad as fw_launchpad

    lock, pad = fw_launchpad.WFLock, fw_launchpad.LaunchPad
    lock.__enter__ = _installed["enter"]  # type: ignore[method-assign]
    lock.__exit__ = _installed["exit"]  # type: ignore[method-assign]
    pad._update_wf = _installed["update_wf"]  # type: ignore[method-assign]
    lock.__init__.__defaults__ = _installed["defaults"]
    _installed.clear()
