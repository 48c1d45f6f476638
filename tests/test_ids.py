"""Firework and launch ids drawn by concurrent clients are distinct.

FireWorks draws ids with an ``$inc`` on one counter document and reads the pre-image;
SecantusDB builds that pre-image from a read made before the write, so concurrent draws
through FireWorks' own code can return the same id (a launch record then replaces another
Firework's). Every process that loads nft-fw draws ids from the write's post-image
(``install_id_draws``); this checks it with real processes against the real server, for
FireWorks' own LaunchPad in processes that only import nft-fw's tasks, as plain ``rlaunch``
does when it reads an nft-fw Firework."""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Any

import pytest
from fireworks import Firework, ScriptTask

pytestmark = pytest.mark.integration

DRAWER = """
import json, sys
import yaml
from fireworks import Firework, LaunchPad, ScriptTask
lp = LaunchPad.from_dict(yaml.safe_load(open(sys.argv[1])))  # FireWorks' own, made first
if sys.argv[3] == "nft-fw":
    import nft_fw.firetasks  # what reading an nft-fw Firework imports
tag = sys.argv[2]
launch_ids, fw_ranges = [], []
for i in range(150):
    launch_ids.append(lp.get_new_launch_id())
    first = lp.get_new_fw_id(quantity=3)
    fw_ranges.append([first, first + 3])
fws = [Firework(ScriptTask.from_str("true"), name=f"{tag}-{i}") for i in range(30)]
lp.bulk_add_wfs(fws)
print(json.dumps({"launch_ids": launch_ids, "fw_ranges": fw_ranges}))
"""


def test_the_counter_returns_what_fireworks_expects(connection: Any) -> None:
    lp = connection.launchpad
    first = lp.get_new_fw_id()
    assert lp.get_new_fw_id(quantity=5) == first + 1  # the first id of the range
    assert lp.get_new_fw_id() == first + 6
    launch = lp.get_new_launch_id()
    assert lp.get_new_launch_id() == launch + 1
    lp.add_wf(Firework(ScriptTask.from_str("true"), name="one"))
    assert lp.get_fw_ids({"name": "one"}) == [first + 7]


def test_concurrent_processes_never_draw_the_same_id(connection: Any) -> None:
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", DRAWER, str(connection.lp_file), f"p{i}", "nft-fw"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i in range(4)
    ]
    results = []
    for proc in procs:
        out, err = proc.communicate(timeout=600)
        assert proc.returncode == 0, err[-2000:]
        results.append(json.loads(out.strip().splitlines()[-1]))

    launch_ids = [i for r in results for i in r["launch_ids"]]
    assert len(launch_ids) == 600
    assert len(set(launch_ids)) == 600, "a launch id was drawn twice"
    fw_ids = [i for r in results for lo, hi in r["fw_ranges"] for i in range(lo, hi)]
    assert len(set(fw_ids)) == len(fw_ids) == 1800, "Firework id ranges overlap"

    added = list(connection.launchpad.fireworks.find({}, {"fw_id": 1, "name": 1}))
    assert len(added) == 120
    assert len({d["fw_id"] for d in added}) == 120, "bulk-added Fireworks share an id"
    assert not {d["fw_id"] for d in added} & set(fw_ids)
