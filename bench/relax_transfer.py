"""ML relaxation of the trained target and transfer to other particles, checked against EMT.

    .venv/bin/python bench/relax_transfer.py MODEL_DIR [--fmax 0.05] [--steps 300]

MODEL_DIR is a model written by `nft-fw export` (or `make demo`: .nft-fw-demo/model),
trained on the Pt260 campaign. For the Pt260 target it relaxes with the ensemble mean
(FIRE) and with EMT itself from the same start and reports EMT's largest force on the
ML-relaxed structure, the energy difference of the two minima (EMT energies) and their
RMSD. For transfer targets (rattled icosahedral Pt309 and Pt1415, no new data) it
reports the true-force MAE at the start and the end of the ML relaxation and the largest
δ met on the way, next to the Pt260 target's.
"""

from __future__ import annotations

import argparse
import logging
import time

import numpy as np
from ase import Atoms
from ase.calculators.emt import EMT
from ase.cluster import Icosahedron, Octahedron
from ase.optimize import FIRE

from nft_fw.calculator import EnsembleCalculator
from nft_fw.relax import relax


def rattled(atoms: Atoms, seed: int = 0, stdev: float = 0.1) -> Atoms:
    atoms = atoms.copy()
    atoms.positions += np.random.default_rng(seed).normal(0.0, stdev, atoms.positions.shape)
    return atoms


def emt_forces(atoms: Atoms) -> tuple[float, np.ndarray]:
    a = atoms.copy()
    a.calc = EMT()
    return a.get_potential_energy(), a.get_forces()


def mae(calc: EnsembleCalculator, atoms: Atoms) -> float:
    a = atoms.copy()
    a.calc = calc
    return float(np.linalg.norm(a.get_forces() - emt_forces(atoms)[1], axis=1).mean())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model")
    parser.add_argument("--fmax", type=float, default=0.05)
    parser.add_argument("--steps", type=int, default=300)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    calc = EnsembleCalculator.load(args.model)

    start = rattled(Octahedron("Pt", 8, 3, latticeconstant=3.92))
    t0 = time.perf_counter()
    traj = relax(start, calc, fmax=args.fmax, max_steps=args.steps, optimizer="fire")
    t_ml = time.perf_counter() - t0
    ml_final = traj.final
    ref = start.copy()
    ref.calc = EMT()
    FIRE(ref, logfile=None).run(fmax=args.fmax, steps=2000)
    e_ml, f_ml = emt_forces(ml_final)
    e_ref = ref.get_potential_energy()
    rmsd = float(np.sqrt(np.mean(np.sum((ml_final.positions - ref.positions) ** 2, axis=1))))
    trained_delta = traj.max_uncertainty
    print(
        f"Pt260 ML relaxation: {len(traj.steps)} steps in {t_ml:.0f} s, converged "
        f"{traj.converged}; max δ on the way {trained_delta:.3f} eV/Å"
    )
    print(
        f"  EMT on the ML-relaxed structure: max force {np.linalg.norm(f_ml, axis=1).max():.3f} "
        f"eV/Å; E - E(EMT-relaxed) = {e_ml - e_ref:+.3f} eV; RMSD to EMT's minimum {rmsd:.3f} Å"
    )
    for label, atoms in (
        ("Pt309 icosahedron", rattled(Icosahedron("Pt", 5, latticeconstant=3.92))),
        ("Pt1415 icosahedron", rattled(Icosahedron("Pt", 8, latticeconstant=3.92))),
    ):
        t0 = time.perf_counter()
        tr = relax(atoms, calc, fmax=args.fmax, max_steps=args.steps, optimizer="fire")
        dt = time.perf_counter() - t0
        print(
            f"{label} ({len(atoms)} atoms): true-force MAE start {mae(calc, atoms):.3f}, end "
            f"{mae(calc, tr.final):.3f} eV/Å; max δ {tr.max_uncertainty:.3f} eV/Å "
            f"({tr.max_uncertainty / trained_delta:.1f}x the Pt260 run's); {len(tr.steps)} steps "
            f"in {dt:.0f} s"
        )


if __name__ == "__main__":
    main()
