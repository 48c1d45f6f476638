"""Structure builders, rattling, reading and validation (no database, no model)."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from ase import Atoms
from ase.build import bulk
from ase.cluster import Octahedron

from nft_fw.structures.particles import (
    StructureError,
    build_nanoparticle,
    rattle,
    read_frames,
    read_structure,
    validate_atoms,
    vegard_lattice_constant,
)

PT = 3.92


def test_octahedron_8_3_has_260_atoms() -> None:
    atoms = build_nanoparticle("octahedron", element="Pt", length=8, cutoff=3, lattice_constant=PT)
    assert len(atoms) == 260
    assert set(atoms.get_chemical_symbols()) == {"Pt"}
    assert not atoms.pbc.any()


@pytest.mark.parametrize(("shells", "n_atoms"), [(1, 1), (2, 13), (5, 309), (6, 561)])
def test_icosahedron_magic_numbers(shells: int, n_atoms: int) -> None:
    # ASE counts the central atom as shell 1: 309 atoms are 5 shells.
    atoms = build_nanoparticle("icosahedron", element="Pt", shells=shells, lattice_constant=PT)
    assert len(atoms) == n_atoms


@pytest.mark.parametrize(("length", "n_atoms"), [(3, 13), (5, 55), (7, 147)])
def test_cuboctahedron_magic_numbers(length: int, n_atoms: int) -> None:
    atoms = build_nanoparticle("cuboctahedron", element="Pt", length=length, lattice_constant=PT)
    assert len(atoms) == n_atoms


def test_nearest_neighbour_distance_follows_lattice_constant() -> None:
    atoms = build_nanoparticle("decahedron", element="Au", p=3, q=2, r=1, lattice_constant=4.0)
    d = atoms.get_all_distances()
    np.fill_diagonal(d, np.inf)
    # Decahedra are slightly strained; the closest pair is within 3 % of a/√2.
    assert d.min() == pytest.approx(4.0 / np.sqrt(2), rel=0.03)


def test_alloy_counts_are_exact_and_seeded() -> None:
    kwargs = dict(length=8, cutoff=3, lattice_constant=PT)
    comp = {"Pt": 0.75, "Au": 0.25}
    a = build_nanoparticle("octahedron", composition=comp, seed=1, **kwargs)
    b = build_nanoparticle("octahedron", composition=comp, seed=1, **kwargs)
    c = build_nanoparticle("octahedron", composition=comp, seed=2, **kwargs)
    pure = build_nanoparticle("octahedron", element="Pt", **kwargs)
    assert Counter(a.get_chemical_symbols()) == {"Pt": 195, "Au": 65}
    assert a.get_chemical_symbols() == b.get_chemical_symbols()
    assert a.get_chemical_symbols() != c.get_chemical_symbols()
    np.testing.assert_allclose(a.positions, pure.positions)


def test_alloy_rounding_remainder_keeps_total() -> None:
    comp = {"Pt": 0.4, "Au": 0.3, "Cu": 0.3}
    atoms = build_nanoparticle("icosahedron", composition=comp, shells=3, lattice_constant=PT)
    counts = Counter(atoms.get_chemical_symbols())
    assert sum(counts.values()) == len(atoms) == 55
    for el, frac in comp.items():
        assert abs(counts[el] - frac * 55) <= 1


def test_vegard_is_composition_weighted() -> None:
    a = vegard_lattice_constant({"Pt": 0.25, "Au": 0.75}, {"Pt": 3.9, "Au": 4.1}.__getitem__)
    assert a == pytest.approx(0.25 * 3.9 + 0.75 * 4.1)


@pytest.mark.parametrize("kind", ["fcc111", "fcc100"])
def test_slab_is_periodic_in_plane_only(kind: str) -> None:
    atoms = build_nanoparticle(kind, element="Pt", size=[2, 2, 4], vacuum=7.0, lattice_constant=PT)
    assert len(atoms) == 16
    assert atoms.pbc.tolist() == [True, True, False]
    z = atoms.positions[:, 2]
    assert z.min() == pytest.approx(7.0)
    assert atoms.cell[2, 2] - z.max() == pytest.approx(7.0)


def test_bulk_vacancies_are_seeded() -> None:
    a = build_nanoparticle("bulk", element="Pt", repeat=[2, 2, 2], vacancies=3, seed=4)
    b = build_nanoparticle("bulk", element="Pt", repeat=[2, 2, 2], vacancies=3, seed=4)
    c = build_nanoparticle("bulk", element="Pt", repeat=[2, 2, 2], vacancies=3, seed=5)
    assert len(a) == 29
    assert a.pbc.all()
    np.testing.assert_allclose(a.positions, b.positions)
    assert not np.allclose(a.positions, c.positions)


@pytest.mark.parametrize(
    ("kind", "geometry", "field"),
    [
        ("octahedron", {}, "target.builder.length"),
        ("octahedron", {"length": 8, "cutoff": 4}, "target.builder.cutoff"),
        ("octahedron", {"length": 8, "shells": 2}, "target.builder.shells"),
        ("cuboctahedron", {"length": 4}, "target.builder.length"),
        ("icosahedron", {"shells": 0}, "target.builder.shells"),
        ("decahedron", {"p": 0, "q": 1, "r": 0}, "target.builder.p"),
        ("fcc111", {"size": [2, 2]}, "target.builder.size"),
        ("bulk", {"repeat": [1, 1, 1], "vacancies": 4}, "target.builder.vacancies"),
        ("sphere", {}, "target.builder.kind"),
    ],
)
def test_bad_geometry_names_the_parameter(kind: str, geometry: dict, field: str) -> None:
    with pytest.raises(StructureError) as info:
        build_nanoparticle(kind, element="Pt", lattice_constant=PT, **geometry)
    assert info.value.field == field
    assert str(info.value).startswith(field)


@pytest.mark.parametrize(
    ("species", "field"),
    [
        ({"element": "Xx"}, "target.builder.element"),
        ({}, "target.builder.element"),
        ({"element": "Pt", "composition": {"Pt": 1.0}}, "target.builder.element"),
        ({"composition": {"Pt": 0.5, "Au": 0.4}}, "target.builder.composition"),
        ({"composition": {"Pt": 1.0, "Au": 0.0}}, "target.builder.composition.Au"),
    ],
)
def test_bad_species_names_the_field(species: dict, field: str) -> None:
    with pytest.raises(StructureError) as info:
        build_nanoparticle("icosahedron", shells=2, lattice_constant=PT, **species)
    assert info.value.field == field


def test_rattle_is_seeded_and_has_the_requested_spread() -> None:
    atoms = build_nanoparticle("octahedron", element="Pt", length=8, cutoff=3, lattice_constant=PT)
    before = atoms.positions.copy()
    a = rattle(atoms, 0.1, seed=0)
    b = rattle(atoms, 0.1, seed=0)
    c = rattle(atoms, 0.1, seed=1)
    np.testing.assert_array_equal(atoms.positions, before)  # the input is not modified
    np.testing.assert_array_equal(a.positions, b.positions)
    assert not np.allclose(a.positions, c.positions)
    assert np.std(a.positions - before) == pytest.approx(0.1, rel=0.2)
    np.testing.assert_array_equal(rattle(atoms, 0.0, seed=3).positions, before)
    with pytest.raises(StructureError, match=r"^target\.rattle\.stdev"):
        rattle(atoms, -0.1, seed=0)


def test_read_structure_and_its_errors(tmp_path: Path) -> None:
    good = tmp_path / "two.xyz"
    Atoms("Pt2", positions=[[0, 0, 0], [2.8, 0, 0]]).write(good)
    Atoms("Au", positions=[[0, 0, 0]]).write(tmp_path / "one.xyz")
    assert read_structure(good).get_chemical_formula() == "Pt2"
    assert len(read_frames(good)) == 1

    with pytest.raises(StructureError, match=r"^target\.file: .*does not exist") as info:
        read_structure(tmp_path / "missing.xyz")
    assert "missing.xyz" in str(info.value)

    empty = tmp_path / "empty.xyz"
    empty.write_text("")
    with pytest.raises(StructureError, match=r"^target\.file: could not read") as info:
        read_structure(empty)
    assert "empty.xyz" in str(info.value)

    with pytest.raises(StructureError, match=r"^initial\.file"):
        read_frames(empty, field="initial.file")


def test_validate_atoms_accepts_a_good_particle() -> None:
    atoms = build_nanoparticle("icosahedron", element="Pt", shells=3, lattice_constant=PT)
    validate_atoms(atoms, "target", allowed_elements={"Pt"})


def test_validate_atoms_rejects_non_finite_positions() -> None:
    atoms = Atoms("Pt3", positions=[[0, 0, 0], [2.8, 0, 0], [np.nan, 0, 0]])
    with pytest.raises(StructureError, match=r"^target: atom 2 has a non-finite position"):
        validate_atoms(atoms, "target")


def test_validate_atoms_rejects_close_pairs_including_periodic_images() -> None:
    close = Atoms("Pt2", positions=[[0, 0, 0], [0.3, 0, 0]])
    with pytest.raises(StructureError, match=r"atoms 0 and 1 are 0\.300 Å apart"):
        validate_atoms(close, "target")
    # 0.2 Å apart only through the periodic boundary of a 10 Å cell.
    across = Atoms("Pt2", positions=[[0.1, 5, 5], [9.9, 5, 5]], cell=[10, 10, 10])
    validate_atoms(across, "target")
    across.pbc = True
    with pytest.raises(StructureError, match=r"0\.200 Å apart"):
        validate_atoms(across, "target")


def test_validate_atoms_rejects_unsupported_elements_and_empty() -> None:
    atoms = Atoms("PtFe", positions=[[0, 0, 0], [2.5, 0, 0]])
    with pytest.raises(StructureError, match=r"holds Fe.*supported: Cu, Pt"):
        validate_atoms(atoms, "target", allowed_elements={"Pt", "Cu"})
    with pytest.raises(StructureError, match=r"^target: the structure holds no atoms"):
        validate_atoms(Atoms(), "target")


def test_extxyz_written_by_nft_fw_reads_back_exactly_with_plain_ase() -> None:
    import io

    import ase.io
    from ase.calculators.singlepoint import SinglePointCalculator

    from nft_fw.structures import atoms_io

    rng = np.random.default_rng(7)
    cluster = Octahedron("Pt", 4, 1)
    cluster.positions += rng.normal(0.0, 0.1, cluster.positions.shape)
    forces = rng.normal(0.0, 1.0, (len(cluster), 3))
    cluster.calc = SinglePointCalculator(cluster, energy=-12.345678901234567, forces=forces)
    cluster.info.update(kind="chunk", centre=3, radius_A=8.0)
    cluster.arrays["trained"] = np.arange(len(cluster)) == 0
    cell = bulk("Pt", cubic=True) * (2, 1, 1)
    cell.positions += rng.normal(0.0, 0.05, cell.positions.shape)
    cell.set_initial_magnetic_moments(rng.random(len(cell)))
    text = atoms_io.extxyz_text([cluster, cell])
    back = ase.io.read(io.StringIO(text), ":", format="extxyz")
    assert np.array_equal(back[0].positions, cluster.positions)
    assert np.array_equal(back[0].get_forces(), forces)
    assert back[0].get_potential_energy() == -12.345678901234567
    assert back[0].info["kind"] == "chunk" and back[0].info["radius_A"] == 8.0
    assert back[0].arrays["trained"].tolist() == cluster.arrays["trained"].tolist()
    assert np.array_equal(back[1].positions, cell.positions)
    assert np.array_equal(back[1].cell.array, cell.cell.array) and back[1].pbc.all()
    assert np.array_equal(
        back[1].get_initial_magnetic_moments(), cell.get_initial_magnetic_moments()
    )
    # ASE's own writer rounds the same positions: what the exact writer is for
    buf = io.StringIO()
    ase.io.write(buf, cluster, format="extxyz")
    rounded = ase.io.read(io.StringIO(buf.getvalue()), format="extxyz")
    assert not np.array_equal(rounded.positions, cluster.positions)


def test_atoms_document_round_trips_through_json_exactly() -> None:
    import json

    from nft_fw.structures import atoms_io

    atoms = bulk("Pt", cubic=True)
    atoms.rattle(0.1, seed=2)
    atoms.set_initial_magnetic_moments([0.5, 0.1, 0.2, 0.3])
    back = atoms_io.from_doc(json.loads(json.dumps(atoms_io.to_doc(atoms))))
    assert back == atoms  # numbers, positions, cell, pbc
    assert np.array_equal(back.get_initial_magnetic_moments(), atoms.get_initial_magnetic_moments())
    # a chunk document of nft-fw ≤ 0.3 has no cell or pbc: a cluster in vacuum
    old = {"numbers": [78, 78], "positions": [[0.0, 0.0, 0.0], [2.7, 0.0, 0.0]], "energy": 1.0}
    chunk = atoms_io.from_doc(old)
    assert not chunk.pbc.any() and not chunk.cell.any() and len(chunk) == 2


def test_label_frames_mark_the_trained_atoms_and_refuse_unknown_kinds(tmp_path: Path) -> None:
    from nft_fw.labels import files as labelset

    chunk = Octahedron("Pt", 3, 1)
    forces = np.random.default_rng(0).normal(size=(len(chunk), 3))
    common = dict(
        forces=forces, energy=-3.5, campaign="c", parent="emt", parent_params={},
        parent_hash="p", label_hash="h",
    )  # fmt: skip
    frames = [
        labelset.frame(chunk, kind="chunk", phase="relax", number=2, centre=5, radius_A=8.0,
                       **common),
        labelset.frame(bulk("Pt", cubic=True), kind="image", phase="initial", number=0,
                       **{**common, "forces": np.zeros((4, 3))}),
        labelset.frame(chunk, kind="full", phase="validation", number=0,
                       **{**common, "energy": None}),
    ]  # fmt: skip
    labelset.write(tmp_path / "l.extxyz", frames)
    back = labelset.read(tmp_path / "l.extxyz")
    assert [np.flatnonzero(f.arrays["nft_trained"]).tolist() for f in back] == [
        [0], [0, 1, 2, 3], []
    ]  # fmt: skip
    assert back[0].info["nft_phase"] == "relax" and back[0].info["nft_number"] == 2
    assert back[0].info["nft_centre"] == 5 and np.array_equal(back[0].get_forces(), forces)
    assert "energy" not in back[2].calc.results  # a validation label has forces only
    with pytest.raises(ValueError, match="label phase 'md-ish'"):
        labelset.frame(chunk, kind="chunk", phase="md-ish", number=0, **common)
