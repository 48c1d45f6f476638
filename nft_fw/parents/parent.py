"""Parent (reference) calculators: a small registry of named, hashable calculator settings.

A :class:`Parent` is a name plus JSON-able parameters. Its :attr:`~Parent.settings_hash` keys the
labels in the database, so two labels share a hash only if they came from the same settings.

Built-ins: ``emt`` (ASE's effective medium theory) and ``gpaw`` (imported lazily). Third-party
packages add parents through the entry-point group ``nft_fw.parents.parent``; each entry point names a
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
import resource
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeAlias

import numpy as np
from ase import Atoms
from ase.build import bulk
from ase.data import atomic_numbers, chemical_symbols

from nft_fw.structures.particles import StructureError, reference_lattice_constant

log = logging.getLogger(__name__)

ENTRY_POINT_GROUP = "nft_fw.parents.parent"

#: An ASE calculator. Duck-typed: GPAW's new ASECalculator is not an ase Calculator subclass.
Calculator: TypeAlias = Any


class ParentError(ValueError):
    """A parent name or its parameters are unusable; ``field`` is the dotted campaign path."""

    def __init__(self, field: str, message: str) -> None:
        self.field = field
        self.message = message
        super().__init__(f"{field}: {message}")


@dataclass(frozen=True)
class SinglePoint:
    """One parent calculation: energy (eV) and forces (n_atoms, 3) eV/Å, and what it cost.

    ``peak_rss_MiB`` is ``getrusage(RUSAGE_SELF).ru_maxrss`` after the call: the high-water
    mark of this process's resident memory so far (C allocations of the parent included, but
    also anything the process held before the call); ``rss_growth_MiB`` is how much the call
    raised that mark (0 when an earlier peak was higher). ``attempt`` is 0 for the parent's
    own settings and k for its k-th retry override (``overrides``); ``retry_errors`` are the
    messages of the attempts that failed before. ``mpi_ranks``: how many MPI ranks ran the
    calculation together (:mod:`nft_fw.parents.parallel`).
    """

    energy: float
    forces: np.ndarray
    seconds: float
    scf_iterations: int | None
    log_path: Path | None
    peak_rss_MiB: float
    rss_growth_MiB: float
    attempt: int = 0
    overrides: dict[str, Any] = field(default_factory=dict)
    retry_errors: list[str] = field(default_factory=list)
    mpi_ranks: int = 1


class LabelFailed(RuntimeError):
    """Every attempt (the parent's settings, then each retry override) raised.

    ``attempts`` holds one ``{"attempt", "overrides", "error", "log_path"}`` per attempt.
    """

    def __init__(self, message: str, attempts: list[dict[str, Any]]) -> None:
        self.attempts = attempts
        super().__init__(message)


def _maxrss_MiB() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # Linux: KiB


@dataclass(frozen=True)
class Parent:
    """A reference calculator: a name, JSON-able parameters and what the code needs to know.

    Build one with :func:`get_parent`; the fields below are filled in by the parent's factory.
    ``force_locality_A`` is the radius in Å beyond which moving an atom no longer changes the
    force on the central atom; chunks smaller than this get wrong central forces.

    Optional hooks (a plug-in may leave them out): ``calculator_factory(atoms, overrides,
    log_path)`` builds a calculator with parameter overrides (a retry) writing its text log
    to ``log_path``; ``prepare_atoms`` turns a structure into what the calculator runs on (e.g.
    a chunk centred in a box of vacuum); ``describe_error(err, overrides)`` explains a failed
    calculation. ``retries`` are parameter overrides tried in order after a failure;
    ``hash_exclude`` names parameters left out of :attr:`settings_hash` because they change
    how a label is obtained, not what it is. A ``collective`` parent runs on every MPI rank of
    a multi-rank worker at once (:mod:`nft_fw.parents.parallel`); the others run on rank 0 alone.
    """

    name: str
    params: dict[str, Any]
    make_calculator: Callable[[], Calculator] = field(compare=False, repr=False)
    supported_elements: frozenset[str] = field(compare=False)
    force_locality_A: float = field(compare=False)
    lattice_constant_fn: Callable[[str], float] = field(compare=False, repr=False)
    retries: tuple[dict[str, Any], ...] = field(default=(), compare=False)
    hash_exclude: frozenset[str] = field(default=frozenset(), compare=False)
    calculator_factory: Callable[[Atoms, Mapping[str, Any], Path | None], Calculator] | None = (
        field(default=None, compare=False, repr=False)
    )
    prepare_atoms: Callable[[Atoms], Atoms] | None = field(default=None, compare=False, repr=False)
    describe_error: Callable[[BaseException, Mapping[str, Any]], str] | None = field(
        default=None, compare=False, repr=False
    )
    collective: bool = field(default=False, compare=False)

    def __hash__(self) -> int:
        return hash(self.settings_hash)

    def calculator(self) -> Calculator:
        """A fresh ASE calculator with these settings."""
        return self.make_calculator()

    @property
    def settings_hash(self) -> str:
        """sha256 hex digest of the canonical JSON of ``{"name": ..., "params": ...}``
        (parameters in ``hash_exclude`` left out)."""
        params = {k: v for k, v in self.params.items() if k not in self.hash_exclude}
        text = json.dumps(
            {"name": self.name, "params": params},
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
        result = self.single_point(atoms)
        return result.energy, result.forces

    def single_point(
        self, atoms: Atoms, log_dir: Path | None = None, tag: str = "label"
    ) -> SinglePoint:
        """Energy and forces of a copy of ``atoms``, with the retry policy: after a failure
        (an exception of the calculator, e.g. an SCF that does not converge) each override
        in ``retries`` is tried in order. With ``log_dir`` the calculator's text log of
        attempt k goes to ``log_dir/{tag}-{k}.txt`` (when the parent writes one).
        Raises :class:`LabelFailed` when every attempt fails.
        """
        attempts: list[dict[str, Any]] = []
        last: Exception | None = None
        overrides_list: list[dict[str, Any]] = [{}, *self.retries]
        for k, overrides in enumerate(overrides_list):
            log_path = None if log_dir is None else Path(log_dir) / f"{tag}-{k}.txt"
            try:
                return self._attempt(atoms, overrides, log_path, k, attempts)
            except Exception as err:  # recorded; re-raised below when no retry succeeds
                message = self._explain(err, overrides)
                log.warning(
                    "parent %s attempt %d/%d (overrides %s) failed: %s",
                    self.name,
                    k + 1,
                    len(overrides_list),
                    overrides or "none",
                    message,
                )
                attempts.append(
                    {
                        "attempt": k,
                        "overrides": overrides,
                        "error": message,
                        "log_path": None if log_path is None else str(log_path),
                    }
                )
                last = err
        retried = f" and {len(self.retries)} retry override(s)" if self.retries else ""
        raise LabelFailed(
            f"parent {self.name} failed on {len(atoms)} atoms with its settings{retried}: "
            + " | ".join(f"attempt {a['attempt']}: {a['error']}" for a in attempts)
            + " (retry overrides, e.g. a softer mixer or a larger maxiter, go in "
            "parent.params.retries)",
            attempts,
        ) from last

    def _explain(self, err: BaseException, overrides: Mapping[str, Any]) -> str:
        if self.describe_error is not None:
            return self.describe_error(err, overrides)
        return f"{type(err).__name__}: {err}"

    def run_attempt(
        self, atoms: Atoms, overrides: Mapping[str, Any], log_path: str | None, attempt: int
    ) -> SinglePoint:
        """One attempt with ``overrides``, no retries (the other ranks' side of a collective
        calculation)."""
        return self._attempt(
            atoms, overrides, None if log_path is None else Path(log_path), attempt, []
        )

    def _attempt(
        self,
        atoms: Atoms,
        overrides: Mapping[str, Any],
        log_path: Path | None,
        attempt: int,
        failed: list[dict[str, Any]],
    ) -> SinglePoint:
        from nft_fw.parents import parallel

        coord = parallel.coordinator() if self.collective else None
        if coord is not None:  # the other ranks run this attempt with us
            coord.single_point(
                {"name": self.name, "params": self.params},
                atoms,
                dict(overrides),
                None if log_path is None else str(log_path),
                attempt,
            )
        work = self.prepare_atoms(atoms) if self.prepare_atoms is not None else atoms.copy()
        if log_path is not None:
            log_path.parent.mkdir(parents=True, exist_ok=True)
        if self.calculator_factory is not None:
            calc = self.calculator_factory(work, overrides, log_path)
        else:
            calc = self.calculator()
        work.calc = calc
        rss0 = _maxrss_MiB()
        t0 = time.perf_counter()
        energy = float(work.get_potential_energy())
        forces = np.array(work.get_forces(), dtype=float)
        seconds = time.perf_counter() - t0
        rss1 = _maxrss_MiB()
        iterations = getattr(calc, "get_number_of_iterations", None)
        return SinglePoint(
            energy=energy,
            forces=forces,
            seconds=seconds,
            scf_iterations=None if iterations is None else int(iterations()),
            log_path=log_path if log_path is not None and log_path.exists() else None,
            peak_rss_MiB=rss1,
            rss_growth_MiB=max(0.0, rss1 - rss0),
            attempt=attempt,
            overrides=dict(overrides),
            retry_errors=[a["error"] for a in failed],
            mpi_ranks=1 if coord is None else coord.size,
        )


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


#: GPAW keywords a campaign may set (passed to ``gpaw.GPAW``; see GPAW's ``Parameters``).
GPAW_KEYWORDS = frozenset(
    {
        "mode",
        "basis",
        "h",
        "gpts",
        "xc",
        "kpts",
        "occupations",
        "spinpol",
        "charge",
        "convergence",
        "maxiter",
        "mixer",
        "eigensolver",
        "poissonsolver",
        "symmetry",
        "nbands",
        "setups",
        "hund",
        "interpolation",
        "parallel",
        "random",
        "soc",
        "experimental",
    }
)
#: nft-fw's own GPAW keys, handled outside GPAW.
GPAW_OWN_KEYS = {
    "vacuum": "vacuum around a non-periodic structure (chunks, clusters) on each side, Å",
    "magmom": "initial magnetic moment per element, e.g. {Pt: 0.5} (μ_B); with spinpol",
    "retries": "list of parameter overrides tried in order when a calculation fails",
}
GPAW_DEFAULT_VACUUM_A = 6.0
GPAW_HASH_EXCLUDE = frozenset({"retries", "mixer"})  # nft-fw 0.4.0 left out only "retries"
_MIXER_KEYS = frozenset({"name", "backend", "method", "beta", "nmaxold", "weight"})


def _check_gpaw_keys(params: Mapping[str, Any], where: str = "") -> None:
    for key in params:
        if key in GPAW_KEYWORDS or (not where and key in GPAW_OWN_KEYS):
            continue
        if key == "txt":
            message = (
                "is set by nft-fw: each label's GPAW log is written to the label's directory and "
                "kept in GridFS (log_file on the label); remove txt"
            )
        elif key == "magmoms":
            message = (
                "per-atom moments do not fit chunks of varying size; give magmom: "
                "{element: moment} (e.g. {Pt: 0.5}) and spinpol: true"
            )
        elif where and key in GPAW_OWN_KEYS:
            message = "cannot be overridden in a retry; set it in parent.params"
        else:
            own = "" if where else f"; nft-fw's own keys: {', '.join(GPAW_OWN_KEYS)}"
            message = (
                f"is not a GPAW parameter nft-fw accepts (allowed: "
                f"{', '.join(sorted(GPAW_KEYWORDS))}{own}); check the spelling"
            )
        raise ParentError(f"{where}{key}", message)
    h = params.get("h")
    if h is not None and not (isinstance(h, int | float) and not isinstance(h, bool) and h > 0):
        raise ParentError(f"{where}h", f"is {h!r}; expected a grid spacing > 0 in Å (e.g. 0.2)")
    maxiter = params.get("maxiter")
    if maxiter is not None and not (
        isinstance(maxiter, int) and not isinstance(maxiter, bool) and maxiter >= 1
    ):
        raise ParentError(f"{where}maxiter", f"is {maxiter!r}; expected an integer ≥ 1")
    mixer = params.get("mixer")
    if isinstance(mixer, Mapping):
        unknown = sorted(set(mixer) - _MIXER_KEYS)
        if unknown:
            raise ParentError(
                f"{where}mixer.{unknown[0]}",
                f"is not a mixer setting (allowed: {', '.join(sorted(_MIXER_KEYS))}); "
                "e.g. mixer: {beta: 0.05, nmaxold: 5, weight: 50}",
            )
    elif mixer is not None and not isinstance(mixer, str):
        raise ParentError(
            f"{where}mixer", f"is {mixer!r}; expected a mapping like {{beta: 0.05, nmaxold: 5}}"
        )


def _gpaw_params(params: Mapping[str, Any], elements: frozenset[str]) -> None:
    """Check ``params`` without running GPAW; raises ParentError naming the key."""
    _check_gpaw_keys(params)
    vacuum = params.get("vacuum", GPAW_DEFAULT_VACUUM_A)
    if isinstance(vacuum, bool) or not isinstance(vacuum, int | float) or not vacuum > 0:
        raise ParentError("vacuum", f"is {vacuum!r}; expected a number of Å > 0 (e.g. 6.0)")
    magmom = params.get("magmom", {})
    if not isinstance(magmom, Mapping):
        raise ParentError(
            "magmom", f"is {magmom!r}; expected {{element: moment}}, e.g. {{Pt: 0.5}}"
        )
    for symbol, moment in magmom.items():
        if symbol not in elements:
            raise ParentError(
                f"magmom.{symbol}", "is not an element with a GPAW setup; give a chemical symbol"
            )
        if isinstance(moment, bool) or not isinstance(moment, int | float):
            raise ParentError(f"magmom.{symbol}", f"is {moment!r}; expected a number (μ_B)")
    retries = params.get("retries", [])
    if not isinstance(retries, list):
        raise ParentError(
            "retries", f"is {retries!r}; expected a list of overrides, e.g. [{{maxiter: 500}}]"
        )
    for k, override in enumerate(retries):
        if not isinstance(override, Mapping) or not override:
            raise ParentError(
                f"retries.{k}",
                f"is {override!r}; expected a non-empty mapping of GPAW parameters, e.g. "
                "{mixer: {beta: 0.02}, maxiter: 1000}",
            )
        _check_gpaw_keys(override, f"retries.{k}.")


def _gpaw_error(err: BaseException, overrides: Mapping[str, Any], params: Mapping[str, Any]) -> str:
    """GPAW's error with what it means; GPAW's convergence errors carry no text."""
    text = f"{type(err).__module__.split('.')[0]}.{type(err).__name__}"
    detail = str(err).strip()
    from gpaw import ConvergenceError

    if isinstance(err, ConvergenceError):
        maxiter = overrides.get("maxiter", params.get("maxiter", "default"))
        mixer = overrides.get("mixer", params.get("mixer", "default"))
        detail = f"SCF did not converge within maxiter={maxiter} iterations (mixer {mixer})" + (
            f": {detail}" if detail else ""
        )
    return f"{text}: {detail}" if detail else text


def _gpaw_factory(params: dict[str, Any]) -> Parent:
    elements = _gpaw_setup_elements()
    _gpaw_params(params, elements)
    gpaw_kwargs = {k: v for k, v in params.items() if k in GPAW_KEYWORDS}
    vacuum = float(params.get("vacuum", GPAW_DEFAULT_VACUUM_A))
    magmom: dict[str, float] = dict(params.get("magmom", {}))

    def calculator(
        atoms: Atoms | None, overrides: Mapping[str, Any], log_path: Path | None
    ) -> Calculator:
        import gpaw
        from gpaw.mpi import world

        from nft_fw.parents import parallel

        if world.size > 1 and not parallel.c_extension_has_mpi():
            # measured: Pt5, LCAO, 2 ranks of GPAW_MPI_BACKEND=mpi4py over a serial build:
            # −2.48 eV against −12.76 eV serial, other forces too
            raise RuntimeError(
                f"GPAW runs on {world.size} MPI ranks but its C extension was built without "
                "MPI; its domain decomposition then gives wrong energies and forces. Build "
                "GPAW with MPI (siteconfig mpi = True) or run the worker on one rank"
            )
        kwargs = {**gpaw_kwargs, **overrides}
        if atoms is not None and not atoms.pbc.any():
            kwargs.pop("kpts", None)  # a chunk in vacuum has only the Γ point
        return gpaw.GPAW(txt=None if log_path is None else str(log_path), **kwargs)

    def prepare(atoms: Atoms) -> Atoms:
        work = atoms.copy()
        axes = [i for i in range(3) if not work.pbc[i]]
        if axes:
            work.center(vacuum=vacuum, axis=axes)
        if magmom:
            work.set_initial_magnetic_moments(
                [magmom.get(s, 0.0) for s in work.get_chemical_symbols()]
            )
        return work

    return Parent(
        name="gpaw",
        params=params,
        make_calculator=lambda: calculator(None, {}, None),
        supported_elements=elements,
        force_locality_A=8.0,  # converged DFT chunk radius for Pt (Zeng et al. 2022)
        lattice_constant_fn=_gpaw_lattice_constant,
        retries=tuple(dict(r) for r in params.get("retries", [])),
        # the mixer decides how fast the SCF gets there, not where: the central force of a
        # 41-atom Pt chunk moved 0.003-0.007 eV/Å across five mixers (docs/gpaw.md)
        hash_exclude=GPAW_HASH_EXCLUDE,
        calculator_factory=calculator,
        prepare_atoms=prepare,
        describe_error=lambda err, overrides: _gpaw_error(err, overrides, params),
        collective=True,
    )


register_parent("emt", _emt_factory)
register_parent("gpaw", _gpaw_factory)
