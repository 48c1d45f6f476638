"""How far the parent's force on an atom "sees": the nearsightedness analysis.

For chosen atoms of a structure, chunks of increasing radius are cut around each (centre
first, in vacuum, as in training) and labelled with the parent; the chunk's central force is
compared with the force on the same atom in the whole structure (when that is affordable)
and with the central force of the largest chunk. Where the deviation stays below a
tolerance for every larger radius, the parent's force is local enough for chunks of that
radius. Zeng, Chen, Peterson, J. Chem. Phys. 156, 064104 (2022), Fig. 2, did this for
DFT Pt and chose 8 Å chunks.

No database: :func:`nearsightedness` runs the parent in this process (``nft-fw
nearsightedness`` is its command line). Chunks with equal contents (hash) are labelled
once, so radii beyond a small structure's size cost nothing extra.

The same analysis as a campaign of its own (the chunks labelled by FireWorks workers) plans
its chunks with :func:`plan_chunks` and assembles the stored central forces with
:meth:`Nearsightedness.from_labels`; a chunk whose label is missing (the parent failed) is
NaN and left out of the statistics of its radius.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import time
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from ase import Atoms

from nft_fw.parents.parent import Parent
from nft_fw.structures.chunks import ChunkPlan, _checked, cut

log = logging.getLogger(__name__)


@dataclasses.dataclass
class Nearsightedness:
    """Central forces of chunks of each radius around each centre.

    ``forces``: (n_radii, n_centres, 3) eV/Å; ``full_forces``: (n_centres, 3) eV/Å, the
    forces on the centres in the whole structure (None when not computed); ``n_atoms``:
    (n_radii, n_centres) chunk sizes; ``seconds``: (n_radii, n_centres) parent wall time
    (0 for a chunk already labelled at a smaller radius); ``full_seconds``: wall time of
    the whole structure; ``labels``: parent calculations actually run.
    """

    radii: list[float]
    centres: list[int]
    forces: np.ndarray
    full_forces: np.ndarray | None
    n_atoms: np.ndarray
    seconds: np.ndarray
    full_seconds: float | None
    labels: int
    parent: str
    force_locality_A: float | None = None
    structure_atoms: int | None = None

    @classmethod
    def from_labels(
        cls,
        plan: ChunkPlan,
        central: Mapping[str, tuple[Sequence[float], float]],
        full_forces: np.ndarray | None,
        full_seconds: float | None,
        parent: str,
        force_locality_A: float | None = None,
        structure_atoms: int | None = None,
    ) -> Nearsightedness:
        """The analysis from labels computed elsewhere (e.g. by FireWorks workers).

        ``central``: chunk hash → (central force (3,) eV/Å, parent wall time s) for every
        chunk of ``plan`` that has a label; a chunk without one gets NaN forces.
        ``full_forces``: (n_centres, 3) eV/Å forces on the centres in the whole structure
        (None: not computed or not available). Times are booked as :func:`nearsightedness`
        books them: on the first (centre, radius) holding a chunk, 0 on its repeats.
        """
        shape = (len(plan.radii), len(plan.centres))
        forces = np.full((*shape, 3), np.nan)
        seconds = np.zeros(shape)
        seen: set[str] = set()
        for j in range(len(plan.centres)):
            for k in range(len(plan.radii)):
                h = plan.hashes[k][j]
                if h not in central:
                    continue
                force, secs = central[h]
                forces[k, j] = np.asarray(force, dtype=float)
                if h not in seen:
                    seconds[k, j] = float(secs)
                    seen.add(h)
        return cls(
            radii=list(plan.radii),
            centres=list(plan.centres),
            forces=forces,
            full_forces=None if full_forces is None else np.asarray(full_forces, dtype=float),
            n_atoms=np.asarray(plan.n_atoms, dtype=int).reshape(shape),
            seconds=seconds,
            full_seconds=full_seconds,
            labels=len(seen) + int(full_forces is not None),
            parent=parent,
            force_locality_A=force_locality_A,
            structure_atoms=structure_atoms,
        )

    def whole_from(self) -> float | None:
        """The smallest radius (Å) whose chunks all hold the whole structure (they then agree
        with it trivially, and say nothing about locality); None if no radius does."""
        if self.structure_atoms is None:
            return None
        whole = [
            r for k, r in enumerate(self.radii) if self.n_atoms[k].min() == self.structure_atoms
        ]
        return whole[0] if whole else None

    def deviation_from_full(self) -> np.ndarray | None:
        """|F_chunk − F_full| per radius and centre, (n_radii, n_centres) eV/Å."""
        if self.full_forces is None:
            return None
        return np.linalg.norm(self.forces - self.full_forces[None], axis=-1)

    def deviation_from_largest(self) -> np.ndarray:
        """|F_chunk − F_largest chunk| per radius and centre, (n_radii, n_centres) eV/Å."""
        return np.linalg.norm(self.forces - self.forces[-1][None], axis=-1)

    def reference(self) -> tuple[str, np.ndarray]:
        """The deviation the recommendation rests on: from the full structure if computed,
        else from the largest chunk."""
        full = self.deviation_from_full()
        return ("full", full) if full is not None else ("largest", self.deviation_from_largest())

    def recommend(self, tolerance: float) -> float | None:
        """The smallest radius (Å) from which on every centre's deviation from the reference
        is below ``tolerance`` eV/Å at that and every larger radius; None if there is none
        (against the largest chunk, the largest radius itself does not count). Missing
        deviations (NaN) are left out; a radius with none at all ends the search."""
        kind, dev = self.reference()
        radii = self.radii if kind == "full" else self.radii[:-1]
        best = None
        for k in range(len(radii) - 1, -1, -1):
            worst = _stats(dev[k])[3]  # over the centres with a label; NaN: none has one
            if not worst < tolerance:
                break
            best = radii[k]
        return best

    def table(self) -> list[dict[str, Any]]:
        """One row per radius: chunk sizes, parent time, and the median, quartiles and max of
        each deviation (eV/Å) over the centres whose chunk has a label (NaN when none has)."""
        rows = []
        full = self.deviation_from_full()
        largest = self.deviation_from_largest()
        for k, r in enumerate(self.radii):
            row: dict[str, Any] = {
                "radius_A": r,
                "mean_atoms": float(self.n_atoms[k].mean()),
                "max_atoms": int(self.n_atoms[k].max()),
                "parent_seconds": float(self.seconds[k].sum()),
            }
            for name, dev in (("full", full), ("largest", largest)):
                if dev is None:
                    continue
                q1, med, q3, top = _stats(dev[k])
                row[f"{name}_median"] = med
                row[f"{name}_q1"] = q1
                row[f"{name}_q3"] = q3
                row[f"{name}_max"] = top
            rows.append(row)
        return rows

    def to_dict(self, tolerance: float | None = None) -> dict[str, Any]:
        out: dict[str, Any] = {
            "parent": self.parent,
            "radii_A": self.radii,
            "centres": self.centres,
            "labels": self.labels,
            "force_locality_A": self.force_locality_A,
            "full_seconds": self.full_seconds,
            "table": self.table(),
            "chunk_atoms": self.n_atoms.tolist(),
            "parent_seconds": self.seconds.tolist(),
            "central_forces": self.forces.tolist(),
            "full_forces": None if self.full_forces is None else self.full_forces.tolist(),
        }
        if tolerance is not None:
            out["tolerance_eV_per_A"] = tolerance
            out["reference"] = self.reference()[0]
            out["recommended_radius_A"] = self.recommend(tolerance)
        out["whole_structure_from_A"] = self.whole_from()
        return out


def _stats(values: np.ndarray) -> tuple[float, float, float, float]:
    """First quartile, median, third quartile and max of the finite entries of ``values``
    (a deviation per centre, eV/Å); all NaN when there is none."""
    finite = np.asarray(values, dtype=float)
    finite = finite[np.isfinite(finite)]
    if finite.size == 0:
        return (float("nan"),) * 4
    q1, med, q3 = np.percentile(finite, [25, 50, 75])
    return float(q1), float(med), float(q3), float(finite.max())


def nearsightedness(
    atoms: Atoms,
    parent: Parent,
    centres: Sequence[int],
    radii: Sequence[float],
    full: bool = True,
) -> Nearsightedness:
    """Label chunks of each radius (Å) around each centre of ``atoms`` with ``parent``, and
    the whole of ``atoms`` too when ``full``. Radii are sorted ascending."""
    radii, centres = _checked(atoms, centres, radii)
    shape = (len(radii), len(centres))
    forces = np.zeros((*shape, 3))
    n_atoms = np.zeros(shape, dtype=int)
    seconds = np.zeros(shape)
    done: dict[str, np.ndarray] = {}
    for j, c in enumerate(centres):
        for k, r in enumerate(radii):
            chunk = cut(atoms, c, r)
            n_atoms[k, j] = len(chunk)
            if chunk.hash not in done:
                t0 = time.perf_counter()
                _, f = parent.label(chunk.atoms)
                seconds[k, j] = time.perf_counter() - t0
                done[chunk.hash] = np.asarray(f[0], dtype=float)
                log.info(
                    "nearsightedness: centre %d radius %.2f Å: %d atoms, %.1f s",
                    c,
                    r,
                    len(chunk),
                    seconds[k, j],
                )
            forces[k, j] = done[chunk.hash]
    full_forces, full_seconds = None, None
    if full:
        t0 = time.perf_counter()
        _, f = parent.label(atoms)
        full_seconds = time.perf_counter() - t0
        full_forces = np.asarray(f, dtype=float)[centres]
    return Nearsightedness(
        radii=radii,
        centres=centres,
        forces=forces,
        full_forces=full_forces,
        n_atoms=n_atoms,
        seconds=seconds,
        full_seconds=full_seconds,
        labels=len(done) + int(full),
        parent=parent.name,
        force_locality_A=parent.force_locality_A,
        structure_atoms=len(atoms),
    )


# ----------------------------------------------------------------------------- the report

#: what ``kind`` a report's data says it is
KIND = "nearsightedness"


def report_data(
    result: Nearsightedness,
    tolerance: float,
    *,
    campaign: str,
    full_requested: bool,
    missing: Sequence[Mapping[str, Any]] = (),
) -> dict[str, Any]:
    """The report as JSON-ready data, the same for an analysis run in one process and one
    from a campaign's stored labels: :meth:`Nearsightedness.to_dict` at ``tolerance``, the
    deviations per radius and centre (eV/Å; null where a label is missing) and the
    ``missing`` items; every NaN or infinite float is null (strict JSON, BSON)."""
    data = result.to_dict(tolerance)
    data.update(
        campaign=campaign,
        kind=KIND,
        structure_atoms=result.structure_atoms,
        full_requested=full_requested,
        deviation_from_full=_arrays(result.deviation_from_full()),
        deviation_from_largest=_arrays(result.deviation_from_largest()),
        missing=[dict(m) for m in missing],
    )
    return _finite(data)


@dataclasses.dataclass
class StoredLabels:
    """What a nearsightedness campaign's database holds for its analysis: the ``plan``,
    the chunk labels stored so far (``central``: chunk hash → (central force, seconds)),
    the whole structure's forces on the centres when labelled, the ``missing`` items
    (``{kind, centre, radius, hash, n_atoms, error}``) and the campaign's settings."""

    campaign: str
    spec: dict[str, Any]
    plan: ChunkPlan
    central: dict[str, tuple[Sequence[float], float]]
    full_forces: np.ndarray | None
    full_seconds: float | None
    missing: list[dict[str, Any]]
    parent: str
    force_locality_A: float | None
    structure_atoms: int
    tolerance: float
    full_requested: bool


