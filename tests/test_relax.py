"""Relaxation driver and trajectory site selection (no database)."""

from __future__ import annotations

import jax
import numpy as np
import pytest
from ase.cluster import Octahedron

from nft_fw import descriptors as desc
from nft_fw import model as mdl
from nft_fw.calculator import EnsembleCalculator
from nft_fw.relax import relax, uncertain_sites


@pytest.fixture(scope="module")
def setup():
    atoms = Octahedron("Pt", 4, 1, latticeconstant=3.92)
    atoms.positions += np.random.default_rng(0).normal(0, 0.05, atoms.positions.shape)
    spec = desc.DescriptorSpec.default(["Pt"], cutoff=5.0, n_radial=8)
    arch = mdl.Architecture((8,), 3)
    params = mdl.init_params(arch, spec.elements, spec.n_features, jax.random.PRNGKey(0))
    mean, std = mdl.normalisation([desc.features(atoms, spec)])
    return atoms, spec, EnsembleCalculator(mdl.Ensemble(spec, arch, params, mean, std, np.zeros(1)))


@pytest.mark.parametrize("optimizer", ["fire", "lbfgs"])
def test_relax_records_every_step_and_lowers_the_energy(setup, optimizer):
    atoms, _, calc = setup
    traj = relax(atoms, calc, fmax=0.05, max_steps=15, optimizer=optimizer)
    assert len(traj.steps) == len(traj.frames) == len(traj.deltas) >= 2
    assert traj.steps[-1].energy < traj.steps[0].energy
    assert all(s.max_uncertainty >= s.mean_uncertainty >= 0 for s in traj.steps)
    assert traj.max_uncertainty == max(d.max() for d in traj.deltas)
    assert not np.allclose(traj.final.positions, atoms.positions)
    with pytest.raises(ValueError, match="optimizer"):
        relax(atoms, calc, optimizer="newton")


def test_uncertain_sites_are_above_threshold_and_distinct(setup):
    atoms, spec, calc = setup
    traj = relax(atoms, calc, fmax=0.05, max_steps=5)
    threshold = float(np.median(np.concatenate(traj.deltas)))
    for method in ("cur", "most_uncertain"):
        sites = uncertain_sites(traj, threshold, spec, n=6, method=method)
        assert len(sites) == len(set(sites)) == 6
        assert all(traj.deltas[f][i] > threshold for f, i in sites)
    top = uncertain_sites(traj, threshold, spec, n=1, method="most_uncertain")[0]
    assert traj.deltas[top[0]][top[1]] == max(d.max() for d in traj.deltas)
