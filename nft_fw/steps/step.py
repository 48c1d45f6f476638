"""Each phase of a campaign once, as a function of data: the NFT iteration, the relax
round, the transfer and the MD segment.

:func:`nft_step` is the NFT iteration of Zeng, Chen, Peterson, J. Chem. Phys. 156, 064104
(2022), Sec. IV: train on every label so far → predict the target and δ → record →
decide → the next chunks to label. :func:`relax_step` is a relaxation round (Sec. V C):
retrain (from round 1 on) → relax the target (or resume from the frontier) → record →
decide → chunks from the trajectory (or the prior labels' chunks of the next round).
:func:`transfer_step` relaxes a larger target with the kept model (Sec. V D) and flags it
when δ says it left the data. :func:`md_step` is an MD segment: retrain on the last
pause's chunks → run from the saved state until the length or the first step above the
threshold → record → the chunks of the pause. Each takes plain inputs (labels, the
previous model, the records before, the campaign) and returns plain outputs (the record,
the model, the decision, label requests); they read and write nothing else. Their two
runners add only I/O:

* :mod:`nft_fw.runners.local` (``run_locally``, ``relax_locally``, ``transfer_locally``,
  ``md_locally``) keeps everything in memory and labels requests in-process;
* the Fireworks (:mod:`nft_fw.firetasks.iteration`, :mod:`nft_fw.firetasks.relax`,
  :mod:`nft_fw.firetasks.md`) load the inputs from the database, call the step, store its
  outputs and hand the requests to FireWorks.

The order labels arrive in never matters: the step sorts images by their hash and chunks by
(iteration, centre, hash) before training, so a campaign gives the same history in one
process, with one worker or with many.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import time
from collections.abc import Callable, Collection, Mapping, Sequence
from typing import Any, Protocol

import numpy as np
from ase import Atoms

from nft_fw.labels import label as labeldoc
from nft_fw.labels import prior as prior_mod
from nft_fw.labels.label import ChunkLabel
from nft_fw.labels.phase import Phase
from nft_fw.potential import baseline as bl
from nft_fw.potential import calibration
from nft_fw.potential import descriptors as desc
from nft_fw.potential import model as mdl
from nft_fw.potential import training as tr
from nft_fw.potential import uncertainty as unc
from nft_fw.potential.calculator import EnsembleCalculator
from nft_fw.spec.campaign import CampaignSpec, Prepared
from nft_fw.steps import decision
from nft_fw.steps import md as md_mod
from nft_fw.steps.kept import kept_iteration
from nft_fw.steps.md import MDResume
from nft_fw.steps.relax import Trajectory, first_above, relax, search_frames, trajectory_chunks
from nft_fw.structures import chunks as chunk_mod
from nft_fw.structures import initial as init_mod

# ----------------------------------------------------------------------------- set-up


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


# ----------------------------------------------------------------------------- labels


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


# ----------------------------------------------------------------------------- training


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


# ----------------------------------------------------------------------------- assessment


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


# ----------------------------------------------------------------------------- the NFT step


@dataclasses.dataclass
class Prediction:
    """A model's ensemble-mean forces (n, 3) eV/Å and δ (n,) eV/Å on the target."""

    forces: np.ndarray
    delta: np.ndarray


@dataclasses.dataclass
class NFTInputs:
    """What NFT iteration ``iteration`` needs.

    ``images``: the labelled initial images; ``chunks``: every chunk label so far (this
    iteration's new ones included); ``previous``: the model of iteration − 1 (at iteration 0:
    None, or the model a follow-up campaign inherits); ``history``: the records of the
    iterations before; ``previous_prediction``: iteration − 1's forces and δ on the target
    (for the out-of-sample errors of the new chunks); ``true_forces``: the parent's forces on
    the whole target (n, 3) eV/Å, for validation only; ``failed_centres``: target atoms
    whose chunk the parent could not label (not offered again); ``features``: where chunk
    features come from (a cache)."""

    prepared: Prepared
    iteration: int
    images: Sequence[tr.Image]
    chunks: Sequence[ChunkLabel]
    previous: mdl.Ensemble | None = None
    history: Sequence[Mapping[str, Any]] = ()
    previous_prediction: Prediction | None = None
    true_forces: np.ndarray | None = None
    failed_centres: Collection[int] = ()
    features: FeatureSource = chunk_features


