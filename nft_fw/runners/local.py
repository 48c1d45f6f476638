"""The local runner: a whole campaign in this process, for notebooks, tests and benchmarks.

:func:`run_locally` calls :func:`nft_fw.steps.step.nft_step` once per iteration,
:func:`relax_locally` calls :func:`nft_fw.steps.step.relax_step` once per relax round and
:func:`md_locally` calls :func:`nft_fw.steps.step.md_step` once per MD segment; between calls
they label the chunks the step asks for with the parent, in memory. The trainer, relax and
MD Fireworks call the same functions (:mod:`nft_fw.firetasks.iteration`,
:mod:`nft_fw.firetasks.relax`, :mod:`nft_fw.firetasks.md`), so a campaign gives
the same history here as through the service.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from ase import Atoms

from nft_fw.labels import files as labelset
from nft_fw.labels.label import ChunkLabel
from nft_fw.labels.phase import Phase
from nft_fw.potential import model as mdl
from nft_fw.potential import training as tr
from nft_fw.potential.calculator import EnsembleCalculator
from nft_fw.spec.campaign import CampaignSpec, MDSpec, Prepared, RelaxSpec, load_campaign, prepare
from nft_fw.steps import decision, overlap
from nft_fw.steps import md as md_mod
from nft_fw.steps.kept import calibration_meta, kept_record
from nft_fw.steps.relax import Trajectory
from nft_fw.steps.step import (
    ChunkRequest,
    FeatureMemo,
    MDInputs,
    NFTInputs,
    Prediction,
    RelaxInputs,
    TransferInputs,
    initial_structures,
    label_chunk,
    label_structure,
    md_start,
    md_start_structure,
    md_step,
    nft_step,
    relax_start,
    relax_step,
    request_atoms,
    seed_requests,
    target_forces,
    transfer_step,
)
from nft_fw.structures import initial as init_mod
from nft_fw.structures.atoms_io import extxyz_text, read_extxyz_text

log = logging.getLogger(__name__)


def initial_images(prepared: Prepared) -> list[tr.Image]:
    """Labelled initial images: from ``initial.file`` or generated and labelled by the parent."""
    if prepared.initial_frames is not None:
        return init_mod.from_file_frames(prepared.initial_frames)
    return init_mod.label(
        initial_structures(prepared), lambda atoms: label_structure(prepared, atoms)
    )


# ----------------------------------------------------------------------------- NFT


@dataclasses.dataclass
class LocalResult:
    """What :func:`run_locally` returns. ``calculator`` holds the kept iteration's model;
    ``true_forces``: the parent's forces on the target when ``validation.true_forces``."""

    history: list[dict[str, Any]]
    calculator: EnsembleCalculator
    best_iteration: int
    stop: decision.Stop
    labels: list[ChunkLabel]
    prepared: Prepared
    images: list[tr.Image] = dataclasses.field(default_factory=list)
    true_forces: np.ndarray | None = None
    features: FeatureMemo = dataclasses.field(default_factory=FeatureMemo)


Progress = Callable[[dict[str, Any]], None]


def _rich_progress() -> Progress:
    from rich.console import Console

    console = Console(stderr=True, soft_wrap=True)

    def show(record: dict[str, Any]) -> None:
        text = (
            f"[bold]{record['campaign']}[/] iteration {record['iteration']:>2}: "
            f"chunks {record['n_chunks']:>4} (+{record['new_chunks']}), "
            f"δ max {record['structure_uncertainty']:.3f} mean {record['mean_uncertainty']:.3f} "
            f"eV/Å, loss {record['training']['loss']:.4g}, "
            f"train {record['training']['seconds']:.0f} s"
        )
        if "true_force_mae" in record:
            text += f", true MAE {record['true_force_mae']:.3f} max {record['true_force_max']:.3f}"
        if "calibration_scale" in record:
            text += f", calibrated δ = {record['calibration_scale']:.2f}·δ"
        console.print(text)

    return show


