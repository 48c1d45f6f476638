"""Speed of the trained potential against ASE's EMT, training speed, relaxation steps.

    .venv/bin/python bench/speed.py                 # every row (about 10 minutes)
    .venv/bin/python bench/speed.py --quick         # 260 / 1,925 / 6,895 atoms and training only

Prediction rows: a 10-member 2x25 ensemble on the default descriptors (R_c = 6 Å; the cost
does not depend on the weights, so the parameters are freshly initialised) against ASE's
EMT on the same rattled Pt octahedron, both in steady state: each call sees the structure
moved by a small random step (0.005 Å per coordinate, as in MD), both calculators keep
their neighbour lists with a skin, and the median of the timed calls is shown (first calls,
with JIT compilation, are not). "fresh" is one call on a new structure (neighbour list
built, program compiled before). Each size runs in its own process, so the peak resident
memory (RSS) is that size's own.

Training row: one warm-start retraining of the demo campaign's size (20 bulk cells + 260
EMT chunks, the campaign's steps per iteration). Relaxation rows: FIRE on a rattled
cuboctahedral Pt1415 (time per step over 50 steps) and on a 10,000-atom octahedron for 100
steps.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent.parent

# Pt octahedra: (length, cutoff) -> atoms
SIZES = {260: (8, 3), 1925: (15, 5), 6895: (23, 8), 100_011: (61, 29)}

PREDICT = r"""
import json, resource, sys, time
import numpy as np
size, length, cut, kind, calls = sys.argv[1:6]
length, cut, calls = int(length), int(cut), int(calls)
from ase.cluster import Octahedron
atoms = Octahedron("Pt", length, cut, latticeconstant=3.92)
rng = np.random.default_rng(0)
atoms.positions += rng.normal(0, 0.1, atoms.positions.shape)
if kind == "emt":
    from ase.calculators.emt import EMT
    calc = EMT()
else:
    import jax
    from nft_fw import descriptors as desc, model as mdl
    from nft_fw.potential.calculator import EnsembleCalculator
    spec = desc.DescriptorSpec.default(["Pt"], 6.0)
    arch = mdl.Architecture((25, 25), 10)
    params = mdl.init_params(arch, spec.elements, spec.n_features, jax.random.PRNGKey(0))
    mean, std = mdl.normalisation([desc.features(atoms[: min(len(atoms), 2000)], spec)])
    calc = EnsembleCalculator(mdl.Ensemble(spec, arch, params, mean, std, np.zeros(1)))
atoms.calc = calc
t0 = time.perf_counter(); atoms.get_forces(); first = time.perf_counter() - t0
times = []
for _ in range(calls):
    atoms.positions += rng.normal(0, 0.005, atoms.positions.shape)
    t0 = time.perf_counter()
    atoms.get_potential_energy(); atoms.get_forces()
    if kind != "emt":
        calc.results["uncertainties"]
    times.append(time.perf_counter() - t0)
fresh = None
if kind != "emt":  # a single point on a new structure: neighbour list at R_c, no skin
    calc.ensemble.evaluate(atoms)  # compile for this width
    atoms.positions += rng.normal(0, 0.005, atoms.positions.shape)
    t0 = time.perf_counter(); calc.ensemble.evaluate(atoms); fresh = time.perf_counter() - t0
rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 / 1024
print(json.dumps({"first": first, "median": float(np.median(times)), "fresh": fresh, "rss_GB": rss,
                  "rebuilds": getattr(calc, "rebuilds", None)}))
"""

TRAIN = r"""
import json, time
from nft_fw import loop, step, training
from nft_fw.spec.campaign import example_campaign, load_campaign, prepare
spec = load_campaign(example_campaign())
prepared = prepare(spec)
images = loop.initial_images(prepared)
ens = step.fresh_ensemble(prepared, images)
ia = training.image_arrays(images, ens.spec)
labels = [step.label_chunk(prepared, step.cut_chunk(prepared, c), 1) for c in range(260)]
t0 = time.perf_counter()
feats = step.chunk_features(labels, ens.spec)
t_feat = time.perf_counter() - t0
cfg = spec.train_config(1)
runs = []
for _ in range(2):
    t0 = time.perf_counter()
    ens, metrics = training.train(ens, ia, feats, cfg)
    runs.append(time.perf_counter() - t0)
