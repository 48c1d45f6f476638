"""Robustness of a model away from its data, on stored labels only (no parent call): train
one ensemble on every label of a campaign's export (initial images, NFT and relaxation
chunks), then relax the campaign's rattled target and the perfect particle with it and
record δ along each trajectory; optionally K-fold cross-validation over the chunks.

    .venv/bin/python bench/dft_robustness.py                   # pt140-gpaw-relax, all labels
    .venv/bin/python bench/dft_robustness.py --set model.baseline=emt   # GPAW - EMT learnt
    .venv/bin/python bench/dft_robustness.py --set model.cutoff=5.0 --cv 5 --json out.json
    .venv/bin/python bench/dft_robustness.py --cv-by phase   # NFT chunks, relax chunks held out
    .venv/bin/python bench/dft_robustness.py CAMPAIGN.yaml --save MODEL_DIR  # keep the model

Every figure here comes from the labels' chunks (CV) and from δ along the model's own
trajectories: these are what settings may be chosen on. The whole-particle references are
not read.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import time
from pathlib import Path
from typing import Any

import numpy as np
from ase import Atoms
from ase.cluster import Octahedron
from dft_replay import apply_settings

from nft_fw.potential import training as tr
from nft_fw.potential.calculator import EnsembleCalculator
from nft_fw.runners import replay
from nft_fw.spec.campaign import CampaignSpec, load_campaign, prepare
from nft_fw.steps.relax import relax
from nft_fw.steps.step import fit

HERE = Path(__file__).resolve().parent.parent
CAMPAIGN = HERE / "nft_fw" / "examples" / "pt140-gpaw-relax.yaml"


def _spec(path: str, settings: list[str]) -> CampaignSpec:
    spec = load_campaign(path)
    data = spec.model_dump(mode="json")
    # load_campaign has made the file's path relative to the campaign file already
    data["prior_labels"]["file"] = str(Path(spec.prior_labels.file).resolve())  # type: ignore[union-attr]
    apply_settings(data, settings)
    data["validation"] = {"true_forces": False}
    return CampaignSpec.model_validate(data)


def _min_distance(atoms: Atoms) -> float:
    d = atoms.get_all_distances(mic=bool(atoms.pbc.any()))
    return float(d[np.triu_indices(len(atoms), 1)].min())


def _trajectory(start: Atoms, calc: Any, fmax: float, steps: int, level: float) -> dict[str, Any]:
    t0 = time.perf_counter()
    traj = relax(start, calc, fmax=fmax, max_steps=steps)
    deltas = np.array([s.max_uncertainty for s in traj.steps])
    above = np.nonzero(deltas > level)[0]
    worst = int(deltas.argmax())
    return {
        "steps": len(traj.steps) - 1,
        "converged": traj.converged,
        "delta_start": float(deltas[0]),
        "delta_max": float(deltas.max()),
        "delta_end": float(deltas[-1]),
        "first_step_above": int(above[0]) if len(above) else None,
        "fmax_end": traj.steps[-1].fmax,
        "min_distance_end": _min_distance(traj.frames[-1]),
        "min_distance_at_worst": _min_distance(traj.frames[worst]),
        "largest_move": float(
            np.linalg.norm(traj.frames[-1].positions - start.positions, axis=1).max()
        ),
        "seconds": time.perf_counter() - t0,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("campaign", nargs="?", default=str(CAMPAIGN))
    parser.add_argument("--set", action="append", default=[], metavar="SECTION.FIELD=VALUE")
    parser.add_argument("--steps", type=int, default=None, help="training steps (default: "
                        "training.initial_steps)")  # fmt: skip
    parser.add_argument("--relax-steps", type=int, default=300)
    parser.add_argument("--level", type=float, default=0.5, help="δ level counted, eV/Å")
    parser.add_argument("--phases", default="nft,relax", help="chunk phases trained on "
                        "(comma-separated; default: nft,relax)")  # fmt: skip
    parser.add_argument("--cv", type=int, default=0, metavar="K")
    parser.add_argument("--cv-by", choices=replay.CV_BY, default="random",
                        help="folds: --cv K at random, or one per phase of the chunks "
                        "(no --cv needed)")  # fmt: skip
    parser.add_argument("--json", default=None)
    parser.add_argument("--save", default=None, metavar="DIR", help="write the trained model "
                        "here (a directory EnsembleCalculator.load reads)")  # fmt: skip
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)

    settings = list(args.set)
    if args.steps is not None:
        settings.append(f"training.initial_steps={args.steps}")
    spec = _spec(args.campaign, settings)
    prepared = prepare(spec)
    assert prepared.prior is not None
    images = replay.images(prepared.prior)
    chunks = [
        dataclasses.replace(replay._chunk(lb), phase=lb.phase)
        for lb in prepared.prior.labels.values()
        if lb.kind == "chunk" and lb.phase in args.phases.split(",")
    ]
    phases: dict[str, int] = {}
    for c in chunks:
        phases[c.phase] = phases.get(c.phase, 0) + 1
    print(f"{len(images)} images, chunks {phases}; baseline {spec.model.baseline}; {settings}")

    t0 = time.perf_counter()
    trained = fit(prepared, images, chunks, None, 0)
    train_s = time.perf_counter() - t0
    calc = EnsembleCalculator(trained.ensemble)
    if args.save:
        calc.save(args.save)
    print(
        f"trained in {train_s:.0f} s; train force MAE {trained.metrics.get('chunk_force_mae_eV_per_A')}"
    )

    ad = spec.target.builder  # type: ignore[union-attr]
    perfect = Octahedron(ad.element, ad.length, ad.cutoff, latticeconstant=ad.lattice_constant)
    out: dict[str, Any] = {"baseline": spec.model.baseline, "settings": settings, "chunks": phases,
                           "train_seconds": train_s, "metrics": trained.metrics}  # fmt: skip
    for name, start in (("rattled", prepared.target), ("perfect", perfect)):
        row = _trajectory(start, calc, 0.05, args.relax_steps, args.level)
        out[name] = row
        print(
            f"{name:8s} steps {row['steps']:4d} conv {row['converged']!s:5s} δ start "
            f"{row['delta_start']:.3f} max {row['delta_max']:.3f} end {row['delta_end']:.3f} "
            f"first>{args.level} {row['first_step_above']} fmax end {row['fmax_end']:.3f} "
            f"dmin end {row['min_distance_end']:.2f} at worst {row['min_distance_at_worst']:.2f} "
            f"move {row['largest_move']:.2f} ({row['seconds']:.0f} s)"
        )
    if args.cv or args.cv_by == "phase":
        cv = replay.cross_validate(prepared, images, chunks, folds=args.cv, by=args.cv_by)
        out["cv"] = cv
        folds = ", ".join(
            f"{n} ({k}) {m:.3f}"
            for n, k, m in zip(cv["fold_names"], cv["fold_sizes"], cv["fold_mae"], strict=True)
        )
        print(
            f"chunk CV ({cv['folds']} folds by {cv['by']}): MAE {cv['mae']:.3f} max "
            f"{cv['max']:.3f} eV/Å; folds {folds}"
        )
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=1, default=float))


if __name__ == "__main__":
    tr.log.setLevel(logging.WARNING)
    main()
