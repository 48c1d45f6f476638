"""Relaxation with the ensemble mean, watching the uncertainty along the way.

Sec. V C of Zeng, Chen, Peterson, J. Chem. Phys. 156, 064104 (2022): an ML relaxation
can walk into environments the training never saw; the per-atom δ along the trajectory
shows where, and chunks cut there (chosen by CUR on their descriptors, or the most
uncertain) are what the next retraining needs.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
from ase import Atoms
from ase.optimize import BFGS, FIRE, LBFGS

from nft_fw.potential import descriptors as desc
from nft_fw.potential.neighbours import StructureInputError
from nft_fw.potential.selection import cur, standardise
from nft_fw.steps import decision
from nft_fw.structures.chunks import Chunk, cut

OPTIMIZERS = {"fire": FIRE, "lbfgs": LBFGS, "bfgs": BFGS}
SITE_SELECTIONS = ("cur", "most_uncertain", "diverse")


@dataclasses.dataclass
class Step:
    """One relaxation step: energy (eV), largest force (eV/Å), max and mean δ (eV/Å)."""

    step: int
    energy: float
    fmax: float
    max_uncertainty: float
    mean_uncertainty: float


@dataclasses.dataclass
class Trajectory:
    """Steps, the structures visited (``frames``) with their per-atom δ and predicted forces
    (eV/Å), and the outcome."""

    steps: list[Step]
    frames: list[Atoms]
    deltas: list[np.ndarray]
    converged: bool
    forces: list[np.ndarray] = dataclasses.field(default_factory=list)
    #: why the relaxation ended before fmax or max_steps when the model moved atoms where
    #: it cannot be evaluated (two closer than the descriptors allow), else None
    collapsed: str | None = None

    @property
    def final(self) -> Atoms:
        return self.frames[-1]

    @property
    def max_uncertainty(self) -> float:
        return max(s.max_uncertainty for s in self.steps)


def relax(
    atoms: Atoms,
    calc: Any,
    fmax: float = 0.05,
    max_steps: int = 200,
    optimizer: str = "fire",
    stop_above: float | None = None,
) -> Trajectory:
    """Relax a copy of ``atoms`` with ``calc`` (an EnsembleCalculator) until the largest force
    is below ``fmax`` eV/Å or ``max_steps`` steps, or (``stop_above``) at the first step after
    the start whose largest δ exceeds that many eV/Å; record every step. A step the model
    cannot evaluate (it moved two atoms closer than its descriptors allow) ends the
    trajectory there, with ``collapsed`` saying so."""
    if optimizer not in OPTIMIZERS:
        raise ValueError(f"optimizer {optimizer!r} is not one of {sorted(OPTIMIZERS)}")
    work = atoms.copy()
    work.calc = calc
    steps: list[Step] = []
    frames: list[Atoms] = []
    deltas: list[np.ndarray] = []
    all_forces: list[np.ndarray] = []

    def record() -> None:
        forces = work.get_forces()
        delta = np.asarray(calc.results["uncertainties"])
        steps.append(
            Step(
                step=len(steps),
                energy=float(work.get_potential_energy()),
                fmax=float(np.linalg.norm(forces, axis=1).max()),
                max_uncertainty=float(delta.max()),
                mean_uncertainty=float(delta.mean()),
            )
        )
        frame = work.copy()
        frame.calc = None
        frames.append(frame)
        deltas.append(delta.copy())
        all_forces.append(np.array(forces))

    opt = OPTIMIZERS[optimizer](work, logfile=None)
    opt.attach(record, interval=1)
    converged = False
    collapsed = None
    try:
        for converged in opt.irun(fmax=fmax, steps=max_steps):
            if stop_above is not None and len(steps) > 1 and steps[-1].max_uncertainty > stop_above:
                converged = False
                break
    except StructureInputError as err:
        if not steps:  # the start itself: bad input, refused as such
            raise
        # the model walked the atoms into each other: the trajectory ends at its last
        # evaluable step, not converged, and says why
        converged, collapsed = False, f"after step {len(steps) - 1}: {err}"
    return Trajectory(
        steps=steps,
        frames=frames,
        deltas=deltas,
        converged=bool(converged),
        forces=all_forces,
        collapsed=collapsed,
    )


def search_frames(n_frames: int, max_frames: int, last: int | None = None) -> list[int]:
    """At most ``max_frames`` evenly spaced frame indices from the first to ``last``
    (default: the last frame), both included."""
    end = n_frames - 1 if last is None else max(0, min(last, n_frames - 1))
    if end + 1 <= max_frames:
        return list(range(end + 1))
    return sorted({int(x) for x in np.rint(np.linspace(0, end, max_frames))})


def first_above(trajectory: Trajectory, level: float, after: int = 0) -> int | None:
    """The first step from ``after`` on whose largest δ exceeds ``level`` eV/Å, or None."""
    for k, delta in enumerate(trajectory.deltas):
        if k >= after and float(np.max(delta)) > level:
            return k
    return None


def uncertain_sites(
    trajectory: Trajectory,
    threshold: float,
    spec: desc.DescriptorSpec,
    n: int,
    method: str = "cur",
    frames: Sequence[int] | None = None,
) -> list[tuple[int, int]]:
    """Up to ``n`` (frame, atom) pairs whose δ exceeds ``threshold`` eV/Å, among ``frames``
    (default: all), chosen by CUR on their descriptors (diverse environments), as the most
    uncertain ones, or ``diverse``: the most uncertain first, then unlike each other
    (:func:`nft_fw.steps.decision.choose_centres` on the atoms' descriptors). With the last two,
    each atom is taken at most once, in the frame where its δ is largest."""
    if method not in SITE_SELECTIONS:
        raise ValueError(f"method {method!r} is not one of {SITE_SELECTIONS}")
    searched = range(len(trajectory.deltas)) if frames is None else frames
    candidates = [
        (f, int(i)) for f in searched for i in np.flatnonzero(trajectory.deltas[f] > threshold)
    ]
    if method in ("most_uncertain", "diverse"):
        best: dict[int, tuple[int, int]] = {}
        for f, i in candidates:
            if i not in best or trajectory.deltas[f][i] > trajectory.deltas[best[i][0]][i]:
                best[i] = (f, i)
        candidates = sorted(best.values())
        order = np.argsort([-trajectory.deltas[f][i] for f, i in candidates], kind="stable")
        ranked = [candidates[k] for k in order]
        if method == "most_uncertain" or len(ranked) <= n:
            return ranked[:n]
        pool = ranked[: decision.POOL * n]
        deltas = np.array([trajectory.deltas[f][i] for f, i in pool])
        picked = decision.choose_centres(deltas, (), n, "diverse", _features(
            trajectory.frames, pool, spec))  # fmt: skip
        return [pool[k] for k in picked]
    if len(candidates) <= n:
        return candidates
    rows = _features(trajectory.frames, candidates, spec)
    return [candidates[k] for k in cur(rows, n)]


def trajectory_chunks(
    trajectory: Trajectory,
    searched: Sequence[int],
    threshold: float,
    spec: desc.DescriptorSpec,
    n: int,
    method: str,
    radius: float,
    known: Callable[[str], bool],
    include_start: bool = False,
) -> list[tuple[int, Chunk]]:
    """Up to ``n`` (frame, chunk) pairs for the next retraining: chunks of ``radius`` Å around
    uncertain atoms of the ``searched`` frames after the start (the start is the NFT phase's
    own target; ``include_start`` for a relaxation resumed elsewhere), best first by
    ``method``, skipping chunks whose hash is ``known`` (labelled or failed) and repeats."""
    frames = list(searched) if include_start else list(searched[1:]) or list(searched)
    sites = uncertain_sites(
        trajectory,
        threshold,
        spec,
        3 * n,  # reserve for chunks that turn out to be known already
        method=method,
        frames=frames,
    )
    out: list[tuple[int, Chunk]] = []
    seen: set[str] = set()
    for f, i in sites:
        chunk = cut(trajectory.frames[f], i, radius)
        if chunk.hash in seen or known(chunk.hash):
            continue
        seen.add(chunk.hash)
        out.append((f, chunk))
        if len(out) == n:
            break
    return out


def _features(
    frames: Sequence[Atoms], sites: Sequence[tuple[int, int]], spec: desc.DescriptorSpec
) -> np.ndarray:
    by_frame: dict[int, list[int]] = {}
    for f, i in sites:
        by_frame.setdefault(f, []).append(i)
    parts = [desc.Rows.of(frames[f], spec, np.asarray(idx)) for f, idx in by_frame.items()]
    g_all, _ = desc.describe(desc.Rows.stack(parts), spec, jacobian=False)
    keys = [(f, i) for f, idx in by_frame.items() for i in idx]
    found: dict[tuple[int, int], np.ndarray] = dict(zip(keys, g_all, strict=True))
    x = np.array([found[s] for s in sites])
    return standardise(x)
