"""Does more data bring a DFT campaign's model closer to whole-particle GPAW? The force MAE of
every model a campaign trained (each NFT iteration, relax round and MD segment, in the order
they were trained) on whole-particle GPAW labels it never trained on, against the number of
labels it was trained on.

    .venv/bin/python bench/dft_learning_curve.py NAME --db-name DB [--data-dir DIR]
        --labels LABELS.extxyz [LABELS.extxyz ...] [--json FILE]

The checked structures are the ``nft_kind: full`` frames of LABELS (whole-particle GPAW
single points: the shipped references, the ML-relaxed particle, the MD check frames of
``bench/dft_md_checks.py``), each once. Every model is evaluated as stored in the campaign's records, with no training: the curve
says whether the error on whole particles falls as the campaign adds chunks, and how fast —
the figure that says whether the label budget could reach an accuracy aim. It reads the
records only; it chooses nothing.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
from ase import Atoms
from ase.io import read
from bson import ObjectId

from nft_fw.launchpad import records
from nft_fw.launchpad.connection import embedded
from nft_fw.potential import model as mdl
from nft_fw.potential.calculator import EnsembleCalculator


def checked(label_files: list[Path]) -> list[tuple[str, Atoms, np.ndarray]]:
    """(name, structure, GPAW forces) of every whole-particle label of the files, once each."""
    out: list[tuple[str, Atoms, np.ndarray]] = []
    seen: set[str] = set()
    for path in label_files:
        for k, f in enumerate(read(path, ":")):
            if f.info.get("nft_kind") != "full" or f.info.get("nft_hash") in seen:
                continue
            seen.add(f.info.get("nft_hash"))
            name = f"{path.stem}[{k}]"
            out.append((name, Atoms(f.numbers, f.positions), f.get_forces()))
    return out


def curve(db, name: str, structures: list[tuple[str, Atoms, np.ndarray]]) -> list[dict]:
    rows = []
    for phase in ("nft", "relax", "md"):
        for rec in records.iterations(db, name, phase=phase):
            ensemble = mdl.Ensemble.from_bytes(records.get_bytes(db, ObjectId(rec["model_file"])))
            calc = EnsembleCalculator(ensemble)
            maes = {}
            for label, atoms, forces in structures:
                probe = atoms.copy()
                probe.calc = calc
                maes[label] = float(np.linalg.norm(probe.get_forces() - forces, axis=1).mean())
            rows.append(
                {
                    "phase": phase,
                    "iteration": int(rec["iteration"]),
                    "n_labels": int(rec["n_labels"]),
                    "n_chunks": int(rec.get("n_chunks", 0)),
                    "mae": maes,
                }
            )
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("name")
    ap.add_argument("--db-name", required=True)
    ap.add_argument("--data-dir", type=Path, default=None)
    ap.add_argument("--labels", type=Path, nargs="+", required=True)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    structures = checked(args.labels)
    db = embedded(args.data_dir, db_name=args.db_name, start=False).db
    rows = curve(db, args.name, structures)
    names = [s[0] for s in structures]
    print("columns: " + "; ".join(f"{k + 1} = {n}" for k, n in enumerate(names)))
    print("| model | labels | chunks | " + " | ".join(str(k + 1) for k in range(len(names)))
          + " | mean |")  # fmt: skip
    print("|---|---|---|" + "---|" * (len(names) + 1))
    for r in rows:
        vals = [r["mae"][n] for n in names]
        print(
            f"| {r['phase']} {r['iteration']} | {r['n_labels']} | {r['n_chunks']} | "
            + " | ".join(f"{v:.3f}" for v in vals)
            + f" | {np.mean(vals):.3f} |"
        )
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
