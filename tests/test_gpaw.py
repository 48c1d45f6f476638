"""The GPAW parent: parameter checks at load time, and real GPAW labels through real workers.

The GPAW runs are tiny (Pt5 chunks of a 6-atom octahedron, LCAO with the single-zeta part of
the dzp basis, h = 0.25 Å, 4 Å vacuum: a few seconds each). The campaigns start from an
initial file labelled by EMT, so that no periodic GPAW calculation is needed: these tests are
about the label path (worker, retries, failures, records), not about a physical potential.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from nft_fw.parents.parent import ParentError, get_parent
from nft_fw.spec.campaign import CampaignError, load_campaign

TINY = {
    "mode": "lcao",
    "basis": "sz(dzp)",
    "h": 0.25,
    "xc": "PBE",
    "occupations": {"name": "fermi-dirac", "width": 0.1},
    "vacuum": 4.0,
}


def _campaign(name: str, params: dict[str, Any], initial_file: Path) -> dict[str, Any]:
    return {
        "name": name,
        "target": {
            "builder": {"kind": "octahedron", "element": "Pt", "length": 2},
            "rattle": {"stdev": 0.05, "seed": 1},
        },
        "parent": {"name": "gpaw", "params": params},
        "initial": {"file": str(initial_file)},
        "model": {
            "cutoff": 4.0,
            "hidden_layers": [4],
            "ensemble_size": 2,
            "n_radial": 4,
            "angular_etas": [0.01],
            "angular_zetas": [1],
        },
        "training": {"initial_steps": 30, "steps_per_iteration": 20},
        # Pt5 chunks keep DFT to seconds; the model's 2·cutoff reach is not the point here
        "nft": {
            "chunks_per_iteration": 2,
            "chunk_radius": 3.0,
            "allow_short_chunks": True,
            "max_iterations": 1,
        },
    }


# ----------------------------------------------------------------------------- validation


def test_unknown_gpaw_key_names_the_field_and_the_allowed_keys() -> None:
    spec = {**_campaign("bad", {**TINY, "ecut": 400}, Path("x.xyz")), "initial": {}}
    with pytest.raises(CampaignError) as info:
        load_campaign(spec)
    assert info.value.field == "parent.params.ecut"
    assert "not a GPAW parameter" in str(info.value)
    assert "maxiter" in str(info.value) and "vacuum" in str(info.value)


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"txt": "gpaw.txt"}, "parent.params.txt"),
        ({"magmoms": [1.0]}, "parent.params.magmoms"),
        ({"magmom": {"Xx": 1.0}}, "parent.params.magmom.Xx"),
        ({"vacuum": -1}, "parent.params.vacuum"),
        ({"h": 0}, "parent.params.h"),
        ({"maxiter": 2.5}, "parent.params.maxiter"),
        ({"mixer": {"beta": 0.05, "nmaxol": 5}}, "parent.params.mixer.nmaxol"),
        ({"retries": {"maxiter": 10}}, "parent.params.retries"),
        ({"retries": [{"maxiter": 100}, {"maxitr": 100}]}, "parent.params.retries.1.maxitr"),
        ({"retries": [{"vacuum": 8.0}]}, "parent.params.retries.0.vacuum"),
    ],
)
def test_bad_gpaw_params_are_refused_with_the_field(params: dict[str, Any], field: str) -> None:
    with pytest.raises(ParentError) as info:
        get_parent("gpaw", {**TINY, **params})
    assert info.value.field == field


def test_settings_hash_is_stable_and_ignores_the_retry_policy_and_the_mixer() -> None:
    a = get_parent("gpaw", TINY)
    b = get_parent("gpaw", dict(reversed(list(TINY.items()))))
    assert a.settings_hash == b.settings_hash
    c = get_parent("gpaw", {**TINY, "retries": [{"maxiter": 500}]})
    assert c.settings_hash == a.settings_hash and c.retries == ({"maxiter": 500},)
    # how the SCF gets there, not where: a label under one mixer is the label under another
    for mixer in ({"name": "pulay"}, {"beta": 0.1, "nmaxold": 20}):
        assert get_parent("gpaw", {**TINY, "mixer": mixer}).settings_hash == a.settings_hash
    assert get_parent("gpaw", {**TINY, "h": 0.2}).settings_hash != a.settings_hash
    assert get_parent("gpaw", {**TINY, "vacuum": 5.0}).settings_hash != a.settings_hash


def test_chunk_is_boxed_in_vacuum_with_initial_moments() -> None:
    from ase import Atoms

    parent = get_parent("gpaw", {**TINY, "spinpol": True, "magmom": {"Pt": 0.5}})
    atoms = Atoms("Pt2", positions=[[0, 0, 0], [2.5, 0, 0]])
    assert parent.prepare_atoms is not None
    boxed = parent.prepare_atoms(atoms)
    np.testing.assert_allclose(np.diag(boxed.cell), [8.0 + 2.5, 8.0, 8.0])
    np.testing.assert_allclose(boxed.positions[0], [4.0, 4.0, 4.0])
    np.testing.assert_allclose(boxed.get_initial_magnetic_moments(), [0.5, 0.5])
    assert not atoms.cell.any()  # the caller's structure is left alone


# ----------------------------------------------------------------------------- service


def _initial_file(tmp: Path) -> Path:
    """Three bulk Pt cells labelled by EMT (stand-ins: no periodic GPAW run needed)."""
    from ase.build import bulk
    from ase.calculators.emt import EMT
    from ase.calculators.singlepoint import SinglePointCalculator
    from ase.io import write

    frames = []
    for k, a in enumerate((3.85, 3.92, 4.0)):
        atoms = bulk("Pt", "fcc", a=a, cubic=True)
        atoms.rattle(0.05, seed=k)
        atoms.calc = EMT()
        e, f = atoms.get_potential_energy(), atoms.get_forces()
        atoms.calc = SinglePointCalculator(atoms, energy=e, forces=f)
        frames.append(atoms)
    path = tmp / "initial.extxyz"
    write(path, frames, format="extxyz")
    return path


def _run(db_server: Any, tmp: Path, spec: dict[str, Any]) -> tuple[Any, int]:
    import uuid

    from nft_fw.cli import run_campaign
    from nft_fw.launchpad.connection import embedded
    from nft_fw.spec.campaign import prepare

    conn = embedded(db_server.data_dir, db_name=f"t_{uuid.uuid4().hex[:12]}", start=False)
    conn.launchpad.reset("", require_password=False)
    code = run_campaign(conn, prepare(load_campaign(spec)), 1, tmp / "workers", tmp / "report")
    return conn, code


@pytest.fixture(scope="module")
def retried(db_server: Any, tmp_path_factory: pytest.TempPathFactory) -> Any:
    """A campaign whose first attempt cannot converge (maxiter 3) and whose retry can."""
    tmp = tmp_path_factory.mktemp("gpaw-retry")
    params = {**TINY, "maxiter": 3, "retries": [{"maxiter": 200}]}
    conn, code = _run(db_server, tmp, _campaign("pt6-gpaw", params, _initial_file(tmp)))
    yield conn, code, tmp
    conn.launchpad.connection.drop_database(conn.db_name)
    conn.close(stop_server=False)


@pytest.mark.integration
def test_gpaw_label_through_a_worker_matches_a_direct_gpaw_run(retried: Any) -> None:
    import gpaw
    from ase import Atoms
    from bson import ObjectId

    from nft_fw.launchpad import records

    conn, code, _ = retried
    assert code == 0
    db = conn.launchpad.db
    assert {d["state"] for d in conn.launchpad.fireworks.find({})} == {"COMPLETED"}
    labels = records.labels(db, "pt6-gpaw", kind="chunk")
    assert len(labels) == 2
    for doc in labels:
        assert len(doc["numbers"]) == 5  # the centre and its four neighbours within 3 Å
        assert doc["attempt"] == 1 and doc["overrides"] == {"maxiter": 200}
        assert "KohnShamConvergenceError" in doc["retry_errors"][0]
        assert "maxiter=3" in doc["retry_errors"][0]
        assert 3 < doc["scf_iterations"] <= 200
        assert doc["seconds"] > 0 and doc["peak_rss_MiB"] > 100 and doc["host"]
        text = records.get_bytes(db, ObjectId(doc["log_file"])).decode()
        assert "Forces" in text and "Input parameters" in text
    assert db[records.FAILURES].count_documents({}) == 0

    doc = labels[0]
    atoms = Atoms(numbers=doc["numbers"], positions=doc["positions"])
    atoms.center(vacuum=4.0)
    kwargs = {k: v for k, v in TINY.items() if k != "vacuum"}
    atoms.calc = gpaw.GPAW(txt=None, maxiter=200, **kwargs)
    direct = atoms.get_forces()[0]
    np.testing.assert_allclose(doc["central_force"], direct, atol=1e-4)
    assert np.linalg.norm(direct) > 0.05  # a real force, not a symmetric zero

    out = subprocess.run(
        [sys.executable, "-m", "nft_fw", "labels", "pt6-gpaw", "--json",
         "--data-dir", str(conn.server.data_dir), "--db-name", conn.db_name],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    rows = [r for r in json.loads(out.stdout) if r["kind"] == "chunk"]
    assert sorted(r["scf_iterations"] for r in rows) == sorted(d["scf_iterations"] for d in labels)
    assert {r["attempt"] for r in rows} == {1}


@pytest.fixture(scope="module")
def failed(db_server: Any, tmp_path_factory: pytest.TempPathFactory) -> Any:
    """A campaign whose chunks never converge: maxiter 3, then a retry with maxiter 4."""
    tmp = tmp_path_factory.mktemp("gpaw-fail")
    params = {**TINY, "maxiter": 3, "retries": [{"maxiter": 4}]}
    conn, code = _run(db_server, tmp, _campaign("pt6-fail", params, _initial_file(tmp)))
    yield conn, code, tmp
    conn.launchpad.connection.drop_database(conn.db_name)
    conn.close(stop_server=False)


@pytest.mark.integration
def test_failing_scf_is_retried_recorded_and_the_campaign_finishes(failed: Any) -> None:
    from bson import ObjectId

    from nft_fw.launchpad import records

    conn, code, _ = failed
    assert code == 0
    lp = conn.launchpad
    db = lp.db
    doc = records.get_campaign(db, "pt6-fail")
    assert doc["state"] == "completed" and doc["stop_reason"] == "max_iterations"
    label_fws = list(lp.fireworks.find({"spec.nft_role": "label"}))
    assert len(label_fws) == 2 and {d["state"] for d in label_fws} == {"FIZZLED"}
    others = lp.fireworks.find({"spec.nft_role": {"$ne": "label"}})
    assert {d["state"] for d in others} == {"COMPLETED"}  # trainers and report went on
    for fw in label_fws:
        launch = lp.launches.find_one({"fw_id": fw["fw_id"], "state": "FIZZLED"})
        message = launch["action"]["stored_data"]["_exception"]["_stacktrace"]
        assert "KohnShamConvergenceError" in message and "maxiter=4" in message
    assert records.labels(db, "pt6-fail", kind="chunk") == []
    failures = records.failures(db, "pt6-fail")
    assert len(failures) == 2 and len({f["centre"] for f in failures}) == 2
    for f in failures:
        assert [a["overrides"] for a in f["attempts"]] == [{}, {"maxiter": 4}]
        assert all("KohnShamConvergenceError" in a["error"] for a in f["attempts"])
        text = records.get_bytes(db, ObjectId(f["attempts"][1]["log_file"])).decode()
        assert "maxiter" in text or "Input parameters" in text
    history = records.iterations(db, "pt6-fail")
    assert [r["n_chunks"] for r in history] == [0, 0]

    out = subprocess.run(
        [sys.executable, "-m", "nft_fw", "status", "pt6-fail", "--json",
         "--data-dir", str(conn.server.data_dir), "--db-name", conn.db_name],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    (row,) = json.loads(out.stdout)
    assert sorted(f["centre"] for f in row["failed_labels"]) == sorted(
        f["centre"] for f in failures
    )
    assert all("KohnShamConvergenceError" in f["error"] for f in row["failed_labels"])
    assert len(row["fizzled"]) == 2


def test_worker_started_as_ranks_no_communicator_spans_refuses() -> None:
    """Four ranks by the launcher's environment, but GPAW's serial world has one: refused
    before the database is touched (exit 2), with what to do instead."""
    import os
    import subprocess
    import sys

    env = {**os.environ, "OMPI_COMM_WORLD_SIZE": "4"}
    env.pop("GPAW_MPI_BACKEND", None)
    out = subprocess.run(
        [sys.executable, "-m", "nft_fw", "worker", "--idle-timeout", "1"],
        capture_output=True, text=True, timeout=120, env=env, check=False,
    )  # fmt: skip
    assert out.returncode == 2, out.stderr
    assert "started as 4 MPI ranks" in out.stderr
    assert "one worker without mpiexec/srun" in " ".join(out.stderr.split())
