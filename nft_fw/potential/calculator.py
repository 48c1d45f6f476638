"""The trained ensemble as an ASE calculator: ensemble-mean energy and forces plus δ."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
from ase import Atoms
from ase.calculators.calculator import Calculator, all_changes

from nft_fw.potential import neighbours
from nft_fw.potential.calibration import Calibration
from nft_fw.potential.model import Ensemble

HEADER_FILE = "model.json"
PARAMS_FILE = "params.msgpack"
DEFAULT_SKIN = 0.5  # Å


class EnsembleCalculator(Calculator):
    """Mean of the ensemble members (a conservative force field, since each member is).

    Results: ``energy`` (eV), ``free_energy`` (= energy), ``forces`` (n, 3) eV/Å,
    ``uncertainties`` (n,) eV/Å — the per-atom δ_i = 2.58 σ of Eq. (1) in Zeng, Chen,
    Peterson, J. Chem. Phys. 156, 064104 (2022) — and ``energy_std`` (eV), the
    spread of the member energies (absolute ML energies carry an arbitrary offset
    when training used chunk forces; compare differences only).

    When the model carries a calibration of δ (``meta.calibration``, fitted by its campaign
    on out-of-sample errors, see :mod:`nft_fw.potential.calibration`), results also hold
    ``calibrated_uncertainties`` (n,) eV/Å = scale · δ_i; ``uncertainties`` stays δ as the
    ensemble gives it.

    ``skin`` (Å): neighbours are listed out to R_c + skin and the list is kept until an
    atom has moved more than skin / 2 (or the cell, periodicity or atoms change), so a
    relaxation or MD run rebuilds it only now and then; ``skin=0`` rebuilds at every call.
    ``rebuilds`` counts the rebuilds.
    """

    implemented_properties: ClassVar[list[str]] = [  # type: ignore[misc]
        "energy",
        "free_energy",
        "forces",
        "uncertainties",
        "calibrated_uncertainties",
        "energy_std",
    ]

    def __init__(self, ensemble: Ensemble, skin: float = DEFAULT_SKIN, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if not skin >= 0:
            raise ValueError(f"skin is {skin} Å; use 0 (rebuild every call) or a positive length")
        self.ensemble = ensemble
        self.skin = float(skin)
        self.rebuilds = 0
        self._table: neighbours.NeighbourTable | None = None
        cal = ensemble.meta.get("calibration")
        self.calibration = Calibration.from_dict(cal) if cal else None

    def calculate(
        self,
        atoms: Atoms | None = None,
        properties: list[str] | None = None,
        system_changes: list[str] = all_changes,
    ) -> None:
        super().calculate(atoms, properties or ["energy"], system_changes)
        assert self.atoms is not None
        neighbours.check_finite(self.atoms)
        if self._table is None or neighbours.is_stale(self._table, self.atoms, self.skin):
            self._table = neighbours.build(self.atoms, self.ensemble.spec.cutoff + self.skin)
            self.rebuilds += 1
        out = self.ensemble.evaluate(self.atoms, table=self._table)
        self.results = {
            "energy": float(out.energies.mean()),
            "free_energy": float(out.energies.mean()),
            "forces": out.forces,
            "uncertainties": out.delta,
            "energy_std": float(out.energies.std(ddof=1)),
        }
        if self.calibration is not None:
            self.results["calibrated_uncertainties"] = self.calibration.scale * out.delta

    def get_uncertainties(self, atoms: Atoms | None = None) -> np.ndarray:
        """Per-atom δ_i (n,) eV/Å."""
        return np.asarray(self.get_property("uncertainties", atoms))

    def get_calibrated_uncertainties(self, atoms: Atoms | None = None) -> np.ndarray:
        """Per-atom calibrated δ_i (n,) eV/Å; the model must carry a calibration."""
        if self.calibration is None:
            raise ValueError(
                "this model carries no calibration of δ (its campaign recorded fewer than "
                "10 out-of-sample errors, or it was saved by nft-fw 0.2); use "
                "get_uncertainties()"
            )
        return np.asarray(self.get_property("calibrated_uncertainties", atoms))

    def save(self, path: str | Path) -> Path:
        """Write ``path/model.json`` (descriptor, architecture, normalisation) and
        ``path/params.msgpack`` (Flax-serialised parameters). No pickle."""
        out = Path(path)
        out.mkdir(parents=True, exist_ok=True)
        (out / HEADER_FILE).write_text(json.dumps(self.ensemble.header(), indent=1))
        (out / PARAMS_FILE).write_bytes(self.ensemble.params_bytes())
        return out

    @classmethod
    def load(cls, path: str | Path, **kwargs: Any) -> EnsembleCalculator:
        """The calculator written by :meth:`save` at ``path``."""
        src = Path(path)
        header_file, params_file = src / HEADER_FILE, src / PARAMS_FILE
        for f in (header_file, params_file):
            if not f.is_file():
                raise FileNotFoundError(
                    f"{f} does not exist; a saved model is a directory holding "
                    f"{HEADER_FILE} and {PARAMS_FILE} (written by EnsembleCalculator.save)"
                )
        header = json.loads(header_file.read_text())
        return cls(Ensemble.from_parts(header, params_file.read_bytes()), **kwargs)
