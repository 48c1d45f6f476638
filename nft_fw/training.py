"""Bootstrap-ensemble training with the central-atom force loss.

Two kinds of data (Zeng, Chen, Peterson, J. Chem. Phys. 156, 064104 (2022), Sec. III):

* full **images** (the initial bulk cells): energy per atom and every force;
* **chunks**: only the force on the central atom. That force depends only on the
  energies of the atoms within R_c of the centre, so a chunk is stored as those
  atoms' descriptors G_i (P, F) and K_i = ∂G_i/∂R_centre (P, F, 3); the
  prediction is F_c = −Σ_i (∂E_i/∂G_i) · K_i. Labels on the chunk's other atoms
  never enter the loss.

Every member m sees every sample with its own bootstrap weight (Poisson(1),
seeded by the campaign seed, the member and the sample's id, so a sample keeps
its weights when data are added), so all members train in one jitted step.
Shapes are padded to buckets: adding chunks recompiles only when a bucket fills.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import logging
import time
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from ase import Atoms

from nft_fw import descriptors as desc
from nft_fw import model as mdl

log = logging.getLogger(__name__)

ATOM_BUCKET = 64
CHUNK_BUCKET = 128
STEPS_PER_CALL = 50


# ----------------------------------------------------------------------------- data


@dataclasses.dataclass
class Image:
    """A fully labelled structure: energy (eV) and forces (n, 3) eV/Å."""

    atoms: Atoms
    energy: float
    forces: np.ndarray
    id: str


@dataclasses.dataclass
class ChunkFeatures:
    """The part of one chunk the loss needs.

    g: (n_inner, F) descriptors of the atoms within R_c of the centre (centre first);
    k: (n_inner, F, 3) ∂G_i/∂R_centre in Å⁻¹; species: (n_inner,) element indices;
    force: (3,) labelled central force eV/Å; id: the chunk hash.
    """

    g: np.ndarray
    k: np.ndarray
    species: np.ndarray
    force: np.ndarray
    id: str


def structure_id(atoms: Atoms) -> str:
    """A content hash for a full image (numbers, positions, cell, pbc)."""
    h = hashlib.sha256()
    h.update(np.asarray(atoms.numbers, dtype=np.int64).tobytes())
    h.update(np.round(atoms.positions, 6).tobytes())
    h.update(np.round(np.asarray(atoms.cell), 6).tobytes())
    h.update(np.asarray(atoms.pbc, dtype=np.int8).tobytes())
    return h.hexdigest()


def chunk_features(
    chunk: Atoms, force: np.ndarray, spec: desc.DescriptorSpec, chunk_id: str, centre: int = 0
) -> ChunkFeatures:
    """Descriptors of the atoms whose energy depends on the centre, and their K_i."""
    nb = desc.neighbours(chunk, spec)
    inner = np.concatenate([[centre], np.sort(nb.index[centre][nb.mask[centre]])]).astype(np.int64)
    g, jac, _ = desc.compute(chunk, spec, rows=inner, width=nb.width)
    k = np.empty((len(inner), spec.n_features, 3))
    k[0] = -jac[0].sum(axis=0)
    for r, i in enumerate(inner[1:], start=1):
        hit = (nb.index[i] == centre) & nb.mask[i]
        k[r] = jac[r][hit].sum(axis=0)
    return ChunkFeatures(
        g=g,
        k=k,
        species=nb.species[inner],
        force=np.asarray(force, dtype=np.float64).reshape(3),
        id=chunk_id,
    )


@dataclasses.dataclass
class ImageArrays:
    """All images concatenated and padded (one compile per campaign).

    g (A, F), jac (A, W, F, 3), nbr (A, W) global atom indices, oh (A, n_el),
    atom_img (A,) image index, atom_mask (A,), forces (A, 3);
    energy (I,) eV, natoms (I,), img_mask (I,); ids: image ids (real ones only).
    """

    g: np.ndarray
    jac: np.ndarray
    nbr: np.ndarray
    oh: np.ndarray
    atom_img: np.ndarray
    atom_mask: np.ndarray
    forces: np.ndarray
    energy: np.ndarray
    natoms: np.ndarray
    img_mask: np.ndarray
    ids: list[str]

    @property
    def n_atoms(self) -> int:
        return int(self.atom_mask.sum())


def image_arrays(images: Sequence[Image], spec: desc.DescriptorSpec) -> ImageArrays:
    n_el = len(spec.elements)
    nbs = [desc.neighbours(im.atoms, spec) for im in images]
    width = max([nb.width for nb in nbs], default=desc.NEIGHBOUR_BUCKET)
    total = sum(len(im.atoms) for im in images)
    a_pad = desc.bucket(max(total, 1), ATOM_BUCKET)
    i_pad = desc.bucket(max(len(images), 1), 8)
    f = spec.n_features
    out = ImageArrays(
        g=np.zeros((a_pad, f), np.float32),
        jac=np.zeros((a_pad, width, f, 3), np.float32),
        nbr=np.full((a_pad, width), a_pad - 1, np.int32),
        oh=np.zeros((a_pad, n_el), np.float32),
        atom_img=np.full(a_pad, i_pad - 1, np.int32),
        atom_mask=np.zeros(a_pad, np.float32),
        forces=np.zeros((a_pad, 3), np.float32),
        energy=np.zeros(i_pad, np.float32),
        natoms=np.ones(i_pad, np.float32),
        img_mask=np.zeros(i_pad, np.float32),
        ids=[im.id for im in images],
    )
    start = 0
    for i, im in enumerate(images):
        n = len(im.atoms)
        g, jac, nb2 = desc.compute(im.atoms, spec, width=width)
        sl = slice(start, start + n)
        out.g[sl] = g
        out.jac[sl] = jac
        out.nbr[sl] = nb2.index + start
        out.oh[sl] = np.eye(n_el)[nb2.species]
        out.atom_img[sl] = i
        out.atom_mask[sl] = 1.0
        out.forces[sl] = im.forces
        out.energy[i] = im.energy
        out.natoms[i] = n
        out.img_mask[i] = 1.0
        start += n
    return out


@dataclasses.dataclass
class ChunkArrays:
    """Chunks stacked and padded: g (C, P, F), k (C, P, F, 3), oh (C, P, n_el), force (C, 3)."""

    g: np.ndarray
    k: np.ndarray
    oh: np.ndarray
    force: np.ndarray
    ids: list[str]

    @property
    def n(self) -> int:
        return len(self.ids)


def chunk_arrays(
    chunks: Sequence[ChunkFeatures], spec: desc.DescriptorSpec, min_capacity: int
) -> ChunkArrays:
    n_el = len(spec.elements)
    f = spec.n_features
    p = desc.bucket(max([len(c.g) for c in chunks], default=1), desc.NEIGHBOUR_BUCKET)
    p = max(p, 64)
    cap = desc.bucket(max(len(chunks), min_capacity, 1), CHUNK_BUCKET)
    out = ChunkArrays(
        g=np.zeros((cap, p, f), np.float32),
        k=np.zeros((cap, p, f, 3), np.float32),
        oh=np.zeros((cap, p, n_el), np.float32),
        force=np.zeros((cap, 3), np.float32),
        ids=[c.id for c in chunks],
    )
    for i, c in enumerate(chunks):
        n = len(c.g)
        out.g[i, :n] = c.g
        out.k[i, :n] = c.k
        out.oh[i, :n] = np.eye(n_el)[c.species]
        out.oh[i, n:, 0] = 1.0  # padding rows: any element; K = 0 keeps them out of F_c
        out.force[i] = c.force
    return out


def bootstrap_weights(ids: Sequence[str], members: int, seed: int, pad_to: int) -> np.ndarray:
    """Poisson(1) weights (members, pad_to); fixed per (seed, member, sample id)."""
    w = np.zeros((members, pad_to), np.float32)
    for j, sid in enumerate(ids):
        h = int(hashlib.sha256(sid.encode()).hexdigest()[:15], 16)
        for m in range(members):
            w[m, j] = np.random.default_rng([seed, m, h]).poisson(1.0)
    return w


# ----------------------------------------------------------------------------- set-up


def make_ensemble(
    spec: desc.DescriptorSpec,
    arch: mdl.Architecture,
    images: Sequence[Image],
    unlabelled: Sequence[Atoms] = (),
    seed: int = 0,
) -> mdl.Ensemble:
    """A fresh ensemble: descriptor normalisation over the images *and* the unlabelled
    targets (surface atoms are otherwise far outside the bulk statistics), per-element
    reference energies fitted to the images."""
    feats = [desc.features(im.atoms, spec) for im in images]
    feats += [desc.features(a, spec) for a in unlabelled]
    mean, std = mdl.normalisation(feats)
    n_el = len(spec.elements)
    counts = np.array(
        [
            np.bincount(desc.species_indices(im.atoms, spec.elements), minlength=n_el)
            for im in images
        ]
    )
    e_ref = mdl.fit_reference_energies(counts, np.array([im.energy for im in images]))
    params = mdl.init_params(arch, spec.elements, spec.n_features, jax.random.PRNGKey(seed))
    return mdl.Ensemble(spec, arch, params, mean, std, e_ref)


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """Optimiser settings: Adam with a cosine decay from learning_rate to final_learning_rate."""

    steps: int = 1500
    learning_rate: float = 3e-3
    final_learning_rate: float = 3e-4
    batch_chunks: int = 64
    energy_weight: float = 1.0
    force_weight: float = 1.0
    seed: int = 0


# ----------------------------------------------------------------------------- loss


def _image_terms(
    params: mdl.Params, consts: tuple[jax.Array, ...], im: dict[str, jax.Array], activation: str
) -> tuple[jax.Array, jax.Array]:
    """Per-image energy per atom (M, I) and per-atom forces (M, A, 3)."""
    mean, inv_std, e_ref = consts
    e, dg = mdl.atomic_energies(params, im["g"], im["oh"], mean, inv_std, e_ref, activation)
    e = e * im["atom_mask"][None, :]
    v = jnp.einsum("maf,awfx->mawx", dg, im["jac"])
    m, a, w, _ = v.shape
    forces = v.sum(axis=2)
    flat = v.reshape(m, a * w, 3)
    forces = forces - jnp.zeros((m, a, 3), v.dtype).at[:, im["nbr"].reshape(-1)].add(flat)
    n_img = im["energy"].shape[0]
    e_img = jax.vmap(lambda x: jax.ops.segment_sum(x, im["atom_img"], n_img))(e)
    return e_img / im["natoms"][None, :], forces


def _chunk_forces(
    params: mdl.Params,
    consts: tuple[jax.Array, ...],
    g: jax.Array,
    k: jax.Array,
    oh: jax.Array,
    activation: str,
) -> jax.Array:
    """Central forces (M, B, 3) of a batch of chunks: F_c = −Σ_i (∂E_i/∂G_i) · K_i."""
    mean, inv_std, e_ref = consts
    b, p, f = g.shape
    _, dg = mdl.atomic_energies(
        params, g.reshape(b * p, f), oh.reshape(b * p, -1), mean, inv_std, e_ref, activation
    )
    return -jnp.einsum("mbpf,bpfx->mbx", dg.reshape(-1, b, p, f), k)


def _loss(
    params: mdl.Params,
    consts: tuple[jax.Array, ...],
    im: dict[str, jax.Array],
    ch: dict[str, jax.Array],
    w_img: jax.Array,
    w_chunk: jax.Array,
    chunk_scale: jax.Array,
    f_denom: jax.Array,
    energy_weight: float,
    force_weight: float,
    activation: str,
) -> tuple[jax.Array, dict[str, jax.Array]]:
    epa, forces = _image_terms(params, consts, im, activation)
    target_epa = im["energy"] / im["natoms"]
    e_err = (epa - target_epa[None, :]) ** 2
    le = jnp.sum(w_img * e_err, axis=1) / jnp.maximum(jnp.sum(w_img, axis=1), 1e-9)
    w_atom = w_img[:, im["atom_img"]] * im["atom_mask"][None, :]
    f_img = jnp.sum(w_atom * jnp.sum((forces - im["forces"][None]) ** 2, axis=-1), axis=1)
    fc = _chunk_forces(params, consts, ch["g"], ch["k"], ch["oh"], activation)
    f_ch = jnp.sum(w_chunk * jnp.sum((fc - ch["force"][None]) ** 2, axis=-1), axis=1)
    lf = (f_img + chunk_scale * f_ch) / (3.0 * jnp.maximum(f_denom, 1e-9))
    per_member = energy_weight * le + force_weight * lf
    return jnp.sum(per_member), {"energy_mse": jnp.mean(le), "force_mse": jnp.mean(lf)}


_ADAM = optax.scale_by_adam()


def _cosine(step: jax.Array, lr: jax.Array) -> jax.Array:
    """Cosine decay from lr[0] to lr[1] over lr[2] steps."""
    frac = jnp.clip(step / jnp.maximum(lr[2], 1.0), 0.0, 1.0)
    return lr[1] + 0.5 * (lr[0] - lr[1]) * (1.0 + jnp.cos(jnp.pi * frac))


@functools.partial(jax.jit, static_argnames=("steps", "batch", "ew", "fw", "act"))
def _run_steps(
    params: mdl.Params,
    opt_state: Any,
    key: jax.Array,
    step0: jax.Array,
    lr: jax.Array,
    consts: tuple[jax.Array, ...],
    im: dict[str, jax.Array],
    chunks: dict[str, jax.Array],
    w_img: jax.Array,
    w_chunk_all: jax.Array,
    n_chunks: jax.Array,
    f_denom: jax.Array,
    *,
    steps: int,
    batch: int,
    ew: float,
    fw: float,
    act: str,
) -> tuple[mdl.Params, Any, jax.Array, dict[str, jax.Array]]:
    nf = n_chunks.astype(jnp.float32)

    def step(carry: tuple[Any, ...], t: jax.Array) -> tuple[tuple[Any, ...], dict[str, jax.Array]]:
        params, opt_state, key = carry
        key, sub = jax.random.split(key)
        sampled = jnp.floor(jax.random.uniform(sub, (batch,)) * nf).astype(jnp.int32)
        everything = jnp.arange(batch)
        small = n_chunks <= batch
        idx = jnp.where(small, everything, sampled)
        ch = {name: arr[idx] for name, arr in chunks.items()}
        w_chunk = w_chunk_all[:, idx] * jnp.where(small, (everything < n_chunks), 1.0)[None, :]
        scale = jnp.where(small, 1.0, nf / batch)
        (loss, aux), grads = jax.value_and_grad(_loss, has_aux=True)(
            params, consts, im, ch, w_img, w_chunk, scale, f_denom, ew, fw, act
        )
        updates, opt_state = _ADAM.update(grads, opt_state, params)
        rate = _cosine(step0 + t, lr)
        params = jax.tree_util.tree_map(lambda p, u: p - rate * u, params, updates)
        return (params, opt_state, key), {"loss": loss, **aux}

    (params, opt_state, key), hist = jax.lax.scan(
        step, (params, opt_state, key), jnp.arange(steps, dtype=jnp.float32)
    )
    return params, opt_state, key, jax.tree_util.tree_map(lambda x: x[-1], hist)


def train(
    ensemble: mdl.Ensemble,
    images: ImageArrays,
    chunks: Sequence[ChunkFeatures],
    config: TrainConfig,
    progress: Callable[[int, dict[str, float]], None] | None = None,
) -> tuple[mdl.Ensemble, dict[str, float]]:
    """Train (continuing from ``ensemble.params``: a warm start) and return the new ensemble
    with training metrics: loss, energy/force MSE, chunk-force MAE of the mean, seconds."""
    t0 = time.perf_counter()
    spec = ensemble.spec
    m = ensemble.size
    ca = chunk_arrays(chunks, spec, min_capacity=config.batch_chunks)
    w_img = bootstrap_weights(images.ids, m, config.seed, len(images.energy))
    w_img[w_img.sum(axis=1) == 0, : len(images.ids)] = 1.0  # a member must see some image
    w_chunk = bootstrap_weights(ca.ids, m, config.seed + 7919, ca.g.shape[0])
    w_atom = w_img[:, images.atom_img] * images.atom_mask[None, :]
    f_denom = w_atom.sum(axis=1) + w_chunk.sum(axis=1)
    total = -(-config.steps // STEPS_PER_CALL) * STEPS_PER_CALL  # whole calls: one compile
    lr = jnp.asarray([config.learning_rate, config.final_learning_rate, total], jnp.float32)
    params = jax.tree_util.tree_map(lambda a: jnp.asarray(a, jnp.float32), ensemble.params)
    opt_state = _ADAM.init(params)
    consts = ensemble.constants()
    host = {
        "g": images.g,
        "jac": images.jac,
        "nbr": images.nbr,
        "oh": images.oh,
        "atom_img": images.atom_img,
        "atom_mask": images.atom_mask,
        "forces": images.forces,
        "energy": images.energy,
        "natoms": images.natoms,
    }
    im = {k: jnp.asarray(v) for k, v in host.items()}
    ch = {k: jnp.asarray(getattr(ca, k)) for k in ("g", "k", "oh", "force")}
    key = jax.random.PRNGKey(config.seed)
    done = 0
    metrics: dict[str, float] = {"loss": float("nan")}
    while done < total:
        params, opt_state, key, last = _run_steps(
            params,
            opt_state,
            key,
            jnp.asarray(done, jnp.float32),
            lr,
            consts,
            im,
            ch,
            jnp.asarray(w_img),
            jnp.asarray(w_chunk),
            jnp.asarray(ca.n, jnp.int32),
            jnp.asarray(f_denom),
            steps=STEPS_PER_CALL,
            batch=config.batch_chunks,
            ew=config.energy_weight,
            fw=config.force_weight,
            act=ensemble.arch.activation,
        )
        done += STEPS_PER_CALL
        metrics = {k: float(v) for k, v in last.items()}
        if progress is not None:
            progress(done, metrics)
    trained = dataclasses.replace(ensemble, params=params)
    metrics.update(evaluate(trained, images, ca))
    metrics["steps"] = float(total)
    metrics["seconds"] = time.perf_counter() - t0
    return trained, metrics


def evaluate(ensemble: mdl.Ensemble, images: ImageArrays, ca: ChunkArrays) -> dict[str, float]:
    """Errors of the ensemble mean on its own training data (eV/atom, eV/Å)."""
    consts = ensemble.constants()
    act = ensemble.arch.activation
    im = {k: jnp.asarray(getattr(images, k)) for k in ("g", "jac", "nbr", "oh", "atom_img")}
    im["atom_mask"] = jnp.asarray(images.atom_mask)
    im["energy"] = jnp.asarray(images.energy)
    im["natoms"] = jnp.asarray(images.natoms)
    epa, forces = jax.jit(_image_terms, static_argnums=3)(ensemble.params, consts, im, act)
    n_img = len(images.ids)
    e_err = np.asarray(epa).mean(axis=0)[:n_img] - (images.energy / images.natoms)[:n_img]
    mask = images.atom_mask > 0
    f_err = np.linalg.norm(np.asarray(forces).mean(axis=0)[mask] - images.forces[mask], axis=1)
    out = {
        "image_energy_rmse_eV_per_atom": float(np.sqrt(np.mean(e_err**2))),
        "image_force_mae_eV_per_A": float(f_err.mean()),
    }
    if ca.n:
        fc = _chunk_forces_jit(
            ensemble.params, consts, jnp.asarray(ca.g), jnp.asarray(ca.k), jnp.asarray(ca.oh), act
        )
        err = np.linalg.norm(np.asarray(fc).mean(axis=0)[: ca.n] - ca.force[: ca.n], axis=1)
        out["chunk_force_mae_eV_per_A"] = float(err.mean())
    return out


_chunk_forces_jit = jax.jit(_chunk_forces, static_argnums=5)
