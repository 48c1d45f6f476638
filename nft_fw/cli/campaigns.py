"""``nft-fw validate|submit|run|status|demo``: campaigns from a file to the end."""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from rich.table import Table

from nft_fw.cli.common import (
    EXIT_FAILURE,
    EXIT_OK,
    PHASES,
    UsageError,
    _add_connection_options,
    _campaign_errors,
    _load,
    _open,
    _phase_tables,
    _print_tables,
    _reading,
    console,
    err_console,
)
from nft_fw.labels.phase import Phase
from nft_fw.spec.campaign import NEARSIGHTEDNESS

# ---------------------------------------------------------------- campaigns

# the campaign files installed with the package (nft_fw/examples)
EXAMPLES_DIR = Path(__file__).resolve().parent.parent / "examples"
# how long the follower waits for a workflow lock held after every Firework has ended (a
# worker writing the workflow back takes well under a second) before judging the campaign
LOCK_GRACE_S = 60.0


def _validate_nearsightedness(args: argparse.Namespace, prepared: Any) -> int:
    spec = prepared.spec
    out = {
        "name": spec.name,
        "kind": spec.kind,
        "atoms": len(prepared.target),
        "formula": prepared.target.get_chemical_formula(),
        "parent": prepared.parent.name,
        "force_locality_A": prepared.parent.force_locality_A,
        "centres": prepared.centres,
        "radii_A": prepared.radii,
        "chunks": len(prepared.radii) * len(prepared.centres),
        "distinct_chunks": len(prepared.plan.distinct()),
        "full": spec.full,
        "label_fireworks": prepared.n_label_fireworks,
        "tolerance_eV_per_A": spec.tolerance_eV_per_A,
        "warnings": prepared.warnings,
    }
    if args.json:
        console.print_json(json.dumps(out))
        return EXIT_OK
    console.print(
        f"{out['name']}: valid nearsightedness campaign; target {out['formula']} "
        f"({out['atoms']} atoms), parent {out['parent']}, {len(out['centres'])} centres × "
        f"radii {', '.join(f'{r:g}' for r in out['radii_A'])} Å = {out['chunks']} chunks "
        f"({out['distinct_chunks']} distinct)"
        + (" + the whole structure" if spec.full else "")
        + f" in {out['label_fireworks']} label Fireworks"
    )
    for w in prepared.warnings:
        err_console.print(f"[yellow]warning:[/yellow] {w}")
    return EXIT_OK


def cmd_validate(args: argparse.Namespace) -> int:
    from nft_fw.spec.campaign import kind_of

    prepared = _load(args.campaign)
    return VALIDATORS[kind_of(prepared)](args, prepared)


def _md_summary(spec: Any) -> dict[str, Any] | None:

    if spec.md is None:
        return None
    return {
        **spec.md.model_dump(mode="json", include={"integrator", "temperature_K", "timestep_fs",
                                                   "length_ps", "max_pauses"}),
        "steps": spec.md_total_steps,
        "structure": spec.md_structure,
        "threshold": spec.md_threshold,
    }  # fmt: skip


def _validate_nft(args: argparse.Namespace, prepared: Any) -> int:
    out = {
        "name": prepared.spec.name,
        "atoms": len(prepared.target),
        "formula": prepared.target.get_chemical_formula(),
        "elements": list(prepared.elements),
        "parent": prepared.parent.name,
        "chunk_radius_A": prepared.chunk_radius_A,
        "relax": prepared.spec.relax is not None,
        "md": _md_summary(prepared.spec),
        "transfer": [
            {"name": name, "atoms": len(a), "formula": a.get_chemical_formula()}
            for name, a in prepared.transfers
        ],
        "warnings": prepared.warnings,
    }
    if args.json:
        console.print_json(json.dumps(out))
    else:
        console.print(
            f"{out['name']}: valid; target {out['formula']} ({out['atoms']} atoms), parent "
            f"{out['parent']}, chunk radius {out['chunk_radius_A']:g} Å"
            + ("; relaxation phase on" if out["relax"] else "")
        )
        if out["md"]:
            m = out["md"]
            console.print(
                f"  MD phase: {m['integrator']} {m['temperature_K']:g} K, {m['length_ps']:g} ps "
                f"({m['steps']} steps of {m['timestep_fs']:g} fs) on {m['structure']}, pause "
                f"above δ {m['threshold']:g} eV/Å, at most {m['max_pauses']} pauses"
            )
        for t in out["transfer"]:
            console.print(f"  transfer target {t['name']}: {t['formula']} ({t['atoms']} atoms)")
        for w in prepared.warnings:
            err_console.print(f"[yellow]warning:[/yellow] {w}")
    return EXIT_OK