@dataclasses.dataclass
class NFTOutcome:
    """The iteration's ``record`` (plain JSON values), its ``ensemble``, the predictions on
    the target (``assessment``), the ``decision``, and the chunks it asks for next."""

    record: dict[str, Any]
    ensemble: mdl.Ensemble
    assessment: Assessment
    decision: decision.Continue | decision.Stop
    requests: list[ChunkRequest]


def nft_step(inputs: NFTInputs) -> NFTOutcome:
    """One NFT iteration: train on every label, predict the target and δ, record, decide,
    and name the next chunks (around the most uncertain atoms not yet chunked)."""
    prepared, k = inputs.prepared, inputs.iteration
    spec = prepared.spec
    config_iteration = 0 if inputs.previous is None else max(k, 1)
    trained = fit(
        prepared, inputs.images, inputs.chunks, inputs.previous, config_iteration,
        inputs.features,
    )  # fmt: skip
    ensemble, metrics = trained.ensemble, trained.metrics
    result = assess(ensemble, prepared.target, inputs.true_forces)
    nft_chunks = [c for c in inputs.chunks if c.phase == Phase.NFT]
    new = sorted((c for c in nft_chunks if c.iteration == k), key=lambda c: (c.centre, c.hash))
    oos: dict[str, Any] = {}
    if inputs.previous_prediction is not None:
        oos = out_of_sample(
            inputs.previous_prediction.forces,
            inputs.previous_prediction.delta,
            [c.centre for c in new],
            [c.central_force for c in new],
        )
    history = list(inputs.history)
    record: dict[str, Any] = {
        "campaign": spec.name,
        "phase": Phase.NFT,
        "iteration": k,
        "n_labels": len(inputs.chunks) + len(inputs.images),
        "n_images": len(inputs.images),
        "n_chunks": len(inputs.chunks),
        "new_chunks": len(new),
        **result.figures,
        **oos,
        "training": metrics,
        "timings": {
            "features_s": trained.features_seconds,
            "train_s": metrics["seconds"],
            "predict_s": result.figures["predict_seconds"],
            "label_s": float(sum(c.seconds for c in new)),
        },
    }
    record.update(calibration.figures(history, record, spec.nft.calibration_coverage))
    calibrate_record(record, result, inputs.true_forces)
    best = kept_iteration([*history, record], spec)
    record["best_iteration"] = best
    record["best_structure_uncertainty"] = [*history, record][best]["structure_uncertainty"]
    estimates = decision.estimated_errors([*history, record])
    if np.isfinite(estimates[-1]):
        record["estimated_error"] = estimates[-1]
    chunked = {c.centre for c in nft_chunks} | {int(c) for c in inputs.failed_centres}
    step = decision.decide(
        threshold_values([*history, record], spec),
        result.delta,
        chunked,
        k=spec.nft.chunks_per_iteration,
        threshold=spec.nft.threshold,
        patience=spec.nft.patience,
        max_iterations=spec.nft.max_iterations,
        tolerance=spec.nft.best_tolerance,
        selection=spec.nft.selection,
        features=selection_features(spec, ensemble, prepared.target),
        measures=decision.progress([*history, record], spec.nft.progress_measure),
        min_gain=spec.nft.min_gain,
        target_error=spec.nft.target_error,
        estimates=estimates,
    )
    requests: list[ChunkRequest] = []
    if isinstance(step, decision.Continue):
        planned = prior_mod.planned_centres(prepared.prior, prepared.target, k + 1)
        if prepared.prior is not None:
            record["next_from_prior"] = len(planned)
        if planned:  # the prior labels' chunks of the next iteration, before new ones
            requests = [ChunkRequest(centre=c, radius=r, iteration=k + 1) for c, r in planned]
        else:
            requests = [
                ChunkRequest(centre=int(c), radius=prepared.chunk_radius_A, iteration=k + 1)
                for c in step.centres
            ]
    return NFTOutcome(record, ensemble, result, step, requests)


