"""Campaign records in the LaunchPad's database: campaigns, labels, iterations, files.

Collections (created with their indexes by :func:`ensure_indexes`):

* ``nft_campaigns`` — one document per campaign (``_id`` = campaign name): the validated
  spec, state, current iteration, stop reason, GridFS ids of the target and initial set,
  and ``layout`` (how its Fireworks are laid out; see :func:`require_layout`).
* ``nft_labels`` — one document per (campaign, chunk or image hash, parent-settings hash),
  enforced by a unique index and written by upsert, so a rerun or duplicated Firework can
  never duplicate a label.
* ``nft_iterations`` — one document per (campaign, phase, iteration).
* ``nft_failures`` — one document per (campaign, hash, parent_hash) whose parent calculation
  failed with every retry: the error text, each attempt, the logs' GridFS ids. Never a label;
  removed when a rerun labels the item after all.
* GridFS bucket ``nft_files`` — models (msgpack + JSON header), structures (extxyz), and
  per-atom arrays (``.npy``, loaded with ``allow_pickle=False``).

Nothing read back is unpickled or evaluated.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import functools
import io
import json
import logging
import socket
import statistics
from collections.abc import Sequence
from typing import Any

import gridfs
import numpy as np
from ase import Atoms
from bson import ObjectId
from pymongo import ASCENDING
from pymongo.database import Database
from pymongo.errors import DuplicateKeyError

from nft_fw.labels.phase import Phase
from nft_fw.spec import campaign as campaign_spec
from nft_fw.structures import atoms_io

log = logging.getLogger(__name__)

CAMPAIGNS = "nft_campaigns"
LABELS = "nft_labels"
ITERATIONS = "nft_iterations"
FEATURES = "nft_features"
FAILURES = "nft_failures"
ARRIVALS = "nft_arrivals"
BUCKET = "nft_files"


def now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def ensure_indexes(db: Database) -> None:
    db[LABELS].create_index(
        [("campaign", ASCENDING), ("hash", ASCENDING), ("parent_hash", ASCENDING)],
        unique=True,
        name="one_label_per_chunk",
    )
    db[LABELS].create_index([("campaign", ASCENDING), ("iteration", ASCENDING)])
    db[ITERATIONS].create_index(
        [("campaign", ASCENDING), ("phase", ASCENDING), ("iteration", ASCENDING)],
        unique=True,
        name="one_record_per_iteration",
    )
    db[FEATURES].create_index(
        [("campaign", ASCENDING), ("hash", ASCENDING), ("spec_hash", ASCENDING)],
        unique=True,
        name="one_feature_set",
    )
    db[FAILURES].create_index(
        [("campaign", ASCENDING), ("hash", ASCENDING), ("parent_hash", ASCENDING)],
        unique=True,
        name="one_failure_per_chunk",
    )
    db[ARRIVALS].create_index([("campaign", ASCENDING), ("arrived", ASCENDING)])


# ----------------------------------------------------------------------------- overlapping rounds


def put_arrival(
    db: Database, campaign: str, item: dict[str, Any], label_hash: str, state: str, fw_id: Any
) -> None:
    """That a chunk item of an overlapping NFT round has ended (``state``: labelled, existing
    or failed): one document per (campaign, round, centre), the first ending kept (a rerun
    changes nothing), with the time it arrived."""
    key = f"{campaign}:{item.get('iteration', 0)}:{item['centre']}"
    db[ARRIVALS].update_one(
        {"_id": key},
        {
            "$setOnInsert": {
                "campaign": campaign,
                "round": int(item.get("iteration", 0)),
                "centre": int(item["centre"]),
                "hash": label_hash,
                "state": state,
                "fw_id": fw_id,
                "arrived": now(),
            }
        },
        upsert=True,
    )


def count_arrivals(db: Database, campaign: str) -> int:
    return db[ARRIVALS].count_documents({"campaign": campaign})


def arrivals(db: Database, campaign: str) -> list[dict[str, Any]]:
    """The chunk items of a campaign's overlapping rounds that have ended, in arrival order."""
    return list(db[ARRIVALS].find({"campaign": campaign}).sort([("arrived", ASCENDING)]))


