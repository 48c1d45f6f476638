"""Campaign file loading and preparation, and the parent registry (no database)."""

from __future__ import annotations

import logging
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, get_args

import ase.io
import numpy as np
import pytest
import yaml
from ase import Atoms
from ase.build import bulk
from ase.calculators.emt import EMT

from nft_fw.parents.parent import Parent, ParentError, get_parent, register_parent
from nft_fw.spec.campaign import (
    BuilderSpec,
    CampaignError,
    CampaignSpec,
    example_campaign,
    load_campaign,
    prepare,
)
from nft_fw.structures.particles import KINDS, build_nanoparticle

# --- the parent registry -----------------------------------------------------------------------


def test_emt_optimal_lattice_constant_for_pt() -> None:
    assert get_parent("emt").optimal_lattice_constant("Pt") == pytest.approx(3.92, abs=0.01)


def test_emt_force_locality_is_twice_its_neighbour_cutoff() -> None:
    # EMT's neighbour-list cutoff (asap_cutoff false) is rc + 0.5 ≈ 5.877 Å.
    assert get_parent("emt").force_locality_A == pytest.approx(2 * 5.877, abs=0.01)


def test_label_matches_emt_single_point() -> None:
    atoms = bulk("Cu", "fcc", a=3.6).repeat(2)
    atoms.rattle(0.05, seed=1)
    energy, forces = get_parent("emt").label(atoms)
    atoms.calc = EMT()
    assert energy == pytest.approx(atoms.get_potential_energy())
    np.testing.assert_allclose(forces, atoms.get_forces())
    assert forces.shape == (8, 3)


def test_settings_hash_is_stable_across_processes_and_sensitive_to_params() -> None:
    here = get_parent("emt", {"asap_cutoff": True}).settings_hash
    code = (
        "from nft_fw.parents.parent import get_parent;"
        "print(get_parent('emt', {'asap_cutoff': True}).settings_hash)"
    )
    there = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout.strip()
    assert here == there
    assert len(here) == 64
    assert get_parent("emt").settings_hash != here
    assert get_parent("emt", {"asap_cutoff": False}).settings_hash != here
    a = get_parent("gpaw", {"mode": "lcao", "xc": "PBE"}).settings_hash
    assert a == get_parent("gpaw", {"xc": "PBE", "mode": "lcao"}).settings_hash


def test_gpaw_parent_uses_reference_lattice_constant_and_dft_locality() -> None:
    gpaw = get_parent("gpaw", {"mode": "lcao"})
    assert gpaw.optimal_lattice_constant("Pt") == pytest.approx(3.92)
    assert gpaw.force_locality_A == pytest.approx(8.0)
    assert {"Pt", "Au", "Fe"} <= gpaw.supported_elements
    with pytest.raises(ParentError, match="Fe is 'bcc', not fcc"):
        gpaw.optimal_lattice_constant("Fe")


@pytest.mark.parametrize(
    ("name", "params", "field"),
    [
        ("emt", {"foo": 1}, "parent.params.foo"),
        ("emt", {"asap_cutoff": "yes"}, "parent.params.asap_cutoff"),
        ("gpaw", {"h": float("nan")}, "parent.params"),
        ("nope", {}, "parent.name"),
    ],
)
def test_bad_parent_names_the_field(name: str, params: dict, field: str) -> None:
    with pytest.raises(ParentError) as info:
        get_parent(name, params)
    assert info.value.field == field


def test_registered_factory_is_used_and_checked() -> None:
    emt = get_parent("emt")

    def factory(params: dict[str, Any]) -> Parent:
        if params:
            raise ValueError("takes no parameters")
        return Parent(
            name="emt-copy",
            params=params,
            make_calculator=EMT,
            supported_elements=frozenset({"Cu"}),
            force_locality_A=emt.force_locality_A,
            lattice_constant_fn=emt.optimal_lattice_constant,
        )

    register_parent("emt-copy", factory)
    register_parent("broken", lambda params: "not a parent")  # type: ignore[arg-type,return-value]
    assert get_parent("emt-copy").supported_elements == {"Cu"}
    with pytest.raises(ParentError, match=r"^parent\.params: rejected .*takes no parameters"):
        get_parent("emt-copy", {"x": 1})
    with pytest.raises(ParentError, match=r"^parent\.name: the factory of 'broken' returned str"):
        get_parent("broken")


# --- loading -----------------------------------------------------------------------------------


