"""What the GPAW work has cost so far, per stage, from the shipped label files alone: labels,
parent hours (the sum of each label's ``nft_seconds``: the wall time of a one-thread parent
call, at nice 19 beside other work, so an upper bound of its CPU time) and the chunk labels
beyond the 48 NFT chunks, against the paper's (Zeng, Chen, Peterson, J. Chem. Phys. 156,
064104 (2022), Sec. V C 2: 7,224 CPU-h of DFT for the Pt260 NFT data, 8,807 CPU-h for its DFT
relaxation, 28,680 for Pt309's).

    .venv/bin/python bench/dft_costs.py            # the files of bench/data
    .venv/bin/python bench/dft_costs.py --json costs.json

A label is counted once, in the first file (in the order below) that holds it: the NFT labels
are re-exported by every later campaign.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from ase.io import read

DATA = Path(__file__).resolve().parent / "data"
#: (stage, file): a label counts in the first stage whose file holds it
STAGES = (
    ("initial bulk cells + NFT chunks (Pt140)", "pt140-gpaw-labels.extxyz"),
    ("relaxation, bare networks, whole-trajectory chunks", "pt140-gpaw-relax-labels.extxyz"),
    ("relaxation, frontier chunks (search_until 0.5)", "pt140-gpaw-frontier-labels.extxyz"),
    ("whole-particle check: rattled Pt140 seed 0", "pt140-gpaw-reference.extxyz"),
    ("whole-particle check: rattled Pt140 seed 1", "pt140-gpaw-reference-seed1.extxyz"),
    ("whole-particle check: rattled Pt309", "pt309-gpaw-reference.extxyz"),
    ("whole-particle check: ML-relaxed Pt140", "pt140-gpaw-relaxed-reference.extxyz"),
    (
        "whole-particle check: Pt140 relaxed by the checked model",
        "pt140-gpaw-checked-reference.extxyz",
    ),
    (
        "relaxation of the perfect Pt140 (transfer follow-up)",
        "pt140-gpaw-frontier-perfect-labels.extxyz",
    ),
    ("transfer to Pt309: the follow-up's NFT chunks", "pt140-gpaw-frontier-pt309-labels.extxyz"),
    ("relaxation checked on chunks of the relaxed Pt140", "pt140-gpaw-checked-labels.extxyz"),
    (
        "whole-particle check: nearsightedness per site of the ML-relaxed Pt140",
        "pt140-gpaw-relaxed-sites-labels.extxyz",
    ),
    ("MD at 300 K that learns on the fly (robust model)", "pt140-gpaw-md300-labels.extxyz"),
    (
        "whole-particle check: Pt140 relaxed by the robust campaign",
        "pt140-gpaw-md300-relaxed-reference.extxyz",
    ),
    ("whole-particle check: four frames of the 300 K MD", "pt140-gpaw-md300-check-labels.extxyz"),
    ("MD at 600 K that learns on the fly (robust model)", "pt140-gpaw-md600-labels.extxyz"),
    ("whole-particle check: four frames of the 600 K MD", "pt140-gpaw-md600-check-labels.extxyz"),
    (
        "whole-particle check: perfect Pt140 relaxed by the 300 K run's final model",
        "pt140-perfect-md300-relaxed-reference.extxyz",
    ),
    (
        "whole-particle check: Pt309 relaxed by the 300 K run's final model",
        "pt309-gpaw-md300-relaxed-reference.extxyz",
    ),
    (
        "transfer to Pt309 with the robust model: the follow-up's chunks",
        "pt309-gpaw-transfer-labels.extxyz",
    ),
    (
        "whole-particle check: Pt309 relaxed by the transfer follow-up",
        "pt309-gpaw-transfer-relaxed-reference.extxyz",
    ),
)
NFT_CHUNKS = 48
BUDGET = 200  # chunk labels beyond the 48 for relaxation, transfer and MD together


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    seen: set[str] = set()
    rows = []
    for stage, name in STAGES:
        path = DATA / name
        if not path.exists():
            continue
        counts: dict[str, int] = {}
        hours: dict[str, float] = {}
        largest = 0
        for frame in read(path, ":"):
            key = f"{frame.info['nft_kind']}:{frame.info['nft_hash']}"
            if key in seen:
                continue
            seen.add(key)
            kind = frame.info["nft_kind"]
            counts[kind] = counts.get(kind, 0) + 1
            hours[kind] = hours.get(kind, 0.0) + float(frame.info.get("nft_seconds") or 0.0) / 3600
            largest = max(largest, len(frame))
        rows.append({"stage": stage, "file": name, "labels": counts, "hours": hours,
                     "largest_atoms": largest})  # fmt: skip
    print("| stage | labels | parent hours | largest (atoms) |")
    print("|---|---|---|---|")
    for r in rows:
        labels = ", ".join(f"{n} {k}" for k, n in sorted(r["labels"].items()))
        print(f"| {r['stage']} | {labels} | {sum(r['hours'].values()):.1f} | "
              f"{r['largest_atoms']} |")  # fmt: skip
    total = sum(sum(r["hours"].values()) for r in rows)
    # the stages after NFT (relaxation, transfer, MD); the whole-particle checks' chunks are
    # references, not training data
    chunks = sum(
        r["labels"].get("chunk", 0)
        for r in rows[1:]
        if not r["stage"].startswith("whole-particle check")
    )
    print(f"\nall: {total:.1f} parent hours; chunk labels beyond the {NFT_CHUNKS} NFT chunks "
          f"(relaxation, transfer, MD): {chunks} of {BUDGET}")  # fmt: skip
    if args.json:
        Path(args.json).write_text(json.dumps({"rows": rows, "hours": total,
                                               "beyond_nft": chunks}, indent=1))  # fmt: skip


if __name__ == "__main__":
    main()
