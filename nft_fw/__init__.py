"""nft-fw: nearsighted force training (Zeng, Chen, Peterson, J. Chem. Phys. 156, 064104 (2022))
of Behler–Parrinello ensembles, as a library (this package) and as a FireWorks service
(``nft_fw.workflows``, ``nft_fw.firetasks``, ``nft_fw.launchpad``).

The science core needs no database::

    from nft_fw import run_locally, EnsembleCalculator
    result = run_locally("campaign.yaml")
    atoms.calc = result.calculator
    relaxed = relax_locally(result)        # relax, retrain from the trajectory, relax again
    moved = transfer_locally(result, relaxed)   # the transfer targets with that model
    run = md_locally(result, relaxed)      # MD that pauses, labels and retrains
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from nft_fw.calculator import EnsembleCalculator
    from nft_fw.campaign import CampaignError, CampaignSpec, load_campaign
    from nft_fw.loop import (
        LocalResult,
        MDResult,
        RelaxResult,
        TransferResult,
        md_locally,
        relax_locally,
        run_locally,
        transfer_locally,
    )

__all__ = [
    "CampaignError",
    "CampaignSpec",
    "EnsembleCalculator",
    "LocalResult",
    "MDResult",
    "RelaxResult",
    "TransferResult",
    "load_campaign",
    "md_locally",
    "relax_locally",
    "run_locally",
    "transfer_locally",
]

_LAZY = {
    "EnsembleCalculator": "nft_fw.calculator",
    "CampaignError": "nft_fw.campaign",
    "CampaignSpec": "nft_fw.campaign",
    "load_campaign": "nft_fw.campaign",
    "LocalResult": "nft_fw.loop",
    "run_locally": "nft_fw.loop",
    "RelaxResult": "nft_fw.loop",
    "relax_locally": "nft_fw.loop",
    "TransferResult": "nft_fw.loop",
    "transfer_locally": "nft_fw.loop",
    "MDResult": "nft_fw.loop",
    "md_locally": "nft_fw.loop",
}


def __getattr__(name: str) -> Any:
    """Import the heavy modules (JAX, ASE) only when their names are first used."""
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'nft_fw' has no attribute {name!r}")
