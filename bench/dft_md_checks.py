"""MD frames checked against whole-particle GPAW: frames of the second half of an MD run
chosen by a fixed rule, one GPAW check campaign per frame, and the model's force errors there.

    .venv/bin/python bench/dft_md_checks.py run STRUCTURES_DIR
    .venv/bin/python bench/dft_md_checks.py frames STRUCTURES_DIR [--count 4] -o FRAMES.extxyz
    .venv/bin/python bench/dft_md_checks.py campaigns FRAMES.extxyz CAMPAIGN.yaml --name NAME -o DIR
        for f in DIR/*.yaml; do nft-fw submit $f; done   # then workers, then
        nft-fw labels NAME-K --export …                    # per check campaign
    .venv/bin/python bench/dft_md_checks.py errors MODEL_DIR FRAMES.extxyz LABELS.extxyz [...]

``run`` prints the run's figures from ``md.extxyz`` (its stored frames, every
``md.frame_every`` steps): length, the segments and the times of their pauses, mean
temperature over the whole run and its second half, largest δ of the second half.
``frames`` reads ``md.extxyz`` of ``nft-fw export NAME --structures DIR`` and keeps, of the
second half of the run, the stored frames nearest to the evenly spaced steps
(k / count of the second half, k = 1 … count: for 4, at 62.5, 75, 87.5 and 100 % of the
run) — chosen by step alone, not by δ or error. ``campaigns`` writes one campaign file of
``kind: nearsightedness`` per frame with the MD campaign's parent settings (read from
CAMPAIGN.yaml, so the labels carry the same settings hash): the whole frame labelled
(``nft_kind: full``) and one chunk of the campaign's radius around the frame's most
uncertain atom. ``errors`` prints per frame the model's force MAE and largest error against
the whole-frame GPAW forces, the model's largest δ there, and the chunk's central force
against the whole frame's (the labels' own floor at that atom).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import yaml
from ase import Atoms
from ase.io import read, write
from ase.neighborlist import neighbor_list
from dft_nearsighted_sites import NEIGHBOUR_CUT, is_chunk_of

from nft_fw.potential.calculator import EnsembleCalculator

#: sites by neighbour count (within dft_nearsighted_sites.NEIGHBOUR_CUT)
SITES = (("vertex", 0, 7), ("edge", 7, 9), ("facet", 9, 10), ("inside", 10, 99))


def run_figures(md_file: Path) -> dict:
    frames = read(md_file, ":")
    t = np.array([float(f.info["time_ps"]) for f in frames])
    temp = np.array([float(f.info["temperature_K"]) for f in frames])
    delta = np.array([float(f.info["max_delta"]) for f in frames])
    segment = np.array([int(f.info["nft_number"]) for f in frames])
    starts = [float(t[segment == s].min()) for s in sorted(set(segment.tolist()))]
    second = t >= t.max() / 2
    return {
        "length_ps": float(t.max()),
        "frames": len(frames),
        "segments": len(starts),
        "pauses_ps": starts[1:],  # each segment after the first starts at a pause
        "mean_T_K": float(temp[1:].mean()),
        "mean_T_second_half_K": float(temp[second].mean()),
        "max_delta_second_half": float(delta[second].max()),
        "max_delta": float(delta.max()),
    }


def pick_frames(md_file: Path, count: int) -> list[Atoms]:
    frames = read(md_file, ":")
    steps = np.array([int(f.info["step"]) for f in frames])
    last = int(steps.max())
    wanted = [round(last / 2 + k * (last / 2) / count) for k in range(1, count + 1)]
    chosen = sorted({int(np.argmin(np.abs(steps - w))) for w in wanted})
    if len(chosen) < count:
        raise SystemExit(f"{md_file}: only {len(chosen)} distinct frames near {wanted}")
    return [frames[i] for i in chosen]


def write_campaigns(frames_file: Path, campaign: Path, name: str, out: Path) -> list[Path]:
    spec = yaml.safe_load(campaign.read_text())
    radius = float(spec.get("nft", {}).get("chunk_radius", 8.0))
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for k, frame in enumerate(read(frames_file, ":")):
        centre = int(np.argmax(frame.arrays["nft_delta"]))
        check = {
            "kind": "nearsightedness",
            "name": f"{name}-{k}",
            "target": {"file": str(frames_file.resolve()), "index": k},
            "parent": spec["parent"],
            "centres": [centre],
            "radii": [radius],
            "full": True,
            "service": {"labels_per_firework": 1},
        }
        path = out / f"{name}-{k}.yaml"
        head = (
            f"# whole-particle GPAW check of step {frame.info['step']} of {spec['name']} "
            f"(frame {k} of {frames_file.name}); chunk around its most uncertain atom {centre}\n"
        )
        path.write_text(head + yaml.safe_dump(check, sort_keys=False))
        paths.append(path)
    return paths


def _same(a: Atoms, b: Atoms) -> bool:
    return len(a) == len(b) and np.abs(a.positions - b.positions).max() < 1e-6


def errors(model: Path, frames_file: Path, label_files: list[Path]) -> list[dict]:
    labels = [f for path in label_files for f in read(path, ":")]
    calc = EnsembleCalculator.load(model)
    rows = []
    for k, frame in enumerate(read(frames_file, ":")):
        full = [f for f in labels if f.info.get("nft_kind") == "full" and _same(f, frame)]
        if not full:
            rows.append({"frame": k, "step": int(frame.info["step"]), "labelled": False})
            continue
        whole = full[0]
        f_gpaw = whole.get_forces()
        atoms = Atoms(frame.numbers, frame.positions, cell=frame.cell, pbc=frame.pbc)
        atoms.calc = calc
        f_ml = atoms.get_forces()
        delta = calc.get_uncertainties(atoms)
        err = np.linalg.norm(f_ml - f_gpaw, axis=1)
        centre = int(np.argmax(frame.arrays["nft_delta"]))
        i, _ = neighbor_list("ij", frame, NEIGHBOUR_CUT)
        cn = np.bincount(i, minlength=len(frame))
        f_abs = np.linalg.norm(f_gpaw, axis=1)
        sites = {
            name: [
                float(err[(cn >= lo) & (cn < hi)].mean()),
                float(f_abs[(cn >= lo) & (cn < hi)].mean()),
            ]
            for name, lo, hi in SITES
            if ((cn >= lo) & (cn < hi)).any()
        }
        row = {
            "frame": k,
            "step": int(frame.info["step"]),
            "time_ps": float(frame.info["time_ps"]),
            "temperature_K": float(frame.info["temperature_K"]),
            "labelled": True,
            "mae": float(err.mean()),
            "max": float(err.max()),
            "max_atom": int(err.argmax()),
            "max_delta_run": float(frame.info["max_delta"]),
            "max_delta": float(np.max(delta)),
            "gpaw_mean_force": float(np.linalg.norm(f_gpaw, axis=1).mean()),
            "seconds": float(whole.info.get("nft_seconds", float("nan"))),
            "centre": centre,
            "centre_error": float(err[centre]),
            "delta_error_correlation": float(np.corrcoef(delta, err)[0, 1]),
            "sites": sites,  # per kind of site: [model's MAE, GPAW's mean |F|]
        }
        for f in labels:
            if (
                f.info.get("nft_kind") == "chunk"
                and int(f.info.get("nft_centre", -1)) == centre
                and is_chunk_of(f, frame, centre, float(f.info["nft_radius_A"]))
            ):
                row["chunk_atoms"] = len(f)
                row["chunk_vs_whole"] = float(np.linalg.norm(f.get_forces()[0] - f_gpaw[centre]))
        rows.append(row)
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="command", required=True)
    r = sub.add_parser("run")
    r.add_argument("structures", type=Path)
    a = sub.add_parser("frames")
    a.add_argument("structures", type=Path)
    a.add_argument("--count", type=int, default=4)
    a.add_argument("-o", "--out", type=Path, required=True)
    b = sub.add_parser("campaigns")
    b.add_argument("frames", type=Path)
    b.add_argument("campaign", type=Path)
    b.add_argument("--name", required=True)
    b.add_argument("-o", "--out", type=Path, required=True)
    c = sub.add_parser("errors")
    c.add_argument("model", type=Path)
    c.add_argument("frames", type=Path)
    c.add_argument("labels", type=Path, nargs="+")
    c.add_argument("--json", type=Path)
    args = ap.parse_args()
    if args.command == "run":
        print(json.dumps(run_figures(args.structures / "md.extxyz"), indent=1))
    elif args.command == "frames":
        frames = pick_frames(args.structures / "md.extxyz", args.count)
        write(args.out, frames, format="extxyz")
        print(f"{args.out}: steps {[int(f.info['step']) for f in frames]}")
    elif args.command == "campaigns":
        for path in write_campaigns(args.frames, args.campaign, args.name, args.out):
            print(path)
    else:
        rows = errors(args.model, args.frames, args.labels)
        print("| step | t (ps) | T (K) | MAE | max (atom) | δ max | chunk vs whole | GPAW s |")
        print("|---|---|---|---|---|---|---|---|")
        for r in rows:
            if not r["labelled"]:
                print(f"| {r['step']} | not labelled yet |")
                continue
            delta = f"{r['max_delta']:.3f}"
            chunk = f"{r['chunk_vs_whole']:.3f}" if "chunk_vs_whole" in r else "—"
            print(
                f"| {r['step']} | {r['time_ps']:.2f} | {r['temperature_K']:.0f} | {r['mae']:.3f} | "
                f"{r['max']:.3f} ({r['max_atom']}) | {delta} | {chunk} | {r['seconds']:.0f} |"
            )
        done = [r for r in rows if r["labelled"]]
        for r in done:
            per = ", ".join(f"{k} {v[0]:.3f} (|F| {v[1]:.2f})" for k, v in r["sites"].items())
            print(f"step {r['step']}: MAE per site {per}; corr(δ, error) "
                  f"{r['delta_error_correlation']:.2f}")  # fmt: skip
        if done:
            print(
                f"frames {len(done)}: MAE {np.mean([r['mae'] for r in done]):.3f} eV/Å "
                f"(largest {max(r['mae'] for r in done):.3f}), max {max(r['max'] for r in done):.3f}"
            )
        if args.json:
            args.json.write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
