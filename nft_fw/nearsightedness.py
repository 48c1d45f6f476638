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
import json
import logging
import math
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from ase import Atoms
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from nft_fw.chunks import cut
from nft_fw.html_report import markdown_table
from nft_fw.parents import Parent

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


@dataclasses.dataclass(frozen=True)
class ChunkPlan:
    """Which chunk each (radius, centre) is, before anything is labelled.

    ``radii``: ascending, Å; ``centres``: atom indices; ``hashes``/``n_atoms``: (n_radii,
    n_centres) chunk hashes (:func:`nft_fw.chunks.chunk_hash`) and sizes. Chunks with equal
    hashes are one parent calculation.
    """

    radii: list[float]
    centres: list[int]
    hashes: list[list[str]]
    n_atoms: list[list[int]]

    def distinct(self) -> list[dict[str, Any]]:
        """One entry per distinct chunk, ``{centre, radius, hash, n_atoms}``, at its first
        (centre, radius) in centre-major order (the order :func:`nearsightedness` labels in)."""
        out: list[dict[str, Any]] = []
        seen: set[str] = set()
        for j, c in enumerate(self.centres):
            for k, r in enumerate(self.radii):
                h = self.hashes[k][j]
                if h not in seen:
                    seen.add(h)
                    out.append({"centre": c, "radius": r, "hash": h, "n_atoms": self.n_atoms[k][j]})
        return out

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ChunkPlan:
        return cls(
            radii=[float(r) for r in data["radii"]],
            centres=[int(c) for c in data["centres"]],
            hashes=[[str(h) for h in row] for row in data["hashes"]],
            n_atoms=[[int(n) for n in row] for row in data["n_atoms"]],
        )


def _checked(
    atoms: Atoms, centres: Sequence[int], radii: Sequence[float]
) -> tuple[list[float], list[int]]:
    """Radii sorted ascending and centres as ints; ValueError for no or non-positive radii,
    no centres, or centres outside the structure."""
    out_radii = sorted(float(r) for r in radii)
    if not out_radii or out_radii[0] <= 0:
        raise ValueError(f"radii must be positive Å and at least one; got {out_radii}")
    out_centres = [int(c) for c in centres]
    if not out_centres:
        raise ValueError("give at least one centre atom")
    bad = [c for c in out_centres if not 0 <= c < len(atoms)]
    if bad:
        raise ValueError(f"centres {bad} are outside the structure's {len(atoms)} atoms")
    return out_radii, out_centres


def plan_chunks(atoms: Atoms, centres: Sequence[int], radii: Sequence[float]) -> ChunkPlan:
    """Cut (but do not label) the chunk of each radius (Å, sorted ascending) around each
    centre of ``atoms``. Raises ValueError for no or non-positive radii, no centres, or
    centres outside the structure."""
    radii, centres = _checked(atoms, centres, radii)
    chunks = [[cut(atoms, c, r) for c in centres] for r in radii]
    return ChunkPlan(
        radii=radii,
        centres=centres,
        hashes=[[ch.hash for ch in row] for row in chunks],
        n_atoms=[[len(ch) for ch in row] for row in chunks],
    )


def random_centres(n_atoms: int, count: int, seed: int) -> list[int]:
    """``count`` distinct atom indices of ``n_atoms``, drawn with numpy's default_rng(seed),
    sorted; the same draw as ``nft-fw nearsightedness --n-centres``."""
    rng = np.random.default_rng(seed)
    return sorted(int(c) for c in rng.choice(n_atoms, size=min(count, n_atoms), replace=False))


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


