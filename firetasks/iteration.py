"""What the init and trainer Fireworks of an NFT campaign do: load the step's inputs from the
database, call the science core (:func:`nft_fw.steps.step.nft_step`), store its outputs and name
the next label items. Nothing here computes beyond that; nothing here stores but through
:mod:`nft_fw.launchpad`.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Sequence
from typing import Any

import numpy as np
from bson import ObjectId
from pymongo.database import Database

from nft_fw.launchpad import campaigns, records
from nft_fw.steps import decision, overlap, step

log = logging.getLogger(__name__)


def initial_items(db: Database, name: str) -> list[dict[str, Any]]:
    """Generate the initial structures (unless a labelled file was given), store them, and
    return the label items for round 0."""
    prepared = campaigns.context(db, name)
    records.update_campaign(db, name, state="running", iteration=None)
    if prepared.spec.initial.file is not None:
        return []
    if records.get_campaign(db, name).get("inherited_from"):
        return []  # a follow-up campaign starts with its parent campaign's labels
    structures = step.initial_structures(prepared)
    file_id = records.put_structures(db, structures, f"{name}/initial.extxyz")
    records.update_campaign(db, name, initial_file=str(file_id))
    return [{"kind": "image", "source": str(file_id), "index": i} for i in range(len(structures))]


def seed_items(db: Database, name: str) -> list[dict[str, Any]]:
    """The label items of the chunks asked for before the first model (``nft.seed_chunks``,
    overlapping rounds; :func:`nft_fw.steps.step.seed_requests`), their centres stored with
    the campaign (``seed_centres``) so every trainer counts them in flight; [] without."""
    prepared = campaigns.context(db, name)
    requests = step.seed_requests(prepared)
    if not requests:
        return []
    records.update_campaign(db, name, seed_centres=[r.centre for r in requests])
    source = records.get_campaign(db, name)["target_file"]
    return [chunk_item(r, source) for r in requests]


def validation_forces(db: Database, name: str) -> np.ndarray | None:
    """The parent's forces on the whole target (computed once, kept in GridFS)."""
    doc = records.get_campaign(db, name)
    if not doc["spec"]["validation"]["true_forces"]:
        return None
    if doc.get("true_forces_file"):
        return records.get_array(db, ObjectId(doc["true_forces_file"]))
    prepared = campaigns.context(db, name)
    forces = step.target_forces(prepared)
    file_id = records.put_array(db, forces, f"{name}/true_forces.npy")
    records.update_campaign(db, name, true_forces_file=str(file_id))
    return forces


@dataclasses.dataclass
class TrainOutcome:
    record: dict[str, Any]
    step: decision.Continue | decision.Stop
    items: list[dict[str, Any]]
    seeded: Sequence[int] = ()  # the campaign's seed chunks' centres (``seed_centres``)


def train(db: Database, name: str, iteration: int, fw_id: int | None = None) -> TrainOutcome:
    """NFT iteration ``iteration`` (:func:`nft_fw.steps.step.nft_step`) on every label of the
    campaign so far: record it and decide. Rerunning it replaces the record and the model
    of that iteration."""
    t_start = time.perf_counter()
    campaigns.import_offline_labels(db, name)
    prepared = campaigns.context(db, name)
    campaign = records.get_campaign(db, name)
    seeded = tuple(int(c) for c in campaign.get("seed_centres", ()))
    previous = campaigns.load_model(db, name, iteration - 1) if iteration > 0 else None
    if previous is None and iteration == 0:
        previous = campaigns.inherited_model(db, name)
    history = [r for r in records.iterations(db, name) if r["iteration"] < iteration]
    prediction = None
    if history:
        prediction = step.Prediction(
            records.get_array(db, ObjectId(history[-1]["forces_file"])),
            records.get_array(db, ObjectId(history[-1]["delta_file"])),
        )
    inputs = step.NFTInputs(
        prepared,
        iteration,
        campaigns.stored_images(db, name),
        campaigns.stored_chunks(db, name),
        previous=previous,
        history=history,
        previous_prediction=prediction,
        true_forces=validation_forces(db, name),
        failed_centres=campaigns.failed_nft_centres(db, name),
        features=step.CachedFeatures(campaigns.FeatureStore(db, name)),
        seeded=seeded,
    )
    t_loaded = time.perf_counter()
    out = step.nft_step(inputs)

    model_id = records.put_bytes(
        db, out.ensemble.to_bytes(), f"{name}/nft/model-{iteration}.nftm", kind="model"
    )
    delta_id = records.put_array(db, out.assessment.delta, f"{name}/nft/delta-{iteration}.npy")
    forces_id = records.put_array(
        db, out.assessment.mean_forces, f"{name}/nft/forces-{iteration}.npy"
    )
    for old in records.iterations(db, name):
        if old["iteration"] == iteration:  # a rerun: drop the files of the replaced record
            for key in ("model_file", "delta_file", "forces_file"):
                if old.get(key):
                    records.delete_file(db, ObjectId(old[key]))
    record = {
        **out.record,
        "model_file": str(model_id),
        "delta_file": str(delta_id),
        "forces_file": str(forces_id),
        "fw_id": fw_id,
    }
    record["timings"] = {
        "gather_s": t_loaded - t_start,
        **out.record["timings"],
        "total_s": time.perf_counter() - t_start,
    }
    records.put_iteration(db, record)
    items: list[dict[str, Any]] = []
    if isinstance(out.decision, decision.Continue):
        records.update_campaign(db, name, state="running", iteration=iteration)
        items = [chunk_item(r, campaign["target_file"]) for r in out.requests]
    else:
        records.update_campaign(
            db,
            name,
            state="trained",
            iteration=iteration,
            best_iteration=out.decision.best_iteration,
            stop_reason=out.decision.reason,
            stop_detail=out.decision.detail,
        )
    log.info(
        "campaign %s iteration %d (fw %s): δ max %.3f eV/Å, %s",
        name,
        iteration,
        fw_id,
        record["structure_uncertainty"],
        type(out.decision).__name__,
    )
    return TrainOutcome(record=record, step=out.decision, items=items, seeded=seeded)


