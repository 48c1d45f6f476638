"""Campaign files for the tests, as dicts for nft_fw.spec.campaign.load_campaign: the small
79-atom campaign the service and parity tests share and the tiny 38-atom one of the fast and
fault tests.

Their models use angular resolutions ζ ∈ {1, 2} (``TEST_ZETAS``) instead of the default
{1, 2, 4, 8}: these tests are about the service, not the descriptor, and XLA compiles the
predictor of a ζ up to 2 in about 3 s where ζ = 8 takes about 10 s — for every structure size,
in every process, on a clean clone's empty JAX cache. tests/test_engine.py and
tests/test_science.py test the default descriptor itself."""

from __future__ import annotations

import dataclasses
from typing import Any

#: the angular resolutions of the tests' models (see the module docstring)
TEST_ZETAS = [1, 2]


def small_campaign(name: str) -> dict[str, Any]:
    """A 79-atom particle and a small, fast model: 2 NFT iterations after the initial one."""
    return {
        "name": name,
        "target": {
            "builder": {"kind": "octahedron", "element": "Pt", "length": 5, "cutoff": 1},
            "rattle": {"stdev": 0.1, "seed": 0},
        },
        "parent": {"name": "emt", "params": {}},
        "initial": {"generator": "bulk", "n_structures": 6, "n_candidates": 12},
        "model": {
            "cutoff": 5.0,
            "hidden_layers": [12],
            "ensemble_size": 4,
            "n_radial": 8,
            "angular_zetas": TEST_ZETAS,
        },
        "training": {"initial_steps": 200, "steps_per_iteration": 100},
        "nft": {"chunks_per_iteration": 6, "max_iterations": 2, "patience": 5, "threshold": 0.01},
        "validation": {"true_forces": True},
        "service": {"labels_per_firework": 4},
    }


#: a short relaxation phase for the small campaign: two retrainings at most
RELAX = {
    "fmax": 0.05,
    "max_steps": 25,
    "chunks_per_round": 4,
    "max_rounds": 2,
    "patience": 2,
    "max_frames": 6,
}


def tiny(name: str = "tiny", parent: dict[str, Any] | None = None, **extra: Any) -> dict[str, Any]:
    """A 38-atom particle, a three-member model of one layer, one NFT iteration of three
    chunks, one label per label Firework; ``extra`` replaces whole sections."""
    spec: dict[str, Any] = {
        "name": name,
        "target": {
            "builder": {"kind": "octahedron", "element": "Pt", "length": 4, "cutoff": 1},
            "rattle": {"stdev": 0.1, "seed": 0},
        },
        "parent": {"name": "emt"} if parent is None else parent,
        "initial": {"generator": "bulk", "n_structures": 4, "n_candidates": 8},
        "model": {
            "cutoff": 4.5,
            "hidden_layers": [8],
            "ensemble_size": 3,
            "n_radial": 6,
            "angular_zetas": TEST_ZETAS,
        },
        "training": {"initial_steps": 100, "steps_per_iteration": 50},
        "nft": {"chunks_per_iteration": 3, "max_iterations": 1, "threshold": 0.01},
        "service": {"labels_per_firework": 1},
    }
    spec.update(extra)
    return spec


def count_parent_calls(prepared: Any, calls: list[int]) -> Any:
    """The prepared campaign with its parent counting the calculators it builds (one per
    label) into ``calls``."""
    make = prepared.parent.make_calculator

    def counted() -> Any:
        calls.append(1)
        return make()

    return dataclasses.replace(
        prepared, parent=dataclasses.replace(prepared.parent, make_calculator=counted)
    )
