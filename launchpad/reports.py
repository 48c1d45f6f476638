"""A campaign's report: its records gathered from the database for :mod:`nft_fw.report.summary`,
which builds it (the callers: ``nft-fw report`` through :mod:`nft_fw.firetasks.kinds`, the
report Firework)."""

from __future__ import annotations

from bson import ObjectId
from pymongo.database import Database

from nft_fw.labels.phase import Phase
from nft_fw.launchpad import campaigns, records
from nft_fw.report import summary as science
from nft_fw.steps import kept as kept_mod


def gather(db: Database, name: str) -> science.ReportInputs:
    """Everything the report of campaign ``name`` is made of."""
    doc = records.get_campaign(db, name)
    spec = campaigns.stored_spec(doc)
    history = records.iterations(db, name)
    if not history:
        raise KeyError(f"campaign {name!r} has no trained iteration yet")
    kept = history[kept_mod.kept_iteration(history, spec)]
    reference = (
        records.get_array(db, ObjectId(doc["true_forces_file"]))
        if doc.get("true_forces_file")
        else None
    )
    label_fields = {"kind": 1, "phase": 1, "inherited_from": 1, "prior_campaign": 1, "_id": 0}
    return science.ReportInputs(
        name=name,
        doc=doc,
        spec=spec,
        history=history,
        rounds=records.iterations(db, name, phase=Phase.RELAX),
        transfers=records.iterations(db, name, phase=Phase.TRANSFER),
        segments=records.iterations(db, name, phase=Phase.MD),
        labels=list(db[records.LABELS].find({"campaign": name}, label_fields)),
        predicted=records.get_array(db, ObjectId(kept["forces_file"])),
        delta=records.get_array(db, ObjectId(kept["delta_file"])),
        reference=reference,
    )
