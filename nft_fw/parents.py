"""Parent (reference) calculators: a small registry of named, hashable calculator settings.

A :class:`Parent` is a name plus JSON-able parameters. Its :attr:`~Parent.settings_hash` keys the
labels in the database, so two labels share a hash only if they came from the same settings.

Built-ins: ``emt`` (ASE's effective medium theory) and ``gpaw`` (imported lazily). Third-party
packages add parents through the entry-point group ``nft_fw.parents``; each entry point names a
factory ``factory(params: dict) -> Parent``. A factory signals bad parameters by raising
:class:`ParentError` whose ``field`` is relative to ``params`` (e.g. ``"foo"``), or a plain
``ValueError``/``TypeError``; :func:`get_parent` puts the campaign path in front.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.metadata
import importlib.util
import json
import logging
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeAlias

import numpy as np
from ase import Atoms
from ase.build import bulk
from ase.data import atomic_numbers, chemical_symbols

from nft_fw.structures import StructureError, reference_lattice_constant

log = logging.getLogger(__name__)

ENTRY_POINT_GROUP = "nft_fw.parents"

#: An ASE calculator. Duck-typed: GPAW's new ASECalculator is not an ase Calculator subclass.
Calculator: TypeAlias = Any


class ParentError(ValueError):
    """A parent name or its parameters are unusable; ``field`` is the dotted campaign path."""

    def __init__(self, field: str, message: str) -> None:
        self.field = field
        self.message = message
        super().__init__(f"{field}: {message}")


@dataclass(frozen=True)
class Parent:
    """A reference calculator: a name, JSON-able parameters and what the code needs to know.

    Build one with :func:`get_parent`; the fields below are filled in by the parent's factory.
    ``force_locality_A`` is the radius in Å beyond which moving an atom no longer changes the
    force on the central atom; chunks smaller than this get wrong central forces.
    """

    name: str
    params: dict[str, Any]
    make_calculator: Callable[[], Calculator] = field(compare=False, repr=False)
    supported_elements: frozenset[str] = field(compare=False)
    force_locality_A: float = field(compare=False)
    lattice_constant_fn: Callable[[str], float] = field(compare=False, repr=False)

    def __hash__(self) -> int:
        return hash(self.settings_hash)

    def calculator(self) -> Calculator:
        """A fresh ASE calculator with these settings."""
        return self.make_calculator()

    @property
    def settings_hash(self) -> str:
        """sha256 hex digest of the canonical JSON of ``{"name": ..., "params": ...}``."""
        text = json.dumps(
            {"name": self.name, "params": self.params},
            sort_keys=True,
            separators=(",", ":"),
            ensure_ascii=True,
        )
        return hashlib.sha256(text.encode()).hexdigest()

    def optimal_lattice_constant(self, element: str) -> float:
        """This parent's fcc lattice constant of ``element`` in Å."""
        if element not in self.supported_elements:
            raise ParentError(
                "parent",
                f"{self.name} does not support {element!r} "
                f"(supported: {', '.join(_by_number(self.supported_elements))})",
            )
        return self.lattice_constant_fn(element)

    def label(self, atoms: Atoms) -> tuple[float, np.ndarray]:
        """Single point on a copy of ``atoms``: (energy eV, forces (n_atoms, 3) eV/Å)."""
        work = atoms.copy()
        work.calc = self.calculator()
        energy = float(work.get_potential_energy())
        forces = np.array(work.get_forces(), dtype=float)
        return energy, forces


ParentFactory = Callable[[dict[str, Any]], Parent]
_REGISTRY: dict[str, ParentFactory] = {}


def register_parent(name: str, factory: ParentFactory) -> None:
    """Register ``factory(params) -> Parent`` under ``name`` (replacing an earlier one)."""
    if name in _REGISTRY:
        log.warning("parent %r registered again; the new factory replaces the old one", name)
    _REGISTRY[name] = factory


def available_parents() -> list[str]:
    """Names of the registered and entry-point parents, sorted."""
    eps = importlib.metadata.entry_points(group=ENTRY_POINT_GROUP)
    return sorted(set(_REGISTRY) | {ep.name for ep in eps})


def _factory(name: str, field: str) -> ParentFactory:
    if name in _REGISTRY:
        return _REGISTRY[name]
    for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
        if ep.name == name:
            factory = ep.load()
            log.info("parent %r loaded from entry point %s", name, ep.value)
            _REGISTRY[name] = factory
            return factory
    raise ParentError(
        f"{field}.name",
        f"unknown parent {name!r}; available: {', '.join(available_parents())} "
        f"(third-party parents register under the entry-point group {ENTRY_POINT_GROUP!r})",
    )


def _canonical_params(params: object, field: str) -> dict[str, Any]:
    if not isinstance(params, Mapping):
        raise ParentError(field, f"is {type(params).__name__}; expected a mapping (e.g. {{}})")
    try:
        return json.loads(json.dumps(dict(params), sort_keys=True, allow_nan=False))
    except (TypeError, ValueError) as err:
        raise ParentError(
            field, f"must hold only JSON values (str, number, bool, null, list, dict): {err}"
        ) from err