def set_next_trainer(db: Database, name: str, plan: dict[str, Any]) -> None:
    """What starts once enough chunks have arrived (``plan``: iteration, what, baseline,
    need, asked); a rerun of the trainer that wrote it replaces it only while nothing has
    claimed it."""
    db[CAMPAIGNS].update_one(
        {
            "_id": name,
            "$or": [
                {"next_trainer.iteration": {"$ne": plan["iteration"]}},
                {"next_trainer.claimed_by": None},
            ],
        },
        {"$set": {"next_trainer": {**plan, "claimed_by": None}}},
    )


def claim_next_trainer(db: Database, name: str, iteration: int, fw_id: Any) -> bool:
    """Claim the start of ``iteration`` for Firework ``fw_id``: True for exactly one
    claimant (and again for the same Firework when it runs again)."""
    doc = db[CAMPAIGNS].find_one_and_update(
        {"_id": name, "next_trainer.iteration": iteration, "next_trainer.claimed_by": None},
        {"$set": {"next_trainer.claimed_by": fw_id, "next_trainer.claimed": now()}},
    )
    if doc is not None:
        return True
    doc = db[CAMPAIGNS].find_one({"_id": name}, {"next_trainer": 1})
    plan = (doc or {}).get("next_trainer") or {}
    return plan.get("iteration") == iteration and plan.get("claimed_by") == fw_id


# ----------------------------------------------------------------------------- files


def put_bytes(db: Database, data: bytes, filename: str, **metadata: Any) -> Any:
    return gridfs.GridFS(db, BUCKET).put(data, filename=filename, metadata=metadata)


def get_bytes(db: Database, file_id: Any) -> bytes:
    return gridfs.GridFS(db, BUCKET).get(file_id).read()


def file_name(db: Database, file_id: Any) -> str:
    return str(gridfs.GridFS(db, BUCKET).get(file_id).filename)


def delete_file(db: Database, file_id: Any) -> None:
    gridfs.GridFS(db, BUCKET).delete(file_id)


def put_structures(db: Database, frames: Sequence[Atoms], filename: str, **meta: Any) -> Any:
    """Store structures as extended XYZ with exact floats (:func:`nft_fw.structures.atoms_io.write_extxyz`):
    a worker reads back the very structure the submitter built."""
    text = atoms_io.extxyz_text(list(frames))
    return put_bytes(db, text.encode(), filename, kind="structures", **meta)


def get_structures(db: Database, file_id: Any) -> list[Atoms]:
    """The frames of a stored structure file (files of nft-fw ≤ 0.3, rounded to 1e-8 Å by
    ASE's writer, read the same way)."""
    return atoms_io.read_extxyz_text(get_bytes(db, file_id).decode())


STRUCTURE_CACHE_FILES = 8


@functools.lru_cache(maxsize=STRUCTURE_CACHE_FILES)
def _stored_frames(db: Database, file_id: str) -> tuple[Atoms, ...]:
    return tuple(get_structures(db, ObjectId(file_id)))


def get_structure(db: Database, file_id: Any, index: int = 0) -> Atoms:
    """A copy of structure ``index`` of a stored file. Stored files never change, so a worker
    process keeps the last STRUCTURE_CACHE_FILES it parsed: the label Fireworks of a round
    (one image of a 1,000-image initial set each, or chunks of one target) read and parse
    their file once per worker, not once per Firework."""
    return _stored_frames(db, str(file_id))[index].copy()


def put_array(db: Database, array: np.ndarray, filename: str, **meta: Any) -> Any:
    return put_bytes(db, _npy(array), filename, kind="array", **meta)


def get_array(db: Database, file_id: Any) -> np.ndarray:
    return _from_npy(get_bytes(db, file_id))


# ----------------------------------------------------------------------------- campaigns


class CampaignExists(ValueError):
    pass


LAYOUT = campaign_spec.LAYOUT


class OldLayoutError(RuntimeError):
    """A campaign submitted by an nft-fw whose Fireworks this version cannot run."""


