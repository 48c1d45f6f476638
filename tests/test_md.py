"""MD with the ensemble mean and the MD phase's step (no database): a run continued from a
saved state is the uninterrupted run, energy is conserved in NVE, the potential is
invariant under rotation and permutation, a segment cut off mid-way and resumed from its
checkpoint records what the uninterrupted segment records, and the MD phase pauses, labels
chunks of its own frames (each once) and continues from where it paused."""

from __future__ import annotations

import copy
import itertools
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from ase import Atoms
from ase.cluster import Octahedron
from ase.optimize import FIRE
from pulling import pulling
from scipy.spatial.transform import Rotation
from specs import small_campaign

from nft_fw.potential.calculator import EnsembleCalculator
from nft_fw.report import md_plots
from nft_fw.spec.campaign import CampaignError, load_campaign
from nft_fw.steps import md
from nft_fw.structures.atoms_io import extxyz_text, read_extxyz_text

# the kept model of the NFT phase of nft_fw/examples/pt260-md-emt.yaml (bench/data/README.md)
MODEL = Path(__file__).resolve().parent.parent / "bench/data/pt260-emt-model"


def _stored(state: md.MDState) -> md.MDState:
    return md.MDState.from_frame(read_extxyz_text(extxyz_text(state.to_frame()))[0])


@pytest.fixture(scope="module")
def pt260() -> Any:
    """A Pt260 octahedron relaxed with the exported Pt260 EMT model."""
    atoms = Atoms(Octahedron("Pt", 8, 3, latticeconstant=3.92))
    atoms.calc = EnsembleCalculator.load(MODEL)
    FIRE(atoms, logfile=None).run(fmax=0.05, steps=150)
    relaxed = atoms.copy()
    relaxed.calc = None
    return relaxed


@pytest.mark.parametrize("integrator", md.INTEGRATORS)
def test_a_run_continued_from_a_saved_state_is_the_uninterrupted_run(pt260, integrator):
    settings = md.MDSettings(integrator, 900.0, 2.0, thermostat_time_fs=50.0)
    start = md.start(pt260, settings, seed=3)
    whole = md.run(start, EnsembleCalculator.load(MODEL), settings, 30, frame_every=5)
    first = md.run(start, EnsembleCalculator.load(MODEL), settings, 15, frame_every=5)
    rest = md.run(
        _stored(first.state), EnsembleCalculator.load(MODEL), settings, 30, frame_every=5,
        so_far=first,
    )  # fmt: skip
    assert rest.state.step == whole.state.step == 30
    np.testing.assert_allclose(rest.state.atoms.positions, whole.state.atoms.positions, atol=1e-10)
    np.testing.assert_allclose(
        rest.state.atoms.get_momenta(), whole.state.atoms.get_momenta(), atol=1e-10
    )
    assert rest.log["step"] == whole.log["step"] == list(range(31))
    np.testing.assert_allclose(rest.log["max_delta"], whole.log["max_delta"], rtol=1e-9)
    assert rest.frame_steps == whole.frame_steps == [0, 5, 10, 15, 20, 25, 30]
    # the thermostat's noise continued too: a fresh generator would have given other steps
    assert rest.state.rng_state == whole.state.rng_state
    if integrator != "nve":
        other = md.MDState(first.state.atoms, 15, md.start(pt260, settings, seed=4).rng_state)
        moved = md.run(other, EnsembleCalculator.load(MODEL), settings, 30)
        assert np.abs(moved.state.atoms.positions - whole.state.atoms.positions).max() > 1e-6


def test_a_run_whose_model_walks_atoms_into_each_other_ends_there_and_says_so(pt260):
    """A model whose forces pull two atoms together (a fault injected here: 200 eV/Å added
    between atoms 0 and 1 of the exported model's forces) brings them closer than the
    descriptors allow: the segment ends at the last step the model could evaluate, its
    state that step's, and says why — where the run would otherwise fail with an error about
    the input coordinates."""

    settings = md.MDSettings("nve", 300.0, 2.0)
    start = md.start(pt260, settings, seed=0)
    pulled = pulling(EnsembleCalculator.load(MODEL).ensemble, 200.0)
    seg = md.run(start, pulled, settings, 200, threshold=None)
    assert seg.collapsed is not None and "atoms 0 and 1" in seg.collapsed
    last = seg.log["step"][-1]
    assert 0 < last < 200 and seg.collapsed.startswith(f"after step {last}:")
    assert seg.state.step == last and not seg.paused
    state = seg.state.atoms
    assert 0.5 <= np.linalg.norm(state.positions[1] - state.positions[0]) < 2.0
    record = {"collapsed": seg.collapsed, "stopped": True, "end_step": last, "end_ps": last * 0.002,
              "structure_uncertainty": seg.max_uncertainty}  # fmt: skip
    said = md.ending(record)
    assert f"stopped at step {last}" in said and "atoms 0 and 1" in said and "left its data" in said


