"""Physics and bookkeeping checks of the science core (real EMT, no database)."""

from __future__ import annotations

from pathlib import Path

import jax
import numpy as np
import pytest
from ase.build import bulk
from ase.calculators.calculator import PropertyNotImplementedError
from ase.calculators.emt import EMT
from ase.cluster import Octahedron
from scipy.spatial.transform import Rotation

from nft_fw.potential import descriptors as desc
from nft_fw.potential import model as mdl
from nft_fw.potential import training, uncertainty
from nft_fw.potential.calculator import EnsembleCalculator
from nft_fw.steps import decision
from nft_fw.structures import chunks, initial


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


def test_without_bootstrap_every_member_trains_on_every_label(ensemble, alloy):
    images = [training.Image(alloy, *_emt(alloy), id=f"a{i}") for i in range(6)]
    ia = training.image_arrays(images, ensemble.spec)
    feats = [
        training.chunk_features(c.atoms, _emt(c.atoms)[1][0], ensemble.spec, c.hash)
        for c in (chunks.cut(alloy, i, 9.0) for i in range(8))
    ]
    cb = training.pack_chunks(feats, ensemble.spec)
    real = np.zeros((cb.n_batches, cb.slots), bool)
    real[cb.slot[:, 0], cb.slot[:, 1]] = True
    boot, boot_oob = training._weights(ia, cb, ensemble.size, seed=0)
    plain, plain_oob = training._weights(ia, cb, ensemble.size, seed=0, bootstrap=False)
    # the bootstrap leaves some chunk out of some member; without it nobody misses one
    assert (boot["chunk"][:, real] == 0).any() and boot_oob["chunk"].sum() > 0
    assert (plain["chunk"][:, real] == 1).all() and (plain["chunk"][:, ~real] == 0).all()
    assert plain_oob["chunk"].sum() == 0
    assert all((w == 1).all() for w in plain["img"])
    assert all(w.sum() == 0 for w in plain_oob["img"])


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


def test_patience_and_kept_model_follow_the_progress_measure() -> None:
    """The alloy history of the campaign that kept a model 75 % worse than its last: max δ
    jumps about while mean δ (and the error) falls; by mean δ the run goes on and keeps the
    latest model."""
    delta = np.linspace(0.1, 1.0, 20)
    common = {"k": 2, "threshold": 0.1, "patience": 2, "max_iterations": 10}
    max_delta = [2.5, 2.1, 1.85, 1.09, 1.89, 1.71]
    mean_delta = [1.3, 1.0, 0.84, 0.63, 0.51, 0.40]
    by_max = decision.decide(max_delta, delta, set(), **common)
    assert isinstance(by_max, decision.Stop) and by_max.best_iteration == 3
    by_mean = decision.decide(max_delta, delta, set(), measures=mean_delta, **common)
    assert isinstance(by_mean, decision.Continue)
    stop = decision.decide([*max_delta, 1.5], delta, set(), measures=[*mean_delta, 0.41], **common)
    assert isinstance(stop, decision.Continue)  # one iteration without gain: not yet
    stop = decision.decide(
        [*max_delta, 1.5, 1.6],
        delta,
        set(),
        measures=[*mean_delta, 0.41, 0.399],
        min_gain=0.02,
        **common,
    )
    # 0.399 is not 2 % below 0.40: no gain for two iterations; kept = latest within 5 %
    assert stop == decision.Stop("patience", stop.detail, 7)  # type: ignore[union-attr]
    assert "iteration 5" in stop.detail  # type: ignore[union-attr]
    stop = decision.decide(
        [*max_delta, 1.5, 1.6],
        delta,
        set(),
        measures=[*mean_delta, 0.41, 0.399],
        min_gain=0.0,
        **common,
    )
    assert isinstance(stop, decision.Continue)  # without the margin 0.399 is a gain
    assert decision.last_gain([1.0, 0.99, 0.97, 0.5, 0.49], min_gain=0.02) == 3
    assert decision.progress(
        [{"mean_uncertainty": 0.2, "structure_uncertainty": 0.9}], "mean_delta"
    ) == [0.2]
    with pytest.raises(ValueError, match="progress measure"):
        decision.progress([], "median")
    with pytest.raises(ValueError, match="2 measures for 1"):
        decision.decide([1.0], delta, set(), measures=[1.0, 0.5], **common)


