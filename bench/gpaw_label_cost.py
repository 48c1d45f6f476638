"""Cost of GPAW labels with a campaign's parent settings: chunks of its target and initial
bulk cells, run one after another in this process (as a worker runs them).

    .venv/bin/python bench/gpaw_label_cost.py [CAMPAIGN] [--chunks 1] [--images 1]

Prints per label: atoms, wall time, SCF iterations, retry used, and ru_maxrss (the
process's resident-memory high-water mark so far, MiB).

With ``--labels FILE --pick I,J,…`` it relabels stored labels of an exported label file
(``nft-fw labels NAME --export``; I, J: positions in the file) with their own parent
settings and with each ``--variant NAME=OVERRIDES`` (YAML, merged into the parameters, e.g.
``--variant 'pulay={mixer: {beta: 0.05, nmaxold: 5, weight: 50}}'``), and prints per label and
setting: SCF iterations, CPU seconds of this process, how far the central force (a
chunk's; every atom's force for a bulk cell) moved from the stored label and from the
same-settings rerun, and how far the energy per atom moved from the stored label (what a
symmetric bulk cell, with zero forces, is there for):

    .venv/bin/python bench/gpaw_label_cost.py --labels bench/data/pt140-gpaw-labels.extxyz \
        --pick 33,35 --variant 'loose={convergence: {density: 1.0e-3}}'
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np

from nft_fw.spec.campaign import load_campaign, prepare
from nft_fw.steps import step
from nft_fw.structures.chunks import cut

EXAMPLE = Path(__file__).resolve().parent.parent / "nft_fw" / "examples" / "pt38-gpaw.yaml"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("campaign", nargs="?", default=str(EXAMPLE))
    parser.add_argument("--chunks", type=int, default=1, help="chunks of random centres")
    parser.add_argument("--images", type=int, default=1, help="initial bulk cells")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--labels", help="an exported label file to relabel (with --pick)")
    parser.add_argument("--pick", default="", help="positions in --labels, comma-separated")
    parser.add_argument(
        "--variant", action="append", default=[], metavar="NAME=YAML",
        help="parameter overrides to compare with the stored settings (repeatable)",
    )  # fmt: skip
    args = parser.parse_args()
    if args.labels:
        relabel(args.labels, [int(i) for i in args.pick.split(",") if i], args.variant)
        return
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


def relabel(path: str, picks: list[int], variants: list[str]) -> None:
    import resource
    import time

    import ase.io
    import yaml

    from nft_fw.parents.parent import get_parent

    frames = ase.io.read(path, ":")
    settings: list[tuple[str, dict]] = [("stored", {})]
    for v in variants:
        name, _, text = v.partition("=")
        override = yaml.safe_load(text)
        if not name or not isinstance(override, dict):
            raise SystemExit(f"--variant {v!r}: expected NAME={{key: value, …}}")
        settings.append((name, override))
    print(
        "| label | atoms | setting | SCF iterations | CPU s | ΔF vs stored (eV/Å) | ΔF vs rerun "
        "| ΔE/atom vs stored (meV) |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for i in picks:
        frame = frames[i]
        info = frame.info
        params = dict(info["nft_parent_params"])
        chunk = info["nft_kind"] == "chunk"
        stored = frame.get_forces()
        stored_energy = frame.get_potential_energy()
        rerun = None
        for name, override in settings:
            parent = get_parent(info["nft_parent"], {**params, **override})
            atoms = frame.copy()
            atoms.calc = None
            cpu0 = resource.getrusage(resource.RUSAGE_SELF).ru_utime
            t0 = time.perf_counter()
            r = parent.single_point(atoms)
            cpu = resource.getrusage(resource.RUSAGE_SELF).ru_utime - cpu0
            wall = time.perf_counter() - t0
            sel = slice(0, 1) if chunk else slice(None)
            d_stored = np.linalg.norm(r.forces[sel] - stored[sel], axis=1).max()
            rerun = r.forces if rerun is None else rerun
            d_rerun = np.linalg.norm(r.forces[sel] - rerun[sel], axis=1).max()
            print(
                f"| {i} ({info['nft_kind']}) | {len(frame)} | {name} | {r.scf_iterations} | "
                f"{cpu:.0f} (wall {wall:.0f}) | {d_stored:.4f} | {d_rerun:.4f} | "
                f"{1e3 * (r.energy - stored_energy) / len(frame):+.2f} |",
                flush=True,
            )


if __name__ == "__main__":
    main()