@pytest.mark.slow
def test_nve_conserves_the_energy_of_the_exported_model_on_pt260(pt260):
    settings = md.MDSettings("nve", 300.0, 5.0)
    seg = md.run(md.start(pt260, settings, seed=0), EnsembleCalculator.load(MODEL), settings, 600)
    total = np.asarray(seg.log["potential_energy"]) + np.asarray(seg.log["kinetic_energy"])
    drift = md.drift_per_atom_per_ps(seg.log, settings.timestep_fs, len(pt260))
    # 3 ps at 5 fs; docs/figures.md ("Learning during MD") gives the measured figures
    assert abs(drift) < 1e-5, drift  # eV/atom/ps
    assert np.std(total) / len(pt260) < 1e-4  # eV/atom
    # from a relaxed start half the kinetic energy goes into potential energy
    assert 120.0 < np.mean(seg.log["temperature_K"][300:]) < 180.0


def test_the_potential_is_invariant_under_rotation_and_permutation(pt260):
    calc = EnsembleCalculator.load(MODEL)
    atoms = pt260.copy()
    atoms.calc = calc
    e0, f0, d0 = atoms.get_potential_energy(), atoms.get_forces(), calc.get_uncertainties()
    rot = Rotation.from_euler("xyz", [0.7, -0.4, 2.2])
    turned = pt260.copy()
    turned.positions = rot.apply(pt260.positions - pt260.get_center_of_mass()) + np.array(
        [3.0, -1.0, 2.0]
    )
    turned.calc = EnsembleCalculator.load(MODEL)
    assert turned.get_potential_energy() == pytest.approx(e0, rel=1e-6, abs=1e-4)
    np.testing.assert_allclose(turned.get_forces(), rot.apply(f0), atol=2e-4)
    np.testing.assert_allclose(turned.calc.get_uncertainties(), d0, atol=2e-4)
    perm = np.random.default_rng(1).permutation(len(pt260))
    shuffled = pt260[perm]
    shuffled.calc = EnsembleCalculator.load(MODEL)
    assert shuffled.get_potential_energy() == pytest.approx(e0, rel=1e-6, abs=1e-4)
    np.testing.assert_allclose(shuffled.get_forces(), f0[perm], atol=2e-4)


def test_bad_md_settings_are_refused_naming_the_field() -> None:
    base = small_campaign("md-bad")
    base["md"] = {"length_ps": 0.1}
    load_campaign(base)
    for change, field in (
        ({"timestep_fs": 0}, "md.timestep_fs"),
        ({"timestep_fs": 25}, "md.timestep_fs"),
        ({"temperature_K": -300}, "md.temperature_K"),
        ({"integrator": "nose-hoover"}, "md.integrator"),
        ({"structure": "relaxed"}, "md.structure"),  # the campaign does not relax
        ({"structure": "ico"}, "md.structure"),  # no such transfer target
        ({"length_ps": 0.001}, "md.length_ps"),  # shorter than a step
        ({"max_pauses": -1}, "md.max_pauses"),
        ({"candidate_threshold": 5.0}, "md.candidate_threshold"),  # above nft.threshold
    ):
        spec = copy.deepcopy(base)
        spec["md"].update(change)
        with pytest.raises(CampaignError, match=field.replace(".", r"\.")):
            load_campaign(spec)


# ----------------------------------------------------------------------------- the MD phase


MD = {
    "temperature_K": 600.0,
    "timestep_fs": 2.0,
    "length_ps": 0.2,
    "threshold": 0.3,
    "chunks_per_pause": 3,
    "max_pauses": 2,
    "frame_every": 10,
    "checkpoint_every": 20,
    # this small model leaves its data at once: run on after the pauses (the resume tests need
    # a long last segment); what stop does is test_an_md_run_out_of_pauses_stops_and_says_so
    "out_of_pauses": "continue",
}


@pytest.fixture(scope="module")
def nft_result() -> Any:
    from nft_fw import run_locally

    spec = small_campaign("md-local")
    spec["md"] = dict(MD)
    return run_locally(load_campaign(spec), progress=False)


