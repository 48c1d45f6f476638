"""Changing a running campaign's settings for what it has not done yet.

A DFT campaign runs for days; what it learns on the way (a relaxation that runs away, too few
rounds allowed) may call for other settings of the phases still ahead. Only settings that
decide what comes next may change — never what stored labels, models or records depend on
(parent, model, training, chunk radius, target). Every Firework reads the campaign's settings
when it starts, so a change takes effect from the next one.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import yaml

from nft_fw.spec.campaign import AMENDABLE, CampaignError, apply_settings, load_campaign

__all__ = ["AMENDABLE", "amend", "parse_settings"]


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
    new, changes = apply_settings(
        data,
        settings,
        fix="Submit a new campaign for anything else (prior_labels.file continues from an export)",
    )
    load_campaign(new)  # the campaign as a whole must still hold (raises CampaignError)
    return new, changes
