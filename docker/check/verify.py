"""What a campaign run in compose left in the database, checked (scripts/docker-check.sh).

Run inside the trainer container (``docker compose exec``; the database is the one the
entry point wrote into ``$NFT_FW_LAUNCHPAD_FILE``):
    python /campaigns/verify.py NAME --label-hosts H1,H2 --trainer-host H3
(the hosts: the containers' host names, which FireWorks records with every launch).

Exits 1 naming every problem: a Firework not COMPLETED or launched other than exactly once,
a launch whose worker did not take the Firework's ``_category``, a label Firework run
outside the label workers or a trainer outside the trainer, a label missing, doubled or
written by anything but its own label Firework, or a campaign without its report.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter
from typing import Any

from nft_fw.launchpad import records
from nft_fw.launchpad.connection import open_connection


def _categories(fworker: dict[str, Any]) -> set[str]:
    category = fworker.get("category") or []
    return {category} if isinstance(category, str) else set(category)


def check(db: Any, name: str, label_hosts: set[str], trainer_host: str) -> tuple[list[str], dict]:
    problems: list[str] = []
    campaign = records.get_campaign(db, name)
    if campaign.get("state") != "completed" or not campaign.get("report_files"):
        problems.append(
            f"campaign state {campaign.get('state')!r} with report files "
            f"{sorted(campaign.get('report_files') or {})}: expected 'completed' with its report"
        )
    fws = {d["fw_id"]: d for d in db.fireworks.find({"spec.campaign": name})}
    launches = {d["launch_id"]: d for d in db.launches.find({"fw_id": {"$in": list(fws)}})}
    by_worker: Counter[str] = Counter()
    for fw_id, fw in sorted(fws.items()):
        what = f"fw {fw_id} ({fw['name']})"
        if fw["state"] != "COMPLETED":
            problems.append(f"{what} is {fw['state']}, expected COMPLETED")
        if len(fw.get("launches", [])) != 1 or fw.get("archived_launches"):
            problems.append(
                f"{what} has launches {fw.get('launches')} and archived launches "
                f"{fw.get('archived_launches')}: expected exactly one launch"
            )
            continue
        launch = launches.get(fw["launches"][0])
        if launch is None:
            problems.append(f"{what}: its launch {fw['launches'][0]} is not in the database")
            continue
        category = fw["spec"]["_category"]
        worker = launch.get("fworker") or {}
        by_worker[f"{worker.get('name')}@{launch.get('host')} ({category})"] += 1
        if category not in _categories(worker):
            problems.append(
                f"{what} has _category {category!r} but ran on worker {worker.get('name')!r} "
                f"that takes {sorted(_categories(worker))}"
            )
        hosts = label_hosts if fw["spec"]["nft_role"] == "label" else {trainer_host}
        if launch.get("host") not in hosts:
            problems.append(
                f"{what} ({fw['spec']['nft_role']}) ran on host {launch.get('host')!r}, "
                f"expected one of {sorted(hosts)}"
            )
    label_fws = {i: d for i, d in fws.items() if d["spec"]["nft_role"] == "label"}
    items = {i: len(d["spec"]["_tasks"][0]["items"]) for i, d in label_fws.items()}
    labels = records.labels(db, name)
    keys = Counter((d["hash"], d["parent_hash"]) for d in labels)
    doubled = [k for k, n in keys.items() if n > 1]
    if doubled:
        problems.append(f"{len(doubled)} labels stored more than once: {doubled[:3]}")
    per_fw = Counter(d.get("fw_id") for d in labels)
    for fw_id, n in sorted(items.items()):
        if per_fw.get(fw_id, 0) != n:
            problems.append(
                f"label fw {fw_id} had {n} items but wrote {per_fw.get(fw_id, 0)} labels"
            )
    strangers = {k: n for k, n in per_fw.items() if k not in label_fws}
    if strangers:
        problems.append(f"labels written by Fireworks that are not label Fireworks: {strangers}")
    wrong_host = Counter(d.get("host") for d in labels if d.get("host") not in label_hosts)
    if wrong_host:
        problems.append(f"labels computed outside the label workers: {dict(wrong_host)}")
    if not label_fws or not labels:
        problems.append("the campaign has no label Fireworks or no labels")
    summary = {
        "campaign": name,
        "fireworks": len(fws),
        "label_fireworks": len(label_fws),
        "labels": len(labels),
        "label_items": sum(items.values()),
        "iterations": campaign.get("iteration"),
        "launches_by_worker": dict(sorted(by_worker.items())),
    }
    return problems, summary


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("name")
    parser.add_argument("--label-hosts", required=True, help="comma-separated host names")
    parser.add_argument("--trainer-host", required=True)
    args = parser.parse_args(argv)
    conn = open_connection(start_embedded=False, fw_log_level="ERROR")
    try:
        problems, summary = check(
            conn.db, args.name, set(args.label_hosts.split(",")), args.trainer_host
        )
    finally:
        conn.close(stop_server=False)
    sys.stdout.write(json.dumps(summary, indent=1) + "\n")
    for problem in problems:
        sys.stderr.write(f"verify: {problem}\n")
    if problems:
        sys.stderr.write(f"verify: {len(problems)} problems in campaign {args.name}\n")
        return 1
    sys.stdout.write(
        f"verify: campaign {args.name}: every Firework ran once on a worker of its category; "
        f"{summary['labels']} labels, each written once by its own label Firework\n"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
