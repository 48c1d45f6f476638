"""The FireTasks of an NFT campaign — init, label, train, relax, transfer, MD segment and
report: thin translators between Fireworks and the phase bodies
(:mod:`nft_fw.firetasks.iteration`, :mod:`nft_fw.firetasks.labels`,
:mod:`nft_fw.firetasks.relax`, :mod:`nft_fw.firetasks.md`); the train, relax and MD tasks
share one body (load → step → store → ``FWAction``).

Their import paths (``{{nft_fw.firetasks.nft.<Task>}}``) are stored in the database with
every Firework: never rename or move them. Every task needs the LaunchPad
(``_add_launchpad_and_fw_id`` in the Firework spec) because labels, models and records
live in the database, not in Firework outputs. The init, train and relax tasks grow the
campaign's workflow by returning ``FWAction(detours=…)`` (see
:mod:`nft_fw.workflows.campaign`), once: a rerun finds what it appended before.
"""

from __future__ import annotations

import dataclasses
import logging
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar

from fireworks import FiretaskBase, FWAction, explicit_serialize
from pymongo.errors import ConnectionFailure

from nft_fw.firetasks import iteration as nft_tasks
from nft_fw.firetasks import labels as label_tasks
from nft_fw.firetasks import md as md_tasks
from nft_fw.firetasks import relax as relax_tasks
from nft_fw.labels.phase import Phase
from nft_fw.launchpad import campaigns, queue, records, reports
from nft_fw.launchpad import relax as relax_store
from nft_fw.report import summary as nft_report
from nft_fw.workflows import campaign as shapes

log = logging.getLogger(__name__)


DB_RETRY_S = 300.0  # how long a task keeps retrying when the database connection drops
TASK_SECONDS = "task_seconds"  # in every campaign task's stored_data


class _CampaignTask(FiretaskBase):
    """Base of the campaign tasks: every task body is idempotent (labels are upserts under a
    unique key, records are replaced, next workflows are submitted once), so an operation cut
    off by a database restart reruns the whole body instead of fizzling the Firework."""

    def _run(self, fw_spec: dict[str, Any]) -> FWAction:
        raise NotImplementedError

    def run_task(self, fw_spec: dict[str, Any]) -> FWAction:
        start, wait = time.monotonic(), 2.0
        while True:
            try:
                if getattr(self, "launchpad", None) is not None:
                    db = self._db()
                    doc = records.get_campaign(db, self["campaign"])
                    records.require_layout(doc)
                    campaigns.require_parent_hash(db, doc)
                action = self._run(fw_spec)
                # the task's own time: what a launch costs beyond it is the queue's
                # (bench/campaign_overhead.py)
                action.stored_data[TASK_SECONDS] = time.monotonic() - start
                return action
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

    def _append(self, build: Any, stored: dict[str, Any]) -> FWAction:
        """``FWAction(detours=[build()])`` the first time this Firework appends; a rerun
        whose appended Fireworks are in the workflow already appends nothing (FireWorks
        reruns them after this one). Fireworks it appended that never reached the workflow
        document (a completion cut off by a database outage) never ran: they are deleted and
        appended again."""
        kept = queue.appended_by(self.launchpad, getattr(self, "fw_id", None))
        if kept:
            stored["appended"] = kept
            return FWAction(stored_data=stored)
        wf = build()
        if wf is None:
            return FWAction(stored_data=stored)
        stored["appended"] = [fw.name for fw in wf.fws]
        return FWAction(stored_data=stored, detours=[wf])

    def _spec(self) -> Any:
        return campaigns.load_spec(self._db(), self["campaign"])

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
    """Generate and store the initial structures, then append round 0 (labels → train 0),
    and beside it the seed chunks' labels (``nft.seed_chunks``)."""

    required_params: ClassVar[list[str]] = ["campaign"]

    def _run(self, fw_spec: dict[str, Any]) -> FWAction:
        db, name = self._db(), self["campaign"]
        items = label_tasks.round_items(db, name, nft_tasks.initial_items(db, name))
        seeds = label_tasks.round_items(db, name, nft_tasks.seed_items(db, name))
        spec = self._spec()
        return self._append(
            lambda: shapes.first_round(spec, items, seeds, TASKS, self.fw_id),
            {"initial_structures": len(items), "seed_chunks": len(seeds)},
        )


