"""Plain FireWorks workers are safe: four concurrent ``rlaunch rapidfire`` processes (FireWorks'
own command, no nft-fw worker loop) run an nft-fw campaign and 80 trivial Fireworks on
the embedded server; every Firework runs once, with distinct launch ids, and the
campaign's workers keep going while a trainer runs (its report waits at the end of the
workflow, so FireWorks sees future work)."""

from __future__ import annotations

import collections
import json
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import pytest
from service import every_log_says
from specs import tiny

pytestmark = [pytest.mark.integration, pytest.mark.slow]

# enough that all four processes draw ids at once while the campaign runs; the id draws
# themselves are hammered harder by tests/test_ids.py (600 launch ids, 4 processes)
N_TRIVIAL = 80


def test_four_plain_rlaunch_processes_run_a_campaign_and_80_fireworks_once(
    connection: Any, tmp_path: Path
) -> None:
    from fireworks import Firework, Workflow

    from nft_fw.firetasks.smoke import SumTask
    from nft_fw.firetasks.submission import submit
    from nft_fw.launchpad import records
    from nft_fw.spec.campaign import load_campaign, prepare

    lp = connection.launchpad
    # a gate held RESERVED with a WAITING child keeps every rapidfire loop polling (FireWorks'
    # future_run_exists) until all four are up; the work is added after that, so a process
    # that starts late on a loaded machine does not find it done
    gate = Firework(SumTask(tag="gate", values=[0]), name="gate")
    lp.add_wf(Workflow([gate, Firework(SumTask(tag="after", values=[0]), parents=[gate])]))
    (gate_id,) = lp.get_fw_ids({"name": "gate"})
    lp.fireworks.update_one({"fw_id": gate_id}, {"$set": {"state": "RESERVED"}})
    rlaunch = Path(sys.executable).parent / "rlaunch"
    procs = []
    for i in range(4):
        work = tmp_path / f"r{i}"
        work.mkdir()
        args = [str(rlaunch), "-l", str(connection.lp_file), "--loglvl", "INFO", "rapidfire",
                "--sleep", "1"]  # fmt: skip
        with open(work.with_suffix(".log"), "wb") as log:
            procs.append(subprocess.Popen(args, cwd=work, stdout=log, stderr=subprocess.STDOUT))
    every_log_says([tmp_path / f"r{i}.log" for i in range(4)], "Sleeping for", procs)

    name = f"plain-{uuid.uuid4().hex[:6]}"
    # the tests' tiny campaign, with two NFT iterations
    spec = tiny(
        name, nft={"chunks_per_iteration": 3, "max_iterations": 2, "threshold": 0.01, "patience": 5}
    )
    submit(lp, prepare(load_campaign(spec)))
    ledger = tmp_path / "ledger.jsonl"
    trivial = [
        Workflow([Firework(SumTask(tag=f"t{i}", values=[i], ledger=str(ledger)), name=f"t{i}")])
        for i in range(N_TRIVIAL)
    ]
    lp.bulk_add_wfs(trivial)
    lp.fireworks.update_one({"fw_id": gate_id}, {"$set": {"state": "READY"}})  # runs too
    codes = [p.wait(timeout=1200) for p in procs]
    logs = {i: (tmp_path / f"r{i}.log").read_text(errors="replace")[-3000:] for i in range(4)}
    assert codes == [0, 0, 0, 0], logs

    # the campaign, run by plain workers to its report
    assert records.get_campaign(lp.db, name)["state"] == "completed", logs
    states = collections.Counter(d["state"] for d in lp.fireworks.find({}, {"state": 1}))
    assert set(states) == {"COMPLETED"}, states
    labels = records.labels(lp.db, name)
    assert len({d["hash"] for d in labels}) == len(labels)
    assert sum(d["kind"] == "chunk" for d in labels) == 6
    assert [r["iteration"] for r in records.iterations(lp.db, name)] == [0, 1, 2]

    # every Firework ran once, under an id of its own
    fws = list(lp.fireworks.find({}, {"fw_id": 1, "launches": 1}))
    assert len(fws) == 2 + N_TRIVIAL + lp.fireworks.count_documents({"spec.campaign": name})
    assert {len(d["launches"]) for d in fws} == {1}
    launch_ids = [d["launches"][0] for d in fws]
    assert len(set(launch_ids)) == len(fws), "a launch id was drawn twice"
    assert lp.launches.count_documents({}) == len(fws)
    lines = [json.loads(s) for s in ledger.read_text().splitlines()]
    assert sorted(d["tag"] for d in lines) == sorted(f"t{i}" for i in range(N_TRIVIAL))
    # all four processes took part (each runs in its own directory; one may spend the
    # trivial Fireworks' few seconds on a trainer of the campaign)
    dirs = {Path(d["launch_dir"]).parent.name for d in lp.launches.find({}, {"launch_dir": 1})}
    assert dirs == {"r0", "r1", "r2", "r3"}, dirs