# ----------------------------------------------------------------------------- the relax step


@dataclasses.dataclass
class RelaxInputs:
    """What relax round ``number`` needs.

    ``model``: round 0 relaxes with the NFT phase's kept model, round r > 0 retrains from
    round r − 1's; ``model_from``: where ``model`` came from (recorded); ``images`` and
    ``chunks``: every label so far (this round's new trajectory chunks included); ``history``:
    the NFT records; ``rounds``: the records of the rounds before; ``true_start_forces``:
    the parent's forces on the target (validation only; computed when missing and validation
    is on); ``known``: whether a chunk hash is labelled or failed already (not offered
    again)."""

    prepared: Prepared
    number: int
    model: mdl.Ensemble
    model_from: dict[str, Any]
    images: Sequence[tr.Image]
    chunks: Sequence[ChunkLabel]
    history: Sequence[Mapping[str, Any]] = ()
    rounds: Sequence[Mapping[str, Any]] = ()
    true_start_forces: np.ndarray | None = None
    known: Callable[[str], bool] = lambda _hash: False
    features: FeatureSource = chunk_features
    start: Atoms | None = None
    started_from: dict[str, Any] | None = None


def relax_start(
    spec: CampaignSpec, previous: Mapping[str, Any] | None, frames: Sequence[Atoms]
) -> tuple[Atoms | None, dict[str, Any] | None]:
    """Where a relax round starts, from the round before's record ``previous`` and its
    stored frames (:func:`search_frames`' choice, the last one where δ first exceeded
    ``relax.search_until`` when it did): with ``relax.resume: frontier`` that last frame
    when the round before crossed the level, else the frame that round started from;
    otherwise (and for round 0) the target (None). Returns the structure and what to
    record."""
    rs = spec.relax_settings
    if rs.resume != "frontier" or previous is None:
        return None, None
    frontier = previous.get("stopped_above")
    until = previous.get("searched_until_step")
    if frontier is None and until is not None and until < previous["n_steps"] - 1:
        # a round that relaxed on past the level (relax.resume was start, then amended):
        # its stored frames end at the first step above it
        frontier = until
    if frontier is not None:
        return frames[-1].copy(), {"round": int(previous["iteration"]), "step": int(frontier)}
    return frames[0].copy(), previous.get("started_from")


@dataclasses.dataclass
class RelaxOutcome:
    """The round's ``record``, its ``ensemble`` and ``trajectory``, the frames searched for
    chunks (``searched``: indices into the trajectory; requests' ``frame`` indexes this
    list), and either ``stop`` (retraining ends) or the chunks it asks for."""

    record: dict[str, Any]
    ensemble: mdl.Ensemble
    trajectory: Trajectory
    searched: list[int]
    stop: decision.Stop | None
    requests: list[ChunkRequest]


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
    }


def _relax_model(
    inputs: RelaxInputs, new: Sequence[ChunkLabel]
) -> tuple[mdl.Ensemble, dict[str, Any] | None, dict[str, Any], dict[str, Any]]:
    """The model a relax round relaxes with (ensemble, training metrics, the previous
    model's error on the new chunks, where it came from): round 0 the one it was given,
    later rounds retrained from it on every label."""
    number = inputs.number
    if number == 0:
        return inputs.model, None, {}, dict(inputs.model_from)
    oos = chunk_out_of_sample(inputs.model, [c.atoms for c in new], [c.central_force for c in new])
    trained = fit(
        inputs.prepared, inputs.images, inputs.chunks, inputs.model, max(number, 1),
        inputs.features,
    )  # fmt: skip
    return trained.ensemble, trained.metrics, oos, {"phase": Phase.RELAX, "iteration": number}


