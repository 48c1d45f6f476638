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

from nft_fw.firetasks import iteration as nft_tasks
from nft_fw.labels.phase import Phase
from nft_fw.launchpad import campaigns, records
from nft_fw.launchpad import md as md_store
from nft_fw.launchpad import relax as relax_store
from nft_fw.potential import model as mdl
from nft_fw.spec.campaign import Prepared
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


def _segment_start(
    db: Database, name: str, number: int, prepared: Prepared, before: list[dict[str, Any]]
) -> tuple[mdl.Ensemble, dict[str, Any], dict[str, Any], md_mod.MDState]:
    """The model a segment starts with, its record (where it came from), ``model_from`` and
    the MD state: for segment 0 the phases' kept model on the MD structure at step 0, later
    the segment before's model and saved state."""
    spec = prepared.spec
    if number == 0:
        model, source = relax_store.relaxed_model(db, name)
        atoms = step.md_start_structure(
            spec,
            prepared.target,
            lambda: md_store.relaxed_structure(db, name),
            lambda which: md_store.transfer_structure(db, name, which),
        )
        model_from = {"phase": source["phase"], "iteration": source["iteration"]}
        return model, source, model_from, step.md_start(spec, atoms)
    if not before or before[-1]["iteration"] != number - 1:
        raise RuntimeError(
            f"campaign {name}: MD segment {number - 1} has no record; rerun its Firework"
        )
    source = before[-1]
    model_from = {"phase": Phase.MD, "iteration": number - 1}
    return relax_store.load(db, source), source, model_from, md_store.state(db, source)


def _store_segment(
    db: Database, name: str, number: int, out: step.MDOutcome, source: dict[str, Any]
) -> tuple[dict[str, Any], str]:
    """Store the segment's frames, end state and model (or point at the unchanged one) and
    return its record (not yet written) and the id of its frames file."""
    relax_store.replace_files(db, name, Phase.MD, number)
    seg = out.segment
    frames_id = records.put_structures(db, seg.frames, f"{name}/md/frames-{number}.extxyz")
    state_id = records.put_structures(
        db, [seg.state.to_frame()], f"{name}/md/state-{number}.extxyz"
    )
    record = {**out.record, "frames_file": str(frames_id), "state_file": str(state_id)}
    if out.record["model_from"] == {"phase": Phase.MD, "iteration": number}:  # trained here
        record["model_file"] = md_store.checkpoint_model(db, name, number) or str(
            records.put_bytes(
                db, out.ensemble.to_bytes(), f"{name}/md/model-{number}.nftm", kind="model"
            )
        )
    else:  # the model of the segment or phase before, unchanged: the record points at it
        record["model_file"] = source["model_file"]
        record["shared_files"] = ["model_file"]
    return record, str(frames_id)


def md_segment(db: Database, name: str, number: int, fw_id: int | None = None) -> SegmentOutcome:
    """MD segment ``number``: continue the run from where segment ``number`` − 1 paused (or,
    for segment 0, from step 0 on the MD structure), retraining first on the pause's chunks;
    a checkpoint left by a killed worker is continued instead."""
    t_start = time.perf_counter()
    campaigns.import_offline_labels(db, name)
    prepared = campaigns.context(db, name)
    before = md_store.segments(db, name, before=number)
    model, source, model_from, start = _segment_start(db, name, number, prepared, before)
    resume = md_store.get_checkpoint(db, name, number)
    if resume is not None:
        log.info(
            "campaign %s MD segment %d: continuing from the checkpoint at step %d",
            name, number, resume.segment.state.step,
        )  # fmt: skip
    parent_hash = prepared.parent.settings_hash
    failed = {d["hash"] for d in records.failures(db, name) if d["parent_hash"] == parent_hash}
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
            checkpoint=lambda r: md_store.put_checkpoint(db, name, number, r),
            known=lambda h: h in failed or records.has_label(db, name, h, parent_hash),
            features=step.CachedFeatures(campaigns.FeatureStore(db, name)),
            true_forces=(lambda a: prepared.parent.label(a)[1])
            if prepared.spec.md_spec.true_force_check_every
            else None,
        )
    )
    record, frames_id = _store_segment(db, name, number, out, source)
    items = nft_tasks.request_items(db, name, Phase.MD, number, out.requests, frames_id, record)
    record["fw_id"] = fw_id
    record["timings"] = {**out.record["timings"], "total_s": time.perf_counter() - t_start}
    records.put_iteration(db, record)
    trained = out.record["model_from"] == {"phase": Phase.MD, "iteration": number}
    md_store.drop_checkpoint(db, name, number, keep_model=trained)
    if record["stopped"]:  # δ above the threshold with no pause left, or atoms collapsed
        records.update_campaign(
            db, name, state="md-stopped", md_segment=number, md_stop_reason=record["end_reason"]
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
