"""Cost of GPAW labels with a campaign's parent settings: chunks of its target and initial
bulk cells, run one after another in this process (as a worker runs them).

    .venv/bin/python bench/gpaw_label_cost.py [CAMPAIGN] [--chunks 1] [--images 1]

Prints per label: atoms, wall time, SCF iterations, retry used, and ru_maxrss (the
process's resident-memory high-water mark so far, MiB).
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np

from nft_fw import step
from nft_fw.campaign import load_campaign, prepare
from nft_fw.chunks import cut

EXAMPLE = Path(__file__).resolve().parent.parent / "nft_fw" / "examples" / "pt38-gpaw.yaml"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("campaign", nargs="?", default=str(EXAMPLE))
    parser.add_argument("--chunks", type=int, default=1, help="chunks of random centres")
    parser.add_argument("--images", type=int, default=1, help="initial bulk cells")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    prepared = prepare(load_campaign(args.campaign))
    parent = prepared.parent
    rng = np.random.default_rng(args.seed)
    centres = rng.choice(len(prepared.target), size=args.chunks, replace=False)
    work = [
        (f"chunk {c}", cut(prepared.target, int(c), prepared.chunk_radius_A).atoms) for c in centres
    ]
    if args.images:
        images = step.initial_structures(prepared)[: args.images]
        work += [(f"bulk image {k}", a) for k, a in enumerate(images)]
    print(f"parent {parent.name} {parent.params}")
    print("| structure | atoms | wall (s) | SCF iterations | attempt | ru_maxrss (MiB) |")
    print("|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp:
        for name, atoms in work:
            r = parent.single_point(atoms, log_dir=Path(tmp), tag=name.replace(" ", "-"))
            print(
                f"| {name} | {len(atoms)} | {r.seconds:.1f} | {r.scf_iterations} | "
                f"{r.attempt} | {r.peak_rss_MiB:.0f} |",
                flush=True,
            )


if __name__ == "__main__":
    main()