@explicit_serialize
class LabelTask(_CampaignTask):
    """Run the parent on each item (a chunk or an initial image) that has no label yet.

    An item the parent cannot label is recorded and the Firework fizzles; the round's
    trainer (``_allow_fizzled_parents``) goes on without it."""

    required_params: ClassVar[list[str]] = ["campaign", "items"]
    # parent ({name, params}): set with service.offline_labels, so the task can run offline;
    # overlapping: set on the label Fireworks of overlapping NFT rounds (nft.rounds)
    optional_params: ClassVar[list[str]] = ["parent", "overlapping"]

    def _run(self, fw_spec: dict[str, Any]) -> FWAction:
        name, items, fw_id = self["campaign"], list(self["items"]), getattr(self, "fw_id", None)
        if getattr(self, "launchpad", None) is None and self.get("parent"):
            # offline mode: no database; the labels travel in the FWAction
            docs = label_tasks.label_offline(name, self["parent"], items, fw_id)
            return FWAction(
                stored_data={"new": len(docs), "existing": 0, campaigns.OFFLINE_LABELS_KEY: docs}
            )
        db = self._db()
        if not self.get("overlapping"):
            counts = label_tasks.label_items(db, name, items, fw_id)
            return FWAction(stored_data=dict(counts))
        spec = self._spec()
        # overlapping rounds: this Firework may be the arrival that starts the next trainer,
        # so it never fizzles (a failed chunk is recorded in nft_failures and as ended)
        stored: dict[str, Any] = {}
        try:
            stored.update(label_tasks.label_items(db, name, items, fw_id, record_arrivals=True))
        except label_tasks.LabelError as err:
            stored["errors"] = str(err)
        plan = nft_tasks.claim_start(db, name, fw_id)
        if plan is None:
            return FWAction(stored_data=stored)
        stored["started"] = plan["what"], plan["iteration"]
        return self._append(lambda: _overlap_start(spec, plan, fw_id), stored)


def _after_nft(spec: Any, fw_id: int | None) -> Any:
    """What follows the NFT phase: relax round 0, or what follows relaxation."""
    if spec.relax is not None:
        return shapes.relax_workflow(spec, TASKS, fw_id)
    return shapes.after_relaxation(spec, TASKS, fw_id)


def _overlap_start(spec: Any, plan: dict[str, Any], fw_id: int | None) -> Any:
    """What a claimed start of overlapping rounds appends (:func:`nft_tasks.claim_start`)."""
    if plan["what"] == "train":
        return shapes.next_trainer(spec, plan["iteration"], TASKS, fw_id)
    return _after_nft(spec, fw_id)


@dataclasses.dataclass
class Round:
    """What one step of a phase did, for :class:`_RoundTask`: the Firework's ``summary``,
    the ``items`` to label in the next round of the same phase (None: the phase ended) and,
    when it ended, what comes after it (``after(spec)``: a Workflow or None; no ``after``:
    nothing is appended, as after a transfer). ``append(spec, items)``, when given, builds
    what is appended instead of the next round's usual shape."""

    summary: dict[str, Any]
    items: list[dict[str, Any]] | None
    after: Callable[[Any], Any] | None = None
    append: Callable[[Any, list[dict[str, Any]]], Any] | None = None


class _RoundTask(_CampaignTask):
    """The one body of the trainer, relax, transfer and MD Fireworks: load and run the
    phase's step (:meth:`_step`, which stores its outputs), then append (once) the next
    round of the same phase — its label Fireworks and the next step — or what comes after
    the phase."""

    phase: ClassVar[str]
    counter: ClassVar[str]  # the spec key holding the round's number

    def _step(self, db: Any, name: str, number: int, fw_id: int | None) -> Round:
        raise NotImplementedError

    def _run(self, fw_spec: dict[str, Any]) -> FWAction:
        db, name, n = self._db(), self["campaign"], int(self[self.counter])
        fw_id = getattr(self, "fw_id", None)
        out = self._step(db, name, n, fw_id)
        spec = self._spec()
        if out.items is not None:
            items = label_tasks.round_items(db, name, out.items)
            if out.append is not None:
                build = out.append
                return self._append(lambda: build(spec, items), out.summary)
            return self._append(
                lambda: shapes.round_workflow(spec, self.phase, n + 1, items, TASKS, fw_id),
                out.summary,
            )
        if out.after is None:
            return FWAction(stored_data=out.summary)
        after = out.after
        return self._append(lambda: after(spec), out.summary)


@explicit_serialize
class TrainTask(_RoundTask):
    """Train iteration ``iteration``, record it, and append what comes next (once): the next
    round, or when NFT stops the relaxation phase or the transfer relaxations."""

    required_params: ClassVar[list[str]] = ["campaign", "iteration"]
    phase, counter = Phase.NFT, "iteration"

    def _step(self, db: Any, name: str, number: int, fw_id: int | None) -> Round:
        out = nft_tasks.train(db, name, number, fw_id)
        summary: dict[str, Any] = {
            "iteration": number,
            "structure_uncertainty": out.record["structure_uncertainty"],
            "decision": type(out.step).__name__,
        }
        if campaigns.load_spec(db, name).nft.rounds == "overlapping":
            return self._overlapping(db, name, number, fw_id, out, summary)
        if out.items:
            return Round(summary, out.items)
        summary["stop_reason"] = getattr(out.step, "reason", None)
        return Round(summary, None, lambda spec: _after_nft(spec, fw_id))

    def _overlapping(
        self,
        db: Any,
        name: str,
        number: int,
        fw_id: int | None,
        out: nft_tasks.TrainOutcome,
        summary: dict[str, Any],
    ) -> Round:
        """Overlapping rounds: the next round's label Fireworks, with the next trainer only
        if enough chunks arrived while this one trained; after a stop, what follows NFT only
        when no chunk is left in flight (else the last arrival appends it)."""
        starts_now = nft_tasks.plan_next(db, name, out, fw_id)
        summary["starts_next"] = starts_now
        if out.items:
            return Round(
                summary,
                out.items,
                append=lambda spec, items: shapes.overlapping_round(
                    spec, number + 1, items, TASKS, fw_id, starts_now
                ),
            )
        summary["stop_reason"] = getattr(out.step, "reason", None)
        return Round(summary, None, (lambda spec: _after_nft(spec, fw_id)) if starts_now else None)


