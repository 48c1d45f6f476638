"""What the relax and transfer Fireworks of a campaign do (Sec. V C–D of Zeng, Chen, Peterson,
J. Chem. Phys. 156, 064104 (2022)): load a relax round's inputs, call
:func:`nft_fw.steps.step.relax_step`, store the outputs and name the chunks of the next round; relax
a transfer target with the final model and record δ along the way. Storage and the queries
they need live in :mod:`nft_fw.launchpad.relax`.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from typing import Any

from bson import ObjectId
from pymongo.database import Database

from nft_fw.firetasks import iteration as nft_tasks
from nft_fw.labels.phase import Phase
from nft_fw.launchpad import campaigns, records
from nft_fw.launchpad import relax as relax_store
from nft_fw.potential import model as mdl
from nft_fw.steps import decision, step

log = logging.getLogger(__name__)


@dataclasses.dataclass
class RoundOutcome:
    """The round's record; ``stop`` set when retraining ends, else the chunks to label."""

    record: dict[str, Any]
    stop: decision.Stop | None
    items: list[dict[str, Any]]


def _round_model(
    db: Database, name: str, number: int, rounds: list[dict[str, Any]]
) -> tuple[mdl.Ensemble, dict[str, Any] | None, dict[str, Any]]:
    """The model a round starts from, the record it came from (round 0: the NFT phase's
    kept iteration) and ``model_from``."""
    if number == 0:
        model, source = campaigns.best_model(db, name)
        return model, source, {"phase": Phase.NFT, "iteration": source["iteration"]}
    if not rounds or rounds[-1]["iteration"] != number - 1:
        raise RuntimeError(
            f"campaign {name}: relax round {number - 1} has no record; rerun its Firework"
        )
    model_from = {"phase": Phase.RELAX, "iteration": number - 1}
    return relax_store.load(db, rounds[-1]), None, model_from


def _store_round(
    db: Database, name: str, number: int, out: step.RelaxOutcome, source: dict[str, Any] | None
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Store the round's searched frames, relaxed structure, model (round 0: point at the
    NFT phase's) and the prior chunks it asked for; return its record (not yet written) and
    the label items of the next round."""
    trajectory = out.trajectory
    relax_store.replace_files(db, name, Phase.RELAX, number)
    frames_id = records.put_structures(
        db, [trajectory.frames[f] for f in out.searched], f"{name}/relax/frames-{number}.extxyz"
    )
    final_id = records.put_structures(db, [trajectory.final], f"{name}/relax/final-{number}.extxyz")
    record = {**out.record, "frames_file": str(frames_id), "final_file": str(final_id)}
    # the prior labels' chunks of the next round: their label items cut from a file of them
    items = nft_tasks.request_items(
        db, name, Phase.RELAX, number, out.requests, str(frames_id), record
    )
    if source is None:
        record["model_file"] = str(
            records.put_bytes(
                db, out.ensemble.to_bytes(), f"{name}/relax/model-{number}.nftm", kind="model"
            )
        )
    else:  # round 0 relaxes with the NFT phase's model: its record points at that file
        record["model_file"] = source["model_file"]
        record["shared_files"] = ["model_file"]
    return record, items


def relax_round(db: Database, name: str, number: int, fw_id: int | None = None) -> RoundOutcome:
    """Relax round ``number`` (:func:`nft_fw.steps.step.relax_step`): for r > 0 retrain on all
    labels starting from round r−1's model, relax the target, record, and choose the chunks
    of the next round."""
    t_start = time.perf_counter()
    campaigns.import_offline_labels(db, name)
    prepared = campaigns.context(db, name)
    rounds = [r for r in records.iterations(db, name, Phase.RELAX) if r["iteration"] < number]
    model, source, model_from = _round_model(db, name, number, rounds)
    start, started_from = None, None
    if number > 0 and prepared.spec.relax is not None and prepared.spec.relax.resume != "start":
        frames = records.get_structures(db, ObjectId(rounds[-1]["frames_file"]))
        start, started_from = step.relax_start(prepared.spec, rounds[-1], frames)
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
            true_start_forces=nft_tasks.validation_forces(db, name),
            known=lambda h: h in failed or records.has_label(db, name, h, parent_hash),
            features=step.CachedFeatures(campaigns.FeatureStore(db, name)),
            start=start,
            started_from=started_from,
        )
    )
    record, items = _store_round(db, name, number, out, source)
    record["fw_id"] = fw_id
    record["timings"] = {**out.record["timings"], "total_s": time.perf_counter() - t_start}
    records.put_iteration(db, record)
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
        len(out.trajectory.steps),
        out.trajectory.max_uncertainty,
        out.stop.reason if out.stop else f"{len(items)} chunks",
    )
    return RoundOutcome(record=record, stop=out.stop, items=items)


def transfer(db: Database, name: str, index: int, fw_id: int | None = None) -> dict[str, Any]:
    """Transfer target ``index`` (:func:`nft_fw.steps.step.transfer_step`): load the target and the
    model the phases before MD kept, call the step, store the relaxed structure and the
    record."""
    t_start = time.perf_counter()
    prepared = campaigns.context(db, name)
    entry = relax_store.transfer_targets(db, name)[index]
    atoms = records.get_structures(db, ObjectId(entry["file"]))[0]
    ensemble, source = relax_store.relaxed_model(db, name)
    out = step.transfer_step(
        step.TransferInputs(prepared, index, entry["name"], atoms, ensemble, source)
    )
    relax_store.replace_files(db, name, Phase.TRANSFER, index)
    final_id = records.put_structures(
        db, [out.trajectory.final], f"{name}/transfer/{entry['name']}-final.extxyz"
    )
    record = out.record
    record["timings"]["total_s"] = time.perf_counter() - t_start
    record.update(final_file=str(final_id), fw_id=fw_id)
    records.put_iteration(db, record)
    log.info(
        "campaign %s transfer %s (%d atoms): %d steps, δ max %.3f eV/Å (%.1f× trained)%s",
        name,
        entry["name"],
        len(atoms),
        record["n_steps"],
        record["structure_uncertainty"],
        record["uncertainty_ratio"],
        ", flagged" if record["flagged"] else "",
    )
    return record
