"""Stored campaigns brought to this nft-fw's schema: the one path from what older releases
stored to what this one reads (``nft-fw db migrate``).

Every campaign record carries ``schema_version`` (:data:`records.SCHEMA_VERSION` when
submitted); a record without it was stored by nft-fw 0.7 or earlier (schema 0). Readers do
not patch old documents as they read them: :func:`records.require_schema` refuses a campaign
below the current schema, naming this command, and :func:`migrate` rewrites its documents
once, in place, each step idempotent:

- schema 0 → 1: the campaign file of a campaign submitted by nft-fw 0.2 (its ``nft``
  section has no ``progress_measure``) gets the rule it ran with (``max_delta``, no minimum
  gain); a nearsightedness target stored as ASE JSON (nft-fw ≤ 0.3) is stored again as
  exact extended XYZ; MD segment records of nft-fw 0.5 get ``watched`` (true), ``stopped``
  (false), ``steps_above_threshold`` (0) and ``end_reason``.

A campaign whose Fireworks follow nft-fw 0.1's layout cannot be migrated (its workflow
shape differs, not just its documents): it is reported and left as it is.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

from ase import Atoms
from ase.io.jsonio import decode
from bson import ObjectId
from pymongo.database import Database

from nft_fw.labels.phase import Phase
from nft_fw.launchpad import records


@dataclasses.dataclass
class Migrated:
    """What :func:`migrate` did to one campaign: its schema before and after, and each change
    in words (none when it was current); ``refused``: why it could not be migrated."""

    campaign: str
    schema_from: int
    schema_to: int
    changes: list[str]
    refused: str | None = None


def spec_of_0(spec: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """A schema-0 campaign file as schema 1 stores it (and what changed)."""
    nft = dict(spec.get("nft") or {})
    if "progress_measure" in nft:
        return spec, []
    nft.update(progress_measure="max_delta", min_gain=0.0)
    return {**spec, "nft": nft}, ["nft.progress_measure: max_delta, nft.min_gain: 0 (nft-fw 0.2)"]


def md_record_of_0(record: dict[str, Any]) -> dict[str, Any]:
    """The fields an nft-fw 0.5 MD segment record lacks (empty when it has them): it ran
    watched, and ended at a pause or at its length."""
    if "watched" in record:
        return {}
    return {
        "watched": True,
        "stopped": False,
        "steps_above_threshold": 0,
        "end_reason": "pause" if record.get("paused") else "length",
    }


def _target_of_0(db: Database, doc: dict[str, Any]) -> list[str]:
    """Store a nearsightedness target kept as ASE JSON again as extended XYZ."""
    file_id = doc.get("target_file")
    if not file_id or not records.file_name(db, ObjectId(file_id)).endswith(".json"):
        return []
    atoms = decode(records.get_bytes(db, ObjectId(file_id)).decode())
    if not isinstance(atoms, Atoms):
        raise TypeError(f"stored target {file_id} is a {type(atoms).__name__}, not Atoms")
    new_id = records.put_structures(db, [atoms], f"{doc['_id']}/target.extxyz")
    records.update_campaign(db, doc["_id"], target_file=str(new_id))
    records.delete_file(db, ObjectId(file_id))
    return ["target: ASE JSON → extended XYZ (nft-fw ≤ 0.3)"]


def _to_1(db: Database, doc: dict[str, Any]) -> list[str]:
    name = doc["_id"]
    spec, changes = spec_of_0(doc["spec"])
    if changes:
        records.update_campaign(db, name, spec=spec)
    changes += _target_of_0(db, doc)
    patched = 0
    for record in records.iterations(db, name, phase=Phase.MD):
        fields = md_record_of_0(record)
        if fields:
            records.update_record(db, record, **fields)
            patched += 1
    if patched:
        changes.append(f"{patched} MD segment records: watched, stopped, end_reason (nft-fw 0.5)")
    return changes


#: schema N → N + 1, in order
STEPS: list[Callable[[Database, dict[str, Any]], list[str]]] = [_to_1]
assert len(STEPS) == records.SCHEMA_VERSION


def migrate(db: Database, dry_run: bool = False) -> list[Migrated]:
    """Bring every campaign of the database to :data:`records.SCHEMA_VERSION` (with
    ``dry_run``: say what is behind, change nothing). Safe to run again: a current campaign
    is left alone, and each step checks before it changes."""
    out = []
    for doc in records.raw_campaigns(db):
        version = int(doc.get("schema_version", 0))
        report = Migrated(doc["_id"], version, version, [])
        out.append(report)
        if version >= records.SCHEMA_VERSION:
            continue
        try:
            records.require_layout(doc)
        except records.OldLayoutError as err:
            report.refused = str(err)
            continue
        if dry_run:
            report.changes.append(f"schema {version} → {records.SCHEMA_VERSION} (dry run)")
            continue
        for step in STEPS[version:]:
            report.changes += step(db, records.raw_campaign(db, doc["_id"]))
        records.update_campaign(db, doc["_id"], schema_version=records.SCHEMA_VERSION)
        report.schema_to = records.SCHEMA_VERSION
    return out