def get_parent(name: str, params: Mapping[str, Any] | None = None, field: str = "parent") -> Parent:
    """The parent ``name`` with ``params``; errors name ``{field}.name`` / ``{field}.params...``."""
    factory = _factory(name, field)
    canonical = _canonical_params({} if params is None else params, f"{field}.params")
    try:
        parent = factory(canonical)
    except ParentError as err:
        raise ParentError(f"{field}.params.{err.field}".rstrip("."), err.message) from err
    except (TypeError, ValueError) as err:
        raise ParentError(f"{field}.params", f"rejected by parent {name!r}: {err}") from err
    if not isinstance(parent, Parent):
        raise ParentError(
            f"{field}.name",
            f"the factory of {name!r} returned {type(parent).__name__}, expected a Parent",
        )
    return parent


def _by_number(symbols: frozenset[str] | set[str]) -> list[str]:
    return sorted(symbols, key=atomic_numbers.__getitem__)


# --- EMT ---------------------------------------------------------------------------------------


def _emt_factory(params: dict[str, Any]) -> Parent:
    from ase.calculators.emt import EMT, parameters

    for key, value in params.items():
        if key != "asap_cutoff":
            raise ParentError(key, "is not an EMT parameter; EMT accepts only asap_cutoff (bool)")
        if not isinstance(value, bool):
            raise ParentError(key, f"is {value!r}; expected true or false")
    asap = bool(params.get("asap_cutoff", False))
    elements = frozenset(parameters)
    return Parent(
        name="emt",
        params=params,
        make_calculator=lambda: EMT(**params),
        supported_elements=elements,
        force_locality_A=_emt_force_locality(asap),
        lattice_constant_fn=lambda el: _emt_lattice_constant(el, asap),
    )


def _emt_force_locality(asap_cutoff: bool) -> float:
    """2 × EMT's neighbour-list cutoff (Å): an atom's force depends on the embedding energies of
    atoms within ``rc_list``, and those on atoms within ``rc_list`` of them. The cutoff is EMT's
    own (``EMT.initialize`` sets ``rc_list``), taken for all its elements, i.e. the largest.
    """
    from ase.calculators.emt import EMT, parameters

    calc = EMT(asap_cutoff=asap_cutoff)
    calc.initialize(Atoms(sorted(parameters), positions=np.zeros((len(parameters), 3))))
    return 2.0 * float(calc.rc_list)


@functools.lru_cache(maxsize=64)
def _emt_lattice_constant(element: str, asap_cutoff: bool) -> float:
    """Lattice constant (Å) minimising the EMT energy of the primitive fcc cell of ``element``."""
    from ase.calculators.emt import EMT, parameters
    from ase.units import Bohr
    from scipy.optimize import minimize_scalar

    # EMT's s0 is the fcc Wigner–Seitz radius: a = (16π/3)^(1/3)·s0; search ±10 % around it.
    a0 = (16 * np.pi / 3) ** (1 / 3) * parameters[element][1] * Bohr
    calc = EMT(asap_cutoff=asap_cutoff)

    def energy(a: float) -> float:
        atoms = bulk(element, "fcc", a=a)
        atoms.calc = calc
        return float(atoms.get_potential_energy())

    result = minimize_scalar(energy, bounds=(0.9 * a0, 1.1 * a0), options={"xatol": 1e-5})
    if not result.success:
        raise RuntimeError(f"EMT lattice-constant search for {element} failed: {result.message}")
    return float(result.x)


# --- GPAW --------------------------------------------------------------------------------------


def _gpaw_setup_elements() -> frozenset[str]:
    """Elements with a PAW setup in $GPAW_SETUP_PATH or the installed gpaw_data (no gpaw import)."""
    dirs = [Path(p) for p in os.environ.get("GPAW_SETUP_PATH", "").split(os.pathsep) if p]
    spec = importlib.util.find_spec("gpaw_data")
    if spec is not None and spec.submodule_search_locations:
        dirs += [Path(p) / "setups" for p in spec.submodule_search_locations]
    found = {f.name.split(".")[0] for d in dirs if d.is_dir() for f in d.iterdir() if "." in f.name}
    elements = frozenset(found & set(chemical_symbols[1:]))
    if not elements:
        log.warning("no GPAW setups found (GPAW_SETUP_PATH, gpaw_data); elements not checked")
        return frozenset(chemical_symbols[1:])
    return elements


def _gpaw_lattice_constant(element: str) -> float:
    """Experimental fcc lattice constant (Å) from ``ase.data.reference_states``.

    Used instead of a DFT equation of state, which would cost several GPAW runs per element;
    the mismatch with the GPAW optimum (~1 % for PBE) only strains the target slightly.
    """
    try:
        return reference_lattice_constant(element)
    except StructureError as err:
        raise ParentError(
            "parent",
            f"{err.message.removesuffix('; give lattice_constant')}, so gpaw has no lattice "
            "constant for it; give target.builder.lattice_constant",
        ) from err


def _gpaw_factory(params: dict[str, Any]) -> Parent:
    def make() -> Calculator:
        import gpaw

        return gpaw.GPAW(**{"txt": None, **params})

    return Parent(
        name="gpaw",
        params=params,
        make_calculator=make,
        supported_elements=_gpaw_setup_elements(),
        force_locality_A=8.0,  # converged DFT chunk radius for Pt (Zeng et al. 2022)
        lattice_constant_fn=_gpaw_lattice_constant,
    )


register_parent("emt", _emt_factory)
register_parent("gpaw", _gpaw_factory)
