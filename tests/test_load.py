"""Load: one round of 1,000 labels drained by 4 real worker processes.

Drives bench/round_fanout.py (``--labels-only``) against the test server and checks what
must hold whatever the speed: the round is batched into at most ``max_label_fireworks``
label Fireworks (default 64) in the campaign's one workflow, every label Firework ran once,
one label per structure, one trainer left for a train worker, and no worker hit a
DocumentTooLarge or a RecursionError (FireWorks issue #180: ~1,000 Fireworks under one
parent)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

pytestmark = [pytest.mark.integration, pytest.mark.slow]

BENCH = Path(__file__).resolve().parent.parent / "bench" / "round_fanout.py"
N = 1000


def test_a_round_of_1000_labels_drains_through_4_workers(connection: Any) -> None:
    from nft_fw.launchpad import records

    out = subprocess.run(
        [sys.executable, str(BENCH), "--n", str(N), "--workers", "4", "--labels-only",
         "--json", "--data-dir", str(connection.server.data_dir), "--db-name",
         connection.db_name],
        capture_output=True, text=True, timeout=1500, check=False,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr[-3000:]
    figures = json.loads(out.stdout.strip().splitlines()[-1])
    assert figures["worker_exit_codes"] == [0, 0, 0, 0]
    n_fw = figures["label_fireworks"]
    assert n_fw == 63  # 1,000 labels in at most 64 label Fireworks: 16 each, the last 8
    assert figures["items_per_label_firework"] == [8, 16]
    assert figures["label_states"] == ["COMPLETED"]
    assert figures["launches_per_label_firework"] == [1]
    assert figures["distinct_launch_ids"] == figures["launch_records"] == n_fw
    assert figures["image_labels"] == figures["distinct_image_labels"] == N
    assert figures["trainers_round_0"] == 1
    assert figures["trainer_states"] == ["READY"]  # left to a train worker
    assert figures["log_errors"] == []
    assert figures["workflows"] == 1  # the campaign is one workflow

    lp = connection.launchpad
    name = f"fanout-{N}"
    assert len(records.labels(lp.db, name)) == N
    served = [lp.launches.count_documents({"launch_dir": {"$regex": f"/w{i}/"}}) for i in range(4)]
    assert sum(served) == n_fw and min(served) > 0, served  # all four workers took part
