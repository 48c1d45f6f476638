"""One migration path for what older releases stored: a campaign below the current schema is
refused by every reader with the command that fixes it, ``nft-fw db migrate`` rewrites its
documents once (a 0.2 campaign file, a ≤ 0.3 nearsightedness target in ASE JSON, 0.5 MD
segment records), a second run changes nothing, and a 0.1-layout campaign is reported, not
touched. Real server, real CLI."""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pytest
from service import cli
from specs import tiny

pytestmark = pytest.mark.integration


def _as_stored_by_0_7(db: Any, name: str) -> None:
    db["nft_campaigns"].update_one({"_id": name}, {"$unset": {"schema_version": ""}})


def test_campaigns_of_older_releases_are_refused_until_migrated_once(connection: Any) -> None:
    import gridfs
    from ase.io.jsonio import encode
    from bson import ObjectId

    from nft_fw.firetasks.submission import submit
    from nft_fw.launchpad import campaigns, records
    from nft_fw.launchpad import nearsightedness as ns
    from nft_fw.spec.campaign import load_any_campaign, prepare_any

    lp, db = connection.launchpad, connection.launchpad.db
    for spec in (
        tiny("old-nft"),
        tiny("old-layout"),
        {"kind": "nearsightedness", "name": "old-ns", "target": tiny()["target"],
         "parent": {"name": "emt", "params": {}}, "centres": [0], "radii": [4.0, 6.0]},
    ):  # fmt: skip
        submit(lp, prepare_any(load_any_campaign(spec)))
    # what nft-fw 0.2 stored for the campaign file, 0.5 for an MD segment, ≤ 0.3 for the
    # nearsightedness target, 0.1 for the layout; none of them a schema_version
    doc = records.get_campaign(db, "old-nft")
    nft = {k: v for k, v in doc["spec"]["nft"].items()
           if k not in ("progress_measure", "min_gain", "threshold_on", "calibration_coverage")}  # fmt: skip
    db["nft_campaigns"].update_one({"_id": "old-nft"}, {"$set": {"spec.nft": nft}})
    records.put_iteration(db, {"campaign": "old-nft", "phase": "md", "iteration": 0,
                               "paused": True, "end_step": 40})  # fmt: skip
    ns_doc = records.get_campaign(db, "old-ns")
    target = ns.target(db, ns_doc["target_file"])
    json_id = records.put_bytes(db, encode(target).encode(), "old-ns/target.json")
    db["nft_campaigns"].update_one({"_id": "old-ns"}, {"$set": {"target_file": str(json_id)}})
    db["nft_campaigns"].update_one({"_id": "old-layout"}, {"$unset": {"layout": ""}})
    for name in ("old-nft", "old-ns", "old-layout"):
        _as_stored_by_0_7(db, name)

    # every reader refuses, naming the command
    out = cli(connection, "history", "old-nft")
    assert out.returncode != 0 and "nft-fw db migrate" in out.stderr, out.stderr
    with pytest.raises(records.OldLayoutError, match="nft-fw db migrate"):
        campaigns.load_spec(db, "old-nft")
    with pytest.raises(records.OldLayoutError, match=r"submitted by nft-fw 0\.1"):
        records.get_campaign(db, "old-layout")

    dry = cli(connection, "db", "migrate", "--dry-run", "--json")
    assert dry.returncode == 1, dry.stderr  # the 0.1 campaign cannot be migrated
    assert "schema_version" not in records.raw_campaign(db, "old-nft")  # nothing changed

    out = cli(connection, "db", "migrate")
    assert out.returncode == 1, out.stderr
    assert "old-layout: not migrated" in out.stderr and "submitted by nft-fw 0.1" in out.stderr
    assert "old-nft: schema 0 → 1" in out.stdout and "progress_measure" in out.stdout
    assert "1 MD segment records" in out.stdout and "old-ns: schema 0 → 1" in out.stdout

    spec = campaigns.load_spec(db, "old-nft")
    assert spec.nft.progress_measure == "max_delta" and spec.nft.min_gain == 0.0
    (segment,) = records.iterations(db, "old-nft", phase="md")
    assert segment["watched"] and not segment["stopped"] and segment["end_reason"] == "pause"
    migrated = records.get_campaign(db, "old-ns")
    assert records.file_name(db, ObjectId(migrated["target_file"])).endswith(".extxyz")
    again = ns.target(db, migrated["target_file"])
    np.testing.assert_array_equal(again.positions, target.positions)
    assert list(again.numbers) == list(target.numbers)
    with pytest.raises(gridfs.errors.NoFile):  # the JSON file was replaced, not left behind
        records.get_bytes(db, json_id)

    # a second run: nothing left to do but the 0.1 campaign
    second = cli(connection, "db", "migrate", "--json")
    reports = {r["campaign"]: r for r in json.loads(second.stdout)}
    assert reports["old-nft"]["changes"] == [] and reports["old-ns"]["changes"] == []
    assert reports["old-layout"]["refused"] and reports["old-nft"]["schema_from"] == 1
    out = cli(connection, "history", "old-nft", "--json")
    assert out.returncode == 0, out.stderr
