"""Overlapping NFT rounds (``nft.rounds: overlapping``): the rules, free of any queue.

A synchronous round waits for every chunk it asked for, so its workers idle behind the
round's slowest label and again while the trainer trains. With overlapping rounds the
campaign keeps ``chunks_per_iteration`` chunks *in flight* (asked for, not yet labelled):
the next trainer starts once ``next_round_after × chunks_per_iteration`` chunks have
arrived since the last trainer started (:func:`starts`), trains on every label present,
and asks for as many new chunks as keep the flight full (:func:`new_chunks`); the chunks
still in flight are neither offered again nor waited for — they train in a later iteration.

Which labels a trainer saw is the one thing the queue decides; each iteration's record
keeps it (``arrived``: the hashes first trained on there, ``failed_centres``), so the
history is reproducible: :func:`nft_fw.runners.local.run_locally` given those records
(``arrivals=``) trains on the same sets and gives the same history. Without a record it
lets the chunks arrive in the order they were asked for, ``next_round_after`` of the
flight per iteration (:func:`arrivals`).
"""

from __future__ import annotations

import math
from collections.abc import Collection, Mapping, Sequence
from typing import Any


def in_flight(
    history: Sequence[Mapping[str, Any]], ended: Collection[int], seeded: Collection[int] = ()
) -> set[int]:
    """Centres asked for by the iterations in ``history`` (``requested``) or before the first
    (``seeded``: ``nft.seed_chunks``) whose chunk has not ended (``ended``: centres labelled
    or failed)."""
    asked = {int(c) for r in history for c in r.get("requested", ())} | {int(c) for c in seeded}
    return asked - {int(c) for c in ended}


def new_chunks(flight: int, in_flight_now: int) -> int:
    """How many new chunks keep ``flight`` in flight (at least one: a trainer that asks for
    none would leave nothing to start the next)."""
    return max(1, flight - in_flight_now)


def needed(chunks_per_iteration: int, next_round_after: float) -> int:
    """Arrivals since the last trainer that start the next one."""
    return max(1, math.ceil(next_round_after * chunks_per_iteration - 1e-9))


def starts(arrived_since: int, need: int, still_in_flight: int) -> bool:
    """Whether the next trainer starts: ``need`` chunks arrived since the last one, or none
    is left in flight (the last of them has arrived)."""
    return arrived_since >= need or still_in_flight <= 0


def arrivals(queue: Sequence[Any], need: int) -> int:
    """How many of the chunks in flight (oldest first) arrive before the next trainer when
    one process runs the campaign: ``need`` of them, or all that are left."""
    return min(need, len(queue))