def test_estimated_error_scales_mean_delta_by_the_out_of_sample_evidence() -> None:
    records = [
        {"mean_uncertainty": 1.0},  # iteration 0: no out-of-sample point yet
        {"mean_uncertainty": 0.5, "oos_errors": [0.4, 0.2], "oos_deltas": [2.0, 1.0]},
        {"mean_uncertainty": 0.4, "oos_errors": [0.3], "oos_deltas": [0.5]},
        {"mean_uncertainty": 0.3},  # no new chunks: the window's points still count
    ]
    est = decision.estimated_errors(records)
    assert est[0] == float("inf")
    assert est[1] == pytest.approx(0.5 * 0.6 / 3.0)
    assert est[2] == pytest.approx(0.4 * 0.9 / 3.5)
    assert est[3] == pytest.approx(0.3 * 0.9 / 3.5)
    assert decision.progress(records, "estimated_error") == est
    # only the latest ESTIMATE_WINDOW iterations with points enter the ratio
    many = [{"mean_uncertainty": 1.0, "oos_errors": [float(k)], "oos_deltas": [1.0]}
            for k in range(1, 6)]  # fmt: skip
    assert decision.estimated_errors(many)[-1] == pytest.approx((3 + 4 + 5) / 3)


def test_a_campaign_that_states_its_accuracy_stops_when_the_evidence_says_so() -> None:
    common = {"threshold": 0.1, "patience": 3, "max_iterations": 10}
    measures = [float("inf"), 0.08, 0.05, 0.031]
    assert decision.stop_rule([2.0, 1.0, 0.8, 0.7], measures, target_error=0.03,
                              estimates=measures, **common) is None  # fmt: skip
    stop = decision.stop_rule([2.0, 1.0, 0.8, 0.7, 0.6], [*measures, 0.029], target_error=0.03,
                              estimates=[*measures, 0.029], **common)  # fmt: skip
    assert stop is not None and stop.reason == "target_error" and stop.best_iteration == 4
    assert "0.029" in stop.detail and "nft.target_error 0.03" in stop.detail
    # no estimate yet (iteration 0), or no target: never this stop
    assert decision.stop_rule([2.0], [float("inf")], target_error=10.0,
                              estimates=[float("inf")], **common) is None  # fmt: skip
    assert decision.stop_rule([2.0, 1.0], [1.0, 0.01], estimates=[1.0, 0.01], **common) is None
    # the threshold on δ still comes first
    stop = decision.stop_rule([2.0, 0.05], [1.0, 0.01], target_error=0.03,
                              estimates=[1.0, 0.01], **common)  # fmt: skip
    assert stop is not None and stop.reason == "threshold"


def test_a_stated_accuracy_with_a_dft_parent_warns_what_the_estimate_cannot_see() -> None:
    import yaml

    from nft_fw.spec.campaign import load_campaign, prepare

    root = Path(__file__).resolve().parent.parent / "nft_fw" / "examples"
    data = yaml.safe_load((root / "pt140-gpaw.yaml").read_text())
    assert not any("target_error" in w for w in prepare(load_campaign(data)).warnings)
    data["nft"]["target_error"] = 0.12
    (warning,) = [w for w in prepare(load_campaign(data)).warnings if "target_error" in w]
    assert "not against the whole structure" in warning


def test_diverse_centres_skip_near_copies_of_a_picked_environment() -> None:
    # atoms 0 and 1 are the most uncertain and share an environment; atom 2 differs
    delta = np.array([1.0, 0.99, 0.9, 0.2, 0.1, 0.05])
    features = np.array([[0.0, 0.0], [0.01, 0.0], [3.0, 1.0], [0.0, 0.02], [1.0, 1.0], [2.0, 0.0]])
    assert decision.choose_centres(delta, set(), 2) == (0, 1)
    assert decision.choose_centres(delta, set(), 2, "diverse", features) == (0, 2)
    # chunked atoms are never offered again; the pool is the 3k most uncertain
    assert decision.choose_centres(delta, {0}, 1, "diverse", features) == (1,)
    picked = decision.choose_centres(delta, set(), 2, "diverse", features)
    assert len(set(picked)) == 2 and set(picked) <= set(range(6))
    with pytest.raises(ValueError, match="descriptors of every target atom"):
        decision.choose_centres(delta, set(), 2, "diverse", None)
    with pytest.raises(ValueError, match="not one of"):
        decision.choose_centres(delta, set(), 2, "random")


