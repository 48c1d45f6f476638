"""The shipped Pt140 GPAW label sets (bench/data) read with plain ASE: their numbers, no
re-computation."""

from __future__ import annotations

from pathlib import Path

import ase.io
import numpy as np

DATA = Path(__file__).resolve().parent.parent / "bench" / "data"
EXAMPLES = Path(__file__).resolve().parent.parent / "nft_fw" / "examples"


def test_the_whole_particle_reference_is_the_example_target_labelled_by_gpaw() -> None:
    from nft_fw.parents.parent import get_parent
    from nft_fw.spec.campaign import load_campaign
    from nft_fw.structures.particles import build_nanoparticle, rattle

    frames = ase.io.read(DATA / "pt140-gpaw-reference.extxyz", ":")
    (full,) = [f for f in frames if f.info["nft_kind"] == "full"]
    spec = load_campaign(EXAMPLES / "pt140-gpaw.yaml")
    b, r = spec.target.builder, spec.target.rattle
    assert b is not None and r is not None
    target = rattle(
        build_nanoparticle(b.kind, element=b.element, lattice_constant=b.lattice_constant,
                           **b.geometry()),
        r.stdev,
        r.seed,
    )  # fmt: skip
    assert len(full) == 140 and np.array_equal(full.positions, target.positions)
    # the same parent settings as the campaign (k-points apply to periodic cells only)
    ref_params = dict(full.info["nft_parent_params"])
    assert full.info["nft_parent"] == "gpaw" == spec.parent.name
    assert ref_params == {k: v for k, v in spec.parent.params.items() if k != "kpts"}
    ns_hash = get_parent("gpaw", ref_params).settings_hash
    assert full.info["nft_parent_hash"] == ns_hash
    forces = full.get_forces()
    assert forces.shape == (140, 3) and np.isfinite(forces).all()
    assert np.abs(forces.sum(axis=0)).max() < 0.5  # a free cluster: the forces nearly cancel
    # the nearsightedness of the parent: 8 Å chunks reproduce the whole particle's force on
    # their centre to ~0.05-0.07 eV/Å, 6 Å ones only to ~0.3 (docs/gpaw.md)
    deviation = {
        (f.info["nft_centre"], f.info["nft_radius_A"]): float(
            np.linalg.norm(f.get_forces()[0] - forces[f.info["nft_centre"]])
        )
        for f in frames
        if f.info["nft_kind"] == "chunk"
    }
    assert sorted(deviation) == [(c, r) for c in (0, 6) for r in (6.0, 7.0, 8.0)]
    assert max(deviation[0, 8.0], deviation[6, 8.0]) < 0.1
    assert min(deviation[0, 6.0], deviation[6, 6.0]) > 0.2


def test_the_continuation_takes_every_shipped_label_under_its_own_mixer() -> None:
    """pt140-gpaw-continue.yaml labels with GPAW's Pulay mixer where the shipped labels used
    the default one: the mixer is not in the settings hash, so each of them is its own."""
    from nft_fw.spec.campaign import load_campaign, prepare

    frames = ase.io.read(DATA / "pt140-gpaw-labels.extxyz", ":")
    assert {"mixer" in f.info["nft_parent_params"] for f in frames} == {False}
    prepared = prepare(load_campaign(EXAMPLES / "pt140-gpaw-continue.yaml"))
    assert prepared.parent.params["mixer"] == {"name": "pulay"}
    assert prepared.prior is not None
    assert sum(prepared.prior.counts().values()) == len(frames)
    assert {lb.parent_hash for lb in prepared.prior.labels.values()} == {
        prepared.parent.settings_hash
    }


