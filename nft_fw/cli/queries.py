"""``nft-fw history|labels|export|report|nearsightedness``: what a campaign recorded."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from rich.table import Table

from nft_fw.cli.campaigns import PROGRESS_PRINTERS
from nft_fw.cli.common import (
    EXIT_OK,
    PHASES,
    UsageError,
    _add_connection_options,
    _load,
    _phase_tables,
    _print_tables,
    _with_campaign,
    console,
    err_console,
)
from nft_fw.labels.phase import Phase


def cmd_history(args: argparse.Namespace) -> int:
    from nft_fw.launchpad import records
    from nft_fw.report import references as refs

    phases = PHASES if args.phase == "all" else (args.phase,)
    against: list[refs.Reference] = []
    if args.against:  # read before the database: a bad file fails at once
        try:
            against = refs.read_references([Path(p) for p in args.against])
        except refs.ReferenceFileError as err:
            raise UsageError(f"--against: {err}") from err

    def get(db: Any) -> tuple[Any, Any]:
        from nft_fw.firetasks import kinds

        kind = kinds.of_campaign(db, args.name)
        if not kind.trains:  # its progress is its result
            if against:
                raise UsageError(
                    f"--against: campaign {args.name!r} ({kind.name}) trains no model to check"
                )
            return kind, kind.progress(db, args.name)
        history = [r for phase in phases for r in records.iterations(db, args.name, phase=phase)]
        if against:
            return kind, _against(db, history, against)
        return kind, history

    kind, history = _with_campaign(args, get)
    if against:
        if args.json:
            console.print_json(json.dumps(history, default=str))
        else:
            _print_against(args.name, history, against)
        return EXIT_OK
    if not kind.trains:
        if args.json:
            console.print_json(json.dumps(history, default=str))
        else:
            PROGRESS_PRINTERS[kind.name](args.name, history)
        return EXIT_OK
    if args.json:
        console.print_json(json.dumps(history, default=str))
        return EXIT_OK
    _print_tables(_phase_tables(args.name, history, wide=args.wide))
    return EXIT_OK


def _against(db: Any, history: list[dict[str, Any]], against: list[Any]) -> list[dict[str, Any]]:
    """Every stored model of ``history`` (the records with a model of their own: NFT
    iterations, relax rounds, MD segments) checked against the references, in the order
    the records are shown."""
    from nft_fw.launchpad import relax as relax_store
    from nft_fw.report import references as refs

    rows = []
    for rec in history:
        if not rec.get("model_file"):  # a transfer relaxes with the kept model: no model
            continue
        ensemble = relax_store.load(db, rec)
        try:
            refs.check_elements(against, ensemble.elements)
        except refs.ReferenceFileError as err:
            raise UsageError(f"--against: {err}") from err
        rows.append(
            {
                "phase": rec["phase"],
                "iteration": rec["iteration"],
                "n_labels": rec.get("n_labels"),
                "n_chunks": rec.get("n_chunks"),
                "against": refs.errors(ensemble, against),
            }
        )
    if not rows:
        raise UsageError("--against: the records shown hold no model yet; choose another --phase")
    return rows


def _print_against(name: str, rows: list[dict[str, Any]], against: list[Any]) -> None:
    """One row per model: its force MAE against each reference (eV/Å) and their mean; the
    references are numbered under the table."""
    table = Table(title=f"{name}: force MAE (eV/Å) of each stored model against the references")
    for col in ("phase", "#", "labels", "chunks"):
        table.add_column(col)
    for k in range(len(against)):
        table.add_column(str(k + 1), justify="right")
    table.add_column("mean", justify="right")
    for r in rows:
        maes = [r["against"][ref.name]["true_force_mae"] for ref in against]
        table.add_row(
            r["phase"], str(r["iteration"]), str(r["n_labels"]), str(r["n_chunks"]),
            *(f"{v:.3f}" for v in maes), f"{sum(maes) / len(maes):.3f}",
        )  # fmt: skip
    console.print(table)
    for k, ref in enumerate(against):
        console.print(f"{k + 1}: {ref.name} ({len(ref.atoms)} atoms)")
    console.print("largest errors and δ per reference: --json")


def cmd_labels(args: argparse.Namespace) -> int:
    if args.append and not args.export:
        raise UsageError("--append adds to the file of --export FILE; give both")
    if args.export:
        return _export_labels(args)

    def get(db: Any) -> list[dict[str, Any]]:
        from nft_fw.firetasks import kinds

        kind = kinds.of_campaign(db, args.name)
        out = []
        for d in kind.labels(db, args.name):
            force = d.get("central_force")
            out.append(
                {
                    "kind": d["kind"],
                    "phase": kind.label_phase(d),
                    "iteration": d.get("iteration"),
                    "radius_A": d.get("radius"),
                    "centre": d.get("centre"),
                    "hash": d["hash"],
                    "atoms": d.get("n_atoms") or len(d["numbers"]),
                    "energy_eV": d["energy"],
                    "central_force_eV_per_A": force,
                    "seconds": d.get("seconds"),
                    "scf_iterations": d.get("scf_iterations"),
                    "attempt": d.get("attempt"),
                    "peak_rss_MiB": d.get("peak_rss_MiB"),
                    "mpi_ranks": d.get("mpi_ranks", 1),
                    "log_file": d.get("log_file"),
                    "host": d.get("host"),
                    "fw_id": d.get("fw_id"),
                }
            )
        return out

    rows = _with_campaign(args, get)
    if args.json:
        console.print_json(json.dumps(rows, default=str))
        return EXIT_OK
    table = Table(title=f"{args.name}: labels")
    columns = ("kind", "phase", "number", "centre", "hash", "atoms", "|F_c| (eV/Å)", "s", "SCF")
    for col in (*columns, "host", "fw"):
        table.add_column(col)
    for r in rows:
        f = r["central_force_eV_per_A"]
        table.add_row(
            r["kind"],
            r["phase"],
            str(r["iteration"]),
            "—" if r["centre"] is None else str(r["centre"]),
            r["hash"][:12],
            str(r["atoms"]),
            "—" if f is None else f"{sum(x * x for x in f) ** 0.5:.3f}",
            f"{r['seconds']:.2f}" if r["seconds"] is not None else "—",
            "—" if r["scf_iterations"] is None else str(r["scf_iterations"]),
            str(r["host"]),
            str(r["fw_id"]),
        )
    console.print(table)
    return EXIT_OK


def _export_labels(args: argparse.Namespace) -> int:
    """``nft-fw labels NAME --export FILE``: every label as exact extended XYZ."""
    from collections import Counter

    from nft_fw.firetasks import kinds
    from nft_fw.labels import files as labelset

    frames = _with_campaign(args, lambda db: kinds.of_campaign(db, args.name).frames(db, args.name))
    path = Path(args.export)
    if args.append and path.exists():
        try:
            added, there = labelset.append(path, frames)
        except ValueError as err:
            raise UsageError(f"--append: {err}") from err
        console.print(
            f"{args.name}: {added} new labels appended to {path} ({there} already there, "
            "left byte for byte)"
        )
        return EXIT_OK
    labelset.write(path, frames)
    counts = Counter((f.info["nft_phase"], f.info["nft_kind"]) for f in frames)
    parts = ", ".join(f"{n} {phase} {kind}" for (phase, kind), n in sorted(counts.items()))
    console.print(
        f"{args.name}: {len(frames)} labels ({parts or 'none yet'}) written to {path} "
        "(extended XYZ; ase.io.read(path, ':') reads it; fields: docs/labels.md)"
    )
    return EXIT_OK


def cmd_lammps(args: argparse.Namespace) -> int:
    try:
        from nft_fw.potential.lammps import run_input
    except ImportError as err:  # pragma: no cover - the set-up installs it
        raise UsageError(
            f"{err}: install Debian's lammps and python3-lammps (make setup-dev links them "
            "into .venv)"
        ) from err
    try:
        bridge = run_input(
            args.input, args.model, args.elements, dict(args.var),
            cmdargs=("-log", args.log or "none"), structure=args.structure,
        )  # fmt: skip
    except (ValueError, FileNotFoundError, ImportError) as err:
        raise UsageError(str(err)) from err
    console.print(
        f"{args.input}: {bridge.calls} force calls with {args.model}; largest δ at the last "
        f"{bridge.max_delta:.3f} eV/Å"
    )
    return EXIT_OK


def cmd_export(args: argparse.Namespace) -> int:
    from nft_fw.launchpad import relax as relax_store
    from nft_fw.potential.calculator import EnsembleCalculator

    def get(db: Any) -> Any:
        from nft_fw.firetasks import kinds

        if not kinds.of_campaign(db, args.name).trains:
            raise UsageError(
                f"{args.name} is a nearsightedness campaign: it trains no model to export. "
                f"Its per-radius table is in 'nft-fw history {args.name}' and its figure in "
                f"'nft-fw report {args.name}'"
            )
        return relax_store.final_model(db, args.name)

    if args.structures:
        files = _with_campaign(
            args, lambda db: _write_products(db, args.name, args.structures, args.format)
        )
        for key, path in files.items():
            console.print(f"{args.name}: {key} → {path}")
        if not files:
            console.print(
                f"{args.name}: no relaxation, transfer or MD has run yet: nothing to write"
            )
        if not args.output:
            return EXIT_OK
    if not args.output:
        raise UsageError("give -o DIR (the model) and/or --structures DIR (what the phases made)")
    ensemble, rec = _with_campaign(args, get)
    calc = EnsembleCalculator(ensemble)
    path = calc.save(args.output)
    console.print(
        f"{args.name}: model of {rec['phase']} iteration {rec['iteration']} (δ max "
        f"{rec['structure_uncertainty']:.3f} eV/Å) written to {path}; load it with "
        "nft_fw.EnsembleCalculator.load"
    )
    if calc.calibration is not None:
        cal = calc.calibration
        console.print(
            f"calibrated δ = {cal.scale:.3f}·δ ({cal.coverage:.0%} of {cal.n_points} "
            "out-of-sample errors within it): results['calibrated_uncertainties'] next to "
            "results['uncertainties']"
        )
    return EXIT_OK


def _write_products(db: Any, name: str, directory: str, fmt: str) -> dict[str, Path]:
    """The relaxed structures, relaxation frames, transfer targets and MD trajectory of a
    stored campaign, written by :func:`nft_fw.runners.products.write` (as the local runner's)."""
    from bson import ObjectId

    from nft_fw.launchpad import campaigns, records
    from nft_fw.launchpad import md as md_store
    from nft_fw.runners import products
    from nft_fw.steps import kept

    def structures(file_id: str) -> list[Any]:
        return records.get_structures(db, ObjectId(file_id))

    rounds = records.iterations(db, name, phase=Phase.RELAX)
    transfers = records.iterations(db, name, phase=Phase.TRANSFER)
    segments = records.iterations(db, name, phase=Phase.MD)
    spec = campaigns.load_spec(db, name)
    return products.write(
        directory,
        rounds=rounds,
        round_finals=[structures(r["final_file"])[0] for r in rounds],
        round_frames=[structures(r["frames_file"]) for r in rounds],
        kept_round=kept.kept_round(rounds, spec) if rounds else None,
        transfers=transfers,
        transfer_finals=[structures(r["final_file"])[0] for r in transfers],
        segments=segments,
        segment_frames=[structures(r["frames_file"]) for r in segments],
        end_state=md_store.state(db, segments[-1]) if segments else None,
        fmt=fmt,
    )


def _numbers(text: str, kind: type, what: str) -> list[Any]:
    try:
        return [kind(x) for x in text.split(",") if x.strip()]
    except ValueError as err:
        raise UsageError(f"{what} {text!r}: expected comma-separated numbers ({err})") from err


def cmd_nearsightedness(args: argparse.Namespace) -> int:

    from nft_fw.report import nearsightedness as ns_report
    from nft_fw.steps import nearsightedness as ns
    from nft_fw.structures.chunks import random_centres

    prepared = _load(args.campaign)
    atoms = prepared.target
    radii = _numbers(args.radii, float, "--radii")
    if args.centres == "all":
        centres = list(range(len(atoms)))
    elif args.centres:
        centres = _numbers(args.centres, int, "--centres")
    else:
        centres = random_centres(len(atoms), args.n_centres, args.seed)
    try:
        result = ns.nearsightedness(atoms, prepared.parent, centres, radii, full=not args.no_full)
    except ValueError as err:
        raise UsageError(str(err)) from err
    out = Path(args.out or f"{prepared.spec.name}-nearsightedness")
    paths = ns_report.write(result, out, args.tolerance, prepared.spec.name)
    data = result.to_dict(args.tolerance)
    if args.json:
        console.print_json(
            json.dumps(
                {k: v for k, v in data.items() if k not in ("central_forces", "full_forces")}
            )
        )
        return EXIT_OK
    table = Table(
        title=f"{prepared.spec.name}: parent {result.parent}, {len(atoms)} atoms, "
        f"{len(centres)} centres; |ΔF| of the centre, eV/Å"
    )
    ref = [k for k in ("full", "largest") if f"{k}_max" in data["table"][0]]
    for col in ("radius (Å)", "atoms (mean)", "parent (s)"):
        table.add_column(col, justify="right")
    for k in ref:
        for stat in ("median", "q3", "max"):
            table.add_column(f"vs {k} {stat}", justify="right")
    for row in data["table"]:
        cells = [f"{row['radius_A']:g}", f"{row['mean_atoms']:.0f}", f"{row['parent_seconds']:.1f}"]
        cells += [f"{row[f'{k}_{stat}']:.2e}" for k in ref for stat in ("median", "q3", "max")]
        table.add_row(*cells)
    console.print(table)
    rec = data["recommended_radius_A"]
    console.print(
        f"parent labels run: {result.labels}"
        + (f"; whole structure {result.full_seconds:.1f} s" if result.full_seconds else "")
    )
    console.print(
        f"recommended chunk radius (max deviation vs {data['reference']} below "
        f"{args.tolerance:g} eV/Å from there on): "
        + (f"{rec:g} Å" if rec is not None else "none of the radii; try larger ones")
    )
    whole = data["whole_structure_from_A"]
    if rec is not None and whole is not None and rec >= whole:
        err_console.print(
            f"[yellow]warning:[/yellow] from {whole:g} Å on every chunk is the whole structure: "
            "the recommendation only says the structure is too small to tell; use a larger one"
        )
    console.print(f"figure: {paths['figure']}; data: {paths['json']}")
    return EXIT_OK


def cmd_report(args: argparse.Namespace) -> int:
    from nft_fw.firetasks import kinds

    out = Path(args.output or f"{args.name}-report")

    def write(db: Any) -> dict[str, Any]:
        return kinds.of_campaign(db, args.name).report(db, args.name, out)

    paths = _with_campaign(args, write)
    for key, p in paths.items():
        console.print(f"{key}: {p}")
    return EXIT_OK


def register(sub: Any) -> None:
    """Add ``history``, ``labels``, ``export``, ``report`` and ``nearsightedness``."""
    p = sub.add_parser("history", help="the per-iteration records of a campaign")
    p.add_argument("name")
    p.add_argument(
        "--phase",
        choices=["all", Phase.NFT, Phase.RELAX, Phase.MD, Phase.TRANSFER],
        default="all",
        help="which records: NFT iterations, relax rounds, MD segments, transfer targets "
        "(default all)",
    )
    p.add_argument("--json", action="store_true")
    p.add_argument(
        "--against", nargs="+", metavar="FILE",
        help="whole-structure parent labels (extended XYZ with forces, e.g. a check "
        "campaign's export; chunk labels are skipped): each stored model's force MAE, largest "
        "error and largest δ on them, instead of the records",
    )  # fmt: skip
    p.add_argument(
        "--wide",
        action="store_true",
        help="every column, however wide (default: columns that do not fit the terminal "
        "are left out, and named under the table)",
    )
    _add_connection_options(p)
    p.set_defaults(func=cmd_history, compiles=True)  # --against predicts

    p = sub.add_parser("labels", help="the labels (parent single points) of a campaign")
    p.add_argument("name")
    p.add_argument("--json", action="store_true")
    p.add_argument(
        "--export",
        metavar="FILE",
        help="write every label (structure, energy, forces of every atom, which atoms are "
        "trained on, phase, parent settings, cost) to FILE as extended XYZ",
    )
    p.add_argument(
        "--append", action="store_true",
        help="with --export to an existing export: add only the labels it lacks (by hash) at "
        "its end and leave the rest byte for byte — a file exported as labels come only grows",
    )  # fmt: skip
    _add_connection_options(p)
    p.set_defaults(func=cmd_labels)

    p = sub.add_parser("export", help="write the best model (EnsembleCalculator.load reads it)")
    p.add_argument("name")
    p.add_argument("-o", "--output", metavar="DIR", help="the model (EnsembleCalculator.load)")
    p.add_argument(
        "--structures", metavar="DIR",
        help="what the phases made: relaxed structures (relaxed.extxyz, relaxed-rounds.extxyz), "
        "relaxation frames (relax-R.extxyz), relaxed transfer targets (transfers.extxyz), the "
        "MD trajectory (md.extxyz) and its end state (md-end.extxyz); docs/labels.md",
    )  # fmt: skip
    p.add_argument(
        "--format", choices=("extxyz", "traj"), default="extxyz",
        help="of the --structures files: extended XYZ (default) or ASE trajectory (.traj)",
    )  # fmt: skip
    _add_connection_options(p)
    p.set_defaults(func=cmd_export)

    p = sub.add_parser(
        "lammps", help="run a LAMMPS input with an exported model attached (fix external)"
    )
    p.add_argument("input", help="LAMMPS input file (no pair_style; docs/lammps.md)")
    p.add_argument(
        "--model", required=True, metavar="DIR", help="an exported model (nft-fw export)"
    )
    p.add_argument(
        "--elements", required=True, nargs="+", metavar="EL",
        help="the element of each LAMMPS atom type, in type order",
    )  # fmt: skip
    p.add_argument(
        "--structure", metavar="FILE",
        help="a structure ASE reads, given to the input as the data file ${structure}",
    )  # fmt: skip
    p.add_argument(
        "--var", nargs=2, action="append", default=[], metavar=("NAME", "VALUE"),
        help="an index-style variable, as lmp -var sets it (repeatable)",
    )  # fmt: skip
    p.add_argument("--log", metavar="FILE", help="LAMMPS's log file (default: none)")
    p.set_defaults(func=cmd_lammps, compiles=True)

    p = sub.add_parser("report", help="plots (PNG) and summary of a campaign")
    p.add_argument("name")
    p.add_argument("-o", "--output", metavar="DIR", help="default ./NAME-report")
    _add_connection_options(p)
    p.set_defaults(func=cmd_report)

    p = sub.add_parser(
        "nearsightedness",
        help="how the parent's central force converges with chunk radius (no database)",
    )
    p.add_argument("campaign", help="campaign YAML file: its target and parent are used")
    p.add_argument(
        "--radii", default="3,4,5,6,7,8", help="chunk radii, Å, comma-separated (3,4,5,6,7,8)"
    )
    p.add_argument("--centres", help="atom indices, comma-separated, or 'all'")
    p.add_argument(
        "--n-centres", type=int, default=10, help="without --centres: this many random atoms"
    )
    p.add_argument("--seed", type=int, default=0, help="seed of the random centres")
    p.add_argument(
        "--no-full", action="store_true", help="skip the whole structure (too expensive)"
    )
    p.add_argument(
        "--tolerance",
        type=float,
        default=0.05,
        help="eV/Å: recommend the smallest radius whose deviation stays below it (0.05)",
    )
    p.add_argument("--out", metavar="DIR", help="figure and JSON (./NAME-nearsightedness)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_nearsightedness)
