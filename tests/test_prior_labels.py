"""Labels a campaign did not compute: an exported label file as ``prior_labels.file`` (and
its initial images as ``initial.file``). Checked before anything runs (parent settings,
hashes, the file's kind); used as if computed (no parent call for a structure the file
holds); a campaign continued from its own export with a larger ``max_iterations`` replays
it and labels only past its end, with the history of one uninterrupted run. Real EMT, real
training, and (integration) the real service with worker processes."""

from __future__ import annotations

import copy
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from service import cli
from specs import count_parent_calls, small_campaign


def _exported_chunks(path: Path, spec: dict[str, Any], centres: list[int]) -> Path:
    """An export-shaped file of EMT chunk labels of the campaign's target (no training)."""
    from nft_fw.labels import files as labelset
    from nft_fw.spec.campaign import load_campaign, prepare
    from nft_fw.structures.chunks import cut

    prepared = prepare(load_campaign(spec))
    frames = []
    for c in centres:
        chunk = cut(prepared.target, c, prepared.chunk_radius_A)
        energy, forces = prepared.parent.label(chunk.atoms)
        frames.append(
            labelset.frame(
                chunk.atoms, kind="chunk", phase="nft", number=1, forces=forces, energy=energy,
                campaign="earlier", parent="emt", parent_params={},
                parent_hash=prepared.parent.settings_hash, label_hash=chunk.hash, centre=c,
                radius_A=prepared.chunk_radius_A, seconds=0.5,
            )
        )  # fmt: skip
    labelset.write(path, frames)
    return path


def _spec_with_prior(path: Path, **prior: Any) -> dict[str, Any]:
    spec = small_campaign("continued")
    spec["prior_labels"] = {"file": str(path), **prior}
    return spec


def test_prior_labels_plan_the_next_iterations_chunks(tmp_path: Path) -> None:
    from nft_fw.labels import prior
    from nft_fw.spec.campaign import load_campaign, prepare

    path = _exported_chunks(tmp_path / "p.extxyz", small_campaign("earlier"), [3, 11, 40])
    prepared = prepare(load_campaign(_spec_with_prior(path)))
    assert prepared.prior is not None and prepared.prior.counts() == {"chunk": 3}
    assert prior.planned_centres(prepared.prior, prepared.target, 1) == [
        (3, prepared.chunk_radius_A), (11, prepared.chunk_radius_A),
        (40, prepared.chunk_radius_A),
    ]  # fmt: skip
    assert prior.planned_centres(prepared.prior, prepared.target, 2) == []
    # another target (rattled with another seed): the same centres are other chunks
    other = _spec_with_prior(path)
    other["target"]["rattle"]["seed"] = 1
    moved = prepare(load_campaign(other))
    assert prior.planned_centres(moved.prior, moved.target, 1) == []


def test_a_prior_chunk_label_trains_on_the_positions_the_parent_computed(
    tmp_path: Path,
) -> None:
    """The file's chunk, not the campaign's own cut of the same environment: the two may
    differ below the hash's rounding (a target stored less exactly by an older release)."""
    from nft_fw.labels import files as labelset
    from nft_fw.spec.campaign import load_campaign, prepare
    from nft_fw.steps import step
    from nft_fw.structures.chunks import cut

    path = _exported_chunks(tmp_path / "p.extxyz", small_campaign("earlier"), [7])
    (frame,) = labelset.read(path)
    forces = frame.get_forces()
    frame.positions[1:] += 3e-9  # below the hash's rounding: the same chunk
    frame.calc.atoms = frame.copy()  # the results belong to the moved positions
    labelset.write(path, [frame])
    prepared = prepare(load_campaign(_spec_with_prior(path)))
    chunk = cut(prepared.target, 7, prepared.chunk_radius_A)
    label = step.label_chunk(prepared, chunk, 1)
    assert label.hash == chunk.hash == frame.info["nft_hash"]
    np.testing.assert_array_equal(label.atoms.positions, frame.positions)
    np.testing.assert_array_equal(label.forces, forces)
    assert not np.array_equal(label.atoms.positions, chunk.atoms.positions)


