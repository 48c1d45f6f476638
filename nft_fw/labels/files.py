"""A campaign's labels as data: extended XYZ frames any ASE-reading tool can train from.

Every label becomes one frame: the structure the parent computed (a chunk: centre first,
positions relative to it, in vacuum; an image: the periodic cell), the parent's energy and
forces of every atom as ASE stores calculator results (``energy`` in the frame's info,
``forces`` per atom; ``atoms.get_potential_energy()`` / ``get_forces()`` after a plain
``ase.io.read(path, ":")``), and:

per atom
    ``nft_trained`` (bool): the atoms whose force the campaign trains on — the centre of a
    chunk (atom 0), every atom of an image; no atom of a whole-structure label.
per frame (``atoms.info``)
    ``nft_kind``: ``image`` (initial set), ``chunk``, or ``full`` (a whole-structure
    label); ``nft_phase``: ``initial``, ``nft``, ``relax``, ``md``, ``inherited`` (copied
    from the campaign a follow-up started from), ``validation`` (the whole target, for
    scoring only) or ``nearsightedness``; ``nft_number``: the NFT iteration, relax round or
    MD segment that trains on it (MD segment s is the one after pause s; 0 for the initial
    set); ``nft_centre``: the chunk's centre, an atom index of the structure it was cut from
    (the target, a relaxation frame or an MD frame); ``nft_radius_A``;
    ``nft_parent``, ``nft_parent_params`` (the parent's settings) and ``nft_parent_hash``
    (the hash of the settings that determine the label); ``nft_hash``: the label's key
    (chunk or image hash); ``nft_campaign``; ``nft_seconds`` and ``nft_scf_iterations``
    (what the calculation cost; absent where not recorded).

Floats are written exactly (:func:`nft_fw.structures.atoms_io.write_extxyz`): the file holds the very
numbers the campaign trained on.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import IO, Any

import numpy as np
from ase import Atoms
from ase.calculators.singlepoint import SinglePointCalculator

from nft_fw.labels.phase import Phase
from nft_fw.structures import atoms_io
from nft_fw.structures.chunks import structure_id

KINDS = ("image", "chunk", "full")
PHASES = (Phase.INITIAL, Phase.NFT, Phase.RELAX, Phase.MD, Phase.INHERITED, "validation",
          "nearsightedness")  # fmt: skip


def frame(
    atoms: Atoms,
    *,
    kind: str,
    phase: str,
    number: int,
    forces: np.ndarray,
    energy: float | None,
    campaign: str,
    parent: str,
    parent_params: Mapping[str, Any],
    parent_hash: str,
    label_hash: str,
    centre: int | None = None,
    radius_A: float | None = None,
    seconds: float | None = None,
    scf_iterations: int | None = None,
) -> Atoms:
    """One label as an extended-XYZ frame (module docstring: the fields)."""
    if kind not in KINDS:
        raise ValueError(f"label kind {kind!r} is not one of {KINDS}")
    if phase not in PHASES:
        raise ValueError(f"label phase {phase!r} is not one of {PHASES}")
    out = atoms.copy()
    forces = np.asarray(forces, dtype=float).reshape(len(out), 3)
    results: dict[str, Any] = {"forces": forces}
    if energy is not None:
        results["energy"] = float(energy)
    out.calc = SinglePointCalculator(out, **results)
    trained = np.zeros(len(out), dtype=bool)
    if kind == "chunk":
        trained[0] = True
    elif kind == "image":
        trained[:] = True
    out.arrays["nft_trained"] = trained
    info: dict[str, Any] = {
        "nft_kind": kind,
        "nft_phase": phase,
        "nft_number": int(number),
        "nft_campaign": campaign,
        "nft_parent": parent,
        "nft_parent_params": dict(parent_params),
        "nft_parent_hash": parent_hash,
        "nft_hash": label_hash,
    }
    optional = {
        "nft_centre": None if centre is None else int(centre),
        "nft_radius_A": None if radius_A is None else float(radius_A),
        "nft_seconds": None if seconds is None else float(seconds),
        "nft_scf_iterations": None if scf_iterations is None else int(scf_iterations),
    }
    info.update({k: v for k, v in optional.items() if v is not None})
    out.info = info
    return out


#: The order of an export's frames by phase (images and chunks alike).
PHASE_ORDER = (Phase.INITIAL, Phase.INHERITED, Phase.NFT, Phase.RELAX, Phase.MD, "validation",
               "nearsightedness")  # fmt: skip


def in_order(frames: Iterable[Atoms]) -> list[Atoms]:
    """Label frames in the one order every export has, whether the labels come from a
    campaign run in one process or from the database: images by hash, then chunks by phase
    (inherited, NFT, relaxation, MD), number, centre and hash, then whole-structure labels."""

    def key(f: Atoms) -> tuple[int, int, int, int, str]:
        info = f.info
        return (
            KINDS.index(info["nft_kind"]),
            PHASE_ORDER.index(info["nft_phase"]),
            int(info["nft_number"]),
            int(info.get("nft_centre", -1)),
            str(info["nft_hash"]),
        )

    return sorted(frames, key=key)


def full_hash(atoms: Atoms) -> str:
    """The key of a whole-structure label: its structure's content hash."""
    return f"full:{structure_id(atoms)}"


def write(path_or_file: str | Path | IO[str], frames: Iterable[Atoms]) -> None:
    """Write label frames as exact extended XYZ."""
    atoms_io.write_extxyz(path_or_file, list(frames))


def append(path: str | Path, frames: Iterable[Atoms]) -> tuple[int, int]:
    """Add to the label file ``path`` the frames whose ``nft_hash`` it does not hold yet, in
    the order given, leaving every frame already there byte for byte (a file exported as
    labels come only grows); a missing file is written whole. Returns (added, already
    there). Raises ValueError when the file's frames are not labels (no ``nft_hash``)."""
    path = Path(path)
    frames = list(frames)
    if not path.exists():
        write(path, frames)
        return len(frames), 0
    there = set()
    for k, f in enumerate(read(path)):
        if "nft_hash" not in f.info:
            raise ValueError(
                f"{path}: frame {k} has no nft_hash, so it is not a label export; append to "
                "a file 'nft-fw labels NAME --export' wrote, or export to a new file"
            )
        there.add(str(f.info["nft_hash"]))
    new = [f for f in frames if str(f.info["nft_hash"]) not in there]
    with open(path, "a", encoding="utf-8") as fh:
        atoms_io.write_extxyz(fh, new)
    return len(new), len(frames) - len(new)


def read(path: str | Path) -> list[Atoms]:
    """The frames of a label file (plain ASE reading; this is all nft-fw does either)."""
    import ase.io

    frames = ase.io.read(path, index=":", format="extxyz")
    return list(frames) if isinstance(frames, Sequence) else [frames]
