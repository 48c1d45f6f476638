"""Workflows of an NFT campaign.

A campaign is a chain of small workflows linked through its database records, not one
growing workflow: FireWorks rewrites a whole workflow document on every state change of one
of its Fireworks, so the cost of a launch grows with the workflow's size (FireWorks
issue #180 is about ~1,000 Fireworks under one parent).

    submit:   [init]                                    (category: train)
    round k:  [label 0] [label 1] …   [train k]         (labels: label/dft; train: train)
              every label batch is a workflow of its own; the batch that finishes last
              (labelled, or failed and recorded) submits the trainer. The round record in
              ``nft_rounds`` counts finished batches, so a batch that runs twice counts
              once, and exactly one caller wins the claim on the trainer's submission.
              train k submits round k+1, or on stop [relax 0] (when the campaign
              relaxes) or the finish.
    relax r:  the same, with [relax r] as the trainer (r ≥ 1: retrain, then relax);
              relax r submits relax round r+1, or on stop the finish.
    finish:   [transfer 0] [transfer 1] … ──▶ [report]

Campaigns with ``service.offline_labels`` keep a round as one workflow (labels ──▶ train,
``_allow_fizzled_parents``): offline label Fireworks cannot reach the database, and FireWorks'
own dependencies release their trainer after ``lpad recover_offline``.

Every workflow is submitted once (``submit_once`` / the round record), so rerunning a
trainer or a label batch adds nothing twice. ``nft-fw recover`` submits the trainer of a
round whose label Fireworks have all ended without the last one doing it (e.g. a batch
defused by an operator).
"""

from __future__ import annotations

import contextlib
import datetime
import io
import logging
from collections.abc import Callable
from typing import Any

from fireworks import Firework, LaunchPad, Workflow

from nft_fw.campaign import CampaignSpec
from nft_fw.firetasks.nft import (
    InitTask,
    LabelTask,
    RelaxTask,
    ReportTask,
    TrainTask,
    TransferTask,
)
from nft_fw.launchpad import campaigns, records

logger = logging.getLogger(__name__)

TRAIN_PRIORITY = 100  # a ready trainer runs before queued labels of other campaigns
LABEL_PRIORITY = 10


def _spec(campaign: CampaignSpec, role: str, category: str, priority: int, **extra: Any) -> dict:
    return {
        "_category": category,
        "_priority": priority,
        "_add_launchpad_and_fw_id": True,
        "campaign": campaign.name,
        "nft_role": role,
        **extra,
    }


def init_workflow(campaign: CampaignSpec) -> Workflow:
    fw = Firework(
        InitTask(campaign=campaign.name),
        name=f"{campaign.name} init",
        spec=_spec(campaign, "init", campaign.service.train_category, TRAIN_PRIORITY),
    )
    return Workflow([fw], name=f"{campaign.name} init", metadata={"campaign": campaign.name})


def _label_fireworks(
    campaign: CampaignSpec, phase: str, number: int, items: list[dict[str, Any]], barrier: bool
) -> list[Firework]:
    """Label Fireworks of ``labels_per_firework`` items each; with ``barrier`` each reports
    its batch to the round record when it ends (the online layout)."""
    batch = campaigns.labels_per_firework(campaign)
    category = campaigns.label_category(campaign)
    tags = {"nft_phase": phase, "nft_round": number}
    offline = (
        {"parent": campaign.parent.model_dump(mode="json")}
        if campaign.service.offline_labels
        else {}
    )
    fireworks = []
    for b, i in enumerate(range(0, len(items), batch)):
        extra = {"batch": {"phase": phase, "round": number, "index": b}} if barrier else {}
        fireworks.append(
            Firework(
                LabelTask(campaign=campaign.name, items=items[i : i + batch], **offline, **extra),
                name=f"{campaign.name} {phase} {number} label {b}",
                spec=_spec(campaign, "label", category, LABEL_PRIORITY, nft_batch=b, **tags),
            )
        )
    return fireworks


