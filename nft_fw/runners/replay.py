"""Replay: the NFT training of a campaign re-run on its stored labels alone, no parent call.

A label export (:mod:`nft_fw.labels.files`) holds every chunk with the NFT iteration that asked
for it. :func:`replay` trains iteration k on the initial images and the chunks of
iterations ≤ k, exactly as the campaign's own step does (:func:`nft_fw.steps.step.nft_step`: the
same warm start, seeds and records), for any model and training settings: with the
settings the labels were made with it gives the campaign's history again; with others, the
history those settings would have had on the same chunks. Each iteration's record carries
δ on the target, the out-of-sample error on the next iteration's chunks (the campaign's
``oos_*``: the model before it trained on them), what the stopping rule decided, and — with
whole-structure reference labels (``nft_kind: full``) — the true-force errors on each.

:func:`noise_floor` is the best any nearsighted model trained on those chunks can do
against the whole structure: each chunk's central force against the whole-structure force
of the same atom. :func:`cross_validate` scores settings on the chunks alone (folds of
chunks held out of training: random, or one per phase), for choosing settings without the
reference.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
from ase import Atoms

from nft_fw.labels.label import ChunkLabel
from nft_fw.labels.phase import Phase
from nft_fw.labels.prior import PriorLabel, PriorLabels
from nft_fw.potential import model as mdl
from nft_fw.potential import training as tr
from nft_fw.spec.campaign import Prepared
from nft_fw.steps import decision
from nft_fw.steps.step import (
    FeatureMemo,
    NFTInputs,
    Prediction,
    chunk_out_of_sample,
    error_figures,
    fit,
    nft_step,
)


@dataclasses.dataclass(frozen=True)
class Reference:
    """A whole-structure label: ``atoms`` and the parent's ``forces`` (n, 3) eV/Å."""

    name: str
    atoms: Atoms
    forces: np.ndarray


def images(prior: PriorLabels) -> list[tr.Image]:
    """The initial images of a label file."""
    return [
        tr.Image(
            atoms=lb.structure(),
            energy=float(lb.energy or 0.0),
            forces=lb.forces.copy(),
            id=lb.hash,
        )
        for lb in prior.labels.values()
        if lb.kind == "image"
    ]


def _chunk(lb: PriorLabel) -> ChunkLabel:
    return ChunkLabel(
        centre=int(lb.centre if lb.centre is not None else 0),
        iteration=lb.number,
        hash=lb.hash,
        radius=float(lb.radius or 0.0),
        atoms=lb.structure(),
        energy=float(lb.energy or 0.0),
        forces=lb.forces.copy(),
        seconds=float(lb.seconds or 0.0),
        phase=Phase.NFT,
    )


def nft_chunks(prior: PriorLabels) -> list[ChunkLabel]:
    """The NFT chunks of a label file (relaxation and other chunks left out)."""
    return [
        _chunk(lb) for lb in prior.labels.values() if lb.kind == "chunk" and lb.phase == Phase.NFT
    ]


def references(prior: PriorLabels, name: str) -> list[Reference]:
    """The whole-structure labels of a file, named ``name`` (``name#k`` when several)."""
    full = [lb for lb in prior.labels.values() if lb.kind == "full"]
    return [
        Reference(name if len(full) == 1 else f"{name}#{k}", lb.structure(), lb.forces.copy())
        for k, lb in enumerate(full)
    ]


def same_structure(a: Atoms, b: Atoms, tol: float = 1e-6) -> bool:
    """Whether two structures hold the same atoms in the same order (to ``tol`` Å)."""
    return (
        len(a) == len(b)
        and np.array_equal(a.numbers, b.numbers)
        and bool(np.allclose(a.positions, b.positions, rtol=0.0, atol=tol))
    )


def noise_floor(chunks: Sequence[ChunkLabel], reference: Reference) -> dict[str, Any]:
    """Each chunk's central force against the reference's force on the same atom of the
    structure it was cut from (the reference must be that structure): MAE, max and RMS of
    |F_chunk,centre − F_whole,atom| (eV/Å) over ``n`` chunks, and each chunk's error."""
    if not chunks:
        return {"n": 0}
    idx = np.asarray([c.centre for c in chunks], dtype=int)
    err = np.linalg.norm(
        np.asarray([c.central_force for c in chunks]) - reference.forces[idx], axis=1
    )
    return {
        "n": len(chunks),
        "mae": float(err.mean()),
        "max": float(err.max()),
        "rms": float(np.sqrt(np.mean(err**2))),
        "errors": {int(c.centre): float(e) for c, e in zip(chunks, err, strict=True)},
    }


Progress = Callable[[dict[str, Any]], None]


