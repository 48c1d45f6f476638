"""Behler–Parrinello atom-centred symmetry functions, with angular sums that factorise.

For atom i with neighbours j (D_ij = R_j − R_i + shift, r_ij = |D_ij| < R_c, u_ij = D_ij / r_ij):

    G2[e, k]    = Σ_j [Z_j = e] exp(−η_k (r_ij − Rs_k)²) f_c(r_ij)
    G5[p, g]    = 2^(1−ζ_g) Σ_{j≠k} [(Z_j, Z_k) ∈ p] (1 + λ_g cos θ_jik)^ζ_g w_g(r_ij) w_g(r_ik)
    w_g(r)      = exp(−η_g r²) f_c(r),    f_c(r) = ½ (cos(π r / R_c) + 1) for r < R_c, else 0

(Behler, J. Chem. Phys. 134, 074106 (2011): G2 and G5 — the angular functions without the
r_jk factor of his G4). The triple sum is never formed: (1 + λx)^ζ is a polynomial of
degree ζ, so with its Legendre coefficients t_l and the addition theorem
Σ_m Y_lm(u) Y_lm(v) = P_l(u · v) (:mod:`nft_fw.potential.harmonics`),

    Σ_{j,k} (1 + λ cos θ_jik)^ζ w(r_ij) w(r_ik) = Σ_l t_l Σ_m A_lm²,   A_lm = Σ_j w(r_ij) Y_lm(u_ij),

and the j = k terms, (1 + λ)^ζ Σ_j w(r_ij)², are subtracted. The cost is O(neighbours)
per atom instead of O(neighbours²).

Derivatives are analytic: with S_l(j) = Σ_m A_lm Y_lm(u_j) and Gu_l(j) = Σ_m A_lm ∇Y_lm(u_j)
(a combination of degree-(l−1) harmonics, :func:`nft_fw.potential.harmonics.gradient_matrices`),

    ∂(Σ_m A_lm²) / ∂D_ij = 2 [ (w' − l w / r) S_l u + (w / r) Gu_l ]

so every pair needs a few numbers per feature, and the forces of all ensemble members follow
from one descriptor pass.
"""

from __future__ import annotations

import dataclasses
import functools
import itertools
import math
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from ase import Atoms
from numpy.polynomial import legendre, polynomial

from nft_fw.potential import harmonics
from nft_fw.potential import neighbours as nbl

KIND = "g2-g5-factorised"
BLOCK_ATOMS = 64  # atoms per jitted block when computing features and Jacobians
_EPS = 1e-20  # keeps sqrt differentiable at coincident padded points


class DescriptorFormatError(ValueError):
    """A stored descriptor description this version cannot use."""


