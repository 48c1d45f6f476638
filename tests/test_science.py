"""Physics and bookkeeping checks of the science core (real EMT, no database)."""

from __future__ import annotations

import jax
import numpy as np
import pytest
from ase.build import bulk
from ase.calculators.calculator import PropertyNotImplementedError
from ase.calculators.emt import EMT
from ase.cluster import Octahedron
from scipy.spatial.transform import Rotation

from nft_fw import chunks, decision, initial, training, uncertainty
from nft_fw import descriptors as desc
from nft_fw import model as mdl
from nft_fw.calculator import EnsembleCalculator


def _emt(atoms):
    a = atoms.copy()
    a.calc = EMT()
    return a.get_potential_energy(), a.get_forces()


@pytest.fixture
def x64():
    jax.config.update("jax_enable_x64", True)
    yield
    jax.config.update("jax_enable_x64", False)


@pytest.fixture(scope="module")
def alloy():
    atoms = Octahedron("Pt", 4, 1, latticeconstant=3.92)
    atoms.positions += np.random.default_rng(3).normal(0, 0.08, atoms.positions.shape)
    atoms.symbols[[0, 5, 9, 17]] = "Au"
    return atoms


@pytest.fixture(scope="module")
def ensemble(alloy):
    spec = desc.DescriptorSpec.default(["Au", "Pt"], cutoff=5.0, n_radial=8)
    arch = mdl.Architecture((16, 16), 4)
    params = mdl.init_params(arch, spec.elements, spec.n_features, jax.random.PRNGKey(1))
    mean, std = mdl.normalisation([desc.features(alloy, spec)])
    return mdl.Ensemble(spec, arch, params, mean, std, np.array([-0.3, 0.1]))


def test_energy_invariant_under_rotation_translation_permutation(ensemble, alloy):
    e0, f0 = ensemble.predict(alloy)
    moved = alloy.copy()
    rot = Rotation.from_euler("xyz", [0.3, -1.1, 2.0])
    moved.positions = rot.apply(alloy.positions) + np.array([4.0, -2.5, 7.0])
    e1, f1 = ensemble.predict(moved)
    perm = np.random.default_rng(0).permutation(len(alloy))
    e2, f2 = ensemble.predict(alloy[perm])
    assert e1 == pytest.approx(e0, rel=1e-5, abs=1e-4)
    assert e2 == pytest.approx(e0, rel=1e-5, abs=1e-4)
    np.testing.assert_allclose(f1, np.einsum("ij,mnj->mni", rot.as_matrix(), f0), atol=2e-4)
    np.testing.assert_allclose(f2, f0[:, perm], atol=2e-4)
    d0 = uncertainty.atomic(f0)
    np.testing.assert_allclose(uncertainty.atomic(f1), d0, rtol=1e-4, atol=1e-5)


def test_forces_equal_finite_differences(ensemble, alloy, x64):
    _, forces = ensemble.predict(alloy)
    h = 1e-5
    for atom in (0, 7, len(alloy) - 1):
        for axis in range(3):
            plus, minus = alloy.copy(), alloy.copy()
            plus.positions[atom, axis] += h
            minus.positions[atom, axis] -= h
            fd = -(ensemble.predict(plus)[0] - ensemble.predict(minus)[0]) / (2 * h)
            np.testing.assert_allclose(forces[:, atom, axis], fd, rtol=1e-6, atol=1e-7)


def test_uncertainty_formula():
    f = np.zeros((4, 2, 3))
    f[:, 0, 0] = [1.0, -1.0, 1.0, -1.0]  # σ² = 4/3 along x
    delta = uncertainty.atomic(f)
    assert delta[0] == pytest.approx(2.58 * np.sqrt(4.0 / 3.0))
    assert delta[1] == 0.0
    assert uncertainty.structure(delta) == delta[0]
    with pytest.raises(ValueError, match="M ≥ 2"):
        uncertainty.atomic(f[:1])


