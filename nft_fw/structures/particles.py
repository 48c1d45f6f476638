"""Target structures: nanoparticle and periodic builders, rattling, reading and validation.

Everything here is plain ASE. Lengths are in Å. Problems are raised as :class:`StructureError`,
whose ``field`` is the dotted campaign path the problem belongs to (e.g. ``target.builder.length``),
so the campaign loader can point the user at the line to fix.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Collection, Mapping
from pathlib import Path
from typing import Any, cast

import ase.io
import numpy as np
from ase import Atoms
from ase.build import bulk, fcc100, fcc111
from ase.cluster import Decahedron, Icosahedron, Octahedron
from ase.data import atomic_numbers, chemical_symbols, reference_states
from ase.io.formats import UnknownFileTypeError

from nft_fw.potential.neighbours import pairs

log = logging.getLogger(__name__)

#: Geometry parameters each builder kind takes (name → required?).
GEOMETRY: dict[str, dict[str, bool]] = {
    "octahedron": {"length": True, "cutoff": False},
    "cuboctahedron": {"length": True},
    "icosahedron": {"shells": True},
    "decahedron": {"p": True, "q": True, "r": True},
    "fcc111": {"size": True, "vacuum": False},
    "fcc100": {"size": True, "vacuum": False},
    "bulk": {"repeat": True, "vacancies": False},
}
KINDS = tuple(GEOMETRY)
COMPOSITION_TOLERANCE = 1e-6


class StructureError(ValueError):
    """A structure or builder input is unusable; ``field`` is the dotted campaign path."""

    def __init__(self, field: str, message: str) -> None:
        self.field = field
        self.message = message
        super().__init__(f"{field}: {message}")


def check_element(symbol: object, field: str) -> str:
    """Return ``symbol`` if it is a chemical symbol (e.g. ``"Pt"``), else raise StructureError."""
    if not isinstance(symbol, str) or symbol not in atomic_numbers or symbol == "X":
        raise StructureError(
            field, f"{symbol!r} is not a chemical symbol; use one such as 'Pt', 'Au' or 'Cu'"
        )
    return symbol


def check_composition(composition: Mapping[str, float], field: str) -> dict[str, float]:
    """Validate a composition {symbol: fraction}: fractions > 0 that sum to 1 (±1e-6)."""
    if not composition:
        raise StructureError(field, "is empty; give fractions such as {Pt: 0.5, Au: 0.5}")
    for symbol, fraction in composition.items():
        check_element(symbol, f"{field}.{symbol}")
        if not fraction > 0:
            raise StructureError(
                f"{field}.{symbol}", f"fraction is {fraction!r}; each fraction must be > 0"
            )
    total = sum(composition.values())
    if abs(total - 1.0) > COMPOSITION_TOLERANCE:
        raise StructureError(
            field, f"fractions sum to {total:.8g}, expected 1; rescale them so they sum to 1"
        )
    return dict(composition)


def vegard_lattice_constant(
    composition: Mapping[str, float], per_element: Callable[[str], float]
) -> float:
    """Composition-weighted mean of the elements' lattice constants (Vegard's law), in Å.

    ``per_element(symbol)`` returns the fcc lattice constant of the pure element in Å, e.g. a
    parent's :meth:`~nft_fw.parents.parent.Parent.optimal_lattice_constant`.
    """
    return float(sum(f * per_element(el) for el, f in composition.items()))


def reference_lattice_constant(symbol: str, field: str = "lattice_constant") -> float:
    """Experimental fcc lattice constant of ``symbol`` from ``ase.data.reference_states`` (Å)."""
    state = reference_states[atomic_numbers[symbol]]
    if not state or state.get("symmetry") != "fcc":
        sym = None if not state else state.get("symmetry")
        raise StructureError(
            field,
            f"{symbol} is {sym!r}, not fcc, in ase.data.reference_states; give lattice_constant",
        )
    return float(cast(float, state["a"]))


def check_geometry(kind: str, geometry: Mapping[str, Any], field: str) -> dict[str, Any]:
    """Check the geometry parameters of a builder kind; return them with defaults filled in.

    ``field`` is the dotted path of the builder (``target.builder``); errors name the parameter,
    e.g. ``target.builder.length``.
    """
    if kind not in GEOMETRY:
        raise StructureError(
            f"{field}.kind", f"unknown kind {kind!r}; expected one of {', '.join(KINDS)}"
        )
    wanted = GEOMETRY[kind]
    for key in geometry:
        if key not in wanted:
            raise StructureError(
                f"{field}.{key}",
                f"is not a parameter of kind {kind!r} (its parameters: {', '.join(wanted)}); "
                "remove it",
            )
    for key, required in wanted.items():
        if required and geometry.get(key) is None:
            raise StructureError(f"{field}.{key}", f"is required for kind {kind!r}")

    def integer(key: str, minimum: int, default: int | None = None) -> int:
        value = geometry.get(key, default)
        if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < minimum:
            raise StructureError(f"{field}.{key}", f"is {value!r}; expected an integer ≥ {minimum}")
        return int(value)

    def triple(key: str) -> list[int]:
        value = geometry[key]
        ok = (
            isinstance(value, list | tuple)
            and len(value) == 3
            and all(isinstance(v, int | np.integer) and not isinstance(v, bool) for v in value)
            and all(v >= 1 for v in value)
        )
        if not ok:
            raise StructureError(
                f"{field}.{key}", f"is {value!r}; expected three integers ≥ 1 such as [3, 3, 4]"
            )
        return [int(v) for v in value]

    out: dict[str, Any] = {}
    if kind == "octahedron":
        out["length"] = integer("length", 1)
        out["cutoff"] = integer("cutoff", 0, default=0)
        if out["length"] < 2 * out["cutoff"] + 1:
            raise StructureError(
                f"{field}.cutoff",
                f"is {out['cutoff']} with length {out['length']}; expected "
                f"length ≥ 2·cutoff + 1, so cutoff ≤ {(out['length'] - 1) // 2}",
            )
    elif kind == "cuboctahedron":
        out["length"] = integer("length", 3)
        if out["length"] % 2 == 0:
            raise StructureError(
                f"{field}.length", f"is {out['length']}; a cuboctahedron needs an odd length ≥ 3"
            )
    elif kind == "icosahedron":
        out["shells"] = integer("shells", 1)
    elif kind == "decahedron":
        out["p"] = integer("p", 1)
        out["q"] = integer("q", 1)
        out["r"] = integer("r", 0)
    elif kind in ("fcc111", "fcc100"):
        out["size"] = triple("size")
        vacuum = geometry.get("vacuum", 8.0)
        if isinstance(vacuum, bool) or not isinstance(vacuum, int | float) or not vacuum >= 0:
            raise StructureError(f"{field}.vacuum", f"is {vacuum!r}; expected a length ≥ 0 Å")
        out["vacuum"] = float(vacuum)
    else:  # bulk
        out["repeat"] = triple("repeat")
        out["vacancies"] = integer("vacancies", 0, default=0)
        n_sites = 4 * int(np.prod(out["repeat"]))
        if out["vacancies"] >= n_sites:
            raise StructureError(
                f"{field}.vacancies",
                f"is {out['vacancies']} but the cell has only {n_sites} sites; use fewer",
            )
    key, n = _size_estimate(kind, out)
    if n > MAX_ATOMS:
        raise StructureError(
            f"{field}.{key}",
            f"makes about {n:.3g} atoms; at most {MAX_ATOMS:,} are supported (a prediction "
            "needs ~0.1 MB per atom); use a smaller value",
        )
    return out


MAX_ATOMS = 1_000_000


def _size_estimate(kind: str, g: Mapping[str, Any]) -> tuple[str, float]:
    """(the parameter that sets the size, an upper estimate of the atom count)."""
    if kind in ("octahedron", "cuboctahedron"):
        n = g["length"]
        return "length", (2 * n**3 + n) / 3
    if kind == "icosahedron":
        n = g["shells"]
        return "shells", (10 * n**3 - 15 * n**2 + 11 * n - 3) / 3
    if kind == "decahedron":
        return "p", 5 * (g["p"] + g["q"] + g["r"]) ** 3 / 3
    if kind in ("fcc111", "fcc100"):
        return "size", float(np.prod([float(v) for v in g["size"]]))
    return "repeat", 4 * float(np.prod([float(v) for v in g["repeat"]]))


def build_nanoparticle(
    kind: str,
    element: str | None = None,
    composition: Mapping[str, float] | None = None,
    seed: int = 0,
    lattice_constant: float | None = None,
    *,
    field: str = "target.builder",
    **geometry: Any,
) -> Atoms:
    """Build a nanoparticle, slab or bulk cell with ASE.

    kind: ``octahedron`` (length, cutoff=0), ``cuboctahedron`` (odd length ≥ 3),
    ``icosahedron`` (shells: ASE's ``noshells``, the central atom counts as shell 1, so 5 → 309
    atoms), ``decahedron`` (p, q, r), ``fcc111`` / ``fcc100`` (size [nx, ny, layers],
    vacuum=8.0 Å; periodic in x and y only) or ``bulk`` (fcc cubic cell; repeat [n1, n2, n3],
    vacancies=0 atoms removed at random).

    Give exactly one of ``element`` (a symbol) or ``composition`` ({symbol: fraction}). An alloy
    is built with the majority element, then exact counts (rounded, remainder on the largest
    fraction) are put on randomly permuted sites drawn with ``numpy.random.default_rng(seed)``.
    ``lattice_constant`` is the fcc lattice constant in Å; ``None`` takes the Vegard mean of the
    experimental constants in ``ase.data.reference_states`` (campaigns pass the parent's own).
    """
    if (element is None) == (composition is None):
        raise StructureError(
            f"{field}.element",
            "give exactly one of element (e.g. Pt) or composition (e.g. {Pt: 0.5, Au: 0.5})",
        )
    if element is not None:
        comp = {check_element(element, f"{field}.element"): 1.0}
    else:
        comp = check_composition(composition or {}, f"{field}.composition")
    params = check_geometry(kind, geometry, field)
    if lattice_constant is None:
        lattice_constant = vegard_lattice_constant(
            comp, lambda el: reference_lattice_constant(el, f"{field}.lattice_constant")
        )
    elif not lattice_constant > 0:
        raise StructureError(
            f"{field}.lattice_constant", f"is {lattice_constant!r}; expected a length > 0 Å"
        )
    a = float(lattice_constant)
    major = max(sorted(comp), key=lambda el: comp[el])
    rng = np.random.default_rng(seed)

    if kind == "octahedron":
        atoms = Octahedron(major, params["length"], params["cutoff"], latticeconstant=a)
    elif kind == "cuboctahedron":
        length = params["length"]
        atoms = Octahedron(major, length, (length - 1) // 2, latticeconstant=a)
    elif kind == "icosahedron":
        atoms = Icosahedron(major, params["shells"], latticeconstant=a)
    elif kind == "decahedron":
        atoms = Decahedron(major, params["p"], params["q"], params["r"], latticeconstant=a)
    elif kind in ("fcc111", "fcc100"):
        slab = fcc111 if kind == "fcc111" else fcc100
        atoms = slab(major, size=tuple(params["size"]), a=a, vacuum=params["vacuum"])
        atoms.pbc = (True, True, False)
    else:  # bulk
        atoms = bulk(major, "fcc", a=a, cubic=True).repeat(params["repeat"])
        if params["vacancies"]:
            del atoms[rng.choice(len(atoms), params["vacancies"], replace=False).tolist()]

    atoms = Atoms(atoms)  # plain Atoms (ASE cluster classes carry extra state)
    if len(comp) > 1:
        atoms.set_chemical_symbols(_alloy_symbols(comp, len(atoms), rng))
    return atoms


def _alloy_symbols(comp: Mapping[str, float], n: int, rng: np.random.Generator) -> list[str]:
    elements = sorted(comp)
    counts = {el: round(comp[el] * n) for el in elements}
    largest = max(elements, key=lambda el: comp[el])
    counts[largest] += n - sum(counts.values())
    symbols = np.array([el for el in elements for _ in range(counts[el])])
    return symbols[rng.permutation(n)].tolist()


def rattle(atoms: Atoms, stdev: float, seed: int, *, field: str = "target.rattle.stdev") -> Atoms:
    """Return a copy with every Cartesian coordinate displaced by N(0, stdev²); stdev in Å ≥ 0.

    Reproducible: the displacements come from ``numpy.random.default_rng(seed)``.
    """
    if not stdev >= 0:
        raise StructureError(field, f"is {stdev!r}; expected a standard deviation ≥ 0 Å")
    out = atoms.copy()
    rng = np.random.default_rng(seed)
    out.positions = out.positions + rng.normal(0.0, stdev, size=out.positions.shape)
    return out


def _read(path: Path, index: int | str, field: str) -> Atoms | list[Atoms]:
    path = Path(path)
    if not path.is_file():
        raise StructureError(
            field,
            f"file {str(path)!r} does not exist; check the path (relative paths are "
            "resolved against the campaign file's folder)",
        )
    try:
        return ase.io.read(path, index=index)
    except (UnknownFileTypeError, OSError, ValueError, IndexError, KeyError, StopIteration) as err:
        raise StructureError(
            field,
            f"could not read {str(path)!r} with ase.io.read ({type(err).__name__}: {err}); "
            "give a file ASE can read, such as extxyz, with at least one structure",
        ) from err


def read_structure(path: str | Path, index: int = -1, field: str = "target.file") -> Atoms:
    """Read frame ``index`` of a structure file with ``ase.io.read``."""
    atoms = _read(Path(path), index, field)
    assert isinstance(atoms, Atoms)
    if len(atoms) == 0:
        raise StructureError(field, f"frame {index} of {str(path)!r} holds no atoms")
    return atoms


def read_frames(path: str | Path, field: str = "initial.file") -> list[Atoms]:
    """Read every frame of a structure file with ``ase.io.read(path, index=":")``."""
    frames = _read(Path(path), ":", field)
    assert isinstance(frames, list)
    if not frames:
        raise StructureError(field, f"{str(path)!r} holds no structures")
    return frames


def validate_atoms(
    atoms: Atoms,
    field: str,
    allowed_elements: Collection[str] | None = None,
    min_distance: float = 0.5,
) -> None:
    """Raise StructureError if ``atoms`` is empty, has non-finite positions, holds elements
    outside ``allowed_elements``, or has two atoms (periodic images included) closer than
    ``min_distance`` Å.
    """
    if len(atoms) == 0:
        raise StructureError(field, "the structure holds no atoms")
    bad = np.flatnonzero(~np.isfinite(atoms.positions).all(axis=1))
    if bad.size:
        raise StructureError(
            field,
            f"atom {int(bad[0])} has a non-finite position {atoms.positions[bad[0]].tolist()} "
            f"({bad.size} atoms in all); fix the coordinates",
        )
    if allowed_elements is not None:
        extra = sorted(set(atoms.get_chemical_symbols()) - set(allowed_elements))
        if extra:
            allowed = sorted(allowed_elements, key=lambda s: chemical_symbols.index(s))
            raise StructureError(
                field,
                f"holds {', '.join(extra)}, which the parent does not support "
                f"(supported: {', '.join(allowed)}); change the structure or the parent",
            )
    if min_distance > 0:
        i, j, _, d = pairs(atoms, min_distance)
        if len(d):
            k = int(np.argmin(d))
            raise StructureError(
                field,
                f"atoms {int(i[k])} and {int(j[k])} are {d[k]:.3f} Å apart, closer than "
                f"{min_distance} Å ({len(d) // 2 or 1} such pairs); fix overlapping atoms",
            )
