"""Trivial FireTasks that exercise the queue itself (set-up checks, benchmarks).

``SumTask`` adds numbers and appends a line to an optional ledger file, an
execution record independent of FireWorks' own (used to prove no Firework
ran twice). ``FanOutTask`` appends Fireworks to its workflow at run time.
:func:`smoke_workflow` lays them out: a root, ``n_leaves`` parallel sums, a fan-out and a
final sum::

    root ─┬─ leaf 0 … leaf n-1 ─┬─ total
          └─ fan-out (+k at run time)
"""

from __future__ import annotations

import json
import os
import socket
from typing import Any, ClassVar

from fireworks import FiretaskBase, Firework, FWAction, Workflow, explicit_serialize


def _append_ledger(path: str | None, record: dict[str, Any]) -> None:
    if not path:
        return
    line = json.dumps(record) + "\n"
    # O_APPEND writes of one short line are atomic between processes.
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    try:
        os.write(fd, line.encode())
    finally:
        os.close(fd)


@explicit_serialize
class SumTask(FiretaskBase):
    """Sum ``values`` plus the parents' sums; store the total."""

    required_params: ClassVar[list[str]] = ["tag", "values"]
    optional_params: ClassVar[list[str]] = ["ledger"]

    def run_task(self, fw_spec: dict[str, Any]) -> FWAction:
        parents = fw_spec.get("parent_sums", [])
        total = float(sum(self["values"])) + float(sum(parents))
        _append_ledger(
            self.get("ledger"),
            {"tag": self["tag"], "host": socket.gethostname(), "pid": os.getpid()},
        )
        return FWAction(stored_data={"sum": total}, mod_spec=[{"_push": {"parent_sums": total}}])


@explicit_serialize
class FanOutTask(FiretaskBase):
    """Append ``n`` SumTask Fireworks as children of this one."""

    required_params: ClassVar[list[str]] = ["tag", "n"]
    optional_params: ClassVar[list[str]] = ["ledger", "category"]

    def run_task(self, fw_spec: dict[str, Any]) -> FWAction:
        _append_ledger(
            self.get("ledger"),
            {"tag": self["tag"], "host": socket.gethostname(), "pid": os.getpid()},
        )
        spec = {"_category": self["category"]} if self.get("category") else {}
        added = [
            Firework(
                SumTask(tag=f"{self['tag']}.{i}", values=[i], ledger=self.get("ledger")),
                name=f"{self['tag']}.{i}",
                spec=dict(spec),
            )
            for i in range(int(self["n"]))
        ]
        return FWAction(additions=added, stored_data={"added": len(added)})


def smoke_workflow(
    n_leaves: int = 46,
    n_added: int = 5,
    ledger: str | None = None,
    name: str = "smoke",
    category: str | None = None,
) -> Workflow:
    """``n_leaves + 3`` Fireworks up front, ``n_added`` more appended by the fan-out."""
    spec = {"_category": category} if category else {}
    root = Firework(SumTask(tag="root", values=[1], ledger=ledger), name="root", spec=dict(spec))
    leaves = [
        Firework(
            SumTask(tag=f"leaf{i}", values=[i], ledger=ledger),
            name=f"leaf{i}",
            parents=[root],
            spec=dict(spec),
        )
        for i in range(n_leaves)
    ]
    fan = Firework(
        FanOutTask(tag="fan", n=n_added, ledger=ledger, category=category),
        name="fan",
        parents=[root],
        spec=dict(spec),
    )
    total = Firework(
        SumTask(tag="total", values=[0], ledger=ledger),
        name="total",
        parents=leaves,
        spec=dict(spec),
    )
    return Workflow([root, *leaves, fan, total], name=name)


def expected_total(n_leaves: int) -> float:
    """The final Firework's sum: each leaf adds root (1) + its index."""
    return float(sum(1 + i for i in range(n_leaves)))
