"""The nearsightedness analysis with EMT, whose force locality is known exactly."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from ase.cluster import Octahedron

from nft_fw.parents.parent import get_parent
from nft_fw.report.nearsightedness import write
from nft_fw.steps.nearsightedness import nearsightedness
from nft_fw.structures.particles import rattle

EXAMPLE = Path(__file__).resolve().parent.parent / "nft_fw" / "examples" / "pt260-emt.yaml"
RADII = [4.0, 6.0, 8.0, 10.0, 12.0, 14.0]


@pytest.fixture(scope="module")
def pt260() -> object:
    atoms = rattle(Octahedron("Pt", 8, 3, latticeconstant=3.92), 0.1, 0)
    return nearsightedness(atoms, get_parent("emt"), list(range(0, 260, 20)), RADII)


def test_emt_deviation_vanishes_beyond_its_force_locality(pt260: object) -> None:
    result = pt260
    locality = get_parent("emt").force_locality_A
    assert locality == pytest.approx(11.75, abs=0.01)
    full = result.deviation_from_full()  # type: ignore[attr-defined]
    assert full.shape == (len(RADII), 13)
    worst = full.max(axis=1)
    beyond = [k for k, r in enumerate(RADII) if r > locality]
    assert beyond == [4, 5]
    assert worst[beyond].max() < 1e-10  # round-off only: the chunk holds every atom that acts
    assert worst[0] > 0.5 and worst[1] > 5e-3  # 4 and 6 Å cut off neighbours that matter
    assert np.all(np.diff(worst[:4]) < 0)  # falls monotonically up to there
    largest = result.deviation_from_largest()  # type: ignore[attr-defined]
    np.testing.assert_array_equal(largest[-1], 0.0)
    np.testing.assert_allclose(largest[:3], full[:3], rtol=1e-6)


def test_recommendation_is_the_smallest_radius_below_the_tolerance(pt260: object) -> None:
    result = pt260
    assert result.recommend(0.05) == 6.0  # type: ignore[attr-defined]
    assert result.recommend(1e-3) == 8.0  # type: ignore[attr-defined]
    assert result.recommend(1e-9) == 12.0  # type: ignore[attr-defined]
    assert result.recommend(1e-20) is None  # type: ignore[attr-defined]
    rows = result.table()  # type: ignore[attr-defined]
    assert [r["radius_A"] for r in rows] == RADII
    assert rows[0]["full_q1"] <= rows[0]["full_median"] <= rows[0]["full_q3"]
    assert rows[0]["full_q3"] <= rows[0]["full_max"]
    assert rows[-1]["max_atoms"] == 260  # the 14 Å chunk of a corner-to-centre atom: everything
    assert result.whole_from() is None  # type: ignore[attr-defined]  # not for every centre


def test_identical_chunks_are_labelled_once_and_the_figure_is_written(
    pt260: object, tmp_path: Path
) -> None:
    result = pt260
    # 13 centres × 6 radii chunks, some equal to the whole particle, plus the whole particle
    assert result.labels <= 13 * 6 + 1  # type: ignore[attr-defined]
    paths = write(result, tmp_path, 1e-3)  # type: ignore[arg-type]
    assert paths["figure"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    data = json.loads(paths["json"].read_text())
    assert data["recommended_radius_A"] == 8.0 and data["reference"] == "full"
    # the campaign form's report, written by the same code: strict JSON, deviations per
    # centre, the page with the per-radius table
    assert data["kind"] == "nearsightedness" and data["missing"] == []
    assert len(data["deviation_from_full"]) == len(data["radii_A"])
    html = paths["html"].read_text()
    assert "Per radius" in html and "recommended chunk radius" in html


def test_cli_reports_a_recommendation_without_a_database(tmp_path: Path) -> None:
    out = subprocess.run(
        [sys.executable, "-m", "nft_fw", "nearsightedness", str(EXAMPLE),
         "--radii", "5,9,12", "--centres", "0,100,200", "--tolerance", "1e-8",
         "--out", str(tmp_path), "--json"],
        capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    data = json.loads(out.stdout)
    assert data["recommended_radius_A"] == 12.0 and data["centres"] == [0, 100, 200]
    assert (tmp_path / "nearsightedness.png").stat().st_size > 0
    bad = subprocess.run(
        [sys.executable, "-m", "nft_fw", "nearsightedness", str(EXAMPLE), "--centres", "999"],
        capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert bad.returncode == 2 and "outside the structure" in bad.stderr


def test_radii_that_hold_the_whole_cluster_are_reported() -> None:
    from ase.cluster import Icosahedron

    atoms = rattle(Icosahedron("Pt", 2, latticeconstant=3.92), 0.05, 0)
    result = nearsightedness(atoms, get_parent("emt"), [0, 1, 2], [3.0, 6.0, 7.0])
    assert result.whole_from() == 6.0
    assert result.recommend(0.05) == 6.0  # trivially: those chunks are the whole cluster
    # centre 0 (the middle atom): whole already at 3 Å; centres 1, 2: a 3 Å and a 6 Å chunk;
    # 7 Å repeats 6 Å (same hash); plus the whole cluster
    assert result.labels == 1 + 2 + 2 + 1
    assert result.deviation_from_full()[0, 1:].min() > 0.05