@dataclasses.dataclass(frozen=True)
class DescriptorSpec:
    """Symmetry-function settings; all lengths in Å, η in Å⁻².

    ``g2``: (η, Rs) pairs; ``g5``: (η, ζ, λ) triples with integer ζ ≥ 1 and λ = ±1.
    """

    elements: tuple[str, ...]
    cutoff: float
    g2: tuple[tuple[float, float], ...]
    g5: tuple[tuple[float, int, int], ...]

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
        for eta, rs in self.g2:
            if not (eta >= 0 and np.isfinite(eta) and np.isfinite(rs)):
                raise ValueError(f"G2 entry (η={eta}, Rs={rs}) needs a finite η ≥ 0")
        for eta, zeta, lam in self.g5:
            if int(zeta) != zeta or not 1 <= zeta <= 12 or lam not in (-1, 1) or not eta >= 0:
                raise ValueError(
                    f"G5 entry (η={eta}, ζ={zeta}, λ={lam}) needs η ≥ 0, integer 1 ≤ ζ ≤ 12, λ = ±1"
                )

    @classmethod
    def default(
        cls,
        elements: Sequence[str],
        cutoff: float = 6.0,
        n_radial: int = 16,
        r_min: float = 1.8,
        g5_eta: Sequence[float] = (0.005, 0.025),
        g5_zeta: Sequence[int] = (1, 2, 4, 8),
    ) -> DescriptorSpec:
        """Shifted Gaussians on an even grid from ``r_min`` to R_c − 0.3 Å plus a small angular set."""
        centres = np.linspace(r_min, cutoff - 0.3, n_radial)
        width = float(centres[1] - centres[0]) if n_radial > 1 else 0.5
        eta = 1.0 / (2.0 * width**2)
        g2 = tuple((float(eta), float(rs)) for rs in centres)
        g5 = tuple((float(e), int(z), lam) for e in g5_eta for z in g5_zeta for lam in (1, -1))
        return cls(tuple(sorted(set(elements))), float(cutoff), g2, g5)

    @property
    def element_pairs(self) -> tuple[tuple[int, int], ...]:
        n = len(self.elements)
        return tuple((a, b) for a in range(n) for b in range(a, n))

    @property
    def n_g2_features(self) -> int:
        return len(self.elements) * len(self.g2)

    @property
    def families(self) -> tuple[slice, ...]:
        """The features in groups of the same kind and units: the radial functions per
        neighbour element, then the angular ones per element pair (the feature order)."""
        n2, n5 = len(self.g2), len(self.g5)
        radial = tuple(slice(i * n2, (i + 1) * n2) for i in range(len(self.elements)))
        start = self.n_g2_features
        angular = tuple(
            slice(start + i * n5, start + (i + 1) * n5) for i in range(len(self.element_pairs))
        )
        return tuple(f for f in radial + angular if f.stop > f.start)

    @property
    def n_features(self) -> int:
        return self.n_g2_features + len(self.element_pairs) * len(self.g5)

    @property
    def channels(self) -> tuple[float, ...]:
        """The distinct η of the G5 functions: one set of A_lm per η."""
        return tuple(sorted({float(g[0]) for g in self.g5}))

    @property
    def lmax(self) -> int:
        return max((int(g[1]) for g in self.g5), default=0)

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": KIND,
            "elements": list(self.elements),
            "cutoff": self.cutoff,
            "g2": [list(x) for x in self.g2],
            "g5": [list(x) for x in self.g5],
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> DescriptorSpec:
        if d.get("kind") != KIND:
            if "g4" in d:
                raise DescriptorFormatError(
                    "these descriptors use Behler's G4 angular functions (model format 1, "
                    "nft-fw 0.1), which nft-fw 0.2 no longer evaluates (it uses the G5 "
                    "form, which factorises); retrain: run its campaign again "
                    "(docs/upgrading.md)"
                )
            raise DescriptorFormatError(
                f"descriptor kind {d.get('kind')!r} is not {KIND!r}; it was written by "
                "another program or a newer nft-fw"
            )
        return cls(
            tuple(d["elements"]),
            float(d["cutoff"]),
            tuple((float(a), float(b)) for a, b in d["g2"]),
            tuple((float(a), int(b), int(c)) for a, b, c in d["g5"]),
        )


@functools.cache
def _g5_tables(g5: tuple[tuple[float, int, int], ...]) -> tuple[np.ndarray, np.ndarray]:
    """For each G5 function g: ``legendre`` (n_g5, C, L) = 2^(1−ζ) t_l on its channel's row
    (t_l: Legendre coefficients of (1 + λx)^ζ), and ``selfterm`` (n_g5, C) = 2^(1−ζ)(1 + λ)^ζ."""
    channels = sorted({float(g[0]) for g in g5})
    lmax = max((int(g[1]) for g in g5), default=0)
    leg = np.zeros((len(g5), len(channels), lmax + 1))
    self_ = np.zeros((len(g5), len(channels)))
    for i, (eta, zeta, lam) in enumerate(g5):
        c = channels.index(float(eta))
        coef = legendre.poly2leg(polynomial.polypow([1.0, float(lam)], int(zeta)))
        leg[i, c, : len(coef)] = 2.0 ** (1 - zeta) * coef
        self_[i, c] = 2.0 ** (1 - zeta) * (1.0 + lam) ** zeta
    return leg, self_


# ----------------------------------------------------------------------------- block maths


def _series(t2: jax.Array, coefficients: Sequence[float]) -> jax.Array:
    """Σ_k coefficients[k] t2^k by Horner's rule."""
    out = jnp.full_like(t2, coefficients[-1])
    for c in reversed(coefficients[:-1]):
        out = out * t2 + c
    return out


