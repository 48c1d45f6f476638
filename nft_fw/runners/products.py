"""What a campaign made besides its model and labels, as files any ASE tool reads: the relaxed
structure of every relaxation round and transfer target, the stored frames of every
relaxation, and the MD trajectory with each frame's step, time, energies, temperature and
per-atom δ, plus the MD end state to continue from. One writer for a campaign run in one
process and one read back from the database: both hand it the same records and structures.

Every file is exact extended XYZ (:func:`nft_fw.structures.atoms_io.write_extxyz`; ``ase.io.read(path,
":")`` reads it); per frame ``info`` holds ``nft_phase`` (``relax``, ``transfer``, ``md``),
``nft_number`` (round, transfer index or MD segment) and the figures named below, per atom
``nft_delta`` the δ (eV/Å) where the run recorded it. With ``fmt="traj"`` the same frames
go to ASE trajectory files (``.traj``: binary, exact); ASE's trajectory keeps only its own
per-atom arrays, so ``nft_delta`` moves to ``info["nft_delta"]`` there.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from ase import Atoms
from ase.io import write as ase_write

from nft_fw.labels.phase import Phase
from nft_fw.steps import md as md_mod
from nft_fw.structures import atoms_io

Record = Mapping[str, Any]
FORMATS = ("extxyz", "traj")
#: per-atom arrays ASE's trajectory format keeps itself
_TRAJ_ARRAYS = {"numbers", "positions", "momenta", "masses", "tags", "initial_charges",
                "initial_magmoms"}  # fmt: skip


def _for_traj(atoms: Atoms) -> Atoms:
    """``atoms`` with the per-atom arrays a trajectory file would drop moved to ``info``."""
    out = atoms.copy()
    for name in list(out.arrays):
        if name not in _TRAJ_ARRAYS:
            out.info[name] = out.arrays.pop(name)
    return out


def _tagged(atoms: Atoms, phase: str, number: int, **info: Any) -> Atoms:
    out = atoms.copy()
    out.calc = None
    out.info.update({"nft_phase": phase, "nft_number": int(number)})
    out.info.update({k: v for k, v in info.items() if v is not None})
    return out


def relaxed_frames(rounds: Sequence[Record], finals: Sequence[Atoms]) -> list[Atoms]:
    """The final structure of every relax round (``finals[r]`` of round ``r``) with its
    figures: steps, whether it converged, the model's last largest force and δ."""
    return [
        _tagged(
            atoms, Phase.RELAX, r["iteration"], n_steps=int(r["n_steps"]),
            converged=bool(r["converged"]), fmax=float(r["final_fmax"]),
            max_delta=float(r["final_max_uncertainty"]),
            energy=float(r["steps"][-1]["energy"]) if r.get("steps") else None,
        )
        for r, atoms in zip(rounds, finals, strict=True)
    ]  # fmt: skip


def transfer_frames(transfers: Sequence[Record], finals: Sequence[Atoms]) -> list[Atoms]:
    """The relaxed structure of every transfer target, named, with whether it was flagged."""
    return [
        _tagged(
            atoms, Phase.TRANSFER, r["iteration"], name=str(r["name"]),
            n_steps=int(r["n_steps"]), converged=bool(r["converged"]),
            fmax=float(r["final_fmax"]), max_delta=float(r["final_max_uncertainty"]),
            flagged=bool(r["flagged"]), flagged_at_end=bool(r["flagged_at_end"]),
        )
        for r, atoms in zip(transfers, finals, strict=True)
    ]  # fmt: skip


def relax_trajectory_frames(record: Record, frames: Sequence[Atoms]) -> list[Atoms]:
    """The stored frames of one relaxation (``record['frame_steps']``: the steps they are)
    with each step's model energy, largest force and δ."""
    steps = record["steps"]
    return [
        _tagged(
            atoms, Phase.RELAX, record["iteration"], step=int(k),
            energy=float(steps[k]["energy"]), fmax=float(steps[k]["fmax"]),
            max_delta=float(steps[k]["max_uncertainty"]),
        )
        for k, atoms in zip(record["frame_steps"], frames, strict=True)
    ]  # fmt: skip