def test_prior_labels_of_other_parent_settings_are_refused_unless_accepted(
    tmp_path: Path,
) -> None:
    from nft_fw.spec.campaign import CampaignError, load_campaign, prepare

    path = _exported_chunks(tmp_path / "p.extxyz", small_campaign("earlier"), [3])
    spec = _spec_with_prior(path)
    spec["parent"]["params"] = {"asap_cutoff": True}
    with pytest.raises(CampaignError) as err:
        prepare(load_campaign(spec))
    text = str(err.value)
    assert "prior_labels.file" in text and "other parent settings" in text
    assert "accept_parent_mismatch: true" in text
    spec["prior_labels"]["accept_parent_mismatch"] = True
    assert prepare(load_campaign(spec)).prior.counts() == {"chunk": 1}


def test_a_transfer_targets_prior_labels_and_follow_up_settings_are_its_follow_ups(
    tmp_path: Path,
) -> None:
    """transfer[k].prior_labels / follow_up: checked at submission like the campaign's own
    (parent settings, retrain, the settings nft-fw amend may change, the values the follow-up
    campaign would hold), relative to the campaign file, and what the follow-up is made of."""
    import yaml

    from nft_fw.spec.campaign import CampaignError, follow_up_spec, load_campaign, prepare

    big = {"builder": {"kind": "octahedron", "element": "Pt", "length": 6, "cutoff": 1},
           "rattle": {"stdev": 0.1, "seed": 2}}  # fmt: skip
    path = _exported_chunks(tmp_path / "p.extxyz", {**small_campaign("x"), "target": big}, [5])
    spec = small_campaign("parent")
    spec["transfer"] = [{**big, "name": "big", "retrain": True, "follow_up": {
        "nft.max_iterations": 4, "nft.threshold": 0.02}}]  # fmt: skip
    in_file = {**spec["transfer"][0], "prior_labels": {"file": "p.extxyz"}}
    (tmp_path / "campaign.yaml").write_text(yaml.safe_dump({**spec, "transfer": [in_file]}))
    loaded = load_campaign(tmp_path / "campaign.yaml")  # the file's path, relative to it
    prepared = prepare(loaded)
    assert prepared.prior is None and prepared.transfer_priors[0].counts() == {"chunk": 1}
    child = follow_up_spec(loaded, 0)
    assert child.name == "parent-big" and not child.transfer
    assert (child.nft.max_iterations, child.nft.threshold) == (4, 0.02)
    assert child.nft.chunks_per_iteration == loaded.nft.chunks_per_iteration
    assert child.target.builder == loaded.transfer[0].builder
    assert child.prior_labels is not None and child.prior_labels.file == tmp_path / "p.extxyz"

    def refused(change: dict[str, Any]) -> str:
        bad = copy.deepcopy(spec)
        bad["transfer"][0].update(change)
        with pytest.raises(CampaignError) as err:
            prepare(load_campaign(bad))
        return str(err.value)

    text = refused({"retrain": False})
    assert "transfer.0.retrain" in text and "set retrain: true" in text
    text = refused({"follow_up": {"model.cutoff": 4.0}})
    assert "transfer.0.follow_up.model.cutoff" in text and "nft.max_iterations" in text
    assert "transfer.0.follow_up.nft.max_iterations" in refused(
        {"follow_up": {"nft.max_iterations": -1}}
    )
    assert "transfer.0.follow_up.md.length_ps" in refused({"follow_up": {"md.length_ps": 2}})
    text = refused({"prior_labels": {"file": str(tmp_path / "missing.extxyz")}})
    assert "transfer.0.prior_labels.file" in text and "no such file" in text
    emt_asap = copy.deepcopy(spec)
    emt_asap["parent"]["params"] = {"asap_cutoff": True}
    emt_asap["transfer"][0]["prior_labels"] = {"file": str(path)}
    with pytest.raises(CampaignError) as err:
        prepare(load_campaign(emt_asap))
    assert "transfer.0.prior_labels.file" in str(err.value)
    assert "other parent settings" in str(err.value)