def _relax_requests(
    inputs: RelaxInputs,
    planned: Sequence[prior_mod.PriorLabel],
    trajectory: Trajectory,
    searched: list[int],
    ensemble: mdl.Ensemble,
) -> list[ChunkRequest]:
    """The chunks the next round trains on: the prior labels' chunks of that round when
    the file holds them, else chunks around uncertain atoms of the searched frames."""
    prepared, number = inputs.prepared, inputs.number
    if planned:
        return [
            ChunkRequest(
                centre=int(lb.centre if lb.centre is not None else 0),
                radius=float(lb.radius or prepared.chunk_radius_A),
                iteration=number + 1,
                phase=Phase.RELAX,
                given=lb.structure(),
            )
            for lb in planned
        ]
    rs = prepared.spec.relax_settings
    chosen = trajectory_chunks(
        trajectory,
        searched,
        prepared.spec.relax_threshold,
        ensemble.spec,
        rs.chunks_per_round,
        rs.selection,
        prepared.chunk_radius_A,
        inputs.known,
        include_start=inputs.start is not None,
    )
    position = {f: j for j, f in enumerate(searched)}
    return [
        ChunkRequest(
            centre=chunk.centre,
            radius=prepared.chunk_radius_A,
            iteration=number + 1,
            phase=Phase.RELAX,
            frame=position[f],
        )
        for f, chunk in chosen
    ]


def relax_step(inputs: RelaxInputs) -> RelaxOutcome:
    """One relax round: (from round 1 on) retrain on every label starting from the previous
    round's model, relax the target, record, and while the largest δ along the trajectory
    is above the threshold and still falling, name chunks around uncertain atoms of its
    frames after the start."""
    prepared, number = inputs.prepared, inputs.number
    spec = prepared.spec
    rs = spec.relax_settings
    threshold = spec.relax_threshold
    relax_chunks = [c for c in inputs.chunks if c.phase == Phase.RELAX]
    new = sorted(
        (c for c in relax_chunks if c.iteration == number), key=lambda c: (c.centre, c.hash)
    )
    ensemble, metrics, oos, model_from = _relax_model(inputs, new)
    t_relax = time.perf_counter()
    frontier = rs.resume == "frontier"
    trajectory = relax(
        prepared.target if inputs.start is None else inputs.start,
        EnsembleCalculator(ensemble),
        rs.fmax,
        rs.max_steps,
        rs.optimizer,
        stop_above=rs.search_until if frontier else None,
    )
    relax_s = time.perf_counter() - t_relax
    # the stored parent forces are the target's: a resumed round's start is labelled anew
    start_forces = inputs.true_start_forces if inputs.start is None else None
    validation = validate_relaxation(prepared, trajectory, start_forces)
    # with relax.search_until, chunks come from where the model first leaves its data, not
    # from the rest of a trajectory that may have run away from there
    # (a resumed relaxation moves at least one step: its start may lie above the level)
    until = (
        None
        if rs.search_until is None
        else first_above(trajectory, rs.search_until, after=1 if frontier else 0)
    )
    searched = search_frames(len(trajectory.frames), rs.max_frames, until)
    rounds = list(inputs.rounds)
    uncertainties = [float(r["structure_uncertainty"]) for r in rounds]
    uncertainties.append(trajectory.max_uncertainty)
    best = decision.best_iteration(uncertainties, spec.nft.best_tolerance)
    record: dict[str, Any] = {
        "campaign": spec.name,
        "phase": Phase.RELAX,
        "iteration": number,
        "n_labels": len(inputs.images) + len(inputs.chunks),
        "n_images": len(inputs.images),
        "n_chunks": len(inputs.chunks),
        "relax_chunks": len(relax_chunks),
        "new_chunks": len(new),
        **trajectory_figures(trajectory),
        **validation,
        **oos,
        "threshold": threshold,
        "best_iteration": best,
        "best_structure_uncertainty": uncertainties[best],
        "model_from": model_from,
        "training": metrics,
        "timings": {"train_s": (metrics or {}).get("seconds", 0.0), "relax_s": relax_s},
        "frame_steps": searched,
    }
    if rs.search_until is not None:
        record["searched_until_step"] = searched[-1]
    if frontier:
        record["started_from"] = inputs.started_from
        record["stopped_above"] = until
    record.update(
        calibration.figures([*inputs.history, *rounds], record, spec.nft.calibration_coverage)
    )
    stop = decision.relax_stop(
        uncertainties,
        threshold=threshold,
        patience=rs.patience,
        max_rounds=rs.max_rounds if rs.retrain else 0,
        tolerance=spec.nft.best_tolerance,
    )
    requests: list[ChunkRequest] = []
    planned = prior_mod.planned_relax_chunks(prepared.prior, number + 1)
    if prepared.prior is not None:
        record["next_from_prior"] = len(planned) if stop is None else 0
    if stop is None:
        requests = _relax_requests(inputs, planned, trajectory, searched, ensemble)
        if not requests:
            stop = decision.Stop(
                "exhausted", "no unlabelled trajectory atom above the threshold", best
            )
    return RelaxOutcome(record, ensemble, trajectory, searched, stop, requests)


