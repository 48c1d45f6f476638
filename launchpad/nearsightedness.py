"""The service side of a nearsightedness campaign: register it, label its chunks, analyse.

A campaign file with ``kind: nearsightedness`` asks how far the parent's force on an atom
reaches (Zeng, Chen, Peterson, J. Chem. Phys. 156, 064104 (2022), Fig. 2): chunks of each
radius around each centre are labelled by FireWorks workers, then one Firework compares
their central forces with the whole structure's and with the largest chunk's
(:class:`nft_fw.steps.nearsightedness.Nearsightedness`).

Storage:

* ``nft_campaigns`` — the campaign record (``kind: nearsightedness``), with the GridFS ids of
  the target (exact extended XYZ: the chunks a worker cuts are bit-identical to the ones
  cut at submission) and of the chunk plan (which chunk each radius and centre is), and at
  the end the summary and the ids of the stored report.
* ``nft_ns_labels`` — one document per (campaign, hash, parent_hash), unique index, written
  by upsert: a rerun labels nothing twice, and chunks with equal contents are one label.
  These labels are never training data: trainers read ``nft_labels`` only.
* ``nft_failures`` — chunks (or the whole structure) the parent could not label with any
  retry, as for NFT campaigns (``phase: nearsightedness``).
* GridFS ``nft_files`` — target, plan, the whole structure's forces (``.npy``), parent logs,
  and the report: ``nearsightedness.json`` and ``nearsightedness.png``.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import numpy as np
from ase import Atoms
from bson import ObjectId
from pymongo import ASCENDING
from pymongo.database import Database
from pymongo.errors import DuplicateKeyError

from nft_fw.labels import files as labelset
from nft_fw.launchpad import records
from nft_fw.parents.parent import get_parent
from nft_fw.spec.campaign import NEARSIGHTEDNESS, NearsightednessSpec, PreparedNearsightedness
from nft_fw.steps import nearsightedness as ns
from nft_fw.structures import atoms_io
from nft_fw.structures.chunks import ChunkPlan

log = logging.getLogger(__name__)

NS_LABELS = "nft_ns_labels"
KIND = NEARSIGHTEDNESS
PHASE = NEARSIGHTEDNESS  # the phase of its failure records
REPORT_FILES = ("json", "figure", "html")


def ensure_indexes(db: Database) -> None:
    db[NS_LABELS].create_index(
        [("campaign", ASCENDING), ("hash", ASCENDING), ("parent_hash", ASCENDING)],
        unique=True,
        name="one_ns_label_per_chunk",
    )


def is_nearsightedness(doc: dict[str, Any]) -> bool:
    """Is this ``nft_campaigns`` document a nearsightedness campaign?"""
    return doc.get("kind") == KIND


def load_spec(db: Database, name: str) -> NearsightednessSpec:
    doc = records.get_campaign(db, name)
    if not is_nearsightedness(doc):
        raise KeyError(f"campaign {name!r} is not a nearsightedness campaign")
    return NearsightednessSpec.model_validate(doc["spec"])


# ----------------------------------------------------------------------------- register


def register(db: Database, prepared: PreparedNearsightedness) -> None:
    """Create the campaign record (the name is claimed first, so a taken name writes
    nothing), then store the target and the chunk plan in GridFS. Raises CampaignExists."""
    spec = prepared.spec
    ensure_indexes(db)
    records.create_campaign(
        db,
        spec.name,
        spec.model_dump(mode="json"),
        kind=KIND,
        n_atoms=len(prepared.target),
        elements=sorted(set(prepared.target.get_chemical_symbols())),
        parent_hash=prepared.parent.settings_hash,
        centres=prepared.centres,
        radii_A=prepared.radii,
        n_chunks=len(prepared.plan.distinct()),
        warnings=prepared.warnings,
    )
    target_id = records.put_structures(db, [prepared.target], f"{spec.name}/target.extxyz")
    plan_id = records.put_bytes(
        db,
        json.dumps(prepared.plan.to_dict()).encode(),
        f"{spec.name}/nearsightedness-plan.json",
        kind="plan",
    )
    records.update_campaign(db, spec.name, target_file=str(target_id), plan_file=str(plan_id))


# ----------------------------------------------------------------------------- labelling


def target(db: Database, file_id: str) -> Atoms:
    """A copy of the stored target (exact extended XYZ, as every stored structure)."""
    return records.get_structure(db, ObjectId(file_id))


def _plan(db: Database, doc: dict[str, Any]) -> ChunkPlan:
    return ChunkPlan.from_dict(json.loads(records.get_bytes(db, ObjectId(doc["plan_file"]))))


def full_hash(doc: dict[str, Any]) -> str:
    """The key of the whole structure's label: it is one per campaign."""
    return f"full:{doc['target_file']}"


def has_label(db: Database, campaign: str, label_hash: str, parent_hash: str) -> bool:
    query = {"campaign": campaign, "hash": label_hash, "parent_hash": parent_hash}
    return db[NS_LABELS].count_documents(query, limit=1) > 0


def put_label(db: Database, doc: dict[str, Any]) -> bool:
    """Insert a label unless one is stored under its (campaign, hash, parent_hash); True
    when it was new. A stored label is never overwritten."""
    key = {k: doc[k] for k in ("campaign", "hash", "parent_hash")}
    body = {k: v for k, v in doc.items() if k not in key}
    body.setdefault("created", records.now())
    try:
        res = db[NS_LABELS].update_one(key, {"$setOnInsert": body}, upsert=True)
    except DuplicateKeyError:  # two workers raced on the upsert: the other one won
        return False
    return res.upserted_id is not None


