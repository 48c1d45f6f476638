"""One campaign, three ways: in one process (run_locally + relax_locally), through the service
with one worker, and with two. The NFT step and the relax step are each one function
(nft_fw.step), so the three histories must agree: the same chunk centres per iteration and
round, the same counts, structure uncertainties equal (to 1e-12 relative: stored structures
are exact, so the service computes on the very numbers the local run does), the same stop
reasons and kept iteration and round. Real server, real worker processes, EMT."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import pytest
from test_campaign_service import small_campaign
from test_relax_service import RELAX

pytestmark = pytest.mark.integration

NAME = "parity"
RTOL = 1e-12


def parity_campaign() -> dict[str, Any]:
    spec = small_campaign(NAME)
    spec["nft"]["max_iterations"] = 2
    # fresh ensembles each retraining: the case in which the two copies of the relax step
    # used to part (one honoured warm_start, the other did not)
    spec["training"]["warm_start"] = False
    spec["relax"] = dict(RELAX)
    return spec


def _summary(history: list[dict[str, Any]], rounds: list[dict[str, Any]], labels: Any) -> dict:
    return {
        "nft": [
            (r["iteration"], r["n_chunks"], r["new_chunks"], r["structure_uncertainty"])
            for r in history
        ],
        "relax": [
            (r["iteration"], r["n_steps"], r["new_chunks"], r["structure_uncertainty"])
            for r in rounds
        ],
        "centres": sorted(labels),
    }


@pytest.fixture(scope="module")
def local() -> dict[str, Any]:
    from nft_fw import relax_locally, run_locally
    from nft_fw.campaign import load_campaign

    result = run_locally(load_campaign(parity_campaign()), progress=False)
    relaxed = relax_locally(result, progress=False)
    labels = [("nft", lb.iteration, lb.centre) for lb in result.labels]
    labels += [("relax", lb.iteration, lb.centre) for lb in relaxed.labels]
    out = _summary(result.history, relaxed.rounds, labels)
    out.update(
        stop=result.stop.reason,
        kept=result.best_iteration,
        relax_stop=relaxed.stop.reason,
        kept_round=relaxed.kept_round,
    )
    return out


def _service(db_server: Any, tmp: Path, workers: int) -> dict[str, Any]:
    from nft_fw import step
    from nft_fw.campaign import load_campaign, prepare
    from nft_fw.cli import run_campaign
    from nft_fw.launchpad import records
    from nft_fw.launchpad.connection import embedded

    conn = embedded(db_server.data_dir, db_name=f"t_{uuid.uuid4().hex[:12]}", start=False)
    conn.launchpad.reset("", require_password=False)
    try:
        prepared = prepare(load_campaign(parity_campaign()))
        assert run_campaign(conn, prepared, workers, tmp / "workers", tmp / "report") == 0
        db = conn.launchpad.db
        history = records.iterations(db, NAME)
        rounds = records.iterations(db, NAME, phase="relax")
        labels = [
            (d.get("phase", "nft"), d["iteration"], d["centre"])
            for d in records.labels(db, NAME, kind="chunk")
        ]
        doc = records.get_campaign(db, NAME)
        out = _summary(history, rounds, labels)
        out.update(
            stop=doc["stop_reason"],
            kept=history[-1]["best_iteration"],
            relax_stop=doc["relax_stop_reason"],
            kept_round=step.kept_round(rounds, prepared.spec),
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
            assert ra[:3] == rb[:3], (phase, ra, rb)
            assert ra[3] == pytest.approx(rb[3], rel=RTOL), (phase, ra, rb)
    for key in ("stop", "kept", "relax_stop", "kept_round"):
        assert a[key] == b[key], key


@pytest.mark.parametrize("workers", [1, 2])
def test_service_history_equals_the_local_one(
    local: dict[str, Any], db_server: Any, tmp_path: Path, workers: int
) -> None:
    service = _service(db_server, tmp_path, workers)
    # the campaign did what the comparison needs: retrainings in both phases
    assert len(local["nft"]) == 3 and local["nft"][-1][1] > 0
    assert len(local["relax"]) >= 2 and sum(r[2] for r in local["relax"]) > 0
    _assert_same(local, service)