# Taylor coefficients of sin t / t and cos t in t², to t^22: exact to float64 round-off
# for |t| ≤ π/2 (the next terms are below 1e-18).
_SIN = tuple((-1) ** k / math.factorial(2 * k + 1) for k in range(11))
_COS = tuple((-1) ** k / math.factorial(2 * k) for k in range(12))


def _cos_pi(x: jax.Array) -> jax.Array:
    """cos(π x) for x in [0, 1], as −sin(π (x − ½)) by its Taylor polynomial (libm's cos does
    not vectorise on CPU; a polynomial does on every backend)."""
    t = jnp.pi * (x - 0.5)
    return -t * _series(t * t, _SIN)


def _sin_pi(x: jax.Array) -> jax.Array:
    """sin(π x) for x in [0, 1], as cos(π (x − ½))."""
    t = jnp.pi * (x - 0.5)
    return _series(t * t, _COS)


@dataclasses.dataclass(frozen=True)
class _Terms:
    """What the derivatives need of one block (B atoms, W slots, E elements, C channels,
    L = lmax + 1 degrees).

    u (B, W, 3) unit vectors; drad (B, W, K) ∂G2-term/∂r; oh (B, W, E) neighbour elements;
    alpha (B, W, E, C, L), beta (B, W, C), gu (B, W, E, C, L, 3): ∂(Σ_m A_{Z_j} A_{e'})/∂D_ij
    through A_{Z_j} is alpha[e'] u + beta gu[e']; wdw (B, W, C) = 2 w w' (the j = k terms).
    """

    u: jax.Array
    drad: jax.Array
    oh: jax.Array
    alpha: jax.Array
    beta: jax.Array
    gu: jax.Array
    wdw: jax.Array


def block_terms(
    disp: jax.Array, mask: jax.Array, oh_nb: jax.Array, spec: DescriptorSpec
) -> tuple[jax.Array, _Terms, jax.Array]:
    """Features G (B, F) of a block of atoms, the terms of their derivatives, and the
    shortest real pair distance in the block (Å; the caller's overlap check).

    disp: (B, W, 3) D_ij in Å; mask: (B, W) real neighbours; oh_nb: (B, W, E) one-hot
    element of each neighbour.
    """
    dt = disp.dtype
    rc = spec.cutoff
    r = jnp.sqrt(jnp.sum(disp * disp, axis=-1) + _EPS)
    r = jnp.where(mask, r, 2.0 * rc)  # padding: beyond the cutoff
    shortest = jnp.min(r)
    inv_r = 1.0 / r
    u = jnp.where(mask[..., None], disp * inv_r[..., None], 0.0)
    x = jnp.minimum(r / rc, 1.0)
    inside = (r < rc).astype(dt)
    fc = inside * 0.5 * (_cos_pi(x) + 1.0)
    dfc = inside * (-0.5 * jnp.pi / rc) * _sin_pi(x)

    eta2 = jnp.asarray([g[0] for g in spec.g2], dt)
    rs2 = jnp.asarray([g[1] for g in spec.g2], dt)
    dr = r[..., None] - rs2
    ex = jnp.exp(-eta2 * dr * dr)
    drad = ex * (dfc[..., None] - 2.0 * eta2 * dr * fc[..., None])  # (B, W, K)
    g2 = jnp.einsum("bje,bjk->bek", oh_nb, ex * fc[..., None])

    eta5 = jnp.asarray(spec.channels, dt)
    ea = jnp.exp(-eta5 * (r * r)[..., None])
    w = ea * fc[..., None]  # (B, W, C)
    dw = ea * (dfc[..., None] - 2.0 * eta5 * r[..., None] * fc[..., None])
    lmax = spec.lmax
    ylm = [
        jnp.stack(row, axis=-1) for row in harmonics.solid(u[..., 0], u[..., 1], u[..., 2], lmax)
    ]  # l: (B, W, 2l+1)
    amp = [jnp.einsum("bje,bjc,bjm->becm", oh_nb, w, y) for y in ylm]  # (B, E, C, 2l+1)
    power = jnp.stack([jnp.einsum("becm,bfcm->befc", a, a) for a in amp], axis=-1)
    selfsum = jnp.einsum("bje,bjc->bec", oh_nb, w * w)  # the j = k terms
    leg, selft = (jnp.asarray(t, dt) for t in _g5_tables(spec.g5))
    g5 = []
    for a, b in spec.element_pairs:
        term = jnp.einsum("bcl,gcl->bg", power[:, a, b], leg)
        # a = b: drop the j = k terms; a ≠ b: both orders (j in a, k in b) and (j in b, k in a)
        g5.append(term - jnp.einsum("bc,gc->bg", selfsum[:, a], selft) if a == b else 2.0 * term)
    n_atoms = disp.shape[0]
    g = jnp.concatenate([g2.reshape(n_atoms, -1), jnp.concatenate(g5, axis=-1)], axis=-1)

    grads = harmonics.gradient_matrices(lmax)
    s_l, gu_l = [], []
    for d in range(lmax + 1):
        s_l.append(jnp.einsum("becm,bjm->bjec", amp[d], ylm[d]))
        if d == 0:
            gu_l.append(jnp.zeros((*s_l[-1].shape, 3), dt))
        else:
            coef = jnp.einsum("becm,xmn->becxn", amp[d], jnp.asarray(grads[d], dt))
            gu_l.append(jnp.einsum("becxn,bjn->bjecx", coef, ylm[d - 1]))
    s = jnp.stack(s_l, axis=-1)  # (B, W, E, C, L)
    gu = jnp.stack(gu_l, axis=-2)  # (B, W, E, C, L, 3)
    degree = jnp.arange(lmax + 1, dtype=dt)
    w_r = w * inv_r[..., None]
    alpha = (dw[..., None] - degree * w_r[..., None])[:, :, None] * s
    terms = _Terms(u=u, drad=drad, oh=oh_nb, alpha=alpha, beta=w_r, gu=gu, wdw=2.0 * w * dw)
    return g, terms, shortest