def plan_next(db: Database, name: str, out: TrainOutcome, fw_id: int | None) -> bool:
    """Overlapping rounds: write what starts once enough chunks have arrived after trainer
    ``out`` — the next trainer, or after a stop what follows NFT once none is in flight —
    then count again; True when it may start at once (claimed by ``fw_id``, whose own
    append then carries it). A label arriving between the two reads sees the plan, one
    arriving before is counted: no start is missed, and one claimant starts it."""
    spec = campaigns.load_spec(db, name).nft
    asked = len(out.seeded) + sum(len(r.get("requested", ())) for r in records.iterations(db, name))
    iteration = out.record["iteration"] + 1
    # the chunks this trainer saw ended, from its own snapshot of the labels (an arrival
    # counted later is one it did not train on, so a start never comes early)
    baseline = asked - len(out.record["requested"]) - len(out.record["in_flight"])
    plan = {
        "iteration": iteration,
        "what": "train" if isinstance(out.step, decision.Continue) and out.items else "after",
        "baseline": baseline,
        "need": overlap.needed(spec.chunks_per_iteration, spec.next_round_after),
        "asked": asked,
    }
    if plan["what"] == "after":
        plan["need"] = max(asked - baseline, 0)
    records.set_next_trainer(db, name, plan)
    return claim_start(db, name, fw_id) is not None


def claim_start(db: Database, name: str, fw_id: int | None) -> dict[str, Any] | None:
    """Overlapping rounds, after a chunk arrived (or a trainer planned): the plan of what
    starts now if the arrivals since its trainer reach its need (or none is left in
    flight) and ``fw_id`` is the one claimant; else None."""
    doc = records.get_campaign(db, name)
    plan = doc.get("next_trainer")
    if not plan or plan.get("claimed_by") not in (None, fw_id):
        return None
    arrived = records.count_arrivals(db, name)
    if not overlap.starts(arrived - plan["baseline"], plan["need"], plan["asked"] - arrived):
        return None
    if not records.claim_next_trainer(db, name, plan["iteration"], fw_id):
        return None
    return plan


def chunk_item(request: step.ChunkRequest, source: str) -> dict[str, Any]:
    """The label item of a chunk request: its chunk is cut from stored structure ``source``
    (frame ``request.frame`` of it, for relaxation chunks)."""
    item: dict[str, Any] = {
        "kind": "chunk",
        "source": source,
        "centre": request.centre,
        "radius": request.radius,
        "iteration": request.iteration,
        "phase": request.phase,
    }
    if request.frame is not None:
        item["frame"] = request.frame
    return item


def request_items(
    db: Database,
    name: str,
    phase: str,
    number: int,
    requests: Sequence[step.ChunkRequest],
    frames_id: str,
    record: dict[str, Any],
) -> list[dict[str, Any]]:
    """The label items of a relax round's or MD segment's chunk requests: cut from its stored
    frames (``frames_id``), or — the prior labels' chunks it was given — from a file of those
    chunks stored beside them, each around its own atom 0 (the file's id goes into
    ``record["prior_chunks_file"]``)."""
    given = [r for r in requests if r.given is not None]
    items = [chunk_item(r, frames_id) for r in requests if r.given is None]
    if given:
        prior_id = str(
            records.put_structures(
                db, [r.given for r in given], f"{name}/{phase}/prior-chunks-{number}.extxyz"
            )
        )
        record["prior_chunks_file"] = prior_id
        items += [
            {**chunk_item(r, prior_id), "frame": j, "cut_centre": 0} for j, r in enumerate(given)
        ]
    return items
