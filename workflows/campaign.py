"""The workflow of an NFT campaign: one FireWorks workflow, named after the campaign, that
its trainers grow.

    submit:   [init] ──▶ [report]
    init:     appends round 0 between itself and the report:
              [init] ──▶ [label 0] [label 1] … ──▶ [train 0] ──▶ [report]
    train k:  appends round k+1 the same way (its label Fireworks, and train k+1 depending
              on all of them), or when NFT stops [relax 0] (campaigns that relax) or the
              transfer relaxations (campaigns with transfer targets), or nothing
              (nft.rounds: overlapping: round k+1's label Fireworks alone; the label
              Firework whose arrival brings enough chunks appends train k+1 — or train k
              itself, when enough arrived while it trained — and the last label in flight
              after NFT stops appends what follows; :func:`overlapping_round`)
    relax r:  appends relax round r+1 ([label …] ──▶ [relax r+1]), or when retraining ends
              [md 0] (campaigns with an MD phase) or the transfer relaxations
    md s:     at a pause appends MD segment s+1 ([label …] ──▶ [md s+1], which retrains and
              continues the run from its saved state), at the run's end the transfers
    report:   runs when everything before it has ended

Appending uses ``FWAction(detours=…)``: the new Fireworks go between the trainer and its
children, so the report always waits at the end of the workflow. FireWorks' dependencies
do the rest: a trainer starts when every label Firework of its round has ended; trainers,
transfers and the report carry ``_allow_fizzled_parents``, so a chunk the parent cannot
label (its Firework fizzles; the failure is recorded) does not stall the campaign.
``lpad get_wflows -n NAME``, ``defuse_wflows``, ``pause_wflows``, ``reignite_wflows``,
``rerun_fws`` and ``webgui`` act on the campaign as a whole.

Every appended Firework carries ``nft_appended_by`` (the id of the Firework that appended
it): a trainer that runs again (``lpad rerun_fws``, a lost run re-queued) finds its round
already in the workflow and appends nothing; FireWorks reruns the Fireworks after it.

A round never has more than ``service.max_label_fireworks`` label Fireworks: a larger round
puts more chunks in each (:func:`_round_batch`). This module only builds workflows
and Fireworks; it writes nothing to the database. The FireTask classes the Fireworks run
are handed in (:class:`Tasks`; :data:`nft_fw.firetasks.nft.TASKS`): the tasks append rounds
built here, so this module does not import them.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from fireworks import FiretaskBase, Firework, Workflow

from nft_fw.labels.phase import Phase
from nft_fw.spec.campaign import LAYOUT, CampaignSpec, label_category, labels_per_firework


@dataclasses.dataclass(frozen=True)
class Tasks:
    """The FireTask classes of a campaign's Fireworks, by role."""

    init: type[FiretaskBase]
    label: type[FiretaskBase]
    train: type[FiretaskBase]
    relax: type[FiretaskBase]
    transfer: type[FiretaskBase]
    md: type[FiretaskBase]
    report: type[FiretaskBase]


TRAIN_PRIORITY = 100  # a ready trainer runs before queued labels of other campaigns
LABEL_PRIORITY = 10
SEED_PRIORITY = 9  # chunks chosen before any model (nft.seed_chunks): after every other label


def _spec(campaign: CampaignSpec, role: str, category: str, priority: int, **extra: Any) -> dict:
    return {
        "_category": category,
        "_priority": priority,
        "_add_launchpad_and_fw_id": True,
        "campaign": campaign.name,
        "nft_role": role,
        **extra,
    }


