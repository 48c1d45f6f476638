"""What the MD Firework of a campaign does: load MD segment ``number``'s inputs (the saved
state to continue from, the model, every label), call :func:`nft_fw.steps.step.md_step` with a
checkpoint that saves the segment to the database as it runs, store the record, frames,
end state and model, and name the chunks of the pause. Storage lives in
:mod:`nft_fw.launchpad.md`.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from typing import Any

from pymongo.database import Database

from nft_fw.firetasks import iteration as training
from nft_fw.labels.phase import Phase
from nft_fw.launchpad import campaigns, records
from nft_fw.launchpad import md as dynamics
from nft_fw.launchpad import relax as relaxation
from nft_fw.steps import md as md_mod
from nft_fw.steps import step

log = logging.getLogger(__name__)


@dataclasses.dataclass
class SegmentOutcome:
    """The segment's record; ``finished`` when the run reached its length, else the chunks
    to label before the next segment."""

    record: dict[str, Any]
    finished: bool
    items: list[dict[str, Any]]


def md_segment(db: Database, name: str, number: int, fw_id: int | None = None) -> SegmentOutcome:
    """MD segment ``number``: continue the run from where segment ``number`` − 1 paused (or,
    for segment 0, from step 0 on the MD structure), retraining first on the pause's chunks;
    a checkpoint left by a killed worker is continued instead."""
    t_start = time.perf_counter()
    campaigns.import_offline_labels(db, name)
    prepared = campaigns.context(db, name)
    spec = prepared.spec
    before = dynamics.segments(db, name, before=number)
    if number == 0:
        model, source = relaxation.relaxed_model(db, name)
        model_from = {"phase": source["phase"], "iteration": source["iteration"]}
        atoms = step.md_start_structure(
            spec,
            prepared.target,
            lambda: dynamics.relaxed_structure(db, name),
            lambda which: dynamics.transfer_structure(db, name, which),
        )
        start = step.md_start(spec, atoms)
    else:
        if not before or before[-1]["iteration"] != number - 1:
            raise RuntimeError(
                f"campaign {name}: MD segment {number - 1} has no record; rerun its Firework"
            )
        source = before[-1]
        model = relaxation.load(db, source)
        model_from = {"phase": Phase.MD, "iteration": number - 1}
        start = dynamics.state(db, source)
    resume = dynamics.get_checkpoint(db, name, number)
    if resume is not None:
        log.info(
            "campaign %s MD segment %d: continuing from the checkpoint at step %d",
            name, number, resume.segment.state.step,
        )  # fmt: skip
    parent_hash = prepared.parent.settings_hash
    failed = {d["hash"] for d in records.failures(db, name) if d["parent_hash"] == parent_hash}
    m = spec.md_spec
    out = step.md_step(
        step.MDInputs(
            prepared,
            number,
            model,
            model_from,
            start,
            campaigns.stored_images(db, name),
            campaigns.stored_chunks(db, name),
            history=records.iterations(db, name),
            rounds=records.iterations(db, name, phase=Phase.RELAX),
            segments=before,
            resume=resume,
            checkpoint=lambda r: dynamics.put_checkpoint(db, name, number, r),
            known=lambda h: h in failed or records.has_label(db, name, h, parent_hash),
            features=step.CachedFeatures(campaigns.FeatureStore(db, name)),
            true_forces=(lambda a: prepared.parent.label(a)[1])
            if m.true_force_check_every
            else None,
        )
    )
    relaxation.replace_files(db, name, Phase.MD, number)
    seg = out.segment
    frames_id = records.put_structures(db, seg.frames, f"{name}/md/frames-{number}.extxyz")
    state_id = records.put_structures(
        db, [seg.state.to_frame()], f"{name}/md/state-{number}.extxyz"
    )
    record = {**out.record, "frames_file": str(frames_id), "state_file": str(state_id)}
    trained = out.record["model_from"] == {"phase": Phase.MD, "iteration": number}
    if trained:
        record["model_file"] = dynamics.checkpoint_model(db, name, number) or str(
            records.put_bytes(
                db, out.ensemble.to_bytes(), f"{name}/md/model-{number}.nftm", kind="model"
            )
        )
    else:  # the model of the segment or phase before, unchanged: the record points at it
        record["model_file"] = source["model_file"]
        record["shared_files"] = ["model_file"]
    record["fw_id"] = fw_id
    record["timings"] = {**out.record["timings"], "total_s": time.perf_counter() - t_start}
    records.put_iteration(db, record)
    dynamics.drop_checkpoint(db, name, number, keep_model=trained)
    items = [training.chunk_item(r, str(frames_id)) for r in out.requests]
    if record["stopped"]:  # δ above the threshold with no pause left: the phase ends
        records.update_campaign(
            db, name, state="md-stopped", md_segment=number, md_stop_reason="out_of_pauses"
        )
    elif out.finished:
        records.update_campaign(db, name, state="md-finished", md_segment=number)
    else:
        records.update_campaign(db, name, state="md", md_segment=number)
    log.info(
        "campaign %s MD segment %d: steps %d–%d, δ max %.3f eV/Å, %s",
        name,
        number,
        record["start_step"],
        record["end_step"],
        record["structure_uncertainty"],
        md_mod.ending(record) if out.finished else f"paused, {len(items)} chunks",
    )
    return SegmentOutcome(record=record, finished=out.finished, items=items)