def _g5_coefficients(c_g5: jax.Array, spec: DescriptorSpec) -> tuple[jax.Array, jax.Array]:
    """Coefficients of the G5 features (..., P, n_g5) as coefficients of the ordered power
    spectra (..., E, E', C, L) and of the j = k terms (..., E, C): the derivative of
    Σ_f c_f G5_f is Σ_{a, e'} [Z_j = a] c_ord[a, e'] ∂_{A_a}(Σ_m A_a A_e') + Σ_a [Z_j = a]
    c_self[a] ∂(Σ_j w²)."""
    n_el = len(spec.elements)
    leg, selft = (jnp.asarray(t, c_g5.dtype) for t in _g5_tables(spec.g5))
    rows, selfs = [], []
    for a in range(n_el):
        cols = []
        for b in range(n_el):
            p = spec.element_pairs.index((min(a, b), max(a, b)))
            # diagonal: Σ_m A_a A_a depends on A_a twice; off-diagonal: both orders counted
            cols.append(2.0 * jnp.einsum("...g,gcl->...cl", c_g5[..., p, :], leg))
        rows.append(jnp.stack(cols, axis=-3))
        p = spec.element_pairs.index((a, a))
        selfs.append(-jnp.einsum("...g,gc->...c", c_g5[..., p, :], selft))
    return jnp.stack(rows, axis=-4), jnp.stack(selfs, axis=-2)


def block_jacobian(terms: _Terms, spec: DescriptorSpec) -> jax.Array:
    """J (B, W, F, 3) = ∂G_i / ∂D_ij of every slot (zero on padding)."""
    b, w = terms.u.shape[:2]
    j2 = jnp.einsum("bje,bjk,bjx->bjekx", terms.oh, terms.drad, terms.u).reshape(b, w, -1, 3)
    part = (
        terms.alpha[..., None] * terms.u[:, :, None, None, None, :]
        + terms.beta[:, :, None, :, None, None] * terms.gu
    )  # (B, W, E', C, L, 3)
    leg, selft = (jnp.asarray(t, part.dtype) for t in _g5_tables(spec.g5))
    blocks = []
    for a, bb in spec.element_pairs:
        d_power = (
            terms.oh[:, :, a, None, None, None] * part[:, :, bb]
            + terms.oh[:, :, bb, None, None, None] * part[:, :, a]
        )  # ∂(Σ_m A_a A_b) / ∂D_ij: (B, W, C, L, 3)
        jac = jnp.einsum("bjclx,gcl->bjgx", d_power, leg)
        if a == bb:
            self_d = terms.oh[:, :, a, None] * terms.wdw  # (B, W, C)
            jac = jac - jnp.einsum("bjc,gc,bjx->bjgx", self_d, selft, terms.u)
        else:
            jac = 2.0 * jac
        blocks.append(jac)
    return jnp.concatenate([j2, jnp.concatenate(blocks, axis=2)], axis=2)