def _round_batch(campaign: CampaignSpec, n_items: int) -> int:
    """Items per label Firework for a round of ``n_items``: the campaign's
    (:func:`nft_fw.spec.campaign.labels_per_firework`), raised so that the round has at most
    ``service.max_label_fireworks`` label Fireworks."""
    base = labels_per_firework(campaign)
    return max(base, -(-n_items // campaign.service.max_label_fireworks))


def campaign_workflow(campaign: CampaignSpec, tasks: Tasks) -> Workflow:
    """What submitting a campaign adds: its init Firework and its report."""
    init = Firework(
        tasks.init(campaign=campaign.name),
        name=f"{campaign.name} init",
        spec=_spec(campaign, "init", campaign.service.train_category, TRAIN_PRIORITY),
    )
    report = Firework(
        tasks.report(campaign=campaign.name),
        name=f"{campaign.name} report",
        parents=[init],
        # a failed transfer relaxation does not hold back the report (ReportTask refuses to
        # report on a campaign whose init or trainer failed)
        spec=_spec(
            campaign,
            "report",
            campaign.service.train_category,
            TRAIN_PRIORITY,
            _allow_fizzled_parents=True,
        ),
    )
    return Workflow(
        [init, report],
        name=campaign.name,
        metadata={"campaign": campaign.name, "kind": "nft", "layout": LAYOUT},
    )


def _label_fireworks(
    campaign: CampaignSpec,
    phase: str,
    number: int,
    items: list[dict[str, Any]],
    by: int | None,
    tasks: Tasks,
    overlapping: bool = False,
    what: str = "label",
    first_batch: int = 0,
    priority: int = LABEL_PRIORITY,
) -> list[Firework]:
    per = _round_batch(campaign, len(items))
    category = label_category(campaign)
    extra: dict[str, Any] = (
        {"parent": campaign.parent.model_dump(mode="json")}
        if campaign.service.offline_labels
        else {}
    )
    if overlapping:  # each chunk's arrival is counted, and may start the next trainer
        extra["overlapping"] = True
    return [
        Firework(
            tasks.label(campaign=campaign.name, items=items[i : i + per], **extra),
            name=f"{campaign.name} {phase} {number} {what} {b}",
            spec=_spec(
                campaign,
                "label",
                category,
                priority,
                nft_phase=phase,
                nft_round=number,
                nft_batch=b,
                nft_appended_by=by,
            ),
        )
        for b, i in enumerate(range(0, len(items), per), start=first_batch)
    ]


def round_workflow(
    campaign: CampaignSpec,
    phase: str,
    number: int,
    items: list[dict[str, Any]],
    tasks: Tasks,
    appended_by: int | None = None,
) -> Workflow:
    """Round ``number`` of ``phase`` ("nft", "relax" or "md"): label Fireworks for
    ``items`` and the trainer depending on all of them (with no items, the trainer alone)."""
    labels = _label_fireworks(campaign, phase, number, items, appended_by, tasks)
    trainer = _trainer(campaign, phase, number, tasks, appended_by, labels)
    return Workflow([*labels, trainer], name=f"{campaign.name} {phase} {number}")


def first_round(
    campaign: CampaignSpec,
    items: list[dict[str, Any]],
    seeds: list[dict[str, Any]],
    tasks: Tasks,
    appended_by: int | None = None,
) -> Workflow:
    """NFT round 0: label Fireworks for the initial ``items`` and trainer 0 depending on
    them, beside label Fireworks for the ``seeds`` (``nft.seed_chunks``, overlapping rounds)
    that nothing waits for but the report: they arrive while the initial images are labelled
    and trainer 0 trains, and count towards the next trainer's start like any chunk. They
    queue behind every other label (SEED_PRIORITY): the images, which trainer 0 waits for,
    go first, and so do the chunks trainers choose by δ once there are any."""
    wf = round_workflow(campaign, Phase.NFT, 0, items, tasks, appended_by)
    if not seeds:
        return wf
    first = len(wf.fws) - 1  # the initial items' label Fireworks come first
    fws = _label_fireworks(
        campaign, Phase.NFT, 0, seeds, appended_by, tasks, True, "seed", first, SEED_PRIORITY
    )
    return Workflow([*wf.fws, *fws], name=wf.name)


def overlapping_round(
    campaign: CampaignSpec,
    number: int,
    items: list[dict[str, Any]],
    tasks: Tasks,
    appended_by: int | None,
    start_trainer: bool,
) -> Workflow:
    """NFT round ``number`` with overlapping rounds (``nft.rounds: overlapping``): its label
    Fireworks, and trainer ``number`` only when it may start at once (enough chunks
    arrived while the trainer before trained); otherwise the label Firework whose arrival
    completes the count appends it (:func:`next_trainer`). Nothing waits for a round's
    every label but the report, below them all."""
    labels = _label_fireworks(campaign, Phase.NFT, number, items, appended_by, tasks, True)
    fws = [*labels]
    if start_trainer:
        fws.append(_trainer(campaign, Phase.NFT, number, tasks, appended_by, []))
    return Workflow(fws, name=f"{campaign.name} {Phase.NFT} {number}")


def next_trainer(
    campaign: CampaignSpec, number: int, tasks: Tasks, appended_by: int | None
) -> Workflow:
    """Trainer ``number`` of overlapping rounds alone, appended by the label Firework whose
    arrival starts it."""
    trainer = _trainer(campaign, Phase.NFT, number, tasks, appended_by, [])
    return Workflow([trainer], name=f"{campaign.name} {Phase.NFT} {number}")


def _trainer(
    campaign: CampaignSpec,
    phase: str,
    number: int,
    tasks: Tasks,
    appended_by: int | None,
    labels: list[Firework],
) -> Firework:
    if phase == Phase.RELAX:
        task = tasks.relax(campaign=campaign.name, round=number)
    elif phase == Phase.MD:
        task = tasks.md(campaign=campaign.name, segment=number)
    else:
        task = tasks.train(campaign=campaign.name, iteration=number)
    return Firework(
        task,
        name=f"{campaign.name} {phase} {number} train",
        parents=labels or None,
        spec=_spec(
            campaign,
            "train",
            campaign.service.train_category,
            TRAIN_PRIORITY,
            _allow_fizzled_parents=True,
            nft_phase=phase,
            nft_round=number,
            nft_appended_by=appended_by,
        ),
    )


def relax_workflow(
    campaign: CampaignSpec, tasks: Tasks, appended_by: int | None = None
) -> Workflow:
    """Relax round 0: the NFT phase's model relaxes the target (no labels to wait for)."""
    fw = Firework(
        tasks.relax(campaign=campaign.name, round=0),
        name=f"{campaign.name} relax 0",
        spec=_spec(
            campaign,
            "relax",
            campaign.service.train_category,
            TRAIN_PRIORITY,
            nft_phase="relax",
            nft_round=0,
            nft_appended_by=appended_by,
        ),
    )
    return Workflow([fw], name=f"{campaign.name} relax 0")


def md_workflow(campaign: CampaignSpec, tasks: Tasks, appended_by: int | None = None) -> Workflow:
    """MD segment 0: the model the phases before kept starts the run (no labels to wait
    for)."""
    fw = Firework(
        tasks.md(campaign=campaign.name, segment=0),
        name=f"{campaign.name} md 0",
        spec=_spec(
            campaign,
            "md",
            campaign.service.train_category,
            TRAIN_PRIORITY,
            nft_phase="md",
            nft_round=0,
            nft_appended_by=appended_by,
        ),
    )
    return Workflow([fw], name=f"{campaign.name} md 0")


def after_relaxation(
    campaign: CampaignSpec, tasks: Tasks, appended_by: int | None = None
) -> Workflow | None:
    """What follows the relaxation phase (or NFT, without one): MD segment 0 when the
    campaign has an MD phase, else the transfer relaxations (None without any)."""
    if campaign.md is not None:
        return md_workflow(campaign, tasks, appended_by)
    return transfer_workflow(campaign, tasks, appended_by)


def transfer_workflow(
    campaign: CampaignSpec, tasks: Tasks, appended_by: int | None = None
) -> Workflow | None:
    """The transfer relaxations, one Firework each, in parallel (None without targets)."""
    if not campaign.transfer:
        return None
    fws = [
        Firework(
            tasks.transfer(campaign=campaign.name, index=k),
            name=f"{campaign.name} transfer {t.name or f'transfer-{k}'}",
            spec=_spec(
                campaign,
                "transfer",
                campaign.service.train_category,
                TRAIN_PRIORITY,
                nft_phase="finish",
                nft_round=0,
                nft_index=k,
                nft_appended_by=appended_by,
            ),
        )
        for k, t in enumerate(campaign.transfer)
    ]
    return Workflow(fws, name=f"{campaign.name} transfer")
