"""What every step shares: the initial set and a fresh ensemble, chunk requests and
labels (from prior labels or the parent), the descriptors of chunks (cached where a store
is given), training on every label in a fixed order, and the assessment of a model on its
target (δ, true and out-of-sample errors, calibration)."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Protocol

import numpy as np
from ase import Atoms

from nft_fw.labels import label as labeldoc
from nft_fw.labels import prior as prior_mod
from nft_fw.labels.label import ChunkLabel
from nft_fw.labels.phase import Phase
from nft_fw.potential import baseline as bl
from nft_fw.potential import descriptors as desc
from nft_fw.potential import model as mdl
from nft_fw.potential import training as tr
from nft_fw.potential import uncertainty as unc
from nft_fw.spec.campaign import CampaignSpec, Prepared
from nft_fw.steps import md as md_mod
from nft_fw.steps.relax import Trajectory
from nft_fw.structures import chunks as chunk_mod
from nft_fw.structures import initial as init_mod


def composition(prepared: Prepared) -> dict[str, float]:
    """Element fractions of the target (the initial bulk cells use the same mix)."""
    symbols = prepared.target.get_chemical_symbols()
    return {el: symbols.count(el) / len(symbols) for el in sorted(set(symbols))}


def initial_structures(prepared: Prepared) -> list[Atoms]:
    """The unlabelled initial bulk cells chosen by farthest-point sampling (Sec. IV C)."""
    spec = prepared.spec
    comp = composition(prepared)
    a0 = sum(frac * prepared.parent.optimal_lattice_constant(el) for el, frac in comp.items())
    cands = init_mod.candidates(
        comp,
        a0,
        n_candidates=spec.initial.n_candidates,
        spread=spec.initial.lattice_spread,
        rattle_stdev=spec.initial.rattle_stdev,
        seed=spec.initial.seed,
    )
    return init_mod.select(
        cands, spec.initial.n_structures, spec.model.descriptor_spec(prepared.elements)
    )


def fresh_ensemble(prepared: Prepared, images: Sequence[tr.Image]) -> mdl.Ensemble:
    """A fresh ensemble; ``images`` are the parent's labels (the reference energies are fitted
    to what is left of them after the model's baseline)."""
    spec = prepared.spec
    ensemble = tr.make_ensemble(
        spec.model.descriptor_spec(prepared.elements),
        spec.model.architecture,
        residual_images(images, spec.model.baseline),
        unlabelled=[prepared.target],
        seed=spec.nft.seed,
        scale_floor=spec.model.scale_floor,
    )
    return dataclasses.replace(ensemble, baseline=spec.model.baseline)


def residual_images(images: Sequence[tr.Image], baseline: str) -> list[tr.Image]:
    """The images as the networks see them: the parent's energy and forces less the
    baseline's (:mod:`nft_fw.potential.baseline`); unchanged without one."""
    if baseline == "none":
        return list(images)
    out = []
    for im in images:
        energy, forces = bl.energy_forces(baseline, im.atoms)
        out.append(dataclasses.replace(im, energy=im.energy - energy, forces=im.forces - forces))
    return out


def md_settings(spec: CampaignSpec) -> md_mod.MDSettings:
    m = spec.md_spec
    return md_mod.MDSettings(m.integrator, m.temperature_K, m.timestep_fs, m.thermostat_time_fs)


MD_CALIBRATION_POINTS = 50  # out-of-sample points the MD phase's calibration of δ is fitted on


def md_start_structure(
    spec: CampaignSpec,
    target: Atoms,
    relaxed: Callable[[], Atoms | None],
    transfer: Callable[[str], Atoms | None],
) -> Atoms:
    """The structure the MD starts from (``md.structure``): the target, the kept relax
    round's final structure (``relaxed()``; None when no round ran) or the transfer target
    of that name (``transfer(name)``; None when there is none)."""
    which = spec.md_structure
    if which == "target":
        return target
    if which == "relaxed":
        atoms = relaxed()
        if atoms is None:
            raise ValueError(
                f"campaign {spec.name}: md.structure is relaxed, but no relax round ran; give "
                "the campaign a relax section or set md.structure: target"
            )
        return atoms
    atoms = transfer(which)
    if atoms is None:
        raise KeyError(f"campaign {spec.name}: no transfer target named {which!r} (md.structure)")
    return atoms