#: the schema of the documents a campaign stores, on its record (``schema_version``);
#: nft-fw 0.7 and earlier stored none (schema 0). nft_fw.launchpad.migrate brings older
#: campaigns up to it (``nft-fw db migrate``).
SCHEMA_VERSION = 1


def require_schema(doc: dict[str, Any]) -> None:
    """Refuse, naming the way out, a campaign stored under another schema: an older one is
    brought up to date by ``nft-fw db migrate``, a newer one needs a newer nft-fw."""
    version = int(doc.get("schema_version", 0))
    if version == SCHEMA_VERSION:
        return
    if version > SCHEMA_VERSION:
        raise OldLayoutError(
            f"campaign {doc.get('_id')!r} was stored under schema {version} by a newer nft-fw "
            f"(this one reads schema {SCHEMA_VERSION}): upgrade nft-fw on this machine"
        )
    require_layout(doc)  # nft-fw 0.1's layout cannot be migrated: its own message
    raise OldLayoutError(
        f"campaign {doc.get('_id')!r} was stored by nft-fw 0.7 or earlier (schema {version}; this "
        f"nft-fw reads schema {SCHEMA_VERSION}): run `nft-fw db migrate` once with the same "
        "connection options (it brings every campaign of the database up to date; "
        "docs/upgrading.md), then run this again"
    )


def kind(doc: dict[str, Any]) -> str:
    """The kind of a stored campaign (one of ``nft_fw.spec.campaign.CAMPAIGN_KINDS``): NFT
    campaign records carry no ``kind`` field."""
    return str(doc.get("kind") or "nft")


def require_layout(doc: dict[str, Any]) -> None:
    """Refuse, with the way out, a campaign whose Fireworks follow an older layout."""
    if doc.get("layout") == LAYOUT or kind(doc) == campaign_spec.NEARSIGHTEDNESS:
        return
    raise OldLayoutError(
        f"campaign {doc['_id']!r} was submitted by nft-fw 0.1 (a workflow per Firework, "
        "linked by round records in nft_rounds); this version runs only campaigns laid out "
        "as one workflow. Finish it with the nft-fw version that submitted it, or submit the "
        "campaign file again under a new name (docs/upgrading.md); its labels, iterations "
        "and reports stay readable with nft-fw history, labels and report"
    )


def create_campaign(db: Database, name: str, spec: dict[str, Any], **fields: Any) -> None:
    ensure_indexes(db)
    doc = {
        "_id": name,
        "spec": spec,
        "state": "submitted",
        "iteration": None,
        "created": now(),
        "updated": now(),
        "layout": LAYOUT,
        "schema_version": SCHEMA_VERSION,
        **fields,
    }
    try:
        db[CAMPAIGNS].insert_one(doc)
    except DuplicateKeyError as err:
        raise CampaignExists(
            f"a campaign named {name!r} already exists in this database; choose another "
            "name in the campaign file (name: …) or look at it with nft-fw status "
            f"{name}"
        ) from err


def where(db: Database) -> str:
    """The database's name and the server(s) it is on, for messages."""
    nodes = ",".join(f"{h}:{p}" for h, p in sorted(db.client.nodes)) or "?"
    return f"{db.name!r} at {nodes}"


def get_campaign(db: Database, name: str) -> dict[str, Any]:
    doc = db[CAMPAIGNS].find_one({"_id": name})
    if doc is None:
        known = [d["_id"] for d in db[CAMPAIGNS].find({}, {"_id": 1}).limit(20)]
        raise KeyError(
            f"no campaign named {name!r} in database {where(db)} (campaigns: "
            f"{known or 'none'}); check the name and the connection options "
            "(--uri/--launchpad/--data-dir, --db-name)"
        )
    require_schema(doc)
    return doc


def raw_campaigns(db: Database) -> list[dict[str, Any]]:
    """Every campaign record as stored, whatever its schema (for nft_fw.launchpad.migrate)."""
    return list(db[CAMPAIGNS].find({}).sort("created", ASCENDING))