# ----------------------------------------------------------------------------- the transfer step

FLAG_RATIO = 2.0  # a transfer target whose δ is this many times the trained target's is flagged


@dataclasses.dataclass
class TransferInputs:
    """Transfer target ``index`` (``name``, its ``atoms``), the ``model`` the phases before
    MD kept and that model's record ``source`` (:func:`kept_record`)."""

    prepared: Prepared
    index: int
    name: str
    atoms: Atoms
    model: mdl.Ensemble
    source: Mapping[str, Any]


@dataclasses.dataclass
class TransferOutcome:
    record: dict[str, Any]
    trajectory: Trajectory


def transfer_step(inputs: TransferInputs) -> TransferOutcome:
    """Relax a transfer target with the kept model, without new data (Sec. V D of Zeng, Chen,
    Peterson, J. Chem. Phys. 156, 064104 (2022)); record δ along the way and whether it is
    flagged: its largest δ ≥ FLAG_RATIO × the trained target's, at the start or at the
    relaxed end (a rattled start is unfamiliar to any model, a shape stays so)."""
    spec = inputs.prepared.spec
    rs = spec.relax_settings
    t0 = time.perf_counter()
    trajectory = relax(
        inputs.atoms, EnsembleCalculator(inputs.model), rs.fmax, rs.max_steps, rs.optimizer
    )
    relax_s = time.perf_counter() - t0
    reference = float(inputs.source["structure_uncertainty"])
    reference_end = float(inputs.source.get("final_max_uncertainty", reference))
    figures = trajectory_figures(trajectory)
    record: dict[str, Any] = {
        "campaign": spec.name,
        "phase": Phase.TRANSFER,
        "iteration": inputs.index,
        "name": inputs.name,
        "n_atoms": len(inputs.atoms),
        **figures,
        **validate_relaxation(inputs.prepared, trajectory, None),
        "trained_uncertainty": reference,
        "uncertainty_ratio": figures["structure_uncertainty"] / reference,
        "flagged": bool(figures["structure_uncertainty"] >= FLAG_RATIO * reference),
        "trained_end_uncertainty": reference_end,
        "end_uncertainty_ratio": figures["final_max_uncertainty"] / reference_end,
        "flagged_at_end": bool(figures["final_max_uncertainty"] >= FLAG_RATIO * reference_end),
        "model_from": {
            "phase": inputs.source["phase"],
            "iteration": inputs.source["iteration"],
        },
        "timings": {"relax_s": relax_s},
    }
    return TransferOutcome(record, trajectory)


def request_atoms(request: ChunkRequest, source: Atoms | None) -> chunk_mod.Chunk:
    """The chunk a request names, cut from ``source`` (the target for NFT; the searched
    frame ``request.frame`` for relax), or from the prior chunk it was given (around its atom
    0, recorded at the original centre)."""
    if request.given is not None:
        chunk = chunk_mod.cut(request.given, 0, request.radius)
        return dataclasses.replace(chunk, centre=request.centre)
    assert source is not None
    return chunk_mod.cut(source, request.centre, request.radius)


