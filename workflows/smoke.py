"""A queue smoke workflow: a root, ``n_leaves`` parallel sums, a fan-out, a final sum.

root ─┬─ leaf 0 … leaf n-1 ─┬─ total
      └─ fan-out (+k at run time)
"""

from __future__ import annotations

from fireworks import Firework, Workflow

from nft_fw.firetasks.smoke import FanOutTask, SumTask


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
