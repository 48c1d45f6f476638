"""Choosing diverse rows: farthest-point sampling and CUR leverage scores."""

from __future__ import annotations

import numpy as np


def standardise(x: np.ndarray) -> np.ndarray:
    """Each column of x (n_rows, d) shifted to mean 0 and scaled to unit spread (a constant
    column is only shifted), so that no descriptor dominates a distance by its units; in
    x's own precision."""
    x = np.asarray(x)
    scale = x.std(axis=0)
    return (x - x.mean(axis=0)) / np.where(scale > 1e-12, scale, 1.0)


def farthest_point(x: np.ndarray, n: int, first: int | None = None) -> list[int]:
    """Indices of ``n`` rows of x (n_rows, d) picked greedily to be far from those already picked.

    Starts from ``first`` or, by default, the row farthest from the mean.
    """
    x = np.asarray(x, dtype=np.float64)
    if n > len(x):
        raise ValueError(f"cannot pick {n} rows out of {len(x)}")
    if n <= 0:
        return []
    if first is None:
        first = int(np.argmax(np.linalg.norm(x - x.mean(axis=0), axis=1)))
    picked = [first]
    dist = np.linalg.norm(x - x[first], axis=1)
    while len(picked) < n:
        nxt = int(np.argmax(dist))
        picked.append(nxt)
        dist = np.minimum(dist, np.linalg.norm(x - x[nxt], axis=1))
    return picked


def cur(x: np.ndarray, n: int, rank: int | None = None) -> list[int]:
    """Rows of x (n_rows, d) chosen by CUR leverage scores (Mahoney & Drineas, PNAS 106, 697
    (2009)), deterministic variant: repeatedly take the highest-leverage row and project it out."""
    a = np.asarray(x, dtype=np.float64).copy()
    if n > len(a):
        raise ValueError(f"cannot pick {n} rows out of {len(a)}")
    picked: list[int] = []
    for _ in range(n):
        u, s, _vt = np.linalg.svd(a, full_matrices=False)
        k = min(rank or len(s), len(s))
        k = max(1, int(np.sum(s[:k] > 1e-12 * max(s[0], 1e-300))))
        score = np.sum(u[:, :k] ** 2, axis=1)
        score[picked] = -1.0
        i = int(np.argmax(score))
        picked.append(i)
        row = a[i] / max(np.linalg.norm(a[i]), 1e-300)
        a = a - np.outer(a @ row, row)
    return picked
