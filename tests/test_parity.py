"""One campaign, three ways: in one process (run_locally, relax_locally, transfer_locally,
md_locally), through the service with one worker, and with two. The NFT iteration, the relax
round, the transfer and the MD segment are each one function (nft_fw.steps.step), so the three
histories must agree: the same chunk centres per iteration, round and segment, the same
counts, structure uncertainties equal (to 1e-12 relative: stored structures are exact, so
the service computes on the very numbers the local run does), the same stop reasons and
kept iteration and round, the same transfer flags and MD pauses; and the label export of
the service is the local writer's (every frame, number and key; what a label cost in
seconds is the one thing two runs cannot share). Real server, real worker processes, EMT."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from specs import RELAX, small_campaign

pytestmark = pytest.mark.integration

NAME = "parity"
RTOL = 1e-12


def parity_campaign(baseline: str = "none") -> dict[str, Any]:
    spec = small_campaign(NAME)
    spec["model"]["baseline"] = baseline
    spec["nft"]["max_iterations"] = 2
    # fresh ensembles each retraining: the case in which the two copies of the relax step
    # used to part (one honoured warm_start, the other did not)
    spec["training"]["warm_start"] = False
    spec["relax"] = dict(RELAX)
    if baseline != "none":
        # the second variant also resumes each relax round from where the round before
        # first exceeded δ 1.3 (relax.resume: frontier; its start lies above that level)
        spec["relax"].update(search_until=1.3, resume="frontier", max_rounds=3, patience=3)
    # a transfer target (relaxed with the kept model, no learning) and a short MD phase that
    # pauses once, labels, retrains and goes on
    spec["transfer"] = [
        {
            "name": "ico55",
            "builder": {"kind": "icosahedron", "element": "Pt", "shells": 3},
            "rattle": {"stdev": 0.1, "seed": 1},
        }
    ]
    spec["md"] = {
        "temperature_K": 600.0, "timestep_fs": 2.0, "length_ps": 0.06, "threshold": 0.3,
        "chunks_per_pause": 2, "max_pauses": 1, "frame_every": 5, "checkpoint_every": 10,
        "out_of_pauses": "continue",
    }  # fmt: skip
    return spec


def _summary(
    history: list[dict[str, Any]],
    rounds: list[dict[str, Any]],
    transfers: list[dict[str, Any]],
    segments: list[dict[str, Any]],
    labels: Any,
) -> dict:
    return {
        "nft": [
            (r["iteration"], r["n_chunks"], r["new_chunks"], r["structure_uncertainty"])
            for r in history
        ],
        "relax": [
            (
                r["iteration"],
                r["n_steps"],
                r["new_chunks"],
                r["structure_uncertainty"],
                r.get("started_from"),
            )
            for r in rounds
        ],
        "transfer": [
            (
                (r["name"], r["n_steps"], r["flagged"], r["flagged_at_end"]),
                r["structure_uncertainty"],
            )
            for r in transfers
        ],
        "md": [
            (
                (r["iteration"], r["start_step"], r["end_step"], r["end_reason"], r["new_chunks"]),
                r["structure_uncertainty"],
            )
            for r in segments
        ],
        "centres": sorted(labels),
    }


@pytest.fixture(scope="module")
def local(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    return _local("none", tmp_path_factory.mktemp("local"))


def _local(baseline: str, tmp: Path) -> dict[str, Any]:
    from nft_fw import md_locally, relax_locally, run_locally, transfer_locally
    from nft_fw.runners.local import label_frames, write_products
    from nft_fw.spec.campaign import load_campaign

    result = run_locally(load_campaign(parity_campaign(baseline)), progress=False)
    relaxed = relax_locally(result, progress=False)
    moved = transfer_locally(result, relaxed, progress=False)
    run = md_locally(result, relaxed, progress=False)
    labels = [("nft", lb.iteration, lb.centre) for lb in result.labels]
    labels += [("relax", lb.iteration, lb.centre) for lb in relaxed.labels]
    labels += [("md", lb.iteration, lb.centre) for lb in run.labels]
    out = _summary(result.history, relaxed.rounds, moved.records, run.segments, labels)
    out.update(
        stop=result.stop.reason,
        kept=result.best_iteration,
        relax_stop=relaxed.stop.reason,
        kept_round=relaxed.kept_round,
        frames=label_frames(result, [*relaxed.labels, *run.labels]),
        products=_read_products(write_products(tmp / f"local-{baseline}", relaxed, moved, run)),
    )
    return out


def _read_products(files: dict[str, Path]) -> dict[str, list[Any]]:
    from ase.io import read

    return {key: read(path, ":") for key, path in files.items()}


def _service(db_server: Any, tmp: Path, workers: int, baseline: str = "none") -> dict[str, Any]:
    from service import cli as _cli

    from nft_fw.cli import run_campaign
    from nft_fw.launchpad import labels as label_export
    from nft_fw.launchpad import records
    from nft_fw.launchpad.connection import embedded
    from nft_fw.spec.campaign import load_campaign, prepare
    from nft_fw.steps import kept

    conn = embedded(db_server.data_dir, db_name=f"t_{uuid.uuid4().hex[:12]}", start=False)
    conn.launchpad.reset("", require_password=False)
    try:
        prepared = prepare(load_campaign(parity_campaign(baseline)))
        assert run_campaign(conn, prepared, workers, tmp / "workers", tmp / "report") == 0
        db = conn.launchpad.db
        history = records.iterations(db, NAME)
        rounds = records.iterations(db, NAME, phase="relax")
        transfers = records.iterations(db, NAME, phase="transfer")
        segments = records.iterations(db, NAME, phase="md")
        labels = [
            (d.get("phase", "nft"), d["iteration"], d["centre"])
            for d in records.labels(db, NAME, kind="chunk")
        ]
        doc = records.get_campaign(db, NAME)
        out = _summary(history, rounds, transfers, segments, labels)
        out.update(
            stop=doc["stop_reason"],
            kept=history[-1]["best_iteration"],
            relax_stop=doc["relax_stop_reason"],
            kept_round=kept.kept_round(rounds, prepared.spec),
            frames=label_export.frames(db, NAME),
        )
        # what the phases made, written by `nft-fw export --structures` from the database
        cli = _cli(conn, "export", NAME, "--structures", str(tmp / "products"))
        assert cli.returncode == 0, cli.stderr
        out["products"] = _read_products(
            {p.stem: p for p in sorted((tmp / "products").glob("*.extxyz"))}
        )
        _assert_products_are_the_stored_data(db, out["products"], rounds, transfers, segments)
        # the same as ASE trajectories (--format traj)
        cli = _cli(conn, "export", NAME, "--structures", str(tmp / "traj"), "--format", "traj")
        assert cli.returncode == 0, cli.stderr
        _assert_traj_holds_the_extxyz(
            out["products"], _read_products({p.stem: p for p in (tmp / "traj").glob("*.traj")})
        )
        return out
    finally:
        conn.launchpad.connection.drop_database(conn.db_name)
        conn.close(stop_server=False)


def _assert_same(a: dict[str, Any], b: dict[str, Any]) -> None:
    assert a["centres"] == b["centres"]
    for phase in ("nft", "relax"):
        assert len(a[phase]) == len(b[phase]), phase
        for ra, rb in zip(a[phase], b[phase], strict=True):
            assert ra[:3] == rb[:3] and ra[4:] == rb[4:], (phase, ra, rb)
            assert ra[3] == pytest.approx(rb[3], rel=RTOL), (phase, ra, rb)
    for phase in ("transfer", "md"):
        assert [r[0] for r in a[phase]] == [r[0] for r in b[phase]], phase
        for ra, rb in zip(a[phase], b[phase], strict=True):
            assert ra[1] == pytest.approx(rb[1], rel=RTOL), (phase, ra, rb)
    for key in ("stop", "kept", "relax_stop", "kept_round"):
        assert a[key] == b[key], key
    _assert_same_export(a["frames"], b["frames"])
    _assert_same_products(a["products"], b["products"])


#: what a label cost differs between two runs; everything else of an export must not
COST = ("nft_seconds", "nft_scf_iterations")


def _assert_same_export(a: list[Any], b: list[Any]) -> None:
    """`nft-fw labels --export` of the service and label_frames of the local run: the same
    frames in the same order, the same numbers (exact), the same keys."""
    assert [f.info["nft_hash"] for f in a] == [f.info["nft_hash"] for f in b]
    for fa, fb in zip(a, b, strict=True):
        assert {k: v for k, v in fa.info.items() if k not in COST} == {
            k: v for k, v in fb.info.items() if k not in COST
        }
        assert (fa.numbers == fb.numbers).all() and (fa.positions == fb.positions).all()
        assert (fa.get_forces() == fb.get_forces()).all()
        assert fa.calc.results.get("energy") == fb.calc.results.get("energy")


@pytest.mark.parametrize("workers", [1, 2])
def test_service_history_equals_the_local_one(
    local: dict[str, Any], db_server: Any, tmp_path: Path, workers: int
) -> None:
    service = _service(db_server, tmp_path, workers)
    # the campaign did what the comparison needs: retrainings in both phases, a transfer, an
    # MD phase that paused and labelled
    assert len(local["nft"]) == 3 and local["nft"][-1][1] > 0
    assert len(local["relax"]) >= 2 and sum(r[2] for r in local["relax"]) > 0
    assert len(local["transfer"]) == 1
    assert local["md"][0][0][3] == "pause" and local["md"][1][0][4] > 0
    _assert_same(local, service)


def test_with_a_baseline_the_service_history_equals_the_local_one(
    local: dict[str, Any], db_server: Any, tmp_path: Path
) -> None:
    """model.baseline: emt and relax.resume: frontier through both paths (the service's
    stored chunk features hold geometry only; the residual force is formed where the local
    run forms it; a resumed round starts from the stored frame the local run kept)."""
    with_baseline = _local("emt", tmp_path)
    service = _service(db_server, tmp_path, 1, "emt")
    assert len(with_baseline["relax"]) >= 2
    # rounds resumed from where the round before stopped (relax.resume: frontier)
    assert with_baseline["relax"][1][4] == {"round": 0, "step": with_baseline["relax"][0][1] - 1}
    _assert_same(with_baseline, service)
    # and the baseline changed what the campaign did
    assert with_baseline["nft"][0][3] != pytest.approx(local["nft"][0][3], rel=1e-3)


#: the file names of `nft-fw export --structures` by the key the local writer returns
PRODUCT_FILES = {"relaxed": "relaxed", "relax_rounds": "relaxed-rounds",
                 "transfers": "transfers", "md": "md", "md_end": "md-end"}  # fmt: skip


def _assert_same_products(local: dict[str, list[Any]], service: dict[str, list[Any]]) -> None:
    """The local writer and `nft-fw export --structures` write the same files: the same
    frames, positions and figures (to the parity test's 1e-12)."""
    local = {PRODUCT_FILES.get(k, k): v for k, v in local.items()}
    assert sorted(local) == sorted(service)
    assert {"relaxed", "relaxed-rounds", "transfers", "md", "md-end"} <= set(local)
    for key in local:
        assert len(local[key]) == len(service[key]), key
        for fa, fb in zip(local[key], service[key], strict=True):
            assert fa.info.keys() == fb.info.keys(), key
            for k, v in fa.info.items():
                if isinstance(v, float):
                    assert v == pytest.approx(fb.info[k], rel=RTOL, abs=1e-12), (key, k)
                else:
                    assert v == fb.info[k], (key, k)
            assert abs(fa.positions - fb.positions).max() < 1e-9, key


def _assert_traj_holds_the_extxyz(xyz: dict[str, list[Any]], traj: dict[str, list[Any]]) -> None:
    """`--format traj` writes the same files as ASE trajectories: the same frames, positions
    and momenta to the bit, the same info, and each per-atom array in ``info``."""
    assert sorted(xyz) == sorted(traj)
    for key in xyz:
        assert len(xyz[key]) == len(traj[key]), key
        for fa, fb in zip(xyz[key], traj[key], strict=True):
            assert (fa.positions == fb.positions).all() and (fa.numbers == fb.numbers).all()
            assert (fa.get_momenta() == fb.get_momenta()).all(), key
            for k, v in fa.info.items():
                assert np.all(fb.info[k] == v), (key, k)
            if "nft_delta" in fa.arrays:
                assert (np.asarray(fb.info["nft_delta"]) == fa.arrays["nft_delta"]).all(), key


def _assert_products_are_the_stored_data(db: Any, products: dict[str, list[Any]], rounds: Any,
                                         transfers: Any, segments: Any) -> None:  # fmt: skip
    """The exported files hold the stored structures and the records' figures exactly."""
    import numpy as np
    from bson import ObjectId

    from nft_fw.launchpad import md as md_store
    from nft_fw.launchpad import records
    from nft_fw.steps import md

    def stored(file_id: str) -> list[Any]:
        return records.get_structures(db, ObjectId(file_id))

    for frame, r in zip(products["relaxed-rounds"], rounds, strict=True):
        np.testing.assert_array_equal(frame.positions, stored(r["final_file"])[0].positions)
        assert frame.info["max_delta"] == r["final_max_uncertainty"]
    for r in rounds:
        frames = products[f"relax-{r['iteration']}"]
        assert [f.info["step"] for f in frames] == r["frame_steps"]
        for f, s in zip(frames, stored(r["frames_file"]), strict=True):
            np.testing.assert_array_equal(f.positions, s.positions)
            assert f.info["fmax"] == r["steps"][f.info["step"]]["fmax"]
    for frame, r in zip(products["transfers"], transfers, strict=True):
        np.testing.assert_array_equal(frame.positions, stored(r["final_file"])[0].positions)
        assert frame.info["name"] == r["name"] and frame.info["flagged"] == r["flagged"]
    # every stored MD frame once, in order; a pause step kept as the later segment has it
    by_step = {}
    for r in segments:
        for step, f in zip(r["frame_steps"], stored(r["frames_file"]), strict=True):
            row = step - r["log"]["step"][0]
            by_step[step] = (f, r["log"]["temperature_K"][row], r["iteration"])
    assert [f.info["step"] for f in products["md"]] == sorted(by_step)
    for frame in products["md"]:
        f, temperature, segment = by_step[frame.info["step"]]
        np.testing.assert_array_equal(frame.positions, f.positions)
        np.testing.assert_array_equal(frame.arrays[md.DELTA_ARRAY], f.arrays[md.DELTA_ARRAY])
        assert frame.info["temperature_K"] == temperature and frame.info["nft_number"] == segment
    end = md.MDState.from_frame(products["md-end"][0])
    state = md_store.state(db, segments[-1])
    assert end.step == state.step
    np.testing.assert_array_equal(end.atoms.get_momenta(), state.atoms.get_momenta())
