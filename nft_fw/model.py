"""Behler–Parrinello ensemble: per-element MLPs on normalised symmetry functions.

The ensemble is a leading axis M on every parameter array, so all members run in
one call. The atomic energy of atom i in member m is

    E_i^m = NN^m_{Z_i}((G_i - μ) / s) + e_ref[Z_i]        (eV)

and E^m = Σ_i E_i^m. Forces come from the input gradient g_i = ∂E_i/∂G_i
(written out by hand for the MLP, faster than ``vmap(grad)``) contracted with
the descriptor Jacobians of :mod:`nft_fw.descriptors`.
"""

from __future__ import annotations

import dataclasses
import functools
import itertools
import json
from collections.abc import Sequence
from typing import Any

import flax.serialization
import jax
import jax.numpy as jnp
import numpy as np
from ase import Atoms

from nft_fw import descriptors as desc

FORMAT_VERSION = 1
Params = dict[str, list[dict[str, jax.Array]]]


@dataclasses.dataclass(frozen=True)
class Architecture:
    """Network shape shared by every element: hidden layer widths, activation, members."""

    hidden_layers: tuple[int, ...] = (25, 25)
    ensemble_size: int = 10
    activation: str = "tanh"

    def __post_init__(self) -> None:
        if self.activation not in _ACTIVATIONS:
            raise ValueError(f"activation {self.activation!r} is not one of {sorted(_ACTIVATIONS)}")
        if self.ensemble_size < 2:
            raise ValueError(
                f"ensemble_size is {self.ensemble_size}; an uncertainty needs at least 2 members"
            )


def _tanh(a: jax.Array) -> tuple[jax.Array, jax.Array]:
    h = jnp.tanh(a)
    return h, 1.0 - h * h


def _silu(a: jax.Array) -> tuple[jax.Array, jax.Array]:
    s = jax.nn.sigmoid(a)
    return a * s, s * (1.0 + a * (1.0 - s))


_ACTIVATIONS = {"tanh": _tanh, "silu": _silu}


def init_params(
    arch: Architecture, elements: Sequence[str], n_features: int, key: jax.Array
) -> Params:
    """LeCun-normal weights, zero biases; arrays carry the member axis first."""
    init = jax.nn.initializers.lecun_normal()
    sizes = [n_features, *arch.hidden_layers, 1]
    params: Params = {}
    for el in elements:
        layers = []
        for a, b in itertools.pairwise(sizes):
            key, sub = jax.random.split(key)
            kernel = jax.vmap(lambda k, a=a, b=b: init(k, (a, b), jnp.float32))(
                jax.random.split(sub, arch.ensemble_size)
            )
            layers.append({"kernel": kernel, "bias": jnp.zeros((arch.ensemble_size, b))})
        params[el] = layers
    return params


def mlp_with_grad(
    layers: list[dict[str, jax.Array]], x: jax.Array, activation: str
) -> tuple[jax.Array, jax.Array]:
    """Ensemble MLP on shared inputs x (n, F): outputs (M, n) and input gradients (M, n, F)."""
    act = _ACTIVATIONS[activation]
    h = x
    derivs = []
    for i, layer in enumerate(layers[:-1]):
        eq = "nf,mfh->mnh" if i == 0 else "mnf,mfh->mnh"
        a = jnp.einsum(eq, h, layer["kernel"]) + layer["bias"][:, None, :]
        h, d = act(a)
        derivs.append(d)
    last = layers[-1]
    if len(layers) == 1:
        out = jnp.einsum("nf,mfo->mno", h, last["kernel"])[..., 0] + last["bias"]
        grad = jnp.broadcast_to(last["kernel"][:, None, :, 0], (*out.shape, x.shape[-1]))
        return out, grad
    out = jnp.einsum("mnf,mfo->mno", h, last["kernel"])[..., 0] + last["bias"]
    up = jnp.broadcast_to(last["kernel"][:, None, :, 0], (*out.shape, h.shape[-1]))
    for layer, d in zip(reversed(layers[1:-1]), reversed(derivs[1:]), strict=True):
        up = jnp.einsum("mnh,mfh->mnf", up * d, layer["kernel"])
    grad = jnp.einsum("mnh,mfh->mnf", up * derivs[0], layers[0]["kernel"])
    return out, grad