def n_batches(campaign: CampaignSpec, n_items: int) -> int:
    return -(-n_items // campaigns.labels_per_firework(campaign))


def _trainer_firework(
    campaign: CampaignSpec, phase: str, number: int, parents: list[Firework] | None = None
) -> Firework:
    tags = {"nft_phase": phase, "nft_round": number}
    task = (
        RelaxTask(campaign=campaign.name, round=number)
        if phase == "relax"
        else TrainTask(campaign=campaign.name, iteration=number)
    )
    # linked (offline) layout: a fizzled label batch must not hold back its trainer
    extra = {"_allow_fizzled_parents": True} if parents else {}
    return Firework(
        task,
        name=f"{campaign.name} {phase} {number} train",
        parents=parents or None,
        spec=_spec(
            campaign, "train", campaign.service.train_category, TRAIN_PRIORITY, **extra, **tags
        ),
    )


def round_workflow(
    campaign: CampaignSpec, phase: str, number: int, items: list[dict[str, Any]]
) -> Workflow:
    """The linked layout (offline labels): label Fireworks feeding one trainer."""
    labels = _label_fireworks(campaign, phase, number, items, barrier=False)
    return Workflow(
        [*labels, _trainer_firework(campaign, phase, number, labels)],
        name=f"{campaign.name} {phase} {number}",
        metadata={"campaign": campaign.name, "phase": phase, "round": number},
    )


def label_workflows(
    campaign: CampaignSpec, phase: str, number: int, items: list[dict[str, Any]]
) -> list[Workflow]:
    """The online layout: one single-Firework workflow per label batch."""
    return [
        Workflow(
            [fw],
            name=fw.name,
            metadata={
                "campaign": campaign.name,
                "phase": phase,
                "round": number,
                "batch": fw.spec["nft_batch"],
            },
        )
        for fw in _label_fireworks(campaign, phase, number, items, barrier=True)
    ]


def trainer_workflow(campaign: CampaignSpec, phase: str, number: int) -> Workflow:
    return Workflow(
        [_trainer_firework(campaign, phase, number)],
        name=f"{campaign.name} {phase} {number} train",
        metadata={"campaign": campaign.name, "phase": phase, "round": number},
    )


def report_firework(campaign: CampaignSpec, parents: list[Firework] | None = None) -> Firework:
    # one failed transfer relaxation must not hold back the report
    extra = {"_allow_fizzled_parents": True} if parents else {}
    return Firework(
        ReportTask(campaign=campaign.name),
        name=f"{campaign.name} report",
        parents=parents or None,
        spec=_spec(campaign, "report", campaign.service.train_category, TRAIN_PRIORITY, **extra),
    )


def relax_firework(campaign: CampaignSpec, number: int = 0) -> Firework:
    """Relax round ``number`` with no labels to wait for (round 0: the NFT phase's model)."""
    tags = {"nft_phase": "relax", "nft_round": number}
    return Firework(
        RelaxTask(campaign=campaign.name, round=number),
        name=f"{campaign.name} relax {number}",
        spec=_spec(campaign, "relax", campaign.service.train_category, TRAIN_PRIORITY, **tags),
    )


FINISH_TAGS = {"nft_phase": "finish", "nft_round": 0}


def finish_workflow(campaign: CampaignSpec) -> Workflow:
    """Transfer relaxations (one Firework each, in parallel) feeding the report."""
    transfers = [
        Firework(
            TransferTask(campaign=campaign.name, index=k),
            name=f"{campaign.name} transfer {t.name or f'transfer-{k}'}",
            spec=_spec(
                campaign,
                "transfer",
                campaign.service.train_category,
                TRAIN_PRIORITY,
                nft_index=k,
                **FINISH_TAGS,
            ),
        )
        for k, t in enumerate(campaign.transfer)
    ]
    report = report_firework(campaign, parents=transfers)
    report.spec.update(FINISH_TAGS)
    return Workflow(
        [*transfers, report],
        name=f"{campaign.name} finish",
        metadata={"campaign": campaign.name, "phase": "finish"},
    )


def submit_once(
    lp: LaunchPad, name: str, phase: str, number: int, build: Callable[[], Workflow]
) -> list[int]:
    """Add the workflow of (phase, number) once: a rerun of the Firework that submits it
    finds it already submitted (in ``nft_rounds``, or its Fireworks on the LaunchPad, tagged
    ``nft_phase`` / ``nft_round``) and adds nothing."""
    db = lp.db
    rec = records.claim_round(db, name, phase, number)
    if rec.get("fw_ids"):
        return list(rec["fw_ids"])
    existing = submitted_fw_ids(
        lp, {"spec.campaign": name, "spec.nft_phase": phase, "spec.nft_round": number}
    )
    if existing:
        records.mark_round_submitted(db, name, phase, number, sorted(existing))
        return sorted(existing)
    mapping = lp.add_wf(build())
    fw_ids = sorted(mapping.values())
    records.mark_round_submitted(db, name, phase, number, fw_ids)
    return fw_ids


BULK_WORKFLOWS = 200  # label workflows per insert_many


def _bulk_add(lp: LaunchPad, workflows: list[Workflow]) -> None:
    for i in range(0, len(workflows), BULK_WORKFLOWS):
        # FireWorks draws a progress bar on stderr for every bulk insert
        with contextlib.redirect_stderr(io.StringIO()):
            lp.bulk_add_wfs(workflows[i : i + BULK_WORKFLOWS])


def submitted_fw_ids(lp: LaunchPad, query: dict[str, Any]) -> list[int]:
    """Ids of the Fireworks matching ``query`` that belong to a workflow, sorted.

    FireWorks adds a workflow in two writes, its Fireworks first and then the workflow
    document. A submission cut off between them (the database stopped) leaves Fireworks
    without a workflow, which no worker can check out (FireWorks raises "Could not find
    workflow in database"). They never ran: they and any launch record a failed checkout
    left are deleted here, so the submitter's rerun adds them again whole."""
    fws = {d["fw_id"] for d in lp.fireworks.find(query, {"fw_id": 1})}
    if not fws:
        return []
    whole = {
        i
        for d in lp.workflows.find({"nodes": {"$in": list(fws)}}, {"nodes": 1})
        for i in d["nodes"]
    }
    orphans = sorted(fws - whole)
    if orphans:
        logger.warning(
            "Fireworks %s were added without their workflow (a submission cut off): "
            "deleted, to be added again",
            orphans,
        )
        lp.launches.delete_many({"fw_id": {"$in": orphans}})
        lp.fireworks.delete_many({"fw_id": {"$in": orphans}})
    return sorted(whole & fws)


def _round_fw_ids(lp: LaunchPad, name: str, phase: str, number: int, role: str) -> list[int]:
    query = {
        "spec.campaign": name,
        "spec.nft_phase": phase,
        "spec.nft_round": number,
        "spec.nft_role": role,
    }
    return submitted_fw_ids(lp, query)


def submit_round(
    lp: LaunchPad, name: str, phase: str, number: int, items: list[dict[str, Any]]
) -> list[int]:
    """Add a round's label Fireworks (and, with nothing to label, its trainer) once; returns
    the label Fireworks' ids. A rerun adds only the batches missing on the LaunchPad (a
    submission cut off half-way is completed, never repeated)."""
    db = lp.db
    spec = campaigns.load_spec(db, name)
    if spec.service.offline_labels:

        def build() -> Workflow:
            return round_workflow(spec, phase, number, campaigns.offline_items(db, name, items))

        return submit_once(lp, name, phase, number, build)
    total = n_batches(spec, len(items))
    records.open_round(db, name, phase, number, total)
    rec = records.claim_round(db, name, phase, number)
    if rec.get("fw_ids") is not None:
        return list(rec["fw_ids"])
    present = {
        d["spec"]["nft_batch"]
        for d in lp.fireworks.find(
            {"fw_id": {"$in": _round_fw_ids(lp, name, phase, number, "label")}},
            {"spec.nft_batch": 1},
        )
    }
    missing = [
        wf
        for wf in label_workflows(spec, phase, number, items)
        if wf.metadata["batch"] not in present
    ]
    _bulk_add(lp, missing)
    fw_ids = _round_fw_ids(lp, name, phase, number, "label")
    records.mark_round_submitted(db, name, phase, number, fw_ids)
    if total == 0:
        submit_trainer(lp, name, phase, number)
    return fw_ids


def submit_trainer(
    lp: LaunchPad, name: str, phase: str, number: int, stale_after_s: float | None = None
) -> list[int]:
    """Add the round's trainer once: the caller that wins the round record's claim adds it
    (unless it is on the LaunchPad already); every other caller adds nothing. With
    ``stale_after_s`` a claim that old whose holder never recorded a trainer is taken over."""
    db = lp.db
    stale = (
        None if stale_after_s is None else records.now() - datetime.timedelta(seconds=stale_after_s)
    )
    if not records.claim_trainer(db, name, phase, number, stale):
        return []
    fw_ids = _round_fw_ids(lp, name, phase, number, "train")
    if not fw_ids:
        spec = campaigns.load_spec(db, name)
        fw_ids = sorted(lp.add_wf(trainer_workflow(spec, phase, number)).values())
    records.mark_trainer_submitted(db, name, phase, number, fw_ids)
    return fw_ids


def batch_finished(lp: LaunchPad, name: str, phase: str, number: int, batch: int) -> list[int]:
    """Count a label batch as finished; the last one submits the trainer (its ids returned)."""
    rec = records.batch_done(lp.db, name, phase, number, batch)
    if rec["n_done"] >= rec["n_batches"] and rec.get("trainer_fw_ids") is None:
        return submit_trainer(lp, name, phase, number)
    return []


LABEL_END_STATES = ("COMPLETED", "FIZZLED", "DEFUSED", "ARCHIVED")


def release_stalled_rounds(
    lp: LaunchPad, name: str | None = None, stale_after_s: float = 60.0, dry_run: bool = False
) -> list[dict[str, Any]]:
    """Submit the trainer of every online round whose label Fireworks have all ended but
    whose trainer was never added (a batch that ended without reporting, e.g. defused, or a
    submitter that died holding the claim for longer than ``stale_after_s``)."""
    released = []
    for rec in records.rounds(lp.db, name):
        if rec.get("n_batches") is None or rec.get("trainer_fw_ids") is not None:
            continue
        if rec.get("fw_ids") is None:  # labels still being submitted
            continue
        states = {
            d["state"] for d in lp.fireworks.find({"fw_id": {"$in": rec["fw_ids"]}}, {"state": 1})
        }
        if not states <= set(LABEL_END_STATES):
            continue
        key = {"campaign": rec["campaign"], "phase": rec["phase"], "round": rec["round"]}
        fw_ids = [] if dry_run else submit_trainer(lp, **_args(key), stale_after_s=stale_after_s)
        released.append({**key, "trainer_fw_ids": fw_ids})
    return released


def _args(key: dict[str, Any]) -> dict[str, Any]:
    return {"name": key["campaign"], "phase": key["phase"], "number": key["round"]}


def submit_after_nft(lp: LaunchPad, name: str) -> list[int]:
    """When NFT stops: relax round 0 (campaign has ``relax``) or the finish, once."""
    spec = campaigns.load_spec(lp.db, name)
    if spec.relax is not None:
        return submit_once(
            lp, name, "relax", 0, lambda: Workflow([relax_firework(spec)], name=f"{name} relax 0")
        )
    return submit_finish(lp, name)


def submit_finish(lp: LaunchPad, name: str) -> list[int]:
    """Transfer relaxations and the report, once."""
    spec = campaigns.load_spec(lp.db, name)
    return submit_once(lp, name, "finish", 0, lambda: finish_workflow(spec))


def ensure_initialised(lp: LaunchPad) -> None:
    """Give a brand-new database FireWorks' id counters and indexes, without the wipe of
    ``lpad reset``; a database already in use is left as it is."""
    lp.fw_id_assigner.update_one(
        {}, {"$setOnInsert": {"next_fw_id": 1, "next_launch_id": 1}}, upsert=True
    )
    if "fw_id_1" not in lp.fireworks.index_information():
        lp.tuneup()


def submit(lp: LaunchPad, prepared: Any) -> list[int]:
    """Register a prepared campaign and add its init workflow; returns the Firework ids."""
    ensure_initialised(lp)
    campaigns.register(lp.db, prepared)
    mapping = lp.add_wf(init_workflow(prepared.spec))
    return sorted(mapping.values())
