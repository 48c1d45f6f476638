"""The FireTasks of an NFT campaign: thin translators between Fireworks and
:mod:`nft_fw.launchpad.campaigns`.

Their import paths (``{{nft_fw.firetasks.nft.<Task>}}``) are stored in the database with
every Firework: never rename or move them. Every task needs the LaunchPad
(``_add_launchpad_and_fw_id`` in the Firework spec) because labels, models and records
live in the database, not in Firework outputs.
"""

from __future__ import annotations

import logging
import tempfile
import time
from pathlib import Path
from typing import Any, ClassVar

from fireworks import FiretaskBase, FWAction, explicit_serialize

from nft_fw.launchpad import campaigns, records

log = logging.getLogger(__name__)


DB_RETRY_S = 300.0  # how long a task keeps retrying when the database connection drops


class _CampaignTask(FiretaskBase):
    """Base of the campaign tasks: every task body is idempotent (labels are upserts under a
    unique key, records are replaced, next workflows are submitted once), so an operation cut
    off by a database restart reruns the whole body instead of fizzling the Firework."""

    def _run(self, fw_spec: dict[str, Any]) -> FWAction:
        raise NotImplementedError

    def run_task(self, fw_spec: dict[str, Any]) -> FWAction:
        from pymongo.errors import ConnectionFailure

        start, wait = time.monotonic(), 2.0
        while True:
            try:
                return self._run(fw_spec)
            except ConnectionFailure as err:
                if time.monotonic() - start > DB_RETRY_S:
                    raise
                log.warning(
                    "%s: database connection lost (%s); running the task again in %.0f s",
                    type(self).__name__,
                    type(err).__name__,
                    wait,
                )
                time.sleep(wait)
                wait = min(2 * wait, 30.0)

    def _db(self) -> Any:
        lp = getattr(self, "launchpad", None)
        if lp is None:
            raise RuntimeError(
                f"{type(self).__name__} has no LaunchPad: FireWorks gives none in offline mode "
                "(rlaunch singleshot --offline), nor to a Firework whose spec lacks "
                "_add_launchpad_and_fw_id: true. Only label Fireworks of a campaign submitted "
                "with service.offline_labels: true run offline; rerun this one on a worker "
                "that reaches the database (lpad rerun_fws -i FW_ID)"
            )
        return lp.db


@explicit_serialize
class InitTask(_CampaignTask):
    """Generate and store the initial structures, then submit round 0 (labels → train 0)."""

    required_params: ClassVar[list[str]] = ["campaign"]

    def _run(self, fw_spec: dict[str, Any]) -> FWAction:
        from nft_fw.workflows.campaign import submit_round

        name = self["campaign"]
        items = campaigns.initial_items(self._db(), name)
        fw_ids = submit_round(self.launchpad, name, "nft", 0, items)
        return FWAction(stored_data={"initial_structures": len(items), "round_fw_ids": fw_ids})


@explicit_serialize
class LabelTask(_CampaignTask):
    """Run the parent on each item (a chunk or an initial image) that has no label yet.

    With ``batch`` ({phase, round, index}: the online layout) the task reports its batch to
    the round record when it ends, whether its items were labelled or failed, and the last
    batch of the round submits the trainer. A batch whose parent failed still fizzles."""

    required_params: ClassVar[list[str]] = ["campaign", "items"]
    # parent ({name, params}): set with service.offline_labels, so the task can run offline
    optional_params: ClassVar[list[str]] = ["parent", "batch"]

    def _run(self, fw_spec: dict[str, Any]) -> FWAction:
        from pymongo.errors import ConnectionFailure

        name, items, fw_id = self["campaign"], list(self["items"]), getattr(self, "fw_id", None)
        if getattr(self, "launchpad", None) is None and self.get("parent"):
            # offline mode: no database; the labels travel in the FWAction
            docs = campaigns.label_offline(name, self["parent"], items, fw_id)
            return FWAction(
                stored_data={"new": len(docs), "existing": 0, campaigns.OFFLINE_LABELS_KEY: docs}
            )
        try:
            counts = campaigns.label_items(self._db(), name, items, fw_id)
        except ConnectionFailure:
            raise  # the whole body runs again (run_task)
        except Exception:
            self._batch_finished()  # the failures are recorded; the round goes on without them
            raise
        stored: dict[str, Any] = dict(counts)
        trainer = self._batch_finished()
        if trainer:
            stored["trainer_fw_ids"] = trainer
        return FWAction(stored_data=stored)

    def _batch_finished(self) -> list[int]:
        batch = self.get("batch")
        if not batch:
            return []
        from nft_fw.workflows.campaign import batch_finished

        return batch_finished(
            self.launchpad,
            self["campaign"],
            batch["phase"],
            int(batch["round"]),
            int(batch["index"]),
        )


