"""Whole-structure parent labels a model is checked against (never trained on): the
``nft_kind: full`` frames of a label export, or any extended XYZ whose frames carry forces.

A DFT campaign cannot afford the parent on its whole target at every iteration, as an EMT
campaign does (``validation``); a few whole-particle single points, made once (a check
campaign of ``kind: nearsightedness`` with ``full: true``), say afterwards how every model the
campaign stored did on them: ``nft-fw history NAME --against FILE`` (docs/labels.md).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from ase import Atoms
from ase.io import read

from nft_fw.potential import model as mdl
from nft_fw.steps.common import assess


class ReferenceFileError(ValueError):
    """A reference file that cannot be checked against: says which file and the fix."""


@dataclasses.dataclass(frozen=True)
class Reference:
    """``atoms`` and the parent's ``forces`` (n_atoms, 3) eV/Å on them; ``name`` is
    ``FILE_STEM[k]``, frame ``k`` of its file."""

    name: str
    atoms: Atoms
    forces: np.ndarray


def read_references(paths: Sequence[Path]) -> list[Reference]:
    """Every frame of ``paths`` with forces, except chunk labels (``nft_kind: chunk``: the
    forces of a cut-out, of which only the centre's is the structure's); a structure given
    twice (same numbers and positions) is kept once."""
    out: list[Reference] = []
    seen: set[bytes] = set()
    for path in paths:
        try:
            frames = read(path, ":")
        except (OSError, ValueError, StopIteration) as err:
            raise ReferenceFileError(
                f"{path}: cannot be read as structures with forces ({err}); give an extended "
                "XYZ file such as 'nft-fw labels NAME --export FILE' writes"
            ) from err
        kept = 0
        for k, frame in enumerate(frames):
            if frame.info.get("nft_kind") == "chunk":
                continue
            try:
                forces = frame.get_forces()
            except RuntimeError:  # no calculator results in the frame
                continue
            key = frame.numbers.tobytes() + np.round(frame.positions, 8).tobytes()
            kept += 1
            if key in seen:
                continue
            seen.add(key)
            atoms = Atoms(frame.numbers, frame.positions, cell=frame.cell, pbc=frame.pbc)
            out.append(Reference(f"{path.stem}[{k}]", atoms, np.asarray(forces, dtype=float)))
        if not kept:
            raise ReferenceFileError(
                f"{path}: no frame with forces other than chunk labels; give whole-structure "
                "labels (nft_kind: full, e.g. the export of a check campaign with full: true)"
            )
    return out


def check_elements(references: Sequence[Reference], elements: Sequence[str]) -> None:
    """Raise :class:`ReferenceFileError` naming a reference with an element the model lacks."""
    for ref in references:
        extra = sorted(set(ref.atoms.get_chemical_symbols()) - set(elements))
        if extra:
            raise ReferenceFileError(
                f"{ref.name} holds {', '.join(extra)}, which the campaign's model was not "
                f"trained on (it knows {', '.join(elements)}); give references of those elements"
            )


def errors(ensemble: mdl.Ensemble, references: Sequence[Reference]) -> dict[str, dict[str, float]]:
    """Per reference: the ensemble mean's force MAE and largest error against the parent
    (``true_force_mae``, ``true_force_max``, eV/Å, as the campaign's own validation figures
    them) and the largest δ there (``structure_uncertainty``, eV/Å)."""
    out = {}
    for ref in references:
        figures = assess(ensemble, ref.atoms, ref.forces).figures
        out[ref.name] = {
            key: float(figures[key])
            for key in ("true_force_mae", "true_force_max", "structure_uncertainty")
        }
    return out
