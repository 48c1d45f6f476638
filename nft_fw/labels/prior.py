"""Prior labels: the labels of an exported campaign (:mod:`nft_fw.labels.files`) used by another
campaign as if it had computed them.

A campaign with ``prior_labels: {file: …}`` never runs the parent on a structure the file
holds a label of: an initial image, a chunk or the whole target whose content hash equals a
frame's ``nft_hash`` (or, for a whole structure, whose :func:`nft_fw.structures.chunks.structure_id`
equals the frame's) takes the file's structure, energy and forces (the positions the parent
computed, to the last bit, not the campaign's own cut of them). And while the file has NFT chunks
of the campaign's own target for the next iteration, the campaign asks for those chunks
first (:func:`planned_centres`; an iteration the file holds only part of, as an export made
while it was labelled, is completed by the campaign's own choice): a campaign with other model
or training settings then spends the labels it was given before it pays for new ones, and the
same campaign continued with a larger ``nft.max_iterations`` replays the exported run and
labels only past its end. Relax rounds and MD pauses do the same with the file's relaxation
and MD chunks of the next round or segment (:func:`planned_chunks`), taken as the parent
computed them. A transfer target's ``prior_labels`` are its follow-up campaign's, which
continues from them in the same way.

The file is checked before anything is submitted (:func:`read`): every frame a label frame
of an nft-fw export, its hash that of its structure, and its parent settings hash the
campaign's (or ``accept_parent_mismatch``).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from ase import Atoms

from nft_fw.labels import files as labelset
from nft_fw.labels.phase import Phase
from nft_fw.structures.chunks import chunk_hash, cut, structure_id


class PriorError(ValueError):
    """A prior label file the campaign cannot use; ``field`` names the campaign field."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field, self.message = field, message


@dataclasses.dataclass(frozen=True)
class PriorLabel:
    """One label of the file: ``atoms`` as the parent computed them (a chunk: centre first),
    their ``energy`` (eV) and ``forces`` (eV/Å), and where it came from."""

    kind: str
    hash: str
    atoms: Atoms
    energy: float | None
    forces: np.ndarray
    phase: str
    number: int
    centre: int | None
    radius: float | None
    parent_hash: str
    campaign: str
    seconds: float | None
    scf_iterations: int | None = None

    def structure(self) -> Atoms:
        """The structure as the parent computed it (numbers, positions, cell, pbc; a
        chunk's centre is atom 0): the campaign trains on these very positions."""
        return Atoms(
            numbers=self.atoms.numbers.copy(),
            positions=self.atoms.positions.copy(),
            cell=self.atoms.cell.copy(),
            pbc=self.atoms.pbc.copy(),
        )

    @property
    def structure_hash(self) -> str:
        """The key the campaign looks the label up by: a chunk's order- and
        translation-invariant hash, a whole structure's content hash."""
        return self.hash if self.kind == "chunk" else structure_id(self.atoms)


