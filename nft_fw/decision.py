"""Whether an NFT campaign goes on, as a pure function of its history.

The stopping rules follow Sec. IV of Zeng, Chen, Peterson, J. Chem. Phys. 156,
064104 (2022): the structure uncertainty falls below a threshold, it has not
improved for ``patience`` iterations, or the iteration cap is reached. The model
of the iteration with the lowest structure uncertainty is the one kept.
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


def best_iteration(uncertainties: Sequence[float]) -> int:
    """Index of the lowest structure uncertainty (the earliest on ties)."""
    if not uncertainties:
        raise ValueError("no iterations recorded yet")
    return int(np.argmin(np.asarray(uncertainties, dtype=float)))


def decide(
    uncertainties: Sequence[float],
    delta: np.ndarray,
    chunked: Collection[int],
    *,
    k: int,
    threshold: float,
    patience: int,
    max_iterations: int,
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
    best = best_iteration(uncertainties)
    latest = len(uncertainties) - 1
    if uncertainties[-1] < threshold:
        return Stop(
            "threshold",
            f"structure uncertainty {uncertainties[-1]:.3f} < threshold {threshold:g} eV/Å",
            best,
        )
    if latest - best >= patience:
        return Stop(
            "patience",
            f"no improvement on {uncertainties[best]:.3f} eV/Å (iteration {best}) "
            f"for {latest - best} iterations",
            best,
        )
    if latest >= max_iterations:
        return Stop("max_iterations", f"reached {max_iterations} iterations", best)
    taken = set(int(c) for c in chunked)
    order = np.argsort(-np.asarray(delta), kind="stable")
    centres = tuple(int(i) for i in order if int(i) not in taken)[:k]
    if not centres:
        return Stop("exhausted", "every atom of the target has been chunked", best)
    return Continue(centres)