def block_pair_vectors(terms: _Terms, coef: jax.Array, spec: DescriptorSpec) -> jax.Array:
    """Σ_f coef[m, i, f] ∂G_if / ∂D_ij, (M, B, W, 3), for coefficients coef (M, B, F)
    (∂E^m_i / ∂G_i of every member m)."""
    m, b = coef.shape[:2]
    n_el = len(spec.elements)
    c2 = coef[..., : spec.n_g2_features].reshape(m, b, n_el, len(spec.g2))
    c5 = coef[..., spec.n_g2_features :].reshape(m, b, len(spec.element_pairs), len(spec.g5))
    c_ord, c_self = _g5_coefficients(c5, spec)  # (M, B, E, E', C, L), (M, B, E, C)
    if n_el == 1:
        scalar = (
            jnp.einsum("mbk,bjk->mbj", c2[:, :, 0], terms.drad)
            + jnp.einsum("mbcl,bjcl->mbj", c_ord[:, :, 0, 0], terms.alpha[:, :, 0])
            + jnp.einsum("mbc,bjc->mbj", c_self[:, :, 0], terms.wdw)
        )
        vec = jnp.einsum("mbcl,bjclx,bjc->mbjx", c_ord[:, :, 0, 0], terms.gu[:, :, 0], terms.beta)
    else:
        scalar = (
            jnp.einsum("mbek,bje,bjk->mbj", c2, terms.oh, terms.drad)
            + jnp.einsum("mbefcl,bje,bjfcl->mbj", c_ord, terms.oh, terms.alpha)
            + jnp.einsum("mbec,bje,bjc->mbj", c_self, terms.oh, terms.wdw)
        )
        vec = jnp.einsum("mbefcl,bje,bjfclx,bjc->mbjx", c_ord, terms.oh, terms.gu, terms.beta)
    return scalar[..., None] * terms.u[None] + vec


# ----------------------------------------------------------------------------- structures

ROW_WIDTH_BUCKET = 16  # rows are padded to a multiple of this many slots here


@functools.partial(jax.jit, static_argnums=(3, 4))
def _features_block(
    disp: jax.Array, mask: jax.Array, oh_nb: jax.Array, spec: DescriptorSpec, jacobian: bool
) -> tuple[jax.Array, jax.Array | None, jax.Array]:
    g, terms, shortest = block_terms(disp, mask, oh_nb, spec)
    return g, (block_jacobian(terms, spec) if jacobian else None), shortest


def species_indices(atoms: Atoms, elements: Sequence[str]) -> np.ndarray:
    lookup = {el: i for i, el in enumerate(elements)}
    try:
        return np.array([lookup[s] for s in atoms.get_chemical_symbols()], dtype=np.int32)
    except KeyError as err:
        raise ValueError(
            f"structure contains element {err.args[0]!r}, but the model knows only "
            f"{list(elements)}; use a model trained on {err.args[0]}"
        ) from err


@dataclasses.dataclass
class Rows:
    """Atoms to describe, from one or more structures: disp (R, W, 3) D_ij in Å, mask (R, W),
    species of each slot's neighbour (R, W) and of the atom itself (R,)."""

    disp: np.ndarray
    mask: np.ndarray
    nb_species: np.ndarray
    species: np.ndarray

    @classmethod
    def of(
        cls,
        atoms: Atoms,
        spec: DescriptorSpec,
        rows: np.ndarray | None = None,
        table: nbl.NeighbourTable | None = None,
    ) -> Rows:
        species = species_indices(atoms, spec.elements)
        table = table if table is not None else nbl.build(atoms, spec.cutoff)
        rows = np.arange(len(atoms)) if rows is None else np.asarray(rows, dtype=np.int64)
        return cls(
            disp=table.displacements()[rows],
            mask=table.mask[rows],
            nb_species=species[table.index[rows]],
            species=species[rows],
        )

    @classmethod
    def stack(cls, parts: Sequence[Rows]) -> Rows:
        width = max([p.disp.shape[1] for p in parts], default=0)

        def pad(a: np.ndarray, fill: Any) -> np.ndarray:
            extra = width - a.shape[1]
            spec = [(0, 0), (0, extra)] + [(0, 0)] * (a.ndim - 2)
            return np.pad(a, spec, constant_values=fill)

        return cls(
            disp=np.concatenate([pad(p.disp, 0.0) for p in parts])
            if parts
            else np.zeros((0, 0, 3)),
            mask=np.concatenate([pad(p.mask, False) for p in parts])
            if parts
            else np.zeros((0, 0), bool),
            nb_species=np.concatenate([pad(p.nb_species, 0) for p in parts])
            if parts
            else np.zeros((0, 0), np.int32),
            species=np.concatenate([p.species for p in parts]) if parts else np.zeros(0, np.int32),
        )

    def __len__(self) -> int:
        return len(self.species)


