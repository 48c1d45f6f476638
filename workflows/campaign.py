"""Workflows of an NFT campaign.

A campaign is a chain of small workflows linked through its database records, not one
growing workflow (FireWorks refreshes a whole workflow on every state change, so the cost
of a launch grows with the workflow's size):

    submit:   [init]                                    (category: train)
    round k:  [label …] ──▶ [train k]                   (labels: label/dft; train: train)
              train k submits round k+1 as a new workflow, or on stop [relax 0] (when
              the campaign relaxes) or the finish.
    relax r:  [label …] ──▶ [relax r]                   (r ≥ 1: retrain, then relax)
              relax r submits relax round r+1, or on stop the finish.
    Each is submitted once (``submit_once``), so rerunning a trainer adds nothing twice.
    finish:   [transfer 0] [transfer 1] … ──▶ [report]
"""

from __future__ import annotations

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


def round_workflow(
    campaign: CampaignSpec, phase: str, number: int, items: list[dict[str, Any]]
) -> Workflow:
    """Label Fireworks (``labels_per_firework`` items each) feeding one trainer."""
    batch = campaigns.labels_per_firework(campaign)
    category = campaigns.label_category(campaign)
    tags = {"nft_phase": phase, "nft_round": number}
    offline = (
        {"parent": campaign.parent.model_dump(mode="json")}
        if campaign.service.offline_labels
        else {}
    )
    labels = [
        Firework(
            LabelTask(campaign=campaign.name, items=items[i : i + batch], **offline),
            name=f"{campaign.name} {phase} {number} label {i // batch}",
            spec=_spec(campaign, "label", category, LABEL_PRIORITY, **tags),
        )
        for i in range(0, len(items), batch)
    ]
    task = (
        RelaxTask(campaign=campaign.name, round=number)
        if phase == "relax"
        else TrainTask(campaign=campaign.name, iteration=number)
    )
    train = Firework(
        task,
        name=f"{campaign.name} {phase} {number} train",
        parents=labels or None,
        spec=_spec(
            campaign,
            "train",
            campaign.service.train_category,
            TRAIN_PRIORITY,
            _allow_fizzled_parents=True,
            **tags,
        ),
    )
    return Workflow(
        [*labels, train],
        name=f"{campaign.name} {phase} {number}",
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
    existing = lp.get_fw_ids(
        {"spec.campaign": name, "spec.nft_phase": phase, "spec.nft_round": number}
    )
    if existing:
        records.mark_round_submitted(db, name, phase, number, sorted(existing))
        return sorted(existing)
    mapping = lp.add_wf(build())
    fw_ids = sorted(mapping.values())
    records.mark_round_submitted(db, name, phase, number, fw_ids)
    return fw_ids


def submit_round(
    lp: LaunchPad, name: str, phase: str, number: int, items: list[dict[str, Any]]
) -> list[int]:
    """Add a round's workflow (labels → trainer) once."""

    def build() -> Workflow:
        spec = campaigns.load_spec(lp.db, name)
        labelled = (
            campaigns.offline_items(lp.db, name, items) if spec.service.offline_labels else items
        )
        return round_workflow(spec, phase, number, labelled)

    return submit_once(lp, name, phase, number, build)


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
