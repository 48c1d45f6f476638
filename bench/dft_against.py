"""Exported models against whole-structure parent labels: each model's force MAE, largest
error and largest δ on each structure, beside the parent's own residual forces there.

    .venv/bin/python bench/dft_against.py MODEL_DIR [MODEL_DIR ...] --against FILE [FILE ...]

MODEL_DIR: what ``nft-fw export NAME -o DIR`` writes (e.g. bench/data/pt140-gpaw-md600-model);
FILE: label files with whole-structure labels (``nft_kind: full``; chunks in them are left
out), e.g. bench/data/pt309-gpaw-md300-relaxed-reference.extxyz. The same figures as
``nft-fw history NAME --against FILE`` gives for a campaign's stored models
(:mod:`nft_fw.report.references`), for models outside any database. ``--json`` also writes
them to a file.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from nft_fw.potential.calculator import EnsembleCalculator
from nft_fw.report.references import check_elements, errors, read_references


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("models", nargs="+", type=Path, help="exported model folders")
    parser.add_argument("--against", nargs="+", type=Path, required=True, help="label files")
    parser.add_argument("--json", type=Path, default=None, help="also write the figures here")
    args = parser.parse_args()
    references = read_references(args.against)
    structures: dict[str, dict[str, float]] = {}
    models: dict[str, dict[str, dict[str, float]]] = {}
    print("| structure | atoms | parent mean abs(F) | parent max abs(F) |")
    print("|---|---|---|---|")
    for ref in references:
        size = np.linalg.norm(ref.forces, axis=1)
        structures[ref.name] = {
            "atoms": len(ref.atoms), "mean_force": float(size.mean()), "max_force": float(size.max())
        }  # fmt: skip
        print(f"| {ref.name} | {len(ref.atoms)} | {size.mean():.3f} | {size.max():.3f} |")
    print("\n| model | structure | MAE | max | largest δ |")
    print("|---|---|---|---|---|")
    for path in args.models:
        ensemble = EnsembleCalculator.load(path).ensemble
        check_elements(references, ensemble.spec.elements)
        figures = errors(ensemble, references)
        models[str(path)] = figures
        for name, f in figures.items():
            print(f"| {path.name} | {name} | {f['true_force_mae']:.3f} | "
                  f"{f['true_force_max']:.3f} | {f['structure_uncertainty']:.3f} |")  # fmt: skip
    if args.json is not None:
        args.json.write_text(json.dumps({"references": structures, "models": models}, indent=1))


if __name__ == "__main__":
    main()