def run_locally(
    campaign: CampaignSpec | Mapping[str, Any] | str | Path,
    progress: bool | Progress = True,
    save_to: str | Path | None = None,
    arrivals: Sequence[Mapping[str, Any]] | None = None,
) -> LocalResult:
    """Run a whole NFT campaign in this process and return its history and kept model.

    ``progress``: True shows one line per iteration on stderr; a callable receives each
    iteration record instead. ``save_to``: a directory where the kept model is saved.
    ``arrivals`` (``nft.rounds: overlapping`` only): the NFT records of a service run of the
    campaign, whose ``arrived`` and ``failed_centres`` say which chunks each of its trainers
    saw; the run then trains on the same sets and gives the same history. Without them the
    chunks in flight arrive in the order they were asked for (:mod:`nft_fw.steps.overlap`).
    """
    spec = campaign if isinstance(campaign, CampaignSpec) else load_campaign(campaign)
    if arrivals is not None and spec.nft.rounds != "overlapping":
        raise ValueError(
            f"campaign {spec.name}: arrivals replay overlapping rounds, and nft.rounds is "
            f"{spec.nft.rounds}; leave arrivals out"
        )
    prepared = prepare(spec)
    show: Progress | None = _rich_progress() if progress is True else (progress or None)
    true_forces = target_forces(prepared) if spec.validation.true_forces else None
    images = initial_images(prepared)
    labels: list[ChunkLabel] = []
    memo = FeatureMemo()
    history: list[dict[str, Any]] = []
    blobs: list[bytes] = []
    previous: mdl.Ensemble | None = None
    prediction: Prediction | None = None
    iteration = 0
    # overlapping rounds: asked for, not yet arrived — from the start, the seed chunks
    flight: list[ChunkRequest] = seed_requests(prepared)
    seeded = [r.centre for r in flight]
    failed: set[int] = set()
    if flight:  # the seed chunks that arrive before trainer 0 (while the images are labelled)
        if arrivals is not None:
            _check_seeds(prepared, seeded, arrivals)
        _label_new(prepared, _arriving(prepared, flight, failed, 0, arrivals), labels)
    while True:
        out = nft_step(
            NFTInputs(
                prepared, iteration, images, labels, previous, history, prediction,
                true_forces, failed_centres=failed, features=memo, seeded=seeded,
            )
        )  # fmt: skip
        history.append(out.record)
        blobs.append(out.ensemble.to_bytes())
        log.info(
            "campaign %s iteration %d: %d chunks, δ max %.3f eV/Å",
            spec.name, iteration, len(labels), out.record["structure_uncertainty"],
        )  # fmt: skip
        if show is not None:
            show(out.record)
        if isinstance(out.decision, decision.Stop):
            stop = out.decision
            break
        # the next iteration starts from this model as the service does: as stored
        previous = mdl.Ensemble.from_bytes(blobs[-1])
        prediction = Prediction(out.assessment.mean_forces, out.assessment.delta)
        iteration += 1
        arriving = out.requests
        if spec.nft.rounds == "overlapping":
            flight.extend(out.requests)
            arriving = _arriving(prepared, flight, failed, iteration, arrivals)
        _label_new(prepared, arriving, labels)

    kept = mdl.Ensemble.from_bytes(blobs[stop.best_iteration])
    kept.meta.update(calibration_meta(history, spec.name))
    calc = EnsembleCalculator(kept)
    if save_to is not None:
        calc.save(save_to)
    return LocalResult(
        history=history,
        calculator=calc,
        best_iteration=stop.best_iteration,
        stop=stop,
        labels=labels,
        prepared=prepared,
        images=images,
        true_forces=true_forces,
        features=memo,
    )