def analyse_stored(stored: StoredLabels) -> tuple[Nearsightedness, dict[str, Any]]:
    """The analysis of a campaign's stored labels and its report data (missing chunks are
    NaN; without the whole structure's label the reference is the largest chunk)."""
    result = Nearsightedness.from_labels(
        stored.plan,
        stored.central,
        stored.full_forces,
        stored.full_seconds,
        parent=stored.parent,
        force_locality_A=stored.force_locality_A,
        structure_atoms=stored.structure_atoms,
    )
    data = report_data(
        result,
        stored.tolerance,
        campaign=stored.campaign,
        full_requested=stored.full_requested,
        missing=stored.missing,
    )
    return result, data


def _finite(value: Any) -> Any:
    """``value`` with every NaN or infinite float replaced by None (strict JSON, BSON)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    return value


def _arrays(value: np.ndarray | None) -> list[Any] | None:
    return None if value is None else value.tolist()


SUMMARY_KEYS = (
    "parent",
    "centres",
    "radii_A",
    "labels",
    "force_locality_A",
    "tolerance_eV_per_A",
    "reference",
    "recommended_radius_A",
    "whole_structure_from_A",
    "structure_atoms",
    "table",
)


def summary(data: Mapping[str, Any]) -> dict[str, Any]:
    """The headline of a report (:func:`report_data`): the table per radius (median,
    quartiles and max deviation from the full structure and from the largest chunk, eV/Å),
    the recommended radius (Å) and what is missing."""
    out = {k: data.get(k) for k in SUMMARY_KEYS}
    out["kind"] = KIND
    out["missing"] = len(data["missing"])
    out["missing_items"] = [
        {k: m[k] for k in ("kind", "centre", "radius", "hash")} for m in data["missing"][:50]
    ]
    return out


# the label item of the whole structure (one per campaign) beside the chunk items of a plan
FULL_ITEM = {"kind": "full"}


def plan_items(plan: ChunkPlan) -> list[dict[str, Any]]:
    """One label item per distinct chunk of ``plan`` (``{kind: chunk, centre, radius,
    hash}``), in the order the in-process analysis labels them; the whole structure's item
    is :data:`FULL_ITEM`."""
    return [
        {"kind": "chunk", "centre": d["centre"], "radius": d["radius"], "hash": d["hash"]}
        for d in plan.distinct()
    ]
