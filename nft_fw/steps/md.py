"""Molecular dynamics with the ensemble mean, watching δ at every step.

A campaign's MD phase runs in segments. A segment continues from a saved :class:`MDState`
(positions, momenta, the thermostat's random-number state and the step count) and ends at
the run's length, or — while pauses are allowed — at the first step where the largest δ
(calibrated, when the model carries a calibration) exceeds the MD threshold. Chunks cut
around uncertain atoms of the segment's frames are labelled, the model is retrained, and
the next segment continues from the state the segment ended in. A segment continued from
a saved state follows the same trajectory as an uninterrupted run (to float round-off:
the neighbour list is rebuilt where the run continues), which is what makes a pause, and a
worker killed mid-segment, invisible in the trajectory except through the retrained model.
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
from ase import Atoms, units
from ase.md.bussi import Bussi
from ase.md.langevin import Langevin
from ase.md.velocitydistribution import Stationary, ZeroRotation, thermalize_momenta
from ase.md.verlet import VelocityVerlet

from nft_fw.potential.neighbours import StructureInputError

if TYPE_CHECKING:
    from nft_fw.potential.model import Ensemble

INTEGRATORS = ("langevin", "bussi", "nve")
STEP_INFO = "nft_md_step"  # info key of a saved state: the step count
RNG_INFO = "nft_md_rng"  # info key of a saved state: the random-number state (hex of JSON)
DELTA_ARRAY = "nft_delta"  # per-atom δ (eV/Å) of a stored frame
COLUMNS = (
    "step",
    "potential_energy",
    "kinetic_energy",
    "temperature_K",
    "max_delta",
    "mean_delta",
    "max_atom",
)


@dataclasses.dataclass(frozen=True)
class MDSettings:
    """``integrator``: langevin (friction 1/τ), bussi (stochastic velocity rescaling with
    time constant τ) or nve (velocity Verlet); ``thermostat_time_fs``: τ."""

    integrator: str
    temperature_K: float
    timestep_fs: float
    thermostat_time_fs: float = 100.0

    def __post_init__(self) -> None:
        if self.integrator not in INTEGRATORS:
            raise ValueError(f"integrator {self.integrator!r} is not one of {INTEGRATORS}")
        for key in ("temperature_K", "timestep_fs", "thermostat_time_fs"):
            if not getattr(self, key) > 0:
                raise ValueError(f"{key} is {getattr(self, key)}; it must be positive")


@dataclasses.dataclass
class MDState:
    """Where a run is: ``atoms`` with momenta, the number of steps made, the
    random-number generator's state (numpy ``bit_generator.state``)."""

    atoms: Atoms
    step: int
    rng_state: dict[str, Any]

    def generator(self) -> np.random.Generator:
        bits = getattr(np.random, self.rng_state["bit_generator"])()
        bits.state = self.rng_state
        return np.random.Generator(bits)

    def to_frame(self) -> Atoms:
        """The state as one extended-XYZ frame (momenta as an array, step and RNG in info)."""
        frame = self.atoms.copy()
        frame.calc = None
        frame.info[STEP_INFO] = int(self.step)
        frame.info[RNG_INFO] = json.dumps(self.rng_state, sort_keys=True).encode().hex()
        return frame

    @classmethod
    def from_frame(cls, frame: Atoms) -> MDState:
        if STEP_INFO not in frame.info or RNG_INFO not in frame.info:
            raise ValueError(
                f"this frame is not a saved MD state (it lacks info {STEP_INFO} and "
                f"{RNG_INFO}); saved states are written by MDState.to_frame"
            )
        atoms = frame.copy()
        atoms.calc = None
        step = int(atoms.info.pop(STEP_INFO))
        rng = json.loads(bytes.fromhex(str(atoms.info.pop(RNG_INFO))).decode())
        return cls(atoms, step, rng)


def start(atoms: Atoms, settings: MDSettings, seed: int) -> MDState:
    """Step 0: ``atoms`` with Maxwell–Boltzmann momenta at the temperature, total momentum
    (and, for a structure periodic in no direction, angular momentum) removed."""
    work = atoms.copy()
    work.calc = None
    rng = np.random.default_rng(seed)
    thermalize_momenta(work, settings.temperature_K, rng=rng)
    Stationary(work)
    if not work.pbc.any():
        ZeroRotation(work)
    return MDState(work, 0, dict(rng.bit_generator.state))


