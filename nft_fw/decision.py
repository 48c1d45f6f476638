"""Whether an NFT campaign goes on, as a pure function of its history.

The stopping rules follow Sec. IV of Zeng, Chen, Peterson, J. Chem. Phys. 156,
064104 (2022): the structure uncertainty falls below a threshold, it has not
improved for ``patience`` iterations, or the iteration cap is reached. The model
of the iteration with the lowest structure uncertainty is the one kept (the latest
within a small tolerance of it, see :func:`best_iteration`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Collection, Sequence

import numpy as np


@dataclasses.dataclass(frozen=True)
class Continue:
    """Label chunks around these atoms (indices into the target), then retrain."""

    centres: tuple[int, ...]


@dataclasses.dataclass(frozen=True)
class Stop:
    """End the campaign; ``reason`` is one of threshold, patience, max_iterations, exhausted."""

    reason: str
    detail: str
    best_iteration: int


BEST_TOLERANCE = 0.05


def best_iteration(uncertainties: Sequence[float], tolerance: float = BEST_TOLERANCE) -> int:
    """The iteration to keep: the latest one whose structure uncertainty is within
    ``tolerance`` (relative) of the lowest.

    The maximum δ rests on a single atom and fluctuates by a few per cent between
    retrainings; among models that are equally confident by that measure, the later one
    has been trained on more data. ``tolerance=0`` keeps the strict minimum.
    """
    if not uncertainties:
        raise ValueError("no iterations recorded yet")
    u = np.asarray(uncertainties, dtype=float)
    return int(np.flatnonzero(u <= u.min() * (1.0 + tolerance))[-1])


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
) -> Continue | Stop:
    """Next step after an iteration was recorded.

    uncertainties: structure uncertainty (eV/Å) of every iteration so far, the
    latest last (iteration 0 = trained on the initial set only);
    delta: per-atom δ (n_atoms,) of the latest model; chunked: target atoms
    already used as chunk centres; k: chunks per iteration.
    ``max_iterations`` counts retrainings after iteration 0.
    """
    if not uncertainties:
        raise ValueError("decide() needs at least one recorded iteration")
    best = best_iteration(uncertainties, tolerance)
    stop = _stop_rules(
        uncertainties,
        threshold,
        patience,
        max_iterations,
        best,
        measure="structure uncertainty",
        step="iteration",
        cap_reason="max_iterations",
        cap_detail=f"reached {max_iterations} iterations",
    )
    if stop is not None:
        return stop
    taken = set(int(c) for c in chunked)
    order = np.argsort(-np.asarray(delta), kind="stable")
    centres = tuple(int(i) for i in order if int(i) not in taken)[:k]
    if not centres:
        return Stop("exhausted", "every atom of the target has been chunked", best)
    return Continue(centres)


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
        threshold,
        patience,
        max_rounds,
        best_iteration(uncertainties, tolerance),
        measure="largest δ along the relaxation",
        step="round",
        cap_reason="max_rounds",
        cap_detail=f"reached {max_rounds} retrainings",
    )


def _stop_rules(
    uncertainties: Sequence[float],
    threshold: float,
    patience: int,
    cap: int,
    best: int,
    *,
    measure: str,
    step: str,
    cap_reason: str,
    cap_detail: str,
) -> Stop | None:
    """The three stopping rules shared by NFT iterations and relax rounds: below the
    threshold, no new lowest value for ``patience`` steps, or ``cap`` steps after step 0."""
    lowest = int(np.argmin(np.asarray(uncertainties, dtype=float)))
    latest = len(uncertainties) - 1
    if uncertainties[-1] < threshold:
        return Stop(
            "threshold", f"{measure} {uncertainties[-1]:.3f} < threshold {threshold:g} eV/Å", best
        )
    if latest - lowest >= patience:
        return Stop(
            "patience",
            f"no improvement on {uncertainties[lowest]:.3f} eV/Å ({step} {lowest}) "
            f"for {latest - lowest} {step}s",
            best,
        )
    if latest >= cap:
        return Stop(cap_reason, cap_detail, best)
    return None