#: what nft-fw validate checks and prints, by kind of campaign
VALIDATORS = {"nft": _validate_nft, NEARSIGHTEDNESS: _validate_nearsightedness}


def _submit(conn: Any, prepared: Any) -> list[int]:
    from nft_fw.firetasks.submission import submit
    from nft_fw.launchpad.records import CampaignExists

    try:
        return submit(conn.launchpad, prepared)
    except CampaignExists as err:
        raise UsageError(str(err)) from err


def cmd_submit(args: argparse.Namespace) -> int:
    prepared = _load(args.campaign)  # everything is checked before the database is touched
    conn = _open(args)
    try:
        fw_ids = _submit(conn, prepared)
    finally:
        conn.close(stop_server=False)
    from nft_fw.firetasks import kinds

    if args.json:
        console.print_json(json.dumps({"campaign": prepared.spec.name, "fw_ids": fw_ids}))
    elif not kinds.of_prepared(prepared).trains:
        console.print(
            f"submitted nearsightedness campaign [bold]{prepared.spec.name}[/] "
            f"({len(fw_ids) - 1} label Fireworks and the analysis, Fireworks {fw_ids[0]}–"
            f"{fw_ids[-1]}); start workers with: nft-fw worker {_conn_hint(conn)}"
        )
    else:
        console.print(
            f"submitted campaign [bold]{prepared.spec.name}[/] (init Firework {fw_ids}); "
            f"start workers with: nft-fw worker {_conn_hint(conn)}"
        )
    return EXIT_OK


def _conn_hint(conn: Any) -> str:
    """The connection options that reach this campaign's database again."""
    from nft_fw.launchpad.connection import DEFAULT_DB_NAME

    if conn.kind == "embedded":
        hint = f"--data-dir {conn.server.data_dir}"
    elif conn.source_file:
        hint = f"--launchpad {conn.source_file}"
    else:
        hint = "--uri …"
    if conn.db_name != DEFAULT_DB_NAME and conn.kind != "uri":
        hint += f" --db-name {conn.db_name}"
    return hint


