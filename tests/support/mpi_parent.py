"""A collective parent registered only in tests: EMT that first sums 1 over GPAW's MPI
communicator (so it completes only when every rank of the worker takes part) and appends
one line per rank and calculation to a ledger file."""

from __future__ import annotations

import json
import os
from typing import Any

from ase.calculators.emt import EMT

from nft_fw.parents.parent import Parent, get_parent, register_parent


class CollectiveEMT(EMT):
    def __init__(self, ledger: str) -> None:
        super().__init__()
        self.ledger = ledger

    def calculate(self, atoms: Any = None, *args: Any, **kwargs: Any) -> None:
        from gpaw.mpi import world

        participants = int(world.sum_scalar(1))
        super().calculate(atoms, *args, **kwargs)
        line = {"rank": world.rank, "participants": participants, "n_atoms": len(self.atoms),
                "energy": float(self.results["energy"]), "pid": os.getpid()}  # fmt: skip
        with open(self.ledger, "a") as f:
            f.write(json.dumps(line) + "\n")


def _factory(params: dict[str, Any]) -> Parent:
    emt = get_parent("emt")
    return Parent(
        name="mpi-emt",
        params=params,
        make_calculator=lambda: CollectiveEMT(params["ledger"]),
        supported_elements=emt.supported_elements,
        force_locality_A=emt.force_locality_A,
        lattice_constant_fn=emt.lattice_constant_fn,
        collective=True,
    )


register_parent("mpi-emt", _factory)