def _label_new(
    prepared: Prepared, requests: Iterable[ChunkRequest], labels: list[ChunkLabel]
) -> None:
    """Label the requested chunks onto ``labels``, each environment once: a chunk whose
    hash is already there (the same environment cut twice) is not labelled again."""
    seen = {lb.hash for lb in labels}
    for request in requests:
        chunk = request_atoms(request, prepared.target)
        if chunk.hash not in seen:
            seen.add(chunk.hash)
            labels.append(label_chunk(prepared, chunk, request.iteration))


def _check_seeds(
    prepared: Prepared, seeded: Sequence[int], arrivals: Sequence[Mapping[str, Any]]
) -> None:
    """Refuse an arrivals record whose seed chunks are not the ones this campaign asks for."""
    first = [r for r in arrivals if r["iteration"] == 0]
    recorded = first[0].get("seeded") if first else None
    if recorded is not None and sorted(int(c) for c in recorded) != sorted(seeded):
        raise ValueError(
            f"campaign {prepared.spec.name}: the arrivals record's seed chunks (iteration 0, "
            f"{len(recorded)} centres) are not the {len(seeded)} this campaign asks for; the "
            "record is of another campaign or other settings"
        )


def _arriving(
    prepared: Prepared,
    flight: list[ChunkRequest],
    failed: set[int],
    iteration: int,
    arrivals: Sequence[Mapping[str, Any]] | None,
) -> list[ChunkRequest]:
    """The chunks in flight that arrive before trainer ``iteration`` (taken out of
    ``flight``): the oldest ``next_round_after`` of the flight, or, replaying a service run,
    those whose hashes its record of that iteration lists (its failed centres join
    ``failed``)."""
    nft = prepared.spec.nft
    if arrivals is None:
        n = overlap.arrivals(flight, overlap.needed(nft.chunks_per_iteration, nft.next_round_after))
        taken, flight[:] = flight[:n], flight[n:]
        return taken
    records = [r for r in arrivals if r["iteration"] == iteration]
    if not records:
        raise ValueError(
            f"campaign {prepared.spec.name}: the arrivals record has no iteration {iteration}; "
            "give the NFT records of the whole service run (nft-fw history --json)"
        )
    record = records[0]
    wanted = set(record.get("arrived", ()))
    now_failed = {int(c) for c in record.get("failed_centres", ())}
    taken, kept = [], []
    for request in flight:
        if request.centre in now_failed:
            failed.add(request.centre)
        elif request_atoms(request, prepared.target).hash in wanted:
            taken.append(request)
        else:
            kept.append(request)
    missing = wanted - {request_atoms(r, prepared.target).hash for r in taken}
    if missing:
        raise ValueError(
            f"campaign {prepared.spec.name}: iteration {iteration} of the arrivals record "
            f"trained on {len(missing)} chunk(s) this run never asked for; the record is of "
            "another campaign or other settings"
        )
    flight[:] = kept
    return taken


def label_frames(result: LocalResult, extra: Sequence[ChunkLabel] = ()) -> list[Atoms]:
    """The labels of a local run (and ``extra`` chunk labels, e.g. a relaxation's) as the
    label frames `nft-fw labels --export` writes (:mod:`nft_fw.labels.files`): write them with
    :func:`nft_fw.labels.files.write`; a campaign takes them as ``prior_labels.file``."""
    prepared = result.prepared
    parent = prepared.spec.parent
    common: dict[str, Any] = {
        "campaign": prepared.spec.name,
        "parent": parent.name,
        "parent_params": parent.params or {},
        "parent_hash": prepared.parent.settings_hash,
    }
    out = [
        labelset.frame(
            image.atoms, kind="image", phase=Phase.INITIAL, number=0, forces=image.forces,
            energy=image.energy, label_hash=image.id, **common,
        )
        for image in result.images
    ]  # fmt: skip
    chunks = [*result.labels, *extra]
    out += [
        labelset.frame(
            c.atoms, kind="chunk", phase=c.phase, number=c.iteration, forces=c.forces,
            energy=c.energy, label_hash=c.hash, centre=c.centre, radius_A=c.radius,
            seconds=c.seconds, **common,
        )
        for c in chunks
    ]  # fmt: skip
    if result.true_forces is not None:
        out.append(
            labelset.frame(
                prepared.target, kind="full", phase="validation", number=0,
                forces=result.true_forces, energy=None,
                label_hash=labelset.full_hash(prepared.target), **common,
            )
        )  # fmt: skip
    return labelset.in_order(out)