def atomic_energies(
    params: Params,
    g: jax.Array,
    species_oh: jax.Array,
    mean: jax.Array,
    inv_std: jax.Array,
    e_ref: jax.Array,
    activation: str,
) -> tuple[jax.Array, jax.Array]:
    """Per-atom energies (M, n) eV and ∂E_i/∂G_i (M, n, F) for descriptors g (n, F)."""
    x = (g - mean) * inv_std
    energy: jax.Array = jnp.zeros(())
    grad: jax.Array = jnp.zeros(())
    for e, el in enumerate(sorted(params)):
        out, dx = mlp_with_grad(params[el], x, activation)
        w = species_oh[:, e]
        energy = energy + out * w[None, :]
        grad = grad + dx * w[None, :, None]
    energy = energy + (species_oh @ e_ref)[None, :]
    return energy, grad * inv_std


@dataclasses.dataclass
class Ensemble:
    """A trained (or freshly initialised) ensemble with everything needed to predict.

    ``mean``/``std``: descriptor normalisation (F,); ``e_ref``: per-element energy
    offsets (eV/atom) fitted to the initial set.
    """

    spec: desc.DescriptorSpec
    arch: Architecture
    params: Params
    mean: np.ndarray
    std: np.ndarray
    e_ref: np.ndarray
    meta: dict[str, Any] = dataclasses.field(default_factory=dict)

    @property
    def elements(self) -> tuple[str, ...]:
        return self.spec.elements

    @property
    def size(self) -> int:
        return self.arch.ensemble_size

    def constants(self, dtype: Any = jnp.float32) -> tuple[jax.Array, jax.Array, jax.Array]:
        return (
            jnp.asarray(self.mean, dtype),
            jnp.asarray(1.0 / self.std, dtype),
            jnp.asarray(self.e_ref, dtype),
        )

    # ------------------------------------------------------------------ prediction

    def predict(self, atoms: Atoms) -> tuple[np.ndarray, np.ndarray]:
        """Member energies (M,) eV and forces (M, n_atoms, 3) eV/Å of one structure.

        Descriptors are computed in blocks inside one jitted function per
        (block, neighbour width), so memory stays flat in the number of atoms.
        """
        nb = desc.neighbours(atoms, self.spec)
        n = len(atoms)
        m = self.size
        energy = np.zeros(m)
        forces = np.zeros((m, n, 3))
        dt = jnp.zeros(()).dtype  # float64 only where the caller enabled x64
        mean, inv_std, e_ref = self.constants(dt)
        params = jax.tree_util.tree_map(lambda a: jnp.asarray(a, dt), self.params)
        n_el = len(self.spec.elements)
        oh_all = np.eye(n_el, dtype=np.float32)[nb.species[nb.index]]
        oh_self = np.eye(n_el, dtype=np.float32)[nb.species]
        block = desc.BLOCK_ATOMS
        # Atoms sorted by neighbour count, each block padded only to its own widest atom:
        # surface atoms (few neighbours) then cost less than bulk ones (G4 work ∝ width²).
        counts = nb.mask.sum(axis=1)
        order = np.argsort(counts, kind="stable")
        for start in range(0, n, block):
            rows = order[start : start + block]
            width = desc.bucket(int(counts[rows].max()), desc.NEIGHBOUR_BUCKET)
            pad = block - len(rows)
            idx = np.concatenate([rows, np.repeat(rows[:1], pad)]) if pad else rows
            valid = np.arange(block) < len(rows)
            e_blk, v_blk = _predict_block(
                params,
                jnp.asarray(nb.disp[idx, :width], dt),
                jnp.asarray(oh_all[idx, :width], dt),
                jnp.asarray(nb.mask[idx, :width] & valid[:, None]),
                jnp.asarray(oh_self[idx], dt),
                mean,
                inv_std,
                e_ref,
                self.spec,
                self.arch.activation,
            )
            e_blk = np.asarray(e_blk, dtype=np.float64)[:, : len(rows)]
            v_blk = np.asarray(v_blk, dtype=np.float64)[:, : len(rows)]  # (M, b, w, 3)
            energy += e_blk.sum(axis=1)
            # F_k = Σ_j v_kj − Σ_{(i,j): j = k} v_ij
            forces[:, rows] += v_blk.sum(axis=2)
            targets = nb.index[rows, :width].ravel()
            flat = v_blk.reshape(m, -1, 3)
            for mi in range(m):
                for x in range(3):
                    forces[mi, :, x] -= np.bincount(targets, weights=flat[mi, :, x], minlength=n)
        return energy, forces

    # ------------------------------------------------------------------ persistence

    def header(self) -> dict[str, Any]:
        return {
            "format": "nft-fw-ensemble",
            "version": FORMAT_VERSION,
            "descriptor": self.spec.to_dict(),
            "architecture": dataclasses.asdict(self.arch),
            "normalisation": {"mean": self.mean.tolist(), "std": self.std.tolist()},
            "e_ref_eV": self.e_ref.tolist(),
            "meta": self.meta,
        }

    def params_bytes(self) -> bytes:
        return flax.serialization.to_bytes(self.params)

    @classmethod
    def from_parts(cls, header: dict[str, Any], params_bytes: bytes) -> Ensemble:
        if header.get("format") != "nft-fw-ensemble":
            raise ValueError(
                f"not an nft-fw model header (format={header.get('format')!r}); "
                "expected one written by Ensemble.save or EnsembleCalculator.save"
            )
        if header.get("version") != FORMAT_VERSION:
            raise ValueError(
                f"model format version {header.get('version')} is not {FORMAT_VERSION}; "
                "re-train or convert it with the nft-fw version that wrote it"
            )
        spec = desc.DescriptorSpec.from_dict(header["descriptor"])
        a = header["architecture"]
        arch = Architecture(tuple(a["hidden_layers"]), int(a["ensemble_size"]), a["activation"])
        template = init_params(arch, spec.elements, spec.n_features, jax.random.PRNGKey(0))
        params = flax.serialization.from_bytes(template, params_bytes)
        return cls(
            spec=spec,
            arch=arch,
            params=jax.tree_util.tree_map(jnp.asarray, params),
            mean=np.asarray(header["normalisation"]["mean"], dtype=np.float64),
            std=np.asarray(header["normalisation"]["std"], dtype=np.float64),
            e_ref=np.asarray(header["e_ref_eV"], dtype=np.float64),
            meta=dict(header.get("meta", {})),
        )

    def to_bytes(self) -> bytes:
        """One self-describing blob: a JSON header line, a newline, then Flax msgpack."""
        return json.dumps(self.header()).encode() + b"\n" + self.params_bytes()

    @classmethod
    def from_bytes(cls, blob: bytes) -> Ensemble:
        head, _, body = blob.partition(b"\n")
        try:
            header = json.loads(head)
        except json.JSONDecodeError as err:
            raise ValueError("model blob does not start with a JSON header line") from err
        return cls.from_parts(header, body)