print(json.dumps({"features_s": t_feat, "first_s": runs[0], "steady_s": runs[1],
                  "steps": metrics["steps"], "steps_per_s": metrics["steps"] / runs[1]}))
"""

RELAX = r"""
import json, resource, sys, time
import numpy as np
import jax
from ase.cluster import Octahedron
from ase.optimize import FIRE
from nft_fw import descriptors as desc, model as mdl
from nft_fw.potential.calculator import EnsembleCalculator
which, steps = sys.argv[1], int(sys.argv[2])
if which == "pt1415":
    atoms = Octahedron("Pt", 15, 7, latticeconstant=3.92)  # cuboctahedron, 1,415 atoms
else:
    atoms = Octahedron("Pt", 26, 9, latticeconstant=3.92)  # 10,016 atoms
rng = np.random.default_rng(1)
atoms.positions += rng.normal(0, 0.1, atoms.positions.shape)
spec = desc.DescriptorSpec.default(["Pt"], 6.0)
arch = mdl.Architecture((25, 25), 10)
params = mdl.init_params(arch, spec.elements, spec.n_features, jax.random.PRNGKey(0))
mean, std = mdl.normalisation([desc.features(atoms[:2000], spec)])
calc = EnsembleCalculator(mdl.Ensemble(spec, arch, params, mean, std, np.zeros(1)))
atoms.calc = calc
atoms.get_forces()  # compile
opt = FIRE(atoms, logfile=None)
t0 = time.perf_counter()
opt.run(fmax=1e-6, steps=steps)
wall = time.perf_counter() - t0
rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 / 1024
print(json.dumps({"atoms": len(atoms), "steps": opt.nsteps, "wall_s": wall,
                  "per_step_s": wall / max(opt.nsteps, 1), "rebuilds": calc.rebuilds,
                  "rss_GB": rss}))
"""


def _child(code: str, *args: object) -> dict:
    out = subprocess.run(
        [sys.executable, "-c", code, *map(str, args)],
        capture_output=True,
        text=True,
        cwd=HERE,
    )
    if out.returncode:
        sys.stderr.write(out.stderr)
        raise SystemExit(f"benchmark child failed: {code[:40]!r} {args}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="skip 100k atoms and relaxations")
    parser.add_argument("--calls", type=int, default=30, help="timed calls per size")
    args = parser.parse_args()
    sizes = [n for n in SIZES if not (args.quick and n > 10_000)]
    print(
        "atoms    ensemble E+F+δ s   ASE EMT s   ratio   ms/atom   fresh s   first s   peak RSS GB"
    )
    for n in sizes:
        length, cut = SIZES[n]
        calls = args.calls if n < 10_000 else 3
        ens = _child(PREDICT, n, length, cut, "ensemble", calls)
        emt = _child(PREDICT, n, length, cut, "emt", calls)
        print(
            f"{n:>7}  {ens['median']:>14.4f}   {emt['median']:>9.4f}   "
            f"{ens['median'] / emt['median']:>5.2f}   {1000 * ens['median'] / n:>7.3f}   "
            f"{ens['fresh']:>7.3f}   {ens['first']:>7.2f}   {ens['rss_GB']:>8.2f}",
            flush=True,
        )
    tr = _child(TRAIN)
    print(
        f"\ntraining, 20 bulk cells + 260 chunks, {int(tr['steps'])} warm-start steps: "
        f"{tr['steady_s']:.1f} s ({tr['steps_per_s']:.0f} steps/s; first {tr['first_s']:.1f} s "
        f"with compilation); chunk features {tr['features_s']:.1f} s",
        flush=True,
    )
    if args.quick:
        return
    for which, steps in (("pt1415", 50), ("pt10k", 100)):
        r = _child(RELAX, which, steps)
        print(
            f"FIRE, rattled {r['atoms']}-atom particle, {r['steps']} steps: {r['wall_s']:.1f} s "
            f"({r['per_step_s']:.3f} s/step, {r['rebuilds']} neighbour-list builds, "
            f"peak RSS {r['rss_GB']:.2f} GB)",
            flush=True,
        )


if __name__ == "__main__":
    main()
