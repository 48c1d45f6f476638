"""Submitting a campaign: register it (nft_fw.launchpad), shape its workflow with the
FireTasks that run it (nft_fw.workflows, nft_fw.firetasks) and add it to the queue; each
kind of campaign from one registry (:data:`KINDS`)."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

from fireworks import LaunchPad, Workflow
from pymongo.database import Database

from nft_fw.campaign import NEARSIGHTEDNESS, NearsightednessSpec, Prepared, PreparedNearsightedness
from nft_fw.firetasks.nearsightedness import NearsightednessLabelTask, NearsightednessReportTask
from nft_fw.firetasks.nft import TASKS
from nft_fw.launchpad import campaigns, queue
from nft_fw.launchpad import nearsightedness as ns_records
from nft_fw.workflows import campaign as nft_shapes
from nft_fw.workflows import nearsightedness as ns_shapes


@dataclasses.dataclass(frozen=True)
class Kind:
    """How a kind of campaign is submitted: its record (``register``, which refuses a name
    already taken before anything is written) and its workflow."""

    register: Callable[[Database, Any], None]
    workflow: Callable[[Any], Workflow]


KINDS: dict[str, Kind] = {
    "nft": Kind(
        register=campaigns.register,
        workflow=lambda prepared: nft_shapes.campaign_workflow(prepared.spec, TASKS),
    ),
    NEARSIGHTEDNESS: Kind(
        register=ns_records.register,
        workflow=lambda prepared: ns_shapes.workflow(
            prepared, NearsightednessLabelTask, NearsightednessReportTask
        ),
    ),
}


def kind_of(prepared: Prepared | PreparedNearsightedness) -> str:
    return NEARSIGHTEDNESS if isinstance(prepared.spec, NearsightednessSpec) else "nft"


def submit(lp: LaunchPad, prepared: Prepared | PreparedNearsightedness) -> list[int]:
    """Register a prepared campaign and add its workflow; returns the Firework ids. A name
    already taken raises CampaignExists before anything is written."""
    kind = KINDS[kind_of(prepared)]
    queue.ensure_initialised(lp)
    kind.register(lp.db, prepared)
    return queue.add_workflow(lp, kind.workflow(prepared))