def test_the_campaign_labels_are_the_example_campaigns() -> None:
    from nft_fw.parents.parent import get_parent
    from nft_fw.spec.campaign import load_campaign

    spec = load_campaign(EXAMPLES / "pt140-gpaw.yaml")
    frames = ase.io.read(DATA / "pt140-gpaw-labels.extxyz", ":")
    images = [f for f in frames if f.info["nft_kind"] == "image"]
    assert len(images) == spec.initial.n_structures == 8
    assert all(f.pbc.all() and f.arrays["nft_trained"].all() for f in images)
    hash_ = get_parent(spec.parent.name, spec.parent.params).settings_hash
    assert {f.info["nft_parent_hash"] for f in frames} == {hash_}
    assert {f.info["nft_campaign"] for f in frames} == {spec.name}
    chunks = [f for f in frames if f.info["nft_kind"] == "chunk"]
    # all of the first run's labels (its 6 iterations), then those of the campaigns continued
    # from the file: chunks_per_iteration chunks per iteration (the newest may be under way)
    numbers = sorted({int(f.info["nft_number"]) for f in chunks})
    assert numbers == list(range(1, len(numbers) + 1)) and len(numbers) >= 6
    per_iteration = [sum(f.info["nft_number"] == k for f in chunks) for k in numbers]
    k = spec.nft.chunks_per_iteration
    assert per_iteration[:-1] == [k] * (len(numbers) - 1) and 1 <= per_iteration[-1] <= k
    assert {f.info["nft_phase"] for f in chunks} == {"nft"}
    for f in chunks:  # centre first; only its force is trained on
        assert f.info["nft_radius_A"] == spec.nft.chunk_radius
        assert np.flatnonzero(f.arrays["nft_trained"]).tolist() == [0]
        assert np.linalg.norm(f.positions, axis=1).max() <= spec.nft.chunk_radius + 1e-9
    for f in frames:
        assert np.isfinite(f.get_forces()).all() and np.isfinite(f.get_potential_energy())


def test_the_second_reference_is_the_seed_1_particle_with_the_campaigns_parent() -> None:
    from nft_fw.parents.parent import get_parent
    from nft_fw.spec.campaign import load_any_campaign, load_campaign, prepare_nearsightedness

    frames = ase.io.read(DATA / "pt140-gpaw-reference-seed1.extxyz", ":")
    (full,) = [f for f in frames if f.info["nft_kind"] == "full"]
    example = EXAMPLES / "pt140-reference-seed1-gpaw.yaml"
    target = prepare_nearsightedness(load_any_campaign(example)).target  # type: ignore[arg-type]
    assert np.array_equal(full.positions, target.positions)
    seed0 = next(f for f in ase.io.read(DATA / "pt140-gpaw-reference.extxyz", ":")
                 if f.info["nft_kind"] == "full")  # fmt: skip
    # another rattle of the same particle: never the structure the campaign trains on
    assert np.array_equal(full.numbers, seed0.numbers)
    assert 0.01 < np.abs(full.positions - seed0.positions).max() < 0.5
    spec = load_campaign(EXAMPLES / "pt140-gpaw.yaml")
    campaign_hash = get_parent(spec.parent.name, spec.parent.params).settings_hash
    assert {f.info["nft_parent_hash"] for f in frames} == {campaign_hash}
    forces = full.get_forces()
    assert forces.shape == (140, 3) and np.abs(forces.sum(axis=0)).max() < 0.5
    for f in frames:
        if f.info["nft_kind"] == "chunk":  # 8 Å chunks: within ~0.1 eV/Å of the whole
            dev = np.linalg.norm(f.get_forces()[0] - forces[f.info["nft_centre"]])
            assert dev < 0.15


def test_the_shipped_model_loads_and_scores_as_documented() -> None:
    """bench/data/pt140-gpaw-model (the continued campaign's kept model, `nft-fw export`)
    loads with EnsembleCalculator.load and gives on both whole-particle references the
    true-force MAE that docs/gpaw.md states."""
    import re

    from nft_fw import EnsembleCalculator

    docs = (DATA.parent.parent / "docs" / "gpaw.md").read_text()
    m = re.search(
        r"`bench/data/pt140-gpaw-model`.*?true-force MAE \*\*(\d\.\d{3})\*\* on the seed-0\s+"
        r"particle and \*\*(\d\.\d{3})\*\* on the seed-1",
        docs,
        re.S,
    )
    assert m is not None, "docs/gpaw.md no longer states the shipped model's errors"
    calc = EnsembleCalculator.load(DATA / "pt140-gpaw-model")
    for file, documented in zip(
        ("pt140-gpaw-reference.extxyz", "pt140-gpaw-reference-seed1.extxyz"), m.groups(),
        strict=True,
    ):  # fmt: skip
        (full,) = [f for f in ase.io.read(DATA / file, ":") if f.info["nft_kind"] == "full"]
        atoms = full.copy()
        atoms.calc = calc
        mae = np.linalg.norm(atoms.get_forces() - full.get_forces(), axis=1).mean()
        assert f"{mae:.3f}" == documented, (file, mae)
