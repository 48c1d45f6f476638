"""What a label Firework does: take an item's label from the campaign's prior labels, or run
the parent on it (:mod:`nft_fw.labels.label`), and store it; with the database (label_items,
label_nearsightedness_items) or without it (offline mode: label_offline, whose documents
travel in the FWAction). The trainer's items pass :func:`round_items` first.
"""

from __future__ import annotations

import logging
import socket
from pathlib import Path
from typing import Any

import numpy as np
from ase import Atoms
from bson import ObjectId
from pymongo.database import Database

from nft_fw.labels import label as labeldoc
from nft_fw.labels import prior as prior_mod
from nft_fw.labels.phase import Phase
from nft_fw.launchpad import campaigns, records
from nft_fw.launchpad import nearsightedness as ns_store
from nft_fw.parents.parent import LabelFailed, get_parent
from nft_fw.spec.campaign import NearsightednessSpec
from nft_fw.structures import atoms_io
from nft_fw.structures.chunks import cut, structure_id

log = logging.getLogger(__name__)


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
        return atoms, structure_id(atoms)
    # cut_centre: a prior label's chunk is cut again around its own atom 0 (its centre)
    chunk = cut(sources[src, index], item.get("cut_centre", item["centre"]), item["radius"])
    return chunk.atoms, chunk.hash


class LabelError(RuntimeError):
    """Some items of a label Firework could not be labelled (recorded in nft_failures)."""


def label_items(
    db: Database,
    name: str,
    items: list[dict[str, Any]],
    fw_id: int | None = None,
    work_dir: Path | None = None,
    record_arrivals: bool = False,
) -> dict[str, int]:
    """Label the items (chunks around centres of a stored structure, or stored images) that
    have no label yet; returns counts of new and existing labels. ``record_arrivals``
    (overlapping NFT rounds): each NFT chunk item's ending is recorded as it happens
    (:func:`nft_fw.launchpad.records.put_arrival`), after its label or failure is stored.

    Each parent calculation writes its text log under ``work_dir/parent-logs`` (default: the
    current directory, i.e. the Firework's launch directory); the log is kept in GridFS and
    its id stored on the label (``log_file``). An item the parent cannot label with any retry
    is recorded in ``nft_failures`` (never as a label); the other items are still labelled,
    then :class:`LabelError` is raised with the parent's errors, so the Firework fizzles.
    """
    prepared = campaigns.context(db, name)
    parent = prepared.parent
    log_dir = (Path.cwd() if work_dir is None else Path(work_dir)) / "parent-logs"
    sources: dict[tuple[str, int], Atoms] = {}
    counts = {"new": 0, "existing": 0, "failed": 0}
    errors: list[str] = []

    def arrived(item: dict[str, Any], label_hash: str, state: str) -> None:
        if record_arrivals and item["kind"] == "chunk" and item.get("phase") == Phase.NFT:
            records.put_arrival(db, name, item, label_hash, state, fw_id)

    for item in items:
        atoms, label_hash = _item_atoms(db, sources, item)
        if records.has_label(db, name, label_hash, parent.settings_hash):
            counts["existing"] += 1
            arrived(item, label_hash, "existing")
            continue
        try:
            doc = labeldoc.label(
                name, parent, prepared.prior, item, atoms, label_hash, fw_id, log_dir
            )
        except LabelFailed as err:
            counts["failed"] += 1
            where = f"centre {item['centre']}" if item["kind"] == "chunk" else "initial image"
            errors.append(f"{where} (hash {label_hash[:12]}): {err}")
            campaigns.record_failure(
                db, name, parent, item, atoms, label_hash, err, fw_id,
                phase=item.get("phase", Phase.NFT), iteration=item.get("iteration", 0),
            )  # fmt: skip
            log.error("campaign %s fw %s: %s failed: %s", name, fw_id, where, err)
            arrived(item, label_hash, "failed")
            continue
        doc["log_file"] = campaigns.store_parent_log(db, name, doc.get("log_path"), label_hash)
        if records.put_label(db, doc):
            counts["new"] += 1
            records.clear_failure(db, name, label_hash, parent.settings_hash)
        else:
            counts["existing"] += 1
        arrived(item, label_hash, "labelled")
    log.info("campaign %s fw %s: labels %s", name, fw_id, counts)
    if errors:
        raise LabelError(
            f"campaign {name} fw {fw_id}: {len(errors)} of {len(items)} items could not be "
            f"labelled (recorded in {records.FAILURES}; nft-fw status {name} lists them; the "
            "trainer proceeds without them): " + "; ".join(errors)
        )
    return counts


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
    if campaigns.load_spec(db, name).service.offline_labels:
        return offline_items(db, name, items)
    return items