# ----------------------------------------------------------------------------- the MD step


@dataclasses.dataclass
class MDInputs:
    """What MD segment ``number`` needs.

    ``model``: segment 0 runs with the model the phases before kept, segment s > 0 retrains
    from segment s − 1's; ``start``: the state to continue from (segment 0: step 0 on the
    MD structure; s > 0: the state segment s − 1 paused in); ``images`` and ``chunks``: every
    label so far; ``history``, ``rounds``, ``segments``: the NFT, relax and earlier MD
    records; ``resume``: a checkpoint of this segment (a worker that was killed), continued
    instead of retrained; ``checkpoint``: called with the segment's state every
    md.checkpoint_every steps (and right after training); ``true_forces``: the parent on a
    whole frame, for md.true_force_check_every."""

    prepared: Prepared
    number: int
    model: mdl.Ensemble
    model_from: dict[str, Any]
    start: md_mod.MDState
    images: Sequence[tr.Image]
    chunks: Sequence[ChunkLabel]
    history: Sequence[Mapping[str, Any]] = ()
    rounds: Sequence[Mapping[str, Any]] = ()
    segments: Sequence[Mapping[str, Any]] = ()
    resume: MDResume | None = None
    checkpoint: Callable[[MDResume], None] | None = None
    known: Callable[[str], bool] = lambda _hash: False
    features: FeatureSource = chunk_features
    true_forces: Callable[[Atoms], np.ndarray] | None = None


@dataclasses.dataclass
class MDOutcome:
    """The segment's ``record``, ``ensemble`` and ``segment``; ``requests``: the chunks of
    the pause (frame indexes ``segment.frames``); ``finished``: the phase ends here (the run
    reached its length, or δ exceeded the threshold with no pause left and
    ``md.out_of_pauses`` is stop: ``record["stopped"]``)."""

    record: dict[str, Any]
    ensemble: mdl.Ensemble
    segment: md_mod.Segment
    requests: list[ChunkRequest]
    finished: bool


@dataclasses.dataclass
class _MDModel:
    """The model an MD segment runs with and where it came from: resumed from a checkpoint,
    retrained on the segment's new chunks, or the previous segment's unchanged."""

    ensemble: mdl.Ensemble
    metrics: dict[str, Any] | None
    oos: dict[str, Any]
    model_from: dict[str, Any]
    train_s: float


def _md_model(inputs: MDInputs, new: Sequence[ChunkLabel]) -> _MDModel:
    """Resume the checkpointed model, or (from segment 1 on, with new chunks) score the
    previous model on them and retrain from it."""
    number = inputs.number
    t_train = time.perf_counter()
    if inputs.resume is not None:
        metrics = inputs.resume.metrics
        model_from = (
            {"phase": Phase.MD, "iteration": number} if metrics else dict(inputs.model_from)
        )
        return _MDModel(inputs.resume.ensemble, metrics, inputs.resume.oos, model_from,
                        time.perf_counter() - t_train)  # fmt: skip
    ensemble, metrics, oos, model_from = inputs.model, None, {}, dict(inputs.model_from)
    if number > 0 and new:
        oos = chunk_out_of_sample(
            inputs.model, [c.atoms for c in new], [c.central_force for c in new]
        )
        trained = fit(
            inputs.prepared, inputs.images, inputs.chunks, inputs.model, number, inputs.features
        )
        ensemble, metrics = trained.ensemble, trained.metrics
        model_from = {"phase": Phase.MD, "iteration": number}
    return _MDModel(ensemble, metrics, oos, model_from, time.perf_counter() - t_train)


