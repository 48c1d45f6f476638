"""Queue throughput: 200 trivial Fireworks drained by 1 and by 2 worker processes.

Usage: .venv/bin/python bench/queue_throughput.py [--n 200] [--layouts independent,flat]
           [--workers 1,2]

Layouts: N one-Firework workflows (queue-bound), one N-Firework workflow (FireWorks
refreshes the whole workflow on every state change), and N−1 parents of one child
("fanin": a round's labels linked to their trainer; nft-fw keeps a round to at most
``service.max_label_fireworks`` label Fireworks, 64 by default).
Fireworks/s is measured from the first launch start to the last launch end
recorded in the database, so worker start-up is excluded; the wall time from
spawning the workers to the last completion is printed too.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

from fireworks import Firework, Workflow

from nft_fw.firetasks.smoke import SumTask
from nft_fw.launchpad.connection import connect


def _layout(kind: str, n: int) -> list[Workflow]:
    if kind == "independent":
        return [
            Workflow([Firework(SumTask(tag=f"t{i}", values=[i]))], name=f"w{i}") for i in range(n)
        ]
    if kind == "fanin":  # n parents of one child: a round's labels linked to its trainer
        parents = [Firework(SumTask(tag=f"t{i}", values=[i])) for i in range(n - 1)]
        child = Firework(SumTask(tag="child", values=[0]), parents=parents)
        return [Workflow([*parents, child], name="fanin")]
    return [Workflow([Firework(SumTask(tag=f"t{i}", values=[i])) for i in range(n)], name="flat")]


def run_case(conn, kind: str, n: int, n_workers: int, work: Path) -> dict[str, float]:
    lp = conn.launchpad
    lp.reset("", require_password=False, max_reset_wo_password=10**6)
    for wf in _layout(kind, n):
        lp.add_wf(wf)
    t0 = time.monotonic()
    procs = [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "nft_fw",
                "worker",
                "--data-dir",
                conn.server.data_dir,
                "--db-name",
                conn.db_name,
                "--idle-timeout",
                "1",
                "--poll",
                "0.2",
                "--work-dir",
                str(work / f"{kind}{n_workers}-{i}"),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        for i in range(n_workers)
    ]
    while lp.fireworks.count_documents({"state": "COMPLETED"}) < n:
        time.sleep(0.2)
    wall = time.monotonic() - t0
    for p in procs:
        p.wait()
    launches = list(lp.launches.find({}, {"time_start": 1, "time_end": 1}))
    # FireWorks stores launch times as ISO strings.
    ends = [datetime.fromisoformat(str(d["time_end"])) for d in launches]
    starts = [datetime.fromisoformat(str(d["time_start"])) for d in launches]
    span = (max(ends) - min(starts)).total_seconds()
    assert len(launches) == n, f"{len(launches)} launches for {n} Fireworks"
    return {"fw_per_s": n / span, "span_s": span, "wall_s": wall}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=200)
    parser.add_argument(
        "--layouts", default="independent,flat", help="comma-separated: independent, flat, fanin"
    )
    parser.add_argument("--workers", default="1,2", help="comma-separated worker counts")
    args = parser.parse_args()
    names = {
        "independent": f"{args.n} one-Firework workflows",
        "flat": f"one {args.n}-Firework workflow",
        "fanin": f"{args.n - 1} parents of one child",
    }
    with (
        tempfile.TemporaryDirectory() as tmp,
        connect(data_dir=Path(tmp) / "db", db_name="bench_queue", fw_log_level="ERROR") as conn,
    ):
        print(f"{args.n} trivial Fireworks, embedded SecantusDB, {conn.description}")
        print(f"{'layout':<32}{'workers':>8}{'Fireworks/s':>13}{'span s':>9}{'wall s':>9}")
        for kind in args.layouts.split(","):
            label = names[kind]
            for n_workers in (int(w) for w in args.workers.split(",")):
                r = run_case(conn, kind, args.n, n_workers, Path(tmp))
                print(
                    f"{label:<32}{n_workers:>8}{r['fw_per_s']:>13.1f}{r['span_s']:>9.1f}{r['wall_s']:>9.1f}"
                )


if __name__ == "__main__":
    main()
