"""How far the GPAW force reaches per kind of site on the ML-relaxed Pt140: each chunk label's
central force against the whole particle's force on the same atom.

    .venv/bin/python bench/dft_nearsighted_sites.py [--labels FILE ...] [--whole FILE] [--json OUT]

Defaults: the chunks of ``nft_fw/examples/pt140-relaxed-nearsightedness-gpaw.yaml`` as exported
so far (bench/data/pt140-gpaw-relaxed-sites-labels.extxyz), the 8 Å vertex chunk shipped with
the whole-particle label (bench/data/pt140-gpaw-relaxed-reference.extxyz, which also holds the
whole particle, ``nft_kind=full``) and the check chunks of the same structure
(bench/data/pt140-gpaw-checked-labels.extxyz: relax round 11's, cut from it; every other chunk
there is of another structure and left out). A chunk's centre is its first atom (nft_fw.structures.chunks.cut).
Prints one row per centre and radius: coordination number, chunk size, the central force of
the chunk and of the whole particle and their difference, eV/Å, and the parent's seconds.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
from ase import Atoms
from ase.io import read
from ase.neighborlist import neighbor_list

DATA = Path(__file__).resolve().parent / "data"
SITES = DATA / "pt140-gpaw-relaxed-sites-labels.extxyz"
WHOLE = DATA / "pt140-gpaw-relaxed-reference.extxyz"
CHECKED = DATA / "pt140-gpaw-checked-labels.extxyz"
#: nearest neighbours of fcc Pt lie at 2.77 Å, the second shell at 3.92
NEIGHBOUR_CUT = 3.3
KINDS = {6: "vertex", 7: "edge", 8: "edge", 9: "facet (111)", 12: "interior"}


def is_chunk_of(chunk: Atoms, whole: Atoms, centre: int, radius: float) -> bool:
    """Whether ``chunk`` (its centre first) holds the atoms of ``whole`` within ``radius`` of
    atom ``centre``: the same distances from the centre (a chunk may be shifted)."""
    d_chunk = np.sort(np.linalg.norm(chunk.positions - chunk.positions[0], axis=1))
    d_whole = np.linalg.norm(whole.positions - whole.positions[centre], axis=1)
    d_whole = np.sort(d_whole[d_whole <= radius + 1e-9])
    return d_chunk.shape == d_whole.shape and np.abs(d_chunk - d_whole).max() <= 1e-6


def rows(label_files: list[Path], whole_file: Path) -> list[dict]:
    frames = [f for path in label_files if path.exists() for f in read(path, ":")]
    (whole,) = [f for f in read(whole_file, ":") if f.info.get("nft_kind") == "full"]
    i, _ = neighbor_list("ij", whole, NEIGHBOUR_CUT)
    cn = np.bincount(i, minlength=len(whole))
    f_whole = whole.get_forces()
    out: dict[tuple[int, float], dict] = {}
    for f in frames:
        if f.info.get("nft_kind") != "chunk" or f.info.get("nft_parent_hash") != whole.info.get(
            "nft_parent_hash"
        ):
            continue
        c, r = int(f.info["nft_centre"]), float(f.info["nft_radius_A"])
        if not is_chunk_of(f, whole, c, r):  # chunks of other structures are left out
            continue
        fc = f.get_forces()[0]
        out[(c, r)] = {
            "centre": c,
            "cn": int(cn[c]),
            "site": KINDS.get(int(cn[c]), f"CN {cn[c]}"),
            "radius_A": r,
            "atoms": len(f),
            "chunk_force": float(np.linalg.norm(fc)),
            "whole_force": float(np.linalg.norm(f_whole[c])),
            "difference": float(np.linalg.norm(fc - f_whole[c])),
            "seconds": float(f.info.get("nft_seconds", float("nan"))),
        }
    return sorted(out.values(), key=lambda d: (d["cn"], d["centre"], d["radius_A"]))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--labels", type=Path, nargs="+", default=[WHOLE, SITES, CHECKED])
    ap.add_argument("--whole", type=Path, default=WHOLE)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    table = rows(args.labels, args.whole)
    print(
        "| site | atom | CN | radius (Å) | atoms | chunk |F| | whole |F| | |ΔF| (eV/Å) | parent s |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for d in table:
        print(
            f"| {d['site']} | {d['centre']} | {d['cn']} | {d['radius_A']:g} | {d['atoms']} | "
            f"{d['chunk_force']:.3f} | {d['whole_force']:.3f} | {d['difference']:.3f} | "
            f"{d['seconds']:.0f} |"
        )
    if args.json:
        args.json.write_text(json.dumps(table, indent=1) + "\n")


if __name__ == "__main__":
    main()
