"""The exported potential inside LAMMPS (Debian's lammps + python3-lammps, `fix external`):
the same forces, energy and δ as EnsembleCalculator, energy conserved in NVE as ASE's own
MD conserves it, and bad use refused naming the fix."""

from __future__ import annotations

from pathlib import Path
from typing import Any

# Debian's python3-lammps, linked into .venv by the set-up (scripts/bootstrap.sh dev)
import lammps
import numpy as np
import pytest
from ase import Atoms, units
from ase.cluster import Octahedron
from ase.md.velocitydistribution import Stationary, ZeroRotation, thermalize_momenta
from ase.md.verlet import VelocityVerlet

from nft_fw.potential.calculator import EnsembleCalculator
from nft_fw.potential.lammps import attach

MODEL = Path(__file__).resolve().parent.parent / "bench" / "data" / "pt260-emt-model"
DT_FS = 2.0
STEPS = 1000


def _particle() -> Atoms:
    atoms = Octahedron("Pt", 5, 1)  # 79 atoms
    atoms.rattle(0.05, seed=3)
    atoms.center(vacuum=10.0)
    return atoms


def _lammps(atoms: Atoms, units_style: str = "metal", ntypes: int = 1) -> Any:
    lmp = lammps.lammps(cmdargs=["-log", "none", "-nocite"])
    cell = atoms.cell.lengths()
    lmp.commands_string(
        f"""
        units {units_style}
        atom_style atomic
        atom_modify map array
        boundary f f f
        region box block 0 {cell[0]} 0 {cell[1]} 0 {cell[2]}
        create_box {ntypes} box
        """
    )
    for t in range(1, ntypes + 1):
        lmp.command(f"mass {t} 195.084")
    n = len(atoms)
    lmp.create_atoms(n, list(range(1, n + 1)), [1] * n, atoms.positions.ravel().tolist())
    return lmp


def _by_tag(lmp: Any, name: str, n: int) -> np.ndarray:
    tags = np.asarray(lmp.numpy.extract_atom("id"))[:n]
    values = np.asarray(lmp.numpy.extract_atom(name))[:n]
    out = np.empty_like(values)
    out[tags - 1] = values
    return out


def test_lammps_gives_the_calculators_forces_energy_and_delta() -> None:
    atoms = _particle()
    lmp = _lammps(atoms)
    bridge = attach(lmp, MODEL, ["Pt"])
    lmp.command("variable mean_delta equal f_nft[2]")
    lmp.command("run 0")
    reference = atoms.copy()
    reference.calc = EnsembleCalculator.load(MODEL)  # its own instance: computed anew
    forces = reference.get_forces()
    delta = reference.calc.get_uncertainties()
    n = len(atoms)
    assert np.abs(_by_tag(lmp, "f", n) - forces).max() <= 1e-6
    assert lmp.get_thermo("pe") == pytest.approx(reference.get_potential_energy(), abs=1e-6)
    assert np.abs(_by_tag(lmp, "d_nft_delta", n) - delta).max() <= 1e-6
    assert lmp.extract_variable("nft_max_delta") == pytest.approx(delta.max(), abs=1e-9)
    assert lmp.extract_variable("mean_delta") == pytest.approx(delta.mean(), abs=1e-9)
    assert bridge.calls == 1 and bridge.max_delta == pytest.approx(delta.max())
    lmp.close()


