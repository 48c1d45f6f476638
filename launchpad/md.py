"""The MD phase's storage: segment records, their saved states and checkpoints.

Every MD segment is one record in ``nft_iterations`` with ``phase: md`` (its log of every
step, where it paused, the files of its frames, end state and model). While a segment runs
its Firework saves a checkpoint (``phase: md_checkpoint``, same ``iteration``: the model it
trained, the log so far, the frames so far and the state, every ``md.checkpoint_every``
steps); a worker killed mid-segment leaves it behind, and the rerun continues from it
instead of training and running again. The record replaces the checkpoint when the
segment ends.
"""

from __future__ import annotations

from typing import Any

from bson import ObjectId
from pymongo.database import Database

from nft_fw.labels.phase import Phase
from nft_fw.launchpad import campaigns, records
from nft_fw.launchpad import relax as relax_store
from nft_fw.potential import model as mdl
from nft_fw.steps import kept as kept_mod
from nft_fw.steps import md as md_mod

PHASE = Phase.MD
CHECKPOINT = "md_checkpoint"


def segments(db: Database, name: str, before: int | None = None) -> list[dict[str, Any]]:
    """The MD segment records of campaign ``name`` (those before segment ``before``)."""
    out = records.iterations(db, name, phase=PHASE)
    return [r for r in out if before is None or r["iteration"] < before]


def state(db: Database, record: dict[str, Any]) -> md_mod.MDState:
    """The state a segment ended in (the next one continues from it)."""
    return md_mod.MDState.from_frame(records.get_structure(db, ObjectId(record["state_file"])))


def relaxed_structure(db: Database, name: str) -> Any:
    """The kept relax round's final structure, or None when no relax round ran."""
    rounds = records.iterations(db, name, phase=Phase.RELAX)
    if not rounds:
        return None
    kept = rounds[kept_mod.kept_round(rounds, campaigns.load_spec(db, name))]
    return records.get_structure(db, ObjectId(kept["final_file"]))


def transfer_structure(db: Database, name: str, which: str) -> Any:
    """Transfer target ``which`` as stored at submission, or None."""
    for entry in relax_store.transfer_targets(db, name):
        if entry["name"] == which:
            return records.get_structure(db, ObjectId(entry["file"]))
    return None


def _checkpoint_doc(db: Database, name: str, number: int) -> dict[str, Any] | None:
    for doc in records.iterations(db, name, phase=CHECKPOINT):
        if doc["iteration"] == number:
            return doc
    return None


def put_checkpoint(db: Database, name: str, number: int, resume: md_mod.MDResume) -> None:
    """Save segment ``number`` as it is now (the model once; state and frames each time,
    the previous checkpoint's files dropped after the new one is written)."""
    old = _checkpoint_doc(db, name, number)
    model_id = old["model_file"] if old else None
    if model_id is None:
        model_id = str(
            records.put_bytes(
                db, resume.ensemble.to_bytes(), f"{name}/md/model-{number}.nftm", kind="model"
            )
        )
    seg = resume.segment
    state_id = records.put_structures(
        db, [seg.state.to_frame()], f"{name}/md/checkpoint-state-{number}.extxyz"
    )
    frames_id = (
        str(records.put_structures(db, seg.frames, f"{name}/md/checkpoint-frames-{number}.extxyz"))
        if seg.frames
        else None
    )
    records.put_iteration(
        db,
        {
            "campaign": name,
            "phase": CHECKPOINT,
            "iteration": number,
            "model_file": model_id,
            "state_file": str(state_id),
            "frames_file": frames_id,
            "training": resume.metrics,
            "oos": resume.oos,
            "segment": seg.to_dict(),
            "step": seg.state.step,
        },
    )
    if old:
        for key in ("state_file", "frames_file"):
            if old.get(key):
                records.delete_file(db, ObjectId(old[key]))


def get_checkpoint(db: Database, name: str, number: int) -> md_mod.MDResume | None:
    """Segment ``number``'s checkpoint, or None (it never started, or it ended)."""
    doc = _checkpoint_doc(db, name, number)
    if doc is None:
        return None
    ensemble = mdl.Ensemble.from_bytes(records.get_bytes(db, ObjectId(doc["model_file"])))
    frames = records.get_structures(db, ObjectId(doc["frames_file"])) if doc["frames_file"] else []
    saved = md_mod.MDState.from_frame(records.get_structure(db, ObjectId(doc["state_file"])))
    segment = md_mod.segment_from(doc["segment"], frames, saved)
    return md_mod.MDResume(ensemble, doc.get("training"), doc.get("oos") or {}, segment)


def checkpoint_model(db: Database, name: str, number: int) -> str | None:
    """The model file segment ``number``'s checkpoint holds (the record takes it over)."""
    doc = _checkpoint_doc(db, name, number)
    return doc["model_file"] if doc else None


def drop_checkpoint(db: Database, name: str, number: int, keep_model: bool) -> None:
    """Delete segment ``number``'s checkpoint and its files (its model kept when the record
    took it over)."""
    doc = _checkpoint_doc(db, name, number)
    if doc is None:
        return
    for key in ("state_file", "frames_file", *(() if keep_model else ("model_file",))):
        if doc.get(key):
            records.delete_file(db, ObjectId(doc[key]))
    records.delete_iteration(db, name, CHECKPOINT, number)