@pytest.fixture(scope="module")
def md_run(nft_result: Any) -> Any:
    from nft_fw.runners.local import md_locally

    return md_locally(nft_result, progress=False)


def test_the_md_phase_pauses_labels_its_frames_and_continues_where_it_paused(md_run) -> None:
    segments = md_run.segments
    # this small model is uncertain at 600 K: it pauses as often as allowed, then runs on
    assert [s["paused"] for s in segments] == [True, True, False]
    assert segments[-1]["finished"] and segments[-1]["end_step"] == 100
    for before, after in itertools.pairwise(segments):
        assert after["start_step"] == before["end_step"]
        assert before["structure_uncertainty"] > MD["threshold"]
        assert after["new_chunks"] == before["requested_chunks"] > 0
        assert after["model_from"] == {"phase": "md", "iteration": after["iteration"]}
    for a, b in itertools.pairwise(md_run.runs):
        # the next segment starts at the saved end state, to the bit (stored exactly)
        np.testing.assert_array_equal(b.frames[0].positions, a.state.atoms.positions)
    hashes = [lb.hash for lb in md_run.labels]
    assert len(hashes) == len(set(hashes)) == sum(s["new_chunks"] for s in segments)
    assert {lb.phase for lb in md_run.labels} == {"md"}
    assert all(lb.iteration in (1, 2) for lb in md_run.labels)
    # the last segment may no longer pause, but its δ is still logged, and every step of it
    # above the threshold is counted and said: the run went on outside the model's data
    last = segments[-1]
    assert len(last["log"]["max_delta"]) == 100 - last["start_step"] + 1
    above = sum(d > MD["threshold"] for d in last["log"]["max_delta"][1:])
    assert not last["watched"] and last["steps_above_threshold"] == above > 0
    assert last["end_reason"] == "length" and not last["stopped"]
    warning = md.left_data(segments)
    assert warning is not None and f"MD ran {above} steps" in warning
    assert f"end, {above} steps above δ threshold unwatched" in md_plots.markdown(segments)
    assert all(s["watched"] and s["end_reason"] == "pause" for s in segments[:-1])


def test_a_segment_resumed_from_its_checkpoint_records_the_uninterrupted_segment(
    nft_result, md_run
) -> None:
    from nft_fw.potential import model as mdl
    from nft_fw.runners.local import stored_state
    from nft_fw.steps import step

    prepared = nft_result.prepared
    labels = [*nft_result.labels, *md_run.labels]
    previous = md_run.runs[1]  # segment 2 continues from where segment 1 paused
    saved: list[md.MDResume] = []

    class Killed(Exception):
        pass

    def checkpoint(resume: md.MDResume) -> None:
        if resume.segment.n_rows > 20:  # after training and 20 steps: the worker dies
            saved.append(
                md.MDResume(
                    mdl.Ensemble.from_bytes(resume.ensemble.to_bytes()),
                    copy.deepcopy(resume.metrics),
                    copy.deepcopy(resume.oos),
                    md.segment_from(
                        copy.deepcopy(resume.segment.to_dict()),
                        read_extxyz_text(extxyz_text(resume.segment.frames)),
                        _stored(resume.segment.state),
                    ),
                )
            )
            raise Killed

    # segment 2's inputs (its model: the phase's last, which it retrains from again)
    model = md_run.calculator.ensemble

    def inputs(**extra: Any) -> step.MDInputs:
        return step.MDInputs(
            prepared, 2, mdl.Ensemble.from_bytes(model.to_bytes()), {"phase": "md", "iteration": 1},
            stored_state(previous.state), nft_result.images, labels,
            history=nft_result.history, segments=md_run.segments[:2],
            features=nft_result.features, **extra,
        )  # fmt: skip

    with pytest.raises(Killed):
        step.md_step(inputs(checkpoint=checkpoint))
    killed_at = saved[0].segment.state.step
    assert killed_at > previous.state.step + 20
    resumed = step.md_step(inputs(resume=saved[0]))
    whole = step.md_step(inputs())
    assert resumed.record["resumed_from_step"] == killed_at
    assert "resumed_from_step" not in whole.record
    assert resumed.record["training"]["loss"] == whole.record["training"]["loss"]
    for key in ("step", "max_delta", "temperature_K", "potential_energy"):
        np.testing.assert_allclose(resumed.record["log"][key], whole.record["log"][key], rtol=1e-9)
    np.testing.assert_allclose(
        resumed.segment.state.atoms.positions, whole.segment.state.atoms.positions, atol=1e-10
    )
    assert resumed.record["frame_steps"] == whole.record["frame_steps"]


