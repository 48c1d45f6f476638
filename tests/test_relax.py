"""Relaxation driver and trajectory site selection (no database)."""

from __future__ import annotations

import numpy as np
import pytest
from ase.cluster import Octahedron
from pulling import pulling
from specs import tiny

from nft_fw.potential import descriptors as desc
from nft_fw.potential import model as mdl
from nft_fw.potential.calculator import EnsembleCalculator
from nft_fw.steps.relax import relax, uncertain_sites


@pytest.fixture(scope="module")
def setup():
    """A small ensemble trained briefly on EMT labels of rattled copies of the cluster, so
    that its energy surface has a minimum near the cluster's (a random network need not)."""
    from ase.calculators.emt import EMT

    from nft_fw.potential import training

    atoms = Octahedron("Pt", 4, 1, latticeconstant=3.92)
    atoms.positions += np.random.default_rng(0).normal(0, 0.05, atoms.positions.shape)
    spec = desc.DescriptorSpec.default(["Pt"], cutoff=5.0, n_radial=8)
    images = []
    for k in range(4):
        copy = atoms.copy()
        copy.positions += np.random.default_rng(k + 1).normal(0, 0.08, atoms.positions.shape)
        copy.calc = EMT()
        images.append(
            training.Image(copy, copy.get_potential_energy(), copy.get_forces(), id=str(k))
        )
    ens = training.make_ensemble(spec, mdl.Architecture((8,), 3), images, [atoms], seed=0)
    ens, _ = training.train(
        ens, training.image_arrays(images, spec), [], training.TrainConfig(steps=400)
    )
    return atoms, spec, EnsembleCalculator(ens)


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


def test_a_relaxation_that_walks_atoms_into_each_other_ends_there_and_says_so(setup):
    """A model whose forces pull two atoms together (a fault injected here: 40 eV/Å
    added between atoms 0 and 1 of the real ensemble's forces) brings them closer than the
    descriptors allow; the relaxation ends at its last evaluable step, not converged, and
    records why — the transfer target it happens to is flagged rather than the phase failing."""
    from nft_fw.steps.common import trajectory_figures

    atoms, _, calc = setup
    traj = relax(atoms, pulling(calc.ensemble, 40.0), fmax=0.05, max_steps=200)
    assert traj.collapsed is not None and not traj.converged
    assert "atoms 0 and 1" in traj.collapsed and "apart" in traj.collapsed
    assert len(traj.steps) == len(traj.frames) >= 2
    assert traj.collapsed.startswith(f"after step {len(traj.steps) - 1}:")
    assert np.linalg.norm(traj.final.positions[1] - traj.final.positions[0]) < 1.5
    figures = trajectory_figures(traj)
    assert figures["collapsed"] == traj.collapsed and figures["converged"] is False
    assert "collapsed" not in trajectory_figures(relax(atoms, calc, max_steps=5))
    # a start the model cannot evaluate is bad input, refused as such
    bad = atoms.copy()
    bad.positions[1] = bad.positions[0] + [0.3, 0.0, 0.0]
    with pytest.raises(ValueError, match="apart"):
        relax(bad, calc)


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


def test_search_frames_are_even_and_keep_both_ends():
    from nft_fw.steps.relax import search_frames

    assert search_frames(4, 10) == [0, 1, 2, 3]
    frames = search_frames(101, 5)
    assert frames == [0, 25, 50, 75, 100]
    assert search_frames(3, 2) == [0, 2]


def test_most_uncertain_takes_each_atom_once_and_only_searched_frames(setup):
    atoms, spec, calc = setup
    traj = relax(atoms, calc, fmax=0.05, max_steps=6)
    threshold = float(np.min(np.concatenate(traj.deltas))) - 1.0  # every atom qualifies
    sites = uncertain_sites(traj, threshold, spec, n=len(atoms), method="most_uncertain")
    assert len({i for _, i in sites}) == len(sites) == len(atoms)
    for f, i in sites:  # each in the frame where that atom's δ peaks
        assert traj.deltas[f][i] == max(d[i] for d in traj.deltas)
    later = uncertain_sites(traj, threshold, spec, n=5, method="cur", frames=[2, 4])
    assert {f for f, _ in later} <= {2, 4} and len(later) == 5
    with pytest.raises(ValueError, match="method"):
        uncertain_sites(traj, threshold, spec, n=1, method="random")


