"""The FireTasks of a nearsightedness campaign: thin translators between Fireworks and
:mod:`nft_fw.firetasks.labels` (labels), the analysis of :mod:`nft_fw.steps.nearsightedness`
and its storage in :mod:`nft_fw.launchpad.nearsightedness`.

Their import paths (``{{nft_fw.firetasks.nearsightedness.<Task>}}``) are stored in the
database with every Firework: never rename or move them. Like the NFT tasks they need the
LaunchPad (``_add_launchpad_and_fw_id``), and a database connection cut off mid-task reruns
the whole (idempotent) body.
"""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path
from typing import Any, ClassVar

from fireworks import FWAction, explicit_serialize
from pymongo.database import Database

from nft_fw.firetasks import labels as label_tasks
from nft_fw.firetasks.nft import _CampaignTask
from nft_fw.launchpad import nearsightedness as ns
from nft_fw.report import nearsightedness as ns_report
from nft_fw.steps import nearsightedness as analysis

log = logging.getLogger(__name__)


def report(db: Database, name: str, directory: str | Path) -> dict[str, Path]:
    """The report of campaign ``name``'s labels stored so far, written to ``directory``
    (:func:`nft_fw.report.nearsightedness.write_report`)."""
    stored = ns.stored_labels(db, name)
    result, data = analysis.analyse_stored(stored)
    return ns_report.write_report(result, data, directory, stored.spec)


def store_report(db: Database, name: str, fw_id: int | None = None) -> dict[str, Any]:
    """Analyse the stored labels, keep the report's JSON, figure and page in GridFS and the
    summary in the campaign record (state ``completed``); returns the summary."""
    stored = ns.stored_labels(db, name)
    result, data = analysis.analyse_stored(stored)
    out = analysis.summary(data)
    with tempfile.TemporaryDirectory() as tmp:
        paths = ns_report.write_report(result, data, tmp, stored.spec)
        ns.store_report(db, name, paths, out, fw_id)
    rec = out["recommended_radius_A"]
    log.info(
        "campaign %s fw %s: nearsightedness of %s: recommended radius %s (tolerance %g eV/Å, "
        "reference %s), %d missing",
        name,
        fw_id,
        out["parent"],
        "none" if rec is None else f"{rec:g} Å",
        out["tolerance_eV_per_A"],
        out["reference"],
        out["missing"],
    )
    return out


@explicit_serialize
class NearsightednessLabelTask(_CampaignTask):
    """Label ``items`` (chunks ``{kind: chunk, centre, radius, hash}`` or the whole target
    ``{kind: full}``) with the campaign's parent into ``nft_ns_labels``; an item already
    labelled is skipped. Fizzles when an item fails every retry (it is recorded)."""

    required_params: ClassVar[list[str]] = ["campaign", "items"]

    def _run(self, fw_spec: dict[str, Any]) -> FWAction:
        counts = label_tasks.label_nearsightedness_items(
            self._db(), self["campaign"], list(self["items"]), getattr(self, "fw_id", None)
        )
        return FWAction(stored_data=counts)


@explicit_serialize
class NearsightednessReportTask(_CampaignTask):
    """Analyse the stored labels; keep the JSON, the PNG and the summary in the database."""

    required_params: ClassVar[list[str]] = ["campaign"]

    def _run(self, fw_spec: dict[str, Any]) -> FWAction:
        out = store_report(self._db(), self["campaign"], getattr(self, "fw_id", None))
        keys = ("recommended_radius_A", "reference", "tolerance_eV_per_A", "labels", "missing")
        return FWAction(stored_data={k: out[k] for k in keys})