def _md_record(
    inputs: MDInputs,
    model: _MDModel,
    segment: md_mod.Segment,
    new_chunks: int,
    *,
    scale: float,
    cal: dict[str, Any],
    watched: bool,
    md_s: float,
    resumed_from: int | None,
) -> dict[str, Any]:
    """The segment's record: where it started and ended, why it ended, δ and temperature
    along it, the model it ran with and the true-force checks."""
    prepared, number = inputs.prepared, inputs.number
    spec = prepared.spec
    m = spec.md_spec
    threshold, total = spec.md_threshold, spec.md_total_steps
    may_pause = number < m.max_pauses
    log = segment.log
    n_atoms = len(inputs.start.atoms)
    steps = log["step"]
    stopped = segment.paused and not may_pause  # above the threshold, no pause left
    paused = segment.paused and may_pause
    # the steps this segment ran with δ (as watched: calibrated) above the threshold; its
    # first row is the state it started from, counted by the segment before
    above = int(np.count_nonzero(np.asarray(log["max_delta"][1:]) > threshold))
    reached = int(steps[-1]) >= total
    record: dict[str, Any] = {
        "campaign": spec.name,
        "phase": Phase.MD,
        "iteration": number,
        "n_atoms": n_atoms,
        "n_labels": len(inputs.images) + len(inputs.chunks),
        "n_images": len(inputs.images),
        "n_chunks": len(inputs.chunks),
        "md_chunks": sum(1 for c in inputs.chunks if c.phase == Phase.MD),
        "new_chunks": new_chunks,
        "integrator": m.integrator,
        "temperature_K": m.temperature_K,
        "timestep_fs": m.timestep_fs,
        "start_step": int(steps[0]),
        "end_step": int(steps[-1]),
        "total_steps": total,
        "start_ps": steps[0] * m.timestep_fs / 1000.0,
        "end_ps": steps[-1] * m.timestep_fs / 1000.0,
        "paused": paused,
        "finished": reached,
        "stopped": stopped,
        "end_reason": "pause" if paused else "out_of_pauses" if stopped else "length",
        "watched": watched,
        "steps_above_threshold": above,
        "pauses_left": max(0, m.max_pauses - number - int(paused)),
        "threshold": threshold,
        "candidate_threshold": spec.md_candidate_threshold,
        "delta_scale": scale,
        "structure_uncertainty": segment.max_uncertainty,
        "start_max_uncertainty": float(log["max_delta"][0]),
        "final_max_uncertainty": float(log["max_delta"][-1]),
        "mean_uncertainty": float(np.mean(log["mean_delta"])),
        "mean_temperature_K": float(np.mean(log["temperature_K"][1:] or log["temperature_K"])),
        "mean_potential_energy_per_atom": float(np.mean(log["potential_energy"]) / n_atoms),
        **model.oos,
        **cal,
        "model_from": model.model_from,
        "training": model.metrics,
        "timings": {
            "train_s": (model.metrics or {}).get("seconds", 0.0)
            if inputs.resume
            else model.train_s,
            "md_s": md_s,
            "ms_per_step": 1000.0 * md_s / max(1, len(steps) - 1),
        },
        **segment.to_dict(),
    }
    if resumed_from is not None:
        record["resumed_from_step"] = resumed_from
    if segment.checks:
        err = np.asarray(segment.checks["max"])
        record["true_force_max_error"] = float(err.max())
        record["true_force_mae_mean"] = float(np.mean(segment.checks["mae"]))
        record["fraction_checks_above_threshold"] = float(np.mean(err > threshold))
    if stopped:
        record["stop_step"] = int(steps[-1])
        record["stop_atom"] = int(log["max_atom"][-1])
    if paused:
        record["pause_step"] = int(steps[-1])
        record["pause_atom"] = int(log["max_atom"][-1])
    return record


