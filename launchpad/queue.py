"""The FireWorks side of the database: the queue a campaign's Fireworks live in.

Everything nft-fw reads from or writes to FireWorks' own collections (``fireworks``,
``launches``, ``workflows``, ``fw_id_assigner``) goes through here; the rest of nft-fw
talks to FireWorks only through its LaunchPad API.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any

from fireworks import LaunchPad, Workflow

log = logging.getLogger(__name__)


def ensure_initialised(lp: LaunchPad) -> None:
    """Give a brand-new database FireWorks' id counters and indexes, without the wipe of
    ``lpad reset``; a database already in use is left as it is."""
    lp.fw_id_assigner.update_one(
        {}, {"$setOnInsert": {"next_fw_id": 1, "next_launch_id": 1}}, upsert=True
    )
    if "fw_id_1" not in lp.fireworks.index_information():
        lp.tuneup()
    # the rerun guard of trainers looks Fireworks up by who appended them
    lp.fireworks.create_index("spec.nft_appended_by")


def add_workflow(lp: LaunchPad, workflow: Workflow) -> list[int]:
    """Add ``workflow`` (to a database made ready first); returns its Firework ids."""
    ensure_initialised(lp)
    return sorted(lp.add_wf(workflow).values())


def appended_by(lp: LaunchPad, fw_id: int | None) -> list[int]:
    """The Fireworks that Firework ``fw_id`` appended to its workflow earlier (a rerun finds
    them). Fireworks it appended that never reached the workflow document (a completion cut
    off by a database outage) never ran: they are deleted, so the caller appends again."""
    mine = {d["fw_id"] for d in lp.fireworks.find({"spec.nft_appended_by": fw_id}, {"fw_id": 1})}
    if not mine:
        return []
    wf = lp.workflows.find_one({"nodes": fw_id}, {"nodes": 1}) or {"nodes": []}
    orphans = sorted(mine - set(wf["nodes"]))
    if orphans:
        log.warning(
            "Fireworks %s appended by %s never reached the workflow: deleted, appended again",
            orphans,
            fw_id,
        )
        lp.launches.delete_many({"fw_id": {"$in": orphans}})
        lp.fireworks.delete_many({"fw_id": {"$in": orphans}})
    return sorted(mine - set(orphans))


def has_workflow(lp: LaunchPad, campaign: str) -> bool:
    """Does the queue hold the workflow of ``campaign``?"""
    return lp.workflows.find_one({"metadata.campaign": campaign}, {"_id": 1}) is not None


def fireworks(
    lp: LaunchPad,
    campaign: str,
    roles: Iterable[str] | None = None,
    states: Iterable[str] | None = None,
    fields: Iterable[str] = ("fw_id", "name", "state"),
) -> list[dict[str, Any]]:
    """The campaign's Fireworks (by ``nft_role`` and FireWorks state when given), by id,
    with ``fields`` of each."""
    query: dict[str, Any] = {"spec.campaign": campaign}
    if roles is not None:
        query["spec.nft_role"] = {"$in": list(roles)}
    if states is not None:
        query["state"] = {"$in": list(states)}
    projection = {f: 1 for f in fields}
    projection["_id"] = 0
    return list(lp.fireworks.find(query, projection).sort("fw_id", 1))


def launches(
    lp: LaunchPad, fw_ids: Iterable[int], fields: Iterable[str] = ("fw_id", "state")
) -> list[dict[str, Any]]:
    """The launches of Fireworks ``fw_ids`` (archived ones included), by launch id."""
    projection = {f: 1 for f in fields}
    projection["_id"] = 0
    return list(lp.launches.find({"fw_id": {"$in": list(fw_ids)}}, projection).sort("launch_id", 1))


def state_counts(lp: LaunchPad, campaign: str) -> dict[str, int]:
    """How many of the campaign's Fireworks are in each FireWorks state."""
    states: dict[str, int] = {}
    for doc in lp.fireworks.find({"spec.campaign": campaign}, {"state": 1}):
        states[doc["state"]] = states.get(doc["state"], 0) + 1
    return states