# ----------------------------------------------------------------------------- relaxation


@dataclasses.dataclass
class RelaxResult:
    """What :func:`relax_locally` returns: one record per relax round (round 0 = the NFT
    model), the trajectories, the kept round's calculator, why retraining stopped, and the
    chunks labelled from trajectories."""

    rounds: list[dict[str, Any]]
    trajectories: list[Trajectory]
    calculator: EnsembleCalculator
    kept_round: int
    stop: decision.Stop
    labels: list[ChunkLabel]


def relax_locally(
    result: LocalResult, relax_spec: RelaxSpec | None = None, progress: bool | Progress = True
) -> RelaxResult:
    """The relaxation phase in this process, after :func:`run_locally`: relax the target
    with the kept model, and while the trajectory's largest δ is above the threshold and
    still falling, label chunks cut from the trajectory (frames after the start), retrain
    and relax again (from the same start, or with relax.resume: frontier from where δ first
    exceeded relax.search_until). ``relax_spec``: a RelaxSpec (default: the
    campaign's ``relax`` or its defaults)."""
    prepared = result.prepared
    if relax_spec is not None:
        spec = prepared.spec.model_copy(update={"relax": relax_spec})
        prepared = dataclasses.replace(prepared, spec=spec)
    spec = prepared.spec
    show: Progress | None = _rich_progress_relax() if progress is True else (progress or None)
    model = result.calculator.ensemble
    model_from = {"phase": Phase.NFT, "iteration": result.best_iteration}
    chunks = list(result.labels)
    known = {lb.hash for lb in chunks}
    labels: list[ChunkLabel] = []
    rounds: list[dict[str, Any]] = []
    trajectories: list[Trajectory] = []
    blobs: list[bytes] = []
    number = 0
    start: Atoms | None = None
    started_from: dict[str, Any] | None = None
    while True:
        out = relax_step(
            RelaxInputs(
                prepared, number, model, model_from, result.images, chunks,
                history=result.history, rounds=rounds, true_start_forces=result.true_forces,
                known=known.__contains__, features=result.features, start=start,
                started_from=started_from,
            )
        )  # fmt: skip
        rounds.append(out.record)
        trajectories.append(out.trajectory)
        blobs.append(out.ensemble.to_bytes())
        if show is not None:
            show(out.record)
        if out.stop is not None:
            stop = out.stop
            break
        frames = [out.trajectory.frames[f] for f in out.searched]
        start, started_from = relax_start(spec, out.record, frames)
        number += 1
        for request in out.requests:
            source = None if request.frame is None else frames[request.frame]
            chunk = request_atoms(request, source)
            if chunk.hash in known:
                continue
            known.add(chunk.hash)
            label = label_chunk(prepared, chunk, number, phase=Phase.RELAX)
            labels.append(label)
            chunks.append(label)
        model = mdl.Ensemble.from_bytes(blobs[-1])
        model_from = {"phase": Phase.RELAX, "iteration": number - 1}
    kept = mdl.Ensemble.from_bytes(blobs[stop.best_iteration])
    kept.meta.update(calibration_meta([*result.history, *rounds], spec.name))
    return RelaxResult(
        rounds=rounds,
        trajectories=trajectories,
        calculator=EnsembleCalculator(kept),
        kept_round=stop.best_iteration,
        stop=stop,
        labels=labels,
    )


