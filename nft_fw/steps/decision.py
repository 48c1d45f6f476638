"""Whether an NFT campaign goes on, as a pure function of its history.

The stopping rules follow Sec. IV of Zeng, Chen, Peterson, J. Chem. Phys. 156,
064104 (2022): the structure uncertainty (the largest δ_i) falls below a threshold, the
campaign has not improved for ``patience`` iterations, or the iteration cap is reached.

What "improved" means, and which model is kept, is set by the campaign's progress measure
(``nft.progress_measure``). The paper's choice is the structure uncertainty itself, but the
largest δ rests on one atom: it moves by several per cent between retrainings for no reason
a user would care about, so a run can stop (or keep an iteration) on that noise. The default
is the mean δ over the target, which falls with the force error (see the accuracy tables
of docs/figures.md); a new lowest value counts as a gain only when it is ``min_gain`` below
the previous lowest, and the kept model is the latest whose measure is within
``best_tolerance`` of the lowest (:func:`best_iteration`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Collection, Mapping, Sequence
from typing import Any

import numpy as np

from nft_fw.potential.selection import standardise


@dataclasses.dataclass(frozen=True)
class Continue:
    """Label chunks around these atoms (indices into the target), then retrain."""

    centres: tuple[int, ...]


@dataclasses.dataclass(frozen=True)
class Stop:
    """End the campaign; ``reason`` is one of threshold, target_error, patience,
    max_iterations, exhausted."""

    reason: str
    detail: str
    best_iteration: int


BEST_TOLERANCE = 0.05


MEASURES = {
    "mean_delta": "mean_uncertainty",
    "max_delta": "structure_uncertainty",
    "estimated_error": "estimated_error",
}
ESTIMATE_WINDOW = 3  # out-of-sample points of the latest iterations that scale δ to errors


def estimated_errors(records: Sequence[Mapping[str, Any]]) -> list[float]:
    """Each iteration's estimate of its model's mean force error over the target (eV/Å),
    from the evidence a campaign has without the parent's forces on the target: its mean δ
    in units of error, ``mean δ · Σ e / Σ δ``, the ratio taken over the out-of-sample points
    (e: the error of the model before on the chunks it then chose; δ: its δ there) of the
    latest :data:`ESTIMATE_WINDOW` iterations that have them. The points are the atoms the
    models found hardest, where errors and δ are both large; their ratio carries over to the
    rest of the target as long as δ ranks errors. ``inf`` before any out-of-sample point
    (iteration 0)."""
    out: list[float] = []
    errors: list[list[float]] = []
    deltas: list[list[float]] = []
    for r in records:
        if r.get("oos_errors"):
            errors.append(list(r["oos_errors"]))
            deltas.append(list(r["oos_deltas"]))
        e = [x for pts in errors[-ESTIMATE_WINDOW:] for x in pts]
        d = [x for pts in deltas[-ESTIMATE_WINDOW:] for x in pts]
        if not e or sum(d) <= 0.0:
            out.append(float("inf"))
            continue
        out.append(float(r["mean_uncertainty"]) * sum(e) / sum(d))
    return out


def progress(records: Sequence[Mapping[str, Any]], measure: str) -> list[float]:
    """The progress measure (eV/Å) of each iteration record: ``mean_delta`` = the mean δ over
    the target atoms, ``max_delta`` = the structure uncertainty, ``estimated_error`` = the
    mean force error the out-of-sample evidence puts on the model (:func:`estimated_errors`)."""
    if measure not in MEASURES:
        raise ValueError(f"progress measure {measure!r} is not one of {sorted(MEASURES)}")
    if measure == "estimated_error":
        return estimated_errors(records)
    return [float(r[MEASURES[measure]]) for r in records]


def best_iteration(values: Sequence[float], tolerance: float = BEST_TOLERANCE) -> int:
    """The iteration to keep: the latest one whose progress measure is within ``tolerance``
    (relative) of the lowest.

    Among models that are equally good by that measure, the later one has been trained on
    more data. ``tolerance=0`` keeps the strict minimum.
    """
    if not values:
        raise ValueError("no iterations recorded yet")
    u = np.asarray(values, dtype=float)
    return int(np.flatnonzero(u <= u.min() * (1.0 + tolerance))[-1])


def last_gain(values: Sequence[float], min_gain: float = 0.0) -> int:
    """The latest iteration that improved on every earlier one by more than ``min_gain``
    (relative): the lowest value so far, counted only when it undercuts the previous
    lowest by that margin."""
    if not values:
        raise ValueError("no iterations recorded yet")
    gain, lowest = 0, float(values[0])
    for i, v in enumerate(values[1:], start=1):
        if v < lowest * (1.0 - min_gain):
            gain, lowest = i, float(v)
    return gain


def decide(
    uncertainties: Sequence[float],
    delta: np.ndarray,
    chunked: Collection[int],
    *,
    k: int,
    threshold: float,
    patience: int,
    max_iterations: int,
    tolerance: float = BEST_TOLERANCE,
    selection: str = "most_uncertain",
    features: np.ndarray | None = None,
    measures: Sequence[float] | None = None,
    min_gain: float = 0.0,
    target_error: float | None = None,
    estimates: Sequence[float] | None = None,
) -> Continue | Stop:
    """Next step after an iteration was recorded.

    uncertainties: the structure uncertainty (eV/Å) of every iteration so far, as compared
    with the threshold (δ or calibrated δ), the latest last (iteration 0 = trained on the
    initial set only); measures: the progress measure of the same iterations (default: the
    uncertainties), which patience, ``min_gain`` and the kept model go by; delta: per-atom δ
    (n_atoms,) of the latest model; chunked: target atoms already used as chunk centres;
    k: chunks per iteration. ``max_iterations`` counts retrainings after iteration 0.
    ``selection`` and ``features``: see :func:`choose_centres`. ``target_error`` and
    ``estimates``: see :func:`stop_rule`.
    """
    stop = stop_rule(
        uncertainties,
        measures,
        threshold=threshold,
        patience=patience,
        max_iterations=max_iterations,
        tolerance=tolerance,
        min_gain=min_gain,
        target_error=target_error,
        estimates=estimates,
    )
    if stop is not None:
        return stop
    centres = choose_centres(delta, chunked, k, selection, features)
    if not centres:
        values = list(uncertainties if measures is None else measures)
        best = best_iteration(values, tolerance)
        return Stop("exhausted", "every atom of the target has been chunked", best)
    return Continue(centres)


def stop_rule(
    uncertainties: Sequence[float],
    measures: Sequence[float] | None = None,
    *,
    threshold: float,
    patience: int,
    max_iterations: int,
    tolerance: float = BEST_TOLERANCE,
    min_gain: float = 0.0,
    target_error: float | None = None,
    estimates: Sequence[float] | None = None,
) -> Stop | None:
    """Whether NFT stops after the latest iteration (None: go on), and which model it keeps.

    The rules of :func:`decide` in this order: the threshold on ``uncertainties``; with
    ``target_error`` (eV/Å), the latest of ``estimates`` (each iteration's estimated mean
    force error, :func:`estimated_errors`) at or below it — the accuracy the campaign asked
    for is reached, by the evidence it has; patience and ``min_gain`` on ``measures``; the
    cap. The kept model is the latest whose measure is within ``tolerance`` of the lowest.
    """
    if not uncertainties:
        raise ValueError("decide() needs at least one recorded iteration")
    values = list(uncertainties if measures is None else measures)
    if len(values) != len(uncertainties):
        raise ValueError(f"{len(values)} measures for {len(uncertainties)} iterations")
    best = best_iteration(values, tolerance)
    latest_estimate = float(estimates[-1]) if estimates else float("inf")
    reached = (
        target_error is not None
        and latest_estimate <= target_error
        and uncertainties[-1] >= threshold  # the threshold rule names it first
    )
    if reached:
        return Stop(
            "target_error",
            f"estimated mean force error {latest_estimate:.3f} ≤ nft.target_error "
            f"{target_error:g} eV/Å",
            best,
        )
    return _stop_rules(
        uncertainties,
        values,
        threshold,
        patience,
        max_iterations,
        best,
        min_gain,
        measure="structure uncertainty",
        step="iteration",
        cap_reason="max_iterations",
        cap_detail=f"reached {max_iterations} iterations",
    )


SELECTIONS = ("most_uncertain", "diverse")
POOL = 3  # "diverse" looks among the POOL·k most uncertain atoms


def choose_centres(
    delta: np.ndarray,
    chunked: Collection[int],
    k: int,
    selection: str = "most_uncertain",
    features: np.ndarray | None = None,
) -> tuple[int, ...]:
    """Up to ``k`` chunk centres among the atoms not yet ``chunked``.

    ``most_uncertain``: the k largest δ_i (the paper's choice). ``diverse``: among the
    ``POOL``·k most uncertain atoms, the most uncertain one first, then greedily the atom
    with the largest δ_i · d_i, d_i being its distance in descriptor space to the centres
    already picked this round: an uncertain atom whose environment is a near copy of a picked
    one (a chunk that would mostly repeat it) waits for a later round, where its δ tells
    whether the first chunk already taught it. ``features``: the model's descriptors of every
    target atom (n_atoms, F), needed for ``diverse``.
    """
    if selection not in SELECTIONS:
        raise ValueError(f"selection {selection!r} is not one of {SELECTIONS}")
    d = np.asarray(delta, dtype=float)
    taken = set(int(c) for c in chunked)
    order = [int(i) for i in np.argsort(-d, kind="stable") if int(i) not in taken]
    if selection == "most_uncertain" or len(order) <= k:
        return tuple(order[:k])
    if features is None or len(features) != len(d):
        raise ValueError("selection 'diverse' needs the descriptors of every target atom")
    pool = np.asarray(order[: POOL * k])
    x = standardise(np.asarray(features, dtype=np.float64)[pool])
    weight = d[pool]
    picked = [0]
    dist = np.linalg.norm(x - x[0], axis=1)
    while len(picked) < k:
        score = weight * dist
        score[picked] = -1.0
        nxt = int(np.argmax(score))
        picked.append(nxt)
        dist = np.minimum(dist, np.linalg.norm(x - x[nxt], axis=1))
    return tuple(int(pool[j]) for j in picked)


def relax_stop(
    uncertainties: Sequence[float],
    *,
    threshold: float,
    patience: int,
    max_rounds: int,
    tolerance: float = BEST_TOLERANCE,
) -> Stop | None:
    """Whether retraining from relaxation trajectories ends (Sec. V C of the paper).

    uncertainties: the largest δ met along each relaxation so far (round 0 = the model
    from the NFT phase, round r = after the r-th retraining). None means: label chunks
    from the latest trajectory, retrain and relax again.
    """
    if not uncertainties:
        raise ValueError("relax_stop() needs at least one relaxation")
    return _stop_rules(
        uncertainties,
        uncertainties,
        threshold,
        patience,
        max_rounds,
        best_iteration(uncertainties, tolerance),
        0.0,
        measure="largest δ along the relaxation",
        step="round",
        cap_reason="max_rounds",
        cap_detail=f"reached {max_rounds} retrainings",
    )


def _stop_rules(
    uncertainties: Sequence[float],
    values: Sequence[float],
    threshold: float,
    patience: int,
    cap: int,
    best: int,
    min_gain: float,
    *,
    measure: str,
    step: str,
    cap_reason: str,
    cap_detail: str,
) -> Stop | None:
    """The three stopping rules shared by NFT iterations and relax rounds: ``uncertainties``
    below the threshold, no gain in ``values`` for ``patience`` steps, or ``cap`` steps after
    step 0."""
    gain = last_gain(values, min_gain)
    latest = len(uncertainties) - 1
    if uncertainties[-1] < threshold:
        return Stop(
            "threshold", f"{measure} {uncertainties[-1]:.3f} < threshold {threshold:g} eV/Å", best
        )
    if latest - gain >= patience:
        return Stop(
            "patience",
            f"no gain on {values[gain]:.3f} eV/Å ({step} {gain}) for {latest - gain} {step}s",
            best,
        )
    if latest >= cap:
        return Stop(cap_reason, cap_detail, best)
    return None


def check_words(check: Mapping[str, Any]) -> str:
    """A check's outcome in words (stop details, the follower, the report)."""
    verdict = "passed" if check["passed"] else "failed"
    relation = "≤" if check["passed"] else ">"
    return (
        f"the relaxed structure of round {check['round']} checked on {check['n']} of its chunks: "
        f"central-force MAE {check['mae']:.3f} {relation} {check['tolerance']:g} eV/Å "
        f"(max {check['max']:.3f}), {verdict}"
    )
