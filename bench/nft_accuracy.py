"""NFT accuracy on a campaign with true-force validation (EMT parent).

    .venv/bin/python bench/nft_accuracy.py                         # Pt260, the benchmark campaign
    .venv/bin/python bench/nft_accuracy.py --chunk-radius 8        # same with 8 Å chunks
    .venv/bin/python bench/nft_accuracy.py nft_fw/examples/ptau-alloy-emt.yaml
    .venv/bin/python bench/nft_accuracy.py --set training.steps_per_iteration=500
    .venv/bin/python bench/nft_accuracy.py --transfer        # + Pt309 / Pt1415 without new data

Prints the per-iteration history and the figures of the best iteration: true-force MAE and
max (eV/Å), the ratio to the bulk-only model, the fraction of atoms whose residual is within
their δ_i, the Spearman correlation of residual and δ, and the wall time.
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path

import numpy as np
import yaml

from nft_fw import run_locally
from nft_fw.spec.campaign import CampaignSpec, load_campaign
from nft_fw.steps import decision

HERE = Path(__file__).resolve().parent.parent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("campaign", nargs="?", default=str(HERE / "nft_fw/examples/pt260-emt.yaml"))
    parser.add_argument("--chunk-radius", type=float, default=None, help="override, Å")
    parser.add_argument("--max-iterations", type=int, default=None)
    parser.add_argument("--patience", type=int, default=None)
    parser.add_argument("--json", type=Path, default=None, help="write the history here")
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="SECTION.FIELD=VALUE",
        help="override a campaign field, e.g. --set training.steps_per_iteration=500",
    )
    parser.add_argument("--save", type=Path, default=None, help="save the kept model here")
    parser.add_argument(
        "--transfer",
        action="store_true",
        help="also: the kept model's true-force MAE, no new data, on rattled icosahedral "
        "Pt309 and Pt1415 (single points against the parent)",
    )
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)

    spec = load_campaign(args.campaign)
    nft = spec.nft.model_copy(
        update={
            k: v
            for k, v in {
                "chunk_radius": args.chunk_radius,
                # the comparison with chunks smaller than 2·model.cutoff is the point here
                "allow_short_chunks": True if args.chunk_radius is not None else None,
                "max_iterations": args.max_iterations,
                "patience": args.patience,
            }.items()
            if v is not None
        }
    )
    data = spec.model_dump(mode="json")
    data["nft"] = nft.model_dump(mode="json")
    data["validation"] = {"true_forces": True}
    for item in args.set:
        key, _, value = item.partition("=")
        section, _, field = key.partition(".")
        data.setdefault(section, {})[field] = yaml.safe_load(value)
    spec = type(spec).model_validate(data)
    t0 = time.perf_counter()
    result = run_locally(spec)
    wall = time.perf_counter() - t0

    print(f"\n{spec.name}: stop = {result.stop.reason} ({result.stop.detail})")
    print(
        " it  chunks  δmax    δmean   MAE     max     within-δ  rank-ρ  OOS-MAE  scale"
        "  OOS≤sδ  target≤sδ  train-s"
    )
    for r in result.history:
        print(
            f"{r['iteration']:>3} {r['n_chunks']:>6}  {r['structure_uncertainty']:.3f}  "
            f"{r['mean_uncertainty']:.3f}   {r['true_force_mae']:.3f}   {r['true_force_max']:.3f}"
            f"   {r['fraction_within_delta']:.2f}      {r['rank_correlation']:+.2f}"
            f"   {_f(r.get('oos_mae'), '.3f')}    {_f(r.get('calibration_scale'), '.2f')}"
            f"   {_f(r.get('oos_fraction_within_calibrated'), '.2f')}"
            f"    {_f(r.get('fraction_within_calibrated_delta'), '.2f')}"
            f"       {r['training']['seconds']:.0f}"
        )
    _rules(result.history, spec)
    first, best = result.history[0], result.history[result.best_iteration]
    last = result.history[-1]
    print(
        f"best iteration {result.best_iteration}: MAE {best['true_force_mae']:.3f} eV/Å, "
        f"max {best['true_force_max']:.3f} eV/Å, bulk-only MAE / best = "
        f"{first['true_force_mae'] / best['true_force_mae']:.1f}x, "
        f"within δ {best['fraction_within_delta']:.0%}, rank ρ {best['rank_correlation']:.2f}"
    )
    print(
        f"last iteration {last['iteration']}: MAE {last['true_force_mae']:.3f}, "
        f"max {last['true_force_max']:.3f} eV/Å; chunk radius {result.prepared.chunk_radius_A} Å; "
        f"{len(result.labels)} chunks; wall {wall:.0f} s"
    )
    if args.transfer:
        from nft_fw.structures.particles import build_nanoparticle, rattle

        for shells in (5, 8):
            atoms = rattle(
                build_nanoparticle("icosahedron", "Pt", shells=shells, lattice_constant=3.92),
                0.1,
                0,
            )
            true = result.prepared.parent.label(atoms)[1]
            atoms.calc = result.calculator
            err = np.linalg.norm(atoms.get_forces() - true, axis=1)
            print(
                f"transfer, rattled icosahedral Pt{len(atoms)}, no new data: true-force MAE "
                f"{err.mean():.3f}, max {err.max():.3f} eV/Å"
            )
    if args.save:
        result.calculator.save(args.save)
    if args.json:
        args.json.write_text(json.dumps(result.history, indent=1, default=float))


def _f(value: float | None, fmt: str) -> str:
    return "  —  " if value is None else format(value, fmt)


def _rules(history: list[dict], spec: CampaignSpec) -> None:
    """Where each stopping rule would have ended this history and which model it keeps.

    The loop is deterministic and the rules are pure functions of the records, so a run
    with a large patience shows every rule's outcome on one history."""
    n = spec.nft
    best = min(history, key=lambda r: r["true_force_mae"])
    print(f"best iteration by true error: {best['iteration']} (MAE {best['true_force_mae']:.4f})")
    for measure in ("mean_delta", "max_delta"):
        min_gain = n.min_gain if measure == "mean_delta" else 0.0
        for end in range(1, len(history) + 1):
            step = decision.decide(
                [r["structure_uncertainty"] for r in history[:end]],
                np.zeros(1),
                set(),
                k=1,
                threshold=n.threshold,
                patience=RULE_PATIENCE,
                max_iterations=len(history) - 1,
                tolerance=n.best_tolerance,
                measures=decision.progress(history[:end], measure),
                min_gain=min_gain,
            )
            if isinstance(step, decision.Stop):
                break
        kept = history[step.best_iteration]
        print(
            f"rule {measure} (patience {RULE_PATIENCE}, min_gain {min_gain}): stops after "
            f"iteration {end - 1} ({step.reason}), keeps {step.best_iteration}: MAE "
            f"{kept['true_force_mae']:.4f} = {kept['true_force_mae'] / best['true_force_mae']:.2f}"
            f"× the best"
        )


RULE_PATIENCE = 2


if __name__ == "__main__":
    main()