@pytest.mark.slow
def test_a_campaign_started_from_the_exported_labels_replays_its_md_without_the_parent(
    nft_result, md_run, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An exported model's labels (NFT and MD chunks) as prior_labels: the campaign retrains
    the same model from them and its MD phase cuts the same chunks, all from the file."""
    from specs import count_parent_calls as _count_parent_calls

    from nft_fw.labels import files as labelset
    from nft_fw.runners import local as loop

    labelset.write(tmp_path / "md.extxyz", loop.label_frames(nft_result, md_run.labels))
    calls: list[int] = []
    prepare = loop.prepare
    monkeypatch.setattr(loop, "prepare", lambda spec: _count_parent_calls(prepare(spec), calls))
    spec = small_campaign("md-local")
    spec["md"] = dict(MD)
    spec["prior_labels"] = {"file": str(tmp_path / "md.extxyz")}
    again = loop.run_locally(load_campaign(spec), progress=False)
    replay = loop.md_locally(again, progress=False)
    assert calls == []  # no label computed again
    keys = ("start_step", "end_step", "paused", "new_chunks", "structure_uncertainty")
    assert [[s[k] for k in keys] for s in replay.segments] == [
        [s[k] for k in keys] for s in md_run.segments
    ]
    assert sorted(lb.hash for lb in replay.labels) == sorted(lb.hash for lb in md_run.labels)
    np.testing.assert_array_equal(
        replay.runs[-1].state.atoms.positions, md_run.runs[-1].state.atoms.positions
    )


@pytest.fixture(scope="module")
def md_hotter(nft_result: Any, md_run: Any, tmp_path_factory: pytest.TempPathFactory) -> Any:
    """The campaign again from md_run's exported labels, with its MD at 900 K instead of
    600 K: another run, whose pauses come at other steps; parent calls counted."""
    from specs import count_parent_calls as _count_parent_calls

    from nft_fw.labels import files as labelset
    from nft_fw.runners import local as loop

    path = tmp_path_factory.mktemp("md-hotter") / "md.extxyz"
    labelset.write(path, loop.label_frames(nft_result, md_run.labels))
    calls: list[int] = []
    spec = small_campaign("md-local")
    spec["md"] = {**MD, "temperature_K": 900.0}
    spec["prior_labels"] = {"file": str(path)}
    prepare = loop.prepare
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(loop, "prepare", lambda s: _count_parent_calls(prepare(s), calls))
        again = loop.run_locally(load_campaign(spec), progress=False)
        return loop.md_locally(again, progress=False), calls


@pytest.mark.slow
def test_md_pauses_of_another_run_take_the_exported_md_chunks_first(md_run, md_hotter) -> None:
    """MD pauses follow the file as relax rounds do: a run at another temperature pauses
    where its own δ says, and each pause takes the file's MD chunks of that pause (no parent
    call), so every MD label given is trained on; the pauses after the file's choose their
    own."""
    hotter, calls = md_hotter
    paused = [s for s in hotter.segments if s["paused"]]
    ours = [s for s in md_run.segments if s["paused"]]
    assert len(paused) == len(ours) == MD["max_pauses"]
    # another run: its own trajectory
    assert not np.allclose(
        hotter.runs[-1].state.atoms.positions, md_run.runs[-1].state.atoms.positions
    )
    assert [s["next_from_prior"] for s in paused] == [s["requested_chunks"] for s in ours]
    for number in (1, 2):  # segment k trains on the file's chunks of segment k
        given = sorted(lb.hash for lb in md_run.labels if lb.iteration == number)
        taken = sorted(lb.hash for lb in hotter.labels if lb.iteration == number)
        assert taken == given
    assert calls == []  # every MD chunk came from the file
    assert [s["new_chunks"] for s in hotter.segments] == [s["new_chunks"] for s in md_run.segments]


STOP = {**{k: v for k, v in MD.items() if k != "out_of_pauses"}, "max_pauses": 1}


@pytest.fixture(scope="module")
def md_stopped(nft_result: Any) -> Any:
    from nft_fw.runners.local import md_locally
    from nft_fw.spec.campaign import MDSpec

    return md_locally(nft_result, md_spec=MDSpec(**STOP), progress=False)


def test_md_threshold_on_delta_watches_delta_as_the_ensemble_gives_it(
    nft_result: Any, md_stopped: Any
) -> None:
    """md.threshold_on: delta — the pause comes at the first step whose uncalibrated δ
    exceeds the threshold (the segment records scale 1); the default watches δ times the
    fitted scale, which this campaign's out-of-sample errors put away from 1."""
    from nft_fw.runners.local import md_locally
    from nft_fw.spec.campaign import MDSpec

    default = md_stopped.segments[0]
    assert abs(default["delta_scale"] - 1.0) > 0.05
    raw = md_locally(nft_result, md_spec=MDSpec(**STOP, threshold_on="delta"), progress=False)
    first = raw.segments[0]
    assert first["delta_scale"] == 1.0
    assert first["end_reason"] == "pause"
    assert first["structure_uncertainty"] > STOP["threshold"]
    log = raw.runs[0].log
    assert max(log["max_delta"][1:-1], default=0.0) <= STOP["threshold"]  # not before it