def test_a_label_whose_stored_hash_predates_the_hash_rule_counts_by_its_own_settings(
    tmp_path: Path,
) -> None:
    """A file exported by a release that hashed a setting since left out of the hash (GPAW's
    mixer before 0.4.1) is the campaign's when its own nft_parent_params hash to the
    campaign's hash now; settings that differ in what they compute are still refused."""
    from nft_fw.labels import files as labelset
    from nft_fw.labels import prior

    path = _exported_chunks(tmp_path / "p.extxyz", small_campaign("earlier"), [3, 11])
    frames = labelset.read(path)
    frames[0].info["nft_parent_hash"] = "0" * 64  # the hash an older rule gave it
    frames[1].info["nft_parent_hash"] = "1" * 64
    frames[1].info["nft_parent_params"] = {"asap_cutoff": True}  # really other settings
    labelset.write(tmp_path / "old.extxyz", frames)
    current = frames[0].info["nft_parent_params"]

    def rehash(name: str, params: Any) -> str:
        return "c" * 64 if (name, dict(params)) == ("emt", dict(current)) else "x" * 64

    with pytest.raises(prior.PriorError, match="1 of 2 labels were computed with other"):
        prior.read(tmp_path / "old.extxyz", "c" * 64, rehash=rehash)
    del frames[1]
    labelset.write(tmp_path / "old.extxyz", frames)
    with pytest.raises(prior.PriorError, match="1 of 1 labels"):
        prior.read(tmp_path / "old.extxyz", "c" * 64)  # without the rehash: refused
    read = prior.read(tmp_path / "old.extxyz", "c" * 64, rehash=rehash)
    assert [lb.parent_hash for lb in read.labels.values()] == ["c" * 64]


def test_a_prior_file_that_is_no_export_or_was_edited_is_refused(tmp_path: Path) -> None:
    import ase.io
    from ase.build import bulk
    from ase.calculators.emt import EMT

    from nft_fw.labels import files as labelset
    from nft_fw.spec.campaign import CampaignError, load_campaign, prepare

    plain = bulk("Pt", "fcc", a=3.92, cubic=True)
    plain.calc = EMT()
    plain.get_forces()
    ase.io.write(tmp_path / "plain.extxyz", plain)
    with pytest.raises(CampaignError, match="nft-fw labels NAME --export"):
        prepare(load_campaign(_spec_with_prior(tmp_path / "plain.extxyz")))

    path = _exported_chunks(tmp_path / "p.extxyz", small_campaign("earlier"), [3])
    (frame,) = labelset.read(path)
    frame.positions[1] += 0.01  # the structure no longer is the one its hash names
    labelset.write(tmp_path / "edited.extxyz", [frame])
    with pytest.raises(CampaignError, match="does not hold the structure its hash names"):
        prepare(load_campaign(_spec_with_prior(tmp_path / "edited.extxyz")))
    with pytest.raises(CampaignError, match="no such file"):
        prepare(load_campaign(_spec_with_prior(tmp_path / "missing.extxyz")))


def test_initial_file_takes_the_images_of_a_label_export(tmp_path: Path) -> None:
    from nft_fw.labels import files as labelset
    from nft_fw.runners.local import initial_images
    from nft_fw.spec.campaign import CampaignError, load_campaign, prepare

    earlier = prepare(load_campaign(small_campaign("earlier")))
    images = initial_images(earlier)
    frames = [
        labelset.frame(
            im.atoms, kind="image", phase="initial", number=0, forces=im.forces,
            energy=im.energy, campaign="earlier", parent="emt", parent_params={},
            parent_hash=earlier.parent.settings_hash, label_hash=im.id,
        )
        for im in images
    ]  # fmt: skip
    chunks = _exported_chunks(tmp_path / "c.extxyz", small_campaign("earlier"), [3])
    labelset.write(tmp_path / "all.extxyz", frames + labelset.read(chunks))
    spec = small_campaign("from-file")
    spec["initial"] = {"file": str(tmp_path / "all.extxyz")}
    prepared = prepare(load_campaign(spec))
    assert len(prepared.initial_frames) == len(images)  # the chunk frame is not an image
    got = {im.id: im for im in initial_images(prepared)}
    for im in images:
        np.testing.assert_array_equal(got[im.id].forces, im.forces)
        assert got[im.id].energy == im.energy
    spec["initial"] = {"file": str(chunks)}
    with pytest.raises(CampaignError, match=r"initial\.file.*without initial images"):
        prepare(load_campaign(spec))


def _science(history: list[dict[str, Any]]) -> list[tuple[Any, ...]]:
    keys = ("iteration", "n_chunks", "new_chunks", "structure_uncertainty", "mean_uncertainty",
            "true_force_mae", "best_iteration")  # fmt: skip
    return [tuple(r[k] for k in keys) for r in history]


