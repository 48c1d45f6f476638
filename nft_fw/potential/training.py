"""Bootstrap-ensemble training with the central-atom force loss.

Two kinds of data (Zeng, Chen, Peterson, J. Chem. Phys. 156, 064104 (2022), Sec. III):

* full **images** (the initial bulk cells): energy per atom and every force;
* **chunks**: only the force on the central atom. That force depends only on the
  energies of the atoms within R_c of the centre, so a chunk is stored as those
  atoms' descriptors G_i (P, F) and K_i = ∂G_i/∂R_centre (P, F, 3); the
  prediction is F_c = −Σ_i (∂E_i/∂G_i) · K_i. Labels on the chunk's other atoms
  never enter the loss.

Every member m sees every sample with its own bootstrap weight (Poisson(1), seeded by
the training's seed — the campaign seed and the iteration —, the member and the sample's
id, so within a training it does not depend on the order or number of the other
samples), so all members train in one jitted step; the samples
a member's weights leave out (about 37 %) are its out-of-bag test set, whose loss each
training reports (``out_of_bag_loss``). With ``bootstrap`` off (``training.bootstrap:
false``) every member weighs every sample 1 and the members differ only by their initial
weights. The optimiser is Adam with a cosine learning-rate
decay (optax), for the campaign's fixed number of steps, each on all images and one batch
of chunk descriptor rows.
Chunks are packed into fixed-size batches of descriptor rows (no per-chunk padding);
adding chunks recompiles only when the number of batches passes a power of two.
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

from nft_fw.potential import descriptors as desc
from nft_fw.potential import model as mdl
from nft_fw.potential import neighbours as nbl

log = logging.getLogger(__name__)

ROWS_PER_BATCH = 1024  # descriptor rows per chunk batch
CHUNKS_PER_BATCH = 48  # chunk slots per batch (the last one takes padding rows)
STEPS_PER_CALL = 100  # optimiser steps per jitted call
MIN_BATCHES = 16  # batch capacity (about 400 chunks) below which nothing recompiles


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


def chunk_features(
    chunk: Atoms, force: np.ndarray, spec: desc.DescriptorSpec, chunk_id: str, centre: int = 0
) -> ChunkFeatures:
    """Descriptors of the atoms whose energy depends on the centre, and their K_i."""
    return chunk_features_many([(chunk, force, chunk_id)], spec, centre)[0]


def chunk_features_many(
    chunks: Sequence[tuple[Atoms, np.ndarray, str]], spec: desc.DescriptorSpec, centre: int = 0
) -> list[ChunkFeatures]:
    """:func:`chunk_features` of (atoms, central force, id) triples, all rows in one pass."""
    parts, inner_rows, tables = [], [], []
    for atoms, _, _ in chunks:
        table = nbl.build(atoms, spec.cutoff)
        inner = np.concatenate([[centre], np.sort(table.index[centre][table.mask[centre]])]).astype(
            np.int64
        )
        parts.append(desc.Rows.of(atoms, spec, inner, table))
        inner_rows.append(inner)
        tables.append(table)
    g_all, j_all = desc.describe(desc.Rows.stack(parts), spec)
    out, start = [], 0
    for (_, force, chunk_id), part, inner, table in zip(
        chunks, parts, inner_rows, tables, strict=True
    ):
        n, w = len(inner), table.width
        g, jac = g_all[start : start + n], j_all[start : start + n, :w]
        start += n
        k = np.empty((n, spec.n_features, 3))
        k[0] = -jac[0].sum(axis=0)
        for r, i in enumerate(inner[1:], start=1):
            hit = (table.index[i] == centre) & table.mask[i]
            k[r] = jac[r][hit].sum(axis=0)
        out.append(
            ChunkFeatures(
                g=g,
                k=k,
                species=part.species,
                force=np.asarray(force, dtype=np.float64).reshape(3),
                id=chunk_id,
            )
        )
    return out


MAX_IMAGE_ATOMS = 512  # dense per-image Jacobians cost n² · F · 3 floats


@dataclasses.dataclass
class ImageGroup:
    """Images of up to ``n`` atoms, padded to ``n``: g (I, n, F), oh (I, n, E),
    dmat (I, n, F, n, 3) = ∂G_if / ∂R_ax (periodic images of a summed in), atom_mask (I, n),
    forces (I, n, 3) eV/Å, energy (I,) eV, natoms (I,); ``order``: the images' positions in
    ImageArrays.ids."""

    g: np.ndarray
    oh: np.ndarray
    dmat: np.ndarray
    atom_mask: np.ndarray
    forces: np.ndarray
    energy: np.ndarray
    natoms: np.ndarray
    order: list[int]


@dataclasses.dataclass
class ImageArrays:
    """The fully labelled images, grouped by size (powers of two) so that each group's
    forces are one dense batched product: F_a = −Σ_i (∂E_i/∂G_i) · ∂G_i/∂R_a."""

    groups: list[ImageGroup]
    ids: list[str]

    @property
    def n_atoms(self) -> int:
        return int(sum(g.atom_mask.sum() for g in self.groups))


def image_arrays(images: Sequence[Image], spec: desc.DescriptorSpec) -> ImageArrays:
    n_el = len(spec.elements)
    f = spec.n_features
    big = [len(im.atoms) for im in images if len(im.atoms) > MAX_IMAGE_ATOMS]
    if big:
        raise ValueError(
            f"an initial image has {max(big)} atoms; images of at most {MAX_IMAGE_ATOMS} atoms "
            "are supported (bulk cells: a few to a few tens of atoms)"
        )
    tables = [nbl.build(im.atoms, spec.cutoff) for im in images]
    parts = [desc.Rows.of(im.atoms, spec, table=t) for im, t in zip(images, tables, strict=True)]
    g_all, j_all = desc.describe(desc.Rows.stack(parts), spec)
    starts = np.cumsum([0] + [len(im.atoms) for im in images])
    sizes = {i: max(4, 1 << (len(im.atoms) - 1).bit_length()) for i, im in enumerate(images)}
    groups = []
    for n in sorted(set(sizes.values())):
        order = [i for i in range(len(images)) if sizes[i] == n]
        k = len(order)
        grp = ImageGroup(
            g=np.zeros((k, n, f), np.float32),
            oh=np.zeros((k, n, n_el), np.float32),
            dmat=np.zeros((k, n, f, n, 3), np.float32),
            atom_mask=np.zeros((k, n), np.float32),
            forces=np.zeros((k, n, 3), np.float32),
            energy=np.zeros(k, np.float32),
            natoms=np.zeros(k, np.float32),
            order=order,
        )
        for slot, i in enumerate(order):
            im, table = images[i], tables[i]
            na = len(im.atoms)
            jac = j_all[starts[i] : starts[i] + na, : table.width]  # (na, W, F, 3)
            grp.g[slot, :na] = g_all[starts[i] : starts[i] + na]
            grp.oh[slot, :na] = np.eye(n_el)[parts[i].species]
            dmat = np.zeros((na, f, na, 3))
            rows = np.arange(na)
            dmat[rows, :, rows, :] -= jac.sum(axis=1)  # ∂D_ij/∂R_i = −1
            ii, ss = np.nonzero(table.mask)
            jj = table.index[ii, ss]
            for f_idx in range(f):  # ∂D_ij/∂R_j = +1 (periodic copies of j add up)
                np.add.at(dmat[:, f_idx], (ii, jj), jac[ii, ss, f_idx])
            grp.dmat[slot, :na, :, :na] = dmat
            grp.atom_mask[slot, :na] = 1.0
            grp.forces[slot, :na] = im.forces
            grp.energy[slot] = im.energy
            grp.natoms[slot] = na
        groups.append(grp)
    return ImageArrays(groups=groups, ids=[im.id for im in images])


@dataclasses.dataclass
class ChunkBatches:
    """Chunks packed into fixed-size batches of descriptor rows, with no per-chunk padding.

    Batch b holds the rows of up to S chunks: g (NB, R, F), k (NB, R, F, 3), oh (NB, R, E),
    seg (NB, R) the slot (0..S−1) of each row's chunk, with padding rows on slot S − 1 of
    a K of zero; force (NB, S, 3) the labelled central forces; slot (C, 2) the (batch, slot)
    of chunk c; ``used`` batches hold chunks, the rest (up to a capacity of a power of two,
    at least MIN_BATCHES) are empty, so adding chunks recompiles the trainer only when that
    capacity doubles; a step computes only the batches it picks.
    """

    g: np.ndarray
    k: np.ndarray
    oh: np.ndarray
    seg: np.ndarray
    force: np.ndarray
    slot: np.ndarray
    used: int
    ids: list[str]

    @property
    def n(self) -> int:
        return len(self.ids)

    @property
    def n_batches(self) -> int:
        return int(self.g.shape[0])

    @property
    def slots(self) -> int:
        return int(self.force.shape[1])


def pack_chunks(
    chunks: Sequence[ChunkFeatures],
    spec: desc.DescriptorSpec,
    rows: int = ROWS_PER_BATCH,
    slots: int = CHUNKS_PER_BATCH,
) -> ChunkBatches:
    """Pack chunks in order into batches of at most ``rows`` rows and ``slots`` − 1 chunks."""
    n_el = len(spec.elements)
    f = spec.n_features
    longest = max([len(c.g) for c in chunks], default=1)
    if longest > rows:
        raise ValueError(
            f"a chunk has {longest} atoms within R_c of its centre, more than a batch "
            f"holds ({rows}); the cutoff is too large for this packing"
        )
    where = []
    batch, used_rows, used_slots = 0, 0, 0
    for c in chunks:
        if used_rows + len(c.g) > rows or used_slots == slots - 1:
            batch, used_rows, used_slots = batch + 1, 0, 0
        where.append((batch, used_rows, used_slots))
        used_rows += len(c.g)
        used_slots += 1
    used = batch + 1 if chunks else 0
    cap = max(MIN_BATCHES, 1 << max(used - 1, 0).bit_length())
    out = ChunkBatches(
        g=np.zeros((cap, rows, f), np.float32),
        k=np.zeros((cap, rows, f, 3), np.float32),
        oh=np.zeros((cap, rows, n_el), np.float32),
        seg=np.full((cap, rows), slots - 1, np.int32),
        force=np.zeros((cap, slots, 3), np.float32),
        slot=np.zeros((len(chunks), 2), np.int64),
        used=used,
        ids=[c.id for c in chunks],
    )
    out.oh[..., 0] = 1.0  # padding rows: any element; K = 0 keeps them out of every force
    for i, (c, (b, r0, sl)) in enumerate(zip(chunks, where, strict=True)):
        r = slice(r0, r0 + len(c.g))
        out.g[b, r] = c.g
        out.k[b, r] = c.k
        out.oh[b, r] = np.eye(n_el)[c.species]
        out.seg[b, r] = sl
        out.force[b, sl] = c.force
        out.slot[i] = (b, sl)
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
    scale_floor: float | None = None,
) -> mdl.Ensemble:
    """A fresh ensemble: descriptor normalisation over the images *and* the unlabelled
    targets (surface atoms are otherwise far outside the bulk statistics; ``scale_floor``:
    :func:`nft_fw.potential.model.normalisation`), per-element reference energies fitted to
    the images."""
    feats = desc.features_many([im.atoms for im in images] + list(unlabelled), spec)
    mean, std = mdl.normalisation(feats, scale_floor, spec.families)
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
    """Adam with a cosine decay from ``learning_rate`` to ``final_learning_rate`` over
    ``steps`` steps (rounded up to whole calls of STEPS_PER_CALL); each step takes every
    image and ``batches`` randomly chosen chunk batches (all of them when there are no more).
    """

    steps: int = 1500
    learning_rate: float = 3e-3
    final_learning_rate: float = 3e-4
    batches: int = 1
    energy_weight: float = 1.0
    force_weight: float = 1.0
    bootstrap: bool = True
    seed: int = 0

    def __post_init__(self) -> None:
        if self.steps < 0 or self.batches < 1:
            raise ValueError(f"TrainConfig needs steps ≥ 0 and batches ≥ 1, got {self}")


# ----------------------------------------------------------------------------- loss


def _image_terms(
    params: mdl.Params, consts: tuple[jax.Array, ...], grp: dict[str, jax.Array], activation: str
) -> tuple[jax.Array, jax.Array]:
    """Energy per atom (M, I) and forces (M, I, n, 3) of one image group."""
    mean, inv_std, e_ref = consts
    k, n, f = grp["g"].shape
    e, dg = mdl.atomic_energies(
        params, grp["g"].reshape(k * n, f), grp["oh"].reshape(k * n, -1),
        mean, inv_std, e_ref, activation,
    )  # fmt: skip
    m = e.shape[0]
    e = (e.reshape(m, k, n) * grp["atom_mask"][None]).sum(axis=2)
    forces = -jnp.einsum("mibf,ibfax->miax", dg.reshape(m, k, n, f), grp["dmat"])
    return e / jnp.maximum(grp["natoms"], 1.0)[None], forces


def _chunk_forces(
    params: mdl.Params,
    consts: tuple[jax.Array, ...],
    ch: dict[str, jax.Array],
    activation: str,
) -> jax.Array:
    """Central forces (NB, M, S, 3) of chunk batches: F_c = −Σ_{i in c} (∂E_i/∂G_i) · K_i,
    all rows of all batches through the networks at once."""
    nb, rows, f = ch["g"].shape
    slots = ch["force"].shape[1]
    if nb == 0:  # no chunks yet
        m = jax.tree_util.tree_leaves(params)[0].shape[0]
        return jnp.zeros((0, m, slots, 3), ch["g"].dtype)
    mean, inv_std, e_ref = consts
    _, dg = mdl.atomic_energies(
        params, ch["g"].reshape(nb * rows, f), ch["oh"].reshape(nb * rows, -1),
        mean, inv_std, e_ref, activation,
    )  # fmt: skip
    per_row = -jnp.einsum("mnf,nfx->mnx", dg, ch["k"].reshape(nb * rows, f, 3))
    per_row = per_row.reshape(-1, nb, rows, 3)
    onehot = jax.nn.one_hot(ch["seg"], slots, dtype=per_row.dtype)  # (NB, R, S)
    return jnp.einsum("mbrx,brs->bmsx", per_row, onehot)


def _member_losses(
    params: mdl.Params,
    consts: tuple[jax.Array, ...],
    data: dict[str, Any],
    weights: dict[str, Any],
    ew: float,
    fw: float,
    activation: str,
) -> jax.Array:
    """Each member's loss (M,) under per-sample ``weights``: ew · weighted MSE of the energy
    per atom + fw · weighted MSE of the force components (image atoms and chunk centres)."""
    m = jax.tree_util.tree_leaves(params)[0].shape[0]
    le_num = jnp.zeros(m)
    le_den = jnp.zeros(m)
    f_sum = jnp.zeros(m)
    f_den = jnp.zeros(m)
    for grp, w in zip(data["im"], weights["img"], strict=True):
        epa, forces = _image_terms(params, consts, grp, activation)
        target = grp["energy"] / jnp.maximum(grp["natoms"], 1.0)
        le_num = le_num + jnp.sum(w * (epa - target[None]) ** 2, axis=1)
        le_den = le_den + jnp.sum(w, axis=1)
        sq = jnp.sum((forces - grp["forces"][None]) ** 2, axis=-1) * grp["atom_mask"][None]
        f_sum = f_sum + jnp.sum(w * jnp.sum(sq, axis=2), axis=1)
        f_den = f_den + jnp.sum(w * grp["natoms"][None], axis=1)
    ch = data["ch"]
    fc = _chunk_forces(params, consts, ch, activation)  # (NB, M, S, 3)
    err = jnp.sum((fc - ch["force"][:, None]) ** 2, axis=-1)  # (NB, M, S)
    f_sum = f_sum + jnp.einsum("bms,mbs->m", err, weights["chunk"])
    f_den = f_den + jnp.sum(weights["chunk"], axis=(1, 2))
    le = le_num / jnp.maximum(le_den, 1e-9)
    return ew * le + fw * f_sum / (3.0 * jnp.maximum(f_den, 1e-9))


def _cosine(step: jax.Array, lr: jax.Array) -> jax.Array:
    """Cosine decay from lr[0] to lr[1] over lr[2] steps."""
    frac = jnp.clip(step / jnp.maximum(lr[2], 1.0), 0.0, 1.0)
    return lr[1] + 0.5 * (lr[0] - lr[1]) * (1.0 + jnp.cos(jnp.pi * frac))


def _optimizer(lr: jax.Array) -> optax.GradientTransformation:
    """Adam with the cosine-decayed learning rate (``lr``: start, end, steps); optax counts
    the steps in its state, so successive jitted calls continue the schedule."""
    return optax.chain(
        optax.scale_by_adam(),
        optax.scale_by_schedule(lambda count: -_cosine(count.astype(jnp.float32), lr)),
    )


@functools.partial(jax.jit, static_argnames=("steps", "batches", "ew", "fw", "act"))
def _adam_run(
    params: mdl.Params,
    opt_state: Any,
    key: jax.Array,
    lr: jax.Array,
    consts: tuple[jax.Array, ...],
    data: dict[str, Any],
    weights: dict[str, jax.Array],
    *,
    steps: int,
    batches: int,
    ew: float,
    fw: float,
    act: str,
) -> tuple[mdl.Params, Any, jax.Array, jax.Array]:
    """``steps`` Adam steps; each takes every image and ``batches`` of the used chunk
    batches at random (all of them when ``batches`` equals their number), the chunk term
    scaled to stand for all used batches."""
    optimizer = _optimizer(lr)
    used = data["used"]
    capacity = data["ch"]["g"].shape[0]
    scale = used.astype(jnp.float32) / max(batches, 1)

    def step(carry: tuple[Any, ...], _t: jax.Array) -> tuple[tuple[Any, ...], jax.Array]:
        p, st, k = carry
        k, sub = jax.random.split(k)
        noise = jax.random.uniform(sub, (capacity,)) + (jnp.arange(capacity) >= used)
        pick = jnp.argsort(noise)[:batches]  # distinct used batches
        d = {**data, "ch": {name: v[pick] for name, v in data["ch"].items()}}
        w = {**weights, "chunk": weights["chunk"][:, pick] * scale}
        loss, grads = jax.value_and_grad(
            lambda q: jnp.sum(_member_losses(q, consts, d, w, ew, fw, act))
        )(p)
        updates, st = optimizer.update(grads, st, p)
        p = optax.apply_updates(p, updates)
        return (p, st, k), loss

    (params, opt_state, key), losses = jax.lax.scan(
        step, (params, opt_state, key), jnp.arange(steps, dtype=jnp.float32)
    )
    return params, opt_state, key, losses[-1]


_member_losses_jit = jax.jit(_member_losses, static_argnames=("ew", "fw", "activation"))


def _weights(
    images: ImageArrays, cb: ChunkBatches, members: int, seed: int, bootstrap: bool = True
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Bootstrap weights of every sample and the out-of-bag indicators (weight 0); without
    ``bootstrap`` every member weighs every sample 1 (no out-of-bag samples)."""
    if bootstrap:
        w_img = bootstrap_weights(images.ids, members, seed, len(images.ids))
        w_img[w_img.sum(axis=1) == 0] = 1.0  # a member must see some image
        flat = bootstrap_weights(cb.ids, members, seed + 7919, cb.n)
    else:
        w_img = np.ones((members, len(images.ids)), np.float32)
        flat = np.ones((members, cb.n), np.float32)
    w_chunk = np.zeros((members, cb.n_batches, cb.slots), np.float32)
    real = np.zeros((cb.n_batches, cb.slots), np.float32)
    if cb.n:
        w_chunk[:, cb.slot[:, 0], cb.slot[:, 1]] = flat
        real[cb.slot[:, 0], cb.slot[:, 1]] = 1.0
    train = {"img": [w_img[:, g.order] for g in images.groups], "chunk": w_chunk}
    oob = {
        "img": [(w_img[:, g.order] == 0).astype(np.float32) for g in images.groups],
        "chunk": (w_chunk == 0) * real[None],
    }
    return train, oob