def _rich_progress_relax() -> Progress:
    from rich.console import Console

    console = Console(stderr=True, soft_wrap=True)

    def show(record: dict[str, Any]) -> None:
        console.print(
            f"[bold]{record['campaign']}[/] relax round {record['iteration']}: "
            f"+{record['new_chunks']} trajectory chunks, {record['n_steps']} steps, "
            f"δ max along {record['structure_uncertainty']:.3f} eV/Å, "
            f"at end {record['final_max_uncertainty']:.3f}"
        )

    return show


# ----------------------------------------------------------------------------- transfer


@dataclasses.dataclass
class TransferResult:
    """What :func:`transfer_locally` returns: one record per transfer target (flagged or
    not) and its relaxation."""

    records: list[dict[str, Any]]
    trajectories: list[Trajectory]


def transfer_locally(
    result: LocalResult, relaxed: RelaxResult | None = None, progress: bool | Progress = True
) -> TransferResult:
    """The transfer targets in this process (:func:`nft_fw.steps.step.transfer_step`), after
    :func:`run_locally` (and :func:`relax_locally`): each relaxed with the model the phases
    before kept, without new data, and flagged where its δ is ≥ 2× the trained target's. A
    flagged target with ``retrain: true`` becomes a follow-up campaign in the service; here,
    run it as a campaign of its own (its target the transfer target)."""
    prepared = result.prepared
    show: Progress | None = _rich_progress_transfer() if progress is True else (progress or None)
    rounds = relaxed.rounds if relaxed is not None else []
    model = relaxed.calculator.ensemble if relaxed is not None else result.calculator.ensemble
    source = kept_record(result.history, rounds, prepared.spec)
    out = TransferResult([], [])
    for index, (name, atoms) in enumerate(prepared.transfers):
        step_out = transfer_step(TransferInputs(prepared, index, name, atoms, model, source))
        out.records.append(step_out.record)
        out.trajectories.append(step_out.trajectory)
        if show is not None:
            show(step_out.record)
    return out


def _rich_progress_transfer() -> Progress:
    from rich.console import Console

    console = Console(stderr=True, soft_wrap=True)

    def show(record: dict[str, Any]) -> None:
        console.print(
            f"[bold]{record['campaign']}[/] transfer {record['name']} ({record['n_atoms']} "
            f"atoms): {record['n_steps']} steps, δ max {record['structure_uncertainty']:.3f} "
            f"eV/Å = {record['uncertainty_ratio']:.1f}× trained"
            + (", flagged" if record["flagged"] or record["flagged_at_end"] else "")
        )

    return show


# ----------------------------------------------------------------------------- MD


@dataclasses.dataclass
class MDResult:
    """What :func:`md_locally` returns: one record per MD segment, the segments (log, frames,
    end state), the last segment's calculator and the chunks labelled at pauses."""

    segments: list[dict[str, Any]]
    runs: list[md_mod.Segment]
    calculator: EnsembleCalculator
    labels: list[ChunkLabel]


def stored_state(state: md_mod.MDState) -> md_mod.MDState:
    """``state`` as the service stores and reads it back (exact extended XYZ)."""
    return md_mod.MDState.from_frame(read_extxyz_text(extxyz_text(state.to_frame()))[0])


