"""Small geometry helpers shared by the science modules."""

from __future__ import annotations

import numpy as np
from ase import Atoms
from ase.neighborlist import neighbor_list


def neighbour_pairs(atoms: Atoms, cutoff: float, quantities: str = "ijD") -> tuple:
    """``ase.neighborlist.neighbor_list`` that stays O(N) for clusters without a cell.

    ASE bins atoms by the cell; a cluster with a zero cell makes it scale badly (29 s and
    3.4 GB for 4,033 atoms at 6 Å, against 0.8 s with a bounding box). Non-periodic
    structures are therefore given a box (only the cell changes; distances do not).
    """
    if not atoms.pbc.any():
        boxed = Atoms(numbers=atoms.numbers, positions=atoms.positions, pbc=False)
        span = np.ptp(atoms.positions, axis=0) if len(atoms) else np.zeros(3)
        boxed.set_cell(np.diag(span + 2.0 * cutoff + 1.0))
        boxed.positions = atoms.positions - atoms.positions.min(axis=0) + cutoff + 0.5
        return neighbor_list(quantities, boxed, cutoff, self_interaction=False)
    return neighbor_list(quantities, atoms, cutoff, self_interaction=False)