def _follow(conn: Any, name: str, procs: Sequence[subprocess.Popen[bytes]]) -> str:
    """Show each new iteration until the campaign completes or nothing can run any more."""
    from nft_fw.launchpad import queue, records

    db = conn.launchpad.db
    shown = -1
    seen: set[tuple[str, str, int]] = set()
    labelling_shown: set[tuple[str, str, int, int]] = set()
    locked_since: float | None = None
    while True:
        family = [name, *records.follow_ups(db, name)]
        for n in family:
            for w in queue.labelling_rounds(conn.launchpad, n):
                progress = (n, w["phase"], w["round"], w["label_fireworks_ended"])
                if progress not in labelling_shown and w["label_fireworks"]:
                    labelling_shown.add(progress)
                    console.print(_labelling_line(db, n, w))
        for rec in records.phase_records(db, family, (Phase.RELAX, Phase.TRANSFER, Phase.MD)):
            key = (rec["campaign"], rec["phase"], rec["iteration"])
            if key not in seen:
                seen.add(key)
                console.print(_phase_line(rec))
        for rec in records.iterations(db, name):
            if rec["iteration"] > shown:
                shown = rec["iteration"]
                line = (
                    f"{name} iteration {rec['iteration']:>2}: chunks {rec['n_chunks']:>4} "
                    f"(+{rec['new_chunks']}), δ max {rec['structure_uncertainty']:.3f} "
                    f"mean {rec['mean_uncertainty']:.3f} eV/Å, "
                    f"loss {rec['training']['loss']:.4g}, train {rec['timings']['train_s']:.0f} s"
                )
                if "true_force_mae" in rec:
                    line += (
                        f", true MAE {rec['true_force_mae']:.3f} max {rec['true_force_max']:.3f}"
                    )
                if "oos_mae" in rec:
                    line += f", new chunks' MAE before training {rec['oos_mae']:.3f}"
                if "calibration_scale" in rec:
                    line += f", calibrated δ = {rec['calibration_scale']:.2f}·δ"
                console.print(line)
        # the Fireworks' states first, the campaigns' after: the report task writes the
        # campaign's state before its Firework turns COMPLETED, so read in this order a
        # campaign whose Fireworks have all completed is seen completed too (read the other
        # way, a report finishing in between looked like a stalled campaign)
        fw: dict[str, int] = {}
        for n in family:
            for k, v in queue.state_counts(conn.launchpad, n).items():
                fw[k] = fw.get(k, 0) + v
        states = [records.get_campaign(db, n)["state"] for n in family]
        active = sum(fw.get(s, 0) for s in ("READY", "RESERVED", "RUNNING", "WAITING"))
        # the report task marks the campaign completed just before its worker marks the
        # Firework COMPLETED: stopping the workers then would leave that Firework RUNNING;
        # and that worker then writes the workflow back under FireWorks' lock: stopping it
        # inside would leave the workflow locked for every later rerun or refresh. A
        # workflow still locked with every Firework ended is that write-back under way (or
        # a dead worker's lock, which FireWorks expires): no verdict until it is released
        locked = any(queue.workflow_locked(conn.launchpad, n) for n in family)
        if locked and not active:
            locked_since = locked_since if locked_since is not None else time.monotonic()
        else:
            locked_since = None
        waiting_for_lock = (
            locked_since is not None and time.monotonic() - locked_since < LOCK_GRACE_S
        )
        if all(s == "completed" for s in states) and not fw.get("RUNNING") and not locked:
            return "completed"
        if not active and fw and not waiting_for_lock:
            return "stalled" if not fw.get("FIZZLED") else "failed"
        if procs and all(p.poll() is not None for p in procs):
            return "workers exited"
        time.sleep(1.0)


def _labelling_line(db: Any, name: str, w: dict[str, Any]) -> str:
    """A round's labels: ended of total, and an ETA from the median label time so far."""
    from nft_fw.launchpad import records

    ended, total = w["label_fireworks_ended"], w["label_fireworks"]
    line = f"{name} {w['phase']} round {w['round']}: label Fireworks {ended}/{total} ended"
    median = records.median_label_seconds(db, name)
    left = (median or 0.0) * (total - ended)
    if left >= 1.0:  # EMT labels take milliseconds: no estimate worth printing
        line += f", about {_duration(left)} of labels left"
    return line