@dataclasses.dataclass
class PriorLabels:
    """The labels of a prior file by structure hash, with the file's name."""

    source: str
    labels: dict[str, PriorLabel]

    def get(self, key: str) -> PriorLabel | None:
        return self.labels.get(key)

    def counts(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for label in self.labels.values():
            out[label.kind] = out.get(label.kind, 0) + 1
        return out

    def campaigns(self) -> list[str]:
        return sorted({label.campaign for label in self.labels.values()})


def _label(frame: Atoms, k: int, field: str) -> PriorLabel:
    info = frame.info
    missing = [key for key in ("nft_kind", "nft_hash", "nft_parent_hash") if key not in info]
    if missing:
        raise PriorError(
            field,
            f"frame {k} lacks {', '.join(missing)}: a prior label file is what "
            "`nft-fw labels NAME --export FILE` writes (labelled structures without those "
            "fields belong in initial.file)",
        )
    kind = str(info["nft_kind"])
    if kind not in labelset.KINDS:
        raise PriorError(field, f"frame {k} has nft_kind {kind!r}, not one of {labelset.KINDS}")
    results = frame.calc.results if frame.calc is not None else {}
    if "forces" not in results or (kind != "full" and "energy" not in results):
        raise PriorError(field, f"frame {k} ({kind}) has no parent energy and forces")
    label = PriorLabel(
        kind=kind,
        hash=str(info["nft_hash"]),
        atoms=frame,
        energy=None if "energy" not in results else float(results["energy"]),
        forces=np.asarray(results["forces"], dtype=np.float64),
        phase=str(info.get("nft_phase", "")),
        number=int(info.get("nft_number", 0)),
        centre=None if "nft_centre" not in info else int(info["nft_centre"]),
        radius=None if "nft_radius_A" not in info else float(info["nft_radius_A"]),
        parent_hash=str(info["nft_parent_hash"]),
        campaign=str(info.get("nft_campaign", "")),
        seconds=None if "nft_seconds" not in info else float(info["nft_seconds"]),
        scf_iterations=(
            None if "nft_scf_iterations" not in info else int(info["nft_scf_iterations"])
        ),
    )
    expected = {"chunk": chunk_hash(frame), "image": structure_id(frame)}.get(kind)
    if expected is not None and expected != label.hash:
        raise PriorError(
            field,
            f"frame {k} ({kind}, nft_hash {label.hash[:12]}…) does not hold the structure its "
            "hash names (edited after export?); export the labels again",
        )
    return label


def read(
    path: str | Path,
    parent_hash: str,
    accept_parent_mismatch: bool = False,
    field: str = "prior_labels.file",
    rehash: Callable[[str, Mapping[str, Any]], str] | None = None,
) -> PriorLabels:
    """Read and check a prior label file for a campaign whose parent settings hash is
    ``parent_hash``. Raises :class:`PriorError` naming ``field`` and the fix.

    ``rehash(parent name, parent params)``: the settings hash this nft-fw gives a frame's
    own ``nft_parent_params``; a label whose stored hash differs from ``parent_hash`` but
    whose settings hash to it now counts as the campaign's (a file exported by a release
    that hashed a setting since left out, e.g. GPAW's ``mixer`` before 0.4.1)."""
    path = Path(path)
    if not path.is_file():
        raise PriorError(field, f"no such file: {path}")
    try:
        frames = labelset.read(path)
    except Exception as err:  # ASE raises several types for a malformed file
        raise PriorError(field, f"{path} is not readable as extended XYZ: {err}") from err
    if not frames:
        raise PriorError(field, f"{path} holds no frames")
    labels = [_label(frame, k, field) for k, frame in enumerate(frames)]
    if rehash is not None:
        labels = [
            _rehashed(lb, frame, parent_hash, rehash)
            for lb, frame in zip(labels, frames, strict=True)
        ]
    other = sorted({lb.parent_hash for lb in labels if lb.parent_hash != parent_hash})
    if other and not accept_parent_mismatch:
        n = sum(lb.parent_hash != parent_hash for lb in labels)
        raise PriorError(
            field,
            f"{n} of {len(labels)} labels were computed with other parent settings (hash "
            f"{', '.join(h[:12] + '…' for h in other)}; this campaign's parent: "
            f"{parent_hash[:12]}…): they are not what this campaign's parent would compute. "
            "Give the parent the settings of the exported campaign (nft_parent_params in the "
            "file), or set prior_labels.accept_parent_mismatch: true to use them anyway",
        )
    by_key: dict[str, PriorLabel] = {}
    for lb in labels:
        by_key.setdefault(lb.structure_hash, lb)
    return PriorLabels(source=path.name, labels=by_key)


def _rehashed(
    label: PriorLabel,
    frame: Atoms,
    parent_hash: str,
    rehash: Callable[[str, Mapping[str, Any]], str],
) -> PriorLabel:
    if label.parent_hash == parent_hash:
        return label
    params = frame.info.get("nft_parent_params")
    if not isinstance(params, Mapping):
        return label
    try:
        now = rehash(str(frame.info.get("nft_parent", "")), params)
    except ValueError:  # settings this nft-fw refuses: not the campaign's
        return label
    return dataclasses.replace(label, parent_hash=now) if now == parent_hash else label


def from_frames(frames: Sequence[Atoms], source: str) -> PriorLabels:
    """Prior labels from frames checked by :func:`read` before (e.g. stored with the
    campaign); no parent check."""
    labels = [_label(frame, k, "prior_labels.file") for k, frame in enumerate(frames)]
    by_key: dict[str, PriorLabel] = {}
    for lb in labels:
        by_key.setdefault(lb.structure_hash, lb)
    return PriorLabels(source=source, labels=by_key)


def usable(prior: PriorLabels | None, key: str, kind: str) -> PriorLabel | None:
    """The prior label a campaign takes instead of calling its parent: the one stored under
    ``key`` (a chunk's hash, an image's content hash) when it is of ``kind`` and carries an
    energy; else None. The one rule for the local runner and the label Fireworks alike."""
    given = None if prior is None else prior.get(key)
    if given is None or given.kind != kind or given.energy is None:
        return None
    return given


def frames(prior: PriorLabels) -> list[Atoms]:
    """The prior's frames, as read (for storing with the campaign)."""
    return [lb.atoms for lb in prior.labels.values()]


def whole_forces(prior: PriorLabels | None, target: Atoms) -> np.ndarray | None:
    """The forces of a whole-structure label of ``target`` in the prior file (the
    validation reference), or None."""
    if prior is None:
        return None
    label = prior.get(structure_id(target))
    if label is None or label.kind != "full":
        return None
    return label.forces.copy()


def planned_centres(
    prior: PriorLabels | None, target: Atoms, iteration: int
) -> list[tuple[int, float]]:
    """(centre, radius) of the prior file's NFT chunks of ``iteration`` that are chunks of
    ``target`` (cut there, they give the same hash), sorted by centre."""
    if prior is None:
        return []
    out = []
    for lb in prior.labels.values():
        if lb.kind != "chunk" or lb.phase != Phase.NFT or lb.number != iteration:
            continue
        if lb.centre is None or lb.radius is None or not 0 <= lb.centre < len(target):
            continue
        if cut(target, lb.centre, lb.radius).hash == lb.hash:
            out.append((lb.centre, lb.radius))
    return sorted(out)


def planned_chunks(prior: PriorLabels | None, phase: str, number: int) -> list[PriorLabel]:
    """The prior file's chunks of ``phase`` (relax or md) asked for by round or pause
    ``number`` (the labels the segment or round ``number`` trains first), sorted by centre and
    hash: a continued campaign's round or pause takes these rather than cutting its own (its
    trajectory may differ from the exported run's; the labels, and so the retrained models,
    do not)."""
    if prior is None:
        return []
    out = [
        lb
        for lb in prior.labels.values()
        if lb.kind == "chunk" and lb.phase == phase and lb.number == number
        and lb.radius is not None
    ]  # fmt: skip
    return sorted(out, key=lambda lb: (lb.centre if lb.centre is not None else -1, lb.hash))


def summary(prior: PriorLabels | None) -> Mapping[str, object]:
    """What a campaign was given, for its record."""
    if prior is None:
        return {}
    return {"file": prior.source, "campaigns": prior.campaigns(), "labels": prior.counts()}
