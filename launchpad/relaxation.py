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
import dataclasses
import logging
import time
from typing import Any

from bson import ObjectId
from pymongo.database import Database

from nft_fw import decision, step
from nft_fw import model as mdl
from nft_fw.calculator import EnsembleCalculator
from nft_fw.campaign import CampaignSpec
from nft_fw.launchpad import campaigns, records
from nft_fw.relax import relax

log = logging.getLogger(__name__)

FLAG_RATIO = 2.0  # a transfer target whose δ is this many times the trained target's is flagged


def _load(db: Database, record: dict[str, Any]) -> mdl.Ensemble:
    return mdl.Ensemble.from_bytes(records.get_bytes(db, ObjectId(record["model_file"])))


def _kept_round(db: Database, name: str) -> dict[str, Any] | None:
    rounds = records.iterations(db, name, phase="relax")
    if not rounds:
        return None
    return rounds[step.kept_round(rounds, campaigns.load_spec(db, name))]


def final_model(db: Database, name: str) -> tuple[mdl.Ensemble, dict[str, Any]]:
    """The campaign's model: the kept relax round's if the campaign relaxed, else the kept
    NFT iteration's."""
    rec = _kept_round(db, name)
    if rec is None:
        return campaigns.best_model(db, name)
    return campaigns.with_calibration(db, name, _load(db, rec)), rec


def trained_uncertainty(db: Database, name: str) -> float:
    """The δ the final model reaches on its own target: the largest along the kept
    relaxation, or the kept NFT iteration's structure uncertainty."""
    return float(final_model(db, name)[1]["structure_uncertainty"])


# ----------------------------------------------------------------------------- records


# Files a rerun keeps: the chunks of the next round, once submitted, and their labels refer
# to the trajectory frames they were cut from, so a label batch rerun later still finds them.
KEPT_ON_RERUN = frozenset({"frames_file"})


def _replace_files(db: Database, name: str, phase: str, iteration: int) -> None:
    """A rerun replaces a record: drop the files of the one it replaces (but those in
    ``KEPT_ON_RERUN``)."""
    for old in records.iterations(db, name, phase=phase):
        if old["iteration"] == iteration:
            shared = set(old.get("shared_files", [])) | KEPT_ON_RERUN
            for key, value in old.items():
                if key.endswith("_file") and value and key not in shared:
                    records.delete_file(db, ObjectId(value))


# ----------------------------------------------------------------------------- relax rounds
# The relax Firework's body: load the relax step's inputs, call nft_fw.step.relax_step,
# store its outputs.


@dataclasses.dataclass
class RoundOutcome:
    """The round's record; ``stop`` set when retraining ends, else the chunks to label."""

    record: dict[str, Any]
    stop: decision.Stop | None
    items: list[dict[str, Any]]


def relax_round(db: Database, name: str, number: int, fw_id: int | None = None) -> RoundOutcome:
    """Relax round ``number`` (:func:`nft_fw.step.relax_step`): for r > 0 retrain on all
    labels starting from round r−1's model, relax the target, record, and choose the chunks
    of the next round."""
    t_start = time.perf_counter()
    campaigns.import_offline_labels(db, name)
    prepared = campaigns.context(db, name)
    rounds = [r for r in records.iterations(db, name, "relax") if r["iteration"] < number]
    if number == 0:
        model, source = campaigns.best_model(db, name)
        model_from = {"phase": "nft", "iteration": source["iteration"]}
    else:
        if not rounds or rounds[-1]["iteration"] != number - 1:
            raise RuntimeError(
                f"campaign {name}: relax round {number - 1} has no record; rerun its Firework"
            )
        model = _load(db, rounds[-1])
        model_from = {"phase": "relax", "iteration": number - 1}
    parent_hash = prepared.parent.settings_hash
    # chunks the parent could not label (nft_failures) are not offered again
    failed = {d["hash"] for d in records.failures(db, name) if d["parent_hash"] == parent_hash}
    out = step.relax_step(
        step.RelaxInputs(
            prepared,
            number,
            model,
            model_from,
            campaigns.stored_images(db, name),
            campaigns.stored_chunks(db, name),
            history=records.iterations(db, name),
            rounds=rounds,
            true_start_forces=campaigns.validation_forces(db, name),
            known=lambda h: h in failed or records.has_label(db, name, h, parent_hash),
            features=campaigns.StoredFeatures(db, name),
        )
    )
    trajectory = out.trajectory
    _replace_files(db, name, "relax", number)
    frames_id = records.put_structures(
        db, [trajectory.frames[f] for f in out.searched], f"{name}/relax/frames-{number}.extxyz"
    )
    final_id = records.put_structures(db, [trajectory.final], f"{name}/relax/final-{number}.extxyz")
    record = {**out.record, "frames_file": str(frames_id), "final_file": str(final_id)}
    if number > 0:
        record["model_file"] = str(
            records.put_bytes(
                db, out.ensemble.to_bytes(), f"{name}/relax/model-{number}.nftm", kind="model"
            )
        )
    else:  # round 0 relaxes with the NFT phase's model: its record points at that file
        record["model_file"] = source["model_file"]
        record["shared_files"] = ["model_file"]
    record["fw_id"] = fw_id
    record["timings"] = {**out.record["timings"], "total_s": time.perf_counter() - t_start}
    records.put_iteration(db, record)
    items = [campaigns.chunk_item(r, str(frames_id)) for r in out.requests]
    if out.stop is not None:
        records.update_campaign(
            db,
            name,
            state="relaxed",
            relax_round=number,
            relax_stop_reason=out.stop.reason,
            relax_stop_detail=out.stop.detail,
        )
    else:
        records.update_campaign(db, name, state="relaxing", relax_round=number)
    log.info(
        "campaign %s relax round %d: %d steps, trajectory δ max %.3f eV/Å, %s",
        name,
        number,
        len(trajectory.steps),
        trajectory.max_uncertainty,
        out.stop.reason if out.stop else f"{len(items)} chunks",
    )
    return RoundOutcome(record=record, stop=out.stop, items=items)