def test_relax_stop_rules():
    from nft_fw.steps.decision import relax_stop

    rules = {"threshold": 0.1, "patience": 2, "max_rounds": 5}
    assert relax_stop([0.5], **rules) is None
    assert relax_stop([0.5, 0.4], **rules) is None
    assert relax_stop([0.5, 0.09], **rules).reason == "threshold"
    stop = relax_stop([0.5, 0.3, 0.35, 0.4], **rules)
    assert stop.reason == "patience" and stop.best_iteration == 1
    assert relax_stop([0.9, 0.8, 0.7, 0.6, 0.5, 0.45], **rules).reason == "max_rounds"
    assert relax_stop([0.5], threshold=0.1, patience=2, max_rounds=0).reason == "max_rounds"
    with pytest.raises(ValueError):
        relax_stop([], **rules)


def test_relax_locally_retrains_from_the_trajectory():
    from nft_fw import relax_locally, run_locally

    relax_spec = {"max_steps": 12, "chunks_per_round": 3, "max_rounds": 2, "max_frames": 4}
    result = run_locally(tiny(relax=relax_spec), progress=False)
    out = relax_locally(result, progress=False)
    assert [r["iteration"] for r in out.rounds] == list(range(len(out.rounds)))
    assert len(out.rounds) == 3 and out.stop.reason in ("max_rounds", "patience")
    assert out.rounds[0]["training"] is None and out.rounds[1]["training"]["steps"] == 50
    assert len(out.labels) == 6 and len({lb.hash for lb in out.labels}) == 6
    assert not {lb.hash for lb in out.labels} & {lb.hash for lb in result.labels}
    assert [r["new_chunks"] for r in out.rounds] == [0, 3, 3]
    # rounds ≥ 1 record the previous model's error on their new chunks, before training
    assert "oos_n" not in out.rounds[0]
    assert [r["oos_n"] for r in out.rounds[1:]] == [3, 3]
    assert all(r["oos_mae"] <= r["oos_max"] for r in out.rounds[1:])
    for r, traj in zip(out.rounds, out.trajectories, strict=True):
        assert r["structure_uncertainty"] == traj.max_uncertainty
    assert out.kept_round == out.stop.best_iteration


def test_relax_and_transfer_fields_are_validated():
    from nft_fw.spec.campaign import CampaignError, load_campaign, prepare

    bad = tiny(
        relax={"optimizer": "newton", "fmax": -1},
        transfer=[
            {"name": "x", "builder": {"kind": "icosahedron", "element": "Cu", "shells": 2}},
            {"name": "x", "builder": {"kind": "cuboctahedron", "element": "Pt", "shells": 2}},
        ],
    )
    with pytest.raises(CampaignError) as err:
        load_campaign(bad)
    text = str(err.value)
    for field in (
        "relax.optimizer",
        "relax.fmax",
    ):
        assert field in text
    bad["relax"] = {}
    with pytest.raises(CampaignError) as err:
        load_campaign(bad)
    text = str(err.value)
    assert "transfer.0.builder: has Cu, which the target (target.builder: Pt) lacks" in text
    assert "transfer.1.name: 'x' is already the name of transfer.0" in text
    assert "transfer.1.builder.shells: is not a parameter of kind 'cuboctahedron'" in text
    good = tiny(transfer=[{"builder": {"kind": "icosahedron", "element": "Pt", "shells": 3}}])
    prepared = prepare(load_campaign(good))
    assert [(name, len(a)) for name, a in prepared.transfers] == [("transfer-0", 55)]


