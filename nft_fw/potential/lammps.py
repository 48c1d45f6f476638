"""An exported nft-fw model inside LAMMPS: forces and energy through ``fix external``
(``pf/callback``), per-atom δ for dumps and conditions.

A LAMMPS user keeps LAMMPS's integrators, thermostats, computes and dumps; nft-fw supplies
the ensemble mean's forces and energy (eV, Å: ``units metal``) and δ, the per-atom spread of
the members' forces (Zeng, Chen, Peterson, J. Chem. Phys. 156, 064104 (2022), Eq. 1)::

    from lammps import lammps
    from nft_fw.potential.lammps import attach

    lmp = lammps()
    lmp.commands_string(setup)      # units metal, atoms (types in `elements` order), no pair
    nft = attach(lmp, "pt260-model", elements=["Pt"])
    lmp.command("dump d all custom 100 md.dump id type x y z d_nft_delta")
    lmp.command("fix halt all halt 10 v_nft_max_delta > 0.5 error continue")
    lmp.command("run 10000")

:func:`attach` defines, besides the fix (``nft`` by default):

* ``d_nft_delta`` — a per-atom property (``fix property/atom``) holding each atom's δ (eV/Å)
  at the last force call: for ``dump custom``, ``compute reduce``, groups by value;
* ``f_nft[1]`` / ``v_nft_max_delta`` — the largest δ (eV/Å); ``f_nft[2]`` the mean; the
  calibrated largest δ in ``f_nft[3]`` when the model carries a calibration (else 0).

What does not work: several MPI ranks (the model runs on the whole structure in one
process: :func:`attach` refuses a LAMMPS instance with more than one rank); the virial
(pressure, NPT and box relaxation are wrong: the fix contributes no virial — a periodic box
is accepted for NVE/NVT only, with a warning); LAMMPS's own ``pair_style`` would be added to
these forces (define none).
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from ase import Atoms
from ase.data import atomic_numbers

from nft_fw.potential.calculator import EnsembleCalculator

log = logging.getLogger(__name__)

DELTA_PROPERTY = "nft_delta"  # the per-atom property (d_nft_delta in LAMMPS)
MAX_DELTA_VARIABLE = "nft_max_delta"


class LammpsModel:
    """The model attached to one LAMMPS instance (made by :func:`attach`): ``calls`` counts
    the force calls, ``max_delta`` is the largest δ of the last one (eV/Å)."""

    def __init__(
        self, lmp: Any, calc: EnsembleCalculator, elements: Sequence[str], fix_id: str
    ) -> None:
        self.lmp, self.calc, self.fix_id = lmp, calc, fix_id
        self.elements = list(elements)
        self._numbers = np.array([atomic_numbers[e] for e in self.elements])
        self._atoms: Atoms | None = None
        self.calls = 0
        self.max_delta = 0.0
        self.energy = 0.0

    def _structure(self, nlocal: int, x: np.ndarray) -> Atoms:
        """The LAMMPS atoms as an ASE structure in LAMMPS's current local order."""
        types = np.asarray(self.lmp.numpy.extract_atom("type"))[:nlocal]
        numbers = self._numbers[types - 1]
        boxlo, boxhi, xy, yz, xz, periodic, _ = self.lmp.extract_box()
        pbc = [bool(p) for p in periodic]
        cell = np.array(
            [[boxhi[0] - boxlo[0], 0.0, 0.0], [xy, boxhi[1] - boxlo[1], 0.0],
             [xz, yz, boxhi[2] - boxlo[2]]]
        )  # fmt: skip
        atoms = self._atoms
        if atoms is None or len(atoms) != nlocal or not np.array_equal(atoms.numbers, numbers):
            atoms = Atoms(numbers=numbers, positions=np.array(x), cell=cell, pbc=pbc)
            atoms.calc = self.calc
            self._atoms = atoms
        else:
            atoms.positions = np.array(x)
            atoms.cell = cell
            atoms.pbc = pbc
        return atoms

    def __call__(
        self, caller: Any, step: int, nlocal: int, tag: np.ndarray, x: np.ndarray, f: np.ndarray
    ) -> None:
        atoms = self._structure(nlocal, x)
        forces = atoms.get_forces()
        energy = float(atoms.get_potential_energy())
        delta = np.asarray(self.calc.results["uncertainties"])
        f[:] = forces
        self.lmp.fix_external_set_energy_global(self.fix_id, energy)
        self.lmp.numpy.extract_atom(f"d_{DELTA_PROPERTY}")[:nlocal] = delta
        calibrated = self.calc.results.get("calibrated_uncertainties")
        self.max_delta = float(delta.max())
        self.energy = energy
        self.lmp.fix_external_set_vector(self.fix_id, 1, self.max_delta)
        self.lmp.fix_external_set_vector(self.fix_id, 2, float(delta.mean()))
        self.lmp.fix_external_set_vector(
            self.fix_id, 3, 0.0 if calibrated is None else float(np.max(calibrated))
        )
        self.calls += 1