def _with(change: Callable[[dict], None]) -> dict:
    spec = example_campaign()
    change(spec)
    return spec


def test_example_loads_and_prepares_to_260_atoms(caplog: pytest.LogCaptureFixture) -> None:
    spec = load_campaign(example_campaign())
    with caplog.at_level(logging.WARNING):
        prepared = prepare(spec)
    assert load_campaign(yaml.safe_load(spec.to_yaml())) == spec
    assert len(prepared.target) == 260
    assert prepared.elements == ("Pt",)
    assert prepared.chunk_radius_A == pytest.approx(12.0)
    assert prepared.warnings == []
    assert caplog.records == []
    assert prepared.parent.name == "emt"
    # The target is the octahedron rattled by 0.1 Å.
    ideal = build_nanoparticle(
        "octahedron", element="Pt", length=8, cutoff=3, lattice_constant=3.92
    )
    assert np.std(prepared.target.positions - ideal.positions) == pytest.approx(0.1, rel=0.2)


def test_builder_kinds_match_the_structures_module() -> None:
    assert set(get_args(BuilderSpec.model_fields["kind"].annotation)) == set(KINDS)


def test_chunk_radius_below_twice_the_model_cutoff_is_refused() -> None:
    with pytest.raises(CampaignError) as info:
        load_campaign(_with(lambda s: s["nft"].update(chunk_radius=8.0)))
    assert info.value.field == "nft.chunk_radius"
    assert "below 2·model.cutoff = 12 Å" in str(info.value)
    assert "use at least 12 Å" in str(info.value)


def test_short_chunk_radius_allowed_explicitly_warns(caplog: pytest.LogCaptureFixture) -> None:
    spec = load_campaign(
        _with(lambda s: s["nft"].update(chunk_radius=8.0, allow_short_chunks=True))
    )
    with caplog.at_level(logging.WARNING, logger="nft_fw.spec.campaign"):
        prepared = prepare(spec)
    assert prepared.chunk_radius_A == 8.0
    assert any("below 2·model.cutoff = 12 Å" in w for w in prepared.warnings)
    assert any("force locality of parent 'emt'" in w for w in prepared.warnings)
    assert len(caplog.records) == len(prepared.warnings) == 2


def test_yaml_round_trip_and_relative_paths(tmp_path: Path, monkeypatch: Any) -> None:
    folder = tmp_path / "campaign"
    folder.mkdir()
    Atoms("Cu2", positions=[[0, 0, 0], [2.5, 0, 0]]).write(folder / "cu2.xyz")
    raw = _with(lambda s: s["target"].update(builder=None, file="cu2.xyz"))
    (folder / "campaign.yaml").write_text(yaml.safe_dump(raw))
    monkeypatch.chdir(tmp_path)  # relative paths resolve against the file, not the cwd
    spec = load_campaign(folder / "campaign.yaml")
    assert spec.target.file == folder / "cu2.xyz"
    assert prepare(spec).elements == ("Cu",)
    assert load_campaign(yaml.safe_load(spec.to_yaml())) == spec
    assert isinstance(spec, CampaignSpec)


def test_lattice_constant_null_takes_the_parents_optimum() -> None:
    def change(s: dict) -> None:
        s["target"]["builder"]["lattice_constant"] = None
        s["target"]["rattle"] = None

    target = prepare(load_campaign(_with(change))).target
    d = target.get_all_distances()
    np.fill_diagonal(d, np.inf)
    a_emt = get_parent("emt").optimal_lattice_constant("Pt")
    assert d.min() == pytest.approx(a_emt / np.sqrt(2), rel=1e-6)


def test_alloy_target_uses_vegard_of_parent_optima() -> None:
    def change(s: dict) -> None:
        b = s["target"]["builder"]
        b.update(element=None, composition={"Pt": 0.5, "Cu": 0.5}, lattice_constant=None)
        b.update(kind="bulk", repeat=[2, 2, 2], length=None, cutoff=None)
        s["target"]["rattle"] = None

    prepared = prepare(load_campaign(_with(change)))
    emt = get_parent("emt")
    a = 0.5 * emt.optimal_lattice_constant("Pt") + 0.5 * emt.optimal_lattice_constant("Cu")
    assert prepared.elements == ("Cu", "Pt")
    assert prepared.target.cell[0, 0] == pytest.approx(2 * a)


