"""The campaign report: figures, a summary and a table of an NFT history.

The three figures follow Fig. 3 (a–c) of Zeng, Chen, Peterson, J. Chem. Phys. 156, 064104
(2022): how the uncertainty evolves over the iterations, a parity plot of the final model
against the parent, and the per-atom residual against the per-atom uncertainty δ_i.

A *history* is the list of iteration records made by :func:`nft_fw.runners.local.run_locally` (or the
FireWorks workflow): one dict per iteration with ``iteration``, ``n_chunks`` (cumulative),
``new_chunks``, ``structure_uncertainty`` and ``mean_uncertainty`` (eV/Å), ``best_iteration``,
``training`` (``loss``, ``seconds``) and, when the parent's forces on the target were computed,
``true_force_mae``, ``true_force_max`` (eV/Å), ``fraction_within_delta`` and
``rank_correlation``.

Figures are drawn on a :class:`matplotlib.figure.Figure` with its own Agg canvas, so nothing
here touches pyplot or the process-wide matplotlib backend.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from nft_fw.report.page import markdown_table

FIGSIZE = (6.0, 4.5)  # inches
DPI = 120  # → 720 × 540 px
MISSING = "—"
RESIDUAL = r"$|F_\mathrm{pred} - F_\mathrm{ref}|$"  # mathtext for the axis labels

HISTORY_COLUMNS: list[str] = [
    "iteration",
    "chunks",
    "new",
    "δ max (eV/Å)",
    "δ mean (eV/Å)",
    "true MAE (eV/Å)",
    "true max (eV/Å)",
    "OOS MAE (eV/Å)",
    "OOS max (eV/Å)",
    "OOS ≤ δ",
    "δ scale",
    "OOS ≤ sδ",
    "loss",
    "train (s)",
]

History = Sequence[Mapping[str, Any]]


# ----------------------------------------------------------------------------- helpers


def _figure() -> Figure:
    fig = Figure(figsize=FIGSIZE, dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _save(fig: Figure, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # No bbox_inches="tight": the image keeps exactly FIGSIZE × DPI pixels.
    fig.savefig(path, dpi=DPI, format="png")
    return path


def _number(value: Any) -> float | None:
    """A finite float, or None for a missing / None / NaN value."""
    if value is None:
        return None
    try:
        out = float(value)
    except (TypeError, ValueError):
        return None
    return out if math.isfinite(out) else None


def _require(history: History) -> None:
    if not history:
        raise ValueError("the history is empty: no iteration was recorded")


def _best_iteration(history: History, override: int | None = None) -> int:
    """The iteration number kept: ``override``, else the latest record's ``best_iteration``,
    else the earliest iteration with the lowest structure uncertainty."""
    if override is not None:
        return int(override)
    recorded = history[-1].get("best_iteration")
    if recorded is not None:
        return int(recorded)
    values = [_number(r.get("structure_uncertainty")) for r in history]
    finite = [(v, i) for i, v in enumerate(values) if v is not None]
    if not finite:
        return int(history[-1].get("iteration", len(history) - 1))
    index = min(finite)[1]
    return int(history[index].get("iteration", index))


def _record(history: History, iteration: int) -> Mapping[str, Any]:
    for i, record in enumerate(history):
        if int(record.get("iteration", i)) == iteration:
            return record
    raise ValueError(f"iteration {iteration} is not in the history")


def _forces(array: Any, name: str) -> np.ndarray:
    out = np.asarray(array, dtype=float)
    if out.ndim != 2 or out.shape[1] != 3:
        raise ValueError(f"{name} must be an (n, 3) array of forces in eV/Å (got {out.shape})")
    return out


def _per_atom(array: Any, name: str) -> np.ndarray:
    out = np.asarray(array, dtype=float)
    if out.ndim != 1:
        raise ValueError(f"{name} must be a 1-D per-atom array in eV/Å (got {out.shape})")
    return out


def _spearman(a: np.ndarray, b: np.ndarray) -> float | None:
    """Spearman rank correlation, or None when it is undefined (n < 2 or a constant input)."""
    if a.size < 2 or np.ptp(a) == 0 or np.ptp(b) == 0:
        return None
    from scipy.stats import spearmanr

    return _number(spearmanr(a, b)[0])


# ----------------------------------------------------------------------------- figures


def plot_history(history: History, path: str | Path, best_iteration: int | None = None) -> Path:
    """Fig. 3a: uncertainty and training-set size over the NFT iterations, saved as PNG.

    Left axis: structure uncertainty (max δ_i) and mean δ_i in eV/Å, on a log scale when the
    plotted values span more than a factor of 10; when the history carries the true errors
    against the parent, the MAE and maximum of |F_ML − F_parent| (eV/Å) are drawn dashed on
    the same axis. Right axis: cumulative number of labelled chunks (bars). The kept
    iteration (``best_iteration``, by default the one recorded in the history) is starred.
    Returns ``path``.
    """
    _require(history)
    its = np.array([int(r.get("iteration", i)) for i, r in enumerate(history)])
    best = _best_iteration(history, best_iteration)

    def series(key: str) -> np.ndarray:
        return np.array(
            [np.nan if (v := _number(r.get(key))) is None else v for r in history], dtype=float
        )

    structure = series("structure_uncertainty")
    mean = series("mean_uncertainty")
    true_mae = series("true_force_mae")
    true_max = series("true_force_max")
    oos_mae = series("oos_mae")
    calibrated = series("calibrated_structure_uncertainty")
    chunks = np.array([int(r.get("n_chunks", 0)) for r in history])

    fig = _figure()
    ax = fig.add_subplot()
    right = ax.twinx()
    # Bars behind the lines: the left axes drawn above the right, with a transparent patch.
    ax.set_zorder(right.get_zorder() + 1)
    ax.patch.set_visible(False)

    right.bar(its, chunks, width=0.6, color="tab:gray", alpha=0.25, label="chunks (cumulative)")
    right.set_ylabel("labelled chunks (cumulative)")
    right.set_ylim(0, max(1, int(chunks.max())) * 1.15)

    ax.plot(its, structure, "o-", color="tab:red", label="structure uncertainty (max δ)")
    ax.plot(its, mean, "s-", color="tab:blue", ms=4, label="mean δ")
    plotted = [structure, mean]
    if np.isfinite(calibrated).any():
        ax.plot(its, calibrated, "o:", color="tab:red", ms=3, alpha=0.6, label="calibrated max δ")
        plotted.append(calibrated)
    if np.isfinite(true_mae).any():
        ax.plot(its, true_mae, "^--", color="tab:green", ms=4, label="true MAE |ΔF|")
        plotted.append(true_mae)
    if np.isfinite(true_max).any():
        ax.plot(its, true_max, "v--", color="tab:olive", ms=4, label="true max |ΔF|")
        plotted.append(true_max)
    if np.isfinite(oos_mae).any():
        # iteration k's point: iteration k−1's model on the chunks it chose, before training
        ax.plot(
            its, oos_mae, "D:", color="tab:purple", ms=4, label="out-of-sample MAE (new chunks)"
        )
        plotted.append(oos_mae)

    where = np.flatnonzero(its == best)
    if where.size and np.isfinite(structure[where[0]]):
        ax.plot(
            [best],
            [structure[where[0]]],
            "*",
            ms=16,
            color="gold",
            markeredgecolor="black",
            label=f"kept model (iteration {best})",
            zorder=5,
        )

    values = np.concatenate(plotted)
    values = values[np.isfinite(values)]
    if values.size and values.min() > 0 and values.max() / values.min() > 10:
        ax.set_yscale("log")
    ax.set_xlabel("NFT iteration")
    ax.set_ylabel("force uncertainty / error (eV/Å)")
    ax.set_xticks(its)
    ax.grid(alpha=0.3)

    handles, labels = ax.get_legend_handles_labels()
    h2, l2 = right.get_legend_handles_labels()
    fig.legend(handles + h2, labels + l2, fontsize=7, loc="outside lower center", ncols=3)
    name = history[0].get("campaign")
    ax.set_title(f"NFT campaign {name}" if name else "NFT campaign", fontsize=10)
    return _save(fig, path)


def plot_parity(
    predicted: Any,
    reference: Any,
    path: str | Path,
    label_pred: str = "ML (ensemble mean)",
    label_ref: str = "parent",
) -> Path:
    """Fig. 3b: per-atom force magnitudes |F| (eV/Å), prediction against reference, as PNG.

    ``predicted`` and ``reference`` are (n, 3) force arrays in eV/Å. The annotation gives the
    mean and maximum of the vector residual |F_pred − F_ref| (eV/Å), which is stricter than
    the difference of the magnitudes shown on the axes. Returns ``path``.
    """
    pred = _forces(predicted, "predicted")
    ref = _forces(reference, "reference")
    if pred.shape != ref.shape:
        raise ValueError(f"predicted {pred.shape} and reference {ref.shape} differ in shape")
    if pred.shape[0] == 0:
        raise ValueError("no atoms to plot")
    mag_pred = np.linalg.norm(pred, axis=1)
    mag_ref = np.linalg.norm(ref, axis=1)
    residual = np.linalg.norm(pred - ref, axis=1)

    fig = _figure()
    ax = fig.add_subplot()
    top = max(float(mag_pred.max()), float(mag_ref.max()), 1e-3) * 1.05
    ax.plot([0, top], [0, top], "-", color="black", lw=0.8, label="y = x")
    ax.scatter(
        mag_ref,
        mag_pred,
        s=10,
        alpha=0.7,
        color="tab:blue",
        label=f"atoms (n = {pred.shape[0]})",
    )
    ax.set_xlim(0, top)
    ax.set_ylim(0, top)
    ax.set_aspect("equal")
    ax.set_xlabel(f"|F| {label_ref} (eV/Å)")
    ax.set_ylabel(f"|F| {label_pred} (eV/Å)")
    ax.text(
        0.97,
        0.03,
        f"MAE {RESIDUAL} = {residual.mean():.3f} eV/Å\nmax = {residual.max():.3f} eV/Å",
        transform=ax.transAxes,
        ha="right",
        va="bottom",
        fontsize=8,
        bbox={"boxstyle": "round", "fc": "white", "alpha": 0.8},
    )
    ax.legend(fontsize=7, loc="upper left")
    ax.grid(alpha=0.3)
    ax.set_title("per-atom force magnitude", fontsize=10)
    return _save(fig, path)


def plot_residual_vs_uncertainty(residual: Any, delta: Any, path: str | Path) -> Path:
    """Fig. 3c: per-atom residual |F_pred − F_ref| (eV/Å) against δ_i (eV/Å), as PNG.

    Atoms on or below the y = x line have an error no larger than their uncertainty; the
    annotation gives that fraction (residual ≤ δ_i, as in :func:`nft_fw.steps.step.error_figures`)
    and the Spearman rank correlation of residual and δ. Returns ``path``.
    """
    res = _per_atom(residual, "residual")
    dlt = _per_atom(delta, "delta")
    if res.shape != dlt.shape:
        raise ValueError(f"residual {res.shape} and delta {dlt.shape} differ in shape")
    if res.size == 0:
        raise ValueError("no atoms to plot")
    within = float(np.mean(res <= dlt))
    rho = _spearman(res, dlt)

    fig = _figure()
    ax = fig.add_subplot()
    top = max(float(res.max()), float(dlt.max()), 1e-3) * 1.05
    ax.plot([0, top], [0, top], "-", color="black", lw=0.8, label="y = x")
    ax.scatter(dlt, res, s=10, alpha=0.7, color="tab:purple", label=f"atoms (n = {res.size})")
    ax.set_xlim(0, top)
    ax.set_ylim(0, top)
    ax.set_aspect("equal")
    ax.set_xlabel(r"uncertainty $\delta_i$ (eV/Å)")
    ax.set_ylabel(f"residual {RESIDUAL} (eV/Å)")
    rho_text = "n/a" if rho is None else f"{rho:.2f}"
    ax.text(
        0.03,
        0.97,
        f"{100 * within:.1f} % of atoms within δ\nSpearman ρ = {rho_text}",
        transform=ax.transAxes,
        ha="left",
        va="top",
        fontsize=8,
        bbox={"boxstyle": "round", "fc": "white", "alpha": 0.8},
    )
    ax.legend(fontsize=7, loc="lower right")
    ax.grid(alpha=0.3)
    ax.set_title("residual against uncertainty", fontsize=10)
    return _save(fig, path)


# ----------------------------------------------------------------------------- numbers


def summary(history: History, stop_reason: str | None = None) -> dict[str, Any]:
    """The headline numbers of a campaign as a JSON-able dict (missing or NaN values → None).

    Keys: ``campaign``, ``iterations`` (records, iteration 0 included), ``last_iteration``,
    ``total_chunks``, ``best_iteration``, ``best_structure_uncertainty`` and
    ``best_mean_uncertainty`` (eV/Å); when the history has them, ``best_true_force_mae``,
    ``best_true_force_max`` (eV/Å), ``best_fraction_within_delta``, ``best_rank_correlation``;
    ``first_structure_uncertainty`` and ``first_true_force_mae`` (eV/Å) of iteration 0, the
    model trained on the initial (bulk) set only, with ``uncertainty_ratio_first_to_best``
    and ``mae_ratio_first_to_best`` (first / best); when δ has been calibrated, the latest
    ``calibration_scale``, ``calibration_coverage`` and ``calibration_points`` (and
    ``best_fraction_within_calibrated_delta`` with true forces); the latest out-of-sample
    error, ``latest_oos_mae`` (eV/Å) of ``latest_oos_iteration``; ``total_training_seconds``
    (s) and ``stop_reason``.
    """
    _require(history)
    best = _best_iteration(history)
    record = _record(history, best)
    first = history[0]
    out: dict[str, Any] = {
        "campaign": first.get("campaign"),
        "iterations": len(history),
        "last_iteration": int(history[-1].get("iteration", len(history) - 1)),
        "total_chunks": int(history[-1].get("n_chunks", 0)),
        "best_iteration": best,
        "best_structure_uncertainty": _number(record.get("structure_uncertainty")),
        "best_mean_uncertainty": _number(record.get("mean_uncertainty")),
    }
    for key in (
        "true_force_mae",
        "true_force_max",
        "fraction_within_delta",
        "fraction_within_calibrated_delta",
        "rank_correlation",
    ):
        if key in record:
            out[f"best_{key}"] = _number(record.get(key))

    def ratio(key: str) -> float | None:
        a, b = _number(first.get(key)), _number(record.get(key))
        return None if a is None or b is None or b == 0 else a / b

    calibrated = [r for r in history if _number(r.get("calibration_scale")) is not None]
    if calibrated:
        out["calibration_scale"] = _number(calibrated[-1].get("calibration_scale"))
        out["calibration_coverage"] = _number(calibrated[-1].get("calibration_coverage"))
        out["calibration_points"] = _number(calibrated[-1].get("calibration_n"))
    tested = [r for r in history if _number(r.get("oos_mae")) is not None]
    if tested:
        out["latest_oos_mae"] = _number(tested[-1].get("oos_mae"))
        out["latest_oos_iteration"] = int(tested[-1].get("iteration", 0))
    out["first_structure_uncertainty"] = _number(first.get("structure_uncertainty"))
    out["uncertainty_ratio_first_to_best"] = ratio("structure_uncertainty")
    if "true_force_mae" in first or "true_force_mae" in record:
        out["first_true_force_mae"] = _number(first.get("true_force_mae"))
        out["mae_ratio_first_to_best"] = ratio("true_force_mae")
    seconds = [_number((r.get("training") or {}).get("seconds")) for r in history]
    out["total_training_seconds"] = float(sum(s for s in seconds if s is not None))
    out["stop_reason"] = stop_reason
    return out


def _fmt(value: Any, spec: str) -> str:
    number = _number(value)
    return MISSING if number is None else format(number, spec)


def _fmt_int(value: Any) -> str:
    number = _number(value)
    return MISSING if number is None else str(int(number))


def history_table(history: History) -> list[list[str]]:
    """One row of strings per iteration, in the order of :data:`HISTORY_COLUMNS`.

    Uncertainties and errors in eV/Å with three decimals, the loss with four significant
    digits, training time in whole seconds; a missing value is shown as "—".
    """
    rows = []
    for i, r in enumerate(history):
        training = r.get("training") or {}
        rows.append(
            [
                _fmt_int(r.get("iteration", i)),
                _fmt_int(r.get("n_chunks")),
                _fmt_int(r.get("new_chunks")),
                _fmt(r.get("structure_uncertainty"), ".3f"),
                _fmt(r.get("mean_uncertainty"), ".3f"),
                _fmt(r.get("true_force_mae"), ".3f"),
                _fmt(r.get("true_force_max"), ".3f"),
                _fmt(r.get("oos_mae"), ".3f"),
                _fmt(r.get("oos_max"), ".3f"),
                _fmt(r.get("oos_fraction_within_delta"), ".0%"),
                _fmt(r.get("calibration_scale"), ".2f"),
                _fmt(r.get("oos_fraction_within_calibrated"), ".0%"),
                _fmt(training.get("loss"), ".4g"),
                _fmt(training.get("seconds"), ".0f"),
            ]
        )
    return rows


def history_markdown(history: History, stop_reason: str | None = None) -> str:
    """The history as a markdown document: a title, the table, the kept iteration."""
    _require(history)
    name = history[0].get("campaign")
    lines = [f"# NFT campaign {name}" if name else "# NFT campaign", ""]
    lines += markdown_table(HISTORY_COLUMNS, history_table(history))
    lines.append("")
    lines.append(f"Kept iteration: {_best_iteration(history)}")
    if stop_reason:
        lines.append(f"Stop reason: {stop_reason}")
    return "\n".join(lines) + "\n"


# ----------------------------------------------------------------------------- the report


def write_report(
    directory: str | Path,
    history: History,
    predicted: Any = None,
    reference: Any = None,
    delta: Any = None,
    stop_reason: str | None = None,
) -> dict[str, Path]:
    """Write the campaign report into ``directory`` (created if needed).

    Always: ``history.png``, ``summary.json`` and ``history.md``. With ``predicted`` and
    ``reference`` ((n, 3) forces on the target, eV/Å): ``parity.png``; with ``delta`` as well
    ((n,) per-atom uncertainty, eV/Å): ``residual_vs_uncertainty.png``. Returns the written
    paths keyed by file stem (``history``, ``parity``, ``residual_vs_uncertainty``,
    ``summary``, ``markdown``).
    """
    _require(history)
    if (predicted is None) != (reference is None):
        raise ValueError("predicted and reference forces must be given together")
    if delta is not None and predicted is None:
        raise ValueError("delta needs predicted and reference forces to compare against")
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    paths: dict[str, Path] = {"history": plot_history(history, directory / "history.png")}
    if predicted is not None:
        paths["parity"] = plot_parity(predicted, reference, directory / "parity.png")
        if delta is not None:
            residual = np.linalg.norm(
                _forces(predicted, "predicted") - _forces(reference, "reference"), axis=1
            )
            paths["residual_vs_uncertainty"] = plot_residual_vs_uncertainty(
                residual, delta, directory / "residual_vs_uncertainty.png"
            )
    summary_path = directory / "summary.json"
    summary_path.write_text(
        json.dumps(summary(history, stop_reason), indent=2, ensure_ascii=False, allow_nan=False)
        + "\n",
        encoding="utf-8",
    )
    paths["summary"] = summary_path
    markdown_path = directory / "history.md"
    markdown_path.write_text(history_markdown(history, stop_reason), encoding="utf-8")
    paths["markdown"] = markdown_path
    return paths