def test_an_amended_threshold_and_temperature_hold_from_the_next_segment(
    nft_result: Any, md_stopped: Any, tmp_path: Path
) -> None:
    """`nft-fw amend` of md.threshold and md.temperature_K between segments: the next segment
    runs and records them (the one before keeps its own), the table and the figure show
    each segment's; a candidate threshold above the amended threshold is refused."""
    import dataclasses

    from nft_fw.runners.local import stored_state
    from nft_fw.spec.amend import amend
    from nft_fw.steps import step

    data = small_campaign("md-local")
    data["md"] = dict(STOP)
    new, changes = amend(data, {"md.threshold": 1000.0, "md.temperature_K": 900.0})
    assert changes == {"md.threshold": [0.3, 1000.0], "md.temperature_K": [600.0, 900.0]}
    with pytest.raises(CampaignError, match=r"md\.candidate_threshold"):
        amend(data, {"md.candidate_threshold": 0.5})  # above the threshold of 0.3
    prepared = dataclasses.replace(nft_result.prepared, spec=load_campaign(new))
    first, stopped = md_stopped.segments
    # segment 1 again, as the worker runs it after the amendment: where segment 0 paused,
    # with its chunks, the model it was trained on
    out = step.md_step(
        step.MDInputs(
            prepared, 1, md_stopped.calculator.ensemble, stopped["model_from"],
            stored_state(md_stopped.runs[0].state), nft_result.images,
            [*nft_result.labels, *md_stopped.labels], history=nft_result.history,
            segments=[first], features=nft_result.features,
        )
    )  # fmt: skip
    again = out.record
    # under the old settings it stopped above 0.3; now it runs to its length at 900 K
    assert stopped["end_reason"] == "out_of_pauses" and again["end_reason"] == "length"
    assert (again["threshold"], again["temperature_K"]) == (1000.0, 900.0)
    assert (first["threshold"], first["temperature_K"]) == (0.3, 600.0)
    assert again["start_step"] == stopped["start_step"] and again["finished"]
    assert again["mean_temperature_K"] > stopped["mean_temperature_K"]
    rows = md_plots.md_table([first, again])
    th, ts = (
        md_plots.MD_COLUMNS.index("threshold (eV/Å)"),
        md_plots.MD_COLUMNS.index("T set / mean (K)"),
    )
    assert [r[th] for r in rows] == ["0.3", "1000"]
    assert [r[ts].split(" / ")[0] for r in rows] == ["600", "900"]
    assert md_plots.plot_md([first, again], tmp_path / "md.png").stat().st_size > 0


def test_an_md_run_out_of_pauses_stops_and_says_so(md_stopped) -> None:
    """md.out_of_pauses: stop (the default): once the pauses are spent, the first step above
    the threshold ends the phase, recorded as stopped, with nothing labelled there."""
    segments = md_stopped.segments
    assert [s["end_reason"] for s in segments] == ["pause", "out_of_pauses"]
    last = segments[-1]
    assert last["stopped"] and last["watched"] and not last["paused"]
    assert not last["finished"] and last["end_step"] < last["total_steps"]
    assert last["stop_step"] == last["end_step"] and last["structure_uncertainty"] > 0.3
    assert last["log"]["max_delta"][-1] > STOP["threshold"] >= max(last["log"]["max_delta"][1:-1],
                                                                   default=0.0)  # fmt: skip
    assert "requested_chunks" not in last and last["steps_above_threshold"] == 1
    assert len(md_stopped.labels) == segments[0]["requested_chunks"]  # none at the stop
    said = md.left_data(segments)
    assert said is not None and f"stopped at step {last['end_step']}" in said
    assert "md.max_pauses" in said and "stopped: left its data" in md_plots.markdown(segments)


