"""Every label of a campaign gathered from the database as label frames
(:mod:`nft_fw.labelset`): initial images, NFT and relaxation chunks, labels inherited by a
follow-up campaign, the whole-target validation label, and a nearsightedness campaign's
chunks and whole structure."""

from __future__ import annotations

from typing import Any

from ase import Atoms
from bson import ObjectId
from pymongo.database import Database

from nft_fw import atoms_io, labelset
from nft_fw.launchpad import nearsightedness, records


def _structure(db: Database, doc: dict[str, Any]) -> Atoms:
    if nearsightedness.is_nearsightedness(doc):
        return nearsightedness.target(db, doc["target_file"])
    return records.get_structure(db, ObjectId(doc["target_file"]))


def frames(db: Database, name: str) -> list[Atoms]:
    """The campaign's labels as frames, in the order the campaign made them (initial set,
    then by iteration or round, centre and hash; validation labels last)."""
    doc = records.get_campaign(db, name)
    parent = doc["spec"]["parent"]
    common = {
        "campaign": name,
        "parent": parent["name"],
        "parent_params": parent.get("params") or {},
    }
    out = []
    if nearsightedness.is_nearsightedness(doc):
        target = _structure(db, doc)
        for d in nearsightedness.labels(db, name):
            if d["kind"] == "chunk":
                atoms, forces, centre, radius = (
                    atoms_io.from_doc(d),
                    d["forces"],
                    d["centre"],
                    d["radius"],
                )
            else:
                atoms, centre, radius = target, None, None
                forces = records.get_array(db, ObjectId(d["forces_file"]))
            out.append(
                labelset.frame(
                    atoms, kind=d["kind"], phase="nearsightedness", number=0, forces=forces,
                    energy=d["energy"], parent_hash=d["parent_hash"], label_hash=d["hash"],
                    centre=centre, radius_A=radius, seconds=d.get("seconds"),
                    scf_iterations=d.get("scf_iterations"), **common,
                )
            )  # fmt: skip
        return out
    labels = records.labels(db, name)
    ordered = [d for d in labels if d["kind"] == "image"]
    ordered += sorted(
        (d for d in labels if d["kind"] == "chunk"),
        key=lambda d: (_phase_rank(d), d["iteration"], d["centre"], d["hash"]),
    )
    for d in ordered:
        if d["kind"] == "image":
            phase = "inherited" if d.get("inherited_from") else "initial"
        else:
            phase = d.get("phase", "nft")
        out.append(
            labelset.frame(
                atoms_io.from_doc(d), kind=d["kind"], phase=phase, number=d["iteration"],
                forces=d["forces"], energy=d["energy"], parent_hash=d["parent_hash"],
                label_hash=d["hash"], centre=d.get("centre"), radius_A=d.get("radius"),
                **_cost(d), **common,
            )
        )  # fmt: skip
    if doc.get("true_forces_file"):
        out.append(
            labelset.frame(
                _structure(db, doc), kind="full", phase="validation", number=0,
                forces=records.get_array(db, ObjectId(doc["true_forces_file"])), energy=None,
                parent_hash=doc["parent_hash"], label_hash=f"full:{doc['target_file']}",
                **common,
            )
        )  # fmt: skip
    return out


def _cost(doc: dict[str, Any]) -> dict[str, Any]:
    """What computing a label cost: a label taken from prior labels carries the cost of the
    calculation that made it, not the zero this campaign paid."""
    if "prior_campaign" in doc:
        return {
            "seconds": doc.get("prior_seconds"),
            "scf_iterations": doc.get("prior_scf_iterations"),
        }
    return {"seconds": doc.get("seconds"), "scf_iterations": doc.get("scf_iterations")}


PHASE_ORDER = ("inherited", "nft", "relax")


def _phase_rank(doc: dict[str, Any]) -> int:
    phase = doc.get("phase", "nft")
    return PHASE_ORDER.index(phase) if phase in PHASE_ORDER else len(PHASE_ORDER)
