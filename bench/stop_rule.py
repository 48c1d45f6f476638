"""The stopping rule and the kept model, measured: campaigns run to their iteration cap with no
early stop (true forces on), then every rule is applied to the recorded histories as the
campaign would have applied it iteration by iteration (a rule is a pure function of the
history: nft_fw.steps.decision). Per campaign and rule: where it stops, the chunks it used, the
kept iteration and its true-force MAE against the best of the iterations it ran.

    .venv/bin/python bench/stop_rule.py                        # EMT demo seeds 0 1 2, alloy, slab
    .venv/bin/python bench/stop_rule.py --only pt260-emt-defaults   # Pt260, default training
    .venv/bin/python bench/stop_rule.py --histories out/stop   # reuse histories run before
    .venv/bin/python bench/stop_rule.py --replay replay.json   # add a replayed DFT history

The EMT runs are the demo (26 chunks and 1,500 steps per iteration), the same campaign
with nft-fw's default training settings (13 and 3,000, to 182 chunks: ``pt260-emt-defaults``,
~8 min per seed on one core), the alloy and the slab. ``--replay`` takes the JSON of ``bench/dft_replay.py --json`` (its records carry the true
errors against the whole-particle reference). A history is kept as JSON under
``--histories`` (default ``bench/out/stop-rule``), named by campaign and seed.
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from nft_fw.spec.campaign import CampaignSpec, load_campaign
from nft_fw.steps import decision, step

HERE = Path(__file__).resolve().parent.parent
EXAMPLES = HERE / "nft_fw" / "examples"
# the Pt260 demo with nft-fw's default training settings (13 chunks and 3,000 steps per
# iteration; the example file buys demo speed with 26 and 1,500), run to 182 chunks
DEFAULTS = {
    "nft": {"chunks_per_iteration": 13, "max_iterations": 14},
    "training": {"steps_per_iteration": 3000},
}
RUNS: list[tuple[str, Path, int, dict[str, Any]]] = [
    ("pt260-emt", EXAMPLES / "pt260-emt.yaml", 0, {}),
    ("pt260-emt", EXAMPLES / "pt260-emt.yaml", 1, {}),
    ("pt260-emt", EXAMPLES / "pt260-emt.yaml", 2, {}),
    ("pt260-emt-defaults", EXAMPLES / "pt260-emt.yaml", 0, DEFAULTS),
    ("pt260-emt-defaults", EXAMPLES / "pt260-emt.yaml", 1, DEFAULTS),
    ("pt260-emt-defaults", EXAMPLES / "pt260-emt.yaml", 2, DEFAULTS),
    ("ptau-alloy-emt", EXAMPLES / "ptau-alloy-emt.yaml", 0, {}),
    ("pt111-slab-emt", EXAMPLES / "pt111-slab-emt.yaml", 0, {}),
]
RECORD_KEYS = (
    "iteration", "n_chunks", "structure_uncertainty", "mean_uncertainty", "oos_mae", "oos_max",
    "oos_n", "oos_errors", "oos_deltas", "calibration_scale", "calibrated_structure_uncertainty",
    "true_force_mae", "true_force_max", "training",
)  # fmt: skip


def _settings(path: Path, overrides: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
    data = load_campaign(path).model_dump(mode="json")
    for section, values in overrides.items():
        data[section] = {**data[section], **values}
    return data


def _uncapped(path: Path, seed: int, overrides: Mapping[str, Mapping[str, Any]]) -> CampaignSpec:
    data = _settings(path, overrides)
    data["nft"].update(seed=seed, patience=1000, threshold=1e-9)
    data["validation"] = {"true_forces": True}
    data["relax"], data["transfer"] = None, []
    return CampaignSpec.model_validate(data)


def run_history(
    name: str, path: Path, seed: int, overrides: Mapping[str, Mapping[str, Any]], cache: Path
) -> dict[str, Any]:
    """The campaign run to its cap (or its cached history)."""
    from nft_fw import run_locally

    out = cache / f"{name}-seed{seed}.json"
    if out.exists():
        return json.loads(out.read_text())
    t0 = time.perf_counter()
    result = run_locally(_uncapped(path, seed, overrides), progress=False)
    history = [{k: r.get(k) for k in RECORD_KEYS} for r in result.history]
    data = {
        "campaign": name,
        "seed": seed,
        "file": str(path.relative_to(HERE)),
        "overrides": overrides,
        "history": history,
        "seconds": time.perf_counter() - t0,
    }
    cache.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(data, indent=1) + "\n")
    return data


# ----------------------------------------------------------------------------- rules


def apply_rule(
    history: Sequence[Mapping[str, Any]], spec: CampaignSpec
) -> tuple[int, decision.Stop]:
    """The iteration at which the campaign's rule stops on this history (the last recorded
    one when it never stops before), and its Stop."""
    for k in range(len(history)):
        rec = history[: k + 1]
        values = step.threshold_values(rec, spec)
        stop = decision.stop_rule(
            values,
            decision.progress(rec, spec.nft.progress_measure),
            threshold=spec.nft.threshold,
            patience=spec.nft.patience,
            max_iterations=min(spec.nft.max_iterations, len(history) - 1),
            tolerance=spec.nft.best_tolerance,
            min_gain=spec.nft.min_gain,
            target_error=spec.nft.target_error,
            estimates=decision.estimated_errors(rec),
        )
        if stop is not None:
            return k, stop
    raise AssertionError("the cap always stops")


def evaluate(run: Mapping[str, Any], nft: Mapping[str, Any]) -> dict[str, Any]:
    """One rule (``nft`` settings over the campaign's own) on one run's history."""
    if "file" in run:
        data = _settings(HERE / run["file"], run.get("overrides", {}))
    else:
        data = run["settings"]
    data["nft"] = {**data["nft"], **nft}
    data["prior_labels"] = None
    spec = CampaignSpec.model_validate(data)
    history = run["history"]
    k, stop = apply_rule(history, spec)
    ran = history[: k + 1]
    maes = [r["true_force_mae"] for r in ran]
    best = min(range(len(maes)), key=maes.__getitem__)
    kept = stop.best_iteration
    return {
        "stop_at": k,
        "reason": stop.reason,
        "chunks": ran[-1]["n_chunks"],
        "kept": kept,
        "kept_mae": maes[kept],
        "best": best,
        "best_mae": maes[best],
        "ratio": maes[kept] / maes[best],
        "final_mae_of_full_run": history[-1]["true_force_mae"],
    }


RULES = {
    "mean δ (0.4 default)": {"progress_measure": "mean_delta", "min_gain": 0.02,
                             "target_error": None},
    "estimated error": {"progress_measure": "estimated_error", "min_gain": 0.02,
                        "target_error": None},
    "estimated error, target 0.03": {"progress_measure": "estimated_error", "min_gain": 0.02,
                                     "target_error": 0.03},
}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--histories", default=str(HERE / "bench" / "out" / "stop-rule"))
    parser.add_argument("--replay", action="append", default=[], help="dft_replay.py --json")
    parser.add_argument("--only", default=None, help="run only campaigns whose name has this")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    cache = Path(args.histories)
    runs = []
    for name, path, seed, overrides in RUNS:
        if args.only and args.only not in name:
            continue
        t0 = time.perf_counter()
        runs.append(run_history(name, path, seed, overrides, cache))
        print(f"{name} seed {seed}: {len(runs[-1]['history'])} iterations "
              f"({time.perf_counter() - t0:.0f} s)", flush=True)  # fmt: skip
    for path in args.replay:
        data = json.loads(Path(path).read_text())
        runs.append({"campaign": f"replay:{Path(path).stem}", "seed": 0,
                     "settings": data["settings"], "history": data["records"]})  # fmt: skip
    print("\n| rule | campaign | seed | stops at | reason | chunks | kept | kept MAE | best (it.) "
          "| kept / best | MAE at the cap |")  # fmt: skip
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for rule, nft in RULES.items():
        for run in runs:
            e = evaluate(run, nft)
            print(f"| {rule} | {run['campaign']} | {run['seed']} | {e['stop_at']} | {e['reason']} "
                  f"| {e['chunks']} | {e['kept']} | {e['kept_mae']:.4f} | {e['best_mae']:.4f} "
                  f"({e['best']}) | {e['ratio']:.2f} | {e['final_mae_of_full_run']:.4f} |")  # fmt: skip


if __name__ == "__main__":
    main()