def replay(
    prepared: Prepared,
    image_labels: Sequence[tr.Image],
    chunks: Sequence[ChunkLabel],
    refs: Sequence[Reference] = (),
    last_iteration: int | None = None,
    progress: Progress | None = None,
) -> list[dict[str, Any]]:
    """Iterations 0 … ``last_iteration`` (default: the last iteration of ``chunks``) of NFT
    training on the given labels; returns their records. The reference whose structure is
    the campaign's target scores each iteration as the campaign's ``validation`` would
    (``true_force_*``, and the calibration of δ); every reference also goes into the
    record's ``references`` (name → MAE/max, eV/Å). The record's ``decision`` says what the
    stopping rule would have done there (replay goes on regardless)."""
    last = (
        max((c.iteration for c in chunks), default=0) if last_iteration is None else last_iteration
    )
    on_target = next((r for r in refs if same_structure(r.atoms, prepared.target)), None)
    true_forces = None if on_target is None else on_target.forces
    memo = FeatureMemo()
    history: list[dict[str, Any]] = []
    previous: mdl.Ensemble | None = None
    prediction: Prediction | None = None
    for k in range(last + 1):
        out = nft_step(
            NFTInputs(
                prepared, k, image_labels, [c for c in chunks if c.iteration <= k], previous,
                history, prediction, true_forces, features=memo,
            )
        )  # fmt: skip
        record = dict(out.record)
        record["decision"] = (
            "continue"
            if isinstance(out.decision, decision.Continue)
            else f"stop: {out.decision.reason} (keep {out.decision.best_iteration})"
        )
        record["references"] = {}
        for ref in refs:
            _, forces = out.ensemble.predict(ref.atoms)
            record["references"][ref.name] = error_figures(forces.mean(axis=0), ref.forces)
        history.append(record)
        if progress is not None:
            progress(record)
        previous = mdl.Ensemble.from_bytes(out.ensemble.to_bytes())  # as a campaign stores it
        prediction = Prediction(out.assessment.mean_forces, out.assessment.delta)
    return history


CV_BY = ("random", "phase")


def cross_validate(
    prepared: Prepared,
    image_labels: Sequence[tr.Image],
    chunks: Sequence[ChunkLabel],
    folds: int = 5,
    seed: int = 0,
    by: str = "random",
) -> dict[str, Any]:
    """Cross-validation over chunks: fresh ensembles (the campaign's settings,
    ``training.initial_steps``), each trained on the images and the other folds' chunks,
    scored on its held-out chunks' central forces (the model's force on a chunk's centre
    equals its force on that atom of the structure: chunk radius ≥ 2·R_c). Returns the MAE,
    max and RMS over every chunk (eV/Å) and the MAE per fold; no reference involved.

    ``by``: ``random``: ``folds`` folds drawn at random (``seed``); ``phase``: one fold per
    phase the chunks come from (NFT, relax, MD …), each scored by a model trained on the
    others — a model asked about a kind of structure it has no label of, as a transfer
    target or a new trajectory asks it. Random folds share environments (neighbouring frames
    of one trajectory) between training and test; they reward fitting those closely, which
    phase folds, like a larger particle, do not (docs/gpaw.md, "Longer training fits the
    chunks, not the larger particle")."""
    if by == "phase":
        names = sorted({str(c.phase) for c in chunks})
        if len(names) < 2:
            raise ValueError(
                f"cross-validation by phase needs chunks of two phases or more; these "
                f"{len(chunks)} are of {', '.join(names) or 'no phase'} only: use by='random'"
            )
        parts = [np.array([i for i, c in enumerate(chunks) if str(c.phase) == n]) for n in names]
    elif by == "random":
        if len(chunks) < folds:
            raise ValueError(f"{len(chunks)} chunks cannot make {folds} folds")
        order = np.random.default_rng(seed).permutation(len(chunks))
        parts = np.array_split(order, folds)
        names = [str(k) for k in range(folds)]
    else:
        raise ValueError(f"cross-validation by {by!r}: use one of {', '.join(CV_BY)}")
    memo = FeatureMemo()
    errors = np.zeros(len(chunks))
    per_fold = []
    for part in parts:
        held = set(int(i) for i in part)
        train = [c for i, c in enumerate(chunks) if i not in held]
        test = [chunks[i] for i in part]
        trained = fit(prepared, image_labels, train, None, 0, memo)
        oos = chunk_out_of_sample(
            trained.ensemble, [c.atoms for c in test], [c.central_force for c in test]
        )
        errors[part] = oos["oos_errors"]
        per_fold.append(oos["oos_mae"])
    return {
        "n": len(chunks),
        "by": by,
        "folds": len(parts),
        "fold_names": names,
        "fold_sizes": [len(part) for part in parts],
        "mae": float(errors.mean()),
        "max": float(errors.max()),
        "rms": float(np.sqrt(np.mean(errors**2))),
        "fold_mae": per_fold,
    }


def summary_rows(history: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """One table row per replayed iteration (the figures bench/dft_replay.py prints)."""
    rows = []
    for k, r in enumerate(history):
        after = history[k + 1] if k + 1 < len(history) else {}
        row = {
            "iteration": r["iteration"],
            "chunks": r["n_chunks"],
            "delta_max": r["structure_uncertainty"],
            "delta_mean": r["mean_uncertainty"],
            "calibrated_delta_max": r.get("calibrated_structure_uncertainty"),
            # this model on the next iteration's chunks, before it trained on them
            "next_oos_mae": after.get("oos_mae"),
            "next_oos_max": after.get("oos_max"),
            "decision": r["decision"],
        }
        for name, fig in r["references"].items():
            row[f"{name}_mae"] = fig["true_force_mae"]
            row[f"{name}_max"] = fig["true_force_max"]
        rows.append(row)
    return rows
