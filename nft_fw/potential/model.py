"""Behler–Parrinello ensemble: per-element MLPs on normalised symmetry functions.

The ensemble is a leading axis M on every parameter array, so all members run in
one call. The atomic energy of atom i in member m is

    E_i^m = NN^m_{Z_i}((G_i - μ) / s) + e_ref[Z_i]        (eV)

and E^m = Σ_i E_i^m. Forces come from the input gradient g_i = ∂E_i/∂G_i
(written out by hand for the MLP, faster than ``vmap(grad)``) contracted with
the descriptor Jacobians of :mod:`nft_fw.potential.descriptors`.
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

from nft_fw.potential import baseline as bl
from nft_fw.potential import descriptors as desc
from nft_fw.potential import neighbours as nbl
from nft_fw.potential.uncertainty import Z_99

FORMAT_VERSION = 3  # a model with a baseline (Δ-learning, nft-fw 0.6) is written as 3
PLAIN_FORMAT_VERSION = 2  # a model without one is written as 2, readable by nft-fw 0.2-0.5
Params = dict[str, list[dict[str, jax.Array]]]


class ModelFormatError(ValueError):
    """A stored model this version of nft-fw cannot read."""


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
    offsets (eV/atom) fitted to the initial set; ``baseline``: the physical potential the
    networks are trained on top of (:mod:`nft_fw.potential.baseline`; ``"none"``: the networks alone).
    Every prediction (:meth:`evaluate`, :meth:`predict`) includes the baseline; δ does not
    depend on it.
    """

    spec: desc.DescriptorSpec
    arch: Architecture
    params: Params
    mean: np.ndarray
    std: np.ndarray
    e_ref: np.ndarray
    meta: dict[str, Any] = dataclasses.field(default_factory=dict)
    baseline: str = "none"
    _device: dict[str, Any] = dataclasses.field(
        default_factory=dict, init=False, repr=False, compare=False
    )
    _baseline: bl.Evaluator | None = dataclasses.field(
        default=None, init=False, repr=False, compare=False
    )

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

    def device_params(self, dtype: Any) -> tuple[Params, tuple[jax.Array, jax.Array, jax.Array]]:
        """Parameters and normalisation constants as ``dtype`` device arrays (cached)."""
        key = str(dtype)
        cached = self._device.get(key)
        if cached is None or cached[0] is not self.params:
            params = jax.tree_util.tree_map(lambda a: jnp.asarray(a, dtype), self.params)
            cached = (self.params, params, self.constants(dtype))
            self._device[key] = cached
        return cached[1], cached[2]

    # ------------------------------------------------------------------ prediction

    def evaluate(
        self,
        atoms: Atoms,
        table: nbl.NeighbourTable | None = None,
        members: bool = False,
    ) -> Evaluation:
        """Energies of every member, the ensemble-mean forces and δ of one structure.

        ``table``: a neighbour table of ``atoms`` (possibly built with a skin, for an
        earlier configuration; see :func:`nft_fw.potential.neighbours.is_stale`); default: built
        here. ``members``: also return every member's forces (M, n, 3).
        Raises ValueError (named) for an element the model does not know, non-finite
        positions or overlapping atoms, before any result is returned.
        """
        species = desc.species_indices(atoms, self.spec.elements)
        nbl.check_finite(atoms)
        if table is None:
            table = nbl.build(atoms, self.spec.cutoff)
        elif len(table.numbers) != len(atoms):
            raise ValueError(
                f"the neighbour table holds {len(table.numbers)} atoms, the structure "
                f"{len(atoms)}; rebuild it with nft_fw.potential.neighbours.build"
            )
        out = _evaluate(self, table, np.asarray(atoms.positions, np.float64), species, members)
        if self.baseline == "none":
            return out
        if self._baseline is None or self._baseline.name != self.baseline:
            self._baseline = bl.Evaluator(self.baseline)
        energy, forces = self._baseline(atoms)
        return Evaluation(
            energies=out.energies + energy,
            forces=out.forces + forces,
            delta=out.delta,
            member_forces=None if out.member_forces is None else out.member_forces + forces,
        )

    def predict(self, atoms: Atoms) -> tuple[np.ndarray, np.ndarray]:
        """Member energies (M,) eV and forces (M, n_atoms, 3) eV/Å of one structure."""
        out = self.evaluate(atoms, members=True)
        assert out.member_forces is not None
        return out.energies, out.member_forces

    # ------------------------------------------------------------------ persistence

    def header(self) -> dict[str, Any]:
        header = {
            "format": "nft-fw-ensemble",
            "version": PLAIN_FORMAT_VERSION if self.baseline == "none" else FORMAT_VERSION,
            "descriptor": self.spec.to_dict(),
            "architecture": dataclasses.asdict(self.arch),
            "normalisation": {"mean": self.mean.tolist(), "std": self.std.tolist()},
            "e_ref_eV": self.e_ref.tolist(),
            "meta": self.meta,
        }
        if self.baseline != "none":  # an nft-fw that ignored it would predict nonsense
            header["baseline"] = {"name": self.baseline}
        return header

    def params_bytes(self) -> bytes:
        return flax.serialization.to_bytes(self.params)

    @classmethod
    def from_parts(cls, header: dict[str, Any], params_bytes: bytes) -> Ensemble:
        if header.get("format") != "nft-fw-ensemble":
            raise ValueError(
                f"not an nft-fw model header (format={header.get('format')!r}); "
                "expected one written by Ensemble.save or EnsembleCalculator.save"
            )
        if header.get("version") == 1:
            raise ModelFormatError(
                "this model is format 1 (nft-fw 0.1: G4 angular descriptors); nft-fw 0.2 "
                f"reads format {FORMAT_VERSION} (factorised G5 descriptors) only and cannot "
                "convert it. Retrain: run its campaign again with nft-fw 0.2 "
                "(docs/upgrading.md)"
            )
        if header.get("version") not in (PLAIN_FORMAT_VERSION, FORMAT_VERSION):
            raise ModelFormatError(
                f"model format version {header.get('version')} is not {PLAIN_FORMAT_VERSION} "
                f"or {FORMAT_VERSION}; it was written by a newer nft-fw: upgrade nft-fw to "
                "read it"
            )
        baseline = str((header.get("baseline") or {}).get("name", "none"))
        if (baseline != "none") != (header["version"] == FORMAT_VERSION) or (
            baseline not in bl.NAMES
        ):
            raise ModelFormatError(
                f"model header of format {header['version']} names baseline {baseline!r}: "
                f"format {FORMAT_VERSION} carries one of {list(bl.NAMES[1:])}, format "
                f"{PLAIN_FORMAT_VERSION} none; the file was altered or written by another tool"
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
            baseline=baseline,
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


@dataclasses.dataclass
class Evaluation:
    """One structure through the ensemble: member energies (M,) eV, mean forces (n, 3)
    eV/Å, δ (n,) eV/Å (Eq. (1) of Zeng, Chen, Peterson, J. Chem. Phys. 156, 064104
    (2022)) and, when asked for, every member's forces (M, n, 3) eV/Å."""

    energies: np.ndarray
    forces: np.ndarray
    delta: np.ndarray
    member_forces: np.ndarray | None = None


def layout(n_atoms: int) -> tuple[int, int]:
    """(atoms per block, blocks) for a structure of ``n_atoms``: as few blocks of at most 128
    atoms as hold it on a CPU (a block's work stays in cache; accelerators take 1,024), each
    shrunk to a multiple of 8 that fits, so padding stays within a few per cent."""
    big = 128 if jax.default_backend() == "cpu" else 1024
    blocks = max(-(-n_atoms // big), 1)
    block = max(8, -(-max(-(-n_atoms // blocks), 1) // 8) * 8)
    return block, blocks


def _device_table(
    table: nbl.NeighbourTable, cutoff: float, block: int, cap: int, dt: Any
) -> dict[str, Any]:
    """The table padded to ``cap`` rows (dummy atom ``cap`` on padding) as device arrays,
    cached on the table: between neighbour-list rebuilds only positions change."""
    key = ("device", cutoff, block, cap, str(dt))
    if key in table.cache:
        return dict(table.cache[key])
    n, width = table.index.shape
    index = np.full((cap, width), cap, np.int32)
    index[:n] = np.where(table.mask, table.index, cap)
    shift = np.zeros((cap, width, 3))
    shift[:n] = table.shift
    mask = np.zeros((cap, width), bool)
    mask[:n] = table.mask
    inner = None
    if table.radius > cutoff + 1e-9:
        # A skin table: each block keeps only the slots within R_c (compacted on the
        # device); ``inner`` slots hold them, with room for atoms moving in.
        r = np.linalg.norm(table.displacements(), axis=-1)
        most = int(((r < cutoff) & table.mask).sum(axis=1).max(initial=0))
        inner = min(width, nbl.bucket(most + 1) + nbl.WIDTH_BUCKET)
    out = {
        "index": jnp.asarray(index.reshape(-1, block, width)),
        "shift": jnp.asarray(shift.reshape(-1, block, width, 3), dt),
        "mask": jnp.asarray(mask.reshape(-1, block, width)),
        "valid": jnp.asarray((np.arange(cap) < n).reshape(-1, block)),
        "inner": inner,
    }
    table.cache[key] = out
    return dict(out)


def _evaluate(
    ens: Ensemble,
    table: nbl.NeighbourTable,
    positions: np.ndarray,
    species: np.ndarray,
    members: bool,
) -> Evaluation:
    n = len(species)
    block, n_blocks = layout(n)
    cap = n_blocks * block
    dt = jnp.zeros(()).dtype  # float64 only where the caller enabled x64
    dev = _device_table(table, ens.spec.cutoff, block, cap, dt)
    onehot = np.zeros((cap + 1, len(ens.spec.elements)))
    onehot[np.arange(n), species] = 1.0
    pos = np.zeros((cap + 1, 3))
    pos[:n] = positions - (positions.mean(axis=0) if n else 0.0)  # small numbers for float32
    params, consts = ens.device_params(dt)
    while True:
        e_blocks, f_mean, delta, f_members, shortest, most = _evaluate_jit(
            params,
            consts,
            jnp.asarray(pos, dt),
            dev["index"],
            dev["shift"],
            dev["mask"],
            jnp.asarray(onehot, dt),
            dev["valid"],
            spec=ens.spec,
            activation=ens.arch.activation,
            members=members,
            inner=dev["inner"],
        )
        if dev["inner"] is None or int(most) <= dev["inner"]:
            break
        # more neighbours within R_c than the compacted slots hold: widen and redo
        dev["inner"] = min(table.width, nbl.bucket(int(most)) + nbl.WIDTH_BUCKET)
        table.cache[("device", ens.spec.cutoff, block, cap, str(dt))]["inner"] = dev["inner"]
    if n and float(shortest) < nbl.MIN_DISTANCE:
        r = np.where(table.mask, np.linalg.norm(table.displacements(positions), axis=-1), np.inf)
        i, s = np.unravel_index(int(np.argmin(r)), r.shape)
        nbl.check_distances(
            np.array([i]), np.array([table.index[i, s]]), np.array([r[i, s]]), nbl.MIN_DISTANCE
        )
    return Evaluation(
        energies=np.asarray(e_blocks, np.float64).sum(axis=0),
        forces=np.asarray(f_mean, np.float64)[:n],
        delta=np.asarray(delta, np.float64)[:n],
        member_forces=None if f_members is None else np.asarray(f_members, np.float64)[:, :n],
    )


def _compact(
    disp: jax.Array, idx: jax.Array, mask: jax.Array, cutoff: float, inner: int, dummy: int
) -> tuple[jax.Array, jax.Array, jax.Array, jax.Array]:
    """Keep the slots of each row within ``cutoff``, moved to the front of ``inner`` slots.

    Returns disp (B, inner, 3), idx (B, inner), mask (B, inner) and the largest count of
    slots within the cutoff (rows with more lose slots: the caller must check it).
    """
    b, w = idx.shape
    keep = mask & (jnp.sum(disp * disp, axis=-1) < cutoff * cutoff)
    count = jnp.sum(keep, axis=1)
    slot = jnp.where(keep, jnp.cumsum(keep, axis=1) - 1, inner)  # ``inner``: dropped
    rows = jnp.broadcast_to(jnp.arange(b)[:, None], (b, w))
    new_idx = jnp.full((b, inner), dummy, idx.dtype).at[rows, slot].set(idx, mode="drop")
    new_disp = jnp.zeros((b, inner, 3), disp.dtype).at[rows, slot].set(disp, mode="drop")
    new_mask = jnp.arange(inner)[None, :] < count[:, None]
    return new_disp, new_idx, new_mask, jnp.max(count)


@functools.partial(jax.jit, static_argnames=("spec", "activation", "members", "inner"))
def _evaluate_jit(
    params: Params,
    consts: tuple[jax.Array, jax.Array, jax.Array],
    pos: jax.Array,
    index: jax.Array,
    shift: jax.Array,
    mask: jax.Array,
    onehot: jax.Array,
    valid: jax.Array,
    *,
    spec: desc.DescriptorSpec,
    activation: str,
    members: bool,
    inner: int | None,
) -> tuple[jax.Array, jax.Array, jax.Array, jax.Array | None, jax.Array, jax.Array]:
    """Scan over blocks of atoms: descriptors, member energies and pair vectors, forces.

    pos (N+1, 3) Å with a dummy last atom; index/shift/mask (n_blocks, B, W); onehot (N+1, E);
    valid (n_blocks, B); ``inner``: compact each row to this many slots within R_c (for
    tables built with a skin). Returns block energy sums (n_blocks, M), mean forces (N+1, 3),
    δ (N+1,), member forces (M, N+1, 3) when ``members``, the shortest pair distance and
    the largest neighbour count within R_c (0 without compaction).
    """
    mean, inv_std, e_ref = consts
    m = jax.tree_util.tree_leaves(params)[0].shape[0]
    n_blocks, block, _ = index.shape
    dummy = pos.shape[0] - 1
    centres = jnp.arange(n_blocks * block, dtype=index.dtype).reshape(n_blocks, block)

    def body(
        carry: tuple[jax.Array, jax.Array, jax.Array], xs: tuple[jax.Array, ...]
    ) -> tuple[tuple[jax.Array, jax.Array, jax.Array], jax.Array]:
        forces, shortest, most = carry
        cen, idx, sh, mk, ok = xs
        cen = jnp.where(ok, cen, dummy)
        disp = pos[idx] - pos[cen][:, None, :] + sh
        if inner is not None:
            disp, idx, mk, count = _compact(disp, idx, mk, spec.cutoff, inner, dummy)
            most = jnp.maximum(most, count.astype(most.dtype))
        g, terms, short = desc.block_terms(disp, mk, onehot[idx], spec)
        e, dg = atomic_energies(params, g, onehot[cen], mean, inv_std, e_ref, activation)
        v = desc.block_pair_vectors(terms, dg, spec)  # (M, B, W, 3) = ∂E_i/∂D_ij
        forces = forces.at[:, cen].add(v.sum(axis=2))
        forces = forces.at[:, idx.reshape(-1)].add(-v.reshape(m, -1, 3))
        e_sum = jnp.sum(e * ok[None, :], axis=1)
        return (forces, jnp.minimum(shortest, short), most), e_sum

    init = (
        jnp.zeros((m, pos.shape[0], 3), pos.dtype),
        jnp.asarray(jnp.inf, pos.dtype),
        jnp.asarray(0, jnp.int32),
    )
    (forces, shortest, most), e_blocks = jax.lax.scan(
        body, init, (centres, index, shift, mask, valid)
    )
    mean_f = forces.mean(axis=0)
    dev = forces - mean_f[None]
    delta = Z_99 * jnp.sqrt(jnp.sum(dev * dev, axis=(0, 2)) / (m - 1))
    return e_blocks, mean_f, delta, (forces if members else None), shortest, most


def normalisation(
    features: Sequence[np.ndarray],
    scale_floor: float | None = None,
    families: Sequence[slice] = (),
) -> tuple[np.ndarray, np.ndarray]:
    """Mean and scale (F,) over the rows of all feature arrays.

    Without ``scale_floor`` the scale is each feature's standard deviation, and features
    that never vary get a unit scale instead of a division by zero. With it, each feature's
    scale is at least ``scale_floor`` times the largest standard deviation in its family
    (``families``: slices of features in the same units, e.g.
    :attr:`DescriptorSpec.families`): a feature that hardly varies in the data (a narrow
    radial function between two neighbour shells) then stays near zero after scaling where
    a new structure puts a neighbour there, instead of arriving tens of deviations out,
    where the networks were never constrained.
    """
    stacked = np.concatenate([np.asarray(f, dtype=np.float64) for f in features])
    mean = stacked.mean(axis=0)
    std = stacked.std(axis=0)
    if scale_floor is None:
        floor = 1e-3 * max(float(std.max()), 1e-12)
        return mean, np.where(std > floor, std, 1.0)
    if not 0.0 < scale_floor <= 1.0:
        raise ValueError(f"scale_floor is {scale_floor}; it must be in (0, 1]")
    out = std.copy()
    for family in families or (slice(0, len(std)),):
        top = float(std[family].max()) if std[family].size else 0.0
        if top <= 1e-12:  # a family that never varies: unit scale
            out[family] = 1.0
        else:
            out[family] = np.maximum(std[family], scale_floor * top)
    return mean, out


def fit_reference_energies(
    counts: np.ndarray, energies: np.ndarray, ridge: float = 1e-8
) -> np.ndarray:
    """Per-element energies (n_el,) eV minimising Σ_b (E_b − counts_b · e)²."""
    a = np.asarray(counts, dtype=np.float64)
    b = np.asarray(energies, dtype=np.float64)
    return np.linalg.solve(a.T @ a + ridge * np.eye(a.shape[1]), a.T @ b)