def _duration(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def _phase_line(rec: dict[str, Any]) -> str:
    from nft_fw.steps import decision
    from nft_fw.steps import md as md_mod

    name = rec["campaign"]
    if rec["phase"] == Phase.MD:
        return (
            f"{name} MD segment {rec['iteration']}: steps {rec['start_step']}–{rec['end_step']} "
            f"({rec['start_ps']:.3f}–{rec['end_ps']:.3f} ps), +{rec['new_chunks']} chunks, δ max "
            f"{rec['structure_uncertainty']:.3f} eV/Å, T {rec['mean_temperature_K']:.0f} K, "
            + md_mod.ending(rec)
        )
    if rec["phase"] == Phase.RELAX:
        line = (
            f"{name} relax round {rec['iteration']}: chunks {rec['n_chunks']} "
            f"(+{rec['new_chunks']} from trajectories), {rec['n_steps']} steps, δ max along "
            f"{rec['structure_uncertainty']:.3f} eV/Å, at end {rec['final_max_uncertainty']:.3f}"
        )
        if rec.get("check"):
            line += f"; {decision.check_words(rec['check'])}"
        if rec.get("check_asked"):
            line += f"; below the threshold: {rec['check_asked']} chunks of its end to check it"
    else:
        line = (
            f"{name} transfer {rec['name']} ({rec['n_atoms']} atoms): {rec['n_steps']} steps, "
            f"δ max {rec['structure_uncertainty']:.3f} eV/Å = {rec['uncertainty_ratio']:.1f}× "
            f"trained{' FLAGGED' if rec['flagged'] else ''}"
        )
    if "end_true_force_mae" in rec:
        line += (
            f", true MAE start {rec['start_true_force_mae']:.3f} end "
            f"{rec['end_true_force_mae']:.3f}"
        )
    return line


def _stop_workers(procs: Sequence[subprocess.Popen[bytes]]) -> None:
    for p in procs:
        if p.poll() is None:
            p.terminate()
    for p in procs:
        try:
            p.wait(timeout=30)
        except subprocess.TimeoutExpired:
            p.kill()


def run_campaign(conn: Any, prepared: Any, workers: int, work_dir: Path, report_dir: Path) -> int:
    from nft_fw.firetasks import kinds
    from nft_fw.launchpad import queue, records

    name = prepared.spec.name
    t0 = time.monotonic()
    _submit(conn, prepared)
    console.print(f"campaign [bold]{name}[/] submitted; {workers} local workers in {work_dir}")
    procs = spawn_workers(conn, workers, work_dir) if workers else []
    try:
        outcome = _follow(conn, name, procs)
    finally:
        _stop_workers(procs)
    db = conn.launchpad.db
    history = records.iterations(db, name)
    everything = [r for phase in PHASES for r in records.iterations(db, name, phase=phase)]
    _print_tables(_phase_tables(name, everything))
    doc = records.get_campaign(db, name)
    ended = (
        f"Fireworks {queue.state_counts(conn.launchpad, name)}; wall {time.monotonic() - t0:.0f} s"
    )
    kind = kinds.of_record(doc)
    if not kind.trains:
        console.print(f"{name}: {outcome}; {ended}")
        PROGRESS_PRINTERS[kind.name](name, kind.progress(db, name))
        _print_report(kind.report(db, name, report_dir))
        return EXIT_OK if outcome == "completed" else EXIT_FAILURE
    console.print(
        f"{name}: {outcome}; stop: {doc.get('stop_reason')} ({doc.get('stop_detail')}); " + ended
    )
    if history:
        _print_report(kind.report(db, name, report_dir))
        for child in records.follow_ups(db, name):
            if records.iterations(db, child):
                _print_report(kind.report(db, child, report_dir / child), child)
    return EXIT_OK if outcome == "completed" else EXIT_FAILURE


def _print_report(paths: dict[str, Any], follow_up: str | None = None) -> None:
    """Where the report went: its page, then the other files beside it."""
    page = Path(paths["html"])
    others = ", ".join(Path(p).name for key, p in paths.items() if key != "html")
    what = f"report of follow-up {follow_up}" if follow_up else "report"
    console.print(f"{what}: {_shown(page)} (beside it: {others})", highlight=False)


def cmd_run(args: argparse.Namespace) -> int:
    prepared = _load(args.campaign)
    conn = _open(args)
    name = prepared.spec.name
    base = Path(args.work_dir or f"{name}-run").resolve()
    try:
        return run_campaign(
            conn, prepared, args.workers, base / "workers", Path(args.report_dir or base / "report")
        )
    finally:
        conn.close()


def cmd_amend(args: argparse.Namespace) -> int:
    """Change settings of a submitted campaign for what it has not done yet."""
    from nft_fw.launchpad import campaigns
    from nft_fw.spec.amend import parse_settings
    from nft_fw.spec.campaign import CampaignError

    try:
        settings = parse_settings(args.set)
    except CampaignError as err:
        raise UsageError(f"--set {err}") from err
    if not settings:
        raise UsageError("nothing to change: give --set SECTION.FIELD=VALUE")
    with _reading(args) as conn, _campaign_errors():
        try:
            changes = campaigns.amend(conn.launchpad.db, args.name, settings)
        except CampaignError as err:
            raise UsageError(f"campaign {args.name}: {err}") from err
    if args.json:
        console.print_json(json.dumps({"campaign": args.name, "changes": changes}))
        return EXIT_OK
    for key, (before, after) in changes.items():
        console.print(f"{args.name}: {key} {before!r} → {after!r}")
    console.print("from the next Firework that starts (kept in the campaign's amendments)")
    return EXIT_OK


def cmd_status(args: argparse.Namespace) -> int:
    from nft_fw.firetasks import kinds
    from nft_fw.launchpad import records

    with _reading(args) as conn, _campaign_errors():
        db = conn.launchpad.db
        docs = [records.get_campaign(db, args.name)] if args.name else records.list_campaigns(db)
        rows = []
        for doc in docs:
            kind = kinds.of_record(doc)
            if not kind.trains:
                rows.append(_progress_row(conn, doc, kind))
                continue
            rows.append(_training_row(conn, doc))
    if args.json:
        console.print_json(json.dumps(rows, default=str))
        return EXIT_OK
    _print_status_table(rows)
    for r in rows:
        _print_status_lines(r)
    return EXIT_OK


def _training_row(conn: Any, doc: dict[str, Any]) -> dict[str, Any]:
    """The status row of a training campaign: its iteration, labels, Fireworks and failures."""
    from nft_fw.launchpad import queue, records
    from nft_fw.steps import md as md_mod

    db = conn.launchpad.db
    name = doc["_id"]
    history = records.iterations(db, name)
    last = history[-1] if history else {}
    failed = queue.fireworks(conn.launchpad, name, states=("FIZZLED",), fields=("fw_id", "name"))
    failed_chunks = _failed_labels(db, name)
    waiting = queue.labelling_rounds(conn.launchpad, name)
    return {
        "campaign": name,
        "state": doc.get("state"),
        "labelling": waiting,
        "iteration": last.get("iteration"),
        "structure_uncertainty": last.get("structure_uncertainty"),
        "best_iteration": last.get("best_iteration"),
        "labels": records.count_labels(db, name),
        "fireworks": queue.state_counts(conn.launchpad, name),
        "fizzled": failed,
        "failed_labels": failed_chunks,
        "stop_reason": doc.get("stop_reason"),
        "relax_round": doc.get("relax_round"),
        "relax_stop_reason": doc.get("relax_stop_reason"),
        "flagged_transfers": [
            r["name"]
            for r in records.iterations(db, name, phase=Phase.TRANSFER)
            if r.get("flagged")
        ],
        "md_segment": doc.get("md_segment"),
        "md_left_data": md_mod.left_data(records.phase_records(db, [name], [Phase.MD])),
        "running": queue.running(conn.launchpad, name),
    }


def _failed_labels(db: Any, name: str) -> list[dict[str, Any]]:
    """The campaign's recorded label failures, in the fields ``status`` shows."""
    from nft_fw.launchpad import records

    return [
        {
            "kind": d["kind"],
            "phase": d.get("phase"),
            "iteration": d.get("iteration"),
            "centre": d.get("centre"),
            "hash": d["hash"],
            "fw_id": d.get("fw_id"),
            "error": d.get("error"),
        }
        for d in records.failures(db, name)
    ]


def _print_status_table(rows: list[dict[str, Any]]) -> None:
    """Print the one-line-per-campaign table of ``nft-fw status``."""
    table = Table(title="campaigns")
    columns = ("campaign", "state", "iteration", "δ max (eV/Å)", "best", "relax", "labels")
    for col in (*columns, "Fireworks"):
        table.add_column(col)
    for r in rows:
        d = r["structure_uncertainty"]
        table.add_row(
            r["campaign"],
            str(r["state"]) + (f" ({r['stop_reason']})" if r["stop_reason"] else ""),
            "—" if r["iteration"] is None else str(r["iteration"]),
            "—" if d is None else f"{d:.3f}",
            "—" if r["best_iteration"] is None else str(r["best_iteration"]),
            "—"
            if r["relax_round"] is None
            else f"round {r['relax_round']}"
            + (f" ({r['relax_stop_reason']})" if r["relax_stop_reason"] else ""),
            str(r["labels"]),
            ", ".join(f"{k} {v}" for k, v in sorted(r["fireworks"].items())),
        )
    console.print(table)


def _print_status_lines(r: dict[str, Any]) -> None:
    """Print one campaign's labelling, running Fireworks, failures and progress below the table."""
    for w in r["labelling"]:
        console.print(
            f"{r['campaign']}: {w['phase']} round {w['round']} labelling, "
            f"{w['label_fireworks_ended']}/{w['label_fireworks']} label Fireworks ended"
            + ("" if w["trainer"] == "WAITING" else f", trainer {w['trainer']}")
        )
    for f in r.get("running", []):
        console.print(
            f"{r['campaign']}: running fw {f['fw_id']} ({f['role'] or f['name']}) on "
            f"{f['host'] or '?'} ({f['fworker'] or '?'}) for {_age(f['time_start'])}"
        )
    for f in r["fizzled"]:
        err_console.print(f"[red]fizzled[/red] {r['campaign']}: fw {f['fw_id']} {f['name']}")
    for f in r["failed_labels"]:
        where = f"centre {f['centre']}" if f["kind"] == "chunk" else "initial image"
        err_console.print(
            f"[red]failed label[/red] {r['campaign']}: {f['phase']} iteration "
            f"{f['iteration']} {where} (fw {f['fw_id']}, hash {f['hash'][:12]}): "
            f"{f['error']}"
        )
    if r.get("md_left_data"):
        err_console.print(f"[red]left its data[/red] {r['campaign']}: {r['md_left_data']}")
    for t in r["flagged_transfers"]:
        console.print(
            f"[yellow]flagged[/yellow] {r['campaign']}: transfer target {t} has δ ≥ 2× the "
            "trained target's (see nft-fw history --phase transfer)"
        )
    if r.get("kind") in PROGRESS_PRINTERS:
        PROGRESS_PRINTERS[r["kind"]](r["campaign"], r[r["kind"]])


def _age(started: Any) -> str:
    """How long ago a FireWorks launch time (UTC datetime or ISO text) was, in words."""
    import datetime as dt

    if started is None:
        return "?"
    if isinstance(started, str):
        started = dt.datetime.fromisoformat(started)
    if started.tzinfo is None:
        started = started.replace(tzinfo=dt.UTC)
    return _duration((dt.datetime.now(dt.UTC) - started).total_seconds())


def _progress_row(conn: Any, doc: dict[str, Any], kind: Any) -> dict[str, Any]:
    """A status row of a campaign that trains nothing (the NFT columns stay empty): its
    progress under its kind's name."""
    from nft_fw.launchpad import queue

    name = doc["_id"]
    info = kind.progress(conn.launchpad.db, name)
    return {
        "campaign": name,
        "kind": kind.name,
        "state": doc.get("state"),
        "labelling": [],
        "iteration": None,
        "structure_uncertainty": None,
        "best_iteration": None,
        "labels": info["labels"],
        "fireworks": queue.state_counts(conn.launchpad, name),
        "fizzled": queue.fireworks(
            conn.launchpad, name, states=("FIZZLED",), fields=("fw_id", "name")
        ),
        "failed_labels": [],  # listed under nearsightedness (they have radii, no iteration)
        "stop_reason": None,
        "relax_round": None,
        "relax_stop_reason": None,
        "flagged_transfers": [],
        kind.name: info,
    }


def _print_nearsightedness(name: str, info: dict[str, Any]) -> None:
    rec = info["recommended_radius_A"]
    line = f"{name}: nearsightedness, {info['labels']}/{info['planned_labels']} labels stored"
    if info["reference"] is not None:
        line += (
            "; recommended chunk radius "
            + (f"{rec:g} Å" if rec is not None else "none of the radii")
            + f" (deviation vs {info['reference']} below {info['tolerance_eV_per_A']:g} eV/Å)"
        )
        if info["missing"]:
            line += f", {info['missing']} labels missing"
    console.print(line)
    for f in info["failed_labels"]:
        where = (
            f"centre {f['centre']} radius {f['radius']:g} Å"
            if f["kind"] == "chunk"
            else "the whole structure"
        )
        err_console.print(
            f"[red]failed label[/red] {name}: nearsightedness {where} (fw {f['fw_id']}, "
            f"hash {f['hash'][:12]}): {f['error']}"
        )


#: how a campaign that trains nothing shows its progress (status rows, history, the end of
#: nft-fw run), by kind (nft_fw.firetasks.kinds)
PROGRESS_PRINTERS = {NEARSIGHTEDNESS: _print_nearsightedness}


# ---------------------------------------------------------------- demo


def _worker_command(conn: Any, extra: Sequence[str]) -> list[str]:
    cmd = [sys.executable, "-m", "nft_fw", "worker"]
    if conn.kind == "embedded":
        cmd += ["--data-dir", conn.server.data_dir, "--db-name", conn.db_name]
    elif conn.source_file:
        cmd += ["--launchpad", conn.source_file, "--db-name", conn.db_name]
    else:  # a URI: it travels in the environment (spawn_workers), the database name here
        cmd += ["--db-name", conn.db_name]
    return cmd + list(extra)


def spawn_workers(
    conn: Any, n: int, work_dir: Path, extra: Sequence[str] = ()
) -> list[subprocess.Popen[bytes]]:
    """Start ``n`` ``nft-fw worker`` processes on this connection, logs in ``work_dir``."""
    work_dir.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ)
    if conn.kind == "uri":
        # The URI reaches the child through its environment, never its argv.
        env["NFT_FW_MONGODB_URI"] = conn.launchpad.host
    procs = []
    for i in range(n):
        wdir = work_dir / f"worker{i}"
        wdir.mkdir(exist_ok=True)
        log = open(wdir / "worker.log", "ab")  # noqa: SIM115 (owned by the child)
        procs.append(
            subprocess.Popen(
                [*_worker_command(conn, extra), "--work-dir", str(wdir), "--name", f"local-{i}"],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=env,
            )
        )
        log.close()
    return procs