def dynamics(atoms: Atoms, settings: MDSettings, rng: np.random.Generator) -> Any:
    """The ASE integrator of ``settings`` on ``atoms`` (which carry the calculator): a
    ``MolecularDynamics`` whose ``step()`` makes one step."""
    dt = settings.timestep_fs * units.fs
    tau = settings.thermostat_time_fs * units.fs
    if settings.integrator == "langevin":
        return Langevin(
            atoms, dt, temperature_K=settings.temperature_K, friction=1.0 / tau, fixcm=False,
            rng=rng, logfile=None,
        )  # fmt: skip
    if settings.integrator == "bussi":
        return Bussi(
            atoms, dt, temperature_K=settings.temperature_K, taut=tau, rng=rng, logfile=None
        )
    return VelocityVerlet(atoms, dt, logfile=None)


@dataclasses.dataclass
class Segment:
    """What a segment recorded: one row per step in ``log`` (columns :data:`COLUMNS`;
    energies eV, δ eV/Å; the first row is the starting state), the frames kept (the first,
    every ``frame_every`` steps and the last; per-atom δ in array :data:`DELTA_ARRAY`) and
    their steps, the state it ended in, whether it ended by a pause, and the true-force
    checks (``checks``: step, mae, max in eV/Å, and the parent's seconds per check)."""

    log: dict[str, list[float]]
    frames: list[Atoms]
    frame_steps: list[int]
    state: MDState
    paused: bool = False
    checks: dict[str, list[float]] = dataclasses.field(default_factory=dict)
    #: why the segment ended early when the model moved atoms where it cannot be evaluated
    #: (two closer than its descriptors allow); its state is then the last step it could
    collapsed: str | None = None

    @property
    def n_rows(self) -> int:
        return len(self.log["step"])

    @property
    def max_uncertainty(self) -> float:
        return float(max(self.log["max_delta"]))

    def to_dict(self) -> dict[str, Any]:
        """The log and checks (plain lists), for a record or a checkpoint."""
        return {"log": self.log, "frame_steps": self.frame_steps, "checks": self.checks}


def empty_segment(state: MDState) -> Segment:
    return Segment({c: [] for c in COLUMNS}, [], [], state)


Checkpoint = Callable[[Segment], None]
TrueForces = Callable[[Atoms], np.ndarray]


def run(
    state: MDState,
    calc: Any,
    settings: MDSettings,
    end_step: int,
    *,
    threshold: float | None = None,
    scale: float = 1.0,
    frame_every: int = 10,
    so_far: Segment | None = None,
    checkpoint: Checkpoint | None = None,
    checkpoint_every: int = 0,
    true_forces: TrueForces | None = None,
    check_every: int = 0,
) -> Segment:
    """Run from ``state`` to step ``end_step`` with ``calc`` (an EnsembleCalculator),
    or — with a ``threshold`` — until the first step after the start whose largest
    ``scale``·δ exceeds it (eV/Å). ``so_far``: the segment a saved state was taken from (a
    resumed segment continues its log); ``checkpoint`` receives the segment every
    ``checkpoint_every`` steps. ``true_forces`` (validation only: a parent on the whole
    frame) is compared with the model's forces every ``check_every`` steps."""
    if end_step < state.step:
        raise ValueError(f"end_step {end_step} is before the state's step {state.step}")
    atoms = state.atoms.copy()
    atoms.calc = calc
    rng = state.generator()
    dyn = dynamics(atoms, settings, rng)
    seg = so_far if so_far is not None else empty_segment(state)
    step = state.step

    def record(step: int, first: bool = False) -> float:
        forces = atoms.get_forces()
        delta = scale * np.asarray(calc.results["uncertainties"])
        epot = float(atoms.get_potential_energy())
        ekin = float(atoms.get_kinetic_energy())
        row = (
            step, epot, ekin, float(atoms.get_temperature()), float(delta.max()),
            float(delta.mean()), int(delta.argmax()),
        )  # fmt: skip
        for key, value in zip(COLUMNS, row, strict=True):
            seg.log[key].append(value)
        if true_forces is not None and check_every and step % check_every == 0:
            t0 = time.perf_counter()
            error = np.linalg.norm(forces - true_forces(atoms), axis=1)
            seconds = time.perf_counter() - t0
            for key, value in (
                ("step", step), ("mae", error.mean()), ("max", error.max()), ("seconds", seconds)
            ):  # fmt: skip
                seg.checks.setdefault(key, []).append(float(value))
        if first or step % frame_every == 0 or step == end_step:
            keep(step, delta)
        return float(delta.max())

    def keep(step: int, delta: np.ndarray) -> None:
        if seg.frame_steps and seg.frame_steps[-1] == step:
            return
        frame = atoms.copy()
        frame.calc = None
        frame.arrays[DELTA_ARRAY] = delta.copy()
        seg.frames.append(frame)
        seg.frame_steps.append(step)

    if seg.n_rows == 0:
        record(step, first=True)
    while step < end_step:
        before = (atoms.get_positions(), atoms.get_momenta())
        try:
            dyn.step()
        except StructureInputError as err:
            # the model walked two atoms into each other: the run cannot go on; it ends at
            # the last step the model could evaluate, saying why
            atoms.set_positions(before[0])
            atoms.set_momenta(before[1])
            seg.collapsed = f"after step {step}: {err}"
            break
        step += 1
        largest = record(step)
        if threshold is not None and largest > threshold:
            keep(step, scale * np.asarray(calc.results["uncertainties"]))
            seg.paused = True
            break
        if checkpoint is not None and checkpoint_every and step % checkpoint_every == 0:
            seg.state = _state(atoms, step, rng)
            checkpoint(seg)
    seg.state = _state(atoms, step, rng)
    return seg