def md_start(spec: CampaignSpec, atoms: Atoms) -> md_mod.MDState:
    """Step 0 of the MD phase on ``atoms``: Maxwell–Boltzmann velocities, seeded."""
    m = spec.md_spec
    return md_mod.start(atoms, md_settings(spec), spec.nft.seed if m.seed is None else m.seed)


@dataclasses.dataclass(frozen=True)
class ChunkRequest:
    """A chunk to label: ``radius`` Å around atom ``centre`` of the target (NFT) or of frame
    ``frame`` of the relaxation's searched frames (relax), for ``phase`` round ``iteration``.
    ``given``: a chunk the prior labels hold (centre first), cut again around its atom 0
    instead (``centre`` is where it was cut originally, as recorded)."""

    centre: int
    radius: float
    iteration: int
    phase: Phase = Phase.NFT
    frame: int | None = None
    given: Atoms | None = dataclasses.field(default=None, compare=False, repr=False)


def given_requests(
    prepared: Prepared, planned: Sequence[prior_mod.PriorLabel], phase: Phase, iteration: int
) -> list[ChunkRequest]:
    """Requests for prior labels' chunks (``planned``) for ``phase`` round or segment
    ``iteration``: replayed as the parent computed them, not cut here."""
    return [
        ChunkRequest(
            centre=int(lb.centre if lb.centre is not None else 0),
            radius=float(lb.radius or prepared.chunk_radius_A),
            iteration=iteration,
            phase=phase,
            given=lb.structure(),
        )
        for lb in planned
    ]


def cut_chunk(prepared: Prepared, centre: int, target: Atoms | None = None) -> chunk_mod.Chunk:
    """The chunk of the campaign's radius around atom ``centre`` of the target."""
    return chunk_mod.cut(
        prepared.target if target is None else target, centre, prepared.chunk_radius_A
    )


def label_chunk(
    prepared: Prepared, chunk: chunk_mod.Chunk, iteration: int, phase: str = Phase.NFT
) -> ChunkLabel:
    """A chunk's label from the campaign's prior labels or the parent
    (:func:`nft_fw.labels.label.label`, as a label Firework makes it)."""
    item = {"kind": "chunk", "centre": chunk.centre, "radius": chunk.radius,
            "iteration": iteration, "phase": phase, "source": None}  # fmt: skip
    doc = labeldoc.label(
        prepared.spec.name, prepared.parent, prepared.prior, item, chunk.atoms, chunk.hash
    )
    return labeldoc.chunk_label(doc)


def label_structure(prepared: Prepared, atoms: Atoms) -> tuple[float, np.ndarray]:
    """The parent's energy and forces of a whole structure (an initial image), from the
    campaign's prior labels when they hold it."""
    doc = labeldoc.label(
        prepared.spec.name, prepared.parent, prepared.prior, {"kind": "image"}, atoms,
        chunk_mod.structure_id(atoms),
    )  # fmt: skip
    return float(doc["energy"]), np.asarray(doc["forces"], dtype=float)


def target_forces(prepared: Prepared) -> np.ndarray:
    """The parent's forces on the whole target (validation only), from the prior labels
    when they hold a whole-structure label of it."""
    given = prior_mod.whole_forces(prepared.prior, prepared.target)
    return given if given is not None else np.asarray(prepared.parent.label(prepared.target)[1])


FeatureSource = Callable[[Sequence[ChunkLabel], desc.DescriptorSpec, str], list[tr.ChunkFeatures]]


def central_residual(label: ChunkLabel, baseline: str) -> np.ndarray:
    """The central force the networks learn: the parent's less the baseline's on the same
    chunk (a chunk of radius ≥ 8 Å gives EMT's whole-structure force on its centre)."""
    if baseline == "none":
        return label.central_force
    return label.central_force - bl.energy_forces(baseline, label.atoms)[1][0]


def chunk_features(
    labels: Sequence[ChunkLabel], spec: desc.DescriptorSpec, baseline: str = "none"
) -> list[tr.ChunkFeatures]:
    """The training data of labelled chunks (all in one descriptor pass)."""
    return tr.chunk_features_many(
        [(lb.atoms, central_residual(lb, baseline), lb.hash) for lb in labels], spec
    )


