"""Figures and tables of the relaxation phase and the transfer targets.

``relaxation.png`` follows Fig. 4 of Zeng, Chen, Peterson, J. Chem. Phys. 156, 064104
(2022): energy and largest δ against the relaxation step, for the model of the NFT phase
(round 0) and each retrained model. ``transfer.png`` follows Fig. 5: δ along the relaxation
of each transfer target, next to the trained target's and the flagging line.

Records are those of ``nft_iterations`` with ``phase: relax`` / ``phase: transfer`` (see
:mod:`nft_fw.firetasks.relax`): ``steps`` is a list of {step, energy, fmax,
max_uncertainty, mean_uncertainty}.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from nft_fw.report.page import markdown_table
from nft_fw.report.plots import MISSING, _figure, _fmt, _fmt_int, _save
from nft_fw.steps import decision

Records = Sequence[Mapping[str, Any]]

RELAX_COLUMNS = [
    "round",
    "chunks",
    "new",
    "steps",
    "converged",
    "δ max along (eV/Å)",
    "δ max at end (eV/Å)",
    "true MAE start/end (eV/Å)",
    "parent fmax at end (eV/Å)",
    "OOS MAE (eV/Å)",
    "δ scale",
]
TRANSFER_COLUMNS = [
    "target",
    "atoms",
    "steps",
    "δ max along (eV/Å)",
    "× trained",
    "flagged",
    "× trained at end",
    "flagged at end",
    "true MAE start/end (eV/Å)",
    "relax (s)",
]


def _series(steps: Sequence[Mapping[str, Any]], key: str) -> np.ndarray:
    return np.array([float(s[key]) for s in steps], dtype=float)


def plot_relaxation(rounds: Records, path: str | Path, kept: int | None = None) -> Path:
    """Fig. 4: energy relative to the start (top) and largest δ (bottom) per relaxation step,
    one line per relax round (round 0 = the NFT phase's model)."""
    if not rounds:
        raise ValueError("no relax rounds to plot")
    fig = _figure()
    top, bottom = fig.subplots(2, 1, sharex=True)
    colours = [f"C{k % 10}" for k in range(len(rounds))]
    for colour, r in zip(colours, rounds, strict=True):
        steps = r["steps"]
        x = _series(steps, "step")
        energy = _series(steps, "energy")
        n = int(r["iteration"])
        label = "NFT model" if n == 0 else f"retrained {n} (+{r.get('relax_chunks', 0)} chunks)"
        if kept is not None and n == kept:
            label += " — kept"
        top.plot(x, energy - energy[0], "-", color=colour, label=label)
        bottom.plot(x, _series(steps, "max_uncertainty"), "-", color=colour)
    threshold = rounds[-1].get("threshold")
    if threshold:
        bottom.axhline(float(threshold), color="black", ls=":", lw=1, label="threshold")
        bottom.legend(fontsize=7, loc="upper right")
    top.set_ylabel("E − E(start) (eV)")
    bottom.set_ylabel("max δ (eV/Å)")
    bottom.set_xlabel("relaxation step")
    top.grid(alpha=0.3)
    bottom.grid(alpha=0.3)
    top.legend(fontsize=7)
    name = rounds[0].get("campaign")
    top.set_title(f"relaxation of the target — {name}", fontsize=10)
    return _save(fig, path)


def plot_transfer(transfers: Records, path: str | Path, trained: float) -> Path:
    """Fig. 5: largest δ along each transfer target's relaxation with the final model, the
    trained target's δ (``trained``, eV/Å) and twice it (the flagging line)."""
    if not transfers:
        raise ValueError("no transfer targets to plot")
    fig = _figure()
    ax = fig.add_subplot()
    for k, r in enumerate(transfers):
        steps = r["steps"]
        flag = " (flagged)" if r.get("flagged") else ""
        ax.plot(
            _series(steps, "step"),
            _series(steps, "max_uncertainty"),
            "-",
            color=f"C{k % 10}",
            label=f"{r['name']}: {r['n_atoms']} atoms{flag}",
        )
    ax.axhline(trained, color="black", ls="--", lw=1, label=f"trained target {trained:.2f}")
    ax.axhline(2 * trained, color="tab:red", ls=":", lw=1, label="2 × trained (flag)")
    ax.set_xlabel("relaxation step")
    ax.set_ylabel("max δ (eV/Å)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    ax.set_title("transfer without new data", fontsize=10)
    return _save(fig, path)


def _pair(a: Any, b: Any) -> str:
    if a is None and b is None:
        return MISSING
    return f"{_fmt(a, '.3f')} / {_fmt(b, '.3f')}"


def relax_table(rounds: Records) -> list[list[str]]:
    return [
        [
            _fmt_int(r.get("iteration")),
            _fmt_int(r.get("n_chunks")),
            _fmt_int(r.get("new_chunks")),
            _fmt_int(r.get("n_steps")),
            "yes" if r.get("converged") else "no",
            _fmt(r.get("structure_uncertainty"), ".3f"),
            _fmt(r.get("final_max_uncertainty"), ".3f"),
            _pair(r.get("start_true_force_mae"), r.get("end_true_force_mae")),
            _fmt(r.get("end_parent_fmax"), ".3f"),
            _fmt(r.get("oos_mae"), ".3f"),
            _fmt(r.get("calibration_scale"), ".2f"),
        ]
        for r in rounds
    ]


def transfer_table(transfers: Records) -> list[list[str]]:
    return [
        [
            str(r.get("name")),
            _fmt_int(r.get("n_atoms")),
            _fmt_int(r.get("n_steps")),
            _fmt(r.get("structure_uncertainty"), ".3f"),
            _fmt(r.get("uncertainty_ratio"), ".1f"),
            "yes" if r.get("flagged") else "no",
            _fmt(r.get("end_uncertainty_ratio"), ".1f"),
            "yes" if r.get("flagged_at_end") else "no",
            _pair(r.get("start_true_force_mae"), r.get("end_true_force_mae")),
            _fmt((r.get("timings") or {}).get("relax_s"), ".0f"),
        ]
        for r in transfers
    ]


def markdown(rounds: Records, transfers: Records, bill: Mapping[str, Any] | None) -> str:
    """Relaxation, transfer and parent-call sections for ``history.md``."""
    lines: list[str] = []
    if rounds:
        lines += ["", "## Relaxation", "", *markdown_table(RELAX_COLUMNS, relax_table(rounds))]
        checked = _checked(rounds)
        if checked:
            lines += ["", *(f"- round {r}: {words}" for r, words in checked)]
    if transfers:
        lines += [
            "",
            "## Transfer",
            "",
            *markdown_table(TRANSFER_COLUMNS, transfer_table(transfers)),
        ]
    if bill:
        lines += ["", "## Parent calls", ""]
        lines.append(
            f"- initial structures {bill['initial_images']}, NFT chunks {bill['nft_chunks']}, "
            f"relaxation chunks {bill['relax_chunks']}"
            + (f", MD chunks {bill['md_chunks']}" if bill.get("md_chunks") else "")
            + f": {bill['total_parent_calls']} in all"
            + (
                f"; {bill['labels_from_prior']} more labels taken from prior labels"
                if bill.get("labels_from_prior")
                else ""
            )
        )
        if "divide_and_conquer_calls" in bill:
            lines.append(
                f"- divide and conquer for the same relaxation: {bill['n_atoms']} atoms × "
                f"{bill['relaxation_steps']} steps = {bill['divide_and_conquer_calls']} "
                f"({bill['fraction_of_divide_and_conquer']:.1%} of it used here)"
            )
        for t in bill.get("transfer", []):
            lines.append(
                f"- transfer {t['name']}: {t['n_atoms']} × {t['relaxation_steps']} = "
                f"{t['divide_and_conquer_calls']} by divide and conquer, 0 new here"
            )
    return "\n".join(lines) + ("\n" if lines else "")


def _checked(rounds: Records) -> list[tuple[int, str]]:
    """(round, the check it recorded in words) for every round that checked the relaxed
    structure of the round before (``relax.check_chunks``)."""
    return [
        (int(r["iteration"]), decision.check_words(r["check"])) for r in rounds if r.get("check")
    ]
