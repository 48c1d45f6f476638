"""Changing a running campaign's settings for what it has not done yet.

A DFT campaign runs for days; what it learns on the way (a relaxation that runs away, too few
rounds allowed) may call for other settings of the phases still ahead. Only settings that
decide what comes next may change — never what stored labels, models or records depend on
(parent, model, training, chunk radius, target). Every Firework reads the campaign's settings
when it starts, so a change takes effect from the next one.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

import yaml

from nft_fw.spec.campaign import CampaignError, load_campaign

#: the settings ``nft-fw amend`` may change, by section
AMENDABLE: dict[str, tuple[str, ...]] = {
    "nft": ("max_iterations", "patience", "threshold", "target_error"),
    "relax": (
        "fmax", "max_steps", "chunks_per_round", "selection", "threshold", "patience",
        "max_rounds", "max_frames", "search_until", "resume", "check_chunks", "check_error",
        "check_selection",
    ),
    # each MD segment records the threshold and temperature it ran under
    "md": (
        "length_ps", "max_pauses", "chunks_per_pause", "out_of_pauses", "threshold",
        "candidate_threshold", "temperature_K",
    ),
}  # fmt: skip


def parse_settings(items: list[str]) -> dict[str, Any]:
    """``["relax.resume=frontier", "relax.max_rounds=20"]`` → ``{"relax.resume": "frontier",
    "relax.max_rounds": 20}`` (values read as YAML)."""
    out: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or "." not in key:
            raise CampaignError(item, "give SECTION.FIELD=VALUE, e.g. relax.max_rounds=20")
        out[key.strip()] = yaml.safe_load(value)
    return out


def amend(data: Mapping[str, Any], settings: Mapping[str, Any]) -> tuple[dict[str, Any], dict]:
    """``data`` (a stored campaign, as a mapping) with ``settings`` (``section.field``:
    value) applied and the whole campaign validated again; returns it and the changes
    (``section.field``: [before, after]). Raises CampaignError naming the field."""
    new = copy.deepcopy(dict(data))
    changes: dict[str, list[Any]] = {}
    for key, value in settings.items():
        section, _, field = key.partition(".")
        if field not in AMENDABLE.get(section, ()):
            allowed = ", ".join(f"{s}.{f}" for s, fs in AMENDABLE.items() for f in fs)
            raise CampaignError(
                key,
                "cannot be changed in a submitted campaign (stored labels, models or records "
                f"depend on it, or it is not a setting); these can: {allowed}. Submit a new "
                "campaign for anything else (prior_labels.file continues from an export)",
            )
        if not isinstance(new.get(section), dict):
            raise CampaignError(
                key, f"the campaign has no {section} phase; submit a campaign that has one"
            )
        part = dict(new[section])
        changes[key] = [part.get(field), value]
        part[field] = value
        new[section] = part
    load_campaign(new)  # the campaign as a whole must still hold (raises CampaignError)
    return new, changes