def take_prior(db: Database, name: str, items: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Store the labels of ``items`` that the campaign's prior labels hold (no parent call)
    and return the other items, for label Fireworks. Idempotent: labels are upserts."""
    prepared = campaigns.context(db, name)
    if prepared.prior is None:
        return items
    sources: dict[tuple[str, int], Atoms] = {}
    rest, taken = [], 0
    for item in items:
        atoms, label_hash = _item_atoms(db, sources, item)
        if prior_mod.usable(prepared.prior, label_hash, item["kind"]) is None:
            rest.append(item)
            continue
        records.put_label(
            db, labeldoc.label(name, prepared.parent, prepared.prior, item, atoms, label_hash)
        )
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
        doc = labeldoc.label_doc(
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


# ----------------------------------------------------------------------------- nearsightedness


def _nearsightedness_item(
    name: str, doc: dict[str, Any], structure: Atoms, item: dict[str, Any], fw_id: int | None
) -> tuple[Atoms, str, str, str]:
    """An item's structure, label hash, description and log tag: the chunk cut from the
    stored target (its hash checked against the plan's), or the whole structure."""
    if item["kind"] != "chunk":
        return structure, ns_store.full_hash(doc), "the whole structure", "full"
    chunk = cut(structure, int(item["centre"]), float(item["radius"]))
    if chunk.hash != item["hash"]:
        raise RuntimeError(
            f"campaign {name} fw {fw_id}: the chunk of centre {item['centre']} radius "
            f"{item['radius']} Å cut from the stored target has hash "
            f"{chunk.hash[:12]}, the plan says {item['hash'][:12]}: the stored "
            "target changed; submit the campaign again under a new name"
        )
    return (
        chunk.atoms,
        chunk.hash,
        f"centre {item['centre']} radius {item['radius']:g} Å",
        chunk.hash[:16],
    )


def _store_nearsightedness_label(
    db: Database, name: str, item: dict[str, Any], new: dict[str, Any], forces: Any
) -> bool:
    """Store a nearsightedness label (the whole structure's every force in GridFS, the
    parent's log); False when another worker stored it meanwhile (this one's files are
    dropped)."""
    if item["kind"] != "chunk":  # every atom's force of the whole structure: in GridFS
        new["forces_file"] = str(
            records.put_array(db, np.asarray(forces, dtype=float), f"{name}/full-forces.npy")
        )
    new["log_file"] = campaigns.store_parent_log(db, name, new.get("log_path"), new["hash"])
    if ns_store.put_label(db, new):
        return True
    for key in ("forces_file", "log_file"):
        if new.get(key):
            records.delete_file(db, ObjectId(new[key]))
    return False


def label_nearsightedness_items(
    db: Database,
    name: str,
    items: list[dict[str, Any]],
    fw_id: int | None = None,
    work_dir: Path | None = None,
) -> dict[str, int]:
    """Label the items (chunks cut from the stored target, or the whole target) that have
    no label yet; returns counts of new, existing and failed labels.

    Parent logs go to ``work_dir/parent-logs`` (default: the launch directory) and into
    GridFS. An item the parent cannot label with any retry is recorded in ``nft_failures``
    and the other items are still labelled; then :class:`LabelError` is
    raised, so the Firework fizzles (the analysis runs without that item).
    """
    doc = records.get_campaign(db, name)
    spec = NearsightednessSpec.model_validate(doc["spec"])
    parent = get_parent(spec.parent.name, spec.parent.params)
    structure = ns_store.target(db, doc["target_file"])
    centres = [int(c) for c in doc["centres"]]
    log_dir = (Path.cwd() if work_dir is None else Path(work_dir)) / "parent-logs"
    records.update_campaign_state(db, name, "submitted", "running")
    counts = {"new": 0, "existing": 0, "failed": 0}
    errors: list[str] = []
    for item in items:
        atoms, label_hash, where, tag = _nearsightedness_item(name, doc, structure, item, fw_id)
        if ns_store.has_label(db, name, label_hash, parent.settings_hash):
            counts["existing"] += 1
            continue
        try:
            result = parent.single_point(atoms, log_dir=log_dir, tag=tag)
        except LabelFailed as err:
            counts["failed"] += 1
            errors.append(f"{where} ({len(atoms)} atoms): {err}")
            campaigns.record_failure(
                db,
                name,
                parent,
                item,
                atoms,
                label_hash,
                err,
                fw_id,
                phase=ns_store.PHASE,
                iteration=None,
            )
            log.error("campaign %s fw %s: %s failed: %s", name, fw_id, where, err)
            continue
        new = labeldoc.nearsightedness_doc(
            name, item, atoms, label_hash, parent, result, centres, fw_id
        )
        stored = _store_nearsightedness_label(db, name, item, new, result.forces)
        counts["new" if stored else "existing"] += 1
        if stored:
            records.clear_failure(db, name, label_hash, parent.settings_hash)
    log.info("campaign %s fw %s: nearsightedness labels %s", name, fw_id, counts)
    if errors:
        raise LabelError(
            f"campaign {name} fw {fw_id}: {len(errors)} of {len(items)} items could not be "
            f"labelled (recorded in {records.FAILURES}; nft-fw status {name} lists them; the "
            "analysis reports them as missing): " + "; ".join(errors)
        )
    return counts
