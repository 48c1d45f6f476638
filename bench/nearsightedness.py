"""Nearsightedness of the parents (paper Fig. 2): central-force deviation against chunk radius.

    .venv/bin/python bench/nearsightedness.py [--skip-gpaw] [--skip-emt] [--out DIR]
        [--gpaw-centres 0,1,2] [--gpaw-radii 3,4,5,6,7] [--basis sz(dzp)] [--h 0.25]

1. EMT on Pt260 (the demo's rattled octahedron), 26 centres, radii 4–14 Å, against the whole
   particle: the deviation should fall to round-off beyond EMT's force locality (2 × its
   neighbour cutoff, 11.75 Å for Pt).
2. GPAW (LCAO, PBE, Fermi–Dirac 0.1 eV, 4 Å vacuum) on a rattled Pt13 icosahedron or Pt38
   truncated octahedron (``--gpaw-cluster``), radii 3–7 Å, against the whole cluster;
   prints the parent time per radius and in total.

Figures and JSON go to ``DIR/emt`` and ``DIR/gpaw`` (default ./nearsightedness-bench).
"""

from __future__ import annotations

import argparse
import resource
import time
from pathlib import Path

import numpy as np
from ase.cluster import Icosahedron, Octahedron

from nft_fw.parents.parent import get_parent
from nft_fw.report.nearsightedness import write
from nft_fw.steps.nearsightedness import Nearsightedness, nearsightedness
from nft_fw.structures.particles import rattle


def show(title: str, result: Nearsightedness, tolerance: float) -> None:
    print(f"\n{title}")
    keys = [k for k in ("full", "largest") if result.to_dict()["table"][0].get(f"{k}_max")]
    head = "| radius (Å) | atoms (mean) | parent (s) | " + " | ".join(
        f"vs {k} median | vs {k} max" for k in keys
    )
    print(head + " |")
    print("|" + "---|" * (3 + 2 * len(keys)))
    for row in result.table():
        cells = [
            f"{row['radius_A']:g}",
            f"{row['mean_atoms']:.1f}",
            f"{row['parent_seconds']:.1f}",
        ]
        for k in keys:
            cells += [f"{row[f'{k}_median']:.2e}", f"{row[f'{k}_max']:.2e}"]
        print("| " + " | ".join(cells) + " |")
    rec = result.recommend(tolerance)
    print(
        f"parent labels {result.labels}; whole structure {result.full_seconds or 0:.1f} s; "
        f"recommended radius at {tolerance:g} eV/Å: {rec} Å; chunks are the whole structure "
        f"from {result.whole_from()} Å"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("nearsightedness-bench"))
    parser.add_argument("--skip-emt", action="store_true")
    parser.add_argument("--skip-gpaw", action="store_true")
    parser.add_argument(
        "--gpaw-cluster",
        choices=["pt13", "pt38"],
        default="pt13",
        help="rattled Pt13 icosahedron or Pt38 truncated octahedron",
    )
    parser.add_argument(
        "--gpaw-centres",
        help="atom indices; default: the atom nearest the centre, the farthest, and one between",
    )
    parser.add_argument("--gpaw-radii", default="3,4,5,6,7")
    parser.add_argument("--basis", default="sz(dzp)")
    parser.add_argument("--h", type=float, default=0.25)
    parser.add_argument("--tolerance", type=float, default=0.05)
    args = parser.parse_args()

    if not args.skip_emt:
        atoms = rattle(Octahedron("Pt", 8, 3, latticeconstant=3.92), 0.1, 0)
        t0 = time.perf_counter()
        result = nearsightedness(
            atoms, get_parent("emt"), list(range(0, 260, 10)), list(range(4, 15))
        )
        write(result, args.out / "emt", 1e-3)
        show(
            f"EMT, Pt260, 26 centres ({time.perf_counter() - t0:.1f} s); "
            f"force locality {result.force_locality_A:.2f} Å",
            result,
            1e-3,
        )

    if not args.skip_gpaw:
        params = {
            "mode": "lcao",
            "basis": args.basis,
            "h": args.h,
            "xc": "PBE",
            "occupations": {"name": "fermi-dirac", "width": 0.1},
            "vacuum": 4.0,
        }
        cluster = (
            Icosahedron("Pt", 2, latticeconstant=3.92)
            if args.gpaw_cluster == "pt13"
            else Octahedron("Pt", 4, 1, latticeconstant=3.92)
        )
        atoms = rattle(cluster, 0.05, 0)
        if args.gpaw_centres:
            centres = [int(c) for c in args.gpaw_centres.split(",")]
        else:
            dist = np.linalg.norm(atoms.positions - atoms.positions.mean(axis=0), axis=1)
            order = np.argsort(dist)
            centres = [int(order[0]), int(order[-1]), int(order[len(order) // 2])]
        radii = [float(r) for r in args.gpaw_radii.split(",")]
        t0 = time.perf_counter()
        result = nearsightedness(atoms, get_parent("gpaw", params), centres, radii)
        wall = time.perf_counter() - t0
        write(result, args.out / "gpaw", args.tolerance)
        rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        show(
            f"GPAW {params}, {atoms.get_chemical_formula()} (rattled 0.05 Å), "
            f"centres {centres}: "
            f"{wall:.0f} s wall, peak RSS {rss:.0f} MiB",
            result,
            args.tolerance,
        )
        n = result.labels
        print(
            f"mean parent time per label: {(result.seconds.sum() + (result.full_seconds or 0)) / n:.1f} s"
        )


if __name__ == "__main__":
    main()
