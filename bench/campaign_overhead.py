"""Where the wall time of a service campaign goes: labelling, training, and the rest.

    .venv/bin/python bench/campaign_overhead.py [campaign.yaml] [--workers 1]

Runs the campaign (default: the demo's Pt260/EMT) on a fresh embedded server in a
temporary directory with local worker processes, then splits the wall time using the
records: parent time inside label Fireworks, trainer time (gathering, features,
training, prediction), the init and report Fireworks, and everything else — queue
polling, database round trips, (de)serialisation, process start-up. With one worker
the Fireworks run one after another, so the shares add up to the wall time.
"""

from __future__ import annotations

import argparse
import logging
import tempfile
import time
from datetime import datetime
from pathlib import Path

from nft_fw.campaign import load_campaign, prepare
from nft_fw.cli import run_campaign
from nft_fw.launchpad import records
from nft_fw.launchpad.connection import connect

HERE = Path(__file__).resolve().parent.parent


def _seconds(start: datetime | str, end: datetime | str) -> float:
    """FireWorks stores launch times as datetimes or ISO strings, depending on the path."""

    def parse(t: datetime | str) -> datetime:
        return datetime.fromisoformat(t) if isinstance(t, str) else t

    return (parse(end) - parse(start)).total_seconds()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("campaign", nargs="?", default=str(HERE / "nft_fw/examples/pt260-emt.yaml"))
    parser.add_argument("--workers", type=int, default=1)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    prepared = prepare(load_campaign(args.campaign))
    name = prepared.spec.name
    with tempfile.TemporaryDirectory() as tmp, connect(data_dir=Path(tmp) / "db") as conn:
        t0 = time.monotonic()
        code = run_campaign(conn, prepared, args.workers, Path(tmp) / "w", Path(tmp) / "r")
        wall = time.monotonic() - t0
        db = conn.launchpad.db
        label_s = sum(d.get("seconds", 0.0) for d in records.labels(db, name))
        train_s = sum(r["timings"]["total_s"] for r in records.iterations(db, name))
        fw_run = {"init": 0.0, "label": 0.0, "train": 0.0, "report": 0.0}
        for fw in conn.launchpad.fireworks.find({"spec.campaign": name}):
            for launch in conn.launchpad.launches.find({"fw_id": fw["fw_id"]}):
                if launch.get("time_start") and launch.get("time_end"):
                    fw_run[fw["spec"]["nft_role"]] += _seconds(
                        launch["time_start"], launch["time_end"]
                    )
        n_fw = conn.launchpad.fireworks.count_documents({"spec.campaign": name})
    science = label_s + train_s + fw_run["init"] + fw_run["report"]
    other = wall - science
    print(f"campaign {name}: exit {code}, {n_fw} Fireworks, {args.workers} worker(s)")
    print(f"wall time                          {wall:8.1f} s")
    print(f"  parent single points (labels)    {label_s:8.1f} s  {label_s / wall:6.1%}")
    print(f"  training + prediction (trainer)  {train_s:8.1f} s  {train_s / wall:6.1%}")
    print(f"  init + report Fireworks          {fw_run['init'] + fw_run['report']:8.1f} s")
    print(f"  everything else                  {other:8.1f} s  {other / wall:6.1%}")
    print(
        f"    of which inside label Fireworks {fw_run['label'] - label_s:.1f} s, inside train "
        f"Fireworks {fw_run['train'] - train_s:.1f} s, between Fireworks "
        f"{wall - sum(fw_run.values()):.1f} s (queue, process start, final report)"
    )


if __name__ == "__main__":
    main()