def raw_campaign(db: Database, name: str) -> dict[str, Any]:
    """One campaign record as stored, whatever its schema (for nft_fw.launchpad.migrate)."""
    doc = db[CAMPAIGNS].find_one({"_id": name})
    if doc is None:
        raise KeyError(f"no campaign named {name!r} in database {where(db)}")
    return doc


def update_campaign(db: Database, name: str, **fields: Any) -> None:
    db[CAMPAIGNS].update_one({"_id": name}, {"$set": {**fields, "updated": now()}})


def update_campaign_state(db: Database, name: str, old: str, new: str) -> None:
    """Move the campaign from state ``old`` to ``new`` (nothing when it is in another)."""
    db[CAMPAIGNS].update_one(
        {"_id": name, "state": old}, {"$set": {"state": new, "updated": now()}}
    )


def follow_ups(db: Database, name: str) -> list[str]:
    """Follow-up campaigns started by flagged transfer targets (and theirs, recursively)."""
    found = [d["_id"] for d in db[CAMPAIGNS].find({"inherited_from": name}, {"_id": 1})]
    return [n for child in found for n in (child, *follow_ups(db, child))]


def list_campaigns(db: Database) -> list[dict[str, Any]]:
    return list(db[CAMPAIGNS].find({}, {"spec": 0}).sort("created", ASCENDING))


# ----------------------------------------------------------------------------- labels


def put_label(db: Database, doc: dict[str, Any]) -> bool:
    """Upsert one label; returns True when it was new. The key is (campaign, hash,
    parent_hash); an existing label is never overwritten."""
    key = {k: doc[k] for k in ("campaign", "hash", "parent_hash")}
    body = {k: v for k, v in doc.items() if k not in key}
    body.setdefault("created", now())
    body.setdefault("host", socket.gethostname())
    try:
        res = db[LABELS].update_one(key, {"$setOnInsert": body}, upsert=True)
    except DuplicateKeyError:  # two writers raced on the upsert: the other one won
        return False
    return res.upserted_id is not None


def has_label(db: Database, campaign: str, chunk_hash: str, parent_hash: str) -> bool:
    return (
        db[LABELS].count_documents(
            {"campaign": campaign, "hash": chunk_hash, "parent_hash": parent_hash}, limit=1
        )
        > 0
    )


def labels(db: Database, campaign: str, kind: str | None = None) -> list[dict[str, Any]]:
    """Labels of a campaign in a fixed order (iteration, centre, hash)."""
    query: dict[str, Any] = {"campaign": campaign}
    if kind is not None:
        query["kind"] = kind
    return list(
        db[LABELS]
        .find(query)
        .sort([("iteration", ASCENDING), ("centre", ASCENDING), ("hash", ASCENDING)])
    )


def median_label_seconds(db: Database, campaign: str) -> float | None:
    """The median parent time of the campaign's own labels so far (labels taken from prior
    labels cost nothing here and are left out), or None before the first."""
    seconds = [
        float(d["seconds"])
        for d in db[LABELS].find({"campaign": campaign}, {"seconds": 1, "prior_campaign": 1})
        if (d.get("seconds") or 0) > 0 and not d.get("prior_campaign")
    ]
    return statistics.median(seconds) if seconds else None


def count_labels(db: Database, campaign: str) -> int:
    return db[LABELS].count_documents({"campaign": campaign})


def put_failure(db: Database, doc: dict[str, Any]) -> None:
    """Record that an item's parent calculation failed (every retry included); a later failure
    of the same item replaces the record and counts it."""
    key = {k: doc[k] for k in ("campaign", "hash", "parent_hash")}
    body = {k: v for k, v in doc.items() if k not in key}
    body["updated"] = now()
    body.setdefault("host", socket.gethostname())
    try:
        db[FAILURES].update_one(
            key,
            {"$set": body, "$inc": {"failures": 1}, "$setOnInsert": {"created": now()}},
            upsert=True,
        )
    except DuplicateKeyError:  # two writers raced on the upsert: retry as an update
        db[FAILURES].update_one(key, {"$set": body, "$inc": {"failures": 1}})