# ----------------------------------------------------------------------------- the service


@pytest.fixture(scope="module")
def service(db_server: Any, tmp_path_factory: pytest.TempPathFactory) -> Any:
    """The same campaign through the service: a real server and one worker process."""
    import uuid

    from nft_fw.cli import run_campaign
    from nft_fw.launchpad.connection import embedded
    from nft_fw.spec.campaign import prepare

    tmp = tmp_path_factory.mktemp("md-service")
    conn = embedded(db_server.data_dir, db_name=f"t_{uuid.uuid4().hex[:12]}", start=False)
    conn.launchpad.reset("", require_password=False)
    spec = small_campaign("md-local")
    spec["md"] = dict(MD)
    code = run_campaign(conn, prepare(load_campaign(spec)), 1, tmp / "workers", tmp / "report")
    yield conn, code, tmp
    conn.launchpad.connection.drop_database(conn.db_name)
    conn.close(stop_server=False)


@pytest.mark.integration
def test_the_service_runs_the_md_phase_as_the_local_runner_does(md_run, service) -> None:
    from service import cli as _cli

    from nft_fw.launchpad import records

    conn, code, tmp = service
    assert code == 0
    db = conn.launchpad.db
    stored = records.iterations(db, "md-local", phase="md")
    assert [
        (r["iteration"], r["start_step"], r["end_step"], r["paused"], r["new_chunks"])
        for r in stored
    ] == [
        (r["iteration"], r["start_step"], r["end_step"], r["paused"], r["new_chunks"])
        for r in md_run.segments
    ]
    for a, b in zip(stored, md_run.segments, strict=True):
        assert a["structure_uncertainty"] == pytest.approx(b["structure_uncertainty"], rel=1e-12)
        np.testing.assert_allclose(a["log"]["max_delta"], b["log"]["max_delta"], rtol=1e-12)
    chunks = [d for d in records.labels(db, "md-local", kind="chunk") if d.get("phase") == "md"]
    assert sorted((d["iteration"], d["centre"]) for d in chunks) == sorted(
        (lb.iteration, lb.centre) for lb in md_run.labels
    )
    assert len({d["hash"] for d in chunks}) == len(chunks)  # every label once
    assert records.iterations(db, "md-local", phase="md_checkpoint") == []
    # the MD segments in nft-fw history, their figure and table in the report
    out = _cli(conn, "history", "md-local", "--phase", "md", "--wide")
    assert out.returncode == 0, out.stderr
    assert "MD segments" in out.stdout and "pause" in out.stdout
    assert (tmp / "report" / "md.png").stat().st_size > 0
    html = (tmp / "report" / "report.html").read_text()
    assert "Molecular dynamics" in html and f"{len(chunks)} chunks labelled" in html
    summary = records.get_campaign(db, "md-local")["summary"]
    assert summary["md"]["pauses"] == 2 and summary["parent_calls"]["md_chunks"] == len(chunks)
    # the export tells MD chunks apart from the NFT chunks of the same numbers
    target = tmp / "labels.extxyz"
    assert _cli(conn, "labels", "md-local", "--export", str(target)).returncode == 0
    from ase.io import read

    frames = [f for f in read(target, ":") if f.info.get("nft_phase") == "md"]
    assert sorted(f.info["nft_number"] for f in frames) == sorted(d["iteration"] for d in chunks)


