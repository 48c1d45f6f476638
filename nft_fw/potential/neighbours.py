"""Neighbour tables: every atom's neighbours within a radius, padded to a fixed width.

Pairs come from vesin (a compiled cell-list search: 14 ms for 6,895 atoms at 6 Å, against
1.6 s for ``ase.neighborlist.neighbor_list`` on this project's reference machine), in the
convention of ASE: D_ij = R_j − R_i + S_ij · cell, with periodic images where ``atoms.pbc``.

A table built with a *skin* (radius R_c + skin) stays valid while no atom has moved more
than skin / 2 since it was built: every pair that can come within R_c is then already in
it, and pairs beyond R_c contribute nothing through the smooth cutoff. Relaxations and MD
therefore rebuild only now and then (:func:`is_stale`).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import numpy as np
import vesin
from ase import Atoms

#: Closest approach the descriptors accept, Å. Real structures stay well above it (the
#: H–H bond is 0.74 Å); closer atoms are overlapping input, and at r → 0 directions and
#: their derivatives are undefined.
MIN_DISTANCE = 0.5
WIDTH_BUCKET = 8  # widths are padded to a multiple of this, so jit sees few shapes


class StructureInputError(ValueError):
    """The structure cannot be evaluated (non-finite coordinates, overlapping atoms)."""


@dataclasses.dataclass
class NeighbourTable:
    """Neighbours of every atom within ``radius`` Å.

    index: (n, width) int32 neighbour indices (padding slots point at the atom itself);
    shift: (n, width, 3) Å, so that D_ij = R_j − R_i + shift (zero on padding);
    mask: (n, width) bool, True for real neighbours;
    positions, cell, pbc, numbers: the structure the table was built for (skin checks).
    """

    index: np.ndarray
    shift: np.ndarray
    mask: np.ndarray
    radius: float
    positions: np.ndarray
    cell: np.ndarray
    pbc: np.ndarray
    numbers: np.ndarray
    cache: dict[Any, Any] = dataclasses.field(default_factory=dict, repr=False, compare=False)

    @property
    def width(self) -> int:
        return int(self.index.shape[1])

    @property
    def counts(self) -> np.ndarray:
        return self.mask.sum(axis=1)

    def displacements(self, positions: np.ndarray | None = None) -> np.ndarray:
        """D_ij (n, width, 3) Å for ``positions`` (default: those the table was built for)."""
        pos = self.positions if positions is None else np.asarray(positions, dtype=np.float64)
        return np.where(self.mask[..., None], pos[self.index] - pos[:, None, :] + self.shift, 0.0)


def check_finite(atoms: Atoms) -> None:
    """Raise StructureInputError naming the first atom with a NaN or infinite coordinate."""
    pos = np.asarray(atoms.positions)
    bad = np.flatnonzero(~np.isfinite(pos).all(axis=1))
    if bad.size:
        raise StructureInputError(
            f"atom {int(bad[0])} has a non-finite position {pos[bad[0]].tolist()} "
            f"({bad.size} such atoms); fix the coordinates before evaluating the structure"
        )
    if atoms.pbc.any() and not np.isfinite(atoms.cell.array).all():
        raise StructureInputError(f"the cell {atoms.cell.array.tolist()} is not finite")


def pairs(atoms: Atoms, radius: float) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """All ordered pairs within ``radius`` Å: i, j (int64), shift vectors S·cell (Å), distances.

    Sorted by i, then j. Raises StructureInputError for non-finite input.
    """
    check_finite(atoms)
    n = len(atoms)
    if n == 0:
        z = np.zeros(0, dtype=np.int64)
        return z, z, np.zeros((0, 3)), np.zeros(0)
    pbc = np.asarray(atoms.pbc, dtype=bool)
    box = np.asarray(atoms.cell.array, dtype=np.float64)
    if pbc.any() and abs(np.linalg.det(box)) < 1e-12:
        raise StructureInputError(
            f"the structure is periodic along {pbc.tolist()} but its cell {box.tolist()} "
            "has no volume; set a cell or turn periodicity off"
        )
    if not pbc.any():
        box = np.zeros((3, 3))
    calc = vesin.NeighborList(cutoff=float(radius), full_list=True)
    i, j, s, d = calc.compute(
        np.ascontiguousarray(atoms.positions, dtype=np.float64),
        box,
        pbc.tolist() if pbc.any() else False,
        quantities="ijSd",
    )
    i = np.asarray(i, dtype=np.int64)
    j = np.asarray(j, dtype=np.int64)
    order = np.lexsort((j, i))
    i, j, s, d = i[order], j[order], np.asarray(s)[order], np.asarray(d)[order]
    shift = s.astype(np.float64) @ box if pbc.any() else np.zeros((len(i), 3))
    return i, j, shift, np.asarray(d, dtype=np.float64)


def check_distances(i: np.ndarray, j: np.ndarray, d: np.ndarray, minimum: float) -> None:
    if len(d) and d.min() < minimum:
        k = int(np.argmin(d))
        raise StructureInputError(
            f"atoms {int(i[k])} and {int(j[k])} are {d[k]:.3f} Å apart; the descriptors need "
            f"every pair at least {minimum} Å apart (overlapping atoms?); fix the coordinates"
        )


def bucket(n: int, size: int = WIDTH_BUCKET) -> int:
    return max(size, math.ceil(n / size) * size)


def build(
    atoms: Atoms, radius: float, width: int | None = None, min_distance: float = MIN_DISTANCE
) -> NeighbourTable:
    """The neighbour table of ``atoms`` within ``radius`` Å (R_c, or R_c + skin).

    ``width``: pad to at least this many slots (default: the largest count, bucketed).
    Raises StructureInputError for NaN/inf coordinates or atoms closer than ``min_distance``.
    """
    n = len(atoms)
    i, j, shift, d = pairs(atoms, radius)
    check_distances(i, j, d, min_distance)
    counts = np.bincount(i, minlength=n)
    most = int(counts.max()) if n else 0
    width = max(width or 0, bucket(most))
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]]).astype(np.int64)
    slot = np.arange(len(i)) - starts[i]
    index = np.repeat(np.arange(n, dtype=np.int32)[:, None], width, axis=1)
    shifts = np.zeros((n, width, 3))
    mask = np.zeros((n, width), dtype=bool)
    index[i, slot] = j
    shifts[i, slot] = shift
    mask[i, slot] = True
    return NeighbourTable(
        index=index,
        shift=shifts,
        mask=mask,
        radius=float(radius),
        positions=np.array(atoms.positions, dtype=np.float64),
        cell=np.array(atoms.cell.array, dtype=np.float64),
        pbc=np.array(atoms.pbc, dtype=bool),
        numbers=np.array(atoms.numbers),
    )


def is_stale(table: NeighbourTable, atoms: Atoms, skin: float) -> bool:
    """True when ``table`` may miss a pair within radius − skin for ``atoms``: a different
    structure (numbers, cell, periodicity) or an atom moved more than skin / 2."""
    if (
        len(atoms) != len(table.numbers)
        or not np.array_equal(atoms.numbers, table.numbers)
        or not np.array_equal(atoms.pbc, table.pbc)
        or not np.allclose(atoms.cell.array, table.cell, rtol=0.0, atol=1e-12)
    ):
        return True
    if skin <= 0:
        return not np.array_equal(atoms.positions, table.positions)
    moved = np.einsum(
        "ij,ij->i", atoms.positions - table.positions, atoms.positions - table.positions
    )
    return bool(moved.max(initial=0.0) > (0.5 * skin) ** 2)