def test_calibration_covers_the_stated_fraction_and_predicts_the_next_points() -> None:
    from nft_fw.potential import calibration

    rng = np.random.default_rng(0)
    deltas = rng.uniform(0.1, 1.0, 400)
    errors = 0.3 * deltas * np.abs(rng.standard_normal(400))  # δ 3-4x too large, as seen
    scale = calibration.fit(errors[:200], deltas[:200], 0.9)
    assert scale is not None and 0.3 < scale < 0.8
    assert calibration.within(errors[:200], deltas[:200], scale) >= 0.9
    assert calibration.within(errors[:200], deltas[:200]) > 0.99  # raw δ: nearly everything
    assert 0.8 < calibration.within(errors[200:], deltas[200:], scale) < 0.97  # unseen
    assert calibration.fit(errors[:9], deltas[:9], 0.9) is None  # too few points
    with pytest.raises(ValueError, match="coverage"):
        calibration.fit(errors, deltas, 1.0)
    first = {"oos_errors": list(errors[:26]), "oos_deltas": list(deltas[:26])}
    out1 = calibration.figures([{"iteration": 0}], first, 0.9)
    assert out1["calibration_n"] == 26 and "oos_fraction_within_calibrated" not in out1
    second = {"oos_errors": list(errors[26:52]), "oos_deltas": list(deltas[26:52])}
    out2 = calibration.figures([{"iteration": 0}, {**first, **out1}], second, 0.9)
    assert out2["calibration_n"] == 52
    assert out2["oos_fraction_within_calibrated"] == calibration.within(
        errors[26:52], deltas[26:52], out1["calibration_scale"]
    )
    # fitted on the latest WINDOW iterations only
    recs = [
        {"oos_errors": list(errors[i : i + 26]), "oos_deltas": list(deltas[i : i + 26])}
        for i in range(0, 130, 26)
    ]
    out5 = calibration.figures(recs[:-1], recs[-1], 0.9)
    assert out5["calibration_n"] == 26 * calibration.WINDOW
    assert out5["calibration_scale"] == calibration.fit(
        errors[130 - 26 * calibration.WINDOW : 130],
        deltas[130 - 26 * calibration.WINDOW : 130],
        0.9,
    )


def test_calculator_carries_the_calibration(tmp_path) -> None:
    from nft_fw.potential.calibration import Calibration

    ens, _ = _tiny_training(0)
    plain = EnsembleCalculator(ens)
    atoms = bulk("Pt", "fcc", a=3.92, cubic=True).repeat(2)
    atoms.rattle(0.05, seed=1)
    atoms.calc = plain
    with pytest.raises(ValueError, match="no calibration"):
        plain.get_calibrated_uncertainties(atoms)
    ens.meta["calibration"] = Calibration(0.4, 0.95, 52, "test").to_dict()
    calc = EnsembleCalculator(ens)
    atoms.calc = calc
    np.testing.assert_allclose(
        calc.get_calibrated_uncertainties(atoms), 0.4 * calc.get_uncertainties(atoms)
    )
    calc.save(tmp_path / "m")
    loaded = EnsembleCalculator.load(tmp_path / "m")
    assert loaded.calibration == Calibration(0.4, 0.95, 52, "test")


def test_out_of_sample_figures_use_the_previous_forces_at_the_centres() -> None:
    from nft_fw.steps.step import out_of_sample

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


def test_threshold_applies_to_the_calibrated_delta_when_asked() -> None:
    from nft_fw.spec.campaign import CampaignSpec
    from nft_fw.steps.kept import kept_iteration
    from nft_fw.steps.step import threshold_values

    base = {
        "name": "t",
        "target": {"builder": {"kind": "octahedron", "element": "Pt", "length": 3}},
        "parent": {"name": "emt"},
    }
    history = [
        {"structure_uncertainty": 0.5, "mean_uncertainty": 0.2},
        {"structure_uncertainty": 0.3, "mean_uncertainty": 0.12},
        {
            "structure_uncertainty": 0.2,
            "mean_uncertainty": 0.125,
            "calibration_scale": 0.4,
            "calibrated_structure_uncertainty": 0.08,
        },
    ]
    raw = CampaignSpec.model_validate(base)
    assert threshold_values(history, raw) == [0.5, 0.3, 0.2]
    cal = CampaignSpec.model_validate({**base, "nft": {"threshold_on": "calibrated_delta"}})
    assert threshold_values(history, cal) == [0.5, 0.3, 0.08]
    # kept: the latest within 5 % of the lowest mean δ (0.125 ≤ 0.12·1.05)
    assert kept_iteration(history, raw) == 2
    by_max = CampaignSpec.model_validate({**base, "nft": {"progress_measure": "max_delta"}})
    assert kept_iteration(history, by_max) == 2
    strict = CampaignSpec.model_validate({**base, "nft": {"best_tolerance": 0.0}})
    assert kept_iteration(history, strict) == 1
