"""The initial training set: random bulk cells near the parent's lattice constant.

Following Sec. IV C of Zeng, Chen, Peterson, J. Chem. Phys. 156, 064104 (2022):
candidates are (1) cells of space group 225 (fcc, 4 atoms) and 79 (body-centred
tetragonal, 2 atoms) with lattice parameters drawn near the optimum and (2) the
optimal cells doubled along every axis (32 and 16 atoms) with rattled positions;
farthest-point sampling on structure fingerprints keeps the ``n`` most diverse.
Only the kept structures are labelled by the parent.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Mapping, Sequence

import numpy as np
from ase import Atoms
from ase.spacegroup import crystal

from nft_fw.potential import descriptors as desc
from nft_fw.potential.selection import farthest_point, standardise
from nft_fw.potential.training import Image
from nft_fw.structures.chunks import structure_id

log = logging.getLogger(__name__)

LabelFn = Callable[[Atoms], tuple[float, np.ndarray]]


def _assign(atoms: Atoms, composition: Mapping[str, float], rng: np.random.Generator) -> Atoms:
    """Give each site an element drawn with the composition's probabilities."""
    symbols = sorted(composition)
    p = np.array([composition[s] for s in symbols], dtype=float)
    atoms.set_chemical_symbols(list(rng.choice(symbols, size=len(atoms), p=p / p.sum())))
    return atoms


def _fcc(a: float) -> Atoms:
    return crystal("X", [(0, 0, 0)], spacegroup=225, cellpar=[a, a, a, 90, 90, 90])


def _bct(a: float, c: float) -> Atoms:
    return crystal("X", [(0, 0, 0)], spacegroup=79, cellpar=[a, a, c, 90, 90, 90])


def candidates(
    composition: Mapping[str, float],
    lattice_constant: float,
    n_candidates: int = 60,
    spread: float = 0.06,
    rattle_stdev: float = 0.05,
    seed: int = 0,
) -> list[Atoms]:
    """Unlabelled candidate cells; ``lattice_constant`` is the fcc optimum in Å.

    Half are random cells (fcc a ∈ a₀(1 ± spread); bct with the fcc volume per
    atom scaled by (1 ± spread)³ and c/a ∈ [1, √2·1.1], spanning bcc to beyond
    fcc), half are doubled optimal cells rattled by N(0, rattle_stdev) Å.
    ``atoms.info`` records ``spacegroup`` and ``origin`` (random | doubled).
    """
    if n_candidates < 2:
        raise ValueError(f"n_candidates is {n_candidates}; at least 2 are needed")
    rng = np.random.default_rng(seed)
    a0 = float(lattice_constant)
    out: list[Atoms] = []
    n_random = n_candidates // 2
    for i in range(n_random):
        if i % 2 == 0:
            a = a0 * (1.0 + rng.uniform(-spread, spread))
            atoms, sg = _fcc(a), 225
        else:
            vol = (a0**3 / 4.0) * (1.0 + rng.uniform(-spread, spread)) ** 3  # Å³ per atom
            ratio = rng.uniform(1.0, math.sqrt(2.0) * 1.1)
            a = (2.0 * vol / ratio) ** (1.0 / 3.0)
            atoms, sg = _bct(a, ratio * a), 79
        atoms.info.update(spacegroup=sg, origin="random")
        out.append(_assign(atoms, composition, rng))
    for i in range(n_candidates - n_random):
        if i % 2 == 0:
            atoms, sg = _fcc(a0).repeat(2), 225
        else:
            a = a0 / math.sqrt(2.0)  # fcc written as body-centred tetragonal
            atoms, sg = _bct(a, a0).repeat(2), 79
        atoms.positions += rng.normal(0.0, rattle_stdev, atoms.positions.shape)
        atoms.info.update(spacegroup=sg, origin="doubled")
        out.append(_assign(atoms, composition, rng))
    return out


def _fingerprint(g: np.ndarray) -> np.ndarray:
    """Mean and spread of a structure's descriptors: one vector per structure."""
    return np.concatenate([g.mean(axis=0), g.std(axis=0)])


def select(structures: Sequence[Atoms], n: int, spec: desc.DescriptorSpec) -> list[Atoms]:
    """The ``n`` most diverse structures by farthest-point sampling on standardised fingerprints,
    keeping at least one of each space group present."""
    if n >= len(structures):
        return list(structures)
    x = np.array([_fingerprint(g) for g in desc.features_many(structures, spec)])
    picked = farthest_point(standardise(x), n)
    groups = {a.info.get("spacegroup") for a in structures}
    for sg in sorted(g for g in groups if g is not None):
        if not any(structures[i].info.get("spacegroup") == sg for i in picked):
            first = next(i for i, a in enumerate(structures) if a.info.get("spacegroup") == sg)
            picked[-1] = first
    return [structures[i] for i in picked]


def label(structures: Sequence[Atoms], label_fn: LabelFn) -> list[Image]:
    """Energy and forces for each structure from the parent's single points."""
    images = []
    for atoms in structures:
        energy, forces = label_fn(atoms)
        images.append(Image(atoms=atoms, energy=energy, forces=forces, id=structure_id(atoms)))
    return images


def from_file_frames(frames: Sequence[Atoms]) -> list[Image]:
    """Images from structures that carry energy and forces (e.g. read from extxyz)."""
    images = []
    for k, atoms in enumerate(frames):
        try:
            energy = float(atoms.get_potential_energy())
            forces = np.asarray(atoms.get_forces(), dtype=np.float64)
        except Exception as err:  # ASE raises several types for missing results
            raise ValueError(
                f"initial.file: frame {k} has no energy and forces; write them with the "
                "structure (e.g. extxyz with a SinglePointCalculator)"
            ) from err
        images.append(Image(atoms=atoms, energy=energy, forces=forces, id=structure_id(atoms)))
    return images
