"""The nearsightedness report: the figure of the central force's deviation per chunk
radius, the markdown table, ``report.html`` and ``nearsightedness.json`` — the same files
for an analysis run in one process and for a nearsightedness campaign's stored labels
(:mod:`nft_fw.steps.nearsightedness` computes what they show)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from nft_fw.report.page import markdown_table
from nft_fw.steps.nearsightedness import Nearsightedness, _stats, report_data


def plot(result: Nearsightedness, path: str | Path, tolerance: float | None = None) -> Path:
    """Deviation of the central force per radius (median, quartile band, max) from the full
    structure and from the largest chunk, log scale; PNG at ``path``."""
    fig = Figure(figsize=(6.0, 4.5), dpi=120, layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    r = np.asarray(result.radii)
    floor = 1e-15  # eV/Å: exact zeros are drawn at the floor of the log axis
    curves = [("full structure", result.deviation_from_full(), "C0")]
    curves.append(("largest chunk", result.deviation_from_largest(), "C1"))
    for name, dev, colour in curves:
        if dev is None:
            continue
        if name == "largest chunk":
            dev, rr = dev[:-1], r[:-1]  # zero by definition at the largest radius
        else:
            rr = r
        if len(rr) == 0:
            continue
        stats = np.array([_stats(row) for row in dev])  # (n_radii, 4): q1, median, q3, max
        q1, med, q3, top = (np.maximum(stats[:, i], floor) for i in range(4))
        ax.fill_between(rr, q1, q3, color=colour, alpha=0.25, label=f"vs {name}: quartiles")
        ax.plot(rr, med, "o-", color=colour, label=f"vs {name}: median")
        ax.plot(rr, top, "v--", color=colour, label=f"vs {name}: max")
    if result.force_locality_A is not None and result.force_locality_A <= r[-1]:
        ax.axvline(
            result.force_locality_A,
            color="C3",
            lw=0.8,
            ls=":",
            label=f"parent's force locality {result.force_locality_A:.2f} Å",
        )
    if tolerance is not None:
        ax.axhline(tolerance, color="grey", lw=0.8, ls=":", label=f"tolerance {tolerance:g}")
        rec = result.recommend(tolerance)
        if rec is not None:
            ax.axvline(rec, color="k", lw=0.8, ls="-.", label=f"recommended {rec:g} Å")
    ax.set_yscale("log")
    ax.set_xlabel("chunk radius (Å)")
    ax.set_ylabel(r"$|F_\mathrm{chunk} - F_\mathrm{ref}|$ of the centre (eV/Å)")
    ax.set_title(f"nearsightedness of {result.parent}, {len(result.centres)} centres")
    ax.legend(fontsize=7)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    return path


def write_report(
    result: Nearsightedness,
    data: Mapping[str, Any],
    directory: str | Path,
    spec: Mapping[str, Any] | None = None,
) -> dict[str, Path]:
    """``nearsightedness.json``, ``nearsightedness.png`` (deviation per radius: median,
    quartile band, max; log scale) and ``report.html`` in ``directory``; ``spec``: the
    campaign file, shown in the page."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    figure = plot(result, directory / "nearsightedness.png", data["tolerance_eV_per_A"])
    path = directory / "nearsightedness.json"
    path.write_text(json.dumps(data, indent=2, allow_nan=False) + "\n", encoding="utf-8")
    html = _write_html(directory, str(data["campaign"]), data, figure, dict(spec or {}))
    return {"json": path, "figure": figure, "html": html}


def _cell(value: Any, spec: str) -> str:
    return "—" if value is None or value != value else format(value, spec)


def radius_table(data: Mapping[str, Any]) -> str:
    """The per-radius table of a report (:func:`report_data`) as markdown."""
    rows = data["table"]
    refs = [r for r in ("full", "largest") if any(f"{r}_median" in row for row in rows)]
    head = ["radius (Å)", "atoms (mean)", "atoms (max)", "parent (s)"]
    for ref in refs:
        what = "whole structure" if ref == "full" else "largest chunk"
        head += [f"vs {what}: median", "q1", "q3", "max (eV/Å)"]
    body = []
    for k, row in enumerate(rows):
        cells = [
            _cell(row["radius_A"], "g"),
            _cell(row["mean_atoms"], ".1f"),
            str(row["max_atoms"]),
            _cell(row["parent_seconds"], ".0f"),
        ]
        for ref in refs:
            if ref == "largest" and k == len(rows) - 1:  # the largest chunk against itself
                cells += ["—"] * 4
                continue
            cells += [_cell(row.get(f"{ref}_{q}"), ".3f") for q in ("median", "q1", "q3", "max")]
        body.append(cells)
    return "\n".join(markdown_table(head, body)) + "\n"


def _write_html(
    directory: Path, name: str, data: Mapping[str, Any], figure: Path, spec: dict[str, Any]
) -> Path:
    """report.html: the analysis in one self-contained page (nft_fw.report.page)."""
    import yaml

    from nft_fw.report import page as html_report

    def fmt(value: Any, unit: str) -> str:
        return "none within the radii" if value is None else f"{value:g}{unit}"

    facts = [
        ("parent", data.get("parent")),
        ("centres", ", ".join(str(c) for c in data.get("centres") or [])),
        ("radii", ", ".join(f"{r:g}" for r in data.get("radii_A") or []) + " Å"),
        ("labels", data.get("labels")),
        (
            "compared with",
            {"full": "the whole structure", "largest": "the largest chunk"}.get(
                data.get("reference") or "", data.get("reference")
            ),
        ),
        ("tolerance", fmt(data.get("tolerance_eV_per_A"), " eV/Å")),
        ("recommended chunk radius", fmt(data.get("recommended_radius_A"), " Å")),
        ("parent's force locality", fmt(data.get("force_locality_A"), " Å")),
        ("missing labels", len(data.get("missing") or [])),
    ]
    page = html_report.render(
        f"Nearsightedness {name}",
        facts,
        [("Central force against chunk radius: median, quartiles, max", figure)],
        "## Per radius\n" + radius_table(data),
        yaml.safe_dump(spec, sort_keys=False, allow_unicode=True),
    )
    path = directory / "report.html"
    path.write_text(page, encoding="utf-8")
    return path


def write(
    result: Nearsightedness, directory: str | Path, tolerance: float, name: str = "analysis"
) -> dict[str, Path]:
    """The report of an analysis run in this process (:func:`write_report`; ``name`` heads
    the page)."""
    data = report_data(result, tolerance, campaign=name, full_requested=result.full_forces
                       is not None)  # fmt: skip
    return write_report(result, data, directory)