def test_labelled_initial_file_is_accepted(tmp_path: Path) -> None:
    frames = []
    for a in (3.5, 3.6):
        atoms = bulk("Cu", "fcc", a=a, cubic=True)
        atoms.calc = EMT()
        atoms.get_forces()
        frames.append(atoms)
    path = tmp_path / "initial.extxyz"
    ase.io.write(path, frames)
    prepared = prepare(load_campaign(_with(lambda s: s.update(initial={"file": str(path)}))))
    assert prepared.spec.initial.generator is None
    assert prepared.initial_frames is not None
    assert len(prepared.initial_frames) == 2
    assert prepared.elements == ("Cu", "Pt")


def _write(path: Path, text: str) -> str:
    path.write_text(text)
    return str(path)


NAN_XYZ = '2\nProperties=species:S:1:pos:R:3 pbc="F F F"\nPt 0 0 0\nPt nan 0 0\n'
CLOSE_XYZ = '2\nProperties=species:S:1:pos:R:3 pbc="F F F"\nPt 0 0 0\nPt 0.4 0 0\n'
UNLABELLED_XYZ = '1\nProperties=species:S:1:pos:R:3 pbc="F F F"\nPt 0 0 0\n'


def _file_target(text: str | None) -> Callable[[dict, Path], None]:
    def change(s: dict, tmp: Path) -> None:
        path = tmp / "t.xyz" if text is None else Path(_write(tmp / "t.xyz", text))
        s["target"] = {"file": str(path)}

    return change


BAD_INPUTS: dict[str, tuple[Callable[[dict, Path], None], str, str]] = {
    # case: (change to the example, expected first field, text the message must hold)
    "unknown top key": (lambda s, t: s.update(foo=1), "foo", "unknown key"),
    "unknown nested key": (
        lambda s, t: s["target"]["builder"].update(lenght=8),
        "target.builder.lenght",
        "allowed keys here: kind, element",
    ),
    "negative chunk radius": (
        lambda s, t: s["nft"].update(chunk_radius=-1.0),
        "nft.chunk_radius",
        "greater than 0 (got -1.0)",
    ),
    "negative rattle": (
        lambda s, t: s["target"]["rattle"].update(stdev=-0.1),
        "target.rattle.stdev",
        "(got -0.1)",
    ),
    "unknown element": (
        lambda s, t: s["target"]["builder"].update(element="Xx"),
        "target.builder.element",
        "'Xx' is not a chemical symbol",
    ),
    "unknown parent": (lambda s, t: s["parent"].update(name="vasp"), "parent.name", "emt"),
    "unknown parent param": (
        lambda s, t: s["parent"].update(params={"foo": 1}),
        "parent.params.foo",
        "asap_cutoff",
    ),
    "missing target file": (_file_target(None), "target.file", "does not exist"),
    "empty target file": (_file_target(""), "target.file", "t.xyz"),
    "NaN positions": (_file_target(NAN_XYZ), "target", "atom 1 has a non-finite position"),
    "atoms too close": (_file_target(CLOSE_XYZ), "target", "0.400 Å apart"),
    "element unsupported by emt": (
        lambda s, t: s["target"]["builder"].update(element="Fe"),
        "target.builder.element",
        "does not support Fe",
    ),
    "builder and file": (
        lambda s, t: s["target"].update(file=str(t / "x.xyz")),
        "target",
        "exactly one of builder or file",
    ),
    "hidden_layers empty": (
        lambda s, t: s["model"].update(hidden_layers=[]),
        "model.hidden_layers",
        "at least 1 item",
    ),
    "composition sum": (
        lambda s, t: s["target"]["builder"].update(element=None, composition={"Pt": 0.6}),
        "target.builder.composition",
        "sum to 0.6",
    ),
    "parameter of another kind": (
        lambda s, t: s["target"]["builder"].update(shells=3),
        "target.builder.shells",
        "not a parameter of kind 'octahedron'",
    ),
    "bad name": (lambda s, t: s.update(name="my campaign"), "name", "should match pattern"),
    "fewer candidates": (
        lambda s, t: s["initial"].update(n_structures=100),
        "initial",
        "raise n_candidates to at least 100",
    ),
    "unlabelled initial file": (
        lambda s, t: s.update(initial={"file": _write(t / "i.xyz", UNLABELLED_XYZ)}),
        "initial.file",
        "frame 0 has no energy or forces",
    ),
}


