"""Spherical chunks cut around an atom, and their order- and translation-invariant hash.

A chunk holds every atom (periodic images included) within ``radius`` Å of a
centre atom of the parent structure; the centre comes first, the positions are
relative to it, and the chunk is non-periodic (in vacuum). Only the centre's
force is used for training (Zeng, Chen, Peterson, J. Chem. Phys. 156, 064104
(2022), Sec. III).
"""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
import logging
import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from ase import Atoms

log = logging.getLogger(__name__)

HASH_DECIMALS = 3  # positions are compared at 0.001 Å


@dataclasses.dataclass(frozen=True)
class Chunk:
    """A chunk: ``atoms`` (centre first, at the origin), its source atom and radius (Å)."""

    atoms: Atoms
    centre: int
    radius: float
    hash: str

    def __len__(self) -> int:
        return len(self.atoms)


def _shifts(atoms: Atoms, radius: float) -> np.ndarray:
    """Lattice translations (n_shifts, 3) Å that can bring an image within ``radius``."""
    cell = atoms.cell
    ranges = []
    for axis in range(3):
        if not atoms.pbc[axis]:
            ranges.append([0])
            continue
        others = [cell[(axis + 1) % 3], cell[(axis + 2) % 3]]
        normal = np.cross(*others)
        spacing = abs(np.dot(cell[axis], normal)) / np.linalg.norm(normal)
        n = math.ceil(radius / spacing) + 1
        ranges.append(list(range(-n, n + 1)))
    grid = np.array(list(itertools.product(*ranges)), dtype=float)
    return grid @ np.asarray(cell)


def cut(atoms: Atoms, centre: int, radius: float) -> Chunk:
    """The chunk of ``atoms`` within ``radius`` Å of atom ``centre``.

    Atoms are ordered by distance from the centre (the centre itself first).
    """
    if not 0 <= centre < len(atoms):
        raise IndexError(f"centre atom {centre} is outside a structure of {len(atoms)} atoms")
    if not radius > 0:
        raise ValueError(f"chunk radius is {radius} Å; it must be positive")
    pos = atoms.get_positions()
    rel = pos - pos[centre]
    if atoms.pbc.any():
        shifts = _shifts(atoms, radius)
        all_rel = (rel[None, :, :] + shifts[:, None, :]).reshape(-1, 3)
        source = np.tile(np.arange(len(atoms)), len(shifts))
    else:
        all_rel, source = rel, np.arange(len(atoms))
    dist = np.linalg.norm(all_rel, axis=1)
    keep = np.flatnonzero(dist <= radius)
    keep = keep[np.lexsort((source[keep], dist[keep]))]
    numbers = atoms.numbers[source[keep]]
    chunk = Atoms(numbers=numbers, positions=all_rel[keep], pbc=False)
    if "initial_magmoms" in atoms.arrays:
        chunk.set_initial_magnetic_moments(atoms.get_initial_magnetic_moments()[source[keep]])
    return Chunk(atoms=chunk, centre=int(centre), radius=float(radius), hash=chunk_hash(chunk))


def structure_id(atoms: Atoms) -> str:
    """A content hash for a full image (numbers, positions, cell, pbc)."""
    h = hashlib.sha256()
    h.update(np.asarray(atoms.numbers, dtype=np.int64).tobytes())
    h.update(np.round(atoms.positions, 6).tobytes())
    h.update(np.round(np.asarray(atoms.cell), 6).tobytes())
    h.update(np.asarray(atoms.pbc, dtype=np.int8).tobytes())
    return h.hexdigest()


