"""One round of N labels (default 1,000) drained by W worker processes (default 4).

    .venv/bin/python bench/round_fanout.py [--n 1000] [--workers 4] [--json] [--labels-only]
        [--max-label-fireworks K] [--data-dir DIR --db-name NAME]
        (--data-dir: use a running server and keep the database)

A campaign whose initial set has N bulk Pt cells labelled by EMT. Round 0 has at most
``service.max_label_fireworks`` label Fireworks (default 64: N = 1,000 gives 63 of 16
cells), all feeding the round's trainer in the campaign's one workflow; one NFT iteration
and the report follow. Prints the labels per second from the first label launch to the
last label's end, the delay from that end to the trainer's start, the workflow document's
size, and the wall time; also checks what the load test asserts (each label Firework
launched once, one label per cell, one trainer). With ``--json`` the figures are printed as
one JSON object (the load test reads them). With ``--labels-only`` the init Firework runs in
this process and the workers take only label Fireworks: the round's trainer is left READY
(the load test; the trainer's own cost, features of N images, is not the queue's).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import bson
from fireworks import FWorker
from fireworks.core.rocket_launcher import launch_rocket

from nft_fw.firetasks.submission import submit
from nft_fw.launchpad import records
from nft_fw.launchpad.connection import connect
from nft_fw.spec.campaign import load_campaign, prepare


def campaign(name: str, n: int, max_label_fireworks: int = 64) -> dict[str, Any]:
    return {
        "name": name,
        "target": {"builder": {"kind": "octahedron", "element": "Pt", "length": 4, "cutoff": 1}},
        "parent": {"name": "emt"},
        "initial": {"generator": "bulk", "n_structures": n, "n_candidates": n},
        "model": {"cutoff": 4.5, "hidden_layers": [8], "ensemble_size": 2, "n_radial": 6},
        "training": {"initial_steps": 50, "steps_per_iteration": 20},
        "nft": {
            "chunks_per_iteration": 2,
            "max_iterations": 1,
            "threshold": 0.01,
            "chunk_radius": 12,
        },
        "service": {"labels_per_firework": 1, "max_label_fireworks": max_label_fireworks},
    }


def _time(t: datetime | str) -> datetime:
    return datetime.fromisoformat(t) if isinstance(t, str) else t


def run(
    conn: Any,
    name: str,
    n: int,
    workers: int,
    work: Path,
    labels_only: bool = False,
    max_label_fireworks: int = 64,
) -> dict[str, Any]:
    lp = conn.launchpad
    t_prep = time.monotonic()
    submit(lp, prepare(load_campaign(campaign(name, n, max_label_fireworks))))
    category: list[str] = []
    if labels_only:  # the init Firework runs here; the workers take its label Fireworks
        (work / "init").mkdir()
        cwd = Path.cwd()
        os.chdir(work / "init")
        try:
            assert launch_rocket(lp, FWorker(category="train"))
        finally:
            os.chdir(cwd)
        category = ["--category", "label"]
    prep_s = time.monotonic() - t_prep
    t0 = time.monotonic()
    logs = [work / f"worker-{i}.log" for i in range(workers)]
    procs = []
    for i, log in enumerate(logs):
        with log.open("w") as out:
            args = [sys.executable, "-m", "nft_fw", "worker", "--data-dir",
                    str(conn.server.data_dir), "--db-name", conn.db_name, "--idle-timeout",
                    "10", "--poll", "0.5", "--work-dir", str(work / f"w{i}"), *category]  # fmt: skip
            procs.append(subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT))
    codes = [p.wait() for p in procs]
    wall = time.monotonic() - t0

    db = lp.db
    label_fws = list(
        lp.fireworks.find(
            {"spec.campaign": name, "spec.nft_role": "label", "spec.nft_round": 0},
            {"fw_id": 1, "state": 1, "launches": 1},
        )
    )
    launches = list(lp.launches.find({"fw_id": {"$in": [d["fw_id"] for d in label_fws]}}))
    starts = [_time(d["time_start"]) for d in launches]
    ends = [_time(d["time_end"]) for d in launches if d.get("time_end")]
    trainers = list(
        lp.fireworks.find({"spec.campaign": name, "spec.nft_role": "train", "spec.nft_round": 0})
    )
    trainer_launch = lp.launches.find_one({"fw_id": trainers[0]["fw_id"]}) if trainers else None
    span = (max(ends) - min(starts)).total_seconds()
    wfs = list(lp.workflows.find({"metadata.campaign": name}))
    items_per_fw = [
        len(d["spec"]["_tasks"][0]["items"])
        for d in lp.fireworks.find(
            {"fw_id": {"$in": [d["fw_id"] for d in label_fws]}}, {"spec._tasks.items": 1}
        )
    ]
    log_text = "\n".join(p.read_text() for p in logs)
    images = [d for d in records.labels(db, name) if d["kind"] == "image"]
    return {
        "n": n,
        "workers": workers,
        "worker_exit_codes": codes,
        "campaign_state": records.get_campaign(db, name).get("state"),
        "label_fireworks": len(label_fws),
        "items_per_label_firework": sorted(set(items_per_fw)),
        "label_states": sorted({d["state"] for d in label_fws}),
        "launches_per_label_firework": sorted({len(d["launches"]) for d in label_fws}),
        # a launch id drawn twice makes one launch record replace another Firework's
        "distinct_launch_ids": len({i for d in label_fws for i in d["launches"]}),
        "launch_records": len(launches),
        "image_labels": len(images),
        "distinct_image_labels": len({d["hash"] for d in images}),
        "trainers_round_0": len(trainers),
        "trainer_states": sorted({d["state"] for d in trainers}),
        "labels_per_s": len(images) / span,
        "label_fireworks_per_s": len(ends) / span,
        "label_span_s": span,
        "trainer_start_delay_s": (
            (_time(trainer_launch["time_start"]) - max(ends)).total_seconds()
            if trainer_launch
            else None
        ),
        "workflows": len(wfs),
        "workflow_bytes": max(len(bson.encode(d)) for d in wfs),
        "prepare_submit_s": prep_s,
        "wall_s": wall,
        "log_errors": sorted(
            {w for w in ("DocumentTooLarge", "RecursionError", "Traceback") if w in log_text}
        ),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=1000)
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--labels-only", action="store_true")
    parser.add_argument("--max-label-fireworks", type=int, default=64)
    parser.add_argument("--data-dir", help="a server's data directory (default: a fresh one)")
    parser.add_argument("--db-name", default="bench_fanout")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        data_dir = Path(args.data_dir) if args.data_dir else Path(tmp) / "db"
        with connect(data_dir=data_dir, db_name=args.db_name, fw_log_level="ERROR") as conn:
            if not args.data_dir:
                conn.launchpad.reset("", require_password=False)
            out = run(
                conn, f"fanout-{args.n}", args.n, args.workers, Path(tmp), args.labels_only,
                args.max_label_fireworks,
            )  # fmt: skip
    if args.json:
        print(json.dumps(out))
        return
    print(
        f"{out['n']} labels in {out['label_fireworks']} label Fireworks in round 0, "
        f"{out['workers']} workers, embedded SecantusDB"
    )
    for key, value in out.items():
        print(f"  {key:<30} {value:.3g}" if isinstance(value, float) else f"  {key:<30} {value}")


if __name__ == "__main__":
    main()
