"""Behler–Parrinello atom-centred symmetry functions (G2 radial, G4 angular) in JAX.

For atom i with neighbours j (displacements D_ij = R_j - R_i + shift, |D_ij| < R_c):

    G2[e, g]  = Σ_j [Z_j = e] exp(-η_g (r_ij - Rs_g)²) f_c(r_ij)
    G4[p, g]  = 2^(1-ζ_g) Σ_{j≠k} [(Z_j, Z_k) ∈ p] (1 + λ_g cos θ_jik)^ζ_g
                exp(-η_g (r_ij² + r_ik² + r_jk²)) f_c(r_ij) f_c(r_ik) f_c(r_jk)
    f_c(r)    = ½ (cos(π r / R_c) + 1) for r < R_c, else 0

(Behler, J. Chem. Phys. 134, 074106 (2011)). Besides G_i the functions here
return the pair Jacobian J_ij = ∂G_i/∂D_ij, so forces of any number of
ensemble members follow from one descriptor pass:

    F_k = -Σ_i Σ_j (∂E_i/∂G_i) · J_ij (δ_{j,k} - δ_{i,k}).

Atoms are processed in fixed-size blocks with neighbour lists padded to
bucketed widths, so jit compiles once per (block, width) pair, not per
structure.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Iterator, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from ase import Atoms

from nft_fw.geometry import neighbour_pairs

BLOCK_ATOMS = 64  # atoms per jitted descriptor call
NEIGHBOUR_BUCKET = 16  # neighbour lists are padded to a multiple of this
_EPS = 1e-20  # keeps sqrt differentiable at coincident padded points


@dataclasses.dataclass(frozen=True)
class DescriptorSpec:
    """Symmetry-function settings; all lengths in Å, η in Å⁻².

    ``g2``: (η, Rs) pairs; ``g4``: (η, ζ, λ) triples with integer ζ ≥ 1 and λ = ±1.
    """

    elements: tuple[str, ...]
    cutoff: float
    g2: tuple[tuple[float, float], ...]
    g4: tuple[tuple[float, int, int], ...]

    def __post_init__(self) -> None:
        if not self.elements:
            raise ValueError(
                "DescriptorSpec.elements is empty; list the chemical symbols of the system"
            )
        if list(self.elements) != sorted(set(self.elements)):
            raise ValueError(
                f"DescriptorSpec.elements must be sorted and unique, got {self.elements}"
            )
        if not self.cutoff > 0:
            raise ValueError(f"DescriptorSpec.cutoff is {self.cutoff} Å; it must be positive")
        for eta, zeta, lam in self.g4:
            if int(zeta) != zeta or zeta < 1 or lam not in (-1, 1) or eta < 0:
                raise ValueError(
                    f"G4 entry (η={eta}, ζ={zeta}, λ={lam}) needs η ≥ 0, integer ζ ≥ 1, λ = ±1"
                )

    @classmethod
    def default(
        cls,
        elements: Sequence[str],
        cutoff: float = 6.0,
        n_radial: int = 16,
        r_min: float = 1.8,
        g4_eta: Sequence[float] = (0.005, 0.025),
        g4_zeta: Sequence[int] = (1, 2, 4, 8),
    ) -> DescriptorSpec:
        """Shifted Gaussians on an even grid from ``r_min`` to R_c plus a small angular set."""
        centres = np.linspace(r_min, cutoff - 0.3, n_radial)
        width = float(centres[1] - centres[0]) if n_radial > 1 else 0.5
        eta = 1.0 / (2.0 * width**2)
        g2 = tuple((float(eta), float(rs)) for rs in centres)
        g4 = tuple((float(e), int(z), lam) for e in g4_eta for z in g4_zeta for lam in (1, -1))
        return cls(tuple(sorted(set(elements))), float(cutoff), g2, g4)

    @property
    def element_pairs(self) -> tuple[tuple[int, int], ...]:
        n = len(self.elements)
        return tuple((a, b) for a in range(n) for b in range(a, n))

    @property
    def n_features(self) -> int:
        return len(self.elements) * len(self.g2) + len(self.element_pairs) * len(self.g4)

    def to_dict(self) -> dict[str, Any]:
        return {
            "elements": list(self.elements),
            "cutoff": self.cutoff,
            "g2": [list(x) for x in self.g2],
            "g4": [list(x) for x in self.g4],
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> DescriptorSpec:
        return cls(
            tuple(d["elements"]),
            float(d["cutoff"]),
            tuple((float(a), float(b)) for a, b in d["g2"]),
            tuple((float(a), int(b), int(c)) for a, b, c in d["g4"]),
        )


# ----------------------------------------------------------------------------- neighbours


@dataclasses.dataclass
class Neighbours:
    """Padded neighbour lists of a structure.

    index: (n_atoms, width) neighbour atom indices (padding points at the atom itself);
    disp: (n_atoms, width, 3) displacement vectors D_ij in Å (padding: far away);
    mask: (n_atoms, width) True for real neighbours;
    species: (n_atoms,) element index of each atom in DescriptorSpec.elements.
    """

    index: np.ndarray
    disp: np.ndarray
    mask: np.ndarray
    species: np.ndarray

    @property
    def width(self) -> int:
        return int(self.index.shape[1])


def species_indices(atoms: Atoms, elements: Sequence[str]) -> np.ndarray:
    lookup = {el: i for i, el in enumerate(elements)}
    try:
        return np.array([lookup[s] for s in atoms.get_chemical_symbols()], dtype=np.int32)
    except KeyError as err:
        raise ValueError(
            f"structure contains element {err.args[0]!r}, but the model knows only {list(elements)}"
        ) from err


def bucket(n: int, size: int) -> int:
    return max(size, math.ceil(n / size) * size)


def neighbours(atoms: Atoms, spec: DescriptorSpec, width: int | None = None) -> Neighbours:
    """Neighbours within R_c (periodic images included where ``atoms.pbc``)."""
    n = len(atoms)
    ii, jj, dd = neighbour_pairs(atoms, spec.cutoff, "ijD")
    counts = np.bincount(ii, minlength=n)
    max_count = int(counts.max()) if n else 0
    width = width or bucket(max_count, NEIGHBOUR_BUCKET)
    if max_count > width:
        raise ValueError(
            f"an atom has {max_count} neighbours within {spec.cutoff} Å, more than width {width}"
        )
    order = np.argsort(ii, kind="stable")
    ii, jj, dd = ii[order], jj[order], dd[order]
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    slot = np.arange(len(ii)) - starts[ii]
    index = np.repeat(np.arange(n, dtype=np.int64)[:, None], width, axis=1)
    disp = np.zeros((n, width, 3))
    # Padding: distinct far-away points (r > R_c, so f_c = 0 and gradients vanish).
    disp[:, :, 0] = 2.0 * spec.cutoff + 0.1 * np.arange(width)[None, :]
    mask = np.zeros((n, width), dtype=bool)
    index[ii, slot] = jj
    disp[ii, slot] = dd
    mask[ii, slot] = True
    return Neighbours(index, disp, mask, species_indices(atoms, spec.elements))


# ----------------------------------------------------------------------------- per-atom math


def _fc(r: jax.Array, rc: float) -> jax.Array:
    return jnp.where(r < rc, 0.5 * (jnp.cos(jnp.pi * r / rc) + 1.0), 0.0)


def _norm(x: jax.Array) -> jax.Array:
    return jnp.sqrt(jnp.sum(x * x, axis=-1) + _EPS)


def _g4_pair(dj: jax.Array, dk: jax.Array, spec: DescriptorSpec) -> jax.Array:
    """Angular terms of one ordered neighbour pair (j, k): (n_g4,)."""
    rj, rk = _norm(dj), _norm(dk)
    rjk = _norm(dj - dk)
    cos = jnp.clip(jnp.dot(dj, dk) / (rj * rk), -1.0, 1.0)
    radial = _fc(rj, spec.cutoff) * _fc(rk, spec.cutoff) * _fc(rjk, spec.cutoff)
    r2 = rj * rj + rk * rk + rjk * rjk
    out = []
    for eta, zeta, lam in spec.g4:
        base = 1.0 + lam * cos
        out.append(
            2.0 ** (1 - zeta) * jax.lax.integer_pow(base, int(zeta)) * jnp.exp(-eta * r2) * radial
        )
    return jnp.stack(out)


def _atom(
    disp: jax.Array, species_oh: jax.Array, mask: jax.Array, spec: DescriptorSpec
) -> tuple[jax.Array, jax.Array]:
    """G (n_features,) and J (width, n_features, 3) of one atom."""
    width = disp.shape[0]
    maskf = mask.astype(disp.dtype)
    eta2 = jnp.asarray([g[0] for g in spec.g2], disp.dtype)
    rs2 = jnp.asarray([g[1] for g in spec.g2], disp.dtype)

    def radial(d: jax.Array) -> jax.Array:
        r = _norm(d)
        return jnp.exp(-eta2 * (r - rs2) ** 2) * _fc(r, spec.cutoff)

    rad, drad = jax.vmap(lambda d: (radial(d), jax.jacfwd(radial)(d)))(disp)  # (w, n2), (w, n2, 3)
    oh = species_oh * maskf[:, None]  # (w, n_el)
    g2 = jnp.einsum("je,jg->eg", oh, rad).reshape(-1)
    j2 = jnp.einsum("je,jgx->jegx", oh, drad).reshape(width, -1, 3)
    if not spec.g4:
        return g2, j2

    pair_fn = functools.partial(_g4_pair, spec=spec)
    both = jax.vmap(
        jax.vmap(lambda a, b: (pair_fn(a, b), jax.jacfwd(pair_fn)(a, b)), (None, 0)), (0, None)
    )
    t, dt = both(disp, disp)  # (w, w, n4), (w, w, n4, 3): dt[j, k] = ∂T(D_j, D_k)/∂D_j
    offdiag = 1.0 - jnp.eye(width, dtype=disp.dtype)
    pw = []
    for a, b in spec.element_pairs:
        w_ab = oh[:, a][:, None] * oh[:, b][None, :]
        if a != b:
            w_ab = w_ab + oh[:, b][:, None] * oh[:, a][None, :]
        pw.append(w_ab * offdiag)
    pair_w = jnp.stack(pw, axis=-1)  # (w, w, n_pairs)
    g4 = jnp.einsum("jkp,jkg->pg", pair_w, t).reshape(-1)
    j4 = 2.0 * jnp.einsum("jkp,jkgx->jpgx", pair_w, dt).reshape(width, -1, 3)
    return jnp.concatenate([g2, g4]), jnp.concatenate([j2, j4], axis=1)


@functools.partial(jax.jit, static_argnums=(3,))
def _block(
    disp: jax.Array, species_oh: jax.Array, mask: jax.Array, spec: DescriptorSpec
) -> tuple[jax.Array, jax.Array]:
    return jax.vmap(_atom, in_axes=(0, 0, 0, None))(disp, species_oh, mask, spec)


# ----------------------------------------------------------------------------- structures


def iter_blocks(
    nb: Neighbours,
    spec: DescriptorSpec,
    rows: np.ndarray | None = None,
    block: int = BLOCK_ATOMS,
    dtype: Any = None,
) -> Iterator[tuple[np.ndarray, jax.Array, jax.Array]]:
    """Yield (atom rows, G (block, F), J (block, width, F, 3)) over ``rows`` (default all atoms).

    The last block is padded; only the first ``len(atom rows)`` entries are real.
    """
    rows = np.arange(len(nb.species)) if rows is None else np.asarray(rows)
    dtype = dtype or jnp.zeros(()).dtype  # float64 only when the caller enabled x64
    n_el = len(spec.elements)
    oh_all = np.eye(n_el)[nb.species[nb.index]]  # (n, width, n_el)
    for start in range(0, len(rows), block):
        chunk = rows[start : start + block]
        pad = block - len(chunk)
        idx = np.concatenate([chunk, np.repeat(chunk[:1], pad)]) if pad else chunk
        g, j = _block(
            jnp.asarray(nb.disp[idx], dtype),
            jnp.asarray(oh_all[idx], dtype),
            jnp.asarray(nb.mask[idx]),
            spec,
        )
        yield chunk, g, j


def compute(
    atoms: Atoms,
    spec: DescriptorSpec,
    rows: np.ndarray | None = None,
    width: int | None = None,
    dtype: Any = None,
) -> tuple[np.ndarray, np.ndarray, Neighbours]:
    """G (n_rows, F) and J (n_rows, width, F, 3) for ``rows`` of ``atoms`` (numpy), with the neighbours."""
    nb = neighbours(atoms, spec, width)
    rows = np.arange(len(atoms)) if rows is None else np.asarray(rows)
    gs, js = [], []
    for chunk, g, j in iter_blocks(nb, spec, rows, dtype=dtype):
        gs.append(np.asarray(g[: len(chunk)]))
        js.append(np.asarray(j[: len(chunk)]))
    n_f = spec.n_features
    if not gs:
        return np.zeros((0, n_f)), np.zeros((0, nb.width, n_f, 3)), nb
    return np.concatenate(gs), np.concatenate(js), nb


def features(atoms: Atoms, spec: DescriptorSpec, dtype: Any = None) -> np.ndarray:
    """G (n_atoms, F) only."""
    return compute(atoms, spec, dtype=dtype)[0]
