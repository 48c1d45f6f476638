"""The service side of a campaign: what the init, label, train and report Fireworks do.

Each function reads what it needs from the database (never from a parent Firework's
output), calls the science core in :mod:`nft_fw`, and writes records back. FireTasks
wrap them; the CLI calls the read-only ones.
"""

from __future__ import annotations

import logging
import socket
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from ase import Atoms
from bson import ObjectId
from pymongo.database import Database

from nft_fw.labels import label as labeldoc
from nft_fw.labels import prior as prior_mod
from nft_fw.labels.phase import Phase
from nft_fw.launchpad import records
from nft_fw.parents.parent import LabelFailed, Parent, get_parent
from nft_fw.potential import model as mdl
from nft_fw.potential import training as tr
from nft_fw.spec.amend import amend as amended
from nft_fw.spec.campaign import CampaignSpec, Prepared
from nft_fw.steps import kept
from nft_fw.structures import initial

log = logging.getLogger(__name__)

# ----------------------------------------------------------------------------- context


def load_spec(db: Database, name: str) -> CampaignSpec:
    return stored_spec(records.get_campaign(db, name))


def stored_spec(doc: dict[str, Any]) -> CampaignSpec:
    """The campaign file a campaign was submitted with (refused, naming ``nft-fw db
    migrate``, when stored under an older schema)."""
    records.require_schema(doc)
    return CampaignSpec.model_validate(doc["spec"])


def require_parent_hash(db: Database, doc: dict[str, Any]) -> None:
    """Refuse, with the way out, an NFT campaign whose stored labels carry a parent-settings
    hash other than the one this nft-fw computes for its parent: labelled by a release that
    hashed the settings differently (nft-fw 0.4.0 hashed GPAW's ``mixer``), its workers
    would not find those labels and would label the chunks again, beside them."""
    if records.kind(doc) != "nft":
        return
    spec = stored_spec(doc)
    current = get_parent(spec.parent.name, spec.parent.params).settings_hash
    old = db[records.LABELS].find_one(
        {"campaign": doc["_id"], "parent_hash": {"$ne": current}}, {"parent_hash": 1}
    )
    if old is None:
        return
    raise records.OldLayoutError(
        f"campaign {doc['_id']!r} holds labels under parent-settings hash "
        f"{old['parent_hash'][:12]}…, and this nft-fw hashes its parent settings to "
        f"{current[:12]}… (nft-fw 0.4.1 leaves GPAW's mixer out of the hash): its workers "
        "would label those chunks again. Finish it with the nft-fw version that submitted it, "
        "or export its labels (nft-fw labels NAME --export FILE) and submit the campaign file "
        "again under a new name with prior_labels: {file: FILE} (docs/upgrading.md)"
    )


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
    transfer_files: list[dict[str, Any]] = []
    priors = prepared.transfer_priors or [None] * len(prepared.transfers)
    for (label, atoms), prior in zip(prepared.transfers, priors, strict=True):
        entry: dict[str, Any] = {
            "name": label,
            "file": str(
                records.put_structures(db, [atoms], f"{spec.name}/transfer/{label}.extxyz")
            ),
        }
        if prior is not None:  # its follow-up's prior labels, kept until it is registered
            entry["prior_file"] = str(
                records.put_structures(
                    db, prior_mod.frames(prior), f"{spec.name}/transfer/{label}-prior.extxyz"
                )
            )
            entry["prior"] = dict(prior_mod.summary(prior))
        transfer_files.append(entry)
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
                db, labeldoc.image_doc(spec.name, prepared.parent.settings_hash, image, 0.0, None)
            )


# ----------------------------------------------------------------------------- init


# ----------------------------------------------------------------------------- labels


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


# ----------------------------------------------------------------------------- offline labels
# FireWorks offline mode (rlaunch singleshot --offline) runs a Firework from FW.json with no
# database. Label Fireworks of a campaign with service.offline_labels carry what they need
# (offline_items) and return their label documents in the FWAction (label_offline);
# lpad recover_offline stores that in the launch, and the next trainer copies the labels
# into nft_labels (import_offline_labels), idempotently under the labels' unique key.

OFFLINE_LABELS_KEY = "offline_labels"


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
# What a trainer Firework loads and stores; it computes in nft_fw.steps.step.


