"""A fault injected on purpose: the exported model's forces with ``strength`` eV/Å added that
pull atoms 0 and 1 together, so a relaxation or MD run brings them closer than the
descriptors can evaluate."""

from __future__ import annotations

from typing import Any

import numpy as np

from nft_fw.potential.calculator import EnsembleCalculator


def pulling(ensemble: Any, strength: float) -> EnsembleCalculator:
    """An EnsembleCalculator of ``ensemble`` whose forces pull atoms 0 and 1 together."""

    class Pulling(EnsembleCalculator):
        def calculate(self, *args: Any, **kwargs: Any) -> None:
            super().calculate(*args, **kwargs)
            pos = self.atoms.positions
            pull = strength * (pos[1] - pos[0]) / np.linalg.norm(pos[1] - pos[0])
            self.results["forces"] = self.results["forces"].copy()
            self.results["forces"][0] += pull
            self.results["forces"][1] -= pull

    return Pulling(ensemble)