def attach(
    lmp: Any,
    model: str | Path | EnsembleCalculator,
    elements: Sequence[str],
    fix_id: str = "nft",
    group: str = "all",
) -> LammpsModel:
    """Attach an exported model (its directory, or an EnsembleCalculator) to ``lmp`` (a
    ``lammps.lammps`` instance whose box and atoms exist, ``units metal``, no pair style):
    LAMMPS atom type k is ``elements[k-1]``. Defines ``fix <fix_id> <group> external
    pf/callback 1 1`` with the model's energy counted in ``pe``, the per-atom property
    ``d_nft_delta`` and the variable ``nft_max_delta`` (see the module's text). Raises
    ValueError naming what to change for several MPI ranks, other units, a type without an
    element or an element the model was not trained on."""
    calc = model if isinstance(model, EnsembleCalculator) else EnsembleCalculator.load(model)
    if lmp.extract_setting("world_size") != 1:
        raise ValueError(
            "nft_fw.potential.lammps runs the model on the whole structure in one process: run LAMMPS "
            "on one MPI rank (several ranks are not supported)"
        )
    units = lmp.extract_global("units")
    if units != "metal":
        raise ValueError(f"LAMMPS units are {units!r}; nft-fw models need 'units metal' (eV, Å)")
    ntypes = int(lmp.extract_global("ntypes"))
    if len(elements) != ntypes:
        raise ValueError(
            f"elements lists {len(elements)} element(s) for {ntypes} LAMMPS atom type(s): give "
            "one element per type, in type order"
        )
    trained = set(calc.ensemble.spec.elements)
    unknown = [e for e in elements if e not in trained]
    if unknown:
        raise ValueError(
            f"elements {unknown} are not among the model's {sorted(trained)}: map each LAMMPS "
            "type to an element the model was trained on"
        )
    periodic = lmp.extract_box()[5]
    if any(periodic):
        warnings.warn(
            "a periodic LAMMPS box: nft_fw.potential.lammps sets no virial, so pressure, NPT and box "
            "relaxation are wrong; NVE/NVT are fine",
            stacklevel=2,
        )
    bridge = LammpsModel(lmp, calc, elements, fix_id)
    lmp.command(f"fix {fix_id}_delta all property/atom d_{DELTA_PROPERTY}")
    lmp.command(f"fix {fix_id} {group} external pf/callback 1 1")
    lmp.command(f"fix_modify {fix_id} energy yes")
    lmp.fix_external_set_vector_length(fix_id, 3)
    lmp.set_fix_external_callback(fix_id, bridge, lmp)
    lmp.command(f"variable {MAX_DELTA_VARIABLE} equal f_{fix_id}[1]")
    return bridge


_NEEDS_MODEL = ("run", "minimize", "rerun")


def _commands(text: str) -> list[str]:
    """The commands of a LAMMPS input: ``&`` continuations joined, comments and blank lines
    dropped (a ``#`` inside quotes is kept)."""
    out: list[str] = []
    pending = ""
    for raw in text.splitlines():
        line = raw.rstrip()
        if line.endswith("&"):
            pending += line[:-1] + " "
            continue
        line = pending + line
        pending = ""
        quoted = False
        for k, ch in enumerate(line):
            if ch in "\"'":
                quoted = not quoted
            elif ch == "#" and not quoted:
                line = line[:k]
                break
        if line.strip():
            out.append(line.strip())
    if pending.strip():
        out.append(pending.strip())
    return out


def run_input(
    path: str | Path,
    model: str | Path | EnsembleCalculator,
    elements: Sequence[str],
    variables: dict[str, str] | None = None,
    cmdargs: Sequence[str] = ("-log", "none"),
    structure: Atoms | str | Path | None = None,
) -> LammpsModel:
    """Run a plain LAMMPS input file (no ``pair_style``) with the model attached: the input's
    commands run in order and :func:`attach` happens once the box exists, right before the
    first command that needs the model — one naming ``nft_`` (``d_nft_delta``,
    ``v_nft_max_delta``, ``f_nft``) or a ``run``/``minimize``/``rerun``. ``variables``:
    index-style variables as ``lmp -var NAME VALUE`` sets them. ``structure`` (Atoms or any
    file ASE reads): written as a LAMMPS data file (types in ``elements`` order, masses; a
    structure without a cell gets 10 Å of vacuum) whose path is the variable ``structure``,
    for ``read_data ${structure}``. Returns the attached model (``calls``, ``max_delta``)."""
    import tempfile

    from ase.io import read, write
    from lammps import lammps  # Debian's python3-lammps: only this function needs it

    args = list(cmdargs)
    for name, value in (variables or {}).items():
        args += ["-var", name, str(value)]
    tmp = tempfile.TemporaryDirectory(prefix="nft-fw-lammps-")
    if structure is not None:
        atoms = structure.copy() if isinstance(structure, Atoms) else read(structure)
        assert isinstance(atoms, Atoms)
        if atoms.cell.rank < 3:
            atoms.center(vacuum=10.0)
        data = Path(tmp.name) / "structure.data"
        write(data, atoms, format="lammps-data", specorder=list(elements), masses=True,
              units="metal", atom_style="atomic")  # fmt: skip
        args += ["-var", "structure", str(data)]
    lmp = lammps(cmdargs=args)
    bridge: LammpsModel | None = None
    try:
        for command in _commands(Path(path).read_text(encoding="utf-8")):
            words = command.split()
            needs = "nft_" in command or "f_nft" in command or words[0] in _NEEDS_MODEL
            if bridge is None and needs:
                if not lmp.extract_setting("box_exist") or int(lmp.get_natoms()) == 0:
                    raise ValueError(
                        f"{path}: {words[0]!r} needs the model, but the input has no atoms yet: "
                        "create the box and atoms (create_box/create_atoms or read_data) first"
                    )
                bridge = attach(lmp, model, elements)
            lmp.command(command)
    finally:
        lmp.close()
        tmp.cleanup()
    if bridge is None:
        raise ValueError(f"{path}: no command needed the model (no run, minimize or nft_ name)")
    return bridge