def clear_failure(db: Database, campaign: str, item_hash: str, parent_hash: str) -> None:
    db[FAILURES].delete_one({"campaign": campaign, "hash": item_hash, "parent_hash": parent_hash})


def failures(db: Database, campaign: str) -> list[dict[str, Any]]:
    """Items of a campaign that no parent calculation could label, by iteration and centre."""
    return list(
        db[FAILURES]
        .find({"campaign": campaign})
        .sort([("iteration", ASCENDING), ("centre", ASCENDING), ("hash", ASCENDING)])
    )


def label_atoms(doc: dict[str, Any]) -> Atoms:
    """The structure of a label document (:func:`nft_fw.structures.atoms_io.from_doc`)."""
    return atoms_io.from_doc(doc)


# ----------------------------------------------------------------------------- features


def _npy(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, np.asarray(array), allow_pickle=False)
    return buf.getvalue()


def _from_npy(data: bytes) -> np.ndarray:
    return np.load(io.BytesIO(data), allow_pickle=False)


def get_features(
    db: Database, campaign: str, spec_hash: str, hashes: Sequence[str]
) -> dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Cached chunk features (G, K, species) by chunk hash (a derived cache: losing it only
    costs recomputation)."""
    out = {}
    query = {"campaign": campaign, "spec_hash": spec_hash, "hash": {"$in": list(hashes)}}
    for d in db[FEATURES].find(query):
        out[d["hash"]] = (_from_npy(d["g"]), _from_npy(d["k"]), _from_npy(d["species"]))
    return out


def put_features(
    db: Database,
    campaign: str,
    spec_hash: str,
    chunk_hash: str,
    g: np.ndarray,
    k: np.ndarray,
    species: np.ndarray,
) -> None:
    key = {"campaign": campaign, "spec_hash": spec_hash, "hash": chunk_hash}
    body = {
        "g": _npy(g.astype(np.float32)),
        "k": _npy(k.astype(np.float32)),
        "species": _npy(species.astype(np.int32)),
    }
    with contextlib.suppress(DuplicateKeyError):  # another trainer cached it first
        db[FEATURES].update_one(key, {"$setOnInsert": body}, upsert=True)


# ----------------------------------------------------------------------------- iterations


def put_iteration(db: Database, record: dict[str, Any]) -> None:
    """Write (or, on a rerun, replace) the record of one iteration."""
    key = {k: record[k] for k in ("campaign", "phase", "iteration")}
    body = json.loads(json.dumps(record, default=float))  # plain JSON types only
    body["written"] = now()
    db[ITERATIONS].replace_one(key, body, upsert=True)


def update_record(db: Database, record: dict[str, Any], **fields: Any) -> None:
    """Set ``fields`` on a stored record (found by campaign, phase and iteration)."""
    key = {k: record[k] for k in ("campaign", "phase", "iteration")}
    db[ITERATIONS].update_one(key, {"$set": fields})


def delete_iteration(db: Database, campaign: str, phase: str, iteration: int) -> None:
    """Delete one record (an MD checkpoint, once its segment's record replaced it)."""
    db[ITERATIONS].delete_one({"campaign": campaign, "phase": phase, "iteration": iteration})


def iterations(db: Database, campaign: str, phase: str | None = Phase.NFT) -> list[dict[str, Any]]:
    query: dict[str, Any] = {"campaign": campaign}
    if phase is not None:
        query["phase"] = phase
    return list(db[ITERATIONS].find(query, {"_id": 0}).sort("iteration", ASCENDING))


def phase_records(
    db: Database, campaigns: Sequence[str], phases: Sequence[str]
) -> list[dict[str, Any]]:
    """Records of ``phases`` of any of ``campaigns``, without their per-step trajectories
    (a relaxation's ``steps``, an MD segment's ``log``), in the order they were stored."""
    query = {"campaign": {"$in": list(campaigns)}, "phase": {"$in": list(phases)}}
    return list(db[ITERATIONS].find(query, {"steps": 0, "log": 0, "_id": 0}))
