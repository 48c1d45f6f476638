"""Many workers on one campaign: wall time, worker utilisation and where the idle time goes,
database operations, server memory, and the model's true error — per number of workers W.

    .venv/bin/python bench/load_workers.py --workers 4 8 16 32
    .venv/bin/python bench/load_workers.py --workers 8 --chunks 8 --iterations 4 --json out.json
    .venv/bin/python bench/load_workers.py --workers 32 --chunks 96 --iterations 8 \
        --rounds overlapping --after 0.25 --selection diverse [--seed-chunks 96] [--standing 60]
    .venv/bin/python bench/load_workers.py --local --chunks 32 --iterations 8 --octahedron 12 4

The campaign: rattled Pt260 (``--octahedron`` for another), EMT parent that first sleeps as
long as a shipped GPAW chunk label took × ``--scale`` (bench/load_parent.py: 2.2–36 s at
1/100, median 6 s), synchronous
rounds of ``--chunks`` chunk labels (one label per Firework) and a trainer that waits for all
of them. W real ``nft-fw worker --until-done`` processes (one thread each) against a fresh
embedded server.

Per W it prints: wall time; utilisation = Σ launch time / (W × wall); the idle worker-time
split by what the campaign was doing at that moment — a trainer (or init/report) running
("trainer"), label Fireworks READY but not taken ("queue"), labels still running with none
left to take ("stragglers"), nothing running or ready ("other"); database operations
(serverStatus opcounters) in all, per launch and per second; the median check-out latency
(a Firework's READY time — its creation — to its launch's start, for label Fireworks); the
server's peak resident memory; and the kept model's true-force MAE on the target (EMT),
per trainer (``curve``) and at ``--at`` chunks. Utilisation is also given over the rounds'
window (first to last chunk label) and the learning window (first chunk label to the last
trainer's start). ``--rounds overlapping`` runs nft.rounds: overlapping (docs/figures.md);
``--standing S`` starts the workers S seconds before submitting and times from submission.
"""

from __future__ import annotations

import argparse
import datetime as dt
import itertools
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import load_parent  # noqa: E402,F401  (registers timed-emt in this process)

from nft_fw.firetasks.submission import submit  # noqa: E402
from nft_fw.launchpad import records, server  # noqa: E402
from nft_fw.launchpad.connection import embedded  # noqa: E402
from nft_fw.spec.campaign import load_campaign, prepare  # noqa: E402


def campaign(
    name: str,
    chunks: int,
    iterations: int,
    scale: float,
    rounds: str = "synchronous",
    after: float = 0.25,
    selection: str | None = None,
    seed_chunks: int = 0,
    length: int = 8,
    cut: int = 3,
) -> dict[str, Any]:
    spec = {
        "name": name,
        "target": {
            "builder": {"kind": "octahedron", "element": "Pt", "length": length, "cutoff": cut},
            "rattle": {"stdev": 0.05, "seed": 0},
        },
        "parent": {"name": "timed-emt", "params": {"scale": scale, "seed": 0}},
        "initial": {"generator": "bulk", "n_structures": 8, "n_candidates": 16},
        "model": {"cutoff": 5.0, "hidden_layers": [16, 16], "ensemble_size": 4},
        "training": {"initial_steps": 600, "steps_per_iteration": 300},
        "nft": {
            "chunks_per_iteration": chunks,
            "max_iterations": iterations,
            "patience": iterations + 1,
            "threshold": 0.001,
            "seed": 0,
            "chunk_radius": 12.0,
        },
        "validation": {"true_forces": True},
        "service": {"labels_per_firework": 1},
    }
    if rounds != "synchronous":
        spec["nft"].update(rounds=rounds, next_round_after=after)  # type: ignore[attr-defined]
    if selection is not None:
        spec["nft"]["selection"] = selection  # type: ignore[index]
    if seed_chunks:
        spec["nft"]["seed_chunks"] = seed_chunks  # type: ignore[index]
    return spec


def _utc(value: Any) -> float:
    if isinstance(value, str):
        value = dt.datetime.fromisoformat(value)
    if value.tzinfo is None:
        value = value.replace(tzinfo=dt.UTC)
    return float(value.timestamp())


