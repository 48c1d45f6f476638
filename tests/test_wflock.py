"""The owned workflow lock (nft_fw.launchpad.wflock): a queue of live holders is never taken
over, however long a waiter waits; a dead holder's lock is, after one owner held it for the
takeover time; a holder taken over writes nothing back and does not release the new
owner's lock. Against the real server, with FireWorks' own lock calls."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest


@pytest.fixture
def owned() -> Iterator[Any]:
    from nft_fw.launchpad import wflock

    wflock.install(1.0)
    yield wflock
    wflock.uninstall()


def _workflow(lp: Any) -> int:
    from nft_fw.firetasks.smoke import smoke_workflow

    lp.add_wf(smoke_workflow(1, 1))
    return int(lp.fireworks.find_one({"name": "root"})["fw_id"])


@pytest.mark.integration
def test_a_queue_of_live_holders_is_never_taken_over(
    connection: Any, owned: Any, caplog: Any
) -> None:
    """Six threads take the lock three times each and hold it 0.15 s: the last waits about
    2.5 s in all, over twice the takeover time (1 s), and FireWorks' own lock would have
    forced its way in; the owned lock keeps every hold exclusive and takes nothing over."""
    from fireworks.core.launchpad import WFLock

    lp = connection.launchpad
    fw_id = _workflow(lp)
    inside, overlaps, waits = [0], [0], []
    guard = threading.Lock()

    def hold() -> None:
        for _ in range(3):
            t0 = time.monotonic()
            with WFLock(lp, fw_id):
                waits.append(time.monotonic() - t0)
                with guard:
                    inside[0] += 1
                    overlaps[0] += inside[0] > 1
                time.sleep(0.15)
                with guard:
                    inside[0] -= 1

    caplog.set_level(logging.WARNING, logger="nft_fw.launchpad.wflock")
    threads = [threading.Thread(target=hold) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(waits) == 18 and max(waits) > 1.0  # waited past the takeover time
    assert overlaps[0] == 0
    assert "taken over" not in caplog.text
    doc = lp.workflows.find_one({"nodes": fw_id})
    assert not doc.get("locked") and owned.FIELD not in doc


@pytest.mark.integration
def test_a_dead_holders_lock_is_taken_over_and_the_holder_writes_nothing_back(
    connection: Any, owned: Any, caplog: Any
) -> None:
    from fireworks.core.launchpad import WFLock

    lp = connection.launchpad
    fw_id = _workflow(lp)
    # a holder that died inside its refresh: its lock and owner stay
    lp.workflows.update_one(
        {"nodes": fw_id}, {"$set": {"locked": True, owned.FIELD: {"by": "dead-process"}}}
    )
    caplog.set_level(logging.WARNING, logger="nft_fw.launchpad.wflock")
    t0 = time.monotonic()
    with WFLock(lp, fw_id):
        took = time.monotonic() - t0
        doc = lp.workflows.find_one({"nodes": fw_id})
        assert doc["locked"] and doc[owned.FIELD]["by"] != "dead-process"
    assert 1.0 < took < 10.0
    assert "held by dead-process for over 1 s: taken over" in caplog.text
    assert not lp.workflows.find_one({"nodes": fw_id}).get("locked")

    # a slow holder, taken over while it held the lock: its write-back is refused and its
    # release leaves the new owner's lock alone
    wf = lp.get_wf_by_fw_id_lzyfw(fw_id)
    slow = WFLock(lp, fw_id)
    slow.__enter__()
    lp.workflows.update_one({"nodes": fw_id}, {"$set": {owned.FIELD: {"by": "new-owner"}}})
    with pytest.raises(owned.LockLost, match="taken over"):
        lp._update_wf(wf, [fw_id])
    slow.__exit__(None, None, None)
    doc = lp.workflows.find_one({"nodes": fw_id})
    assert doc["locked"] and doc[owned.FIELD]["by"] == "new-owner"


@pytest.mark.integration
def test_a_refresh_keeps_its_owner_on_the_document_and_releases_it(
    connection: Any, owned: Any
) -> None:
    """FireWorks writes the workflow back whole (keeping only ``locked``): the owner is put
    back, so a waiter still sees who holds it, and the release clears both."""
    from fireworks.core.launchpad import WFLock

    lp = connection.launchpad
    fw_id = _workflow(lp)
    with WFLock(lp, fw_id):
        token = lp.workflows.find_one({"nodes": fw_id})[owned.FIELD]["by"]
        lp._update_wf(lp.get_wf_by_fw_id_lzyfw(fw_id), [fw_id])
        assert lp.workflows.find_one({"nodes": fw_id})[owned.FIELD]["by"] == token
    doc = lp.workflows.find_one({"nodes": fw_id})
    assert not doc.get("locked") and owned.FIELD not in doc
    lp._refresh_wf(fw_id)  # FireWorks' own refresh, through the owned lock
    assert lp.get_fw_by_id(fw_id).state == "READY"
