"""Per-atom force uncertainty of an ensemble (Eq. (1) of Zeng, Chen, Peterson,
J. Chem. Phys. 156, 064104 (2022)): δ_i = 2.58 σ_f, with σ_f the spread of the
members' force vectors; the structure uncertainty is max_i δ_i."""

from __future__ import annotations

import numpy as np

Z_99 = 2.58  # two-sided 99 % quantile of the normal distribution (the paper's factor)


def atomic(forces: np.ndarray) -> np.ndarray:
    """δ_i (n_atoms,) eV/Å from member forces (M, n_atoms, 3) eV/Å.

    δ_i = 2.58 · sqrt(Σ_m |f_i^m − f̄_i|² / (M − 1)); invariant under rotation.
    """
    f = np.asarray(forces, dtype=np.float64)
    if f.ndim != 3 or f.shape[-1] != 3 or f.shape[0] < 2:
        raise ValueError(f"forces must be (M ≥ 2, n_atoms, 3); got shape {f.shape}")
    dev = f - f.mean(axis=0, keepdims=True)
    return Z_99 * np.sqrt(np.sum(dev * dev, axis=(0, 2)) / (f.shape[0] - 1))


def structure(delta: np.ndarray) -> float:
    """Structure uncertainty: the largest δ_i (eV/Å)."""
    return float(np.max(delta))