@pytest.mark.integration
@pytest.mark.slow
def test_the_service_takes_the_exported_md_chunks_at_another_runs_pauses(
    md_run, md_hotter, nft_result, db_server, tmp_path: Path
) -> None:
    """md_hotter through the service: the same segments, and the pauses' label Fireworks take
    the file's MD chunks (cut from the prior chunks stored with the segment, recorded as
    prior labels), none from the parent."""
    import uuid

    from nft_fw.cli import run_campaign
    from nft_fw.labels import files as labelset
    from nft_fw.launchpad import records
    from nft_fw.launchpad.connection import embedded
    from nft_fw.runners import local as loop
    from nft_fw.spec.campaign import prepare

    hotter, _ = md_hotter
    labelset.write(tmp_path / "md.extxyz", loop.label_frames(nft_result, md_run.labels))
    spec = small_campaign("md-local")
    spec["md"] = {**MD, "temperature_K": 900.0}
    spec["prior_labels"] = {"file": str(tmp_path / "md.extxyz")}
    conn = embedded(db_server.data_dir, db_name=f"t_{uuid.uuid4().hex[:12]}", start=False)
    try:
        conn.launchpad.reset("", require_password=False)
        code = run_campaign(conn, prepare(load_campaign(spec)), 1, tmp_path / "w", tmp_path / "r")
        assert code == 0
        db = conn.launchpad.db
        keys = ("iteration", "start_step", "end_step", "paused", "new_chunks", "next_from_prior")
        stored = records.iterations(db, "md-local", phase="md")
        assert [[r.get(k) for k in keys] for r in stored] == [
            [r.get(k) for k in keys] for r in hotter.segments
        ]
        assert all("prior_chunks_file" in r for r in stored if r["paused"])
        chunks = [d for d in records.labels(db, "md-local", kind="chunk") if d["phase"] == "md"]
        assert sorted(d["hash"] for d in chunks) == sorted(lb.hash for lb in md_run.labels)
        assert all("prior_campaign" in d for d in chunks)  # none computed here
    finally:
        conn.launchpad.connection.drop_database(conn.db_name)
        conn.close(stop_server=False)


@pytest.mark.integration
def test_a_killed_md_firework_resumes_from_its_checkpoint(service, monkeypatch) -> None:
    """The last segment is run again, its first run killed after a checkpoint (an injected
    fault): the rerun continues from the checkpoint and records what the segment recorded,
    labelling nothing again."""
    from nft_fw.firetasks import md as md_tasks
    from nft_fw.launchpad import md as md_store
    from nft_fw.launchpad import records

    conn, code, _ = service
    assert code == 0
    db = conn.launchpad.db
    before = records.iterations(db, "md-local", phase="md")[-1]
    n_labels = records.count_labels(db, "md-local")
    save = md_store.put_checkpoint

    class Killed(Exception):
        pass

    def dying(db: Any, name: str, number: int, resume: Any) -> None:
        save(db, name, number, resume)
        if resume.segment.n_rows > 30:
            raise Killed

    monkeypatch.setattr(md_store, "put_checkpoint", dying)
    with pytest.raises(Killed):
        md_tasks.md_segment(db, "md-local", before["iteration"])
    monkeypatch.setattr(md_store, "put_checkpoint", save)
    (left,) = records.iterations(db, "md-local", phase="md_checkpoint")
    assert left["step"] > before["start_step"]
    again = md_tasks.md_segment(db, "md-local", before["iteration"])
    assert again.record["resumed_from_step"] == left["step"]
    for key in ("step", "max_delta", "temperature_K", "kinetic_energy"):
        np.testing.assert_allclose(again.record["log"][key], before["log"][key], rtol=1e-12)
    assert again.record["frame_steps"] == before["frame_steps"]
    assert records.count_labels(db, "md-local") == n_labels
    assert records.iterations(db, "md-local", phase="md_checkpoint") == []


@pytest.mark.integration
@pytest.mark.slow
def test_a_worker_killed_mid_segment_is_recovered_and_the_run_resumes(
    connection: Any, tmp_path: Path
) -> None:
    """A real worker process killed (SIGKILL) in the middle of an MD segment: nft-fw recover
    re-queues the segment's Firework, the next worker continues from the last checkpoint
    and the run ends where the uninterrupted run ends."""
    import json
    import os
    import signal
    import time
    import uuid

    from service import cli as _cli
    from service import submit as _submit
    from service import wait as _wait
    from service import worker as _worker
    from specs import tiny

    from nft_fw.launchpad import records

    lp = connection.launchpad
    name = f"md-kill-{uuid.uuid4().hex[:6]}"
    md_spec = {"length_ps": 6.0, "max_pauses": 0, "checkpoint_every": 100, "frame_every": 50,
               "out_of_pauses": "continue"}  # fmt: skip
    _submit(connection, tiny(name, {"name": "emt", "params": {}}, md=md_spec))
    victim = _worker(connection, tmp_path / "a", "--ping", "0.5", "--poll", "0.2")

    def checkpointed() -> bool:
        return any(d["step"] >= 300 for d in records.iterations(lp.db, name, phase="md_checkpoint"))

    _wait(checkpointed, 300, "an MD checkpoint past step 300")
    os.kill(victim.pid, signal.SIGKILL)
    victim.wait(timeout=10)
    (left,) = records.iterations(lp.db, name, phase="md_checkpoint")
    running = lp.fireworks.find_one({"spec.campaign": name, "state": "RUNNING"})
    assert running["spec"]["nft_phase"] == "md"
    time.sleep(3)
    out = _cli(connection, "recover", name, "--lost-after", "2", "--json")
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["lost_fw_ids"] == [running["fw_id"]]
    rescuer = _worker(
        connection, tmp_path / "b", "--until-done", "--idle-timeout", "8", "--poll", "0.2"
    )
    assert rescuer.wait(timeout=600) == 0
    assert records.get_campaign(lp.db, name)["state"] == "completed"
    (segment,) = records.iterations(lp.db, name, phase="md")
    assert segment["resumed_from_step"] >= left["step"] >= 300
    assert segment["end_step"] == 3000 and segment["finished"]
    assert segment["log"]["step"] == list(range(3001))  # every step once, none twice
    assert records.iterations(lp.db, name, phase="md_checkpoint") == []