@pytest.mark.parametrize("case", list(BAD_INPUTS))
def test_bad_input_names_the_field(case: str, tmp_path: Path) -> None:
    change, field, text = BAD_INPUTS[case]
    spec = example_campaign()
    change(spec, tmp_path)
    with pytest.raises(CampaignError) as info:
        prepare(load_campaign(spec))
    assert info.value.field == field
    first_line = str(info.value).splitlines()[0]
    assert first_line.startswith(f"{field}: ")
    assert text in str(info.value)


def test_campaign_fields_of_nft_fw_0_1_are_refused_with_the_replacement() -> None:
    with pytest.raises(CampaignError) as info:
        load_campaign(_with(lambda s: s.setdefault("training", {}).update(batch_chunks=64)))
    assert info.value.field == "training"
    assert "training.batch_chunks was removed in nft-fw 0.2" in str(info.value)
    assert "training.batches_per_step" in str(info.value)


def test_all_errors_are_reported_at_once() -> None:
    def change(s: dict) -> None:
        s["nft"]["threshold"] = 0
        s["model"]["ensemble_size"] = 1

    with pytest.raises(CampaignError) as info:
        load_campaign(_with(change))
    assert {f for f, _ in info.value.errors} == {"nft.threshold", "model.ensemble_size"}


def test_bad_yaml_names_the_file(tmp_path: Path) -> None:
    broken = tmp_path / "broken.yaml"
    broken.write_text("name: x\ntarget: {builder: [\n")
    with pytest.raises(CampaignError, match="is not valid YAML") as info:
        load_campaign(broken)
    assert info.value.field == str(broken)
    listing = tmp_path / "list.yaml"
    listing.write_text("- a\n- b\n")
    with pytest.raises(CampaignError, match="holds a YAML list, expected a mapping") as info:
        load_campaign(listing)
    assert str(info.value).startswith(str(listing))
    with pytest.raises(CampaignError, match="cannot read the campaign file"):
        load_campaign(tmp_path / "absent.yaml")


def test_campaign_stored_by_0_2_keeps_its_max_delta_rule_through_the_migration() -> None:
    import pytest

    from nft_fw.launchpad.campaigns import stored_spec
    from nft_fw.launchpad.migrate import spec_of_0
    from nft_fw.launchpad.records import SCHEMA_VERSION, OldLayoutError
    from nft_fw.spec.campaign import load_campaign

    data = load_campaign(example_campaign()).model_dump(mode="json")
    assert data["nft"]["progress_measure"] == "mean_delta" and data["nft"]["min_gain"] == 0.02
    current = {"_id": "c", "spec": data, "schema_version": SCHEMA_VERSION}
    assert stored_spec(current).nft.progress_measure == "mean_delta"
    assert spec_of_0(data) == (data, [])  # a current file is left as it is
    for key in ("progress_measure", "min_gain", "threshold_on", "calibration_coverage"):
        del data["nft"][key]  # what nft-fw 0.2 stored
    # read as stored, a 0.2 file would get today's defaults: refused, naming the way out
    with pytest.raises(OldLayoutError, match="nft-fw db migrate"):
        stored_spec({"_id": "c", "spec": data, "layout": "one-workflow"})
    migrated, changes = spec_of_0(data)
    assert changes and "progress_measure" in changes[0]
    old = stored_spec({"_id": "c", "spec": migrated, "schema_version": SCHEMA_VERSION})
    assert old.nft.progress_measure == "max_delta" and old.nft.min_gain == 0.0
    assert old.nft.threshold_on == "delta"


EXAMPLES = sorted((Path(__file__).resolve().parent.parent / "nft_fw" / "examples").glob("*.yaml"))


@pytest.mark.parametrize("path", EXAMPLES, ids=[p.stem for p in EXAMPLES])
def test_every_shipped_example_validates(path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from nft_fw.cli import main

    assert main(["validate", str(path)]) == 0
    name = yaml.safe_load(path.read_text())["name"]
    out = capsys.readouterr().out
    assert out.startswith(f"{name}: valid"), out


def test_the_demo_default_campaign_is_the_installed_example() -> None:
    """nft-fw demo without --campaign runs nft_fw/examples/pt260-emt.yaml (a CLI module
    that moves must still find it)."""
    from nft_fw.cli.campaigns import EXAMPLES_DIR

    path = EXAMPLES_DIR / "pt260-emt.yaml"
    assert path.is_file(), path
    assert load_campaign(path).name == "pt260-emt"
