"""The prediction engine: same physics as before where the descriptors did not change, the
factorised angular functions against their triple-sum definition, neighbour lists with a
skin, and bad input refused by name (no database)."""

from __future__ import annotations

import itertools
import json

import flax.serialization
import jax
import numpy as np
import pytest
from ase import Atoms
from ase.build import bulk
from ase.cluster import Octahedron
from numpy.polynomial import legendre

from nft_fw.potential import descriptors as desc
from nft_fw.potential import model as mdl
from nft_fw.potential import neighbours as nbl
from nft_fw.potential.calculator import EnsembleCalculator

DATA = __import__("pathlib").Path(__file__).parent / "data"


@pytest.fixture
def x64():
    jax.config.update("jax_enable_x64", True)
    yield
    jax.config.update("jax_enable_x64", False)


def _cluster(elements=("Pt", "Au"), seed=3):
    atoms = Octahedron("Pt", 4, 1, latticeconstant=3.92)
    atoms.positions += np.random.default_rng(seed).normal(0, 0.08, atoms.positions.shape)
    if "Au" in elements:
        atoms.symbols[[0, 5, 9, 17, 30]] = "Au"
    return atoms


def _ensemble(spec, seed=1, members=4):
    arch = mdl.Architecture((16, 16), members)
    params = mdl.init_params(arch, spec.elements, spec.n_features, jax.random.PRNGKey(seed))
    mean, std = mdl.normalisation([desc.features(_cluster(spec.elements), spec)])
    return mdl.Ensemble(spec, arch, params, mean, std, np.linspace(-0.3, 0.1, len(spec.elements)))


def test_radial_predictions_match_nft_fw_0_1():
    """The G2 functions did not change: an ensemble on G2 alone predicts what nft-fw 0.1
    (commit e1c1f4d) predicted with the same parameters, to float32 round-off. The reference
    energies, forces and descriptors were written by that version's Ensemble.predict."""
    ref = np.load(DATA / "g2_reference_nft_fw_0.1.npz")
    atoms = Atoms(numbers=ref["numbers"], positions=ref["positions"])
    spec = desc.DescriptorSpec(
        ("Au", "Pt"), float(ref["cutoff"]), tuple(map(tuple, ref["g2"].tolist())), ()
    )
    arch = mdl.Architecture(tuple(int(h) for h in ref["hidden"]), int(ref["members"]))
    template = mdl.init_params(arch, spec.elements, spec.n_features, jax.random.PRNGKey(0))
    params = flax.serialization.from_bytes(template, ref["params"].tobytes())
    ens = mdl.Ensemble(spec, arch, params, ref["mean"], ref["std"], ref["e_ref"])
    np.testing.assert_allclose(desc.features(atoms, spec), ref["features"], rtol=2e-6, atol=2e-6)
    energies, forces = ens.predict(atoms)
    np.testing.assert_allclose(energies, ref["energies"], rtol=2e-6, atol=1e-5)
    np.testing.assert_allclose(
        forces, ref["forces"], rtol=0, atol=2e-5 * np.abs(ref["forces"]).max()
    )


def _g5_by_triple_sum(atoms, spec):
    """Behler's G5 straight from its definition: O(neighbours²) per atom, float64."""
    species = desc.species_indices(atoms, spec.elements)
    table = nbl.build(atoms, spec.cutoff)
    disp = table.displacements()
    out = np.zeros((len(atoms), len(spec.element_pairs), len(spec.g5)))
    for i in range(len(atoms)):
        d = disp[i][table.mask[i]]
        z = species[table.index[i][table.mask[i]]]
        r = np.linalg.norm(d, axis=1)
        fc = 0.5 * (np.cos(np.pi * r / spec.cutoff) + 1.0)
        for j, k in itertools.permutations(range(len(d)), 2):
            cos = d[j] @ d[k] / (r[j] * r[k])
            p = spec.element_pairs.index(tuple(sorted((z[j], z[k]))))
            for g, (eta, zeta, lam) in enumerate(spec.g5):
                w = np.exp(-eta * (r[j] ** 2 + r[k] ** 2)) * fc[j] * fc[k]
                out[i, p, g] += 2.0 ** (1 - zeta) * (1 + lam * cos) ** zeta * w
    return out.reshape(len(atoms), -1)


def test_factorised_angular_functions_equal_the_triple_sum(x64):
    spec = desc.DescriptorSpec.default(["Au", "Pt"], cutoff=4.5, n_radial=4, g5_zeta=(1, 3, 8))
    atoms = _cluster()
    g = desc.features(atoms, spec)
    np.testing.assert_allclose(
        g[:, spec.n_g2_features :], _g5_by_triple_sum(atoms, spec), rtol=1e-10, atol=1e-10
    )


