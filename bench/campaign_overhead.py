"""Where the wall time of a service campaign goes: the tasks, and FireWorks around them.

    .venv/bin/python bench/campaign_overhead.py [campaign.yaml] [--workers 1]
    .venv/bin/python bench/campaign_overhead.py --dft-shaped [--rounds 11]

Runs the campaign (default: the demo's Pt260/EMT) on a fresh embedded server in a
temporary directory with local worker processes, then splits the wall time using the
records: each campaign task stores its own duration (``task_seconds``), of which the parent
single points and the trainers' work are broken out; the rest of the wall — checking
Fireworks out and in (FireWorks refreshes the campaign's workflow on each), polling,
database round trips, worker start-up — is the orchestration. With one worker the Fireworks
run one after another, so the shares add up to the wall time.

``--dft-shaped`` runs a campaign laid out like a DFT one, with EMT labels: one chunk per
label Firework, 26 label Fireworks a round, ``--rounds`` NFT iterations after the initial
one (11: 310 Fireworks in the one workflow), a small fast model; it prints the
orchestration cost per launch as the workflow grows (first and last rounds).
"""

from __future__ import annotations

import argparse
import itertools
import logging
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from nft_fw.cli import run_campaign
from nft_fw.firetasks.nft import TASK_SECONDS
from nft_fw.launchpad import records
from nft_fw.launchpad.connection import connect
from nft_fw.spec.campaign import load_campaign, prepare

HERE = Path(__file__).resolve().parent.parent


def dft_shaped(rounds: int) -> dict[str, Any]:
    return {
        "name": "dft-shaped",
        "target": {
            "builder": {"kind": "octahedron", "element": "Pt", "length": 9, "cutoff": 3},
            "rattle": {"stdev": 0.05, "seed": 0},
        },
        "parent": {"name": "emt"},
        "initial": {"generator": "bulk", "n_structures": 10, "n_candidates": 20},
        "model": {"cutoff": 4.5, "hidden_layers": [8], "ensemble_size": 2, "n_radial": 6},
        "training": {"initial_steps": 50, "steps_per_iteration": 20},
        "nft": {
            "chunks_per_iteration": 26,
            "max_iterations": rounds,
            "threshold": 0.0001,
            "patience": 100,
            "chunk_radius": 12,
        },
        "service": {"labels_per_firework": 1},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("campaign", nargs="?", default=str(HERE / "nft_fw/examples/pt260-emt.yaml"))
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--dft-shaped", action="store_true")
    parser.add_argument("--rounds", type=int, default=11)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    spec = dft_shaped(args.rounds) if args.dft_shaped else args.campaign
    prepared = prepare(load_campaign(spec))
    name = prepared.spec.name
    with tempfile.TemporaryDirectory() as tmp, connect(data_dir=Path(tmp) / "db") as conn:
        t0 = time.monotonic()
        code = run_campaign(conn, prepared, args.workers, Path(tmp) / "w", Path(tmp) / "r")
        wall = time.monotonic() - t0
        lp = conn.launchpad
        db = lp.db
        label_s = sum(d.get("seconds", 0.0) for d in records.labels(db, name))
        train_s = sum(r["timings"]["total_s"] for r in records.iterations(db, name))
        fws = {d["fw_id"]: d for d in lp.fireworks.find({"spec.campaign": name})}
        task = {"init": 0.0, "label": 0.0, "train": 0.0, "report": 0.0, "relax": 0.0}
        per_round: dict[int, list[float]] = {}
        launches = list(lp.launches.find({"fw_id": {"$in": list(fws)}}))
        for launch in launches:
            fw = fws[launch["fw_id"]]
            seconds = ((launch.get("action") or {}).get("stored_data") or {}).get(TASK_SECONDS)
            if seconds is None:
                raise SystemExit(f"launch {launch['launch_id']} has no {TASK_SECONDS}")
            task[fw["spec"]["nft_role"]] = task.get(fw["spec"]["nft_role"], 0.0) + seconds
            if fw["spec"]["nft_role"] == "label":
                per_round.setdefault(fw["spec"]["nft_round"], []).append(launch["launch_id"])
        n_wf = lp.workflows.count_documents({"metadata.campaign": name})
    in_tasks = sum(task.values())
    other = wall - in_tasks
    print(
        f"campaign {name}: exit {code}, {len(fws)} Fireworks in {n_wf} workflow(s), "
        f"{len(launches)} launches, {args.workers} worker(s)"
    )
    print(f"wall time                            {wall:8.1f} s")
    print(f"  inside tasks                       {in_tasks:8.1f} s  {in_tasks / wall:6.1%}")
    print(f"    parent single points (labels)    {label_s:8.1f} s  {label_s / wall:6.1%}")
    print(f"    training + prediction (trainer)  {train_s:8.1f} s  {train_s / wall:6.1%}")
    print(f"  orchestration (everything else)    {other:8.1f} s  {other / wall:6.1%}")
    print(f"  orchestration per launch           {other / len(launches):8.3f} s")
    if args.dft_shaped and args.workers == 1:
        # with one worker, a launch's orchestration is the gap between its task and the
        # previous one; the gaps of the label launches of the first and last rounds show how
        # it grows with the workflow
        gaps = _gaps(launches, fws)
        for k in (min(per_round), max(per_round)):
            g = [gaps[i] for i in per_round[k] if i in gaps]
            print(
                f"  round {k:2d} label launches: median orchestration {statistics.median(g):.3f} s"
                f" ({len(g)} launches, workflow of {_size_after(fws, k)} Fireworks)"
            )


def _gaps(launches: list[dict[str, Any]], fws: dict[int, Any]) -> dict[int, float]:
    """Per launch id: its wall (from the previous launch's end to its own end) minus its
    task's time — the orchestration it cost (one worker: launches run back to back)."""
    import datetime as dt

    def t(x: Any) -> dt.datetime:
        return dt.datetime.fromisoformat(x) if isinstance(x, str) else x

    done = sorted(
        ((t(d["time_end"]), d) for d in launches if d.get("time_end")), key=lambda x: x[0]
    )
    out = {}
    for (prev_end, _), (end, d) in itertools.pairwise(done):
        seconds = d["action"]["stored_data"][TASK_SECONDS]
        out[d["launch_id"]] = (end - prev_end).total_seconds() - seconds
    return out


def _size_after(fws: dict[int, Any], k: int) -> int:
    """Fireworks in the workflow while round ``k``'s labels run."""
    return sum(
        1
        for d in fws.values()
        if d["spec"].get("nft_round") is None
        or d["spec"]["nft_round"] <= k
        or (d["spec"]["nft_role"] == "train" and d["spec"]["nft_round"] == k)
    )


if __name__ == "__main__":
    main()