def describe(
    rows: Rows, spec: DescriptorSpec, jacobian: bool = True, dtype: Any = None
) -> tuple[np.ndarray, np.ndarray]:
    """G (R, F) and, when ``jacobian``, J (R, W, F, 3) = ∂G_i/∂D_ij of every row.

    Rows go through one jitted program in blocks of BLOCK_ATOMS with the width padded to a
    multiple of ROW_WIDTH_BUCKET, so structures of any size share a few compiled programs.
    """
    dtype = dtype or jnp.zeros(()).dtype  # float64 only when the caller enabled x64
    n, w = rows.mask.shape if len(rows) else (0, 0)
    n_f = spec.n_features
    if n == 0:
        return np.zeros((0, n_f)), np.zeros((0, w, n_f, 3))
    width = nbl.bucket(max(w, 1), ROW_WIDTH_BUCKET)
    block = BLOCK_ATOMS
    total = -(-n // block) * block
    disp = np.zeros((total, width, 3))
    disp[:n, :w] = rows.disp
    mask = np.zeros((total, width), bool)
    mask[:n, :w] = rows.mask
    onehot = np.zeros((total, width, len(spec.elements)))
    onehot[:n, :w] = np.eye(len(spec.elements))[rows.nb_species]
    onehot *= mask[..., None]
    gs, js = [], []
    for start in range(0, total, block):
        sl = slice(start, start + block)
        g, j, _ = _features_block(
            jnp.asarray(disp[sl], dtype),
            jnp.asarray(mask[sl]),
            jnp.asarray(onehot[sl], dtype),
            spec,
            jacobian,
        )
        gs.append(np.asarray(g))
        if jacobian:
            js.append(np.asarray(j)[:, :w])
    g_all = np.concatenate(gs)[:n]
    j_all = np.concatenate(js)[:n] if jacobian else np.zeros((n, w, n_f, 3))
    return g_all, j_all


def compute(
    atoms: Atoms,
    spec: DescriptorSpec,
    rows: np.ndarray | None = None,
    width: int | None = None,
    dtype: Any = None,
    jacobian: bool = True,
    table: nbl.NeighbourTable | None = None,
) -> tuple[np.ndarray, np.ndarray, nbl.NeighbourTable]:
    """G (n_rows, F) and J (n_rows, width, F, 3) = ∂G_i/∂D_ij for ``rows`` of ``atoms``
    (numpy), with the neighbour table (J is zeros when ``jacobian`` is False). ``table``:
    the neighbour table of ``atoms`` within R_c, when the caller has it."""
    if table is None:
        table = nbl.build(atoms, spec.cutoff, width)
    g, j = describe(Rows.of(atoms, spec, rows, table), spec, jacobian, dtype)
    return g, j, table


def features(atoms: Atoms, spec: DescriptorSpec, dtype: Any = None) -> np.ndarray:
    """G (n_atoms, F) only."""
    return features_many([atoms], spec, dtype)[0]


def features_many(
    structures: Sequence[Atoms], spec: DescriptorSpec, dtype: Any = None
) -> list[np.ndarray]:
    """G (n_atoms, F) of each structure, all rows through one program."""
    parts = [Rows.of(a, spec) for a in structures]
    g, _ = describe(Rows.stack(parts), spec, jacobian=False, dtype=dtype)
    bounds = np.cumsum([0] + [len(p) for p in parts])
    return [g[a:b] for a, b in itertools.pairwise(bounds)]
