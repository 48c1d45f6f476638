"""The MD segment: retrain on the last pause's chunks → run from the saved state until the
length or the first step above the threshold (calibrated δ) → record → the chunks of the
pause, or the end of the phase."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
from ase import Atoms

from nft_fw.labels import prior as prior_mod
from nft_fw.labels.label import ChunkLabel
from nft_fw.labels.phase import Phase
from nft_fw.potential import calibration
from nft_fw.potential import model as mdl
from nft_fw.potential import training as tr
from nft_fw.potential.calculator import EnsembleCalculator
from nft_fw.spec.campaign import Prepared
from nft_fw.steps import md as md_mod
from nft_fw.steps.common import (
    MD_CALIBRATION_POINTS,
    ChunkRequest,
    FeatureSource,
    chunk_features,
    chunk_out_of_sample,
    fit,
    given_requests,
    md_settings,
)
from nft_fw.steps.md import MDResume
from nft_fw.steps.relax import Trajectory, trajectory_chunks


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
    # above the threshold with no pause left, or the model walked atoms into each other
    stopped = (segment.paused and not may_pause) or segment.collapsed is not None
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
        "end_reason": (
            "pause"
            if paused
            else "collapsed"
            if segment.collapsed is not None
            else "out_of_pauses"
            if stopped
            else "length"
        ),
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
    if segment.collapsed is not None:
        record["collapsed"] = segment.collapsed
    if paused:
        record["pause_step"] = int(steps[-1])
        record["pause_atom"] = int(log["max_atom"][-1])
    return record


def _pause_requests(
    inputs: MDInputs, ensemble: mdl.Ensemble, segment: md_mod.Segment
) -> list[ChunkRequest]:
    """The chunks a pause asks for: the prior labels' MD chunks of the next segment when the
    file holds them, and around uncertain atoms of the segment's frames (most uncertain and
    unlike each other, md.selection) for the rest of the pause (all of it without prior
    chunks). As for relax rounds, the pause's choice is made as always and the prior chunks
    are taken out of it, so a pause the export cut off mid-labelling is completed by the
    chunks it had chosen when the run is the same; a run that differs from the exported one
    (another threshold or temperature) still trains on the file's labels, pause by pause,
    before it pays for new ones."""
    prepared = inputs.prepared
    spec = prepared.spec
    m = spec.md_spec
    planned = prior_mod.planned_chunks(prepared.prior, Phase.MD, inputs.number + 1)
    given = given_requests(prepared, planned, Phase.MD, inputs.number + 1)
    if len(given) >= m.chunks_per_pause:
        return given
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
    taken = {lb.hash for lb in planned}
    rest = [
        ChunkRequest(
            centre=chunk.centre,
            radius=prepared.chunk_radius_A,
            iteration=inputs.number + 1,
            phase=Phase.MD,
            frame=f,
        )
        for f, chunk in chosen
        if chunk.hash not in taken
    ]
    return given + rest[: m.chunks_per_pause - len(given)]


def md_step(inputs: MDInputs) -> MDOutcome:
    """One MD segment: (from segment 1 on, with new chunks) retrain on every label starting
    from the previous segment's model, continue the run from the saved state until its
    length or the first step whose largest δ (calibrated, when a calibration exists and
    md.threshold_on asks for it) exceeds the threshold, record, and at a pause name chunks
    around the uncertain atoms of the segment's frames (most uncertain and unlike each other). With no pause left, that
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
    # md.threshold_on: delta watches δ as the ensemble gives it (the calibration is still
    # recorded, in the record's calibration figures)
    scale = 1.0 if fitted is None or m.threshold_on == "delta" else fitted
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
        if inputs.prepared.prior is not None:
            record["next_from_prior"] = sum(r.given is not None for r in requests)
    return MDOutcome(
        record, model.ensemble, segment, requests, finished=record["finished"] or record["stopped"]
    )
