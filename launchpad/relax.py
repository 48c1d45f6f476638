"""The relaxation phase of a campaign and its transfer targets (Sec. V C–D of Zeng, Chen,
Peterson, J. Chem. Phys. 156, 064104 (2022)).

Relax round 0 relaxes the target with the model kept by the NFT phase. While the largest δ
met along the trajectory is above the threshold and still improving, chunks are cut from the
trajectory's uncertain atoms (CUR on their descriptors, or the most uncertain), labelled, and
relax round r+1 retrains on all labels (warm start) and relaxes again from the same start.
Every round is one record in ``nft_iterations`` with ``phase: relax``; its
``structure_uncertainty`` is the trajectory's largest δ, so the kept round is chosen by the
same rule as in the NFT phase.

Transfer targets are then relaxed with the final model without new data (``phase:
transfer``); one whose δ along the way exceeds twice the trained target's is flagged and, if
its ``retrain`` is set, becomes a follow-up campaign that runs NFT on it.
"""

from __future__ import annotations

import contextlib
import logging
from typing import Any

from bson import ObjectId
from pymongo.database import Database

from nft_fw.labels.phase import Phase
from nft_fw.launchpad import campaigns, records
from nft_fw.potential import model as mdl
from nft_fw.spec.campaign import CampaignSpec, follow_up_name, follow_up_spec
from nft_fw.steps import kept

log = logging.getLogger(__name__)


def load(db: Database, record: dict[str, Any]) -> mdl.Ensemble:
    return mdl.Ensemble.from_bytes(records.get_bytes(db, ObjectId(record["model_file"])))


def _kept_round(db: Database, name: str) -> dict[str, Any] | None:
    rounds = records.iterations(db, name, phase=Phase.RELAX)
    if not rounds:
        return None
    return rounds[kept.kept_round(rounds, campaigns.load_spec(db, name))]


def relaxed_model(db: Database, name: str) -> tuple[mdl.Ensemble, dict[str, Any]]:
    """The model the phases before MD kept: the kept relax round's if the campaign relaxed,
    else the kept NFT iteration's."""
    rec = _kept_round(db, name)
    if rec is None:
        return campaigns.best_model(db, name)
    return campaigns.with_calibration(db, name, load(db, rec)), rec


def final_model(db: Database, name: str) -> tuple[mdl.Ensemble, dict[str, Any]]:
    """The campaign's model: the last MD segment's if it ran MD (trained on every label,
    those of its pauses included), else :func:`relaxed_model`."""
    segments = records.iterations(db, name, phase=Phase.MD)
    if not segments:
        return relaxed_model(db, name)
    rec = segments[-1]
    return campaigns.with_calibration(db, name, load(db, rec)), rec


# ----------------------------------------------------------------------------- records


# Files a rerun keeps: the chunks of the next round, once submitted, and their labels refer
# to the trajectory frames they were cut from, so a label batch rerun later still finds them.
KEPT_ON_RERUN = frozenset({"frames_file"})


def replace_files(db: Database, name: str, phase: str, iteration: int) -> None:
    """A rerun replaces a record: drop the files of the one it replaces (but those in
    ``KEPT_ON_RERUN``)."""
    for old in records.iterations(db, name, phase=phase):
        if old["iteration"] == iteration:
            shared = set(old.get("shared_files", [])) | KEPT_ON_RERUN
            for key, value in old.items():
                if key.endswith("_file") and value and key not in shared:
                    records.delete_file(db, ObjectId(value))


# ----------------------------------------------------------------------------- relax rounds
# The relax Firework's body: load the relax step's inputs, call nft_fw.steps.step.relax_step,
# store its outputs.


# ----------------------------------------------------------------------------- transfer


def transfer_targets(db: Database, name: str) -> list[dict[str, Any]]:
    """[{name, file}] of the campaign's transfer targets, stored at submission."""
    return list(records.get_campaign(db, name).get("transfer_files", []))


def follow_up(db: Database, name: str, index: int) -> CampaignSpec:
    """Register the follow-up campaign of a flagged transfer target: NFT on it, starting from
    this campaign's final model and all its labels, with the target's ``follow_up`` settings
    and its ``prior_labels`` (stored with this campaign at submission) as its own. Returns its
    spec; a rerun finds the campaign registered and copies only labels still missing."""
    doc = records.get_campaign(db, name)
    spec = campaigns.stored_spec(doc)
    entry = transfer_targets(db, name)[index]
    child = follow_up_name(name, entry["name"])
    existing = db[records.CAMPAIGNS].find_one({"_id": child})
    if existing is not None:
        if existing.get("inherited_from") != name:
            raise records.CampaignExists(
                f"the follow-up campaign of transfer target {entry['name']!r} would be named "
                f"{child!r}, which another campaign in this database already uses; rename "
                "that campaign or the transfer target"
            )
        _copy_labels(db, name, child)
        return campaigns.stored_spec(existing)
    child_spec = follow_up_spec(spec, index)  # its follow_up settings and prior labels
    # the target's prior labels as the child's own (stored with the parent at submission)
    prior = {k: entry[k] for k in ("prior_file", "prior") if k in entry}
    _, source = relaxed_model(db, name)
    # a concurrent run of this task may register it first: then this one only copies labels
    with contextlib.suppress(records.CampaignExists):
        records.create_campaign(
            db,
            child,
            child_spec.model_dump(mode="json"),
            target_file=entry["file"],
            n_atoms=len(records.get_structures(db, ObjectId(entry["file"]))[0]),
            elements=list(doc["elements"]),
            chunk_radius_A=doc["chunk_radius_A"],
            parent_hash=doc["parent_hash"],
            warnings=list(doc.get("warnings", [])),
            inherited_from=name,
            inherited_model_file=source["model_file"],
            **prior,
        )
    _copy_labels(db, name, child)
    return child_spec


def _copy_labels(db: Database, name: str, child: str) -> None:
    """Every label of campaign ``name`` as a label of ``child`` (once: labels are upserts)."""
    for label in records.labels(db, name):
        copy = {k: v for k, v in label.items() if k != "_id"}
        copy["campaign"] = child
        copy["inherited_from"] = name
        if copy["kind"] == "chunk":
            copy["phase"] = Phase.INHERITED  # its centre indexes the parent's structures
        records.put_label(db, copy)