class FeatureMemo:
    """A :data:`FeatureSource` that computes each chunk's features once (by chunk hash,
    descriptor settings and baseline) and keeps them in memory."""

    def __init__(self) -> None:
        self._known: dict[tuple[str, str], tr.ChunkFeatures] = {}

    def __call__(
        self, labels: Sequence[ChunkLabel], spec: desc.DescriptorSpec, baseline: str = "none"
    ) -> list[tr.ChunkFeatures]:
        key = repr((spec.to_dict(), baseline))
        missing = [lb for lb in labels if (lb.hash, key) not in self._known]
        for f in chunk_features(missing, spec, baseline):
            self._known[f.id, key] = f
        return [self._known[lb.hash, key] for lb in labels]


class FeatureStore(Protocol):
    """Where :class:`CachedFeatures` keeps chunk geometry features (G, K, species) by
    descriptor-settings hash and chunk hash (the service: the database)."""

    def get(
        self, spec_hash: str, hashes: Sequence[str]
    ) -> Mapping[str, tuple[np.ndarray, np.ndarray, np.ndarray]]: ...

    def put(
        self, spec_hash: str, chunk_hash: str, g: np.ndarray, k: np.ndarray, species: np.ndarray
    ) -> None: ...


class CachedFeatures:
    """A :data:`FeatureSource` over a :class:`FeatureStore`: each chunk's features are
    computed once per descriptor settings and kept in the store, which holds geometry only —
    the force a chunk trains on (:func:`central_residual`) is formed here on every call."""

    def __init__(self, store: FeatureStore) -> None:
        self.store = store

    def __call__(
        self, labels: Sequence[ChunkLabel], spec: desc.DescriptorSpec, baseline: str = "none"
    ) -> list[tr.ChunkFeatures]:
        spec_hash = hashlib.sha256(json.dumps(spec.to_dict()).encode()).hexdigest()[:16]
        cached = self.store.get(spec_hash, [lb.hash for lb in labels])
        missing = [lb for lb in labels if lb.hash not in cached]
        fresh = {f.id: f for f in chunk_features(missing, spec, baseline)}
        for f in fresh.values():
            self.store.put(spec_hash, f.id, f.g, f.k, f.species)
        out = []
        for lb in labels:
            if lb.hash in fresh:
                out.append(fresh[lb.hash])
                continue
            g, k, species = cached[lb.hash]
            force = central_residual(lb, baseline)
            out.append(tr.ChunkFeatures(g=g, k=k, species=species, force=force, id=lb.hash))
        return out


def in_order(
    images: Sequence[tr.Image], chunks: Sequence[ChunkLabel]
) -> tuple[list[tr.Image], list[ChunkLabel]]:
    """Images by hash and chunks by (iteration, centre, hash): the order a step trains in,
    whatever order the labels arrived in."""
    return (
        sorted(images, key=lambda im: im.id),
        sorted(chunks, key=lambda c: (c.iteration, c.centre, c.hash)),
    )


@dataclasses.dataclass
class Fit:
    """A trained ensemble, its training metrics and the seconds spent on features."""

    ensemble: mdl.Ensemble
    metrics: dict[str, Any]
    features_seconds: float


def fit(
    prepared: Prepared,
    images: Sequence[tr.Image],
    chunks: Sequence[ChunkLabel],
    previous: mdl.Ensemble | None,
    config_iteration: int,
    features: FeatureSource = chunk_features,
) -> Fit:
    """Train on every label, warm-started from ``previous`` when given and the campaign
    allows it (``training.warm_start``), else from a fresh ensemble; ``config_iteration``
    picks the step count and seed (:meth:`CampaignSpec.train_config`)."""
    spec = prepared.spec
    if not images:
        raise RuntimeError(
            f"campaign {spec.name}: no labelled initial images; every initial label failed "
            "— see nft-fw status and the failed labels' errors"
        )
    images, chunks = in_order(images, chunks)
    if previous is None or not spec.training.warm_start:
        ensemble = fresh_ensemble(prepared, images)
        config_iteration = 0 if previous is None else config_iteration
    else:
        ensemble = previous
    if ensemble.baseline != spec.model.baseline:
        raise ValueError(
            f"campaign {spec.name}: the model to continue from has baseline "
            f"{ensemble.baseline!r}, model.baseline is {spec.model.baseline!r}; a model "
            "continues only with its own baseline (start a new campaign to change it)"
        )
    t0 = time.perf_counter()
    feats = features(chunks, ensemble.spec, ensemble.baseline)
    arrays = tr.image_arrays(residual_images(images, ensemble.baseline), ensemble.spec)
    t_feat = time.perf_counter() - t0
    ensemble, metrics = tr.train(ensemble, arrays, feats, spec.train_config(config_iteration))
    return Fit(ensemble, metrics, t_feat)


