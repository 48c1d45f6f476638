"""Real solid harmonics and the constant matrices of their gradients.

R_lm(x, y, z) is a homogeneous harmonic polynomial of degree l; on the unit sphere it is the
real spherical harmonic Y_lm, normalised here so that the addition theorem reads

    Σ_m Y_lm(u) Y_lm(v) = P_l(u · v)        (P_l: Legendre polynomial)

(the usual normalisation times sqrt(4π / (2l + 1))). The recurrences are those of
scaled solid harmonics (Bigi et al., J. Chem. Phys. 159, 064802 (2023)): no trigonometric
calls, so they vectorise on any backend.

Because ∂R_lm/∂x_a is again harmonic and homogeneous of degree l − 1, it is a fixed linear
combination of the R_{l−1,m'}; :func:`gradient_matrices` returns those combinations, found
once by a least-squares fit of exact (complex-step) derivatives.
"""

from __future__ import annotations

import functools
import math
from typing import Any

import numpy as np


def _norm(deg: int, m: int) -> float:
    return math.sqrt((2.0 if m else 1.0) * math.factorial(deg - m) / math.factorial(deg + m))


def solid(x: Any, y: Any, z: Any, lmax: int) -> list[list[Any]]:
    """R_lm for l = 0..lmax as ``out[l][m + l]`` (m = −l..l), each shaped like ``x``.

    Works on numpy, JAX or complex arrays alike (only +, −, × and constants are used).
    """
    r2 = x * x + y * y + z * z
    one = x * 0 + 1
    cos_m = [one]  # Re (x + iy)^m
    sin_m = [x * 0]  # Im (x + iy)^m
    for _ in range(lmax):
        c, s = cos_m[-1], sin_m[-1]
        cos_m.append(x * c - y * s)
        sin_m.append(x * s + y * c)
    q: dict[tuple[int, int], Any] = {}  # modified associated Legendre, homogeneous in (x, y, z)
    for m in range(lmax + 1):
        q[m, m] = (-1) ** m * float(np.prod(np.arange(2 * m - 1, 0, -2))) * one
        if m < lmax:
            q[m + 1, m] = (2 * m + 1) * z * q[m, m]
        for d in range(m + 2, lmax + 1):
            q[d, m] = ((2 * d - 1) * z * q[d - 1, m] - (d + m - 1) * r2 * q[d - 2, m]) / (d - m)
    out = []
    for d in range(lmax + 1):
        row = []
        for m in range(-d, d + 1):
            if m < 0:
                row.append(_norm(d, -m) * q[d, -m] * sin_m[-m])
            elif m == 0:
                row.append(_norm(d, 0) * q[d, 0])
            else:
                row.append(_norm(d, m) * q[d, m] * cos_m[m])
        out.append(row)
    return out


@functools.cache
def gradient_matrices(lmax: int) -> tuple[np.ndarray, ...]:
    """``C[d]`` (3, 2d+1, 2d−1) with ∂R_dm/∂x_a = Σ_m' C[d][a, m, m'] R_{d−1,m'}; C[0] is empty."""
    rng = np.random.default_rng(0)
    points = rng.normal(size=(8 * (2 * lmax + 1) + 16, 3))
    step = 1e-30
    out = [np.zeros((3, 1, 0))]
    for d in range(1, lmax + 1):
        x, y, z = points.T
        lower = np.array(solid(x, y, z, d - 1)[d - 1]).T  # (n, 2d−1)
        mats = np.zeros((3, 2 * d + 1, 2 * d - 1))
        for a in range(3):
            kick = np.zeros(3, dtype=complex)
            kick[a] = 1j * step
            cx, cy, cz = (points.astype(complex) + kick).T
            exact = np.array([v.imag / step for v in solid(cx, cy, cz, d)[d]]).T  # (n, 2d+1)
            sol, *_ = np.linalg.lstsq(lower, exact, rcond=None)
            err = np.abs(lower @ sol - exact).max()
            if err > 1e-9 * (1.0 + np.abs(exact).max()):  # pragma: no cover - a maths bug
                raise AssertionError(f"gradient of R_{d}m is not spanned by R_{d - 1}m' ({err})")
            mats[a] = sol.T
        out.append(mats)
    return tuple(out)
