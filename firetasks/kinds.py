"""The kinds of campaign, in one registry: for each, how it is submitted (its record and its
workflow) and how what it stored is read back (its labels, its progress, its report). Every
command that treats kinds differently looks the kind up here (:func:`of_prepared`,
:func:`of_record`) instead of testing for one."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ase import Atoms
from fireworks import Workflow
from pymongo.database import Database

from nft_fw.firetasks import nearsightedness as ns_tasks
from nft_fw.firetasks.nearsightedness import NearsightednessLabelTask, NearsightednessReportTask
from nft_fw.firetasks.nft import TASKS
from nft_fw.launchpad import campaigns, labels, records, reports
from nft_fw.launchpad import nearsightedness as ns_records
from nft_fw.report import summary as nft_report
from nft_fw.spec.campaign import NEARSIGHTEDNESS, Prepared, PreparedNearsightedness
from nft_fw.spec.campaign import kind_of as prepared_kind
from nft_fw.workflows import campaign as nft_shapes
from nft_fw.workflows import nearsightedness as ns_shapes


@dataclasses.dataclass(frozen=True)
class Kind:
    """One kind of campaign.

    ``register`` writes its record (refusing a name already taken before anything is
    written) and ``workflow`` shapes its Fireworks; ``labels`` are its stored label
    documents, ``label_phase`` the phase a listing shows for one of them, ``frames`` all its
    labels as export frames (:mod:`nft_fw.labels.files`), ``progress`` what it has done so far
    beyond iteration records (None: it trains, and its iteration records say it),
    ``report`` writes its report files into a directory."""

    name: str
    register: Callable[[Database, Any], None]
    workflow: Callable[[Any], Workflow]
    labels: Callable[[Database, str], list[dict[str, Any]]]
    label_phase: Callable[[dict[str, Any]], str]
    frames: Callable[[Database, str], list[Atoms]]
    progress: Callable[[Database, str], dict[str, Any]] | None
    report: Callable[[Database, str, Path], dict[str, Path]]

    @property
    def trains(self) -> bool:
        """Does it train a model (iterations, a model to export), or only label?"""
        return self.progress is None


KINDS: dict[str, Kind] = {
    "nft": Kind(
        name="nft",
        register=campaigns.register,
        workflow=lambda prepared: nft_shapes.campaign_workflow(prepared.spec, TASKS),
        labels=records.labels,
        label_phase=labels.phase,
        frames=labels.frames,
        progress=None,
        report=lambda db, name, directory: nft_report.write(directory, reports.gather(db, name)),
    ),
    NEARSIGHTEDNESS: Kind(
        name=NEARSIGHTEDNESS,
        register=ns_records.register,
        workflow=lambda prepared: ns_shapes.workflow(
            prepared, NearsightednessLabelTask, NearsightednessReportTask
        ),
        labels=ns_records.labels,
        label_phase=lambda doc: NEARSIGHTEDNESS,
        frames=ns_records.frames,
        progress=ns_records.status,
        report=ns_tasks.report,
    ),
}


def of_prepared(prepared: Prepared | PreparedNearsightedness) -> Kind:
    """The kind of a prepared campaign file."""
    return KINDS[prepared_kind(prepared)]


def of_record(doc: dict[str, Any]) -> Kind:
    """The kind of a stored campaign (its ``nft_campaigns`` document)."""
    return KINDS[records.kind(doc)]


def of_campaign(db: Database, name: str) -> Kind:
    """The kind of the stored campaign ``name`` (KeyError naming it if there is none)."""
    return of_record(records.get_campaign(db, name))
