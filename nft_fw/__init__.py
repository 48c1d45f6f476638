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
    from nft_fw.potential.calculator import EnsembleCalculator
    from nft_fw.runners.local import (
        LocalResult,
        MDResult,
        RelaxResult,
        TransferResult,
        md_locally,
        relax_locally,
        run_locally,
        transfer_locally,
    )
    from nft_fw.spec.campaign import CampaignError, CampaignSpec, load_campaign


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
    "EnsembleCalculator": "nft_fw.potential.calculator",
    "CampaignError": "nft_fw.spec.campaign",
    "CampaignSpec": "nft_fw.spec.campaign",
    "load_campaign": "nft_fw.spec.campaign",
    "LocalResult": "nft_fw.runners.local",
    "run_locally": "nft_fw.runners.local",
    "RelaxResult": "nft_fw.runners.local",
    "relax_locally": "nft_fw.runners.local",
    "TransferResult": "nft_fw.runners.local",
    "transfer_locally": "nft_fw.runners.local",
    "MDResult": "nft_fw.runners.local",
    "md_locally": "nft_fw.runners.local",
}


def __getattr__(name: str) -> Any:
    """Import the heavy modules (JAX, ASE) only when their names are first used."""
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'nft_fw' has no attribute {name!r}")