@explicit_serialize
class RelaxTask(_RoundTask):
    """Relax round ``round``: retrain on the labels so far (round ≥ 1), relax the target,
    record, then append (once) the next relax round (chunks from the trajectory) or, when
    retraining ends, the transfer relaxations."""

    required_params: ClassVar[list[str]] = ["campaign", "round"]
    phase, counter = Phase.RELAX, "round"

    def _step(self, db: Any, name: str, number: int, fw_id: int | None) -> Round:
        out = relax_tasks.relax_round(db, name, number, fw_id)
        summary: dict[str, Any] = {
            "round": number,
            "trajectory_max_uncertainty": out.record["structure_uncertainty"],
            "steps": out.record["n_steps"],
        }
        if out.stop is None:
            return Round(summary, out.items)
        summary["stop_reason"] = out.stop.reason
        return Round(summary, None, lambda spec: shapes.after_relaxation(spec, TASKS, fw_id))


@explicit_serialize
class MDTask(_RoundTask):
    """MD segment ``segment``: retrain on the last pause's chunks (segment ≥ 1), continue the
    run from its saved state until its length or the next pause, record, then append (once)
    the next segment with the pause's label Fireworks or, at the run's end, the transfer
    relaxations. A checkpoint saved by a killed run of this Firework is continued."""

    required_params: ClassVar[list[str]] = ["campaign", "segment"]
    phase, counter = Phase.MD, "segment"

    def _step(self, db: Any, name: str, number: int, fw_id: int | None) -> Round:
        out = md_tasks.md_segment(db, name, number, fw_id)
        summary: dict[str, Any] = {
            "segment": number,
            "steps": [out.record["start_step"], out.record["end_step"]],
            "max_uncertainty": out.record["structure_uncertainty"],
            "paused": out.record["paused"],
        }
        if not out.finished:
            return Round(summary, out.items)
        return Round(summary, None, lambda spec: shapes.transfer_workflow(spec, TASKS, fw_id))


@explicit_serialize
class TransferTask(_RoundTask):
    """Relax transfer target ``index`` with the final model (no new data); when it is
    flagged and its ``retrain`` is set, submit the follow-up campaign that trains on it (a
    campaign, and workflow, of its own; once). Nothing is appended to this campaign."""

    required_params: ClassVar[list[str]] = ["campaign", "index"]
    phase, counter = Phase.TRANSFER, "index"

    def _step(self, db: Any, name: str, number: int, fw_id: int | None) -> Round:
        record = relax_tasks.transfer(db, name, number, fw_id)
        summary = {
            key: record[key]
            for key in ("name", "n_atoms", "n_steps", "structure_uncertainty", "flagged")
        }
        if record["flagged"] and self._spec().transfer[number].retrain:
            child = relax_store.follow_up(db, name, number)
            if not queue.has_workflow(self.launchpad, child.name):
                queue.add_workflow(self.launchpad, shapes.campaign_workflow(child, TASKS))
            summary["follow_up"] = child.name
        return Round(summary, None)


@explicit_serialize
class ReportTask(_CampaignTask):
    """Write the campaign's summary and plots (PNG) into its record and GridFS."""

    required_params: ClassVar[list[str]] = ["campaign"]

    def _run(self, fw_spec: dict[str, Any]) -> FWAction:
        db = self._db()
        name = self["campaign"]
        failed = [
            (d["fw_id"], d["name"])
            for d in queue.fireworks(
                self.launchpad, name, roles=("init", "train", "relax", "md"), states=("FIZZLED",)
            )
        ]
        if failed:
            ids = ",".join(str(i) for i, _ in failed)
            raise RuntimeError(
                f"campaign {name}: no report while {'; '.join(n for _, n in failed)} failed; "
                f"see why with lpad get_fws -i {ids} -d more, fix the cause and rerun it with "
                f"lpad rerun_fws -i {ids}: the campaign goes on from there and reports at its end"
            )
        inputs = reports.gather(db, name)
        with tempfile.TemporaryDirectory() as tmp:
            paths = nft_report.write(Path(tmp), inputs)
            files = {
                key: str(
                    records.put_bytes(db, Path(p).read_bytes(), f"{name}/report/{Path(p).name}")
                )
                for key, p in paths.items()
            }
        summary = nft_report.summary(inputs)
        records.update_campaign(db, name, state="completed", report_files=files, summary=summary)
        return FWAction(stored_data={"summary": summary})


TASKS = shapes.Tasks(
    init=InitTask,
    label=LabelTask,
    train=TrainTask,
    relax=RelaxTask,
    transfer=TransferTask,
    report=ReportTask,
    md=MDTask,
)
