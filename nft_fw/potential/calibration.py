"""Calibrating δ on out-of-sample errors.

δ_i = 2.58 σ (Eq. (1) of Zeng, Chen, Peterson, J. Chem. Phys. 156, 064104 (2022)) would
cover 99 % of the errors if the ensemble spread were the error's standard deviation; in
practice a bootstrap ensemble of small networks misjudges it by a factor that depends on the
system and the data. Every NFT iteration labels new chunks before training on them, so the
previous model's error on their central forces, next to its δ there, is a free test set
(:func:`nft_fw.steps.step.out_of_sample`). The calibration is the one number s for which a stated
fraction (``coverage``) of those errors lies within s·δ; the calibrated δ is s·δ.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np

MIN_POINTS = 10  # fewer out-of-sample errors than this give no calibration
WINDOW = 3  # the calibration is fitted on the points of the latest WINDOW iterations


@dataclasses.dataclass(frozen=True)
class Calibration:
    """δ_calibrated = ``scale`` · δ, so that ``coverage`` of ``n_points`` out-of-sample
    errors (from ``source``) lay within it."""

    scale: float
    coverage: float
    n_points: int
    source: str = ""

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Calibration:
        return cls(
            scale=float(d["scale"]),
            coverage=float(d["coverage"]),
            n_points=int(d["n_points"]),
            source=str(d.get("source", "")),
        )


def fit(errors: Sequence[float], deltas: Sequence[float], coverage: float) -> float | None:
    """The smallest s with at least ``coverage`` of the errors within s·δ (eV/Å over eV/Å);
    None with fewer than :data:`MIN_POINTS` points."""
    if not 0.0 < coverage < 1.0:
        raise ValueError(f"coverage {coverage} is not between 0 and 1")
    e = np.asarray(errors, dtype=float)
    d = np.asarray(deltas, dtype=float)
    if e.shape != d.shape:
        raise ValueError(f"{e.shape[0]} errors but {d.shape[0]} δ values")
    if len(e) < MIN_POINTS:
        return None
    ratio = e / np.maximum(d, 1e-12)
    return float(np.quantile(ratio, coverage, method="higher"))


def within(errors: Sequence[float], deltas: Sequence[float], scale: float = 1.0) -> float:
    """Fraction of the errors within ``scale``·δ."""
    e = np.asarray(errors, dtype=float)
    if not len(e):
        return float("nan")
    return float(np.mean(e <= scale * np.asarray(deltas, dtype=float)))


def pooled(records: Iterable[Mapping[str, Any]]) -> tuple[list[float], list[float]]:
    """The out-of-sample errors and δ of every record that has them (``oos_errors``,
    ``oos_deltas``), in order."""
    errors: list[float] = []
    deltas: list[float] = []
    for r in records:
        errors.extend(r.get("oos_errors") or [])
        deltas.extend(r.get("oos_deltas") or [])
    return errors, deltas


def latest_points(
    records: Sequence[Mapping[str, Any]], coverage: float, n_points: int
) -> float | None:
    """s fitted on the out-of-sample points of the latest records that together hold at
    least ``n_points`` (all of them, if fewer): the MD phase's calibration, whose pauses
    add a few points each, so that a window of records would hold too few to be steady."""
    errors: list[float] = []
    deltas: list[float] = []
    for r in reversed(records):
        errors.extend(r.get("oos_errors") or [])
        deltas.extend(r.get("oos_deltas") or [])
        if len(errors) >= n_points:
            break
    return fit(errors, deltas, coverage)


def figures(
    history: Sequence[Mapping[str, Any]], latest: Mapping[str, Any], coverage: float
) -> dict[str, Any]:
    """Calibration figures of the iteration ``latest`` given the ``history`` before it:

    - ``calibration_scale`` / ``calibration_n`` / ``calibration_coverage``: s fitted on the
      out-of-sample points of the latest :data:`WINDOW` iterations that have them (this
      one's included; the models of the first iterations, trained on bulk data only, misjudge
      a particle differently from the later ones), absent below :data:`MIN_POINTS` points;
    - ``oos_fraction_within_calibrated``: the fraction of this iteration's new points within
      the previous iteration's s·δ (a prediction: those points were not used to fit it).
    """
    out: dict[str, Any] = {}
    previous = history[-1].get("calibration_scale") if history else None
    if previous is not None and latest.get("oos_errors"):
        out["oos_fraction_within_calibrated"] = within(
            latest["oos_errors"], latest["oos_deltas"], previous
        )
    errors, deltas = pooled([r for r in [*history, latest] if r.get("oos_errors")][-WINDOW:])
    scale = fit(errors, deltas, coverage)
    if scale is not None:
        out["calibration_scale"] = scale
        out["calibration_coverage"] = coverage
        out["calibration_n"] = len(errors)
    return out