@pytest.mark.integration
def test_the_service_stops_md_out_of_pauses_as_the_local_runner_does(
    md_stopped, db_server: Any, tmp_path: Path
) -> None:
    """The same stop through the service, and said where a user looks: the campaign record,
    nft-fw status, the follower's line and the report."""
    import uuid

    from service import cli as _cli

    from nft_fw.cli import run_campaign
    from nft_fw.cli.campaigns import _phase_line
    from nft_fw.launchpad import records
    from nft_fw.launchpad.connection import embedded
    from nft_fw.spec.campaign import prepare

    conn = embedded(db_server.data_dir, db_name=f"t_{uuid.uuid4().hex[:12]}", start=False)
    conn.launchpad.reset("", require_password=False)
    try:
        spec = small_campaign("md-local")
        spec["md"] = dict(STOP)
        prepared = prepare(load_campaign(spec))
        assert run_campaign(conn, prepared, 1, tmp_path / "workers", tmp_path / "report") == 0
        db = conn.launchpad.db
        stored = records.iterations(db, "md-local", phase="md")
        keys = ("iteration", "start_step", "end_step", "end_reason", "stopped", "new_chunks")
        assert [[r[k] for k in keys] for r in stored] == [
            [r[k] for k in keys] for r in md_stopped.segments
        ]
        doc = records.get_campaign(db, "md-local")
        assert doc["md_stop_reason"] == "out_of_pauses"
        last = stored[-1]
        where = f"stopped at step {last['end_step']}"
        assert where in _phase_line({k: v for k, v in last.items() if k != "log"})
        out = _cli(conn, "status", "md-local")
        assert out.returncode == 0, out.stderr
        assert "left its data" in out.stderr and where in out.stderr
        assert where in (tmp_path / "report" / "report.html").read_text()
    finally:
        conn.launchpad.connection.drop_database(conn.db_name)
        conn.close(stop_server=False)


def test_the_md_start_structure_is_chosen_by_one_rule() -> None:
    """md.structure: target, relaxed (the kept round's final structure) or a transfer
    target's name; what is missing is named (the runner and the Firework both ask this)."""
    from nft_fw.steps import step

    spec = small_campaign("md-start")
    spec["transfer"] = [{"name": "big", "builder": {"kind": "octahedron", "element": "Pt",
                                                    "length": 5, "cutoff": 1}}]  # fmt: skip
    target, relaxed, moved = Octahedron("Pt", 3, 1), Octahedron("Pt", 4, 1), Octahedron("Pt", 5, 1)
    transfers = {"big": moved}.get

    def start(structure: str | None, has_relax: bool = True) -> Atoms:
        data = dict(spec, md={"structure": structure}, relax={} if has_relax else None)
        return step.md_start_structure(load_campaign(data), target, lambda: relaxed, transfers)

    assert start(None) is relaxed and start(None, has_relax=False) is target
    assert start("target") is target and start("big") is moved
    # a stored campaign whose transfer structures are missing says which
    data = dict(spec, md={"structure": "big"})
    with pytest.raises(KeyError, match="no transfer target named 'big'"):
        step.md_start_structure(load_campaign(data), target, lambda: relaxed, {}.get)
    data = dict(spec, md={"structure": "relaxed"}, relax={})  # ... and whose rounds are missing
    with pytest.raises(ValueError, match="no relax round ran"):
        step.md_start_structure(load_campaign(data), target, lambda: None, transfers)
