"""The phases of a campaign, by the name stored for them."""

from __future__ import annotations

import enum


class Phase(enum.StrEnum):
    """What asked for a label or wrote a record: the initial set, an NFT iteration, a relax
    round, a transfer, an MD segment — or, for a follow-up campaign's labels, the campaign
    it inherited them from. The values are the strings stored in records, labels, label
    files and Fireworks (a Phase compares equal to its value)."""

    INITIAL = "initial"
    INHERITED = "inherited"
    NFT = "nft"
    RELAX = "relax"
    TRANSFER = "transfer"
    MD = "md"