def _pause_requests(
    inputs: MDInputs, ensemble: mdl.Ensemble, segment: md_mod.Segment
) -> list[ChunkRequest]:
    """The chunks a pause asks for: around uncertain atoms of the segment's frames (most
    uncertain and unlike each other, md.selection)."""
    prepared = inputs.prepared
    spec = prepared.spec
    m = spec.md_spec
    trajectory = Trajectory(
        steps=[],
        frames=segment.frames,
        deltas=[np.asarray(f.arrays[md_mod.DELTA_ARRAY]) for f in segment.frames],
        converged=False,
    )
    chosen = trajectory_chunks(
        trajectory,
        list(range(len(segment.frames))),
        spec.md_candidate_threshold,
        ensemble.spec,
        m.chunks_per_pause,
        m.selection,
        prepared.chunk_radius_A,
        inputs.known,
    )
    return [
        ChunkRequest(
            centre=chunk.centre,
            radius=prepared.chunk_radius_A,
            iteration=inputs.number + 1,
            phase=Phase.MD,
            frame=f,
        )
        for f, chunk in chosen
    ]


def md_step(inputs: MDInputs) -> MDOutcome:
    """One MD segment: (from segment 1 on, with new chunks) retrain on every label starting
    from the previous segment's model, continue the run from the saved state until its
    length or the first step whose largest δ (calibrated, when a calibration exists)
    exceeds the threshold, record, and at a pause name chunks around the uncertain atoms of
    the segment's frames (most uncertain and unlike each other). With no pause left, that
    step ends the phase (``stopped``), or with ``md.out_of_pauses: continue`` the run goes
    to its length unwatched and counts its steps above the threshold."""
    prepared, number = inputs.prepared, inputs.number
    spec = prepared.spec
    m = spec.md_spec
    new = sorted(
        (c for c in inputs.chunks if c.phase == Phase.MD and c.iteration == number),
        key=lambda c: (c.centre, c.hash),
    )
    model = _md_model(inputs, new)
    before = [*inputs.history, *inputs.rounds, *inputs.segments]
    coverage = spec.nft.calibration_coverage
    cal = calibration.figures(before, model.oos, coverage)
    # a pause adds a few points: the δ watched is calibrated on the latest MD_CALIBRATION_POINTS
    fitted = calibration.latest_points([*before, model.oos], coverage, MD_CALIBRATION_POINTS)
    scale = 1.0 if fitted is None else fitted
    may_pause = number < m.max_pauses
    # with no pause left δ is still watched unless md.out_of_pauses says to go on regardless
    watched = may_pause or m.out_of_pauses == "stop"

    def save(segment: md_mod.Segment) -> None:
        if inputs.checkpoint is not None:
            inputs.checkpoint(MDResume(model.ensemble, model.metrics, model.oos, segment))

    so_far = inputs.resume.segment if inputs.resume is not None else None
    state = so_far.state if so_far is not None else inputs.start
    # the run moves the saved segment on: where it resumed from is read now
    resumed_from = state.step if so_far is not None else None
    if so_far is None:
        so_far = md_mod.empty_segment(state)
        save(so_far)  # a worker killed from here on does not train again
        so_far = None
    t_md = time.perf_counter()
    segment = md_mod.run(
        state,
        EnsembleCalculator(model.ensemble),
        md_settings(spec),
        spec.md_total_steps,
        threshold=spec.md_threshold if watched else None,
        scale=scale,
        frame_every=m.frame_every,
        so_far=so_far,
        checkpoint=save,
        checkpoint_every=m.checkpoint_every,
        true_forces=inputs.true_forces if m.true_force_check_every else None,
        check_every=m.true_force_check_every or 0,
    )
    # the true-force checks (validation) are the parent's time, not the MD's
    md_s = time.perf_counter() - t_md - sum(segment.checks.get("seconds", []))
    record = _md_record(
        inputs, model, segment, len(new), scale=scale, cal=cal, watched=watched, md_s=md_s,
        resumed_from=resumed_from,
    )  # fmt: skip
    requests: list[ChunkRequest] = []
    if record["paused"]:
        requests = _pause_requests(inputs, model.ensemble, segment)
        record["requested_chunks"] = len(requests)
    return MDOutcome(
        record, model.ensemble, segment, requests, finished=record["finished"] or record["stopped"]
    )