def test_harmonics_obey_the_addition_theorem():
    from nft_fw.potential import harmonics

    rng = np.random.default_rng(0)
    u, v = (x / np.linalg.norm(x, axis=1, keepdims=True) for x in rng.normal(size=(2, 20, 3)))
    yu, yv = harmonics.solid(*u.T, 10), harmonics.solid(*v.T, 10)
    for deg in range(11):
        lhs = sum(a * b for a, b in zip(yu[deg], yv[deg], strict=True))
        rhs = legendre.legval(np.sum(u * v, axis=1), [0] * deg + [1])
        np.testing.assert_allclose(lhs, rhs, atol=1e-12)


def test_periodic_and_cluster_forces_equal_finite_differences(x64):
    spec = desc.DescriptorSpec.default(["Pt"], cutoff=4.8, n_radial=6)
    cell = bulk("Pt", "fcc", a=3.92, cubic=True)
    cell.positions += np.random.default_rng(0).normal(0, 0.1, cell.positions.shape)
    for atoms in (cell, _cluster(("Pt",))):
        ens = _ensemble(spec)
        _, forces = ens.predict(atoms)
        h = 1e-5
        for a, x in ((0, 0), (2, 1), (len(atoms) - 1, 2)):
            plus, minus = atoms.copy(), atoms.copy()
            plus.positions[a, x] += h
            minus.positions[a, x] -= h
            fd = -(ens.predict(plus)[0] - ens.predict(minus)[0]) / (2 * h)
            np.testing.assert_allclose(forces[:, a, x], fd, rtol=1e-6, atol=1e-8)


def test_results_do_not_depend_on_block_layout():
    """Blocks of atoms, their padding and the scan are bookkeeping: the same structure in a
    different atom order gives the same (permuted) answer."""
    spec = desc.DescriptorSpec.default(["Au", "Pt"], cutoff=5.0, n_radial=8)
    ens = _ensemble(spec)
    big = Octahedron("Pt", 7, 2, latticeconstant=3.92)  # 231 atoms: several blocks
    big.positions += np.random.default_rng(1).normal(0, 0.05, big.positions.shape)
    big.symbols[::7] = "Au"
    perm = np.random.default_rng(2).permutation(len(big))
    e0, f0 = ens.predict(big)
    e1, f1 = ens.predict(big[perm])
    np.testing.assert_allclose(e1, e0, rtol=1e-5)
    np.testing.assert_allclose(f1, f0[:, perm], atol=2e-4)


def test_skin_keeps_results_and_rebuilds_only_when_atoms_move_far():
    spec = desc.DescriptorSpec.default(["Au", "Pt"], cutoff=4.5, n_radial=6)
    ens = _ensemble(spec)
    atoms = _cluster()
    skinned, fresh = EnsembleCalculator(ens, skin=1.0), EnsembleCalculator(ens, skin=0.0)
    rng = np.random.default_rng(5)
    centre = atoms.positions.mean(axis=0)
    for step in range(8):
        if step == 5:  # squeeze the particle: more neighbours within R_c, no rebuild
            atoms.positions = centre + 0.93 * (atoms.positions - centre)
        else:
            atoms.positions += rng.normal(0, 0.02, atoms.positions.shape)
        a, b = atoms.copy(), atoms.copy()
        a.calc, b.calc = skinned, fresh
        np.testing.assert_allclose(a.get_forces(), b.get_forces(), atol=5e-5)
        assert a.get_potential_energy() == pytest.approx(b.get_potential_energy(), abs=1e-4)
        np.testing.assert_allclose(
            skinned.get_uncertainties(a), fresh.get_uncertainties(b), atol=5e-5
        )
    assert skinned.rebuilds == 1 and fresh.rebuilds == 8
    atoms.positions[3] += 0.6  # farther than skin / 2: rebuilt
    a = atoms.copy()
    a.calc = skinned
    a.get_forces()
    assert skinned.rebuilds == 2


def test_bad_structures_are_refused_by_name():
    spec = desc.DescriptorSpec.default(["Pt"], cutoff=4.5, n_radial=6)
    ens = _ensemble(spec)
    alloy = _cluster()
    with pytest.raises(ValueError, match=r"element 'Au'.*knows only \['Pt'\]"):
        ens.predict(alloy)
    atoms = _cluster(("Pt",))
    bad = atoms.copy()
    bad.positions[7, 1] = np.nan
    with pytest.raises(ValueError, match=r"atom 7 has a non-finite position"):
        ens.predict(bad)
    close = atoms.copy()
    close.positions[4] = close.positions[9] + [0.1, 0.0, 0.0]
    with pytest.raises(ValueError, match=r"atoms (4 and 9|9 and 4) are 0\.100 Å apart"):
        ens.predict(close)
    # within a skin's lifetime: the table is reused, the device-side check still names them
    calc = EnsembleCalculator(ens, skin=2.0)
    moving = atoms.copy()
    moving.calc = calc
    moving.get_forces()
    moving.positions[4] = moving.positions[9] + [0.3, 0.0, 0.0]
    with pytest.raises(ValueError, match=r"atoms (4 and 9|9 and 4) are 0\.300 Å apart"):
        moving.get_forces()
    assert calc.rebuilds == 1


