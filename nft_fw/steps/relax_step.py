"""The relax round (Sec. V C): retrain (from round 1 on) → relax the target, or resume
from the round before's frontier → record → decide → chunks from the trajectory (the prior
labels' chunks of the next round first)."""

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
from nft_fw.potential import descriptors as desc
from nft_fw.potential import model as mdl
from nft_fw.potential import training as tr
from nft_fw.potential.calculator import EnsembleCalculator
from nft_fw.potential.selection import farthest_point, standardise
from nft_fw.spec.campaign import CampaignSpec, Prepared
from nft_fw.steps import decision
from nft_fw.steps.common import (
    ChunkRequest,
    FeatureSource,
    chunk_features,
    chunk_out_of_sample,
    fit,
    given_requests,
    trajectory_figures,
    validate_relaxation,
)
from nft_fw.steps.relax import Trajectory, first_above, relax, search_frames, trajectory_chunks
from nft_fw.structures.chunks import cut


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
    the file holds them, and chunks around uncertain atoms of the searched frames for the
    rest of the round (all of it without prior chunks). The round's choice is made as
    always and the prior chunks are taken out of it, so a round the export cut off
    mid-labelling is completed by the chunks it had chosen when the trajectory is the same."""
    prepared, number = inputs.prepared, inputs.number
    given = given_requests(prepared, planned, Phase.RELAX, number + 1)
    rs = prepared.spec.relax_settings
    if len(given) >= rs.chunks_per_round:
        return given
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
    taken = {lb.hash for lb in planned}
    position = {f: j for j, f in enumerate(searched)}
    rest = [
        ChunkRequest(
            centre=chunk.centre,
            radius=prepared.chunk_radius_A,
            iteration=number + 1,
            phase=Phase.RELAX,
            frame=position[f],
        )
        for f, chunk in chosen
        if chunk.hash not in taken
    ]
    return given + rest[: rs.chunks_per_round - len(given)]


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
    planned = prior_mod.planned_chunks(prepared.prior, Phase.RELAX, number + 1)
    check = checked_end(inputs, oos)
    if check is not None:
        record["check"] = check
    if stop is not None and stop.reason == "threshold" and rs.check_chunks:
        if check is not None and check["passed"]:
            stop = decision.Stop(stop.reason, f"{stop.detail}; {decision.check_words(check)}", best)
        elif number >= rs.max_rounds:
            failed = f"; {decision.check_words(check)}" if check is not None else ""
            stop = decision.Stop(
                "max_rounds",
                f"{stop.detail}{failed}; reached {rs.max_rounds} retrainings before the "
                "relaxed structure passed its check",
                best,
            )
        else:
            requests = _check_requests(inputs, planned, trajectory, searched)
            if requests:
                record["check_asked"] = len(requests)
                stop = None
            else:
                stop = decision.Stop(
                    "exhausted",
                    f"{stop.detail}, and no unlabelled atom of the relaxed structure is left "
                    "to check it",
                    best,
                )
    elif stop is None:
        requests = _relax_requests(inputs, planned, trajectory, searched, ensemble)
        if not requests:
            stop = decision.Stop(
                "exhausted", "no unlabelled trajectory atom above the threshold", best
            )
    if prepared.prior is not None:
        record["next_from_prior"] = len(planned) if stop is None else 0
    return RelaxOutcome(record, ensemble, trajectory, searched, stop, requests)


def checked_end(inputs: RelaxInputs, oos: Mapping[str, Any]) -> dict[str, Any] | None:
    """The check of the round before's relaxed structure (``relax.check_chunks``), when that
    round asked for one: the previous model's central-force MAE and max on the checked
    chunks before training on them (this round's new chunks), against ``relax.check_error``."""
    rs = inputs.prepared.spec.relax_settings
    asked = int(inputs.rounds[-1].get("check_asked", 0)) if inputs.rounds else 0
    if not asked or rs.check_error is None or not oos:
        return None
    return {
        "round": int(inputs.rounds[-1]["iteration"]),
        "n": int(oos["oos_n"]),
        "mae": float(oos["oos_mae"]),
        "max": float(oos["oos_max"]),
        "tolerance": float(rs.check_error),
        "passed": bool(oos["oos_mae"] <= rs.check_error),
    }


def _check_requests(
    inputs: RelaxInputs,
    planned: Sequence[prior_mod.PriorLabel],
    trajectory: Trajectory,
    searched: list[int],
) -> list[ChunkRequest]:
    """The chunks that check a relaxation which stayed below the threshold: the prior
    labels' chunks of the next round when the file holds them, then chunks around atoms of
    the relaxation's last frame not labelled yet, ``relax.check_chunks`` in all — spread over
    its environments by farthest-point sampling of their descriptors from the most uncertain
    atom on (``relax.check_selection: cover``), or the most uncertain ones."""
    prepared, number = inputs.prepared, inputs.number
    n = prepared.spec.relax_settings.check_chunks
    given = given_requests(prepared, planned, Phase.RELAX, number + 1)
    if len(given) >= n:
        return given
    last = len(searched) - 1
    frame = trajectory.frames[searched[last]]
    delta = trajectory.deltas[searched[last]]
    if prepared.spec.relax_settings.check_selection == "cover":
        x = desc.features(frame, inputs.model.spec)
        # greedy, so a prefix is the same whatever the length: enough for chunks known already
        wanted = min(len(frame), 4 * n)
        order = farthest_point(standardise(np.asarray(x)), wanted, first=int(np.argmax(delta)))
    else:
        order = [int(i) for i in np.argsort(-delta, kind="stable")]
    taken = {lb.hash for lb in planned}
    rest: list[ChunkRequest] = []
    for centre in order:
        if len(given) + len(rest) == n:
            break
        chunk = cut(frame, int(centre), prepared.chunk_radius_A)
        if chunk.hash in taken or inputs.known(chunk.hash):
            continue
        taken.add(chunk.hash)
        rest.append(
            ChunkRequest(
                centre=int(centre),
                radius=prepared.chunk_radius_A,
                iteration=number + 1,
                phase=Phase.RELAX,
                frame=last,
            )
        )
    return given + rest