def _cpu_s(pid: int) -> float | None:
    """User + system CPU seconds of process ``pid`` so far."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _peak_rss_mib(pid: int) -> float | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def analyse(lp: Any, name: str, workers: int, t0: float, t1: float) -> dict[str, Any]:
    """Utilisation and idle time from FireWorks' own launch records."""
    fws = {
        d["fw_id"]: d
        for d in lp.fireworks.find(
            {"spec.campaign": name},
            {
                "fw_id": 1,
                "spec.nft_role": 1,
                "spec.nft_round": 1,
                "spec.nft_phase": 1,
                "created_on": 1,
            },
        )
    }
    launches = []
    rounds = []  # (start, end) of the label launches of NFT rounds >= 1
    for doc in lp.launches.find({"fw_id": {"$in": list(fws)}}):
        if doc.get("time_start") is None or doc.get("time_end") is None:
            continue
        spec = fws[doc["fw_id"]].get("spec", {})
        role = spec.get("nft_role")
        a, b = _utc(doc["time_start"]), _utc(doc["time_end"])
        launches.append((a, b, role, doc["fw_id"]))
        if role == "label" and spec.get("nft_round", 0) >= 1:
            rounds.append((a, b))
    busy = sum(b - a for a, b, _, _ in launches)
    wall = t1 - t0
    # the rounds' window: from the first chunk label's start to the last one's end, i.e.
    # without the campaign's fixed start (worker start-up, init, the initial images, the
    # first training from scratch) and end (the report): what the way rounds follow each
    # other decides
    w0, w1 = min(a for a, _ in rounds), max(b for _, b in rounds)
    busy_window = sum(max(0.0, min(b, w1) - max(a, w0)) for a, b, _, _ in launches)
    # while the campaign learns: up to the last trainer's start (after it, the chunks still in
    # flight finish and the report runs, a fixed end like the start)
    t_last = max(a for a, _, role, _ in launches if role == "train")
    busy_learning = sum(max(0.0, min(b, t_last) - max(a, w0)) for a, b, _, _ in launches)
    label_start = {fw: a for a, _, role, fw in launches if role == "label"}
    ready = [
        (_utc(fws[fw]["created_on"]), start)
        for fw, start in label_start.items()
        if fws[fw].get("created_on") is not None
    ]
    latency = [max(0.0, start - made) for made, start in ready]
    idle = {"trainer": 0.0, "queue": 0.0, "stragglers": 0.0, "other": 0.0}
    idle_ready = 0.0  # idle while a label Firework was READY: the queue's own overhead
    step = 0.05
    t = t0
    while t < t1:
        running = [role for a, b, role, _ in launches if a <= t < b]
        n_idle = workers - len(running)
        if n_idle > 0:
            n_ready = sum(1 for made, start in ready if made <= t < start)
            idle_ready += min(n_idle, n_ready) * step
            if any(r != "label" for r in running):
                kind = "trainer"
            elif any(made <= t < start for made, start in ready):
                kind = "queue"
            elif running:
                kind = "stragglers"
            else:
                kind = "other"
            idle[kind] += n_idle * step
        t += step
    trainers = sorted((a, b - a) for a, b, role, _ in launches if role == "train")
    return {
        "wall_s": wall,
        "launches": len(launches),
        "utilisation": busy / (workers * wall),
        "rounds_window_s": w1 - w0,
        "utilisation_rounds": busy_window / (workers * (w1 - w0)),
        "learning_window_s": t_last - w0,
        "utilisation_learning": busy_learning / (workers * max(t_last - w0, 1e-9)),
        "trainer_launch_s": [round(d, 2) for _, d in trainers],
        "idle_worker_s": idle,
        "idle_with_ready_worker_s": idle_ready,
        "checkout_latency_median_s": statistics.median(latency) if latency else None,
        # every launch: start and end (s after the submission), role, round, and when its
        # Firework was created (READY, for a label)
        "timeline": sorted(
            (
                round(a - t0, 2),
                round(b - t0, 2),
                role,
                fws[fw].get("spec", {}).get("nft_round"),
                round(_utc(fws[fw]["created_on"]) - t0, 2) if fws[fw].get("created_on") else None,
            )
            for a, b, role, fw in launches
        ),
    }


def _wait_for_report(lp: Any, name: str, timeout: float) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        doc = lp.fireworks.find_one({"spec.campaign": name, "spec.nft_role": "report"})
        if doc is not None and doc["state"] in ("COMPLETED", "FIZZLED"):
            return
        time.sleep(0.5)
    raise TimeoutError(f"campaign {name}: no report after {timeout:g} s")


def store_true_forces(db: Any, prepared: Any) -> None:
    """The scoring reference, the target's EMT forces, stored as the campaign's validation
    forces before any trainer asks for them. Left to the first trainer, it would call the
    timed parent on the whole target and sleep a label's time there (30 s at 1/20) — a call
    a DFT campaign does not make (it has no whole-target label), during which the workers
    label seed chunks the first model never chose."""
    from ase.calculators.emt import EMT

    atoms = prepared.target.copy()
    atoms.calc = EMT()
    name = prepared.spec.name
    file_id = records.put_array(db, atoms.get_forces(), f"{name}/true_forces.npy")
    records.update_campaign(db, name, true_forces_file=str(file_id))


