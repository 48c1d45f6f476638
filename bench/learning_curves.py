"""Learning curves side by side: true-force MAE against labelled chunks, per centre-selection
setting, on the same seeds (EMT parent, so the whole target's true forces are affordable).

    .venv/bin/python bench/learning_curves.py                       # Pt260, seeds 0 1
    .venv/bin/python bench/learning_curves.py --seeds 0 1 2 --chunks 156
    .venv/bin/python bench/learning_curves.py nft_fw/examples/ptau-alloy-emt.yaml --chunks 156
    .venv/bin/python bench/learning_curves.py --variant "k8=nft.chunks_per_iteration=8"

Each variant runs every seed to ``--chunks`` labelled chunks with no early stop, then prints,
per variant, the MAE (eV/Å) at each chunk count reached by every variant (mean over seeds,
and each seed), the chunks needed to reach ``--goal``, and the wall time.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import time
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from nft_fw import run_locally
from nft_fw.spec.campaign import load_campaign

HERE = Path(__file__).resolve().parent.parent
DEFAULT_VARIANTS = [
    "26 chunks, 1500 steps per iteration=nft.chunks_per_iteration=26,"
    "training.steps_per_iteration=1500",
    "13 chunks, 3000 steps (defaults)=nft.chunks_per_iteration=13,"
    "training.steps_per_iteration=3000",
]


def _variant(text: str) -> tuple[str, dict[str, Any]]:
    name, _, settings = text.partition("=")
    out: dict[str, Any] = {}
    for item in filter(None, settings.split(",")):
        key, _, value = item.partition("=")
        out[key.strip()] = yaml.safe_load(value)
    return name.strip(), out


def _run(campaign: str, settings: dict[str, Any], seed: int, chunks: int) -> dict[str, Any]:
    spec = load_campaign(campaign)
    data = spec.model_dump(mode="json")
    for key, value in settings.items():
        section, _, field = key.partition(".")
        data.setdefault(section, {})[field] = value
    k = int(data["nft"]["chunks_per_iteration"])
    data["nft"].update(seed=seed, patience=1000, max_iterations=math.ceil(chunks / k))
    data["validation"] = {"true_forces": True}
    t0 = time.perf_counter()
    result = run_locally(type(spec).model_validate(data), progress=False)
    return {
        "chunks": [r["n_chunks"] for r in result.history],
        "mae": [r["true_force_mae"] for r in result.history],
        "wall": time.perf_counter() - t0,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("campaign", nargs="?", default=str(HERE / "nft_fw/examples/pt260-emt.yaml"))
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--chunks", type=int, default=156, help="run each to this many chunks")
    parser.add_argument("--goal", type=float, default=0.03, help="MAE goal, eV/Å")
    parser.add_argument(
        "--variant",
        action="append",
        default=None,
        metavar="NAME=SECTION.FIELD=VALUE[,…]",
        help=f"a setting to compare (repeatable); default: {DEFAULT_VARIANTS}",
    )
    parser.add_argument("--json", type=Path, default=None, help="write every curve here")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)

    variants = [_variant(v) for v in (args.variant or DEFAULT_VARIANTS)]
    curves: dict[str, dict[int, dict[str, Any]]] = {}
    for name, settings in variants:
        curves[name] = {}
        for seed in args.seeds:
            curves[name][seed] = run = _run(args.campaign, settings, seed, args.chunks)
            print(
                f"{name}, seed {seed}: MAE {run['mae'][-1]:.4f} eV/Å at {run['chunks'][-1]} "
                f"chunks, {run['wall']:.0f} s",
                flush=True,
            )
    common = sorted(
        set.intersection(*(set(r["chunks"]) for c in curves.values() for r in c.values()))
    )
    print(
        f"\n{Path(args.campaign).name}, seeds {args.seeds}: true-force MAE (eV/Å), mean over seeds"
    )
    print(
        "| chunks | "
        + " | ".join(str(c) for c in common)
        + f" | chunks to ≤ {args.goal} | wall (s) |"
    )
    print("|---" * (len(common) + 3) + "|")
    for name, by_seed in curves.items():
        means = [
            np.mean([r["mae"][r["chunks"].index(c)] for r in by_seed.values()]) for c in common
        ]
        reached = [
            next((n for n, m in zip(r["chunks"], r["mae"], strict=True) if m <= args.goal), None)
            for r in by_seed.values()
        ]
        reach = "/".join("—" if n is None else str(n) for n in reached)
        wall = np.mean([r["wall"] for r in by_seed.values()])
        print(f"| {name} | " + " | ".join(f"{m:.3f}" for m in means) + f" | {reach} | {wall:.0f} |")
        for seed, r in by_seed.items():
            row = [r["mae"][r["chunks"].index(c)] for c in common]
            print(f"|   seed {seed} | " + " | ".join(f"{m:.3f}" for m in row) + " | | |")
    if args.json:
        args.json.write_text(json.dumps(curves, indent=1))


if __name__ == "__main__":
    main()
