"""A campaign's report, built from the records handed to it: summary figures, plots
(paper Fig. 3 a–c; relaxation Fig. 4 and transfer Fig. 5 when the campaign has them), the
parent-call bill (Sec. V D) and one self-contained ``report.html``.

Nothing here reads a database: :mod:`nft_fw.launchpad.reports` gathers a
:class:`ReportInputs` from the records, and this module computes and writes."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from nft_fw.labels.phase import Phase
from nft_fw.report import md_plots, plots, relax_plots
from nft_fw.report import page as html_report
from nft_fw.spec.campaign import CampaignSpec
from nft_fw.steps.kept import kept_record, kept_round

# the figures of report.html, in order, with their captions
FIGURES = (
    ("history", "Uncertainty and errors per iteration (★ the kept model)"),
    ("parity", "Kept model against the parent's forces on the whole target"),
    ("residual_vs_uncertainty", "Per-atom force error against δ (kept model)"),
    ("relaxation", "Relaxation rounds"),
    ("md", "Molecular dynamics: largest δ and temperature along the run, pauses marked"),
    ("transfer", "Transfer targets"),
)
ROUND_KEYS = (
    "n_steps",
    "converged",
    "structure_uncertainty",
    "final_max_uncertainty",
    "start_true_force_mae",
    "end_true_force_mae",
    "end_parent_fmax",
    "end_parent_energy",
)
TRANSFER_KEYS = (
    "name",
    "n_atoms",
    "n_steps",
    "converged",
    "structure_uncertainty",
    "uncertainty_ratio",
    "flagged",
    "end_uncertainty_ratio",
    "flagged_at_end",
    "start_true_force_mae",
    "end_true_force_mae",
)


@dataclasses.dataclass
class ReportInputs:
    """What a report is made of.

    ``doc``: the campaign record (name, spec, stop reason, n_atoms, …); ``spec``: its
    campaign file; ``history``, ``rounds``, ``transfers``: its NFT, relax and transfer
    records; ``labels``: its label documents (kind, phase, ``inherited_from``; structures
    not needed); ``kept``: the kept NFT iteration's record with its ensemble-mean forces
    ``predicted`` (n, 3) and δ (n,) on the target, eV/Å; ``reference``: the parent's forces
    on the target (n, 3) eV/Å when validation computed them."""

    name: str
    doc: Mapping[str, Any]
    spec: CampaignSpec
    history: Sequence[Mapping[str, Any]]
    rounds: Sequence[Mapping[str, Any]] = ()
    transfers: Sequence[Mapping[str, Any]] = ()
    segments: Sequence[Mapping[str, Any]] = ()
    labels: Sequence[Mapping[str, Any]] = ()
    predicted: np.ndarray | None = None
    delta: np.ndarray | None = None
    reference: np.ndarray | None = None


def trained_uncertainty(inputs: ReportInputs) -> float:
    """The δ the kept model reaches on its own target (:func:`nft_fw.steps.kept.kept_record`)."""
    return float(kept_record(inputs.history, inputs.rounds, inputs.spec)["structure_uncertainty"])


def parent_call_bill(inputs: ReportInputs) -> dict[str, Any]:
    """Parent calculations this campaign made, next to what divide-and-conquer would need
    for the same relaxations (one chunk per atom per relaxation step; Sec. V D of Zeng,
    Chen, Peterson, J. Chem. Phys. 156, 064104 (2022))."""
    own = [d for d in inputs.labels if not d.get("inherited_from") and "prior_campaign" not in d]
    images = sum(1 for d in own if d["kind"] == "image")
    nft_chunks = sum(
        1 for d in own if d["kind"] == "chunk" and d.get("phase", Phase.NFT) == Phase.NFT
    )
    relax_chunks = sum(1 for d in own if d["kind"] == "chunk" and d.get("phase") == Phase.RELAX)
    md_chunks = sum(1 for d in own if d["kind"] == "chunk" and d.get("phase") == Phase.MD)
    out: dict[str, Any] = {
        "initial_images": images,
        "nft_chunks": nft_chunks,
        "relax_chunks": relax_chunks,
        "md_chunks": md_chunks,
        "total_parent_calls": images + nft_chunks + relax_chunks + md_chunks,
        "labels_from_prior": sum(1 for d in inputs.labels if "prior_campaign" in d),
    }
    if inputs.rounds:
        kept = inputs.rounds[kept_round(inputs.rounds, inputs.spec)]
        n_atoms = int(inputs.doc["n_atoms"])
        dc = n_atoms * int(kept["n_steps"])
        out.update(
            relaxation_steps=int(kept["n_steps"]),
            n_atoms=n_atoms,
            divide_and_conquer_calls=dc,
            fraction_of_divide_and_conquer=(images + nft_chunks + relax_chunks) / dc,
        )
    if inputs.transfers:
        out["transfer"] = [
            {
                "name": r["name"],
                "n_atoms": r["n_atoms"],
                "relaxation_steps": r["n_steps"],
                "divide_and_conquer_calls": r["n_atoms"] * r["n_steps"],
                "new_parent_calls": 0,
            }
            for r in inputs.transfers
        ]
    return out


def summary(inputs: ReportInputs) -> dict[str, Any]:
    """The campaign's headline figures: kept NFT iteration, uncertainties, true errors, and
    the parent calls it made (and labels it took from prior labels), and when it relaxed or
    transferred the relaxation and transfer figures."""
    out = plots.summary(list(inputs.history), inputs.doc.get("stop_reason"))
    rounds, transfers = inputs.rounds, inputs.transfers
    if rounds:
        kept = kept_round(rounds, inputs.spec)
        out["relaxation"] = {
            "rounds": len(rounds),
            "kept_round": kept,
            "stop_reason": inputs.doc.get("relax_stop_reason"),
            "stop_detail": inputs.doc.get("relax_stop_detail"),
            "checks": [r["check"] for r in rounds if r.get("check")],
            "trajectory_max_uncertainty": [r["structure_uncertainty"] for r in rounds],
            **{f"kept_{k}": rounds[kept].get(k) for k in ROUND_KEYS if k in rounds[kept]},
        }
    if inputs.segments:
        out["md"] = md_plots.summary(inputs.segments)
    out["parent_calls"] = parent_call_bill(inputs)
    if transfers:
        out["transfer_reference_uncertainty"] = trained_uncertainty(inputs)
        out["transfer"] = [{k: r.get(k) for k in TRANSFER_KEYS} for r in transfers]
    return out


def write(directory: str | Path, inputs: ReportInputs) -> dict[str, Path]:
    """Plots, ``history.md``, ``summary.json`` and ``report.html`` of a campaign written to
    ``directory``; returns the paths by kind."""
    directory = Path(directory)
    with_reference = inputs.reference is not None
    paths = plots.write_report(
        directory,
        list(inputs.history),
        predicted=inputs.predicted if with_reference else None,
        reference=inputs.reference,
        delta=inputs.delta if with_reference else None,
        stop_reason=inputs.doc.get("stop_reason"),
    )
    out = summary(inputs)
    rounds, transfers = list(inputs.rounds), list(inputs.transfers)
    if rounds:
        kept = out["relaxation"]["kept_round"]
        paths["relaxation"] = relax_plots.plot_relaxation(
            rounds, directory / "relaxation.png", kept
        )
    segments = list(inputs.segments)
    if segments:
        paths["md"] = md_plots.plot_md(segments, directory / "md.png")
    if transfers:
        paths["transfer"] = relax_plots.plot_transfer(
            transfers, directory / "transfer.png", out["transfer_reference_uncertainty"]
        )
    if rounds or transfers or segments:
        with open(paths["markdown"], "a", encoding="utf-8") as fh:
            fh.write(md_plots.markdown(segments))
            fh.write(relax_plots.markdown(rounds, transfers, out.get("parent_calls")))
    paths["summary"].write_text(
        json.dumps(out, indent=2, ensure_ascii=False, default=float) + "\n", encoding="utf-8"
    )
    paths["html"] = _write_html(directory, inputs, out, paths)
    return paths


def _write_html(
    directory: Path, inputs: ReportInputs, out: dict[str, Any], paths: dict[str, Path]
) -> Path:
    """report.html: the report in one self-contained page (nft_fw.report.page)."""
    import yaml

    figures = [(caption, paths[key]) for key, caption in FIGURES if key in paths]
    markdown = Path(paths["markdown"]).read_text(encoding="utf-8")
    if markdown.startswith("# "):  # the page's own title says it
        markdown = "## History\n" + markdown.split("\n", 1)[1]
    page = html_report.render(
        f"NFT campaign {inputs.name}",
        html_report.campaign_facts(dict(inputs.doc), out),
        figures,
        markdown,
        yaml.safe_dump(inputs.doc.get("spec") or {}, sort_keys=False, allow_unicode=True),
        kept_iteration=out.get("best_iteration"),
    )
    path = directory / "report.html"
    path.write_text(page, encoding="utf-8")
    return path
