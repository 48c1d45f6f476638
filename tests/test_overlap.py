"""Overlapping NFT rounds (nft.rounds: overlapping): the rules, a run in one process, and a
service run by three real workers whose recorded arrivals, replayed in one process, give
its history again. EMT."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import pytest
from specs import small_campaign, tiny

RTOL = 1e-12


def test_the_rules_keep_the_flight_full_and_start_on_arrivals() -> None:
    from nft_fw.steps import overlap

    assert overlap.needed(8, 0.25) == 2 and overlap.needed(6, 0.5) == 3
    assert overlap.needed(3, 0.01) == 1 and overlap.needed(4, 1.0) == 4
    history = [{"requested": [1, 2, 3]}, {"requested": [4, 5]}]
    assert overlap.in_flight(history, {1, 4, 9}) == {2, 3, 5}
    assert overlap.in_flight(history, {1, 4, 9}, seeded=[7, 9]) == {2, 3, 5, 7}
    assert overlap.new_chunks(6, 2) == 4 and overlap.new_chunks(6, 6) == 1
    assert overlap.starts(3, 3, 5) and not overlap.starts(2, 3, 5)
    assert overlap.starts(0, 3, 0)  # the last chunk in flight has arrived
    assert overlap.arrivals([1, 2], 3) == 2 and overlap.arrivals([1, 2, 3, 4], 3) == 3


def test_overlapping_rounds_are_refused_with_prior_or_offline_labels(tmp_path: Path) -> None:
    from nft_fw.spec.campaign import load_campaign

    labels = tmp_path / "labels.extxyz"
    labels.write_text("")
    for extra, words in (
        ({"prior_labels": {"file": str(labels)}}, "prior_labels"),
        ({"service": {"offline_labels": True}}, "offline_labels"),
    ):
        spec = tiny(nft={"chunks_per_iteration": 3, "rounds": "overlapping"}, **extra)
        with pytest.raises(ValueError, match=rf"nft\.rounds[\s\S]*{words}"):
            load_campaign(spec)


def test_seed_chunks_need_overlapping_rounds_and_fit_the_target() -> None:
    from nft_fw.spec.campaign import CampaignError, load_campaign, prepare

    with pytest.raises(ValueError, match=r"nft\.seed_chunks[\s\S]*overlapping"):
        load_campaign(tiny(nft={"chunks_per_iteration": 3, "seed_chunks": 4}))
    spec = load_campaign(
        tiny(nft={"chunks_per_iteration": 3, "rounds": "overlapping", "seed_chunks": 10**5})
    )
    with pytest.raises(CampaignError, match=r"nft\.seed_chunks[\s\S]*at most"):
        prepare(spec)


def _overlapping(name: str, **nft: Any) -> dict[str, Any]:
    spec = small_campaign(name)
    spec["nft"].update(
        rounds="overlapping", next_round_after=0.5, max_iterations=4, patience=10, **nft
    )
    spec["service"]["labels_per_firework"] = 1  # one arrival per label Firework
    return spec


def _check_flight(history: list[dict[str, Any]], chunks: int, need: int = 3) -> None:
    """Each trainer kept ``chunks`` in flight (one more where all of them were still in
    flight: a trainer asks for at least one), started only after ``need`` of the previous
    trainer's flight arrived (at most that flight less ``need`` still in flight), asked for no centre twice and trained on
    each chunk once, first where its record says (seed chunks included)."""
    asked: list[int] = list(history[0].get("seeded", []))
    arrived: list[str] = []
    flight = len(asked)  # in flight after the previous trainer asked
    for r in history:
        asked += r.get("requested", [])
        arrived += r.get("arrived", [])
        if r["iteration"] == 0 and r.get("seeded"):
            # trainer 0 waits for the initial images only, not for seed chunks
            assert set(r["in_flight"]) <= set(r["seeded"])
        else:
            assert len(r["in_flight"]) <= max(flight - need, 0)
        if r.get("requested"):
            assert len(r["requested"]) == max(1, chunks - len(r["in_flight"]))
            flight = len(r["requested"]) + len(r["in_flight"])
        assert r["new_chunks"] == len(r.get("arrived", []))
    assert len(asked) == len(set(asked)) and len(arrived) == len(set(arrived))


def test_one_process_runs_overlapping_rounds_and_replays_its_own_record() -> None:
    from nft_fw import run_locally
    from nft_fw.spec.campaign import load_campaign

    spec = load_campaign(_overlapping("overlap-local"))
    first = run_locally(spec, progress=False)
    history = first.history
    assert len(history) == 5 and first.stop.reason == "max_iterations"
    _check_flight(history, 6)
    # next_round_after 0.5 of 6: three chunks arrive per trainer, three stay in flight
    assert [r["new_chunks"] for r in history] == [0, 3, 3, 3, 3]
    assert all(len(r["in_flight"]) == 3 for r in history[1:-1])
    again = run_locally(spec, progress=False, arrivals=history)
    for a, b in zip(history, again.history, strict=True):
        assert a["arrived"] == b["arrived"] and a["requested"] == b["requested"]
        assert b["structure_uncertainty"] == pytest.approx(a["structure_uncertainty"], rel=RTOL)
    with pytest.raises(ValueError, match="never asked for"):
        forged = [dict(r) for r in history]
        forged[1]["arrived"] = ["0" * 64]
        run_locally(spec, progress=False, arrivals=forged)


def test_seed_chunks_are_labelled_before_the_first_model_and_replayed() -> None:
    """Six chunks chosen on descriptors alone are in flight from the start: three arrive
    before trainer 0 (next_round_after 0.5 of 6), the rest train later, and trainer 0 asks
    only for what keeps six in flight."""
    from nft_fw import run_locally
    from nft_fw.spec.campaign import load_campaign, prepare
    from nft_fw.steps.step import seed_requests

    spec = load_campaign(_overlapping("overlap-seeded", seed_chunks=6))
    seeds = [r.centre for r in seed_requests(prepare(spec))]
    assert len(set(seeds)) == 6
    first = run_locally(spec, progress=False)
    history = first.history
    assert history[0]["seeded"] == sorted(seeds)
    assert [r["new_chunks"] for r in history] == [3, 3, 3, 3, 3]
    assert len(history[0]["in_flight"]) == 3 and len(history[0]["requested"]) == 3
    assert set(history[0]["in_flight"]) <= set(seeds)
    _check_flight(history, 6)
    again = run_locally(spec, progress=False, arrivals=history)
    for a, b in zip(history, again.history, strict=True):
        assert a["arrived"] == b["arrived"] and a["requested"] == b["requested"]
        assert b["structure_uncertainty"] == pytest.approx(a["structure_uncertainty"], rel=RTOL)
    forged = [dict(r) for r in history]
    forged[0]["seeded"] = sorted(seeds)[1:]
    with pytest.raises(ValueError, match="seed chunks"):
        run_locally(spec, progress=False, arrivals=forged)


def test_a_first_trainer_that_saw_no_seed_chunk_asks_for_one_more() -> None:
    """On a busy queue trainer 0 may start before any seed chunk has arrived: all six are
    in flight, and it asks for one chunk (a trainer asks for at least one) rather than
    none; the next trains on the six and asks for what fills the flight again."""
    from nft_fw import run_locally
    from nft_fw.spec.campaign import load_campaign, prepare
    from nft_fw.steps.common import ChunkRequest, request_atoms
    from nft_fw.steps.step import seed_requests

    given = _overlapping("overlap-none-seen", seed_chunks=6)
    given["nft"]["max_iterations"] = 1
    spec = load_campaign(given)
    prepared = prepare(spec)
    seeds = seed_requests(prepared)
    record = [
        {"iteration": 0, "seeded": sorted(r.centre for r in seeds), "arrived": []},
        {"iteration": 1, "arrived": [request_atoms(r, prepared.target).hash for r in seeds]},
    ]
    first = run_locally(spec, progress=False, arrivals=record)
    history = first.history
    assert [r["new_chunks"] for r in history] == [0, 6]
    assert len(history[0]["in_flight"]) == 6 and len(history[0]["requested"]) == 1
    assert history[1]["in_flight"] == history[0]["requested"]
    _check_flight(history, 6)
    # one iteration more: the next trainer keeps six in flight again
    (centre,) = history[0]["requested"]
    extra = request_atoms(ChunkRequest(centre, seeds[0].radius, 0), prepared.target).hash
    given["nft"]["max_iterations"] = 2
    record.append({"iteration": 2, "arrived": [extra]})
    history = run_locally(load_campaign(given), progress=False, arrivals=record).history
    assert [r["new_chunks"] for r in history] == [0, 6, 1]
    assert len(history[1]["requested"]) == 5 and len(history[1]["in_flight"]) == 1
    _check_flight(history[:2], 6)  # (the record's iteration 2 is forged to end the run)


@pytest.mark.integration
def test_a_service_run_is_replayed_from_its_recorded_arrivals(
    db_server: Any, tmp_path: Path
) -> None:
    """Three workers, one label per Firework, six seed chunks labelled beside the initial
    images: which chunks each trainer saw is the queue's doing; the records keep it, and one
    process replaying them gives the same history."""
    from nft_fw import run_locally
    from nft_fw.cli import run_campaign
    from nft_fw.launchpad import queue, records
    from nft_fw.launchpad.connection import embedded
    from nft_fw.spec.campaign import load_campaign, prepare
    from nft_fw.steps.step import seed_requests

    name = "overlap"
    conn = embedded(db_server.data_dir, db_name=f"t_{uuid.uuid4().hex[:12]}", start=False)
    conn.launchpad.reset("", require_password=False)
    try:
        spec = load_campaign(_overlapping(name, seed_chunks=6))
        assert run_campaign(conn, prepare(spec), 3, tmp_path / "w", tmp_path / "r") == 0
        db = conn.launchpad.db
        history = records.iterations(db, name)
        assert [r["iteration"] for r in history] == [0, 1, 2, 3, 4]
        assert len(history[0]["seeded"]) == 6
        assert records.get_campaign(db, name)["seed_centres"] == [
            r.centre for r in seed_requests(prepare(spec))
        ]
        _check_flight(history, 6)
        # every chunk asked for ended once, and each label is stored once
        asked = 6 + sum(len(r.get("requested", [])) for r in history)
        ended = records.arrivals(db, name)
        assert len(ended) == asked and {d["state"] for d in ended} == {"labelled"}
        nft_labels = [d for d in records.labels(db, name, kind="chunk") if d["phase"] == "nft"]
        assert len(nft_labels) == asked == len({d["hash"] for d in nft_labels})
        # the chunks still in flight at the stop arrived before what follows NFT ran: the
        # report is the last Firework, and nothing fizzled
        states = queue.state_counts(conn.launchpad, name)
        assert set(states) == {"COMPLETED"}
        trained = {h for r in history for h in r.get("arrived", [])}
        assert trained <= {d["hash"] for d in nft_labels}
        replay = run_locally(spec, progress=False, arrivals=history)
        for a, b in zip(history, replay.history, strict=True):
            assert (a["iteration"], a["n_chunks"], a["new_chunks"]) == (
                b["iteration"], b["n_chunks"], b["new_chunks"]
            )  # fmt: skip
            assert a.get("requested") == b.get("requested")
            assert b["structure_uncertainty"] == pytest.approx(a["structure_uncertainty"], rel=RTOL)
    finally:
        conn.launchpad.connection.drop_database(conn.db_name)
        conn.close(stop_server=False)
