"""Figure and table of the MD phase: the largest δ and the temperature along the run, the
pauses where chunks were labelled, one row per segment.

Records are those of ``nft_iterations`` with ``phase: md`` (:mod:`nft_fw.firetasks.md`):
``log`` holds one row per step (step, potential_energy, kinetic_energy, temperature_K,
max_delta, mean_delta, max_atom; δ as watched, i.e. times ``delta_scale``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from nft_fw.report.page import markdown_table
from nft_fw.report.plots import _figure, _fmt, _fmt_int, _save
from nft_fw.steps import md as md_mod

Records = Sequence[Mapping[str, Any]]

MD_COLUMNS = [
    "segment",
    "steps",
    "time (ps)",
    "ended",
    "chunks",
    "new",
    "δ max (eV/Å)",
    "threshold (eV/Å)",
    "δ at start (eV/Å)",
    "T set / mean (K)",
    "OOS MAE (eV/Å)",
    "true max (eV/Å)",
    "δ scale",
    "ms/step",
]


def md_table(segments: Records) -> list[list[str]]:
    rows = []
    for r in segments:
        if r.get("paused"):
            ended = "pause"
        elif r.get("collapsed"):
            ended = "stopped: atoms collapsed"
        elif r.get("stopped"):
            ended = "stopped: left its data"
        elif r.get("finished"):
            above = int(r["steps_above_threshold"]) if not r["watched"] else 0
            ended = f"end, {above} steps above δ threshold unwatched" if above else "end"
        else:
            ended = "—"
        rows.append(
            [
                _fmt_int(r.get("iteration")),
                f"{r.get('start_step', 0)}–{r.get('end_step', 0)}",
                f"{_fmt(r.get('start_ps'), '.2f')}–{_fmt(r.get('end_ps'), '.2f')}",
                ended,
                _fmt_int(r.get("md_chunks")),
                _fmt_int(r.get("new_chunks")),
                _fmt(r.get("structure_uncertainty"), ".3f"),
                _fmt(r.get("threshold"), "g"),
                _fmt(r.get("start_max_uncertainty"), ".3f"),
                f"{_fmt(r.get('temperature_K'), 'g')} / {_fmt(r.get('mean_temperature_K'), '.0f')}",
                _fmt(r.get("oos_mae"), ".3f"),
                _fmt(r.get("true_force_max_error"), ".3f"),
                _fmt(r.get("delta_scale"), ".2f"),
                _fmt((r.get("timings") or {}).get("ms_per_step"), ".1f"),
            ]
        )
    return rows


def plot_md(segments: Records, path: str | Path) -> Path:
    """Largest δ (top) and temperature (bottom) against time, one colour per segment (each
    segment runs with the model retrained at its start), pauses marked, the threshold
    dotted."""
    if not segments:
        raise ValueError("no MD segments to plot")
    fig = _figure()
    top, bottom = fig.subplots(2, 1, sharex=True)
    for k, r in enumerate(segments):
        log = r["log"]
        t_ps = np.asarray(log["step"], dtype=float) * float(r["timestep_fs"]) / 1000.0
        colour = f"C{k % 10}"
        top.plot(t_ps, log["max_delta"], "-", color=colour, lw=0.8)
        bottom.plot(t_ps, log["temperature_K"], "-", color=colour, lw=0.8)
        if r.get("paused"):
            top.plot(t_ps[-1], log["max_delta"][-1], "v", color="tab:red", ms=5)
    pauses = sum(1 for r in segments if r.get("paused"))
    # the threshold and the set temperature as each segment ran under them (nft-fw amend
    # may change both between segments)
    edges = [float(r["start_step"]) * float(r["timestep_fs"]) / 1000.0 for r in segments]
    edges.append(float(segments[-1]["end_step"]) * float(segments[-1]["timestep_fs"]) / 1000.0)
    if all(r.get("threshold") for r in segments):
        levels = [float(r["threshold"]) for r in segments]
        top.stairs(levels, edges, color="black", ls=":", lw=1, label="threshold")
    set_t = [float(r["temperature_K"]) for r in segments]
    bottom.stairs(set_t, edges, color="black", ls="--", lw=0.8)
    top.plot([], [], "v", color="tab:red", label=f"pause ({pauses}): chunks labelled, retrained")
    top.set_ylabel("max δ (eV/Å)")
    bottom.set_ylabel("T (K)")
    bottom.set_xlabel("time (ps)")
    top.grid(alpha=0.3)
    bottom.grid(alpha=0.3)
    top.legend(fontsize=7, loc="upper right")
    top.set_title(
        f"MD with the model, {segments[0].get('integrator')} "
        + " → ".join(f"{t:g} K" for t in dict.fromkeys(set_t))
        + f" — {segments[0].get('campaign')}",
        fontsize=10,
    )
    return _save(fig, path)


def summary(segments: Records) -> dict[str, Any]:
    """The MD phase's headline figures."""
    last = segments[-1]
    length_ps = float(last["total_steps"]) * float(last["timestep_fs"]) / 1000.0
    pauses = sum(1 for r in segments if r.get("paused"))
    chunks = sum(int(r.get("new_chunks", 0)) for r in segments)
    return {
        "segments": len(segments),
        "pauses": pauses,
        "chunks": chunks,
        "reached_ps": float(last["end_ps"]),
        "length_ps": length_ps,
        "finished": bool(last.get("finished")),
        "stopped": bool(last.get("stopped")),
        "left_data": md_mod.left_data(segments),
        "pauses_per_ps": pauses / length_ps,
        "chunks_per_ps": chunks / length_ps,
        "pause_steps": [int(r["end_step"]) for r in segments if r.get("paused")],
        "max_uncertainty": [float(r["structure_uncertainty"]) for r in segments],
    }


def markdown(segments: Records) -> str:
    if not segments:
        return ""
    s = summary(segments)
    return (
        "\n".join(
            [
                "",
                "## Molecular dynamics",
                "",
                f"- {s['reached_ps']:.2f} of {s['length_ps']:.2f} ps, {s['pauses']} pauses, "
                f"{s['chunks']} chunks labelled at them ({s['chunks_per_ps']:.2f} per ps)",
                *([f"- **{s['left_data']}**"] if s["left_data"] else []),
                "",
                *markdown_table(MD_COLUMNS, md_table(segments)),
            ]
        )
        + "\n"
    )
