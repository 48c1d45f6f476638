"""Relaxation phase and transfer through the service, checked against EMT.

    .venv/bin/python bench/relax_transfer.py [CAMPAIGN.yaml] [--workers 2] [--dir DIR]

Runs the campaign (default: nft_fw/examples/pt260-relax-emt.yaml: Pt260 NFT, relaxation
with retraining from trajectories, transfer to rattled icosahedral Pt309 and
cuboctahedral Pt1415) on an embedded server with local worker processes, exactly as
`nft-fw run` does, then prints:

* per relax round: chunks, steps, the largest δ along the trajectory, true-force MAE at
  the start and end;
* for the kept round's ML-relaxed target, evaluated with EMT: the largest force, the
  energy above EMT's own minimum reached by FIRE from the same start, and the RMSD to it;
* per transfer target: true-force MAE at the start and end of the ML relaxation, the
  largest δ and its ratio to the trained target's (flagged at ≥ 2×), steps and time;
* the parent-call bill against divide-and-conquer (atoms × relaxation steps);
* the wall time of the campaign and the largest worker's peak memory.
"""

from __future__ import annotations

import argparse
import logging
import resource
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
from ase.calculators.emt import EMT
from ase.optimize import FIRE
from bson import ObjectId

from nft_fw.cli import run_campaign
from nft_fw.launchpad import records, reports
from nft_fw.launchpad.connection import embedded
from nft_fw.report import summary as nft_report
from nft_fw.spec.campaign import load_campaign, prepare

HERE = Path(__file__).resolve().parent.parent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "campaign", nargs="?", default=str(HERE / "nft_fw/examples/pt260-relax-emt.yaml")
    )
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--dir", type=Path, default=None, help="keep database and report here")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)

    base = args.dir or Path(tempfile.mkdtemp(prefix="nft-relax-"))
    prepared = prepare(load_campaign(args.campaign))
    name = prepared.spec.name
    conn = embedded(base / "db", db_name="bench_relax")
    try:
        conn.launchpad.reset("", require_password=False)
        t0 = time.perf_counter()
        code = run_campaign(conn, prepared, args.workers, base / "workers", base / "report")
        wall = time.perf_counter() - t0
        db = conn.launchpad.db
        summary = nft_report.summary(reports.gather(db, name))
        rounds = records.iterations(db, name, phase="relax")
        transfers = records.iterations(db, name, phase="transfer")
        kept = summary["relaxation"]["kept_round"]
        final = records.get_structures(db, ObjectId(rounds[kept]["final_file"]))[0]
    finally:
        conn.close()
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024**2  # KiB → GiB
    print(
        f"\n{name}: exit {code}; campaign wall time {wall:.0f} s; largest worker peak RSS "
        f"{peak:.2f} GiB; report in {base / 'report'}"
    )
    nft = summary
    print(
        f"NFT: kept iteration {nft['best_iteration']}, {nft['total_chunks']} chunks, "
        f"true MAE {nft.get('best_true_force_mae', float('nan')):.3f} eV/Å"
    )
    for r in rounds:
        print(
            f"relax round {r['iteration']}: +{r['new_chunks']} chunks ({r['relax_chunks']} from "
            f"trajectories), {r['n_steps']} steps, δ max along {r['structure_uncertainty']:.3f}"
            f" eV/Å, true MAE start {r['start_true_force_mae']:.3f} end "
            f"{r['end_true_force_mae']:.3f}, EMT fmax at end {r['end_parent_fmax']:.3f}"
        )

    start = prepared.target.copy()
    start.calc = EMT()
    FIRE(start, logfile=None).run(fmax=0.01, steps=3000)
    e_ref = start.get_potential_energy()
    ml = final.copy()
    ml.calc = EMT()
    e_ml = ml.get_potential_energy()
    fmax = float(np.linalg.norm(ml.get_forces(), axis=1).max())
    rmsd = float(np.sqrt(np.mean(np.sum((ml.positions - start.positions) ** 2, axis=1))))
    print(
        f"kept round {kept}: ML-relaxed {name} in EMT: max force {fmax:.3f} eV/Å; "
        f"E − E(EMT-relaxed) = {e_ml - e_ref:+.3f} eV; RMSD to EMT's minimum {rmsd:.3f} Å"
    )
    for t in transfers:
        print(
            f"transfer {t['name']} ({t['n_atoms']} atoms): true MAE start "
            f"{t['start_true_force_mae']:.3f}, end {t['end_true_force_mae']:.3f} eV/Å; δ max "
            f"{t['structure_uncertainty']:.3f} = {t['uncertainty_ratio']:.1f}× trained "
            f"({'flagged' if t['flagged'] else 'not flagged'}); {t['n_steps']} steps in "
            f"{t['timings']['relax_s']:.0f} s"
        )
    bill = summary["parent_calls"]
    print(
        f"parent calls: {bill['initial_images']} initial + {bill['nft_chunks']} NFT chunks + "
        f"{bill['relax_chunks']} relaxation chunks = {bill['total_parent_calls']}; "
        f"divide and conquer {bill['n_atoms']} × {bill['relaxation_steps']} = "
        f"{bill['divide_and_conquer_calls']} ({bill['fraction_of_divide_and_conquer']:.1%})"
    )
    for t in bill.get("transfer", []):
        print(f"  transfer {t['name']}: divide and conquer {t['divide_and_conquer_calls']}, 0 here")
    if args.dir is None:
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