def _data(images: ImageArrays, cb: ChunkBatches) -> dict[str, Any]:
    im = [
        {
            k: jnp.asarray(getattr(g, k))
            for k in ("g", "oh", "dmat", "atom_mask", "forces", "energy", "natoms")
        }
        for g in images.groups
    ]
    ch = {k: jnp.asarray(getattr(cb, k)) for k in ("g", "k", "oh", "seg", "force")}
    return {"im": im, "ch": ch, "used": jnp.asarray(cb.used, jnp.int32)}


def _device(tree: Any) -> Any:
    return jax.tree_util.tree_map(jnp.asarray, tree)


def train(
    ensemble: mdl.Ensemble,
    images: ImageArrays,
    chunks: Sequence[ChunkFeatures],
    config: TrainConfig,
    progress: Callable[[int, dict[str, float]], None] | None = None,
) -> tuple[mdl.Ensemble, dict[str, float]]:
    """Train (continuing from ``ensemble.params``: a warm start) and return the new ensemble
    with metrics: loss, out-of-bag loss, steps taken, errors of the ensemble mean on the
    training data (eV/atom, eV/Å), seconds."""
    t0 = time.perf_counter()
    m = ensemble.size
    # Packed in a seeded random order, so that every batch mixes chunks of all iterations.
    shuffled = [chunks[i] for i in np.random.default_rng(config.seed).permutation(len(chunks))]
    cb = pack_chunks(shuffled, ensemble.spec)
    w_train, w_oob = _weights(images, cb, m, config.seed, config.bootstrap)
    data = _data(images, cb)
    weights = _device(w_train)
    oob_w = _device(w_oob)
    consts = ensemble.constants()
    act = ensemble.arch.activation
    kw = {"ew": config.energy_weight, "fw": config.force_weight}
    params = jax.tree_util.tree_map(lambda a: jnp.asarray(a, jnp.float32), ensemble.params)
    key = jax.random.PRNGKey(config.seed)
    every = min(STEPS_PER_CALL, max(config.steps, 1))
    total = -(-config.steps // every) * every  # whole calls: one compiled program
    lr = jnp.asarray([config.learning_rate, config.final_learning_rate, total], jnp.float32)
    opt_state = _optimizer(lr).init(params)
    batches = min(config.batches, cb.used)  # 0: no chunks yet
    done, loss = 0, float("nan")
    while done < total:
        params, opt_state, key, last = _adam_run(
            params,
            opt_state,
            key,
            lr,
            consts,
            data,
            weights,
            steps=every,
            batches=batches,
            act=act,
            **kw,
        )
        done += every
        loss = float(last)
        if progress is not None:
            progress(done, {"loss": loss})
        if not np.isfinite(loss):
            raise FloatingPointError(
                f"training diverged at step {done} (loss {loss}); lower training.learning_rate"
            )
    trained = dataclasses.replace(ensemble, params=params)
    oob = np.asarray(_member_losses_jit(params, consts, data, oob_w, activation=act, **kw))
    has_oob = (sum(w.sum(axis=1) for w in w_oob["img"]) + w_oob["chunk"].sum(axis=(1, 2))) > 0
    metrics: dict[str, float] = {"loss": loss}
    if has_oob.all():  # each member's loss on the samples its bootstrap left out
        metrics["out_of_bag_loss"] = float(oob.mean())
    metrics.update(evaluate(trained, images, cb))
    metrics["steps"] = float(done)
    metrics["seconds"] = time.perf_counter() - t0
    log.debug("trained %d steps in %.1f s: %s", done, metrics["seconds"], metrics)
    return trained, metrics


@functools.partial(jax.jit, static_argnums=(3,))
def _mean_predictions(
    params: mdl.Params, consts: tuple[jax.Array, ...], data: dict[str, Any], act: str
) -> tuple[list[tuple[jax.Array, jax.Array]], jax.Array]:
    images = []
    for grp in data["im"]:
        epa, forces = _image_terms(params, consts, grp, act)
        images.append((epa.mean(axis=0), forces.mean(axis=0)))
    return images, _chunk_forces(params, consts, data["ch"], act).mean(axis=1)


def evaluate(ensemble: mdl.Ensemble, images: ImageArrays, cb: ChunkBatches) -> dict[str, float]:
    """Errors of the ensemble mean on its own training data (eV/atom, eV/Å)."""
    per_group, fc = _mean_predictions(
        ensemble.params, ensemble.constants(), _data(images, cb), ensemble.arch.activation
    )
    e_err, f_err = [], []
    for grp, (epa, forces) in zip(images.groups, per_group, strict=True):
        e_err.append(np.asarray(epa) - grp.energy / grp.natoms)
        mask = grp.atom_mask > 0
        f_err.append(np.linalg.norm(np.asarray(forces)[mask] - grp.forces[mask], axis=1))
    out: dict[str, float] = {}
    if e_err:
        e = np.concatenate(e_err)
        out["image_energy_rmse_eV_per_atom"] = float(np.sqrt(np.mean(e**2)))
        out["image_force_mae_eV_per_A"] = float(np.concatenate(f_err).mean())
    if cb.n:
        pred = np.asarray(fc)[cb.slot[:, 0], cb.slot[:, 1]]
        true = cb.force[cb.slot[:, 0], cb.slot[:, 1]]
        out["chunk_force_mae_eV_per_A"] = float(np.linalg.norm(pred - true, axis=1).mean())
    return out