@functools.partial(jax.jit, static_argnums=(8, 9))
def _predict_block(
    params: Params,
    disp: jax.Array,
    oh_nb: jax.Array,
    mask: jax.Array,
    oh_self: jax.Array,
    mean: jax.Array,
    inv_std: jax.Array,
    e_ref: jax.Array,
    spec: desc.DescriptorSpec,
    activation: str,
) -> tuple[jax.Array, jax.Array]:
    g, jac = jax.vmap(desc._atom, in_axes=(0, 0, 0, None))(disp, oh_nb, mask, spec)
    e, dg = atomic_energies(params, g, oh_self, mean, inv_std, e_ref, activation)
    v = jnp.einsum("mbf,bwfx->mbwx", dg, jac)
    return e, v


def normalisation(features: Sequence[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Mean and standard deviation (F,) over the rows of all feature arrays.

    Features that never vary get a unit scale instead of a division by zero.
    """
    stacked = np.concatenate([np.asarray(f, dtype=np.float64) for f in features])
    mean = stacked.mean(axis=0)
    std = stacked.std(axis=0)
    floor = 1e-3 * max(float(std.max()), 1e-12)
    std = np.where(std > floor, std, 1.0)
    return mean, std


def fit_reference_energies(
    counts: np.ndarray, energies: np.ndarray, ridge: float = 1e-8
) -> np.ndarray:
    """Per-element energies (n_el,) eV minimising Σ_b (E_b − counts_b · e)²."""
    a = np.asarray(counts, dtype=np.float64)
    b = np.asarray(energies, dtype=np.float64)
    return np.linalg.solve(a.T @ a + ridge * np.eye(a.shape[1]), a.T @ b)