def labels(db: Database, campaign: str) -> list[dict[str, Any]]:
    """The nearsightedness labels of a campaign, by kind, radius and centre."""
    return list(
        db[NS_LABELS]
        .find({"campaign": campaign})
        .sort([("kind", ASCENDING), ("radius", ASCENDING), ("centre", ASCENDING)])
    )


def frames(db: Database, name: str) -> list[Atoms]:
    """The campaign's labels as export frames (:mod:`nft_fw.labels.files`): its chunks, and the
    whole structure when it was labelled, all of phase ``nearsightedness``."""
    doc = records.get_campaign(db, name)
    if not is_nearsightedness(doc):
        raise KeyError(f"campaign {name!r} is not a nearsightedness campaign")
    parent = doc["spec"]["parent"]
    whole = target(db, doc["target_file"])
    out = []
    for d in labels(db, name):
        if d["kind"] == "chunk":
            atoms, forces, centre, radius = (
                atoms_io.from_doc(d),
                d["forces"],
                d["centre"],
                d["radius"],
            )
        else:
            atoms, centre, radius = whole, None, None
            forces = records.get_array(db, ObjectId(d["forces_file"]))
        out.append(
            labelset.frame(
                atoms, kind=d["kind"], phase=NEARSIGHTEDNESS, number=0, forces=forces,
                energy=d["energy"], parent_hash=d["parent_hash"], label_hash=d["hash"],
                centre=centre, radius_A=radius, seconds=d.get("seconds"),
                scf_iterations=d.get("scf_iterations"), campaign=name,
                parent=parent["name"], parent_params=parent.get("params") or {},
            )
        )  # fmt: skip
    return out


# ----------------------------------------------------------------------------- analysis


def stored_labels(db: Database, name: str) -> ns.StoredLabels:
    """What the analysis of campaign ``name`` is made of, as stored so far: its plan, the
    chunk labels, the whole structure's label when there is one, and each missing item
    with the parent's error when it failed, else why there is no label."""
    doc = records.get_campaign(db, name)
    spec = NearsightednessSpec.model_validate(doc["spec"])
    parent = get_parent(spec.parent.name, spec.parent.params)
    plan = _plan(db, doc)
    query = {"campaign": name, "parent_hash": doc["parent_hash"]}
    stored = {
        d["hash"]: d
        for d in db[NS_LABELS].find(
            query, {"hash": 1, "kind": 1, "central_force": 1, "centre_forces": 1, "seconds": 1}
        )
    }
    failed = {d["hash"]: d.get("error") for d in records.failures(db, name)}
    central = {
        h: (d["central_force"], float(d.get("seconds") or 0.0))
        for h, d in stored.items()
        if d["kind"] == "chunk"
    }
    full_forces, full_seconds = None, None
    missing: list[dict[str, Any]] = []

    def why(h: str) -> str:
        return failed.get(h) or "no label yet (its Firework has not completed)"

    if spec.full:
        full = stored.get(full_hash(doc))
        if full is not None:
            full_forces = np.asarray(full["centre_forces"], dtype=float)
            full_seconds = float(full.get("seconds") or 0.0)
        else:
            h = full_hash(doc)
            missing.append(
                {"kind": "full", "centre": None, "radius": None, "hash": h,
                 "n_atoms": doc["n_atoms"], "error": why(h)}
            )  # fmt: skip
    for d in plan.distinct():
        if d["hash"] not in central:
            missing.append({"kind": "chunk", **d, "error": why(d["hash"])})
    return ns.StoredLabels(
        campaign=name,
        spec=dict(doc.get("spec") or {}),
        plan=plan,
        central=central,
        full_forces=full_forces,
        full_seconds=full_seconds,
        missing=missing,
        parent=parent.name,
        force_locality_A=parent.force_locality_A,
        structure_atoms=int(doc["n_atoms"]),
        tolerance=spec.tolerance_eV_per_A,
        full_requested=spec.full,
    )


def store_report(
    db: Database, name: str, paths: dict[str, Path], summary: dict[str, Any], fw_id: int | None
) -> None:
    """Keep a written report (``paths``: its JSON, figure and page) in GridFS and its
    ``summary`` in the campaign record (state ``completed``); a rerun replaces the stored
    report."""
    doc = records.get_campaign(db, name)
    files = {
        key: str(
            records.put_bytes(
                db, paths[key].read_bytes(), f"{name}/report/{paths[key].name}",
                kind="report", campaign=name,
            )
        )
        for key in REPORT_FILES
    }  # fmt: skip
    records.update_campaign(
        db, name, state="completed", report_files=files, summary=summary, report_fw_id=fw_id
    )
    for old in (doc.get("report_files") or {}).values():
        records.delete_file(db, ObjectId(old))


def status(db: Database, name: str) -> dict[str, Any]:
    """Progress of a nearsightedness campaign: labels stored of those planned, failures,
    and the recommendation once the analysis ran."""
    doc = records.get_campaign(db, name)
    spec = NearsightednessSpec.model_validate(doc["spec"])
    stored = db[NS_LABELS].count_documents({"campaign": name})
    planned = int(doc.get("n_chunks", 0)) + int(spec.full)
    failures = [
        {k: d.get(k) for k in ("kind", "centre", "radius", "hash", "fw_id", "error")}
        for d in records.failures(db, name)
    ]
    summary_doc = doc.get("summary") or {}
    return {
        "labels": stored,
        "planned_labels": planned,
        "failed_labels": failures,
        "recommended_radius_A": summary_doc.get("recommended_radius_A"),
        "tolerance_eV_per_A": spec.tolerance_eV_per_A,
        "reference": summary_doc.get("reference"),
        "missing": summary_doc.get("missing"),
    }