def run(workers: int, args: argparse.Namespace, base: Path) -> dict[str, Any]:
    data_dir = base / f"db-{workers}"
    name = f"load-{workers}"
    server.start(data_dir)
    conn = embedded(data_dir, db_name="bench_load", start=False)
    try:
        conn.launchpad.reset("", require_password=False)
        spec = prepare(load_campaign(campaign(
            name, args.chunks, args.iterations, args.scale, args.rounds, args.after,
            args.selection, args.seed_chunks, *args.octahedron)))  # fmt: skip
        admin = conn.launchpad.db.client.admin
        pid = int(admin.command("serverStatus")["pid"])
        env = {**os.environ, "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"}
        standing = args.standing is not None

        def start_workers() -> list[subprocess.Popen[bytes]]:
            return [
                subprocess.Popen(
                    [
                        sys.executable,
                        str(HERE / "load_worker.py"),
                        "--data-dir",
                        str(data_dir),
                        "--db-name",
                        "bench_load",
                        *([] if standing else ["--until-done"]),
                        "--name",
                        f"w{k}",
                        "--work-dir",
                        str(base / f"work-{workers}" / f"w{k}"),
                    ],
                    env=env,
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                )
                for k in range(workers)
            ]

        procs: list[subprocess.Popen[bytes]] = []
        if standing:  # a service's workers, up and polling before the campaign comes
            procs = start_workers()
            time.sleep(args.standing)
        submit(conn.launchpad, spec)
        store_true_forces(conn.launchpad.db, spec)
        ops0 = admin.command("serverStatus")["opcounters"]
        cpu0 = _cpu_s(pid)
        t0 = time.time()
        try:
            if standing:
                _wait_for_report(conn.launchpad, name, args.timeout)
            else:
                procs = start_workers()
                for p in procs:
                    p.wait(timeout=args.timeout)
        finally:
            t1 = time.time()
            for p in procs:
                if p.poll() is None:
                    p.send_signal(signal.SIGTERM)
            for p in procs:
                p.wait(timeout=60)
        ops1 = admin.command("serverStatus")["opcounters"]
        cpu1 = _cpu_s(pid)
        ops = {k: ops1[k] - ops0.get(k, 0) for k in ops1}
        out = analyse(conn.launchpad, name, workers, t0, t1)
        stats = conn.launchpad.db.command("dbStats")
        out["db_stats"] = {k: stats.get(k) for k in ("objects", "dataSize", "storageSize")}
        out["collections"] = {
            c: {k: conn.launchpad.db.command("collStats", c).get(k) for k in ("count", "size")}
            for c in sorted(conn.launchpad.db.list_collection_names())
        }
        history = records.iterations(conn.launchpad.db, name)
        kept = min(history, key=lambda r: r["structure_uncertainty"]) if history else {}
        total_ops = sum(ops.values())
        out.update(
            workers=workers,
            chunks_per_iteration=args.chunks,
            iterations=len(history),
            labels=records.count_labels(conn.launchpad.db, name),
            db_ops=ops,
            db_ops_per_launch=total_ops / max(1, out["launches"]),
            db_ops_per_s=total_ops / out["wall_s"],
            server_peak_rss_MiB=_peak_rss_mib(pid),
            # the server's CPU share of the wall time (1.0 = one core all along)
            server_cpu_share=(cpu1 - cpu0) / out["wall_s"] if cpu0 is not None and cpu1 else None,
            true_force_mae_last=history[-1].get("true_force_mae") if history else None,
            true_force_mae_kept=kept.get("true_force_mae"),
            rounds=args.rounds,
            standing_s=args.standing,
            selection=args.selection or "most_uncertain",
            seed_chunks=args.seed_chunks,
            next_round_after=args.after if args.rounds != "synchronous" else None,
            # the science side, per trainer: chunks trained on and the true-force MAE
            curve=[(r["n_chunks"], r.get("true_force_mae")) for r in history],
            # where a trainer's time goes (s): gather, features, train, predict, total
            trainer_timings=[
                {k: round(v, 2) for k, v in r["timings"].items() if k.endswith("_s")}
                for r in history
            ],
            # chunks asked for that no trainer used (in flight when NFT stopped)
            unused_chunks=records.count_labels(conn.launchpad.db, name)
            - (history[-1]["n_labels"] if history else 0),
        )
        return out
    finally:
        conn.close(stop_server=False)
        server.stop(data_dir)


