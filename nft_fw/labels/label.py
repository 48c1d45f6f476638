"""Labels: a chunk's label (:class:`ChunkLabel`), and the one way an item of a campaign is
labelled — from the campaign's prior labels when they hold it, else by the parent
(:func:`label`) — as the document a label Firework stores and the local runner converts
(:func:`chunk_label`). Built from the result alone (no database). :func:`label_doc` runs the
parent (with its retry policy) on an item's structure; :func:`prior_doc` is the same
document for a label taken from the prior labels; :func:`nearsightedness_doc` a
nearsightedness campaign's label.
"""

from __future__ import annotations

import dataclasses
import socket
from pathlib import Path
from typing import Any

import numpy as np
from ase import Atoms

from nft_fw.labels import prior as prior_mod
from nft_fw.labels.phase import Phase
from nft_fw.labels.prior import PriorLabel, PriorLabels
from nft_fw.parents.parent import Parent, SinglePoint
from nft_fw.potential import training as tr
from nft_fw.structures import atoms_io


@dataclasses.dataclass(frozen=True)
class ChunkLabel:
    """A labelled chunk: the parent's energy (eV) and forces (n, 3) eV/Å on ``atoms``
    (centre first); only ``forces[0]``, the centre's, is trained on. ``phase`` and
    ``iteration``: the NFT iteration or relax round that asked for it; ``seconds``: what the
    parent calculation took."""

    centre: int
    iteration: int
    hash: str
    radius: float
    atoms: Atoms
    energy: float
    forces: np.ndarray
    seconds: float = 0.0
    phase: Phase = Phase.NFT

    @property
    def central_force(self) -> np.ndarray:
        return np.asarray(self.forces[0])


def label(
    name: str,
    parent: Parent,
    prior: PriorLabels | None,
    item: dict[str, Any],
    atoms: Atoms,
    label_hash: str,
    fw_id: int | None = None,
    log_dir: Path | None = None,
) -> dict[str, Any]:
    """The label document of an item (``kind`` image or chunk) whose structure is ``atoms``:
    from the campaign's ``prior`` labels when they hold a usable one
    (:func:`nft_fw.labels.prior.usable`), else the parent's single point (:func:`label_doc`).
    Raises LabelFailed."""
    given = prior_mod.usable(prior, label_hash, item["kind"])
    if given is not None:
        return prior_doc(name, parent.settings_hash, item, atoms, label_hash, given)
    return label_doc(name, parent, item, atoms, label_hash, fw_id, log_dir)


def chunk_label(doc: dict[str, Any]) -> ChunkLabel:
    """A chunk label document as a :class:`ChunkLabel`."""
    return ChunkLabel(
        centre=int(doc["centre"]),
        iteration=int(doc["iteration"]),
        hash=doc["hash"],
        radius=float(doc["radius"]),
        atoms=atoms_io.from_doc(doc),
        energy=float(doc["energy"]),
        forces=np.asarray(doc["forces"], dtype=float),
        seconds=float(doc.get("seconds") or 0.0),
        phase=Phase(doc.get("phase", Phase.NFT)),
    )


def image_label(doc: dict[str, Any]) -> tr.Image:
    """A whole-structure label document as a training image."""
    return tr.Image(
        atoms=atoms_io.from_doc(doc),
        energy=float(doc["energy"]),
        forces=np.asarray(doc["forces"], dtype=float),
        id=doc["hash"],
    )


def image_doc(
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


def chunk_doc(
    name: str, parent_hash: str, item: dict[str, Any], atoms: Atoms, label_hash: str,
    energy: float, forces: np.ndarray,
) -> dict[str, Any]:  # fmt: skip
    """The fields of a chunk label: where it was cut, its structure, energy and forces."""
    forces = np.asarray(forces)
    return {
        "campaign": name,
        "hash": label_hash,
        "parent_hash": parent_hash,
        "kind": "chunk",
        "phase": item.get("phase", Phase.NFT),
        "iteration": item["iteration"],
        "centre": item["centre"],
        "source": item["source"],
        "radius": item["radius"],
        **atoms_io.to_doc(atoms),
        "central_force": forces[0].tolist(),
        "energy": float(energy),
        "forces": forces.tolist(),
    }


def label_doc(
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
        return {**image_doc(name, parent.settings_hash, image, 0.0, fw_id), **parent_cost(result)}
    forces = np.asarray(forces)
    return {
        **chunk_doc(name, parent.settings_hash, item, atoms, label_hash, energy, forces),
        "fw_id": fw_id,
        **parent_cost(result),
    }


def prior_doc(
    name: str, parent_hash: str, item: dict[str, Any], atoms: Atoms, label_hash: str,
    given: PriorLabel,
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
        return {**image_doc(name, parent_hash, image, 0.0, None), **provenance}
    energy = float(given.energy or 0.0)
    return {
        **chunk_doc(name, parent_hash, item, atoms, label_hash, energy, forces),
        **provenance,
    }


def nearsightedness_doc(
    name: str,
    item: dict[str, Any],
    atoms: Atoms,
    label_hash: str,
    parent: Parent,
    result: SinglePoint,
    centres: list[int],
    fw_id: int | None,
) -> dict[str, Any]:
    """A nearsightedness label: a chunk with every force inline, or the whole structure with
    its centres' forces (the caller stores the whole force array)."""
    forces = np.asarray(result.forces, dtype=float)
    doc: dict[str, Any] = {
        "campaign": name,
        "hash": label_hash,
        "parent_hash": parent.settings_hash,
        "kind": item["kind"],
        "n_atoms": len(atoms),
        "energy": float(result.energy),
        "fw_id": fw_id,
        "host": socket.gethostname(),
        **parent_cost(result),
    }
    if item["kind"] == "chunk":
        doc.update(
            centre=int(item["centre"]),
            radius=float(item["radius"]),
            **atoms_io.to_doc(atoms),
            central_force=forces[0].tolist(),
            forces=forces.tolist(),
        )
    else:  # the whole structure: the centres' forces inline (every atom's: stored apart)
        doc["centre_forces"] = forces[centres].tolist()
        doc["centres"] = list(centres)
    return doc
