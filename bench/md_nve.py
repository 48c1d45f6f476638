"""NVE energy conservation of an exported model on Pt260.

    .venv/bin/python bench/md_nve.py [MODEL_DIR] [--timestep 2 5] [--ps 3]

Velocity Verlet with the ensemble mean (nft_fw.steps.md) from Octahedron(8, 3) Pt260 relaxed with
the model (FIRE, fmax 0.05 eV/Å; as tests/test_md.py), velocities at 300 K, total and angular momentum removed; prints per time step the
drift of the total energy (least-squares slope, eV/atom/ps), its standard deviation
(eV/atom), the mean temperature over the second half and ms per step — and the same for ASE's
EMT (the parent) from its own minimum, for scale. The default model is
bench/data/pt260-emt-model (the kept model of nft_fw/examples/pt260-md-emt.yaml's NFT phase).
"""

from __future__ import annotations

import argparse
import itertools
import json
import time
from pathlib import Path

import numpy as np
from ase import Atoms
from ase.calculators.emt import EMT
from ase.cluster import Octahedron
from ase.optimize import FIRE

from nft_fw.potential.calculator import EnsembleCalculator
from nft_fw.steps import md

HERE = Path(__file__).resolve().parent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", nargs="?", type=Path, default=HERE / "data/pt260-emt-model")
    parser.add_argument("--timestep", type=float, nargs="+", default=[2.0, 5.0])
    parser.add_argument("--ps", type=float, default=3.0)
    parser.add_argument("--temperature", type=float, default=300.0)
    args = parser.parse_args()
    atoms = Atoms(Octahedron("Pt", 8, 3, latticeconstant=3.92))
    atoms.calc = EnsembleCalculator.load(args.model)
    FIRE(atoms, logfile=None).run(fmax=0.05, steps=150)
    atoms.calc = None
    print(f"{len(atoms)} atoms")
    rows = []
    for dt, potential in itertools.product(args.timestep, ("model", "EMT")):
        settings = md.MDSettings("nve", args.temperature, dt)
        steps = round(args.ps * 1000.0 / dt)
        calc = EnsembleCalculator.load(args.model) if potential == "model" else EMT()
        start = atoms.copy()
        if potential == "EMT":
            start.calc = EMT()
            FIRE(start, logfile=None).run(fmax=0.05, steps=300)
            start.calc = None
        state = md.start(start, settings, seed=0)
        t0 = time.perf_counter()
        if potential == "model":
            log = md.run(state, calc, settings, steps).log
        else:  # the same integrator on the parent, which has no δ
            moving = state.atoms.copy()
            moving.calc = calc
            dyn = md.dynamics(moving, settings, np.random.default_rng(0))
            log = {"potential_energy": [], "kinetic_energy": [], "temperature_K": [],
                   "step": []}  # fmt: skip
            for k in range(steps + 1):
                if k:
                    dyn.run(1)
                log["step"].append(k)
                log["potential_energy"].append(moving.get_potential_energy())
                log["kinetic_energy"].append(moving.get_kinetic_energy())
                log["temperature_K"].append(moving.get_temperature())
        seconds = time.perf_counter() - t0
        total = np.asarray(log["potential_energy"]) + np.asarray(log["kinetic_energy"])
        rows.append({
            "potential": potential,
            "timestep_fs": dt,
            "steps": steps,
            "drift_eV_per_atom_per_ps": md.drift_per_atom_per_ps(log, dt, len(atoms)),
            "std_eV_per_atom": float(np.std(total) / len(atoms)),
            "mean_temperature_K_second_half": float(
                np.mean(log["temperature_K"][steps // 2:])
            ),
            "ms_per_step": 1000.0 * seconds / steps,
            # the ensemble's own δ (no calibration), eV/Å: at the start and the largest
            "max_delta_start": log["max_delta"][0] if "max_delta" in log else None,
            "max_delta_largest": max(log["max_delta"]) if "max_delta" in log else None,
        })  # fmt: skip
    print(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
