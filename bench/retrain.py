"""Time of one warm-start retraining at 20 bulk images + 260 chunks (the end of a Pt260 run).

    .venv/bin/python bench/retrain.py [--chunks 260] [--steps 1500]

Prints the chunk featurisation time and two retrainings of the same size: the first
includes JIT compilation (as the first iteration after a bucket grows does), the second
is the steady state.
"""

from __future__ import annotations

import argparse
import time

from nft_fw import loop, training
from nft_fw.campaign import example_campaign, load_campaign, prepare


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--chunks", type=int, default=260)
    parser.add_argument("--steps", type=int, default=None, help="default: the campaign's")
    args = parser.parse_args()
    spec = load_campaign(example_campaign())
    prepared = prepare(spec)
    t0 = time.perf_counter()
    images = loop.initial_images(prepared)
    ens = loop.fresh_ensemble(prepared, images)
    ia = training.image_arrays(images, ens.spec)
    t1 = time.perf_counter()
    labels = [
        loop.label_chunk(prepared, loop.cut_chunk(prepared, c), 1) for c in range(args.chunks)
    ]
    t2 = time.perf_counter()
    feats = loop.chunk_features(labels, ens.spec)
    t3 = time.perf_counter()
    cfg = loop.train_config(spec, 1)
    if args.steps is not None:
        cfg = training.TrainConfig(**{**cfg.__dict__, "steps": args.steps})
    runs = []
    for _ in range(2):
        t = time.perf_counter()
        ens, metrics = training.train(ens, ia, feats, cfg)
        runs.append(time.perf_counter() - t)
    print(f"initial set (generate + label 20 images + descriptors): {t1 - t0:.1f} s")
    print(f"cut + EMT label {args.chunks} chunks: {t2 - t1:.1f} s")
    print(f"chunk features (G and dG/dR_centre) for {args.chunks} chunks: {t3 - t2:.1f} s")
    print(
        f"retraining, {int(metrics['steps'])} steps, 20 images + {args.chunks} chunks: "
        f"first {runs[0]:.1f} s (with compile), steady {runs[1]:.1f} s "
        f"({1000 * runs[1] / metrics['steps']:.1f} ms/step)"
    )


if __name__ == "__main__":
    main()
