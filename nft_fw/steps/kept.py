"""The kept model: which NFT iteration or relax round a campaign keeps, and the calibration
of δ a kept model carries — rules over the stored records, read by the steps, the local
runner and the database's finders alike (Sec. IV of Zeng, Chen, Peterson, J. Chem. Phys.
156, 064104 (2022): the model of lowest uncertainty is the one used).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from nft_fw.potential import calibration
from nft_fw.spec.campaign import CampaignSpec
from nft_fw.steps import decision


def kept_iteration(history: Sequence[Mapping[str, Any]], spec: CampaignSpec) -> int:
    """The iteration whose model the campaign keeps: the latest within ``nft.best_tolerance``
    of the lowest progress measure (:mod:`nft_fw.steps.decision`)."""
    return decision.best_iteration(
        decision.progress(history, spec.nft.progress_measure), spec.nft.best_tolerance
    )


def kept_round(rounds: Sequence[Mapping[str, Any]], spec: CampaignSpec) -> int:
    """The relax round whose model is kept: the latest whose largest δ along its relaxation
    is within ``nft.best_tolerance`` of the lowest."""
    return decision.best_iteration(
        [r["structure_uncertainty"] for r in rounds], spec.nft.best_tolerance
    )


def kept_record(
    history: Sequence[Mapping[str, Any]], rounds: Sequence[Mapping[str, Any]], spec: CampaignSpec
) -> Mapping[str, Any]:
    """The record of the model the phases before MD keep: the kept relax round's when the
    campaign relaxed, else the kept NFT iteration's. Its ``structure_uncertainty`` is the δ
    that model reaches on its own target (the largest along its relaxation, or on the target),
    the yardstick transfer targets are measured against."""
    if rounds:
        return rounds[kept_round(rounds, spec)]
    return history[kept_iteration(history, spec)]


def calibration_meta(history: Sequence[Mapping[str, Any]], name: str) -> dict[str, Any]:
    """The calibration an exported model carries: the latest fitted on the campaign's
    out-of-sample errors (``meta.calibration`` of the model file), or nothing."""
    for r in reversed(history):
        if "calibration_scale" in r:
            cal = calibration.Calibration(
                scale=float(r["calibration_scale"]),
                coverage=float(r["calibration_coverage"]),
                n_points=int(r["calibration_n"]),
                source=f"campaign {name}, out-of-sample central forces up to "
                f"{r.get('phase', 'nft')} iteration {r['iteration']}",
            )
            return {"calibration": cal.to_dict()}
    return {}
