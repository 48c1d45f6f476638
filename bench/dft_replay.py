"""Replay NFT training on stored labels only (no parent call): per iteration chunks, δ max
and mean, the out-of-sample error on the next iteration's chunks, what the stopping rule
decided, and the true-force errors against whole-structure references; then the label-noise
floor (each chunk's central force against the whole structure's force on that atom) and,
with --cv, K-fold cross-validation over the chunks.

    .venv/bin/python bench/dft_replay.py                       # the shipped Pt140 GPAW set
    .venv/bin/python bench/dft_replay.py --set model.hidden_layers=[40,40] --cv 5
    .venv/bin/python bench/dft_replay.py nft_fw/examples/pt140-gpaw.yaml \\
        --labels bench/data/pt140-gpaw-labels.extxyz \\
        --reference seed0=bench/data/pt140-gpaw-reference.extxyz \\
        --reference seed1=bench/data/pt140-gpaw-reference-seed1.extxyz --json replay.json

The campaign file gives the target and the model and training settings (``--set
section.field=YAML`` overrides any); the labels are an `nft-fw labels NAME --export` file;
a reference is any export holding a whole-structure label (``nft_kind: full``). The
reference whose structure is the campaign's target scores each iteration as the campaign's
validation does; the others are reported beside it. Choose settings on the chunks (--cv,
and the out-of-sample column), never on the reference columns.
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from nft_fw.labels import prior
from nft_fw.runners import replay
from nft_fw.spec.campaign import CampaignSpec, load_campaign, prepare

HERE = Path(__file__).resolve().parent.parent
DATA = HERE / "bench" / "data"


def apply_settings(data: dict[str, Any], settings: list[str]) -> dict[str, Any]:
    """``data`` (a campaign as a mapping) with each ``--set section.field=YAML`` applied."""
    for item in settings:
        key, _, value = item.partition("=")
        section, _, field = key.strip().partition(".")
        if not field:
            raise SystemExit(f"--set {item!r}: give section.field=value, e.g. model.cutoff=4.5")
        data.setdefault(section, {})[field] = yaml.safe_load(value)
    return data


def _spec(path: str, settings: list[str]) -> CampaignSpec:
    spec = load_campaign(path)
    data = apply_settings(spec.model_dump(mode="json"), settings)
    data["prior_labels"] = None
    data["validation"] = {"true_forces": False}  # the references score instead
    return CampaignSpec.model_validate(data)


def _fmt(value: Any, digits: int = 3) -> str:
    if value is None:
        return "—"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "campaign", nargs="?", default=str(HERE / "nft_fw/examples/pt140-gpaw.yaml")
    )
    parser.add_argument("--labels", default=str(DATA / "pt140-gpaw-labels.extxyz"))
    parser.add_argument(
        "--reference", action="append", default=None,
        help="NAME=FILE of an export with a whole-structure label (repeatable; default: the "
        "shipped Pt140 references)",
    )  # fmt: skip
    parser.add_argument("--set", action="append", default=[], metavar="SECTION.FIELD=VALUE")
    parser.add_argument("--until", type=int, default=None, help="last iteration replayed")
    parser.add_argument(
        "--labels-until", type=int, default=None, metavar="K",
        help="use only the file's chunks of iterations ≤ K (replay, noise floor and CV): the "
        "figures of a label file that has grown since",
    )  # fmt: skip
    parser.add_argument("--cv", type=int, default=0, metavar="K", help="K-fold CV over chunks")
    parser.add_argument("--json", default=None, help="write the records and figures here")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)

    spec = _spec(args.campaign, args.set)
    prepared = prepare(spec)
    labels = prior.read(args.labels, prepared.parent.settings_hash, accept_parent_mismatch=True)
    hashes = {lb.parent_hash for lb in labels.labels.values()}
    if hashes != {prepared.parent.settings_hash}:
        print(f"note: labels made with parent settings {sorted(h[:12] for h in hashes)}, "
              f"the campaign file's parent is {prepared.parent.settings_hash[:12]}")  # fmt: skip
    images, chunks = replay.images(labels), replay.nft_chunks(labels)
    if args.labels_until is not None:
        chunks = [c for c in chunks if c.iteration <= args.labels_until]
    given = args.reference
    if given is None:
        given = [f"seed{k}={p}" for k, p in ((0, DATA / "pt140-gpaw-reference.extxyz"),
                                              (1, DATA / "pt140-gpaw-reference-seed1.extxyz"))
                 if p.exists()]  # fmt: skip
    refs: list[replay.Reference] = []
    for item in given:
        name, _, path = item.partition("=")
        refs += replay.references(prior.read(path, "", accept_parent_mismatch=True), name)
    on_target = [r for r in refs if replay.same_structure(r.atoms, prepared.target)]
    print(f"{spec.name}: {len(images)} initial images, {len(chunks)} NFT chunks "
          f"(iterations 1–{max((c.iteration for c in chunks), default=0)}); model "
          f"{spec.model.hidden_layers} × {spec.model.ensemble_size}, R_c {spec.model.cutoff:g} Å; "
          f"references: {', '.join(r.name + (' (the target)' if r in on_target else '') for r in refs) or 'none'}")  # fmt: skip

    t0 = time.perf_counter()
    history = replay.replay(prepared, images, chunks, refs, args.until)
    seconds = time.perf_counter() - t0
    rows = replay.summary_rows(history)
    columns = ["iteration", "chunks", "delta_max", "delta_mean", "calibrated_delta_max",
               "next_oos_mae", "next_oos_max"]  # fmt: skip
    for r in refs:
        columns += [f"{r.name}_mae", f"{r.name}_max"]
    columns.append("decision")
    print()
    print("| " + " | ".join(columns) + " |")
    print("|" + "---|" * len(columns))
    for row in rows:
        print("| " + " | ".join(_fmt(row.get(c)) for c in columns) + " |")
    print(f"\nreplayed in {seconds:.0f} s (eV/Å throughout; next_oos: this iteration's model "
          "on the next iteration's chunks, before training on them)")  # fmt: skip

    out: dict[str, Any] = {"settings": spec.model_dump(mode="json"), "rows": rows,
                           "records": history, "seconds": seconds}  # fmt: skip
    for ref in on_target:
        floor = replay.noise_floor(chunks, ref)
        out["noise_floor"] = floor
        worst = sorted(floor["errors"].items(), key=lambda kv: -kv[1])[:3]
        print(f"label-noise floor against {ref.name} ({floor['n']} chunks of "
              f"{sorted({c.radius for c in chunks})} Å): MAE {floor['mae']:.3f}, max "
              f"{floor['max']:.3f}, RMS {floor['rms']:.3f} eV/Å; worst centres "
              + ", ".join(f"{c} ({e:.3f})" for c, e in worst))  # fmt: skip
    if args.cv:
        t0 = time.perf_counter()
        cv = replay.cross_validate(prepared, images, chunks, args.cv, seed=spec.nft.seed)
        out["cv"] = cv
        print(f"{args.cv}-fold CV over {cv['n']} chunks: MAE {cv['mae']:.3f}, max "
              f"{cv['max']:.3f}, RMS {cv['rms']:.3f} eV/Å (folds "
              + ", ".join(f"{m:.3f}" for m in cv["fold_mae"])
              + f"; {time.perf_counter() - t0:.0f} s)")  # fmt: skip
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=1, default=_json) + "\n")


def _json(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(type(value))


if __name__ == "__main__":
    main()