def test_search_frames_end_where_asked_and_first_above_finds_the_frontier(setup):
    from nft_fw.steps.relax import first_above, search_frames

    assert search_frames(10, 25) == list(range(10))
    assert search_frames(301, 5) == [0, 75, 150, 225, 300]
    assert search_frames(301, 25, last=12) == list(range(13))
    assert search_frames(301, 3, last=40) == [0, 20, 40]
    assert search_frames(10, 25, last=99) == list(range(10))
    atoms, _, calc = setup
    traj = relax(atoms, calc, fmax=0.05, max_steps=8)
    peaks = [float(d.max()) for d in traj.deltas]
    level = sorted(peaks)[len(peaks) // 2]
    k = first_above(traj, level)
    assert k is not None and peaks[k] > level and all(p <= level for p in peaks[:k])
    assert first_above(traj, max(peaks)) is None


def test_relax_search_until_takes_chunks_only_where_the_model_first_left_its_data():
    from nft_fw import relax_locally, run_locally

    relax_spec = {"max_steps": 30, "chunks_per_round": 3, "max_rounds": 1, "search_until": 0.05}
    result = run_locally(tiny(relax=relax_spec), progress=False)
    out = relax_locally(result, progress=False)
    first = out.rounds[0]
    until = first["searched_until_step"]
    assert first["frame_steps"][-1] == until < out.trajectories[0].steps[-1].step
    peaks = [float(d.max()) for d in out.trajectories[0].deltas]
    assert peaks[until] > 0.05 and all(p <= 0.05 for p in peaks[:until])
    # round 1's chunks were cut from frames at or before that step
    labels = [lb for lb in out.labels if lb.iteration == 1]
    assert labels and all(lb.phase == "relax" for lb in labels)
    from nft_fw.structures.chunks import cut

    frames = [out.trajectories[0].frames[f] for f in first["frame_steps"]]
    cut_from = {cut(f, lb.centre, lb.radius).hash for f in frames for lb in labels}
    assert {lb.hash for lb in labels} <= cut_from


def test_relax_resume_frontier_stops_at_the_level_and_continues_from_there():
    """relax.resume: frontier — a round's relaxation ends at the first step above
    relax.search_until, and the next round, retrained on chunks cut up to there, relaxes on
    from that very frame (as MD continues from its pause)."""
    from nft_fw import relax_locally, run_locally

    relax_spec = {
        "max_steps": 30, "chunks_per_round": 3, "max_rounds": 2, "patience": 5,
        "search_until": 0.05, "resume": "frontier", "selection": "diverse",
    }  # fmt: skip
    result = run_locally(tiny(relax=relax_spec), progress=False)
    out = relax_locally(result, progress=False)
    assert len(out.rounds) == 3
    first, second = out.rounds[0], out.rounds[1]
    until = first["stopped_above"]
    # round 0 stopped where δ first exceeded the level: that frame is its last
    assert until is not None and first["searched_until_step"] == until
    assert first["n_steps"] == until + 1 and not first["converged"]
    peaks = [float(d.max()) for d in out.trajectories[0].deltas]
    assert peaks[-1] > 0.05 and all(p <= 0.05 for p in peaks[1:-1])
    assert first["started_from"] is None
    # round 1 starts from exactly that frame
    assert second["started_from"] == {"round": 0, "step": until}
    np.testing.assert_array_equal(
        out.trajectories[1].frames[0].positions, out.trajectories[0].frames[-1].positions
    )
    # a round that did not stop at the level hands on its own start
    third = out.rounds[2]
    expected = (
        {"round": 1, "step": second["stopped_above"]}
        if second["stopped_above"] is not None
        else second["started_from"]
    )
    assert third["started_from"] == expected
    # without relax.search_until there is no frontier to resume from
    from nft_fw.spec.campaign import CampaignError, load_campaign

    with pytest.raises(CampaignError, match=r"relax\.resume: frontier needs relax\.search_until"):
        load_campaign(tiny(relax={"resume": "frontier"}))


def test_relax_start_after_a_round_that_relaxed_on_past_the_level():
    """A campaign amended to relax.resume: frontier after a round of the start mode resumes
    from that round's frontier (its stored frames end there); a round that never crossed
    hands on its own start; resume: start always relaxes the target."""
    from ase import Atoms

    from nft_fw.spec.campaign import load_campaign
    from nft_fw.steps.step import relax_start

    frames = [Atoms("Pt", positions=[[0, 0, x]]) for x in (0.0, 1.0, 2.0)]
    frontier = load_campaign(tiny(relax={"search_until": 0.5, "resume": "frontier"}))
    ran_on = {"iteration": 2, "n_steps": 301, "searched_until_step": 12, "started_from": None}
    atoms, where = relax_start(frontier, ran_on, frames)
    assert atoms is not None and atoms.positions[0, 2] == 2.0 and where == {"round": 2, "step": 12}
    never = {"iteration": 3, "n_steps": 40, "searched_until_step": 39, "stopped_above": None,
             "started_from": {"round": 2, "step": 12}}  # fmt: skip
    atoms, where = relax_start(frontier, never, frames)
    assert atoms is not None and atoms.positions[0, 2] == 0.0 and where == never["started_from"]
    assert relax_start(frontier, None, frames) == (None, None)
    start = load_campaign(tiny(relax={"search_until": 0.5}))
    assert relax_start(start, ran_on, frames) == (None, None)


def test_relax_check_labels_the_relaxed_structure_and_stops_only_when_it_passes():
    """relax.check_chunks: a relaxation that stays below the threshold is checked on chunks
    of its last frame (its most uncertain atoms) before the phase stops; the next round
    records the previous model's error on them, stops when it is within relax.check_error,
    and otherwise trains on them, relaxes again and asks for a new check."""
    from nft_fw import relax_locally, run_locally
    from nft_fw.spec.campaign import CampaignError, load_campaign
    from nft_fw.structures.chunks import cut

    base = {"max_steps": 12, "max_rounds": 2, "patience": 5, "threshold": 100.0}
    result = run_locally(tiny(relax=base), progress=False)
    top = {"check_selection": "most_uncertain"}  # δ's largest first
    passing = relax_locally(
        result,
        relax_spec=load_campaign(
            tiny(relax={**base, **top, "check_chunks": 2, "check_error": 100.0})
        ).relax_settings,
        progress=False,
    )
    first, second = passing.rounds
    # round 0 stays below the threshold: it asks for two chunks of its relaxed structure
    assert first["check_asked"] == 2 and "check" not in first
    last = passing.trajectories[0].frames[-1]
    ranked = np.argsort(-passing.trajectories[0].deltas[-1], kind="stable")
    assert [lb.centre for lb in passing.labels] == [int(i) for i in ranked[:2]]
    radius = passing.labels[0].radius
    assert [lb.hash for lb in passing.labels] == [
        cut(last, int(i), radius).hash for i in ranked[:2]
    ]
    # round 1 records the check: round 0's model on them, before training
    check = second["check"]
    assert check == {
        "round": 0, "n": 2, "mae": second["oos_mae"], "max": second["oos_max"],
        "tolerance": 100.0, "passed": True,
    }  # fmt: skip
    assert passing.stop.reason == "threshold" and "passed" in passing.stop.detail
    assert "check_asked" not in second
    # the follower and the report say it
    from nft_fw.cli.campaigns import _phase_line
    from nft_fw.report.relax_plots import markdown

    words = "the relaxed structure of round 0 checked on 2 of its chunks"
    assert words in _phase_line(second) and "2 chunks of its end" in _phase_line(first)
    assert f"- round 1: {words}" in markdown(passing.rounds, [], None)

    failing = relax_locally(
        result,
        relax_spec=load_campaign(
            tiny(relax={**base, "check_chunks": 2, "check_error": 1e-9})
        ).relax_settings,
        progress=False,
    )
    assert len(failing.rounds) == 3
    assert [r.get("check_asked") for r in failing.rounds] == [2, 2, None]
    assert [r["check"]["passed"] for r in failing.rounds[1:]] == [False, False]
    assert failing.stop.reason == "max_rounds"
    assert "failed" in failing.stop.detail and "before the relaxed structure passed" in (
        failing.stop.detail
    )
    assert len({lb.hash for lb in failing.labels}) == 4
    # the default, cover: the checked atoms spread over the relaxed structure's environments
    # (farthest-point sampling of its descriptors from its most uncertain atom), not δ's top
    from nft_fw.potential import descriptors as desc
    from nft_fw.potential.selection import farthest_point, standardise

    frame, delta = failing.trajectories[0].frames[-1], failing.trajectories[0].deltas[-1]
    x = standardise(np.asarray(desc.features(frame, result.calculator.ensemble.spec)))
    spread = farthest_point(x, 2, first=int(np.argmax(delta)))
    assert [lb.centre for lb in failing.labels if lb.iteration == 1] == spread
    assert [lb.hash for lb in failing.labels if lb.iteration == 1] == [
        cut(frame, i, radius).hash for i in spread
    ]
    # without the check the same model stops at round 0
    plain = relax_locally(result, progress=False)
    assert len(plain.rounds) == 1 and plain.stop.reason == "threshold" and not plain.labels

    for section, words in (
        ({"check_chunks": 2}, "relax.check_chunks needs relax.check_error"),
        ({"check_error": 0.1}, "relax.check_error is set and relax.check_chunks is 0"),
        (
            {"check_chunks": 2, "check_error": 0.1, "retrain": False},
            "relax.check_chunks needs relax.retrain: true",
        ),
    ):
        with pytest.raises(CampaignError, match=words):
            load_campaign(tiny(relax=section))
