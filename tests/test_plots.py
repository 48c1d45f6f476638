"""The campaign report: PNG figures of the right size, and the numbers behind them."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pytest
from matplotlib.image import imread

from nft_fw.report import plots

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
WIDTH, HEIGHT = 720, 540  # 6 × 4.5 in at 120 dpi


def make_history(with_truth: bool = True) -> list[dict]:
    """Four iterations; the structure uncertainty is lowest at iteration 2."""
    structure = [1.2, 0.40, 0.08, 0.11]
    mean = [0.30, 0.10, 0.03, 0.04]
    mae = [0.50, 0.20, 0.05, 0.06]
    true_max = [2.0, 0.9, 0.25, 0.30]
    chunks = [0, 26, 52, 78]
    history = []
    for i in range(4):
        record = {
            "campaign": "pt-test",
            "iteration": i,
            "n_chunks": chunks[i],
            "new_chunks": 0 if i == 0 else 26,
            "structure_uncertainty": structure[i],
            "mean_uncertainty": mean[i],
            "best_iteration": int(np.argmin(structure[: i + 1])),
            "training": {"loss": 1e-3 / (i + 1), "seconds": 10.0 + i},
        }
        if i > 0:  # the previous model on this iteration's new chunks
            record.update(oos_n=26, oos_mae=0.4 / i, oos_max=1.0 / i, oos_rms=0.5 / i,
                          oos_fraction_within_delta=0.9)  # fmt: skip
        if i >= 2:
            record.update(calibration_scale=0.45, oos_fraction_within_calibrated=0.875,
                          calibrated_structure_uncertainty=0.45 * record["structure_uncertainty"])  # fmt: skip
        if with_truth:
            record.update(
                true_force_mae=mae[i],
                true_force_max=true_max[i],
                fraction_within_delta=0.5 + 0.1 * i,
                rank_correlation=0.2 * i,
            )
        history.append(record)
    return history


@pytest.fixture
def forces() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    reference = rng.normal(0.0, 1.0, (60, 3))
    predicted = reference + rng.normal(0.0, 0.05, (60, 3))
    residual = np.linalg.norm(predicted - reference, axis=1)
    delta = residual * rng.uniform(0.5, 2.0, 60)  # correlated with the residual
    return predicted, reference, delta


def assert_png(path: Path) -> None:
    assert path.is_file()
    assert path.stat().st_size > 0
    assert path.read_bytes()[:8] == PNG_MAGIC
    image = imread(path)
    assert image.shape[:2] == (HEIGHT, WIDTH)


def test_plot_history_writes_png_of_right_size(tmp_path: Path) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # e.g. a glyph missing from the font
        path = plots.plot_history(make_history(), tmp_path / "sub" / "h.png")
    assert path == tmp_path / "sub" / "h.png"
    assert_png(path)


def test_plot_history_without_truth_and_linear_scale(tmp_path: Path) -> None:
    history = make_history(with_truth=False)
    for r in history:  # span < 10×: linear axis
        r["structure_uncertainty"] = 0.2
        r["mean_uncertainty"] = 0.05
        del r["campaign"]
    assert_png(plots.plot_history(history, tmp_path / "h.png", best_iteration=3))


def test_parity_and_residual_plots(tmp_path: Path, forces) -> None:
    predicted, reference, delta = forces
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        parity = plots.plot_parity(predicted, reference, tmp_path / "p.png")
        residual = np.linalg.norm(predicted - reference, axis=1)
        scatter = plots.plot_residual_vs_uncertainty(residual, delta, tmp_path / "r.png")
    assert_png(parity)
    assert_png(scatter)


def test_plot_inputs_are_checked(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"\(n, 3\)"):
        plots.plot_parity(np.zeros((4, 2)), np.zeros((4, 2)), tmp_path / "p.png")
    with pytest.raises(ValueError, match="differ in shape"):
        plots.plot_residual_vs_uncertainty(np.zeros(3), np.zeros(4), tmp_path / "r.png")
    with pytest.raises(ValueError, match="empty"):
        plots.plot_history([], tmp_path / "h.png")
    assert not list(tmp_path.iterdir())


def test_summary_numbers() -> None:
    s = plots.summary(make_history(), stop_reason="patience")
    assert s["campaign"] == "pt-test"
    assert s["iterations"] == 4
    assert s["total_chunks"] == 78
    assert s["best_iteration"] == 2
    assert s["best_structure_uncertainty"] == pytest.approx(0.08)
    assert s["best_mean_uncertainty"] == pytest.approx(0.03)
    assert s["best_true_force_mae"] == pytest.approx(0.05)
    assert s["best_true_force_max"] == pytest.approx(0.25)
    assert s["best_fraction_within_delta"] == pytest.approx(0.7)
    assert s["best_rank_correlation"] == pytest.approx(0.4)
    assert s["first_true_force_mae"] == pytest.approx(0.50)
    assert s["mae_ratio_first_to_best"] == pytest.approx(10.0)
    assert s["uncertainty_ratio_first_to_best"] == pytest.approx(15.0)
    assert s["total_training_seconds"] == pytest.approx(46.0)
    assert s["stop_reason"] == "patience"
    assert s["calibration_scale"] == pytest.approx(0.45)  # the latest calibration
    assert json.loads(json.dumps(s, allow_nan=False)) == s


def test_summary_without_truth_and_with_nan() -> None:
    history = make_history(with_truth=False)
    history[2]["rank_correlation"] = float("nan")
    s = plots.summary(history)
    assert "best_true_force_mae" not in s
    assert "mae_ratio_first_to_best" not in s
    assert s["best_rank_correlation"] is None  # NaN would not be valid JSON
    assert s["stop_reason"] is None


def test_history_table_formatting_and_missing_values() -> None:
    history = make_history()
    del history[1]["true_force_mae"]
    history[3]["training"] = {"loss": None, "seconds": 12.6}
    rows = plots.history_table(history)
    assert len(rows) == 4
    assert all(len(row) == len(plots.HISTORY_COLUMNS) for row in rows)
    assert rows[0] == [
        "0", "0", "0", "1.200", "0.300", "0.500", "2.000", "—", "—", "—", "—", "—", "0.001", "10"
    ]  # fmt: skip
    assert rows[1][5] == "—"
    assert rows[1][6] == "0.900"
    assert rows[1][7:12] == ["0.400", "1.000", "90%", "—", "—"]
    assert rows[2][7:12] == ["0.200", "0.500", "90%", "0.45", "88%"]
    assert rows[2][:3] == ["2", "52", "26"]
    assert rows[3][12] == "—"
    assert rows[3][13] == "13"


def test_write_report_with_forces(tmp_path: Path, forces) -> None:
    predicted, reference, delta = forces
    history = make_history()
    paths = plots.write_report(
        tmp_path / "report", history, predicted, reference, delta, stop_reason="threshold"
    )
    assert set(paths) == {"history", "parity", "residual_vs_uncertainty", "summary", "markdown"}
    for key in ("history", "parity", "residual_vs_uncertainty"):
        assert paths[key].name == f"{key}.png"
        assert_png(paths[key])
    saved = json.loads(paths["summary"].read_text(encoding="utf-8"))
    assert saved == plots.summary(history, "threshold")
    markdown = paths["markdown"].read_text(encoding="utf-8")
    assert markdown.startswith("# NFT campaign pt-test")
    assert "| " + " | ".join(plots.HISTORY_COLUMNS) + " |" in markdown
    assert "| 2 | 52 | 26 | 0.080 | 0.030 | 0.050 | 0.250 | 0.200 | 0.500 | 90% |" in markdown
    assert "Kept iteration: 2" in markdown
    assert "Stop reason: threshold" in markdown


def test_write_report_without_forces_writes_history_only(tmp_path: Path) -> None:
    paths = plots.write_report(tmp_path, make_history())
    assert set(paths) == {"history", "summary", "markdown"}
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "history.md",
        "history.png",
        "summary.json",
    ]
    assert_png(paths["history"])


def test_write_report_rejects_half_the_forces(tmp_path: Path, forces) -> None:
    predicted, _, delta = forces
    with pytest.raises(ValueError, match="together"):
        plots.write_report(tmp_path, make_history(), predicted=predicted)
    with pytest.raises(ValueError, match="delta"):
        plots.write_report(tmp_path, make_history(), delta=delta)


def test_relax_table_shows_the_out_of_sample_error_and_the_scale() -> None:
    from nft_fw.report import relax_plots

    rounds = [
        {"iteration": 0, "n_chunks": 260, "new_chunks": 0, "n_steps": 39, "converged": True,
         "structure_uncertainty": 0.237, "final_max_uncertainty": 0.165},
        {"iteration": 1, "n_chunks": 273, "new_chunks": 13, "n_steps": 39, "converged": True,
         "structure_uncertainty": 0.231, "final_max_uncertainty": 0.171, "oos_mae": 0.0412,
         "calibration_scale": 0.583},
    ]  # fmt: skip
    rows = relax_plots.relax_table(rounds)
    assert all(len(r) == len(relax_plots.RELAX_COLUMNS) for r in rows)
    assert rows[0][-2:] == ["—", "—"] and rows[1][-2:] == ["0.041", "0.58"]
