"""The transfer (Sec. V D): relax a larger target with the kept model, without new data,
and flag it when δ says it left the data."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Mapping
from typing import Any

from ase import Atoms

from nft_fw.labels.phase import Phase
from nft_fw.potential import model as mdl
from nft_fw.potential.calculator import EnsembleCalculator
from nft_fw.spec.campaign import Prepared
from nft_fw.steps.common import trajectory_figures, validate_relaxation
from nft_fw.steps.relax import Trajectory, relax

FLAG_RATIO = 2.0  # a transfer target whose δ is this many times the trained target's is flagged


@dataclasses.dataclass
class TransferInputs:
    """Transfer target ``index`` (``name``, its ``atoms``), the ``model`` the phases before
    MD kept and that model's record ``source`` (:func:`kept_record`)."""

    prepared: Prepared
    index: int
    name: str
    atoms: Atoms
    model: mdl.Ensemble
    source: Mapping[str, Any]


@dataclasses.dataclass
class TransferOutcome:
    record: dict[str, Any]
    trajectory: Trajectory


def transfer_step(inputs: TransferInputs) -> TransferOutcome:
    """Relax a transfer target with the kept model, without new data (Sec. V D of Zeng, Chen,
    Peterson, J. Chem. Phys. 156, 064104 (2022)); record δ along the way and whether it is
    flagged: its largest δ ≥ FLAG_RATIO × the trained target's, at the start or at the
    relaxed end (a rattled start is unfamiliar to any model, a shape stays so), or when the
    model walked its atoms into each other (``collapsed``)."""
    spec = inputs.prepared.spec
    rs = spec.relax_settings
    t0 = time.perf_counter()
    trajectory = relax(
        inputs.atoms, EnsembleCalculator(inputs.model), rs.fmax, rs.max_steps, rs.optimizer
    )
    relax_s = time.perf_counter() - t0
    reference = float(inputs.source["structure_uncertainty"])
    reference_end = float(inputs.source.get("final_max_uncertainty", reference))
    figures = trajectory_figures(trajectory)
    record: dict[str, Any] = {
        "campaign": spec.name,
        "phase": Phase.TRANSFER,
        "iteration": inputs.index,
        "name": inputs.name,
        "n_atoms": len(inputs.atoms),
        **figures,
        **validate_relaxation(inputs.prepared, trajectory, None),
        "trained_uncertainty": reference,
        "uncertainty_ratio": figures["structure_uncertainty"] / reference,
        "flagged": bool(
            figures["structure_uncertainty"] >= FLAG_RATIO * reference
            or trajectory.collapsed is not None
        ),
        "trained_end_uncertainty": reference_end,
        "end_uncertainty_ratio": figures["final_max_uncertainty"] / reference_end,
        "flagged_at_end": bool(figures["final_max_uncertainty"] >= FLAG_RATIO * reference_end),
        "model_from": {
            "phase": inputs.source["phase"],
            "iteration": inputs.source["iteration"],
        },
        "timings": {"relax_s": relax_s},
    }
    return TransferOutcome(record, trajectory)
