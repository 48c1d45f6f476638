"""Score a DFT campaign on one whole-particle label: each NFT iteration's ensemble mean on
the target against the parent's forces on the whole target, taken from the ``full: true``
label of a nearsightedness campaign of the same target and parent (so the campaign itself
runs, as a DFT user's would, without the whole particle).

    .venv/bin/python bench/gpaw_campaign.py --data-dir DIR \
        [--campaign pt140-gpaw] [--reference pt140-nearsightedness-gpaw]
    .venv/bin/python bench/gpaw_campaign.py --data-dir DIR \
        --reference-file seed0=bench/data/pt140-gpaw-reference.extxyz \
        --reference-file seed1=bench/data/pt140-gpaw-reference-seed1.extxyz

A ``--reference-file NAME=FILE`` is a label export holding a whole-structure label
(``nft_kind: full``) instead of a campaign in the database: each iteration's stored model
is run on that structure (the seed-1 particle, which no label comes from, as well as the
target itself) and scored in a column of its own. After the table, for the latest
iteration and the first such file (the campaign's target): where the error is — at the
atoms a chunk was centred on (the model against their chunk labels, and against the whole
particle; the labels' own noise) and at the atoms never chunked; surface (fewer than 12
neighbours within 3.2 Å) and interior atoms.

Prints per iteration: chunks, max/mean δ, the out-of-sample MAE of the iteration's new
chunks (the previous model on their centres, before training on them), and the true-force
MAE / max error / fraction of atoms within δ; the iteration the campaign kept and why it
stopped; the labels' cost by kind (count, wall, SCF iterations, memory); the campaign's
wall time (first launch start to last launch end).
"""

from __future__ import annotations

import argparse
import datetime as dt
from pathlib import Path
from typing import Any

import numpy as np
from bson import ObjectId

from nft_fw.launchpad import nearsightedness, queue, records
from nft_fw.launchpad.connection import embedded


def _reference(
    db: Any, ref_db: Any, name: str, reference: str
) -> tuple[np.ndarray, dict[str, Any]]:
    target = records.get_structure(db, ObjectId(records.get_campaign(db, name)["target_file"]))
    ref_doc = records.get_campaign(ref_db, reference)
    ref_target = nearsightedness.target(ref_db, ref_doc["target_file"])
    if ref_target.get_chemical_symbols() != target.get_chemical_symbols() or not np.allclose(
        ref_target.positions, target.positions, atol=1e-8
    ):
        raise SystemExit(f"{reference}'s target is not {name}'s: no common reference")
    # k-points apply to periodic cells only (the whole particle is computed at Γ either way)
    params = [
        {k: v for k, v in records.get_campaign(d, n)["spec"]["parent"]["params"].items()
         if k != "kpts"}
        for d, n in ((db, name), (ref_db, reference))
    ]  # fmt: skip
    if params[0] != params[1]:
        raise SystemExit(f"{reference}'s parent settings differ from {name}'s: {params}")
    (full,) = [d for d in nearsightedness.labels(ref_db, reference) if d["kind"] == "full"]
    return records.get_array(ref_db, ObjectId(full["forces_file"])), full


def _breakdown(db: Any, name: str, iteration: int, ref: Any) -> None:
    from ase.neighborlist import neighbor_list

    from nft_fw.launchpad import campaigns
    from nft_fw.potential.calculator import EnsembleCalculator

    atoms = ref.copy()
    atoms.calc = EnsembleCalculator(campaigns.load_model(db, name, iteration))
    true = ref.get_forces()
    err = np.linalg.norm(atoms.get_forces() - true, axis=1)
    chunks = [
        d for d in records.labels(db, name)
        if d["kind"] == "chunk" and d.get("iteration", 0) <= iteration
    ]  # fmt: skip
    centres = sorted({int(d["centre"]) for d in chunks})
    fit = [np.linalg.norm(atoms.get_forces()[d["centre"]] - d["central_force"]) for d in chunks]
    noise = [np.linalg.norm(np.asarray(d["central_force"]) - true[d["centre"]]) for d in chunks]
    i = neighbor_list("i", ref, 3.2)
    surface = np.bincount(i, minlength=len(ref)) < 12
    rest = np.setdiff1d(np.arange(len(ref)), centres)
    print(
        f"iteration {iteration}: {len(chunks)} chunks on {len(centres)} centres "
        f"({int((~surface[centres]).sum())} interior); at the centres: model vs chunk labels "
        f"{np.mean(fit):.3f}, model vs whole {err[centres].mean():.3f}, labels vs whole "
        f"{np.mean(noise):.3f}; never chunked ({len(rest)}): {err[rest].mean():.3f}; surface "
        f"({int(surface.sum())}) {err[surface].mean():.3f}, interior {err[~surface].mean():.3f}"
    )


def _reference_file(item: str) -> tuple[str, Any]:
    import ase.io

    name, _, path = item.partition("=")
    if not name or not path:
        raise SystemExit(f"--reference-file {item!r}: give NAME=FILE")
    full = [f for f in ase.io.read(path, ":") if f.info.get("nft_kind") == "full"]
    if len(full) != 1:
        raise SystemExit(f"--reference-file {path}: {len(full)} whole-structure labels, need 1")
    return name, full[0]


