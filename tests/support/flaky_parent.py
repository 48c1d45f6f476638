"""A parent registered only in tests: EMT that raises on chunks, chosen by a hash of the
structure. Chunks in even buckets fail on every attempt ("injected parent failure"); chunks
in odd buckets fail until a retry sets ``recovered`` ("injected transient failure").
Periodic structures (the initial bulk cells) are never touched."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
from ase import Atoms
from ase.calculators.emt import EMT

from nft_fw.parents.parent import Parent, get_parent, register_parent


def bucket(atoms: Atoms) -> int:
    """0: fails on every attempt, 1: fails on the first attempt only."""
    digest = hashlib.sha256(
        np.round(atoms.get_positions(), 6).tobytes() + atoms.numbers.tobytes()
    ).digest()
    return digest[0] % 2


class FlakyEMT(EMT):
    def __init__(self, overrides: Mapping[str, Any]) -> None:
        super().__init__()
        self.overrides = dict(overrides)

    def calculate(self, atoms: Any = None, *args: Any, **kwargs: Any) -> None:
        if atoms is not None and not atoms.pbc.any():
            if bucket(atoms) == 0:
                raise RuntimeError(f"injected parent failure on {len(atoms)} atoms")
            if not self.overrides.get("recovered"):
                raise RuntimeError("injected transient failure")
        super().calculate(atoms, *args, **kwargs)


def _factory(params: dict[str, Any]) -> Parent:
    emt = get_parent("emt")

    def make(atoms: Atoms, overrides: Mapping[str, Any], log_path: Path | None) -> FlakyEMT:
        return FlakyEMT(overrides)

    return Parent(
        name="flaky-emt",
        params=params,
        make_calculator=lambda: FlakyEMT({}),
        supported_elements=emt.supported_elements,
        force_locality_A=emt.force_locality_A,
        lattice_constant_fn=emt.lattice_constant_fn,
        retries=tuple(dict(r) for r in params.get("retries", [])),
        hash_exclude=frozenset({"retries"}),
        calculator_factory=make,
    )


register_parent("flaky-emt", _factory)