def test_models_of_the_old_format_are_refused_with_the_fix():
    spec = desc.DescriptorSpec.default(["Pt"], cutoff=4.5, n_radial=6)
    header = _ensemble(spec).header()
    old = {**header, "version": 1, "descriptor": {**header["descriptor"], "g4": [[0.005, 1, 1]]}}
    blob = json.dumps(old).encode() + b"\n"
    with pytest.raises(mdl.ModelFormatError, match=r"format 1 .*Retrain: run its campaign again"):
        mdl.Ensemble.from_bytes(blob)
    with pytest.raises(desc.DescriptorFormatError, match="G4 angular functions"):
        desc.DescriptorSpec.from_dict(old["descriptor"] | {"kind": None})


def test_scale_floor_lifts_features_that_hardly_vary_within_their_family():
    """model.scale_floor: each feature's scale is at least the floor times the largest
    deviation of its family (radial per neighbour element, angular per element pair), so a
    radial function between two neighbour shells of a crystal, nearly constant in the data,
    no longer puts a new structure hundreds of deviations out; without the floor the scale
    is the feature's own deviation, as before."""
    spec = desc.DescriptorSpec.default(("Au", "Pt"), cutoff=4.0)
    n2, n5 = len(spec.g2), len(spec.g5)
    assert [(f.start, f.stop) for f in spec.families] == [
        (0, n2), (n2, 2 * n2), (2 * n2, 2 * n2 + n5), (2 * n2 + n5, 2 * n2 + 2 * n5),
        (2 * n2 + 2 * n5, 2 * n2 + 3 * n5),
    ]  # fmt: skip
    assert spec.families[-1].stop == spec.n_features
    crystal = bulk("Pt", "fcc", a=3.92, cubic=True).repeat(2)
    crystal.positions += np.random.default_rng(0).normal(0, 0.02, crystal.positions.shape)
    feats = [desc.features(crystal, spec)]
    mean, own = mdl.normalisation(feats)
    _, floored = mdl.normalisation(feats, 0.1, spec.families)
    std = np.concatenate(feats).astype(np.float64).std(axis=0)
    pt = spec.families[1]  # the radial functions of Pt neighbours
    top = std[pt].max()
    np.testing.assert_allclose(floored[pt], np.maximum(std[pt], 0.1 * top), rtol=1e-6)
    assert (std[pt] < 0.1 * top).sum() >= 6  # between and below the shells: lifted
    varying = std[pt] >= 0.1 * top
    np.testing.assert_allclose(floored[pt][varying], own[pt][varying], rtol=1e-6)
    # no Au in the data: its families never vary and keep a unit scale, as without a floor
    for family in spec.families[0], spec.families[2], spec.families[3]:
        np.testing.assert_array_equal(floored[family], 1.0)
    # a second-shell neighbour moved 0.45 Å inwards, into the gap between the shells
    moved = crystal.copy()
    j = int(np.argmin(np.abs(moved.get_distances(0, range(len(moved)), mic=True) - 3.92)))
    v = moved.get_distance(0, j, mic=True, vector=True)
    moved.positions[j] -= 0.45 * v / np.linalg.norm(v)
    g = desc.features(moved, spec)[:, pt]
    far, near = np.abs((g - mean[pt]) / own[pt]).max(), np.abs((g - mean[pt]) / floored[pt]).max()
    assert far > 500 and near < far / 5, (far, near)
    with pytest.raises(ValueError, match="scale_floor"):
        mdl.normalisation(feats, 1.5, spec.families)


def test_a_campaigns_scale_floor_is_in_its_saved_model(tmp_path):
    """model.scale_floor reaches the campaign's models (their stored scales obey it per
    family) and travels with a saved model; without it the scales are the old rule's."""
    from specs import tiny

    from nft_fw.runners.local import run_locally
    from nft_fw.spec.campaign import load_campaign

    spec = tiny("floor")
    spec["model"] = {**spec["model"], "scale_floor": 0.2}
    result = run_locally(load_campaign(spec), progress=False, save_to=tmp_path / "model")
    ensemble = result.calculator.ensemble
    feats = desc.features_many([im.atoms for im in result.images] + [result.prepared.target],
                               ensemble.spec)  # fmt: skip
    std = np.concatenate(feats).astype(np.float64).std(axis=0)
    for family in ensemble.spec.families:
        np.testing.assert_allclose(
            ensemble.std[family], np.maximum(std[family], 0.2 * std[family].max()), rtol=1e-6
        )
    assert (ensemble.std > std * (1 + 1e-6)).any()  # some features were lifted
    saved = EnsembleCalculator.load(tmp_path / "model").ensemble
    np.testing.assert_array_equal(saved.std, ensemble.std)