def cmd_demo(args: argparse.Namespace) -> int:
    """The main job: the Pt260/EMT campaign on the embedded server with local workers, then an
    independent check of the exported model against EMT on the whole particle."""
    from ase.calculators.emt import EMT

    from nft_fw.firetasks import kinds
    from nft_fw.launchpad import campaigns
    from nft_fw.launchpad.connection import connect
    from nft_fw.potential.calculator import EnsembleCalculator
    from nft_fw.steps.step import error_figures

    campaign = args.campaign or str(EXAMPLES_DIR / "pt260-emt.yaml")
    prepared = _load(campaign)
    if not kinds.of_prepared(prepared).trains:
        raise UsageError(
            f"{campaign} is a nearsightedness campaign; the demo trains a potential (give an "
            "NFT campaign file), or run it with nft-fw run"
        )
    base = Path(args.data_dir or ".nft-fw-demo").resolve()
    with connect(data_dir=base / "db", db_name="nft_fw_demo", fw_log_level="WARNING") as conn:
        console.print(f"database: {conn.description} (reset for the demo)")
        # the demo's own database: drop whatever an earlier demo left in it (FireWorks'
        # reset keeps nft-fw's collections, so a second demo would find its campaign)
        conn.launchpad.connection.drop_database(conn.launchpad.db.name)
        code = run_campaign(conn, prepared, args.workers, base / "workers", base / "report")
        if code != EXIT_OK:
            return code
        ensemble, rec = campaigns.best_model(conn.launchpad.db, prepared.spec.name)
    model_dir = EnsembleCalculator(ensemble).save(base / "model")
    atoms = prepared.target.copy()
    atoms.calc = EnsembleCalculator.load(model_dir)
    predicted = atoms.get_forces()
    delta = atoms.calc.results["uncertainties"]
    reference = prepared.target.copy()
    reference.calc = EMT()
    figures = error_figures(predicted, reference.get_forces(), delta)
    table = Table(title=f"exported model (iteration {rec['iteration']}) vs EMT on the whole target")
    table.add_column("quantity")
    table.add_column("value")
    table.add_column("bar")
    table.add_row("true-force MAE (eV/Å)", f"{figures['true_force_mae']:.3f}", "≤ 0.08")
    table.add_row("true-force max (eV/Å)", f"{figures['true_force_max']:.3f}", "≤ 0.40")
    table.add_row("atoms with residual ≤ δ_i", f"{figures['fraction_within_delta']:.0%}", "≥ 90 %")
    table.add_row("rank correlation residual/δ", f"{figures['rank_correlation']:.2f}", "")
    table.add_row("model", str(model_dir), "")
    console.print(table)
    page = base / "report" / "report.html"
    console.print(
        f"report: open {_shown(page)} in a browser (one self-contained page: figures, history, "
        f"stop, campaign file; {page.resolve().as_uri()}); the same figures as PNG, history.md "
        "and summary.json beside it"
    )
    console.print("next, to look at the demo's campaign (its own database, not the default):")
    for cmd, why in demo_next_steps(base / "db", "nft_fw_demo", prepared.spec.name):
        console.print(f"  [dim]# {why}[/dim]\n  {cmd}", highlight=False, soft_wrap=True)
    return EXIT_OK