def workflow_locked(lp: LaunchPad, campaign: str) -> bool:
    """Whether a worker holds FireWorks' lock on the campaign's workflow (it is writing the
    workflow back: completing a Firework, checking one out)."""
    doc = lp.fireworks.find_one({"spec.campaign": campaign}, {"fw_id": 1})
    if doc is None:
        return False
    return bool(lp.workflows.count_documents({"nodes": doc["fw_id"], "locked": True}, limit=1))


def labelling_rounds(lp: LaunchPad, name: str) -> list[dict[str, Any]]:
    """The rounds whose trainer has not started (waiting for its label Fireworks, or defused
    or paused by an operator): how many of their label Fireworks have ended."""
    out = []
    for trainer in lp.fireworks.find(
        {
            "spec.campaign": name,
            "spec.nft_role": "train",
            "state": {"$in": ["WAITING", "DEFUSED", "PAUSED"]},
        },
        {"state": 1, "spec.nft_phase": 1, "spec.nft_round": 1},
    ):
        phase, number = trainer["spec"]["nft_phase"], trainer["spec"]["nft_round"]
        states = [
            d["state"]
            for d in lp.fireworks.find(
                {
                    "spec.campaign": name,
                    "spec.nft_role": "label",
                    "spec.nft_phase": phase,
                    "spec.nft_round": number,
                },
                {"state": 1},
            )
        ]
        ended = sum(s in ("COMPLETED", "FIZZLED") for s in states)
        out.append(
            {"phase": phase, "round": number, "label_fireworks_ended": ended,
             "label_fireworks": len(states), "trainer": trainer["state"]}
        )  # fmt: skip
    return out


def label_states(lp: LaunchPad, campaign: str) -> dict[str, int]:
    """How many of the campaign's label Fireworks are in each FireWorks state."""
    states: dict[str, int] = {}
    for doc in lp.fireworks.find({"spec.campaign": campaign, "spec.nft_role": "label"},
                                 {"state": 1}):  # fmt: skip
        states[doc["state"]] = states.get(doc["state"], 0) + 1
    return states


def workers_seen(lp: LaunchPad, campaign: str) -> list[dict[str, Any]]:
    """The hosts that ran the campaign's Fireworks: per host and FireWorker, launches run,
    running now, and the last time one started or ended (FireWorks' launch times, UTC)."""
    ids = [d["fw_id"] for d in lp.fireworks.find({"spec.campaign": campaign}, {"fw_id": 1})]
    seen: dict[tuple[str, str], dict[str, Any]] = {}
    fields = {"host": 1, "fworker.name": 1, "state": 1, "time_start": 1, "time_end": 1, "_id": 0}
    for doc in lp.launches.find({"fw_id": {"$in": ids}}, fields):
        key = (str(doc.get("host") or "?"), str((doc.get("fworker") or {}).get("name") or "?"))
        entry = seen.setdefault(
            key, {"host": key[0], "fworker": key[1], "launches": 0, "running": 0, "last": None}
        )
        entry["launches"] += 1
        entry["running"] += doc.get("state") == "RUNNING"
        times = [t for t in (doc.get("time_start"), doc.get("time_end")) if t is not None]
        if times:
            last = max(str(t) for t in times)
            entry["last"] = max(entry["last"] or "", last)
    return sorted(seen.values(), key=lambda e: (e["host"], e["fworker"]))


def running(lp: LaunchPad, campaign: str) -> list[dict[str, Any]]:
    """The campaign's RUNNING Fireworks: id, name, role, and where and since when its
    launch runs (host, FireWorker, ``time_start`` UTC)."""
    out = []
    for fw in lp.fireworks.find(
        {"spec.campaign": campaign, "state": "RUNNING"},
        {"fw_id": 1, "name": 1, "spec.nft_role": 1, "launches": 1},
    ).sort("fw_id", 1):
        launch = (
            lp.launches.find_one(
                {"launch_id": {"$in": fw.get("launches") or []}, "state": "RUNNING"},
                {"host": 1, "fworker.name": 1, "time_start": 1},
            )
            or {}
        )
        out.append(
            {
                "fw_id": fw["fw_id"],
                "name": fw.get("name"),
                "role": (fw.get("spec") or {}).get("nft_role"),
                "host": launch.get("host"),
                "fworker": (launch.get("fworker") or {}).get("name"),
                "time_start": launch.get("time_start"),
            }
        )
    return out
