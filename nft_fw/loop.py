"""The NFT loop as plain functions, and :func:`run_locally` that runs it in-process.

The distributed service calls the same building blocks (initial set, label a
chunk, train, assess, decide) from FireWorks tasks; here they run one after the
other, for notebooks, tests and benchmarks.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from ase import Atoms

from nft_fw import calibration, decision
from nft_fw import chunks as chunk_mod
from nft_fw import descriptors as desc
from nft_fw import initial as init_mod
from nft_fw import model as mdl
from nft_fw import training as tr
from nft_fw import uncertainty as unc
from nft_fw.calculator import EnsembleCalculator
from nft_fw.campaign import CampaignSpec, ModelSpec, Prepared, load_campaign, prepare

log = logging.getLogger(__name__)


# ----------------------------------------------------------------------------- set-up


def descriptor_spec(model: ModelSpec, elements: Sequence[str]) -> desc.DescriptorSpec:
    return desc.DescriptorSpec.default(
        elements,
        cutoff=model.cutoff,
        n_radial=model.n_radial,
        g5_eta=tuple(model.angular_etas),
        g5_zeta=tuple(model.angular_zetas),
    )


def architecture(model: ModelSpec) -> mdl.Architecture:
    return mdl.Architecture(tuple(model.hidden_layers), model.ensemble_size, model.activation)


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
        cands, spec.initial.n_structures, descriptor_spec(spec.model, prepared.elements)
    )


def initial_images(prepared: Prepared) -> list[tr.Image]:
    """Labelled initial images: from ``initial.file`` or generated and labelled by the parent."""
    if prepared.initial_frames is not None:
        return init_mod.from_file_frames(prepared.initial_frames)
    return init_mod.label(initial_structures(prepared), prepared.parent.label)


def fresh_ensemble(prepared: Prepared, images: Sequence[tr.Image]) -> mdl.Ensemble:
    spec = prepared.spec
    return tr.make_ensemble(
        descriptor_spec(spec.model, prepared.elements),
        architecture(spec.model),
        images,
        unlabelled=[prepared.target],
        seed=spec.nft.seed,
    )


def train_config(spec: CampaignSpec, iteration: int) -> tr.TrainConfig:
    t = spec.training
    first = iteration == 0 or not t.warm_start
    return tr.TrainConfig(
        steps=t.initial_steps if first else t.steps_per_iteration,
        learning_rate=t.learning_rate,
        final_learning_rate=t.final_learning_rate,
        batches=t.batches_per_step,
        energy_weight=t.energy_weight,
        force_weight=t.force_weight,
        seed=spec.nft.seed + 1000 * iteration,
    )


# ----------------------------------------------------------------------------- labels


@dataclasses.dataclass
class ChunkLabel:
    """A labelled chunk: the parent's energy (eV) and forces (n, 3) eV/Å on ``atoms``;
    only ``forces[0]`` (the centre's) is trained on."""

    centre: int
    iteration: int
    hash: str
    radius: float
    atoms: Atoms
    energy: float
    forces: np.ndarray
    seconds: float

    @property
    def central_force(self) -> np.ndarray:
        return np.asarray(self.forces[0])


def cut_chunk(prepared: Prepared, centre: int, target: Atoms | None = None) -> chunk_mod.Chunk:
    """The chunk of the campaign's radius around atom ``centre`` of the target."""
    return chunk_mod.cut(
        prepared.target if target is None else target, centre, prepared.chunk_radius_A
    )


def label_chunk(prepared: Prepared, chunk: chunk_mod.Chunk, iteration: int) -> ChunkLabel:
    """Run the parent on a chunk."""
    centre = chunk.centre
    t0 = time.perf_counter()
    energy, forces = prepared.parent.label(chunk.atoms)
    return ChunkLabel(
        centre=centre,
        iteration=iteration,
        hash=chunk.hash,
        radius=chunk.radius,
        atoms=chunk.atoms,
        energy=energy,
        forces=forces,
        seconds=time.perf_counter() - t0,
    )


def chunk_features(
    labels: Sequence[ChunkLabel], spec: desc.DescriptorSpec
) -> list[tr.ChunkFeatures]:
    """The training data of labelled chunks (all in one descriptor pass)."""
    return tr.chunk_features_many([(lb.atoms, lb.central_force, lb.hash) for lb in labels], spec)


# ----------------------------------------------------------------------------- assessment


@dataclasses.dataclass
class Assessment:
    """Predictions on the target: member forces (M, n, 3) eV/Å, δ (n,) eV/Å, and figures."""

    forces: np.ndarray
    delta: np.ndarray
    figures: dict[str, float]


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


def kept_iteration(history: Sequence[Mapping[str, Any]], spec: CampaignSpec) -> int:
    """The iteration whose model the campaign keeps: the latest within ``nft.best_tolerance``
    of the lowest progress measure (:mod:`nft_fw.decision`)."""
    return decision.best_iteration(
        decision.progress(history, spec.nft.progress_measure), spec.nft.best_tolerance
    )


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
        residual = np.linalg.norm(result.forces.mean(axis=0) - true_forces, axis=1)
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


def calibration_meta(history: Sequence[Mapping[str, Any]], name: str) -> dict[str, Any]:
    """The calibration an exported model carries: the latest fitted on the campaign's
    out-of-sample errors (``meta.calibration`` of the model file), or nothing."""
    for r in reversed(history):
        if "calibration_scale" in r:
            cal = calibration.Calibration(
                scale=float(r["calibration_scale"]),
                coverage=float(r["calibration_coverage"]),
                n_points=int(r["calibration_n"]),
                source=f"campaign {name}, out-of-sample central forces up to "
                f"{r.get('phase', 'nft')} iteration {r['iteration']}",
            )
            return {"calibration": cal.to_dict()}
    return {}


def selection_features(
    spec: CampaignSpec, ensemble: mdl.Ensemble, target: Atoms
) -> np.ndarray | None:
    """The descriptors of every target atom when the campaign's centre selection needs them
    (``nft.selection: diverse``), else None."""
    if spec.nft.selection != "diverse":
        return None
    return desc.features(target, ensemble.spec)


def error_figures(
    predicted: np.ndarray, true_forces: np.ndarray, delta: np.ndarray | None = None
) -> dict[str, float]:
    residual = np.linalg.norm(np.asarray(predicted) - np.asarray(true_forces), axis=1)
    out = {"true_force_mae": float(residual.mean()), "true_force_max": float(residual.max())}
    if delta is not None:
        from scipy.stats import spearmanr

        out["fraction_within_delta"] = float(np.mean(residual <= delta))
        out["rank_correlation"] = float(spearmanr(residual, delta)[0])
    return out


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


# ----------------------------------------------------------------------------- the loop


@dataclasses.dataclass
class LocalResult:
    """What :func:`run_locally` returns. ``calculator`` holds the best iteration's model."""

    history: list[dict[str, Any]]
    calculator: EnsembleCalculator
    best_iteration: int
    stop: decision.Stop
    labels: list[ChunkLabel]
    prepared: Prepared
    images: list[tr.Image] = dataclasses.field(default_factory=list)
    features: list[tr.ChunkFeatures] = dataclasses.field(default_factory=list)


Progress = Callable[[dict[str, Any]], None]


def _rich_progress() -> Progress:
    from rich.console import Console

    console = Console(stderr=True, soft_wrap=True)

    def show(record: dict[str, Any]) -> None:
        text = (
            f"[bold]{record['campaign']}[/] iteration {record['iteration']:>2}: "
            f"chunks {record['n_chunks']:>4} (+{record['new_chunks']}), "
            f"δ max {record['structure_uncertainty']:.3f} mean {record['mean_uncertainty']:.3f} "
            f"eV/Å, loss {record['training']['loss']:.4g}, "
            f"train {record['training']['seconds']:.0f} s"
        )
        if "true_force_mae" in record:
            text += f", true MAE {record['true_force_mae']:.3f} max {record['true_force_max']:.3f}"
        if "calibration_scale" in record:
            text += f", calibrated δ = {record['calibration_scale']:.2f}·δ"
        console.print(text)

    return show


def run_locally(
    campaign: CampaignSpec | Mapping[str, Any] | str | Path,
    progress: bool | Progress = True,
    save_to: str | Path | None = None,
) -> LocalResult:
    """Run a whole NFT campaign in this process and return its history and best model.

    ``progress``: True shows one line per iteration on stderr; a callable receives each
    iteration record instead. ``save_to``: a directory where the best model is saved.
    """
    spec = campaign if isinstance(campaign, CampaignSpec) else load_campaign(campaign)
    prepared = prepare(spec)
    show: Progress | None = _rich_progress() if progress is True else (progress or None)
    target = prepared.target
    true_forces = prepared.parent.label(target)[1] if spec.validation.true_forces else None

    images = initial_images(prepared)
    ensemble = fresh_ensemble(prepared, images)
    image_arrays = tr.image_arrays(images, ensemble.spec)
    labels: list[ChunkLabel] = []
    features: list[tr.ChunkFeatures] = []
    seen: set[str] = set()
    history: list[dict[str, Any]] = []
    blobs: list[bytes] = []
    new: list[ChunkLabel] = []
    oos: dict[str, Any] = {}
    iteration = 0
    while True:
        start = (
            ensemble
            if (iteration == 0 or spec.training.warm_start)
            else fresh_ensemble(prepared, images)
        )
        ensemble, metrics = tr.train(start, image_arrays, features, train_config(spec, iteration))
        result = assess(ensemble, target, true_forces)
        record: dict[str, Any] = {
            "campaign": spec.name,
            "iteration": iteration,
            "n_chunks": len(labels),
            "new_chunks": len(new),
            "n_images": len(images),
            **result.figures,
            **oos,
            "training": metrics,
            "label_seconds": float(sum(lb.seconds for lb in new)),
        }
        record.update(calibration.figures(history, record, spec.nft.calibration_coverage))
        calibrate_record(record, result, true_forces)
        best = kept_iteration([*history, record], spec)
        blobs.append(ensemble.to_bytes())
        record["best_iteration"] = best
        history.append(record)
        log.info(
            "campaign %s iteration %d: %d chunks, δ max %.3f eV/Å",
            spec.name,
            iteration,
            len(labels),
            record["structure_uncertainty"],
        )
        if show is not None:
            show(record)
        step = decision.decide(
            threshold_values(history, spec),
            result.delta,
            {lb.centre for lb in labels},
            k=spec.nft.chunks_per_iteration,
            threshold=spec.nft.threshold,
            patience=spec.nft.patience,
            max_iterations=spec.nft.max_iterations,
            tolerance=spec.nft.best_tolerance,
            selection=spec.nft.selection,
            features=selection_features(spec, ensemble, target),
            measures=decision.progress(history, spec.nft.progress_measure),
            min_gain=spec.nft.min_gain,
        )
        if isinstance(step, decision.Stop):
            break
        iteration += 1
        new = []
        for centre in step.centres:
            chunk = cut_chunk(prepared, centre)
            if chunk.hash in seen:  # the same environment cut twice: label it once
                continue
            seen.add(chunk.hash)
            new.append(label_chunk(prepared, chunk, iteration))
        oos = out_of_sample(
            result.forces.mean(axis=0),
            result.delta,
            [lb.centre for lb in new],
            [lb.central_force for lb in new],
        )
        features.extend(chunk_features(new, ensemble.spec))
        labels.extend(new)

    best_model = mdl.Ensemble.from_bytes(blobs[step.best_iteration])
    best_model.meta.update(calibration_meta(history, spec.name))
    calc = EnsembleCalculator(best_model)
    if save_to is not None:
        calc.save(save_to)
    return LocalResult(
        history=history,
        calculator=calc,
        best_iteration=step.best_iteration,
        stop=step,
        labels=labels,
        prepared=prepared,
        images=images,
        features=features,
    )


@dataclasses.dataclass
class RelaxResult:
    """What :func:`relax_locally` returns: one record per relax round (round 0 = the NFT
    model), the trajectories, the kept round's calculator, why retraining stopped, and the
    chunks labelled from trajectories."""

    rounds: list[dict[str, Any]]
    trajectories: list[Any]
    calculator: EnsembleCalculator
    kept_round: int
    stop: decision.Stop
    labels: list[ChunkLabel]


def relax_locally(
    result: LocalResult, relax_spec: Any = None, progress: bool | Progress = True
) -> RelaxResult:
    """The relaxation phase in this process, after :func:`run_locally`: relax the target
    with the model, and while the trajectory's largest δ is above the threshold and still
    falling, label chunks cut from the trajectory (frames after the start), retrain (warm
    start) and relax again from the same start. ``relax_spec``: a RelaxSpec (default: the
    campaign's ``relax`` or its defaults)."""
    from nft_fw.campaign import RelaxSpec
    from nft_fw.relax import relax, search_frames, trajectory_chunks

    prepared = result.prepared
    spec = prepared.spec
    rs = relax_spec or spec.relax or RelaxSpec()
    threshold = rs.threshold or spec.nft.threshold
    show: Progress | None = _rich_progress_relax() if progress is True else (progress or None)
    ensemble = result.calculator.ensemble
    image_arrays = tr.image_arrays(result.images, ensemble.spec)
    features = list(result.features)
    seen = {lb.hash for lb in result.labels}
    labels: list[ChunkLabel] = []
    rounds: list[dict[str, Any]] = []
    trajectories = []
    blobs: list[bytes] = []
    oos: dict[str, Any] = {}
    number = 0
    while True:
        metrics = None
        if number > 0:
            cfg = train_config(spec, max(number, 1))
            ensemble, metrics = tr.train(ensemble, image_arrays, features, cfg)
        traj = relax(
            prepared.target, EnsembleCalculator(ensemble), rs.fmax, rs.max_steps, rs.optimizer
        )
        trajectories.append(traj)
        blobs.append(ensemble.to_bytes())
        record = {
            "campaign": spec.name,
            "phase": "relax",
            "iteration": number,
            "n_steps": len(traj.steps),
            "converged": traj.converged,
            "structure_uncertainty": traj.max_uncertainty,
            "final_max_uncertainty": traj.steps[-1].max_uncertainty,
            "relax_chunks": len(labels),
            "new_chunks": sum(1 for lb in labels if lb.iteration == number),
            **oos,
            "training": metrics,
        }
        record.update(
            calibration.figures([*result.history, *rounds], record, spec.nft.calibration_coverage)
        )
        rounds.append(record)
        if show is not None:
            show(record)
        uncertainties = [r["structure_uncertainty"] for r in rounds]
        stop = decision.relax_stop(
            uncertainties,
            threshold=threshold,
            patience=rs.patience,
            max_rounds=rs.max_rounds if rs.retrain else 0,
            tolerance=spec.nft.best_tolerance,
        )
        if stop is not None:
            break
        chosen = trajectory_chunks(
            traj,
            search_frames(len(traj.frames), rs.max_frames),
            threshold,
            ensemble.spec,
            rs.chunks_per_round,
            rs.selection,
            prepared.chunk_radius_A,
            seen.__contains__,
        )
        number += 1
        fresh = []
        for _, chunk in chosen:
            seen.add(chunk.hash)
            fresh.append(label_chunk(prepared, chunk, number))
        oos = chunk_out_of_sample(
            ensemble, [lb.atoms for lb in fresh], [lb.central_force for lb in fresh]
        )
        labels.extend(fresh)
        features.extend(chunk_features(fresh, ensemble.spec))
        new = len(chosen)
        if not new:
            stop = decision.Stop(
                "exhausted",
                "no unlabelled trajectory atom above the threshold",
                stop_best(rounds, spec),
            )
            break
    kept = stop.best_iteration
    model = mdl.Ensemble.from_bytes(blobs[kept])
    model.meta.update(calibration_meta([*result.history, *rounds], spec.name))
    return RelaxResult(
        rounds=rounds,
        trajectories=trajectories,
        calculator=EnsembleCalculator(model),
        kept_round=kept,
        stop=stop,
        labels=labels,
    )


def stop_best(rounds: Sequence[Mapping[str, Any]], spec: CampaignSpec) -> int:
    return decision.best_iteration(
        [r["structure_uncertainty"] for r in rounds], spec.nft.best_tolerance
    )


def _rich_progress_relax() -> Progress:
    from rich.console import Console

    console = Console(stderr=True, soft_wrap=True)

    def show(record: dict[str, Any]) -> None:
        console.print(
            f"[bold]{record['campaign']}[/] relax round {record['iteration']}: "
            f"+{record['new_chunks']} trajectory chunks, {record['n_steps']} steps, "
            f"δ max along {record['structure_uncertainty']:.3f} eV/Å, "
            f"at end {record['final_max_uncertainty']:.3f}"
        )

    return show