def test_a_local_run_continued_from_its_labels_replays_it_and_labels_only_new_chunks(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from nft_fw.labels import files as labelset
    from nft_fw.runners import local as loop
    from nft_fw.spec.campaign import load_campaign

    first = small_campaign("earlier")
    first["nft"]["max_iterations"] = 1
    a = loop.run_locally(load_campaign(first), progress=False)
    labelset.write(tmp_path / "a.extxyz", loop.label_frames(a))

    longer = small_campaign("earlier")
    longer["nft"]["max_iterations"] = 3
    whole = loop.run_locally(load_campaign(longer), progress=False)

    calls: list[int] = []
    prepare = loop.prepare
    monkeypatch.setattr(loop, "prepare", lambda spec: count_parent_calls(prepare(spec), calls))
    continued = copy.deepcopy(longer)
    continued["prior_labels"] = {"file": str(tmp_path / "a.extxyz")}
    b = loop.run_locally(load_campaign(continued), progress=False)

    assert _science(b.history) == _science(whole.history)  # exact: the same numbers
    assert b.stop.reason == whole.stop.reason and b.best_iteration == whole.best_iteration
    known = {lb.hash for lb in a.labels} | {im.id for im in a.images}
    new = [lb for lb in b.labels if lb.hash not in known]
    # only the chunks past the exported run were computed, each once; images, the first
    # iteration's chunks and the whole-target forces came from the file
    assert len(calls) == len(new) == len(b.labels) - len(a.labels) > 0
    assert {lb.iteration for lb in new} == {2, 3}
    assert b.history[0]["next_from_prior"] == len(a.labels)
    np.testing.assert_array_equal(b.true_forces, a.true_forces)

    # an export made while its last iteration was labelled (one chunk not yet in): the
    # continued iteration takes the file's chunks and completes itself with the one it had
    # chosen, so the run is still the uninterrupted one
    frames = labelset.read(tmp_path / "a.extxyz")
    dropped = next(f for f in frames if f.info.get("nft_phase") == "nft")
    labelset.write(tmp_path / "cut.extxyz", [f for f in frames if f is not dropped])
    calls.clear()
    continued["prior_labels"] = {"file": str(tmp_path / "cut.extxyz")}
    c = loop.run_locally(load_campaign(continued), progress=False)
    assert _science(c.history) == _science(whole.history)
    assert c.history[0]["next_from_prior"] == len(a.labels) - 1
    redone = [lb for lb in c.labels if lb.hash not in known or lb.hash == dropped.info["nft_hash"]]
    assert len(calls) == len(redone) == len(new) + 1
    assert {lb.iteration for lb in redone} == {1, 2, 3}


def test_relax_rounds_continued_from_an_export_take_its_chunks_and_label_only_new_ones(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from specs import tiny

    from nft_fw.labels import files as labelset
    from nft_fw.runners import local as loop
    from nft_fw.spec.campaign import load_campaign

    relax = {"max_steps": 12, "chunks_per_round": 3, "max_rounds": 2, "max_frames": 4,
             "threshold": 0.001, "patience": 5}  # fmt: skip
    first = tiny(name="relaxed", relax=relax)
    a = loop.run_locally(load_campaign(first), progress=False)
    ra = loop.relax_locally(a, progress=False)
    assert [r["new_chunks"] for r in ra.rounds] == [0, 3, 3]
    labelset.write(tmp_path / "a.extxyz", loop.label_frames(a, ra.labels))

    calls: list[int] = []
    prepare = loop.prepare
    monkeypatch.setattr(loop, "prepare", lambda spec: count_parent_calls(prepare(spec), calls))
    # one round more, and another selection rule: the exported rounds' chunks are still the
    # ones asked for (their labels, so their models, so their trajectories are the run's)
    continued = tiny(name="relaxed", relax={**relax, "max_rounds": 3,
                                                     "selection": "most_uncertain"})  # fmt: skip
    continued["prior_labels"] = {"file": str(tmp_path / "a.extxyz")}
    b = loop.run_locally(load_campaign(continued), progress=False)
    rb = loop.relax_locally(b, progress=False)
    assert [r["next_from_prior"] for r in rb.rounds[:3]] == [3, 3, 0]
    keys = ("iteration", "n_chunks", "new_chunks", "structure_uncertainty", "n_steps")
    assert [[r[k] for k in keys] for r in rb.rounds[:3]] == [[r[k] for k in keys]
                                                             for r in ra.rounds]  # fmt: skip
    exported = {lb.hash: lb for lb in ra.labels}
    replayed = [lb for lb in rb.labels if lb.iteration <= 2]
    assert {lb.hash for lb in replayed} == set(exported)
    for lb in replayed:  # recorded where they were cut originally, the positions the parent had
        assert lb.centre == exported[lb.hash].centre and lb.phase == "relax"
        np.testing.assert_array_equal(lb.atoms.positions, exported[lb.hash].atoms.positions)
    assert len(rb.rounds) == 4 and {lb.iteration for lb in rb.labels} == {1, 2, 3}
    new = [lb for lb in rb.labels if lb.hash not in exported]
    # NFT, images and the two exported rounds' chunks from the file: the parent labelled
    # only the new round's chunks, each once
    assert len(calls) == len(new) == 3 and {lb.iteration for lb in new} == {3}

    # an export cut off while round 2's chunks were being labelled (one of three missing):
    # the same campaign continued completes the round with the chunk it had chosen
    frames = loop.label_frames(a, ra.labels)
    (dropped,) = [f for f in frames if f.info.get("nft_phase") == "relax"
                  and f.info["nft_number"] == 2][:1]  # fmt: skip
    labelset.write(tmp_path / "cut.extxyz", [f for f in frames if f is not dropped])
    calls.clear()
    same = tiny(name="relaxed", relax=relax)
    same["prior_labels"] = {"file": str(tmp_path / "cut.extxyz")}
    rc = loop.relax_locally(loop.run_locally(load_campaign(same), progress=False), progress=False)
    assert [r["next_from_prior"] for r in rc.rounds] == [3, 2, 0]
    assert len(calls) == 1  # the missing chunk only, and it is the one the run had chosen
    (relabelled,) = [lb for lb in rc.labels if lb.hash not in {f.info["nft_hash"] for f in frames
                                                                if f is not dropped}]  # fmt: skip
    assert relabelled.hash == dropped.info["nft_hash"] and relabelled.iteration == 2
    assert [[r[k] for k in keys] for r in rc.rounds] == [[r[k] for k in keys] for r in ra.rounds]


@pytest.mark.integration
@pytest.mark.slow
def test_a_service_campaign_continued_from_an_export_labels_only_new_chunks(
    db_server: Any, tmp_path: Path
) -> None:
    from nft_fw.cli import run_campaign
    from nft_fw.firetasks import iteration as nft_tasks
    from nft_fw.labels import files as labelset
    from nft_fw.launchpad import records
    from nft_fw.launchpad.connection import embedded
    from nft_fw.runners import local as loop
    from nft_fw.spec.campaign import load_campaign, prepare

    conn = embedded(db_server.data_dir, db_name=f"t_{uuid.uuid4().hex[:12]}", start=False)
    conn.launchpad.reset("", require_password=False)
    try:
        relax = {"max_steps": 12, "chunks_per_round": 3, "max_rounds": 1, "max_frames": 4,
                 "threshold": 0.001, "patience": 5}  # fmt: skip
        first = small_campaign("first")
        first["nft"]["max_iterations"] = 1
        first["relax"] = relax
        assert run_campaign(conn, prepare(load_campaign(first)), 1, tmp_path / "w1",
                            tmp_path / "r1") == 0  # fmt: skip
        out = cli(conn, "labels", "first", "--export", str(tmp_path / "first.extxyz"))
        assert out.returncode == 0, out.stderr
        # one relax chunk left out, as if the export had been made while it was labelled:
        # the continued round takes the other two and chooses the third itself
        every = labelset.read(tmp_path / "first.extxyz")
        dropped = next(f for f in every if f.info.get("nft_phase") == "relax")
        exported = [f for f in every if f is not dropped]
        labelset.write(tmp_path / "cut.extxyz", exported)

        continued = small_campaign("continued")
        continued["nft"]["max_iterations"] = 3
        continued["relax"] = {**relax, "max_rounds": 2}  # one round past the export's
        continued["prior_labels"] = {"file": str(tmp_path / "cut.extxyz")}
        assert run_campaign(conn, prepare(load_campaign(continued)), 2, tmp_path / "w2",
                            tmp_path / "r2") == 0  # fmt: skip
        db = conn.launchpad.db
        labels = records.labels(db, "continued")
        given = [d for d in labels if "prior_campaign" in d]
        computed = [d for d in labels if "prior_campaign" not in d]
        trained = [f for f in exported if f.info["nft_kind"] != "full"]
        assert len(given) == len(trained) and {d["prior_campaign"] for d in given} == {"first"}
        assert {d["hash"] for d in given} == {f.info["nft_hash"] for f in trained}
        # nothing computed twice: no label of the first campaign computed again, no label
        # Firework ran for one, and each new chunk once
        assert not {d["hash"] for d in computed} & {f.info["nft_hash"] for f in exported}
        assert computed and {d["iteration"] for d in computed if d.get("phase") == "nft"} == {2, 3}
        # the exported relax round's chunks were asked for again and taken from the file,
        # recorded where they were cut; only the round past it labelled its own
        exported_relax = {f.info["nft_hash"]: f for f in exported
                          if f.info.get("nft_phase") == "relax"}  # fmt: skip
        assert len(exported_relax) == 2
        given_relax = [d for d in given if d.get("phase") == "relax"]
        assert {d["hash"] for d in given_relax} == set(exported_relax)
        for d in given_relax:
            assert (
                d["iteration"] == 1 and d["centre"] == exported_relax[d["hash"]].info["nft_centre"]
            )
        computed_relax = [d for d in computed if d.get("phase") == "relax"]
        assert sum(d["iteration"] == 1 for d in computed_relax) == 1  # the round completed
        assert {d["iteration"] for d in computed_relax} == {1, 2}
        rounds = records.iterations(db, "continued", phase="relax")
        assert [r["next_from_prior"] for r in rounds] == [2, 0, 0]
        assert len({d["hash"] for d in labels}) == len(labels)
        label_fws = conn.launchpad.fireworks.find(
            {"spec.campaign": "continued", "spec.nft_role": "label"}, {"spec._tasks": 1}
        )
        items = [i for fw in label_fws for t in fw["spec"]["_tasks"] for i in t["items"]]
        assert len(items) == len(computed)
        (full,) = [f for f in exported if f.info["nft_kind"] == "full"]
        np.testing.assert_array_equal(nft_tasks.validation_forces(db, "continued"),
                                      full.get_forces())  # fmt: skip
        summary = records.get_campaign(db, "continued")["summary"]
        assert summary["parent_calls"]["labels_from_prior"] == len(given)

        whole = small_campaign("continued")
        whole["nft"]["max_iterations"] = 3
        local = loop.run_locally(load_campaign(whole), progress=False)
        service = records.iterations(db, "continued")
        assert [r[:3] for r in _science(service)] == [r[:3] for r in _science(local.history)]
        for rs, rl in zip(service, local.history, strict=True):
            assert rs["structure_uncertainty"] == pytest.approx(
                rl["structure_uncertainty"], rel=1e-6
            )
        doc = records.get_campaign(db, "continued")
        assert doc["stop_reason"] == local.stop.reason
        assert service[-1]["best_iteration"] == local.best_iteration
    finally:
        conn.launchpad.connection.drop_database(conn.db_name)
        conn.close(stop_server=False)


def test_one_rule_says_which_prior_label_replaces_a_parent_call() -> None:
    """prior.usable: the label under the key, of the kind asked for, with an energy — what
    the local runner (step.label_chunk, label_structure) and the label Fireworks
    (firetasks.labels.take_prior) both ask."""
    import numpy as np
    from ase import Atoms

    from nft_fw.labels import prior

    def label(kind: str, energy: float | None) -> prior.PriorLabel:
        return prior.PriorLabel(
            kind=kind, hash="h", atoms=Atoms("Pt"), energy=energy, forces=np.zeros((1, 3)),
            phase="nft", number=1, centre=0, radius=8.0, parent_hash="p", campaign="c",
            seconds=1.0,
        )  # fmt: skip

    chunk = prior.PriorLabels("f", {"a": label("chunk", -1.0), "b": label("chunk", None)})
    assert prior.usable(chunk, "a", "chunk") is chunk.labels["a"]
    assert prior.usable(chunk, "a", "image") is None  # another kind
    assert prior.usable(chunk, "b", "chunk") is None  # no energy
    assert prior.usable(chunk, "z", "chunk") is None and prior.usable(None, "a", "chunk") is None