def test_nve_in_lammps_conserves_energy_as_ase_md_does(record_property: Any) -> None:
    """1,000 velocity-Verlet steps of 2 fs from the same positions and velocities in LAMMPS
    (fix nve + the model) and in ASE: both trajectories agree at the start, and LAMMPS's
    energy drift and fluctuation are those of ASE's run, not worse."""
    atoms = _particle()
    thermalize_momenta(atoms, 600, rng=np.random.default_rng(0))
    Stationary(atoms)
    ZeroRotation(atoms)
    n = len(atoms)

    lmp = _lammps(atoms)
    tags = np.asarray(lmp.numpy.extract_atom("id"))[:n]
    velocities = atoms.get_velocities() * units.fs * 1000.0  # Å/ps
    lmp.numpy.extract_atom("v")[:n] = velocities[tags - 1]
    attach(lmp, MODEL, ["Pt"])
    lmp.commands_string(
        f"""
        timestep {DT_FS / 1000.0}
        fix integrate all nve
        thermo_style custom step pe ke etotal
        run 0
        """
    )
    lammps_e = []
    for _ in range(STEPS // 50):
        lammps_e.append(lmp.get_thermo("etotal"))
        lmp.command("run 50 pre no post no")
    lammps_e.append(lmp.get_thermo("etotal"))
    lmp.close()

    ase_atoms = atoms.copy()
    ase_atoms.calc = EnsembleCalculator.load(MODEL)
    ase_e = []
    dyn = VelocityVerlet(ase_atoms, timestep=DT_FS * units.fs)
    for _ in range(STEPS // 50):
        ase_e.append(ase_atoms.get_total_energy())
        dyn.run(50)
    ase_e.append(ase_atoms.get_total_energy())

    lammps_e, ase_e = np.array(lammps_e), np.array(ase_e)
    assert lammps_e[0] == pytest.approx(ase_e[0], abs=1e-6)  # the same start, same units
    # every 50 steps: the sampled drift slope per atom (the LAMMPS sample spacing)
    every = np.arange(len(lammps_e)) * 50
    slope_l = float(np.polyfit(every * DT_FS / 1000.0, lammps_e / n, 1)[0])
    slope_a = float(np.polyfit(every * DT_FS / 1000.0, ase_e / n, 1)[0])
    spread_l, spread_a = float(np.std(lammps_e / n)), float(np.std(ase_e / n))
    record_property("lammps_drift_eV_per_atom_ps", slope_l)
    record_property("ase_drift_eV_per_atom_ps", slope_a)
    record_property("lammps_std_eV_per_atom", spread_l)
    record_property("ase_std_eV_per_atom", spread_a)
    assert abs(slope_l) <= 2 * abs(slope_a) + 1e-5
    assert spread_l <= 2 * spread_a + 1e-6


def test_bad_use_is_refused_naming_what_to_change() -> None:
    atoms = _particle()
    lmp = _lammps(atoms, units_style="real")
    with pytest.raises(ValueError, match="units metal"):
        attach(lmp, MODEL, ["Pt"])
    lmp.close()
    lmp = _lammps(atoms, ntypes=2)
    with pytest.raises(ValueError, match="one element per type"):
        attach(lmp, MODEL, ["Pt"])
    with pytest.raises(ValueError, match=r"not among the model's \['Pt'\]"):
        attach(lmp, MODEL, ["Pt", "Cu"])
    lmp.close()


def test_the_shipped_input_runs_with_delta_in_the_dump_and_halts_on_it(tmp_path: Path) -> None:
    """`nft-fw lammps` on nft_fw/examples/lammps/in.pt-nvt: the structure comes in as a data
    file, δ lands in every dumped frame, and `fix halt` on v_nft_max_delta stops the run."""
    import subprocess
    import sys

    from ase.io import read

    root = Path(__file__).resolve().parent.parent
    particle = tmp_path / "particle.xyz"
    _particle().write(particle)

    def run(*extra: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "nft_fw", "lammps",
             str(root / "nft_fw" / "examples" / "lammps" / "in.pt-nvt"), "--model", str(MODEL),
             "--elements", "Pt", "--structure", str(particle), "--var", "steps", "100", *extra],
            cwd=tmp_path, capture_output=True, text=True, timeout=300, check=False,
        )  # fmt: skip

    done = run()
    assert done.returncode == 0, done.stderr[-2000:]
    assert "101 force calls" in done.stdout
    frames = read(tmp_path / "pt-nvt.dump", ":", format="lammps-dump-text")
    assert len(frames) == 1 and len(frames[0]) == 79  # step 0 (dumped every 500)
    text = (tmp_path / "pt-nvt.dump").read_text()
    assert "d_nft_delta" in text.splitlines()[8]
    delta = np.loadtxt(text.splitlines()[9:], usecols=5)
    assert delta.shape == (79,) and (delta > 0).all()
    halted = run("--var", "stop", "0.01")  # every step is above 0.01 eV/Å: halt at step 50
    assert halted.returncode == 0, halted.stderr[-2000:]
    assert "51 force calls" in halted.stdout
    bad = run("--elements", "Pt", "Cu")
    assert bad.returncode == 2 and "not among the model's ['Pt']" in bad.stderr