class FeatureStore:
    """Chunk geometry features (G, K, species) by descriptor-settings hash and chunk hash in
    the database (``nft_features``; a derived cache: losing it costs only recomputation);
    the store behind :class:`nft_fw.steps.step.CachedFeatures`."""

    def __init__(self, db: Database, name: str) -> None:
        self.db, self.name = db, name

    def get(
        self, spec_hash: str, hashes: Sequence[str]
    ) -> dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]]:
        return records.get_features(self.db, self.name, spec_hash, hashes)

    def put(
        self, spec_hash: str, chunk_hash: str, g: np.ndarray, k: np.ndarray, species: np.ndarray
    ) -> None:
        records.put_features(self.db, self.name, spec_hash, chunk_hash, g, k, species)


def stored_images(db: Database, name: str) -> list[tr.Image]:
    """The campaign's labelled initial images."""
    return [labeldoc.image_label(d) for d in records.labels(db, name, kind="image")]


def stored_chunks(db: Database, name: str) -> list[labeldoc.ChunkLabel]:
    """Every chunk label of the campaign (NFT, relaxation and inherited ones)."""
    return [labeldoc.chunk_label(d) for d in records.labels(db, name, kind="chunk")]


def load_model(db: Database, name: str, iteration: int) -> mdl.Ensemble | None:
    for rec in records.iterations(db, name):
        if rec["iteration"] == iteration and rec.get("model_file"):
            return mdl.Ensemble.from_bytes(records.get_bytes(db, ObjectId(rec["model_file"])))
    return None


def inherited_model(db: Database, name: str) -> mdl.Ensemble | None:
    """The model a follow-up campaign starts from (see :mod:`nft_fw.launchpad.relax`)."""
    doc = records.get_campaign(db, name)
    if not doc.get("inherited_model_file"):
        return None
    return mdl.Ensemble.from_bytes(records.get_bytes(db, ObjectId(doc["inherited_model_file"])))


def failed_nft_centres(db: Database, name: str) -> set[int]:
    """Target atoms whose NFT chunk the parent could not label with any retry."""
    return {
        int(d["centre"])
        for d in records.failures(db, name)
        if d["kind"] == "chunk" and d.get("phase", Phase.NFT) == Phase.NFT
    }


# ----------------------------------------------------------------------------- read side


def best_model(db: Database, name: str) -> tuple[mdl.Ensemble, dict[str, Any]]:
    """The model of the kept NFT iteration (:func:`nft_fw.steps.kept.kept_iteration`) with the
    campaign's latest calibration of δ, and its record."""
    history = records.iterations(db, name)
    if not history:
        raise KeyError(f"campaign {name!r} has no trained iteration yet")
    rec = history[kept.kept_iteration(history, load_spec(db, name))]
    ensemble = mdl.Ensemble.from_bytes(records.get_bytes(db, ObjectId(rec["model_file"])))
    return with_calibration(db, name, ensemble), rec


def with_calibration(db: Database, name: str, ensemble: mdl.Ensemble) -> mdl.Ensemble:
    """``ensemble`` carrying the latest calibration of δ its campaign recorded, NFT
    iterations, relax rounds, then MD segments (``meta.calibration``;
    :mod:`nft_fw.potential.calibration`)."""
    every = [
        r
        for phase in (Phase.NFT, Phase.RELAX, Phase.MD)
        for r in records.iterations(db, name, phase)
    ]
    ensemble.meta.update(kept.calibration_meta(every, name))
    return ensemble


def amend(db: Database, name: str, settings: Mapping[str, Any]) -> dict[str, list[Any]]:
    """Change the settings of campaign ``name`` for what it has not done yet
    (:func:`nft_fw.spec.amend.amend`); the change is kept in the campaign's ``amendments`` with
    its time and the values before. Returns the changes."""
    doc = records.get_campaign(db, name)
    spec, changes = amended(doc["spec"], settings)
    db[records.CAMPAIGNS].update_one(
        {"_id": name},
        {
            "$set": {"spec": spec, "updated": records.now()},
            "$push": {"amendments": {"time": records.now(), "changes": changes}},
        },
    )
    return changes