@explicit_serialize
class TrainTask(_CampaignTask):
    """Train iteration ``iteration``, record it, and submit what comes next (once): the next
    round, or when NFT stops the relaxation phase or the finish (transfers, report)."""

    required_params: ClassVar[list[str]] = ["campaign", "iteration"]

    def _run(self, fw_spec: dict[str, Any]) -> FWAction:
        from nft_fw.workflows.campaign import submit_after_nft, submit_round

        name, k = self["campaign"], int(self["iteration"])
        out = campaigns.train(self._db(), name, k, getattr(self, "fw_id", None))
        summary = {
            "iteration": k,
            "structure_uncertainty": out.record["structure_uncertainty"],
            "decision": type(out.step).__name__,
        }
        if out.items:
            summary["next_round_fw_ids"] = submit_round(
                self.launchpad, name, "nft", k + 1, out.items
            )
            return FWAction(stored_data=summary)
        summary["stop_reason"] = getattr(out.step, "reason", None)
        summary["next_fw_ids"] = submit_after_nft(self.launchpad, name)
        return FWAction(stored_data=summary)


@explicit_serialize
class RelaxTask(_CampaignTask):
    """Relax round ``round``: retrain on the labels so far (round ≥ 1), relax the target,
    record, then submit (once) the next relax round (chunks from the trajectory) or, when
    retraining ends, the transfer relaxations and the report."""

    required_params: ClassVar[list[str]] = ["campaign", "round"]

    def _run(self, fw_spec: dict[str, Any]) -> FWAction:
        from nft_fw.launchpad import relaxation
        from nft_fw.workflows.campaign import submit_finish, submit_round

        name, r = self["campaign"], int(self["round"])
        out = relaxation.relax_round(self._db(), name, r, getattr(self, "fw_id", None))
        summary = {
            "round": r,
            "trajectory_max_uncertainty": out.record["structure_uncertainty"],
            "steps": out.record["n_steps"],
        }
        if out.stop is None:
            summary["next_round_fw_ids"] = submit_round(
                self.launchpad, name, "relax", r + 1, out.items
            )
            return FWAction(stored_data=summary)
        summary["stop_reason"] = out.stop.reason
        summary["next_fw_ids"] = submit_finish(self.launchpad, name)
        return FWAction(stored_data=summary)


@explicit_serialize
class TransferTask(_CampaignTask):
    """Relax transfer target ``index`` with the final model (no new data); when it is
    flagged and its ``retrain`` is set, submit the follow-up campaign that trains on it."""

    required_params: ClassVar[list[str]] = ["campaign", "index"]

    def _run(self, fw_spec: dict[str, Any]) -> FWAction:
        from nft_fw.launchpad import relaxation
        from nft_fw.workflows.campaign import init_workflow

        db, name, k = self._db(), self["campaign"], int(self["index"])
        record = relaxation.transfer(db, name, k, getattr(self, "fw_id", None))
        summary = {
            key: record[key]
            for key in ("name", "n_atoms", "n_steps", "structure_uncertainty", "flagged")
        }
        spec = campaigns.load_spec(db, name)
        if record["flagged"] and spec.transfer[k].retrain:
            child = relaxation.follow_up(db, name, k)
            if child is not None:
                self.launchpad.add_wf(init_workflow(child))
                summary["follow_up"] = child.name
        return FWAction(stored_data=summary)


@explicit_serialize
class ReportTask(_CampaignTask):
    """Write the campaign's summary and plots (PNG) into its record and GridFS."""

    required_params: ClassVar[list[str]] = ["campaign"]

    def _run(self, fw_spec: dict[str, Any]) -> FWAction:
        db = self._db()
        name = self["campaign"]
        with tempfile.TemporaryDirectory() as tmp:
            paths = campaigns.report(db, name, Path(tmp))
            files = {
                key: str(
                    records.put_bytes(db, Path(p).read_bytes(), f"{name}/report/{Path(p).name}")
                )
                for key, p in paths.items()
            }
        summary = campaigns.summary(db, name)
        records.update_campaign(db, name, state="completed", report_files=files, summary=summary)
        return FWAction(stored_data={"summary": summary})
