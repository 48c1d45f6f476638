"""Submitting a campaign: register it (nft_fw.launchpad), shape its workflow with the
FireTasks that run it (nft_fw.workflows, nft_fw.firetasks) and add it to the queue, as its
kind says (:data:`nft_fw.firetasks.kinds.KINDS`)."""

from __future__ import annotations

from fireworks import LaunchPad

from nft_fw.firetasks import kinds
from nft_fw.launchpad import queue
from nft_fw.spec.campaign import Prepared, PreparedNearsightedness


def submit(lp: LaunchPad, prepared: Prepared | PreparedNearsightedness) -> list[int]:
    """Register a prepared campaign and add its workflow; returns the Firework ids. A name
    already taken raises CampaignExists before anything is written."""
    kind = kinds.of_prepared(prepared)
    queue.ensure_initialised(lp)
    kind.register(lp.db, prepared)
    return queue.add_workflow(lp, kind.workflow(prepared))