# ----------------------------------------------------------------------------- transfer


def transfer_targets(db: Database, name: str) -> list[dict[str, Any]]:
    """[{name, file}] of the campaign's transfer targets, stored at submission."""
    return list(records.get_campaign(db, name).get("transfer_files", []))


def transfer(db: Database, name: str, index: int, fw_id: int | None = None) -> dict[str, Any]:
    """Relax transfer target ``index`` with the final model, without new data; record δ along
    the way and whether it is flagged (largest δ ≥ FLAG_RATIO × the trained target's)."""
    t_start = time.perf_counter()
    prepared = campaigns.context(db, name)
    rs = step.relax_settings(prepared.spec)
    entry = transfer_targets(db, name)[index]
    atoms = records.get_structures(db, ObjectId(entry["file"]))[0]
    ensemble, source = final_model(db, name)
    trajectory = relax(atoms, EnsembleCalculator(ensemble), rs.fmax, rs.max_steps, rs.optimizer)
    t_relax = time.perf_counter() - t_start
    reference = float(source["structure_uncertainty"])
    reference_end = float(source.get("final_max_uncertainty", reference))
    validation = step.validate_relaxation(prepared, trajectory, None)
    _replace_files(db, name, "transfer", index)
    final_id = records.put_structures(
        db, [trajectory.final], f"{name}/transfer/{entry['name']}-final.extxyz"
    )
    figures = step.trajectory_figures(trajectory)
    record = {
        "campaign": name,
        "phase": "transfer",
        "iteration": index,
        "name": entry["name"],
        "n_atoms": len(atoms),
        **figures,
        **validation,
        "trained_uncertainty": reference,
        "uncertainty_ratio": figures["structure_uncertainty"] / reference,
        "flagged": bool(figures["structure_uncertainty"] >= FLAG_RATIO * reference),
        # at the relaxed end: a rattled start is unfamiliar to any model, a shape stays so
        "trained_end_uncertainty": reference_end,
        "end_uncertainty_ratio": figures["final_max_uncertainty"] / reference_end,
        "flagged_at_end": bool(figures["final_max_uncertainty"] >= FLAG_RATIO * reference_end),
        "model_from": {"phase": source["phase"], "iteration": source["iteration"]},
        "timings": {"relax_s": t_relax, "total_s": time.perf_counter() - t_start},
        "final_file": str(final_id),
        "fw_id": fw_id,
    }
    records.put_iteration(db, record)
    log.info(
        "campaign %s transfer %s (%d atoms): %d steps, δ max %.3f eV/Å (%.1f× trained)%s",
        name,
        entry["name"],
        len(atoms),
        figures["n_steps"],
        figures["structure_uncertainty"],
        record["uncertainty_ratio"],
        ", flagged" if record["flagged"] else "",
    )
    return record


def follow_up(db: Database, name: str, index: int) -> CampaignSpec:
    """Register the follow-up campaign of a flagged transfer target: NFT on it, starting from
    this campaign's final model and all its labels. Returns its spec; a rerun finds the
    campaign registered and copies only labels still missing."""
    doc = records.get_campaign(db, name)
    spec = campaigns.stored_spec(doc)
    entry = transfer_targets(db, name)[index]
    child = f"{name}-{entry['name']}"[:64]
    existing = db[records.CAMPAIGNS].find_one({"_id": child}, {"spec": 1, "inherited_from": 1})
    if existing is not None:
        if existing.get("inherited_from") != name:
            raise records.CampaignExists(
                f"the follow-up campaign of transfer target {entry['name']!r} would be named "
                f"{child!r}, which another campaign in this database already uses; rename "
                "that campaign or the transfer target"
            )
        _copy_labels(db, name, child)
        return campaigns.stored_spec(existing)
    target = spec.transfer[index].model_dump(mode="json", exclude={"name", "retrain"})
    data = spec.model_dump(mode="json")
    data.update(name=child, target=target, transfer=[])
    child_spec = CampaignSpec.model_validate(data)
    _, source = final_model(db, name)
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
            copy["phase"] = "inherited"  # its centre indexes the parent's structures
        records.put_label(db, copy)