def md_locally(
    result: LocalResult,
    relaxed: RelaxResult | None = None,
    md_spec: MDSpec | None = None,
    progress: bool | Progress = True,
) -> MDResult:
    """The MD phase in this process, after :func:`run_locally` (and :func:`relax_locally`):
    run MD with the kept model, watching δ; at each pause label chunks around the uncertain
    atoms, retrain and continue from the saved state. ``md_spec``: an MDSpec (default: the
    campaign's ``md`` or its defaults)."""
    prepared = result.prepared
    if md_spec is not None or prepared.spec.md is None:
        spec = prepared.spec.model_copy(update={"md": md_spec or MDSpec()})
        prepared = dataclasses.replace(prepared, spec=spec)
    spec = prepared.spec
    show: Progress | None = _rich_progress_md() if progress is True else (progress or None)
    if spec.md_structure == "relaxed" and relaxed is None:
        raise ValueError("md.structure is relaxed: pass the relax_locally result")
    atoms = md_start_structure(
        spec,
        prepared.target,
        lambda: None if relaxed is None else relaxed.trajectories[relaxed.kept_round].final,
        dict(prepared.transfers).get,
    )
    if relaxed is not None:
        model, rounds = relaxed.calculator.ensemble, relaxed.rounds
        model_from = {"phase": Phase.RELAX, "iteration": relaxed.kept_round}
        chunks = [*result.labels, *relaxed.labels]
    else:
        model, rounds = result.calculator.ensemble, []
        model_from = {"phase": Phase.NFT, "iteration": result.best_iteration}
        chunks = list(result.labels)
    known = {lb.hash for lb in chunks}
    check = (
        (lambda a: prepared.parent.label(a)[1])
        if spec.md and spec.md.true_force_check_every
        else None
    )
    state = stored_state(md_start(spec, atoms))
    segments: list[dict[str, Any]] = []
    runs: list[md_mod.Segment] = []
    labels: list[ChunkLabel] = []
    number = 0
    while True:
        out = md_step(
            MDInputs(
                prepared, number, model, model_from, state, result.images, chunks,
                history=result.history, rounds=rounds, segments=segments,
                known=known.__contains__, features=result.features, true_forces=check,
            )
        )  # fmt: skip
        segments.append(out.record)
        runs.append(out.segment)
        if show is not None:
            show(out.record)
        if out.finished:
            break
        number += 1
        for request in out.requests:
            source = None if request.frame is None else out.segment.frames[request.frame]
            chunk = request_atoms(request, source)
            if chunk.hash in known:
                continue
            known.add(chunk.hash)
            label = label_chunk(prepared, chunk, number, phase=Phase.MD)
            labels.append(label)
            chunks.append(label)
        model = mdl.Ensemble.from_bytes(out.ensemble.to_bytes())
        model_from = {"phase": Phase.MD, "iteration": number - 1}
        state = stored_state(out.segment.state)
    return MDResult(segments, runs, EnsembleCalculator(out.ensemble), labels)


def _rich_progress_md() -> Progress:
    from rich.console import Console

    console = Console(stderr=True, soft_wrap=True)

    def show(record: dict[str, Any]) -> None:
        console.print(
            f"[bold]{record['campaign']}[/] MD segment {record['iteration']}: steps "
            f"{record['start_step']}–{record['end_step']}, +{record['new_chunks']} "
            f"chunks, δ max {record['structure_uncertainty']:.3f} eV/Å, "
            f"T {record['mean_temperature_K']:.0f} K, {md_mod.ending(record)}"
        )

    return show


# ----------------------------------------------------------------------------- products


def write_products(
    directory: str | Path,
    relaxed: RelaxResult | None = None,
    moved: TransferResult | None = None,
    run: MDResult | None = None,
    fmt: str = "extxyz",
) -> dict[str, Path]:
    """What the phases run in this process made, as files (:func:`nft_fw.runners.products.write`:
    relaxed structures, relaxation frames, transfer targets relaxed, the MD trajectory and
    its end state) — the same files ``nft-fw export NAME --structures DIR`` writes for a
    campaign run by the service."""
    from nft_fw.runners import products

    kw: dict[str, Any] = {}
    if relaxed is not None:
        kw.update(
            rounds=relaxed.rounds,
            round_finals=[t.final for t in relaxed.trajectories],
            round_frames=[
                [t.frames[f] for f in r["frame_steps"]]
                for r, t in zip(relaxed.rounds, relaxed.trajectories, strict=True)
            ],
            kept_round=relaxed.kept_round,
        )
    if moved is not None:
        kw.update(transfers=moved.records, transfer_finals=[t.final for t in moved.trajectories])
    if run is not None:
        kw.update(
            segments=run.segments,
            segment_frames=[seg.frames for seg in run.runs],
            end_state=run.runs[-1].state,
        )
    return products.write(directory, fmt=fmt, **kw)