def _shown(path: Path) -> str:
    """``path`` relative to the working directory when it is below it."""
    try:
        return str(path.resolve().relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def demo_next_steps(data_dir: Path, db_name: str, name: str) -> list[tuple[str, str]]:
    """Commands that inspect a campaign in the embedded database of ``data_dir`` (each starts
    the server for itself, except lpad, which needs it started)."""
    from nft_fw.launchpad.connection import launchpad_file

    where = f"--data-dir {shlex.quote(_shown(data_dir))} --db-name {db_name}"
    lp_file = shlex.quote(_shown(launchpad_file(data_dir, db_name)))
    return [
        (f"nft-fw status {name} {where}", "state, stop reason, Fireworks"),
        (
            f"nft-fw history {name} {where}",
            "each iteration: δ, chunks, true and out-of-sample errors",
        ),
        (f"nft-fw labels {name} {where}", "every EMT single point and its cost"),
        (f"nft-fw report {name} -o {name}-report {where}", "the figures again, elsewhere"),
        (f"nft-fw export {name} -o {name}-model {where}", "the kept model for ASE"),
        (f"nft-fw db start {where}", "keep the server up for FireWorks' own lpad"),
        (f"lpad -l {lp_file} get_wflows -d more", "the campaign's workflow, as FireWorks sees it"),
        (f"nft-fw db stop --data-dir {shlex.quote(_shown(data_dir))}", "stop it again"),
    ]


def register(sub: Any) -> None:
    """Add ``validate``, ``submit``, ``run``, ``amend``, ``status`` and ``demo`` to ``sub``."""
    p = sub.add_parser("validate", help="check a campaign file (nothing is written)")
    p.add_argument("campaign", help="campaign YAML file")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_validate)

    p = sub.add_parser("submit", help="validate a campaign file and add it to the LaunchPad")
    p.add_argument("campaign", help="campaign YAML file")
    p.add_argument("--json", action="store_true")
    _add_connection_options(p)
    p.set_defaults(func=cmd_submit)

    p = sub.add_parser("run", help="submit a campaign and run it with local workers to the end")
    p.add_argument("campaign", help="campaign YAML file")
    p.add_argument("--workers", type=int, default=2, help="local worker processes (default 2)")
    p.add_argument("--work-dir", metavar="DIR", help="worker launch directories (./NAME-run)")
    p.add_argument("--report-dir", metavar="DIR", help="plots and summary (./NAME-run/report)")
    _add_connection_options(p)
    p.set_defaults(func=cmd_run, compiles=True)

    p = sub.add_parser(
        "amend", help="change settings of a submitted campaign for what it has not done yet"
    )
    p.add_argument("name", help="the campaign")
    p.add_argument(
        "--set", action="append", default=[], metavar="SECTION.FIELD=VALUE",
        help="a setting to change (repeatable), e.g. relax.max_rounds=20; only settings that "
        "decide what comes next (nft_fw.spec.amend.AMENDABLE)",
    )  # fmt: skip
    p.add_argument("--json", action="store_true")
    _add_connection_options(p)
    p.set_defaults(func=cmd_amend)

    p = sub.add_parser("status", help="campaigns: state, iteration, δ, labels, Fireworks")
    p.add_argument("name", nargs="?", help="one campaign (default: all)")
    p.add_argument("--json", action="store_true")
    _add_connection_options(p)
    p.set_defaults(func=cmd_status)

    p = sub.add_parser(
        "demo", help="the main job: the Pt260/EMT campaign with two local workers, checked vs EMT"
    )
    p.add_argument(
        "--data-dir",
        metavar="DIR",
        help="demo directory: database, workers, report, model (default ./.nft-fw-demo)",
    )
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--campaign", help="another campaign file (default: the Pt260/EMT example)")
    p.set_defaults(func=cmd_demo, compiles=True)
