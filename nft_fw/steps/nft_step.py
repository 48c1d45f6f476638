"""The NFT iteration (Zeng, Chen, Peterson, J. Chem. Phys. 156, 064104 (2022), Sec. IV):
train on every label so far → predict the target and δ → record → decide → the next chunks
to label (the prior labels' chunks of the next iteration first)."""

from __future__ import annotations

import dataclasses
from collections.abc import Collection, Mapping, Sequence
from typing import Any

import numpy as np

from nft_fw.labels import prior as prior_mod
from nft_fw.labels.label import ChunkLabel
from nft_fw.labels.phase import Phase
from nft_fw.potential import calibration
from nft_fw.potential import descriptors as desc
from nft_fw.potential import model as mdl
from nft_fw.potential import training as tr
from nft_fw.potential.selection import farthest_point, standardise
from nft_fw.spec.campaign import Prepared
from nft_fw.steps import decision, overlap
from nft_fw.steps.common import (
    Assessment,
    ChunkRequest,
    FeatureSource,
    assess,
    calibrate_record,
    chunk_features,
    fit,
    out_of_sample,
    selection_features,
    threshold_values,
)
from nft_fw.steps.kept import kept_iteration


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
    features come from (a cache); ``seeded``: the centres asked for before iteration 0
    (``nft.seed_chunks``, :func:`seed_requests`), in flight until they arrive."""

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
    seeded: Sequence[int] = ()


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
    overlapping = spec.nft.rounds == "overlapping"
    if overlapping:  # new: what no trainer before trained on (its round may be an older one)
        trained_before = {h for r in inputs.history for h in r.get("arrived", ())}
        fresh = (c for c in nft_chunks if c.hash not in trained_before)
    else:
        fresh = (c for c in nft_chunks if c.iteration == k)
    new = sorted(fresh, key=lambda c: (c.centre, c.hash))
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
    wanted = spec.nft.chunks_per_iteration
    if overlapping:
        # the chunks asked for before and not yet arrived are in flight: not offered again,
        # and only as many new ones as keep chunks_per_iteration in flight
        in_flight = overlap.in_flight(history, chunked, inputs.seeded)
        if k == 0 and inputs.seeded:
            record["seeded"] = sorted(int(c) for c in inputs.seeded)
        record["arrived"] = [c.hash for c in new]
        record["in_flight"] = sorted(in_flight)
        record["failed_centres"] = sorted(int(c) for c in inputs.failed_centres)
        chunked |= in_flight
        wanted = overlap.new_chunks(wanted, len(in_flight))
    step = decision.decide(
        threshold_values([*history, record], spec),
        result.delta,
        chunked,
        k=wanted,
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
        # the prior labels' chunks of the next iteration first; an iteration the export cut
        # off mid-labelling is completed by the campaign's own choice, its given centres
        # taken out of it
        given = {c for c, _ in planned}
        own = [int(c) for c in step.centres if int(c) not in given]
        requests = [ChunkRequest(centre=c, radius=r, iteration=k + 1) for c, r in planned]
        requests += [
            ChunkRequest(centre=c, radius=prepared.chunk_radius_A, iteration=k + 1)
            for c in own[: max(0, wanted - len(planned))]
        ]
    if overlapping:
        record["requested"] = [r.centre for r in requests]
    return NFTOutcome(record, ensemble, result, step, requests)


def seed_requests(prepared: Prepared) -> list[ChunkRequest]:
    """The chunks asked for before any model exists (``nft.seed_chunks``, overlapping
    rounds): centres by farthest-point sampling of the target's atoms in the model's
    descriptor space (standardised), starting from the atom farthest from the mean — the
    most unlike environments first, the same for every run of the campaign."""
    spec = prepared.spec
    n = spec.nft.seed_chunks
    if n <= 0 or spec.nft.rounds != "overlapping":
        return []
    x = desc.features(prepared.target, spec.model.descriptor_spec(prepared.elements))
    return [
        ChunkRequest(centre=int(c), radius=prepared.chunk_radius_A, iteration=0)
        for c in farthest_point(standardise(np.asarray(x, dtype=np.float64)), n)
    ]
