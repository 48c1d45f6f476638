"""Learning on the fly during MD, checked against the parent's own MD (EMT).

    .venv/bin/python bench/md_on_the_fly.py [CAMPAIGN.yaml] [--set md.temperature_K=900 ...]
        [--big LENGTH] [--reference-every K] [--out FILE.json]

Runs the campaign's NFT phase and then its MD phase in this process (nft_fw.runners.local:
run_locally, md_locally — the same steps the service runs), with the true force checked
against the parent every 5 steps (md.true_force_check_every; EMT only),
then the parent's own MD from the same start, thermostat and seed (ASE, the same
integrator), and prints:

* pauses and chunk labels, in all and per ps; the parent calls were chunks only;
* the fraction of checked steps whose true max force error exceeded the MD threshold,
  before the first retraining, after it, over the first ps and after it, and over the
  second half of the run (the checks themselves are in the JSON, for other windows);
* observables over the second half of both runs: the radial distribution function (the
  largest difference and the first peak), the parent's potential energy per atom on the
  frames of each run (the ML energy carries an offset: it is not compared), the mean-square
  displacement of the surface atoms (coordination < 12 at the start, centre of mass removed)
  and their Lindemann-like RMS fluctuation;
* wall time per MD step with δ, training and labelling seconds, peak memory (of the NFT and
  MD phases, and of the whole process with this analysis).

``--big L``: the MD runs on a rattled Pt octahedron of edge length L (cutoff L // 3; L = 22
gives 6,119 atoms... see the printed count) instead of the target; the true force is then
checked every ``--reference-every`` steps (default 50) and the parent's MD is skipped unless
``--parent-md`` is given.
"""

from __future__ import annotations

import argparse
import json
import logging
import resource
import time
from pathlib import Path
from typing import Any

import numpy as np
import yaml
from ase import Atoms
from ase.calculators.emt import EMT
from ase.neighborlist import neighbor_list
from scipy.spatial import cKDTree

from nft_fw.runners.local import md_locally, run_locally
from nft_fw.spec.campaign import load_campaign
from nft_fw.steps import md as md_mod
from nft_fw.steps import step

HERE = Path(__file__).resolve().parent.parent
RDF_MAX_A, RDF_BIN_A = 8.0, 0.05
SURFACE_CN = 12  # fewer neighbours within NN_CUTOFF_A than this: a surface atom
NN_CUTOFF_A = 3.3  # between the first (2.77 Å) and second (3.92 Å) neighbour shells of Pt


def _set(data: dict[str, Any], assignment: str) -> None:
    key, _, value = assignment.partition("=")
    *path, last = key.split(".")
    node = data
    for part in path:
        node = node.setdefault(part, {})
    node[last] = yaml.safe_load(value)


def rdf(frames: list[Atoms]) -> tuple[np.ndarray, np.ndarray]:
    """g(r)-like pair-distance histogram, normalised per atom and per shell volume (a cluster
    has no density: compare shapes, not the large-r tail)."""
    edges = np.arange(0.0, RDF_MAX_A + RDF_BIN_A, RDF_BIN_A)
    hist = np.zeros(len(edges) - 1)
    for f in frames:
        d = neighbor_list("d", f, RDF_MAX_A)
        hist += np.histogram(d, edges)[0]
    shell = 4.0 / 3.0 * np.pi * (edges[1:] ** 3 - edges[:-1] ** 3)
    centres = 0.5 * (edges[1:] + edges[:-1])
    return centres, hist / (len(frames) * len(frames[0]) * shell)


def surface_atoms(atoms: Atoms) -> np.ndarray:
    # a k-d tree, not ase.neighborlist: on a 5,341-atom frame in its vacuum box that binning
    # took 6 GB, more than the whole MD phase
    pairs = cKDTree(atoms.positions).query_pairs(NN_CUTOFF_A, output_type="ndarray")
    counts = np.bincount(pairs.ravel(), minlength=len(atoms))
    return np.flatnonzero(counts < SURFACE_CN)