def _wall(lp: Any, name: str) -> float:
    fw_ids = [d["fw_id"] for d in queue.fireworks(lp, name, fields=("fw_id",))]
    starts, ends = [], []
    for launch in queue.launches(lp, fw_ids, fields=("time_start", "time_end")):
        if launch.get("time_start"):
            starts.append(dt.datetime.fromisoformat(str(launch["time_start"])))
        if launch.get("time_end"):
            ends.append(dt.datetime.fromisoformat(str(launch["time_end"])))
    return (max(ends) - min(starts)).total_seconds() if starts and ends else float("nan")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", required=True, help="embedded server data directory")
    parser.add_argument("--db-name", default="nft_fw")
    parser.add_argument("--campaign", default="pt140-gpaw")
    parser.add_argument("--reference", default="pt140-nearsightedness-gpaw")
    parser.add_argument(
        "--reference-file", action="append", default=[], metavar="NAME=FILE",
        help="whole-structure labels from an export, scored per iteration (repeatable)",
    )  # fmt: skip
    parser.add_argument(
        "--reference-db-name",
        help="database of the reference campaign on the same server (default: --db-name)",
    )
    args = parser.parse_args()
    conn = embedded(Path(args.data_dir), db_name=args.db_name, start=False)
    db = conn.launchpad.db
    ref_db = conn.launchpad.connection[args.reference_db_name] if args.reference_db_name else db
    try:
        files = [_reference_file(item) for item in args.reference_file]
        if files:
            true, full = None, None
        else:
            true, full = _reference(db, ref_db, args.campaign, args.reference)
        history = records.iterations(db, args.campaign)
        doc = records.get_campaign(db, args.campaign)
        if full is not None:
            print(
                f"reference: whole target ({full['n_atoms']} atoms) labelled by "
                f"{args.reference}: {full['seconds']:.0f} s, {full['scf_iterations']} SCF "
                f"iterations, ru_maxrss {full['peak_rss_MiB'] / 1024:.1f} GB"
            )
        cols = "true MAE | true max | within δ" if full is not None else ""
        cols += "".join(f" | {n} MAE | {n} max" for n, _ in files)
        print(
            "| iteration | chunks | max δ | calibrated max δ | mean δ | "
            f"new chunks' MAE before training | {cols.strip(' |')} |"
        )
        print("|---|---|---|---|---|---|" + "---|" * (3 * (full is not None) + 2 * len(files)))
        for rec in history:
            delta = records.get_array(db, ObjectId(rec["delta_file"]))
            oos = f"{rec['oos_mae']:.3f} (n={rec['oos_n']})" if "oos_mae" in rec else "—"
            cal = rec.get("calibrated_structure_uncertainty")
            row = (
                f"| {rec['iteration']} | {rec['n_chunks']} | {rec['structure_uncertainty']:.3f} "
                f"| {'—' if cal is None else f'{cal:.3f}'} | {rec['mean_uncertainty']:.3f} "
                f"| {oos} |"
            )
            if true is not None:
                predicted = records.get_array(db, ObjectId(rec["forces_file"]))
                err = np.linalg.norm(predicted - true, axis=1)
                row += f" {err.mean():.3f} | {err.max():.3f} | {np.mean(err <= delta):.0%} |"
            if files:
                from nft_fw.launchpad import campaigns
                from nft_fw.potential.calculator import EnsembleCalculator

                calc = EnsembleCalculator(campaigns.load_model(db, args.campaign, rec["iteration"]))
                for _, ref in files:
                    atoms = ref.copy()
                    atoms.calc = calc
                    err = np.linalg.norm(atoms.get_forces() - ref.get_forces(), axis=1)
                    row += f" {err.mean():.3f} | {err.max():.3f} |"
            print(row, flush=True)
        if files and history:
            _breakdown(db, args.campaign, history[-1]["iteration"], files[0][1])
        kept = history[-1]["best_iteration"] if history else None
        print(
            f"state {doc.get('state')}; stop {doc.get('stop_reason')} ({doc.get('stop_detail')}); "
            f"kept iteration {kept}"
        )
        print("| labels | count | wall total (s) | wall median (s) | atoms | SCF median | "
              "ru_maxrss max (GB) |")  # fmt: skip
        print("|---|---|---|---|---|---|---|")
        labels = records.labels(db, args.campaign)
        for kind in ("image", "chunk"):
            docs = [d for d in labels if d["kind"] == kind]
            if not docs:
                continue
            # a label taken from prior_labels keeps the cost of its first computation
            secs = np.array([d.get("prior_seconds", d.get("seconds", np.nan)) for d in docs])
            atoms = [int(d["n_atoms"]) if "n_atoms" in d else len(d["numbers"]) for d in docs]
            print(
                f"| {kind} | {len(docs)} | {secs.sum():.0f} | {np.median(secs):.0f} | "
                f"{min(atoms)}–{max(atoms)} | "
                f"{np.median([d.get('prior_scf_iterations', d.get('scf_iterations', np.nan)) for d in docs]):.0f} | "
                f"{max(d.get('peak_rss_MiB', np.nan) for d in docs) / 1024:.1f} |"
            )
        failed = records.failures(db, args.campaign)
        print(
            f"failed labels: {len(failed)}; campaign wall {_wall(conn.launchpad, args.campaign):.0f} s"
        )
    finally:
        conn.close(stop_server=False)


if __name__ == "__main__":
    main()
