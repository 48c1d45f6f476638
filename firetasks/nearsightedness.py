"""The FireTasks of a nearsightedness campaign: thin translators between Fireworks and
:mod:`nft_fw.firetasks.labelling` (labels) and
:mod:`nft_fw.launchpad.nearsightedness` (the stored analysis).

Their import paths (``{{nft_fw.firetasks.nearsightedness.<Task>}}``) are stored in the
database with every Firework: never rename or move them. Like the NFT tasks they need the
LaunchPad (``_add_launchpad_and_fw_id``), and a database connection cut off mid-task reruns
the whole (idempotent) body.
"""

from __future__ import annotations

from typing import Any, ClassVar

from fireworks import FWAction, explicit_serialize

from nft_fw.firetasks import labelling
from nft_fw.firetasks.nft import _CampaignTask
from nft_fw.launchpad import nearsightedness as ns


@explicit_serialize
class NearsightednessLabelTask(_CampaignTask):
    """Label ``items`` (chunks ``{kind: chunk, centre, radius, hash}`` or the whole target
    ``{kind: full}``) with the campaign's parent into ``nft_ns_labels``; an item already
    labelled is skipped. Fizzles when an item fails every retry (it is recorded)."""

    required_params: ClassVar[list[str]] = ["campaign", "items"]

    def _run(self, fw_spec: dict[str, Any]) -> FWAction:
        counts = labelling.label_nearsightedness_items(
            self._db(), self["campaign"], list(self["items"]), getattr(self, "fw_id", None)
        )
        return FWAction(stored_data=counts)


@explicit_serialize
class NearsightednessReportTask(_CampaignTask):
    """Analyse the stored labels; keep the JSON, the PNG and the summary in the database."""

    required_params: ClassVar[list[str]] = ["campaign"]

    def _run(self, fw_spec: dict[str, Any]) -> FWAction:
        out = ns.store_report(self._db(), self["campaign"], getattr(self, "fw_id", None))
        keys = ("recommended_radius_A", "reference", "tolerance_eV_per_A", "labels", "missing")
        return FWAction(stored_data={k: out[k] for k in keys})