def _state(atoms: Atoms, step: int, rng: np.random.Generator) -> MDState:
    frame = atoms.copy()
    frame.calc = None
    return MDState(frame, step, dict(rng.bit_generator.state))


def segment_from(
    data: dict[str, Any], frames: list[Atoms], state: MDState, paused: bool = False
) -> Segment:
    """A segment from its stored parts (:meth:`Segment.to_dict`, its frames, its state)."""
    return Segment(
        log={c: list(data["log"][c]) for c in COLUMNS},
        frames=list(frames),
        frame_steps=[int(s) for s in data["frame_steps"]],
        state=state,
        paused=paused,
        checks={k: list(v) for k, v in data.get("checks", {}).items()},
    )


def drift_per_atom_per_ps(log: dict[str, list[float]], timestep_fs: float, n_atoms: int) -> float:
    """Slope of the total energy (potential + kinetic) against time, eV per atom per ps, by
    least squares over the log (an NVE check)."""
    total = np.asarray(log["potential_energy"]) + np.asarray(log["kinetic_energy"])
    t_ps = np.asarray(log["step"], dtype=float) * timestep_fs / 1000.0
    return float(np.polyfit(t_ps, total, 1)[0] / n_atoms)


# ----------------------------------------------------------------------------- what a record says


def ending(record: Mapping[str, Any]) -> str:
    """How an MD segment's record ended, in words (the follower, logs, status, report)."""
    end_step = int(record.get("end_step", 0))
    if record.get("paused"):
        return f"paused at step {end_step}"
    if record.get("collapsed"):
        return (
            f"stopped at step {end_step} ({float(record.get('end_ps', 0.0)):.3f} ps): the model "
            f"moved atoms where it cannot be evaluated ({record['collapsed']}) — it has left "
            "its data (its largest δ along the segment: "
            f"{float(record['structure_uncertainty']):.3f} eV/Å); label chunks from its last "
            "frames or lower md.threshold and run again"
        )
    if record.get("stopped"):
        return (
            f"stopped at step {end_step} ({float(record.get('end_ps', 0.0)):.3f} ps): δ "
            f"{float(record['structure_uncertainty']):.3f} eV/Å above the threshold "
            f"{float(record['threshold']):g} with no pause left — the model has left its data "
            "(raise md.max_pauses and run again, or md.out_of_pauses: continue to go on)"
        )
    above = int(record["steps_above_threshold"])
    if above and not record["watched"]:
        dt = float(record.get("timestep_fs", 0.0))
        return (
            f"to the end, {above} steps ({above * dt / 1000.0:.3f} ps) with δ above the "
            f"threshold {float(record['threshold']):g} eV/Å and no pause left "
            "(md.out_of_pauses: continue): those steps ran outside the model's data"
        )
    return "to the end"


def left_data(records: Sequence[Mapping[str, Any]]) -> str | None:
    """A warning when the MD phase stopped, or ran on, outside the model's data; else None."""
    if not records:
        return None
    last = records[-1]
    if last.get("stopped"):
        return "MD " + ending(last)
    unwatched = sum(int(r["steps_above_threshold"]) for r in records if not r["watched"])
    if unwatched:
        dt = float(last.get("timestep_fs", 0.0))
        return (
            f"MD ran {unwatched} steps ({unwatched * dt / 1000.0:.3f} ps) with δ above the "
            f"threshold {float(last['threshold']):g} eV/Å after its pauses were spent "
            "(md.out_of_pauses: continue): its forces there are not to be trusted"
        )
    return None


@dataclasses.dataclass
class MDResume:
    """A segment cut off mid-way: its model (trained at the segment's start), the training
    figures, the out-of-sample figures of its new chunks, and the segment so far (its log,
    frames and the state it was saved in)."""

    ensemble: Ensemble
    metrics: dict[str, Any] | None
    oos: dict[str, Any]
    segment: Segment
