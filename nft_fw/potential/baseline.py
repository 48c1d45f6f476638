"""A physical baseline under the network (Δ-learning): the model's energy and forces are the
baseline's plus the ensemble's, and the ensemble learns the parent minus the baseline.

Far from its data a network's forces are whatever its weights extrapolate to; with a
baseline, the part the networks add is what they learnt of the difference, and δ (the
spread of the members, which the baseline does not enter) still says how far the model is
from its data. Whether that makes a model more robust is measured, not assumed
(``bench/dft_robustness.py``; docs/gpaw.md, "A baseline under the network").

``emt``: ASE's effective-medium theory (Al, Cu, Ag, Au, Ni, Pd, Pt; H, C, N, O with
parameters ASE calls rough). Its force on an atom depends on atoms within about 6 Å only,
so the central force of a chunk of radius ≥ 8 Å is the whole structure's: chunks train
the residual exactly as they train the bare network.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from ase import Atoms
from ase.calculators.emt import EMT, parameters

#: The baselines a model may carry, by the name the campaign file gives.
NAMES = ("none", "emt")


def elements(name: str) -> frozenset[str]:
    """The elements baseline ``name`` knows."""
    if name == "emt":
        return frozenset(parameters)
    raise ValueError(f"baseline {name!r} is not one of {[n for n in NAMES if n != 'none']}")


def unsupported(name: str, symbols: Sequence[str]) -> list[str]:
    """The elements of ``symbols`` that baseline ``name`` does not know (sorted)."""
    return sorted(set(symbols) - elements(name))


def energy_forces(name: str, atoms: Atoms) -> tuple[float, np.ndarray]:
    """The baseline's energy (eV) and forces (n, 3) eV/Å of ``atoms`` (a copy is used)."""
    return Evaluator(name)(atoms)


class Evaluator:
    """Baseline ``name`` on a sequence of structures: the calculator and its neighbour list
    are kept while the atoms, cell and periodicity stay the same (a relaxation, MD), which
    halves the cost per call (Pt309: 40 → 20 ms)."""

    def __init__(self, name: str) -> None:
        if name not in NAMES[1:]:
            raise ValueError(f"baseline {name!r} is not one of {list(NAMES[1:])}")
        self.name = name
        self._work: Atoms | None = None

    def __call__(self, atoms: Atoms) -> tuple[float, np.ndarray]:
        work = self._work
        if (
            work is None
            or len(work) != len(atoms)
            or not np.array_equal(work.numbers, atoms.numbers)
            or not np.array_equal(work.pbc, atoms.pbc)
            or not np.array_equal(work.cell.array, atoms.cell.array)
        ):
            missing = unsupported(self.name, atoms.get_chemical_symbols())
            if missing:
                raise ValueError(
                    f"the {self.name} baseline has no parameters for {', '.join(missing)}"
                )
            work = Atoms(
                numbers=atoms.numbers, positions=atoms.positions, cell=atoms.cell, pbc=atoms.pbc
            )
            work.calc = EMT()
            self._work = work
        else:
            work.positions = atoms.positions
        energy = float(work.get_potential_energy())
        return energy, np.array(work.get_forces(), dtype=np.float64)
