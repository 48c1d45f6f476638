"""A physical baseline under the networks (``model.baseline``, Δ-learning)."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
from ase.calculators.emt import EMT
from ase.calculators.lj import LennardJones
from ase.cluster import Octahedron
from specs import TEST_ZETAS

from nft_fw.parents.parent import Parent, get_parent, register_parent
from nft_fw.potential import baseline as bl
from nft_fw.potential import model as mdl
from nft_fw.potential.calculator import EnsembleCalculator
from nft_fw.spec.campaign import CampaignError, load_campaign, prepare
from nft_fw.structures.chunks import cut


def _campaign(**model: object) -> dict[str, object]:
    return {
        "name": "baseline",
        "target": {
            "builder": {"kind": "octahedron", "element": "Pt", "length": 4, "cutoff": 1},
            "rattle": {"stdev": 0.1, "seed": 0},
        },
        "parent": {"name": "emt"},
        "initial": {"generator": "bulk", "n_structures": 4, "n_candidates": 8},
        "model": {
            "cutoff": 4.0,
            "hidden_layers": [8],
            "ensemble_size": 3,
            "n_radial": 6,
            "angular_zetas": TEST_ZETAS,
            **model,
        },
        "training": {"initial_steps": 300, "steps_per_iteration": 100},
        "nft": {"chunks_per_iteration": 3, "max_iterations": 1, "threshold": 0.01},
        "validation": {"true_forces": True},
    }


@pytest.fixture(scope="module")
def campaigns():
    """The same small EMT campaign with and without EMT under its networks."""
    from nft_fw import run_locally

    return {b: run_locally(_campaign(baseline=b), progress=False) for b in ("none", "emt")}


def test_over_its_own_parent_the_networks_learn_the_rest_and_the_model_is_the_parent(campaigns):
    """With the parent as baseline every label the networks see is zero (the chunks' central
    forces and the images' energies and forces less EMT's on the same atoms), and the model
    is EMT plus what the networks still output: closer to the parent on the target than the
    bare networks trained on the same labels, by a wide margin."""
    from nft_fw.steps.step import chunk_features, residual_images

    bare, delta = campaigns["none"], campaigns["emt"]
    assert [len(r.labels) for r in (bare, delta)] == [3, 3]
    spec = delta.calculator.ensemble.spec
    residual = chunk_features(delta.labels, spec, "emt")
    assert max(np.abs(f.force).max() for f in residual) < 1e-9
    assert min(np.abs(f.force).max() for f in chunk_features(delta.labels, spec)) > 0.1
    for im in residual_images(delta.images, "emt"):
        assert abs(im.energy) < 1e-9 and np.abs(im.forces).max() < 1e-9
    bare_mae = bare.history[-1]["true_force_mae"]
    delta_mae = delta.history[-1]["true_force_mae"]
    assert delta_mae < 0.5 * bare_mae, (delta_mae, bare_mae)
    atoms = delta.prepared.target.copy()
    atoms.calc = delta.calculator
    forces = atoms.get_forces()
    reference = atoms.copy()
    reference.calc = EMT()
    error = np.linalg.norm(forces - reference.get_forces(), axis=1).mean()
    assert error == pytest.approx(delta_mae, rel=1e-4)  # the record scores model + baseline
    # δ is the networks' spread alone: the baseline is the same for every member
    ens = delta.calculator.ensemble
    bare_part = dataclasses.replace(ens, baseline="none").evaluate(atoms)
    full = ens.evaluate(atoms)
    np.testing.assert_array_equal(full.delta, bare_part.delta)
    e, f = bl.energy_forces("emt", atoms)
    np.testing.assert_allclose(full.forces, bare_part.forces + f, atol=1e-12)
    np.testing.assert_allclose(full.energies, bare_part.energies + e, atol=1e-9)


def test_a_model_with_a_baseline_is_saved_as_format_3_and_read_back(campaigns, tmp_path):
    calc = campaigns["emt"].calculator
    atoms = campaigns["emt"].prepared.target
    path = calc.save(tmp_path / "model")
    header = json.loads((path / "model.json").read_text())
    assert header["version"] == mdl.FORMAT_VERSION == 3
    assert header["baseline"] == {"name": "emt"}
    back = EnsembleCalculator.load(path)
    assert back.ensemble.baseline == "emt"
    a, b = atoms.copy(), atoms.copy()
    a.calc, b.calc = calc, back
    np.testing.assert_allclose(a.get_forces(), b.get_forces(), atol=1e-6)
    # a model without one stays format 2, which nft-fw 0.2-0.5 read
    plain = campaigns["none"].calculator.ensemble.header()
    assert plain["version"] == mdl.PLAIN_FORMAT_VERSION == 2 and "baseline" not in plain


@pytest.mark.parametrize(
    ("version", "baseline", "match"),
    [
        (3, None, "format 3 carries one of"),
        (2, {"name": "emt"}, "names baseline 'emt'"),
        (3, {"name": "lj"}, "names baseline 'lj'"),
        (4, {"name": "emt"}, "written by a newer nft-fw"),
    ],
)
def test_a_header_whose_baseline_and_format_disagree_is_refused(
    campaigns, version, baseline, match
):
    ens = campaigns["emt"].calculator.ensemble
    header = ens.header()
    header["version"] = version
    header.pop("baseline")
    if baseline is not None:
        header["baseline"] = baseline
    with pytest.raises(mdl.ModelFormatError, match=match):
        mdl.Ensemble.from_parts(header, ens.params_bytes())


def test_the_baseline_s_central_force_in_an_8_angstrom_chunk_is_the_whole_particle_s():
    """What makes chunk labels train the residual: EMT's force on a chunk's centre equals
    its force on that atom of the whole particle (measured 4e-5 eV/Å on Pt140)."""
    atoms = Octahedron("Pt", 6, 1, latticeconstant=3.92)
    atoms.positions += np.random.default_rng(0).normal(0, 0.05, atoms.positions.shape)
    _, whole = bl.energy_forces("emt", atoms)
    worst = max(
        np.linalg.norm(bl.energy_forces("emt", cut(atoms, c, 8.0).atoms)[1][0] - whole[c])
        for c in range(0, len(atoms), 9)
    )
    assert worst < 1e-3


def _lj_factory(params):
    emt = get_parent("emt")
    return dataclasses.replace(
        emt, name="lj-fe", params=params, make_calculator=LennardJones,
        supported_elements=frozenset({"Fe", "Pt"}), lattice_constant_fn=lambda el: 3.9,
    )  # fmt: skip


register_parent("lj-fe", _lj_factory)


def test_a_baseline_that_lacks_an_element_of_the_target_is_refused_naming_the_field():
    spec = _campaign(baseline="emt")
    spec["parent"] = {"name": "lj-fe"}
    spec["target"]["builder"]["element"] = "Fe"  # type: ignore[index]
    with pytest.raises(CampaignError) as err:
        prepare(load_campaign(spec))
    assert err.value.field == "model.baseline" and "Fe" in str(err.value)
    spec["model"]["baseline"] = "none"  # type: ignore[index]
    assert isinstance(prepare(load_campaign(spec)).parent, Parent)
    spec["model"]["baseline"] = "zbl"  # type: ignore[index]
    with pytest.raises(Exception, match="baseline"):
        load_campaign(spec)


def test_a_model_continues_only_with_its_own_baseline(campaigns):
    from nft_fw.steps.step import fit

    result = campaigns["none"]
    prepared = prepare(load_campaign(_campaign(baseline="emt")))
    with pytest.raises(ValueError, match="continues only with its own baseline"):
        fit(prepared, result.images, result.labels, result.calculator.ensemble, 1)


def test_the_kept_baseline_calculator_gives_what_a_fresh_one_gives():
    """The model keeps EMT and its neighbour list between calls (relaxation, MD); moved
    atoms, another structure and a changed cell must give what a fresh EMT gives."""
    atoms = Octahedron("Pt", 4, 1, latticeconstant=3.92)
    kept = bl.Evaluator("emt")
    rng = np.random.default_rng(1)
    for step in range(6):
        atoms.positions += rng.normal(0, 0.15, atoms.positions.shape)  # past EMT's skin
        if step == 3:
            atoms = atoms[:-1]
        if step == 4:
            atoms.cell = [30.0, 30.0, 30.0]
            atoms.pbc = True
        e, f = kept(atoms)
        e0, f0 = bl.energy_forces("emt", atoms)
        assert e == e0
        np.testing.assert_array_equal(f, f0)
    with pytest.raises(ValueError, match="no parameters for Fe"):
        kept(Octahedron("Fe", 3, 1, latticeconstant=2.9))