def local(args: argparse.Namespace) -> None:
    """The campaign of these settings in one process: its true-MAE curve and value at --at."""
    from nft_fw import run_locally

    spec = load_campaign(campaign(
        "load-local", args.chunks, args.iterations, 0.0, args.rounds, args.after,
        args.selection, args.seed_chunks, *args.octahedron))  # fmt: skip
    history = run_locally(spec, progress=False).history
    curve = [(r["n_chunks"], r.get("true_force_mae")) for r in history]
    at = mae_at(curve, args.at)
    print(
        f"curve {curve}; true MAE at {args.at} chunks {at if at is not None else float('nan'):.4f}"
    )
    if args.json:
        Path(args.json).write_text(json.dumps({"curve": curve, "true_force_mae_at": at}))


def mae_at(curve: list[tuple[int, float | None]], n: int) -> float | None:
    """The true-force MAE after ``n`` chunks, linear between the trainers around it."""
    points = [(c, e) for c, e in curve if e is not None]
    for (c0, e0), (c1, e1) in itertools.pairwise(points):
        if c0 <= n <= c1:
            return e0 if c1 == c0 else e0 + (e1 - e0) * (n - c0) / (c1 - c0)
    return None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, nargs="+", default=[4, 8, 16, 32])
    parser.add_argument("--chunks", type=int, default=32, help="chunks per iteration (32)")
    parser.add_argument("--iterations", type=int, default=4, help="NFT iterations after 0")
    parser.add_argument("--scale", type=float, default=0.01, help="label-time scale (1/100)")
    parser.add_argument("--rounds", choices=["synchronous", "overlapping"], default="synchronous")
    parser.add_argument(
        "--after", type=float, default=0.25, help="overlapping: nft.next_round_after (0.25)"
    )
    parser.add_argument(
        "--standing",
        type=float,
        metavar="S",
        default=None,
        help="start the workers S seconds before submitting the campaign and time from the "
        "submission (a service whose workers are up); default: start them after it",
    )
    parser.add_argument("--selection", choices=["most_uncertain", "diverse"], default=None)
    parser.add_argument(
        "--seed-chunks",
        type=int,
        default=0,
        help="overlapping: nft.seed_chunks, chunks asked for before the first model (0)",
    )
    parser.add_argument(
        "--at", type=int, default=128, help="report the true MAE at this many chunks (128)"
    )
    parser.add_argument(
        "--octahedron",
        type=int,
        nargs=2,
        default=[8, 3],
        metavar=("LENGTH", "CUTOFF"),
        help="the target, ase.cluster.Octahedron('Pt', LENGTH, CUTOFF) rattled 0.05 Å: 8 3 = "
        "Pt260 (default), 12 4 = Pt976 (room for several hundred chunks)",
    )
    parser.add_argument(
        "--local",
        action="store_true",
        help="no workers: the campaign in one process (run_locally, no label sleeps), its "
        "true-MAE curve; a synchronous campaign's history is its service history "
        "(tests/test_parity.py), so this is the synchronous reference at any --workers",
    )
    parser.add_argument("--timeout", type=float, default=3600.0)
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    if args.local:
        local(args)
        return
    rows = []
    with tempfile.TemporaryDirectory(prefix="nft-fw-load-") as tmp:
        for w in args.workers:
            row = run(w, args, Path(tmp))
            rows.append(row)
            idle = row["idle_worker_s"]
            # the science side at a common N (--at chunks): the true MAE between the two
            # trainers around N, linear in N (a synchronous campaign has one at N exactly)
            at = mae_at(row["curve"], args.at)
            row["true_force_mae_at"] = at
            print(
                f"W={w:3d}: wall {row['wall_s']:6.0f} s, utilisation {row['utilisation']:.0%} "
                f"(rounds: {row['utilisation_rounds']:.0%} of {row['rounds_window_s']:.0f} s, "
                f"learning: {row['utilisation_learning']:.0%} of "
                f"{row['learning_window_s']:.0f} s), "
                f"idle worker-s trainer {idle['trainer']:.0f} / queue {idle['queue']:.0f} / "
                f"stragglers {idle['stragglers']:.0f} / other {idle['other']:.0f}; "
                f"{row['launches']} launches, db ops {sum(row['db_ops'].values())} "
                f"({row['db_ops_per_launch']:.0f}/launch, {row['db_ops_per_s']:.0f}/s), "
                f"check-out latency {row['checkout_latency_median_s'] or 0:.2f} s, server peak "
                f"{row['server_peak_rss_MiB'] or 0:.0f} MiB; {row['labels']} labels, "
                f"true MAE last {row['true_force_mae_last'] or float('nan'):.3f} eV/Å, "
                f"at {args.at} chunks {at if at is not None else float('nan'):.4f} eV/Å",
                flush=True,
            )
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1, default=str))


if __name__ == "__main__":
    main()