def chunk_hash(chunk: Atoms, centre: int = 0) -> str:
    """SHA-256 of the chunk's content, independent of atom order and translation.

    Positions relative to the centre atom, rounded to 10^-HASH_DECIMALS Å, are
    sorted together with atomic numbers; the centre's number leads.
    """
    pos = chunk.get_positions()
    rel = np.round(pos - pos[centre], HASH_DECIMALS) + 0.0  # + 0.0 folds -0.0 into 0.0
    rows = np.column_stack([chunk.numbers.astype(float), rel])
    order = np.lexsort(rows.T[::-1])
    digest = hashlib.sha256()
    digest.update(f"centre:{int(chunk.numbers[centre])};".encode())
    digest.update(np.round(rows[order] * 10**HASH_DECIMALS).astype(np.int64).tobytes())
    return digest.hexdigest()


# ----------------------------------------------------------------------------- chunk plans


@dataclasses.dataclass(frozen=True)
class ChunkPlan:
    """Which chunk each (radius, centre) is, before anything is labelled.

    ``radii``: ascending, Å; ``centres``: atom indices; ``hashes``/``n_atoms``: (n_radii,
    n_centres) chunk hashes (:func:`nft_fw.structures.chunks.chunk_hash`) and sizes. Chunks with equal
    hashes are one parent calculation.
    """

    radii: list[float]
    centres: list[int]
    hashes: list[list[str]]
    n_atoms: list[list[int]]

    def distinct(self) -> list[dict[str, Any]]:
        """One entry per distinct chunk, ``{centre, radius, hash, n_atoms}``, at its first
        (centre, radius) in centre-major order (the order :func:`nearsightedness` labels in)."""
        out: list[dict[str, Any]] = []
        seen: set[str] = set()
        for j, c in enumerate(self.centres):
            for k, r in enumerate(self.radii):
                h = self.hashes[k][j]
                if h not in seen:
                    seen.add(h)
                    out.append({"centre": c, "radius": r, "hash": h, "n_atoms": self.n_atoms[k][j]})
        return out

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ChunkPlan:
        return cls(
            radii=[float(r) for r in data["radii"]],
            centres=[int(c) for c in data["centres"]],
            hashes=[[str(h) for h in row] for row in data["hashes"]],
            n_atoms=[[int(n) for n in row] for row in data["n_atoms"]],
        )


def _checked(
    atoms: Atoms, centres: Sequence[int], radii: Sequence[float]
) -> tuple[list[float], list[int]]:
    """Radii sorted ascending and centres as ints; ValueError for no or non-positive radii,
    no centres, or centres outside the structure."""
    out_radii = sorted(float(r) for r in radii)
    if not out_radii or out_radii[0] <= 0:
        raise ValueError(f"radii must be positive Å and at least one; got {out_radii}")
    out_centres = [int(c) for c in centres]
    if not out_centres:
        raise ValueError("give at least one centre atom")
    bad = [c for c in out_centres if not 0 <= c < len(atoms)]
    if bad:
        raise ValueError(f"centres {bad} are outside the structure's {len(atoms)} atoms")
    return out_radii, out_centres


def plan_chunks(atoms: Atoms, centres: Sequence[int], radii: Sequence[float]) -> ChunkPlan:
    """Cut (but do not label) the chunk of each radius (Å, sorted ascending) around each
    centre of ``atoms``. Raises ValueError for no or non-positive radii, no centres, or
    centres outside the structure."""
    radii, centres = _checked(atoms, centres, radii)
    chunks = [[cut(atoms, c, r) for c in centres] for r in radii]
    return ChunkPlan(
        radii=radii,
        centres=centres,
        hashes=[[ch.hash for ch in row] for row in chunks],
        n_atoms=[[len(ch) for ch in row] for row in chunks],
    )


def random_centres(n_atoms: int, count: int, seed: int) -> list[int]:
    """``count`` distinct atom indices of ``n_atoms``, drawn with numpy's default_rng(seed),
    sorted; the same draw as ``nft-fw nearsightedness --n-centres``."""
    rng = np.random.default_rng(seed)
    return sorted(int(c) for c in rng.choice(n_atoms, size=min(count, n_atoms), replace=False))