def mobility(frames: list[Atoms], surface: np.ndarray, half: int) -> dict[str, float]:
    """MSD of surface atoms from the run's start (Å², centre of mass removed), at the end,
    and their RMS fluctuation about their mean position over the second half (Å)."""

    def centred(f: Atoms) -> np.ndarray:
        return f.positions - f.get_center_of_mass()

    p0 = centred(frames[0])[surface]
    msd_end = float(np.mean(np.sum((centred(frames[-1])[surface] - p0) ** 2, axis=1)))
    late = np.array([centred(f)[surface] for f in frames[half:]])
    rms = float(np.sqrt(np.mean(np.sum((late - late.mean(axis=0)) ** 2, axis=2))))
    return {"surface_msd_end_A2": msd_end, "surface_rms_fluctuation_A": rms}


def parent_energies(frames: list[Atoms]) -> np.ndarray:
    out = []
    for f in frames:
        a = f.copy()
        a.calc = EMT()
        out.append(a.get_potential_energy() / len(a))
    return np.array(out)


def parent_md(
    start: md_mod.MDState, settings: md_mod.MDSettings, n_steps: int, every: int
) -> tuple[list[Atoms], float]:
    """The parent's own MD from the same state (same integrator, thermostat and RNG)."""
    atoms = start.atoms.copy()
    atoms.calc = EMT()
    dyn = md_mod.dynamics(atoms, settings, start.generator())
    frames = [atoms.copy()]
    t0 = time.perf_counter()
    for k in range(1, n_steps + 1):
        dyn.step()
        if k % every == 0 or k == n_steps:
            f = atoms.copy()
            f.calc = None
            frames.append(f)
    return frames, time.perf_counter() - t0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "campaign", nargs="?", default=str(HERE / "nft_fw/examples/pt260-md-emt.yaml")
    )
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--big", type=int, default=None, metavar="LENGTH")
    parser.add_argument("--reference-every", type=int, default=None)
    parser.add_argument("--parent-md", action="store_true")
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument(
        "--save-model", type=Path, default=None, help="save the NFT phase's kept model here"
    )
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)

    data = yaml.safe_load(Path(args.campaign).read_text())
    check_every = args.reference_every or (50 if args.big else 5)
    data["md"]["true_force_check_every"] = check_every
    if args.big:
        data.setdefault("transfer", []).append(
            {
                "name": "big",
                "builder": {
                    "kind": "octahedron", "element": "Pt", "length": args.big,
                    "cutoff": args.big // 3, "lattice_constant": 3.92,
                },
                "rattle": {"stdev": 0.05, "seed": 1},
            }
        )  # fmt: skip
        data["md"]["structure"] = "big"
    for assignment in args.set:
        _set(data, assignment)
    spec = load_campaign(data)
    m = spec.md_spec
    t0 = time.perf_counter()
    result = run_locally(spec, progress=False, save_to=args.save_model)
    nft_s = time.perf_counter() - t0
    t1 = time.perf_counter()
    run = md_locally(result, progress=True)
    md_s = time.perf_counter() - t1
    peak_phases = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
    segments = run.segments
    atoms0 = run.runs[0].frames[0]
    n_atoms = len(atoms0)
    total = spec.md_total_steps
    length_ps = total * m.timestep_fs / 1000.0
    threshold = spec.md_threshold
    pauses = sum(1 for s in segments if s["paused"])
    labels = len(run.labels)

    steps = np.concatenate([s["checks"].get("step", []) for s in segments]).astype(int)
    errs = np.concatenate([s["checks"].get("max", []) for s in segments])
    maes = np.concatenate([s["checks"].get("mae", []) for s in segments])
    first_end = segments[0]["end_step"]

    def frac(mask: np.ndarray) -> float | None:
        return float(np.mean(errs[mask] > threshold)) if mask.any() else None

    frames = [f for r in run.runs for f in r.frames]
    fsteps = [s for r in run.runs for s in r.frame_steps]
    seen: dict[int, Atoms] = {}
    for s, f in zip(fsteps, frames, strict=True):
        seen[s] = f  # a pause frame begins the next segment too: keep one
    order = sorted(seen)
    ml_frames = [seen[s] for s in order]
    ml_half = next(k for k, s in enumerate(order) if s >= total // 2)
    out: dict[str, Any] = {
        "campaign": spec.name,
        "n_atoms": n_atoms,
        "integrator": m.integrator,
        "temperature_K": m.temperature_K,
        "timestep_fs": m.timestep_fs,
        "length_ps": length_ps,
        "threshold": threshold,
        "nft_chunks": len(result.labels),
        "pauses": pauses,
        "md_chunk_labels": labels,
        "pauses_per_ps": pauses / length_ps,
        "labels_per_ps": labels / length_ps,
        "largest_label_atoms": max((len(lb.atoms) for lb in run.labels), default=0),
        "checked_steps": len(steps),
        "fraction_above_threshold_before_first_retraining": frac(steps <= first_end),
        "fraction_above_threshold_after_first_retraining": frac(steps > first_end),
        "fraction_above_threshold_first_ps": frac(steps * m.timestep_fs < 1000.0),
        "fraction_above_threshold_after_first_ps": frac(steps * m.timestep_fs >= 1000.0),
        "fraction_above_threshold_second_half": frac(steps >= total // 2),
        "true_force_mae_second_half": float(maes[steps >= total // 2].mean())
        if (steps >= total // 2).any()
        else None,
        "true_force_max_second_half": float(errs[steps >= total // 2].max())
        if (steps >= total // 2).any()
        else None,
        "ml_mean_temperature_K_second_half": float(
            np.mean(
                [
                    t
                    for s in segments
                    for st, t in zip(s["log"]["step"], s["log"]["temperature_K"], strict=True)
                    if st >= total // 2
                ]
            )
        ),
        "nft_s": nft_s,
        "md_phase_s": md_s,
        "md_s": sum(s["timings"]["md_s"] for s in segments),
        "train_s": sum(s["timings"]["train_s"] for s in segments),
        "check_s": sum(sum(s["checks"].get("seconds", [])) for s in segments),
        "label_s": sum(lb.seconds for lb in run.labels),
        "ms_per_md_step": 1000.0
        * sum(s["timings"]["md_s"] for s in segments)
        / max(1, sum(s["end_step"] - s["start_step"] for s in segments)),
        "checks": {"step": steps.tolist(), "max": errs.tolist(), "mae": maes.tolist()},
        "segments": [
            {
                k: s.get(k)
                for k in (
                    "iteration",
                    "start_step",
                    "end_step",
                    "paused",
                    "new_chunks",
                    "structure_uncertainty",
                    "delta_scale",
                )
            }
            for s in segments
        ],
    }
    surface = surface_atoms(atoms0)
    ml_e = parent_energies(ml_frames[ml_half:])
    out["ml_run"] = {
        "parent_energy_per_atom_mean": float(ml_e.mean()),
        "parent_energy_per_atom_std": float(ml_e.std()),
        **mobility(ml_frames, surface, ml_half),
    }
    out["n_surface_atoms"] = len(surface)
    if not args.big or args.parent_md:
        start = step.md_start(spec, atoms0)
        ref, ref_s = parent_md(start, step.md_settings(spec), total, m.frame_every)
        ref_half = len(ref) // 2
        ref_e = parent_energies(ref[ref_half:])
        r, g_ml = rdf(ml_frames[ml_half:])
        _, g_ref = rdf(ref[ref_half:])
        first = r < 3.3
        out["parent_run"] = {
            "seconds": ref_s,
            "parent_energy_per_atom_mean": float(ref_e.mean()),
            "parent_energy_per_atom_std": float(ref_e.std()),
            **mobility(ref, surface, ref_half),
        }
        out["rdf"] = {
            "max_abs_difference": float(np.abs(g_ml - g_ref).max()),
            "integrated_abs_difference_over_integral": float(
                np.abs(g_ml - g_ref).sum() / g_ref.sum()
            ),
            "first_peak_A_ml": float(r[first][np.argmax(g_ml[first])]),
            "first_peak_A_parent": float(r[first][np.argmax(g_ref[first])]),
            "first_peak_height_ml": float(g_ml[first].max()),
            "first_peak_height_parent": float(g_ref[first].max()),
        }
    out["peak_rss_MiB_nft_and_md"] = peak_phases  # the campaign's phases, before the analysis
    out["peak_rss_MiB"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
    text = json.dumps(out, indent=1)
    print(text)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text)


if __name__ == "__main__":
    main()
