"""A parent registered only in tests: EMT that sleeps while a flag file exists, so a test
can kill a worker in the middle of a label (it writes :func:`started` once one is). Imported by tests and by the worker processes
they start (tests/support/worker.py)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from ase.calculators.emt import EMT

from nft_fw.parents.parent import Parent, get_parent, register_parent


def started(flag: Path) -> Path:
    """The file a SlowEMT held by ``flag`` writes once a calculation waits on it."""
    return flag.with_name(flag.name + ".started")


class SlowEMT(EMT):
    def __init__(self, flag: str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.flag = Path(flag)

    def calculate(self, *args: Any, **kwargs: Any) -> None:
        if self.flag.exists():
            # the label's calculation is under way (FireWorks' check-out, which holds the
            # workflow lock, is over): a test waits for this before it kills the worker
            started(self.flag).touch()
        while self.flag.exists():
            time.sleep(0.2)
        super().calculate(*args, **kwargs)


def _factory(params: dict[str, Any]) -> Parent:
    emt = get_parent("emt")
    return Parent(
        name="slow-emt",
        params=params,
        make_calculator=lambda: SlowEMT(params["flag"]),
        supported_elements=emt.supported_elements,
        force_locality_A=emt.force_locality_A,
        lattice_constant_fn=emt.lattice_constant_fn,
    )


register_parent("slow-emt", _factory)