def test_chunk_central_force_from_inner_atoms_equals_full_chunk_force(ensemble, alloy):
    cut = [chunks.cut(alloy, c, 9.0) for c in (11, 3, 20)]
    feats = [training.chunk_features(c.atoms, np.zeros(3), ensemble.spec, c.hash) for c in cut]
    assert all(len(f.g) < len(c.atoms) for f, c in zip(feats, cut, strict=True))  # inner only
    cb = training.pack_chunks(feats, ensemble.spec, rows=80, slots=3)  # 2 chunks a batch
    assert cb.used == 2 and cb.n_batches == training.MIN_BATCHES
    data = training._data(training.image_arrays([], ensemble.spec), cb)
    fc = training._chunk_forces(ensemble.params, ensemble.constants(), data["ch"], "tanh")
    for i, c in enumerate(cut):
        _, full = ensemble.predict(c.atoms)
        b, s = cb.slot[i]
        np.testing.assert_allclose(np.asarray(fc)[b, :, s], full[:, 0], atol=2e-4)


def test_chunk_loss_ignores_non_central_labels(ensemble, alloy):
    chunk = chunks.cut(alloy, 11, 9.0)
    _, forces = _emt(chunk.atoms)
    other = forces.copy()
    other[1:] += np.random.default_rng(0).normal(0, 5.0, other[1:].shape)
    images = [training.Image(alloy, *_emt(alloy), id="a")]
    ia = training.image_arrays(images, ensemble.spec)

    def loss_and_grad(chunk_forces):
        feats = training.chunk_features(chunk.atoms, chunk_forces[0], ensemble.spec, chunk.hash)
        cb = training.pack_chunks([feats], ensemble.spec)
        weights, _ = training._weights(ia, cb, ensemble.size, seed=0)
        weights["chunk"][:] = np.where(weights["chunk"] > 0, weights["chunk"], 0.0)
        weights["chunk"][:, 0, 0] = 1.0  # every member sees the chunk

        def total(params):
            return training._member_losses(
                params, ensemble.constants(), training._data(ia, cb), weights, 1.0, 1.0, "tanh"
            ).sum()

        return jax.value_and_grad(total)(ensemble.params)

    l1, g1 = loss_and_grad(forces)
    l2, g2 = loss_and_grad(other)
    assert float(l1) == float(l2)
    for a, b in zip(jax.tree_util.tree_leaves(g1), jax.tree_util.tree_leaves(g2), strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    moved = forces.copy()
    moved[0] += 1.0
    l3, _ = loss_and_grad(moved)
    assert float(l3) != float(l1)  # and the central force does count


def test_chunk_hash_invariant_to_order_and_translation(alloy):
    chunk = chunks.cut(alloy, 4, 6.0)
    perm = np.random.default_rng(1).permutation(len(chunk.atoms))
    shuffled = chunk.atoms[perm]
    shuffled.positions += np.array([3.3, -7.1, 0.2])
    centre = int(np.flatnonzero(perm == 0)[0])
    assert chunks.chunk_hash(shuffled, centre) == chunk.hash
    assert chunks.cut(alloy, 5, 6.0).hash != chunk.hash
    assert chunk.atoms.positions[0] == pytest.approx(np.zeros(3))
    assert not chunk.atoms.pbc.any()


def test_periodic_chunk_includes_images():
    cell = bulk("Pt", "fcc", a=3.92)  # one atom: every neighbour is an image
    chunk = chunks.cut(cell, 0, 3.0)
    assert len(chunk.atoms) == 13  # the atom and its 12 nearest neighbours
    distances = np.linalg.norm(chunk.atoms.positions, axis=1)
    assert distances[1:] == pytest.approx(np.full(12, 3.92 / np.sqrt(2)))
    assert len(chunks.cut(cell, 0, 3.92 * 1.01)) == 19  # + the 6 second neighbours


def test_initial_set_size_and_space_groups():
    spec = desc.DescriptorSpec.default(["Pt"], cutoff=5.0, n_radial=8)
    cands = initial.candidates({"Pt": 1.0}, 3.92, n_candidates=30, seed=4)
    chosen = initial.select(cands, 12, spec)
    assert len(chosen) == 12
    assert {a.info["spacegroup"] for a in chosen} == {225, 79}
    assert {len(a) for a in cands} == {2, 4, 16, 32}
    again = initial.candidates({"Pt": 1.0}, 3.92, n_candidates=30, seed=4)
    assert all(np.array_equal(a.positions, b.positions) for a, b in zip(cands, again, strict=True))


def _tiny_training(seed):
    spec = desc.DescriptorSpec.default(["Pt"], cutoff=5.0, n_radial=8)
    cells = initial.candidates({"Pt": 1.0}, 3.92, n_candidates=6, seed=0)
    images = initial.label(cells, _emt)
    ens = training.make_ensemble(spec, mdl.Architecture((8,), 3), images, seed=seed)
    ia = training.image_arrays(images, spec)
    cfg = training.TrainConfig(steps=100, seed=seed)
    return training.train(ens, ia, [], cfg)


def test_seeded_training_is_reproducible_and_learns():
    a, ma = _tiny_training(0)
    b, mb = _tiny_training(0)
    c, _ = _tiny_training(1)
    for x, y in zip(jax.tree_util.tree_leaves(a.params), jax.tree_util.tree_leaves(b.params), strict=True):  # fmt: skip
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
    assert not np.array_equal(
        np.asarray(a.params["Pt"][0]["kernel"]), np.asarray(c.params["Pt"][0]["kernel"])
    )
    assert ma["loss"] == mb["loss"]
    assert ma["image_force_mae_eV_per_A"] < 0.5


def test_calculator_round_trip(ensemble, alloy, tmp_path):
    calc = EnsembleCalculator(ensemble)
    atoms = alloy.copy()
    atoms.calc = calc
    e = atoms.get_potential_energy()
    f = atoms.get_forces()
    d = calc.get_uncertainties(atoms)
    assert d.shape == (len(atoms),) and (d >= 0).all()
    with pytest.raises(PropertyNotImplementedError):
        atoms.get_stress()
    calc.save(tmp_path / "model")
    assert not list((tmp_path / "model").glob("*.pkl"))
    loaded = EnsembleCalculator.load(tmp_path / "model")
    atoms.calc = loaded
    assert atoms.get_potential_energy() == pytest.approx(e, abs=1e-5)
    np.testing.assert_allclose(atoms.get_forces(), f, atol=1e-5)
    with pytest.raises(FileNotFoundError, match=r"model\.json"):
        EnsembleCalculator.load(tmp_path / "nothing")


def test_decision_rules():
    delta = np.array([0.5, 0.9, 0.1, 0.7])
    common = {"k": 2, "threshold": 0.1, "patience": 2, "max_iterations": 10}
    step = decision.decide([1.0], delta, set(), **common)
    assert step == decision.Continue((1, 3))
    step = decision.decide([1.0, 0.9], delta, {1}, **common)
    assert step == decision.Continue((3, 0))
    stop = decision.decide([1.0, 0.05], delta, set(), **common)
    assert isinstance(stop, decision.Stop) and stop.reason == "threshold"
    stop = decision.decide([1.0, 0.5, 0.6, 0.7], delta, set(), **common)
    assert stop == decision.Stop(stop.reason, stop.detail, 1) and stop.reason == "patience"
    stop = decision.decide([1.0, 0.9, 0.8], delta, set(), **{**common, "max_iterations": 2})
    assert isinstance(stop, decision.Stop) and stop.reason == "max_iterations"
    stop = decision.decide([1.0, 0.5, 0.51, 0.52], delta, set(), **common)
    assert stop.reason == "patience" and stop.best_iteration == 3  # within 5 %: latest kept
    assert decision.best_iteration([1.0, 0.5, 0.51], tolerance=0.0) == 1
    assert decision.best_iteration([1.0, 0.5, 0.6]) == 1
    stop = decision.decide([1.0], delta, {0, 1, 2, 3}, **common)
    assert isinstance(stop, decision.Stop) and stop.reason == "exhausted"


def test_out_of_sample_figures_use_the_previous_forces_at_the_centres() -> None:
    from nft_fw.loop import out_of_sample

    predicted = np.zeros((5, 3))
    predicted[2] = [1.0, 0.0, 0.0]
    delta = np.array([9.0, 9.0, 0.5, 9.0, 2.5])
    # parent's central forces on the chunks around atoms 2 and 4
    out = out_of_sample(
        predicted, delta, [2, 4], [np.array([1.0, 0.0, 0.0]), np.array([0, 3.0, 4.0])]
    )
    assert out["oos_n"] == 2
    assert out["oos_mae"] == pytest.approx(2.5)  # errors 0 and 5
    assert out["oos_max"] == pytest.approx(5.0)
    assert out["oos_rms"] == pytest.approx(np.sqrt(12.5))
    assert out["oos_fraction_within_delta"] == pytest.approx(0.5)  # 0 ≤ 0.5, 5 > 2.5
    assert out_of_sample(predicted, delta, [], []) == {}
