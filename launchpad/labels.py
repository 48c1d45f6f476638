"""Every label of an NFT campaign gathered from the database as label frames
(:mod:`nft_fw.labels.files`): initial images, NFT and relaxation chunks, labels inherited by a
follow-up campaign, and the whole-target validation label (a nearsightedness campaign's:
``nft_fw.launchpad.nearsightedness.frames``)."""

from __future__ import annotations

from typing import Any

from ase import Atoms
from bson import ObjectId
from pymongo.database import Database

from nft_fw.labels import files as labelset
from nft_fw.labels.phase import Phase
from nft_fw.launchpad import records
from nft_fw.structures import atoms_io


def frames(db: Database, name: str) -> list[Atoms]:
    """The NFT campaign's labels as frames, in the order of every export
    (:func:`nft_fw.labels.files.in_order`)."""
    doc = records.get_campaign(db, name)
    if records.kind(doc) != "nft":
        raise KeyError(f"campaign {name!r} is a {records.kind(doc)} campaign, not an NFT one")
    parent = doc["spec"]["parent"]
    common = {
        "campaign": name,
        "parent": parent["name"],
        "parent_params": parent.get("params") or {},
    }
    out = []
    for d in records.labels(db, name):
        out.append(
            labelset.frame(
                atoms_io.from_doc(d), kind=d["kind"], phase=phase(d), number=d["iteration"],
                forces=d["forces"], energy=d["energy"], parent_hash=d["parent_hash"],
                label_hash=d["hash"], centre=d.get("centre"), radius_A=d.get("radius"),
                **_cost(d), **common,
            )
        )  # fmt: skip
    if doc.get("true_forces_file"):
        target = records.get_structure(db, ObjectId(doc["target_file"]))
        out.append(
            labelset.frame(
                target, kind="full", phase="validation", number=0,
                forces=records.get_array(db, ObjectId(doc["true_forces_file"])), energy=None,
                parent_hash=doc["parent_hash"], label_hash=labelset.full_hash(target),
                **common,
            )
        )  # fmt: skip
    return labelset.in_order(out)


def phase(doc: dict[str, Any]) -> str:
    """The phase a stored label belongs to: ``initial`` or ``inherited`` for an image, the
    chunk's ``nft``, ``relax`` or ``md`` (NFT iteration, relaxation round and MD segment
    numbers overlap: the phase tells them apart)."""
    if doc["kind"] == "image":
        return Phase.INHERITED if doc.get("inherited_from") else Phase.INITIAL
    return str(doc.get("phase", Phase.NFT))


def _cost(doc: dict[str, Any]) -> dict[str, Any]:
    """What computing a label cost: a label taken from prior labels carries the cost of the
    calculation that made it, not the zero this campaign paid."""
    if "prior_campaign" in doc:
        return {
            "seconds": doc.get("prior_seconds"),
            "scf_iterations": doc.get("prior_scf_iterations"),
        }
    return {"seconds": doc.get("seconds"), "scf_iterations": doc.get("scf_iterations")}