def plot(result: Nearsightedness, path: str | Path, tolerance: float | None = None) -> Path:
    """Deviation of the central force per radius (median, quartile band, max) from the full
    structure and from the largest chunk, log scale; PNG at ``path``."""
    fig = Figure(figsize=(6.0, 4.5), dpi=120, layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    r = np.asarray(result.radii)
    floor = 1e-15  # eV/Å: exact zeros are drawn at the floor of the log axis
    curves = [("full structure", result.deviation_from_full(), "C0")]
    curves.append(("largest chunk", result.deviation_from_largest(), "C1"))
    for name, dev, colour in curves:
        if dev is None:
            continue
        if name == "largest chunk":
            dev, rr = dev[:-1], r[:-1]  # zero by definition at the largest radius
        else:
            rr = r
        if len(rr) == 0:
            continue
        stats = np.array([_stats(row) for row in dev])  # (n_radii, 4): q1, median, q3, max
        q1, med, q3, top = (np.maximum(stats[:, i], floor) for i in range(4))
        ax.fill_between(rr, q1, q3, color=colour, alpha=0.25, label=f"vs {name}: quartiles")
        ax.plot(rr, med, "o-", color=colour, label=f"vs {name}: median")
        ax.plot(rr, top, "v--", color=colour, label=f"vs {name}: max")
    if result.force_locality_A is not None and result.force_locality_A <= r[-1]:
        ax.axvline(
            result.force_locality_A,
            color="C3",
            lw=0.8,
            ls=":",
            label=f"parent's force locality {result.force_locality_A:.2f} Å",
        )
    if tolerance is not None:
        ax.axhline(tolerance, color="grey", lw=0.8, ls=":", label=f"tolerance {tolerance:g}")
        rec = result.recommend(tolerance)
        if rec is not None:
            ax.axvline(rec, color="k", lw=0.8, ls="-.", label=f"recommended {rec:g} Å")
    ax.set_yscale("log")
    ax.set_xlabel("chunk radius (Å)")
    ax.set_ylabel(r"$|F_\mathrm{chunk} - F_\mathrm{ref}|$ of the centre (eV/Å)")
    ax.set_title(f"nearsightedness of {result.parent}, {len(result.centres)} centres")
    ax.legend(fontsize=7)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    return path


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


def write_report(
    result: Nearsightedness,
    data: Mapping[str, Any],
    directory: str | Path,
    spec: Mapping[str, Any] | None = None,
) -> dict[str, Path]:
    """``nearsightedness.json``, ``nearsightedness.png`` (deviation per radius: median,
    quartile band, max; log scale) and ``report.html`` in ``directory``; ``spec``: the
    campaign file, shown in the page."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    figure = plot(result, directory / "nearsightedness.png", data["tolerance_eV_per_A"])
    path = directory / "nearsightedness.json"
    path.write_text(json.dumps(data, indent=2, allow_nan=False) + "\n", encoding="utf-8")
    html = _write_html(directory, str(data["campaign"]), data, figure, dict(spec or {}))
    return {"json": path, "figure": figure, "html": html}


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


def _cell(value: Any, spec: str) -> str:
    return "—" if value is None or value != value else format(value, spec)


def radius_table(data: Mapping[str, Any]) -> str:
    """The per-radius table of a report (:func:`report_data`) as markdown."""
    rows = data["table"]
    refs = [r for r in ("full", "largest") if any(f"{r}_median" in row for row in rows)]
    head = ["radius (Å)", "atoms (mean)", "atoms (max)", "parent (s)"]
    for ref in refs:
        what = "whole structure" if ref == "full" else "largest chunk"
        head += [f"vs {what}: median", "q1", "q3", "max (eV/Å)"]
    body = []
    for k, row in enumerate(rows):
        cells = [
            _cell(row["radius_A"], "g"),
            _cell(row["mean_atoms"], ".1f"),
            str(row["max_atoms"]),
            _cell(row["parent_seconds"], ".0f"),
        ]
        for ref in refs:
            if ref == "largest" and k == len(rows) - 1:  # the largest chunk against itself
                cells += ["—"] * 4
                continue
            cells += [_cell(row.get(f"{ref}_{q}"), ".3f") for q in ("median", "q1", "q3", "max")]
        body.append(cells)
    return "\n".join(markdown_table(head, body)) + "\n"


def _write_html(
    directory: Path, name: str, data: Mapping[str, Any], figure: Path, spec: dict[str, Any]
) -> Path:
    """report.html: the analysis in one self-contained page (nft_fw.html_report)."""
    import yaml

    from nft_fw import html_report

    def fmt(value: Any, unit: str) -> str:
        return "none within the radii" if value is None else f"{value:g}{unit}"

    facts = [
        ("parent", data.get("parent")),
        ("centres", ", ".join(str(c) for c in data.get("centres") or [])),
        ("radii", ", ".join(f"{r:g}" for r in data.get("radii_A") or []) + " Å"),
        ("labels", data.get("labels")),
        (
            "compared with",
            {"full": "the whole structure", "largest": "the largest chunk"}.get(
                data.get("reference") or "", data.get("reference")
            ),
        ),
        ("tolerance", fmt(data.get("tolerance_eV_per_A"), " eV/Å")),
        ("recommended chunk radius", fmt(data.get("recommended_radius_A"), " Å")),
        ("parent's force locality", fmt(data.get("force_locality_A"), " Å")),
        ("missing labels", len(data.get("missing") or [])),
    ]
    page = html_report.render(
        f"Nearsightedness {name}",
        facts,
        [("Central force against chunk radius: median, quartiles, max", figure)],
        "## Per radius\n" + radius_table(data),
        yaml.safe_dump(spec, sort_keys=False, allow_unicode=True),
    )
    path = directory / "report.html"
    path.write_text(page, encoding="utf-8")
    return path


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


def write(
    result: Nearsightedness, directory: str | Path, tolerance: float, name: str = "analysis"
) -> dict[str, Path]:
    """The report of an analysis run in this process (:func:`write_report`; ``name`` heads
    the page)."""
    data = report_data(result, tolerance, campaign=name, full_requested=result.full_forces
                       is not None)  # fmt: skip
    return write_report(result, data, directory)


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