@dataclasses.dataclass
class Assessment:
    """Predictions on the target: member forces (M, n, 3) eV/Å, δ (n,) eV/Å, and figures."""

    forces: np.ndarray
    delta: np.ndarray
    figures: dict[str, float]

    @property
    def mean_forces(self) -> np.ndarray:
        """The ensemble mean's forces (n, 3) eV/Å."""
        return self.forces.mean(axis=0)


def assess(ensemble: mdl.Ensemble, target: Atoms, true_forces: np.ndarray | None) -> Assessment:
    """δ on the target and, when the parent's forces are given, the true errors:
    MAE / max of |F_ML − F_parent| (eV/Å), the fraction of atoms with residual ≤ δ_i and
    the Spearman rank correlation of residual and δ."""
    t0 = time.perf_counter()
    _, forces = ensemble.predict(target)
    delta = unc.atomic(forces)
    figures = {
        "structure_uncertainty": unc.structure(delta),
        "mean_uncertainty": float(delta.mean()),
        "predict_seconds": time.perf_counter() - t0,
    }
    if true_forces is not None:
        figures.update(error_figures(forces.mean(axis=0), true_forces, delta))
    return Assessment(forces=forces, delta=delta, figures=figures)


def error_figures(
    predicted: np.ndarray, true_forces: np.ndarray, delta: np.ndarray | None = None
) -> dict[str, float]:
    from scipy.stats import spearmanr

    residual = np.linalg.norm(np.asarray(predicted) - np.asarray(true_forces), axis=1)
    out = {"true_force_mae": float(residual.mean()), "true_force_max": float(residual.max())}
    if delta is not None:
        out["fraction_within_delta"] = float(np.mean(residual <= delta))
        out["rank_correlation"] = float(spearmanr(residual, delta)[0])
    return out


def calibrate_record(
    record: dict[str, Any], result: Assessment, true_forces: np.ndarray | None
) -> None:
    """Add ``calibrated_structure_uncertainty`` (eV/Å) where the record has a calibration,
    and with the parent's forces on the target, ``fraction_within_calibrated_delta``."""
    if "calibration_scale" not in record:
        return
    scale = float(record["calibration_scale"])
    record["calibrated_structure_uncertainty"] = scale * record["structure_uncertainty"]
    if true_forces is not None:
        residual = np.linalg.norm(result.mean_forces - true_forces, axis=1)
        record["fraction_within_calibrated_delta"] = float(
            np.mean(residual <= scale * result.delta)
        )


def threshold_values(history: Sequence[Mapping[str, Any]], spec: CampaignSpec) -> list[float]:
    """What the threshold is compared with at each iteration: the structure uncertainty, or
    with ``threshold_on: calibrated_delta`` its calibrated value where a calibration exists."""
    if spec.nft.threshold_on == "calibrated_delta":
        return [
            float(r.get("calibrated_structure_uncertainty", r["structure_uncertainty"]))
            for r in history
        ]
    return [float(r["structure_uncertainty"]) for r in history]


def selection_features(
    spec: CampaignSpec, ensemble: mdl.Ensemble, target: Atoms
) -> np.ndarray | None:
    """The descriptors of every target atom when the campaign's centre selection needs them
    (``nft.selection: diverse``), else None."""
    if spec.nft.selection != "diverse":
        return None
    return desc.features(target, ensemble.spec)


