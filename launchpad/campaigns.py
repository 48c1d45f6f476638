"""The service side of a campaign: what the init, label, train and report Fireworks do.

Each function reads what it needs from the database (never from a parent Firework's
output), calls the science core in :mod:`nft_fw`, and writes records back. FireTasks
wrap them; the CLI calls the read-only ones.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import socket
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from ase import Atoms
from bson import ObjectId
from pymongo.database import Database

from nft_fw import atoms_io, decision, initial, step
from nft_fw import descriptors as desc
from nft_fw import model as mdl
from nft_fw import prior as prior_mod
from nft_fw import training as tr
from nft_fw.campaign import CampaignSpec, Prepared
from nft_fw.chunks import cut
from nft_fw.launchpad import records
from nft_fw.parents import LabelFailed, Parent, SinglePoint, get_parent

log = logging.getLogger(__name__)

# ----------------------------------------------------------------------------- context


def load_spec(db: Database, name: str) -> CampaignSpec:
    return stored_spec(records.get_campaign(db, name))


def stored_spec(doc: dict[str, Any]) -> CampaignSpec:
    """The campaign file a campaign was submitted with. A campaign submitted by nft-fw 0.2
    (its stored nft section has no progress_measure) keeps the rule it started with: patience
    and the kept model by the largest δ, no minimum gain."""
    data = dict(doc["spec"])
    nft = dict(data.get("nft") or {})
    if "progress_measure" not in nft:
        nft.update(progress_measure="max_delta", min_gain=0.0)
        data["nft"] = nft
    return CampaignSpec.model_validate(data)


def context(db: Database, name: str) -> Prepared:
    """The campaign as the science core sees it, rebuilt from the database alone (a worker
    on another machine has none of the submitter's files)."""
    doc = records.get_campaign(db, name)
    spec = stored_spec(doc)
    target = records.get_structure(db, ObjectId(doc["target_file"]))
    elements = tuple(doc["elements"])
    prior = None
    if doc.get("prior_file"):
        prior = prior_mod.from_frames(
            records.get_structures(db, ObjectId(doc["prior_file"])), doc["prior"]["file"]
        )
    return Prepared(
        spec=spec,
        target=target,
        parent=get_parent(spec.parent.name, spec.parent.params),
        elements=elements,
        chunk_radius_A=float(doc["chunk_radius_A"]),
        warnings=list(doc.get("warnings", [])),
        initial_frames=None,
        prior=prior,
    )


def register(db: Database, prepared: Prepared) -> None:
    """Create the campaign record with its target (and labelled initial file) in GridFS."""
    spec = prepared.spec
    target_id = records.put_structures(db, [prepared.target], f"{spec.name}/target.extxyz")
    records.create_campaign(
        db,
        spec.name,
        spec.model_dump(mode="json"),
        target_file=str(target_id),
        n_atoms=len(prepared.target),
        elements=list(prepared.elements),
        chunk_radius_A=prepared.chunk_radius_A,
        parent_hash=prepared.parent.settings_hash,
        warnings=prepared.warnings,
    )
    transfer_files = [
        {
            "name": label,
            "file": str(
                records.put_structures(db, [atoms], f"{spec.name}/transfer/{label}.extxyz")
            ),
        }
        for label, atoms in prepared.transfers
    ]
    if transfer_files:
        records.update_campaign(db, spec.name, transfer_files=transfer_files)
    if prepared.prior is not None:  # kept with the campaign: workers need no file
        prior_id = records.put_structures(
            db, prior_mod.frames(prepared.prior), f"{spec.name}/prior.extxyz"
        )
        records.update_campaign(
            db, spec.name, prior_file=str(prior_id), prior=dict(prior_mod.summary(prepared.prior))
        )
    if prepared.initial_frames is not None:
        for image in initial.from_file_frames(prepared.initial_frames):
            records.put_label(
                db, _image_doc(spec.name, prepared.parent.settings_hash, image, 0.0, None)
            )


# ----------------------------------------------------------------------------- init


def initial_items(db: Database, name: str) -> list[dict[str, Any]]:
    """Generate the initial structures (unless a labelled file was given), store them, and
    return the label items for round 0."""
    prepared = context(db, name)
    records.update_campaign(db, name, state="running", iteration=None)
    if prepared.spec.initial.file is not None:
        return []
    if records.get_campaign(db, name).get("inherited_from"):
        return []  # a follow-up campaign starts with its parent campaign's labels
    structures = step.initial_structures(prepared)
    file_id = records.put_structures(db, structures, f"{name}/initial.extxyz")
    records.update_campaign(db, name, initial_file=str(file_id))
    return [{"kind": "image", "source": str(file_id), "index": i} for i in range(len(structures))]


def validation_forces(db: Database, name: str) -> np.ndarray | None:
    """The parent's forces on the whole target (computed once, kept in GridFS)."""
    doc = records.get_campaign(db, name)
    if not doc["spec"]["validation"]["true_forces"]:
        return None
    if doc.get("true_forces_file"):
        return records.get_array(db, ObjectId(doc["true_forces_file"]))
    prepared = context(db, name)
    forces = step.target_forces(prepared)
    file_id = records.put_array(db, forces, f"{name}/true_forces.npy")
    records.update_campaign(db, name, true_forces_file=str(file_id))
    return forces


# ----------------------------------------------------------------------------- labels


def _image_doc(
    name: str, parent_hash: str, image: tr.Image, seconds: float, fw_id: int | None
) -> dict[str, Any]:
    a = image.atoms
    return {
        "campaign": name,
        "hash": image.id,
        "parent_hash": parent_hash,
        "kind": "image",
        "iteration": 0,
        "centre": None,
        **atoms_io.to_doc(a),
        "energy": float(image.energy),
        "forces": np.asarray(image.forces).tolist(),
        "seconds": seconds,
        "fw_id": fw_id,
    }


def _item_atoms(
    db: Database, sources: dict[tuple[str, int], Atoms], item: dict[str, Any]
) -> tuple[Atoms, str]:
    """The structure an item labels (the image, or the chunk with its centre first) and the
    hash its label is stored under; ``sources`` caches the stored structures."""
    src = item["source"]
    index = item["index"] if item["kind"] == "image" else item.get("frame", 0)
    if (src, index) not in sources:
        sources[src, index] = records.get_structure(db, ObjectId(src), index)
    if item["kind"] == "image":
        atoms = sources[src, index]
        return atoms, tr.structure_id(atoms)
    chunk = cut(sources[src, index], item["centre"], item["radius"])
    return chunk.atoms, chunk.hash


def parent_cost(result: SinglePoint) -> dict[str, Any]:
    """What a parent calculation cost and how it went, as label fields."""
    return {
        "seconds": result.seconds,
        "scf_iterations": result.scf_iterations,
        "peak_rss_MiB": result.peak_rss_MiB,
        "rss_growth_MiB": result.rss_growth_MiB,
        "attempt": result.attempt,
        "overrides": result.overrides,
        "retry_errors": result.retry_errors,
        "mpi_ranks": result.mpi_ranks,
        "host": socket.gethostname(),
        "log_path": None if result.log_path is None else str(result.log_path),
    }


def _label_doc(
    name: str,
    parent: Parent,
    item: dict[str, Any],
    atoms: Atoms,
    label_hash: str,
    fw_id: int | None,
    log_dir: Path | None = None,
) -> dict[str, Any]:
    """Run the parent on an item's ``atoms`` (with its retry policy; the calculator's logs
    go to ``log_dir``) and return the label document. Raises LabelFailed."""
    result = parent.single_point(atoms, log_dir=log_dir, tag=label_hash[:16])
    energy, forces = result.energy, result.forces
    if item["kind"] == "image":
        image = tr.Image(atoms=atoms, energy=energy, forces=forces, id=label_hash)
        return {**_image_doc(name, parent.settings_hash, image, 0.0, fw_id), **parent_cost(result)}
    forces = np.asarray(forces)
    return {
        "campaign": name,
        "hash": label_hash,
        "parent_hash": parent.settings_hash,
        "kind": "chunk",
        "phase": item.get("phase", "nft"),
        "iteration": item["iteration"],
        "centre": item["centre"],
        "source": item["source"],
        "radius": item["radius"],
        **atoms_io.to_doc(atoms),
        "central_force": forces[0].tolist(),
        "energy": float(energy),
        "forces": forces.tolist(),
        "fw_id": fw_id,
        **parent_cost(result),
    }


def store_parent_log(db: Database, name: str, path: str | None, label_hash: str) -> str | None:
    """Keep a parent's text log in GridFS; returns its id (None when there is no log)."""
    if not path or not Path(path).exists():
        return None
    file_id = records.put_bytes(
        db,
        Path(path).read_bytes(),
        f"{name}/logs/{Path(path).name}",
        kind="parent_log",
        hash=label_hash,
    )
    return str(file_id)


def record_failure(
    db: Database,
    name: str,
    parent: Parent,
    item: dict[str, Any],
    atoms: Atoms,
    label_hash: str,
    err: LabelFailed,
    fw_id: int | None,
    phase: str,
    iteration: int | None,
) -> None:
    """Keep an item the parent could not label with any retry in ``nft_failures`` (never as
    a label), with every attempt's error and its log in GridFS."""
    attempts = [
        {**a, "log_file": store_parent_log(db, name, a.get("log_path"), label_hash)}
        for a in err.attempts
    ]
    records.put_failure(
        db,
        {
            "campaign": name,
            "hash": label_hash,
            "parent_hash": parent.settings_hash,
            "kind": item["kind"],
            "phase": phase,
            "iteration": iteration,
            "centre": item.get("centre"),
            "radius": item.get("radius"),
            "n_atoms": len(atoms),
            "error": str(err),
            "attempts": attempts,
            "fw_id": fw_id,
            "host": socket.gethostname(),
        },
    )


class LabelError(RuntimeError):
    """Some items of a label Firework could not be labelled (recorded in nft_failures)."""


def label_items(
    db: Database,
    name: str,
    items: list[dict[str, Any]],
    fw_id: int | None = None,
    work_dir: Path | None = None,
) -> dict[str, int]:
    """Label the items (chunks around centres of a stored structure, or stored images) that
    have no label yet; returns counts of new and existing labels.

    Each parent calculation writes its text log under ``work_dir/parent-logs`` (default: the
    current directory, i.e. the Firework's launch directory); the log is kept in GridFS and
    its id stored on the label (``log_file``). An item the parent cannot label with any retry
    is recorded in ``nft_failures`` (never as a label); the other items are still labelled,
    then :class:`LabelError` is raised with the parent's errors, so the Firework fizzles.
    """
    parent = context(db, name).parent
    log_dir = (Path.cwd() if work_dir is None else Path(work_dir)) / "parent-logs"
    sources: dict[tuple[str, int], Atoms] = {}
    counts = {"new": 0, "existing": 0, "failed": 0}
    errors: list[str] = []
    for item in items:
        atoms, label_hash = _item_atoms(db, sources, item)
        if records.has_label(db, name, label_hash, parent.settings_hash):
            counts["existing"] += 1
            continue
        try:
            doc = _label_doc(name, parent, item, atoms, label_hash, fw_id, log_dir)
        except LabelFailed as err:
            counts["failed"] += 1
            where = f"centre {item['centre']}" if item["kind"] == "chunk" else "initial image"
            errors.append(f"{where} (hash {label_hash[:12]}): {err}")
            record_failure(
                db, name, parent, item, atoms, label_hash, err, fw_id,
                phase=item.get("phase", "nft"), iteration=item.get("iteration", 0),
            )  # fmt: skip
            log.error("campaign %s fw %s: %s failed: %s", name, fw_id, where, err)
            continue
        doc["log_file"] = store_parent_log(db, name, doc.get("log_path"), label_hash)
        if records.put_label(db, doc):
            counts["new"] += 1
            records.clear_failure(db, name, label_hash, parent.settings_hash)
        else:
            counts["existing"] += 1
    log.info("campaign %s fw %s: labels %s", name, fw_id, counts)
    if errors:
        raise LabelError(
            f"campaign {name} fw {fw_id}: {len(errors)} of {len(items)} items could not be "
            f"labelled (recorded in {records.FAILURES}; nft-fw status {name} lists them; the "
            "trainer proceeds without them): " + "; ".join(errors)
        )
    return counts


# ----------------------------------------------------------------------------- offline labels
# FireWorks offline mode (rlaunch singleshot --offline) runs a Firework from FW.json with no
# database. Label Fireworks of a campaign with service.offline_labels carry what they need
# (offline_items) and return their label documents in the FWAction (label_offline);
# lpad recover_offline stores that in the launch, and the next trainer copies the labels
# into nft_labels (import_offline_labels), idempotently under the labels' unique key.

OFFLINE_LABELS_KEY = "offline_labels"


def offline_items(db: Database, name: str, items: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """``items`` with what a worker without the database needs: each item's structure
    (``atoms``: the image, or the chunk cut from its stored source) and label ``hash``."""
    sources: dict[tuple[str, int], Atoms] = {}
    out = []
    for item in items:
        atoms, label_hash = _item_atoms(db, sources, item)
        out.append({**item, "hash": label_hash, "atoms": atoms_io.to_doc(atoms)})
    return out


def round_items(db: Database, name: str, items: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The items a round's label Fireworks carry: those the campaign's prior labels do not
    hold (:func:`take_prior`); with ``service.offline_labels`` each with its structure
    (:func:`offline_items`), else as they are."""
    items = take_prior(db, name, items)
    if load_spec(db, name).service.offline_labels:
        return offline_items(db, name, items)
    return items


def _prior_doc(
    name: str, parent_hash: str, item: dict[str, Any], atoms: Atoms, label_hash: str,
    given: prior_mod.PriorLabel,
) -> dict[str, Any]:  # fmt: skip
    """The label document of an item whose label the prior file holds: as the label
    Firework would store it, with the prior's energy and forces and where they came from
    (``prior_campaign``, ``prior_seconds``: what the original calculation cost). The label
    holds the prior's structure: the positions the parent computed its forces for."""
    atoms, forces = given.structure(), given.forces.copy()
    provenance = {
        "prior_campaign": given.campaign,
        "prior_parent_hash": given.parent_hash,
        "prior_seconds": given.seconds,
        "prior_scf_iterations": given.scf_iterations,
        "seconds": 0.0,
        "fw_id": None,
    }
    if item["kind"] == "image":
        image = tr.Image(atoms=atoms, energy=float(given.energy or 0.0), forces=forces,
                         id=label_hash)  # fmt: skip
        return {**_image_doc(name, parent_hash, image, 0.0, None), **provenance}
    return {
        "campaign": name,
        "hash": label_hash,
        "parent_hash": parent_hash,
        "kind": "chunk",
        "phase": item.get("phase", "nft"),
        "iteration": item["iteration"],
        "centre": item["centre"],
        "source": item["source"],
        "radius": item["radius"],
        **atoms_io.to_doc(atoms),
        "central_force": forces[0].tolist(),
        "energy": float(given.energy or 0.0),
        "forces": forces.tolist(),
        **provenance,
    }


def take_prior(db: Database, name: str, items: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Store the labels of ``items`` that the campaign's prior labels hold (no parent call)
    and return the other items, for label Fireworks. Idempotent: labels are upserts."""
    prepared = context(db, name)
    if prepared.prior is None:
        return items
    parent_hash = prepared.parent.settings_hash
    sources: dict[tuple[str, int], Atoms] = {}
    rest, taken = [], 0
    for item in items:
        atoms, label_hash = _item_atoms(db, sources, item)
        given = prepared.prior.get(label_hash)
        if given is None or given.kind != item["kind"] or given.energy is None:
            rest.append(item)
            continue
        records.put_label(db, _prior_doc(name, parent_hash, item, atoms, label_hash, given))
        taken += 1
    if taken:
        log.info("campaign %s: %d labels from its prior labels, %d to label", name, taken,
                 len(rest))  # fmt: skip
    return rest


def label_offline(
    name: str, parent: dict[str, Any], items: list[dict[str, Any]], fw_id: int | None = None
) -> list[dict[str, Any]]:
    """Label items made by :func:`offline_items` with ``parent`` ({name, params}) and no
    database; returns the label documents (stored later by :func:`import_offline_labels`)."""
    calc = get_parent(parent["name"], parent.get("params"))
    host = socket.gethostname()
    docs = []
    for item in items:
        if "atoms" not in item:
            raise ValueError(
                f"campaign {name} fw {fw_id}: a label item without 'atoms' cannot be labelled "
                "offline; submit the campaign with service.offline_labels: true"
            )
        doc = _label_doc(
            name,
            calc,
            item,
            atoms_io.from_doc(item["atoms"]),
            item["hash"],
            fw_id,
            Path.cwd() / "parent-logs",
        )
        doc["host"] = host
        docs.append(doc)
    log.info("campaign %s fw %s: %d labels offline", name, fw_id, len(docs))
    return docs


def import_offline_labels(db: Database, name: str) -> int:
    """Store the labels that recovered offline launches of the campaign's label Fireworks
    brought back; returns how many were new (a label already stored is left as it is)."""
    label_fws = [
        d["fw_id"]
        for d in db["fireworks"].find(
            {"spec.campaign": name, "spec.nft_role": "label"}, {"fw_id": 1}
        )
    ]
    field = f"action.stored_data.{OFFLINE_LABELS_KEY}"
    new = 0
    for launch in db["launches"].find(
        {"fw_id": {"$in": label_fws}, "state": "COMPLETED", field: {"$exists": True}},
        {field: 1},
    ):
        for doc in launch["action"]["stored_data"][OFFLINE_LABELS_KEY]:
            new += records.put_label(db, doc)
    if new:
        log.info("campaign %s: %d labels from offline launches stored", name, new)
    return new


# ----------------------------------------------------------------------------- training
# The trainer Firework's body: load the NFT step's inputs from the database, call
# nft_fw.step.nft_step, store its outputs. Nothing here computes.


@dataclasses.dataclass
class TrainOutcome:
    record: dict[str, Any]
    step: decision.Continue | decision.Stop
    items: list[dict[str, Any]]


class StoredFeatures:
    """Chunk features computed once per chunk and descriptor settings and cached in the
    database (``nft_features``; a derived cache: losing it costs only recomputation); a
    :data:`nft_fw.step.FeatureSource`."""

    def __init__(self, db: Database, name: str) -> None:
        self.db, self.name = db, name

    def __call__(
        self, labels: Sequence[step.ChunkLabel], spec: desc.DescriptorSpec
    ) -> list[tr.ChunkFeatures]:
        spec_hash = hashlib.sha256(json.dumps(spec.to_dict()).encode()).hexdigest()[:16]
        cached = records.get_features(self.db, self.name, spec_hash, [lb.hash for lb in labels])
        missing = [lb for lb in labels if lb.hash not in cached]
        fresh = {f.id: f for f in step.chunk_features(missing, spec)}
        for f in fresh.values():
            records.put_features(self.db, self.name, spec_hash, f.id, f.g, f.k, f.species)
        out = []
        for lb in labels:
            if lb.hash in fresh:
                out.append(fresh[lb.hash])
                continue
            g, k, species = cached[lb.hash]
            out.append(
                tr.ChunkFeatures(g=g, k=k, species=species, force=lb.central_force, id=lb.hash)
            )
        return out


def stored_images(db: Database, name: str) -> list[tr.Image]:
    """The campaign's labelled initial images."""
    return [records.image_label(d) for d in records.labels(db, name, kind="image")]


def stored_chunks(db: Database, name: str) -> list[step.ChunkLabel]:
    """Every chunk label of the campaign (NFT, relaxation and inherited ones)."""
    return [records.chunk_label(d) for d in records.labels(db, name, kind="chunk")]


def _load_model(db: Database, name: str, iteration: int) -> mdl.Ensemble | None:
    for rec in records.iterations(db, name):
        if rec["iteration"] == iteration and rec.get("model_file"):
            return mdl.Ensemble.from_bytes(records.get_bytes(db, ObjectId(rec["model_file"])))
    return None


def inherited_model(db: Database, name: str) -> mdl.Ensemble | None:
    """The model a follow-up campaign starts from (see :mod:`nft_fw.launchpad.relaxation`)."""
    doc = records.get_campaign(db, name)
    if not doc.get("inherited_model_file"):
        return None
    return mdl.Ensemble.from_bytes(records.get_bytes(db, ObjectId(doc["inherited_model_file"])))


def failed_nft_centres(db: Database, name: str) -> set[int]:
    """Target atoms whose NFT chunk the parent could not label with any retry."""
    return {
        int(d["centre"])
        for d in records.failures(db, name)
        if d["kind"] == "chunk" and d.get("phase", "nft") == "nft"
    }


def train(db: Database, name: str, iteration: int, fw_id: int | None = None) -> TrainOutcome:
    """NFT iteration ``iteration`` (:func:`nft_fw.step.nft_step`) on every label of the
    campaign so far: record it and decide. Rerunning it replaces the record and the model
    of that iteration."""
    t_start = time.perf_counter()
    import_offline_labels(db, name)
    prepared = context(db, name)
    previous = _load_model(db, name, iteration - 1) if iteration > 0 else None
    if previous is None and iteration == 0:
        previous = inherited_model(db, name)
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
        stored_images(db, name),
        stored_chunks(db, name),
        previous=previous,
        history=history,
        previous_prediction=prediction,
        true_forces=validation_forces(db, name),
        failed_centres=failed_nft_centres(db, name),
        features=StoredFeatures(db, name),
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
        source = records.get_campaign(db, name)["target_file"]
        items = [chunk_item(r, source) for r in out.requests]
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
    return TrainOutcome(record=record, step=out.decision, items=items)


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


# ----------------------------------------------------------------------------- read side


def best_model(db: Database, name: str) -> tuple[mdl.Ensemble, dict[str, Any]]:
    """The model of the kept NFT iteration (:func:`nft_fw.step.kept_iteration`) with the
    campaign's latest calibration of δ, and its record."""
    history = records.iterations(db, name)
    if not history:
        raise KeyError(f"campaign {name!r} has no trained iteration yet")
    rec = history[step.kept_iteration(history, load_spec(db, name))]
    ensemble = mdl.Ensemble.from_bytes(records.get_bytes(db, ObjectId(rec["model_file"])))
    return with_calibration(db, name, ensemble), rec


def with_calibration(db: Database, name: str, ensemble: mdl.Ensemble) -> mdl.Ensemble:
    """``ensemble`` carrying the latest calibration of δ its campaign recorded, NFT
    iterations then relax rounds (``meta.calibration``; :mod:`nft_fw.calibration`)."""
    every = records.iterations(db, name) + records.iterations(db, name, phase="relax")
    ensemble.meta.update(step.calibration_meta(every, name))
    return ensemble
