"""A parent for the load bench: ASE's EMT that first sleeps as long as a GPAW chunk label of
the shipped Pt140 campaign took, scaled down (``scale``, default 1/100), so a campaign of
DFT-shaped label times runs in minutes. Which shipped time a structure gets is fixed by a
hash of the structure and ``seed``: the same chunk sleeps the same in every run. Imported by
bench/load_workers.py and the worker processes it starts (bench/load_worker.py)."""

from __future__ import annotations

import functools
import hashlib
import time
from pathlib import Path
from typing import Any

import numpy as np
from ase.calculators.emt import EMT

from nft_fw.parents.parent import Parent, get_parent, register_parent

LABELS = Path(__file__).resolve().parent / "data" / "pt140-gpaw-labels.extxyz"


@functools.cache
def shipped_seconds() -> np.ndarray:
    """The parent seconds of the shipped GPAW chunk labels (``nft_seconds``), sorted."""
    from ase.io import read

    frames = read(LABELS, ":")
    seconds = [f.info["nft_seconds"] for f in frames if f.info.get("nft_kind") == "chunk"]
    return np.sort(np.asarray(seconds, dtype=float))


def label_seconds(positions: np.ndarray, scale: float, seed: int) -> float:
    """The sleep of a structure: the shipped time its hash picks, times ``scale``."""
    digest = hashlib.sha256(np.round(positions, 6).tobytes() + str(seed).encode()).digest()
    times = shipped_seconds()
    return float(times[int.from_bytes(digest[:8], "little") % len(times)]) * scale


class TimedEMT(EMT):
    def __init__(self, scale: float, seed: int, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.scale, self.seed = scale, seed

    def calculate(self, atoms: Any = None, *args: Any, **kwargs: Any) -> None:
        if atoms is not None:
            time.sleep(label_seconds(atoms.positions, self.scale, self.seed))
        super().calculate(atoms, *args, **kwargs)


def _factory(params: dict[str, Any]) -> Parent:
    emt = get_parent("emt")
    scale, seed = float(params.get("scale", 0.01)), int(params.get("seed", 0))
    return Parent(
        name="timed-emt",
        params=params,
        make_calculator=lambda: TimedEMT(scale, seed),
        supported_elements=emt.supported_elements,
        force_locality_A=emt.force_locality_A,
        lattice_constant_fn=emt.lattice_constant_fn,
    )


register_parent("timed-emt", _factory)
