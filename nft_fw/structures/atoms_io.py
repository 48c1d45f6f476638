"""Structures as data: one Atoms ↔ document converter and an exact extended-XYZ writer.

* :func:`to_doc` / :func:`from_doc`: ``Atoms.todict`` / ``Atoms.fromdict`` with the arrays
  as plain lists, for database documents, Firework specs and MPI messages (JSON or BSON;
  float64 survives both exactly).
* :func:`write_extxyz`: extended XYZ as ASE writes it (the same comment line, the same
  columns; ``ase.io.read(path, ":")`` reads it back, calculator results included), but every
  float written with the shortest digits that read back to the same float64. ASE's own
  writer rounds per-atom columns to 8 decimals (``%16.8f``): 5e-9 Å on a position, enough to
  make a stored structure differ from the one a campaign computed on.
"""

from __future__ import annotations

import io
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import IO, Any

import numpy as np
from ase import Atoms
from ase.io import read
from ase.io.extxyz import output_column_format, save_calc_results, voigt_6_to_full_3x3_stress

# what a structure document holds (Atoms.todict keys); everything else is not a structure
DOC_KEYS = ("numbers", "positions", "cell", "pbc", "initial_magmoms")


def to_doc(atoms: Atoms) -> dict[str, Any]:
    """``atoms`` (numbers, positions Å, cell Å, pbc, initial magnetic moments when set) as
    a document of plain lists."""
    d = atoms.todict()
    return {k: np.asarray(d[k]).tolist() for k in DOC_KEYS if k in d}


def from_doc(doc: dict[str, Any]) -> Atoms:
    """The Atoms of :func:`to_doc` (a document may lack ``cell`` and ``pbc``: a cluster in
    vacuum); keys other than structure keys are ignored."""
    d: dict[str, Any] = {k: np.asarray(doc[k]) for k in DOC_KEYS if doc.get(k) is not None}
    d["positions"] = np.asarray(d["positions"], dtype=float).reshape(-1, 3)
    d.setdefault("cell", np.zeros((3, 3)))
    d.setdefault("pbc", np.zeros(3, dtype=bool))
    return Atoms.fromdict(d)


def _text(value: Any) -> str:
    if isinstance(value, (bool, np.bool_)):
        return "T" if value else "F"
    if isinstance(value, (float, np.floating)):
        return repr(float(value))
    if isinstance(value, (int, np.integer)):
        return str(int(value))
    return str(value)


def write_extxyz(fileobj: IO[str] | str | Path, frames: Atoms | Iterable[Atoms]) -> None:
    """Write ``frames`` as extended XYZ with exact floats (see the module docstring); a
    frame's calculator results (energy, forces, stress, …) go where ASE puts them."""
    if isinstance(frames, Atoms):
        frames = [frames]
    if isinstance(fileobj, (str, Path)):
        with open(fileobj, "w", encoding="utf-8") as fh:
            write_extxyz(fh, frames)
        return
    for original in frames:
        atoms = original.copy()
        save_calc_results(atoms, original.calc, calc_prefix="")
        if atoms.info.get("stress", np.array([])).shape == (6,):
            atoms.info["stress"] = voigt_6_to_full_3x3_stress(atoms.info["stress"])
        skip = ("numbers", "positions", "symbols", "species", "pos")
        columns = ["symbols", "positions", *(k for k in atoms.arrays if k not in skip)]
        arrays = {
            "symbols": np.array(atoms.get_chemical_symbols()),
            "positions": atoms.positions,
            **{k: atoms.arrays[k] for k in columns[2:]},
        }
        comment, _, _, _ = output_column_format(atoms, columns, arrays, True)
        fileobj.write(f"{len(atoms)}\n{comment}\n")
        per_atom = [np.asarray(arrays[c]).reshape(len(atoms), -1) for c in columns]
        for i in range(len(atoms)):
            fileobj.write(" ".join(_text(v) for a in per_atom for v in a[i]) + "\n")


def extxyz_text(frames: Atoms | Iterable[Atoms]) -> str:
    buf = io.StringIO()
    write_extxyz(buf, frames)
    return buf.getvalue()


def read_extxyz_text(text: str) -> list[Atoms]:
    """The frames of an extended XYZ text (ASE's reader)."""
    frames = read(io.StringIO(text), index=":", format="extxyz")
    return list(frames) if isinstance(frames, Sequence) else [frames]