def md_trajectory_frames(
    segments: Sequence[Record], frames: Sequence[Sequence[Atoms]]
) -> list[Atoms]:
    """Every stored MD frame in order (a frame two segments share, the pause step, once:
    the later segment's, with the retrained model's δ), with its segment, step, time (ps),
    potential and kinetic energy (eV), temperature (K) and the per-atom δ it was watched
    with (``nft_delta``)."""
    out: list[Atoms] = []
    for record, stored in zip(segments, frames, strict=True):
        log = record["log"]
        first = int(log["step"][0])
        dt = float(record["timestep_fs"]) / 1000.0
        for step, atoms in zip(record["frame_steps"], stored, strict=True):
            row = int(step) - first
            frame = _tagged(
                atoms, Phase.MD, record["iteration"], step=int(step), time_ps=int(step) * dt,
                potential_energy=float(log["potential_energy"][row]),
                kinetic_energy=float(log["kinetic_energy"][row]),
                temperature_K=float(log["temperature_K"][row]),
                max_delta=float(log["max_delta"][row]),
            )  # fmt: skip
            if out and out[-1].info["step"] == frame.info["step"]:
                out[-1] = frame
            else:
                out.append(frame)
    return out


def md_end_frame(state: md_mod.MDState) -> Atoms:
    """The MD end state: positions and momenta (``atoms.get_momenta()``), the step count and
    the integrator's random-number state in ``info`` (``nft_fw.steps.md.MDState.from_frame``
    reads it back; plain ASE reads the positions and momenta and can go on from there)."""
    return state.to_frame()


def write(
    directory: str | Path,
    *,
    rounds: Sequence[Record] = (),
    round_finals: Sequence[Atoms] = (),
    round_frames: Sequence[Sequence[Atoms]] = (),
    transfers: Sequence[Record] = (),
    transfer_finals: Sequence[Atoms] = (),
    segments: Sequence[Record] = (),
    segment_frames: Sequence[Sequence[Atoms]] = (),
    end_state: md_mod.MDState | None = None,
    kept_round: int | None = None,
    fmt: str = "extxyz",
) -> dict[str, Path]:
    """Write what the campaign made into ``directory``; returns the files by what they hold:
    ``relaxed`` (the kept round's final structure), ``relax_rounds``, ``relax-<r>`` (round
    r's stored frames), ``transfers``, ``md`` (the trajectory) and ``md_end``. Phases the
    campaign did not run write nothing. ``fmt``: ``extxyz`` or ``traj`` (ASE trajectory)."""
    if fmt not in FORMATS:
        raise ValueError(f"format {fmt!r} is not one of {FORMATS}")
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    files: dict[str, Path] = {}

    def put(key: str, name: str, frames: Sequence[Atoms]) -> None:
        if not frames:
            return
        if fmt == "traj":
            files[key] = directory / name.replace(".extxyz", ".traj")
            ase_write(files[key], [_for_traj(a) for a in frames], format="traj")
        else:
            files[key] = directory / name
            atoms_io.write_extxyz(files[key], list(frames))

    finals = relaxed_frames(rounds, round_finals)
    put("relax_rounds", "relaxed-rounds.extxyz", finals)
    if finals and kept_round is not None:
        put("relaxed", "relaxed.extxyz", [finals[kept_round]])
    for record, frames in zip(rounds, round_frames, strict=True):
        put(f"relax-{record['iteration']}", f"relax-{record['iteration']}.extxyz",
            relax_trajectory_frames(record, frames))  # fmt: skip
    put("transfers", "transfers.extxyz", transfer_frames(transfers, transfer_finals))
    put("md", "md.extxyz", md_trajectory_frames(segments, segment_frames))
    if end_state is not None:
        put("md_end", "md-end.extxyz", [md_end_frame(end_state)])
    return files