def out_of_sample(
    predicted: np.ndarray,
    delta: np.ndarray,
    centres: Sequence[int],
    central_forces: Sequence[np.ndarray],
) -> dict[str, Any]:
    """The previous model's error on the chunks it chose, before it trains on them: an
    honest test set that costs nothing (every new chunk is labelled before it is trained on).

    ``predicted`` (n, 3) and ``delta`` (n,) are the previous model's mean forces and δ on the
    target; the chunk radius covers the model's force locality (≥ 2·R_c), so its force on a
    chunk's centre equals its force on that atom of the target. Returns ``oos_n``, the MAE,
    max and RMS of |F_parent,centre − F_ML,centre| (eV/Å), ``oos_fraction_within_delta``, and
    the points themselves (``oos_errors``, ``oos_deltas``, eV/Å) for the calibration of δ.
    The centres are the most uncertain atoms, so expect these to exceed the target-wide error.
    """
    if not len(centres):
        return {}
    idx = np.asarray(centres, dtype=int)
    err = np.linalg.norm(np.asarray(central_forces, dtype=float) - predicted[idx], axis=1)
    return {
        "oos_n": len(idx),
        "oos_mae": float(err.mean()),
        "oos_max": float(err.max()),
        "oos_rms": float(np.sqrt(np.mean(err**2))),
        "oos_fraction_within_delta": float(np.mean(err <= delta[idx])),
        "oos_errors": [float(e) for e in err],
        "oos_deltas": [float(x) for x in delta[idx]],
    }


def chunk_out_of_sample(
    ensemble: mdl.Ensemble, chunks: Sequence[Atoms], central_forces: Sequence[np.ndarray]
) -> dict[str, Any]:
    """:func:`out_of_sample` for chunks cut from structures the model was not assessed on
    (relaxation frames): the model's force and δ on each chunk's centre (atom 0), which equal
    its values in the frame the chunk was cut from, against the parent's."""
    if not len(chunks):
        return {}
    predicted = np.zeros((len(chunks), 3))
    delta = np.zeros(len(chunks))
    for j, atoms in enumerate(chunks):
        _, forces = ensemble.predict(atoms)
        predicted[j] = forces[:, 0].mean(axis=0)
        delta[j] = unc.atomic(forces[:, :1])[0]
    return out_of_sample(predicted, delta, list(range(len(chunks))), central_forces)


def request_atoms(request: ChunkRequest, source: Atoms | None) -> chunk_mod.Chunk:
    """The chunk a request names, cut from ``source`` (the target for NFT; the searched
    frame ``request.frame`` for relax), or from the prior chunk it was given (around its atom
    0, recorded at the original centre)."""
    if request.given is not None:
        chunk = chunk_mod.cut(request.given, 0, request.radius)
        return dataclasses.replace(chunk, centre=request.centre)
    assert source is not None
    return chunk_mod.cut(source, request.centre, request.radius)


def _errors(predicted: np.ndarray, reference: np.ndarray) -> tuple[float, float]:
    residual = np.linalg.norm(np.asarray(predicted) - np.asarray(reference), axis=1)
    return float(residual.mean()), float(residual.max())


def validate_relaxation(
    prepared: Prepared, trajectory: Trajectory, start_forces: np.ndarray | None
) -> dict[str, float]:
    """True-force errors at the start and the end of a relaxation and the parent's own energy
    and largest force on the relaxed structure (when validation.true_forces is on)."""
    if not prepared.spec.validation.true_forces:
        return {}
    if start_forces is None:
        start_forces = prepared.parent.label(trajectory.frames[0])[1]
    energy, end_forces = prepared.parent.label(trajectory.final)
    start_mae, start_max = _errors(trajectory.forces[0], start_forces)
    end_mae, end_max = _errors(trajectory.forces[-1], end_forces)
    return {
        "start_true_force_mae": start_mae,
        "start_true_force_max": start_max,
        "end_true_force_mae": end_mae,
        "end_true_force_max": end_max,
        "end_parent_energy": float(energy),
        "end_parent_fmax": float(np.linalg.norm(end_forces, axis=1).max()),
    }


def trajectory_figures(trajectory: Trajectory) -> dict[str, Any]:
    return {
        "steps": [dataclasses.asdict(s) for s in trajectory.steps],
        "n_steps": len(trajectory.steps),
        "converged": trajectory.converged,
        "structure_uncertainty": trajectory.max_uncertainty,
        "start_max_uncertainty": trajectory.steps[0].max_uncertainty,
        "final_max_uncertainty": trajectory.steps[-1].max_uncertainty,
        "mean_uncertainty": trajectory.steps[-1].mean_uncertainty,
        "final_fmax": trajectory.steps[-1].fmax,
        **({"collapsed": trajectory.collapsed} if trajectory.collapsed else {}),
    }
