"""Ensemble energy + forces + δ versus particle size (wall time and peak memory).

    .venv/bin/python bench/predict_scaling.py [--sizes 260 1415 4033 10016] [--repeat 3]

Each size runs in a fresh subprocess so its peak resident memory is its own. The model is
a freshly initialised 10-member 2x25 ensemble on the default 6 Å descriptors: the cost of a
prediction does not depend on the trained weights.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys

# Pt particles: octahedron (length, cutoff) or icosahedron (shells)
SHAPES = {
    260: ("octahedron", 8, 3),
    1415: ("icosahedron", 8, 0),
    4033: ("octahedron", 19, 6),
    10016: ("octahedron", 26, 9),
}

CHILD = r"""
import json, resource, sys, time
import jax, numpy as np
from ase.cluster import Icosahedron, Octahedron
from nft_fw import descriptors as desc, model as mdl, uncertainty
kind, a, b, repeat = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
if kind == "octahedron":
    atoms = Octahedron("Pt", a, b, latticeconstant=3.92)
else:
    atoms = Icosahedron("Pt", a, latticeconstant=3.92)
atoms.positions += np.random.default_rng(0).normal(0, 0.1, atoms.positions.shape)
spec = desc.DescriptorSpec.default(["Pt"], 6.0)
arch = mdl.Architecture((25, 25), 10)
params = mdl.init_params(arch, spec.elements, spec.n_features, jax.random.PRNGKey(0))
g = desc.features(atoms[:200], spec)
mean, std = mdl.normalisation([g])
ens = mdl.Ensemble(spec, arch, params, mean, std, np.zeros(1))
t0 = time.perf_counter(); ens.predict(atoms); first = time.perf_counter() - t0
times = []
for _ in range(repeat):
    t0 = time.perf_counter()
    e, f = ens.predict(atoms)
    d = uncertainty.atomic(f)
    times.append(time.perf_counter() - t0)
rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 / 1024
print(json.dumps({"atoms": len(atoms), "first_s": first, "best_s": min(times), "peak_GB": rss}))
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=list(SHAPES), choices=list(SHAPES))
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    print("atoms   first call (incl. compile) s   best of repeats s   ms/atom   peak RSS GB")
    for n in args.sizes:
        kind, a, b = SHAPES[n]
        out = subprocess.run(
            [sys.executable, "-c", CHILD, kind, str(a), str(b), str(args.repeat)],
            capture_output=True,
            text=True,
            check=True,
        )
        r = json.loads(out.stdout.strip().splitlines()[-1])
        print(
            f"{r['atoms']:>6}   {r['first_s']:>10.2f}                     {r['best_s']:>8.2f}"
            f"          {1000 * r['best_s'] / r['atoms']:.2f}      {r['peak_GB']:.2f}"
        )


if __name__ == "__main__":
    main()
