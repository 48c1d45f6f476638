"""A worker started as two MPI ranks (real mpiexec from the mpich wheel, GPAW's mpi4py
communicator): rank 0 alone is the FireWorks client, rank 1 joins every collective parent
calculation, both exit when the worker stops. And GPAW refuses to run on several ranks with
a C extension built without MPI (its domain decomposition then gives wrong numbers)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import mpi_parent  # noqa: F401  (registers mpi-emt in this process)
import numpy as np
import pytest

pytestmark = pytest.mark.integration

SUPPORT = Path(__file__).resolve().parent / "support"
MPIEXEC = Path(sys.executable).parent / "mpiexec"


def _mpi_env() -> dict[str, str]:
    env = dict(os.environ)
    env["GPAW_MPI_BACKEND"] = "mpi4py"
    env["OMP_NUM_THREADS"] = "1"
    return env


def test_two_rank_worker_shares_each_collective_label(
    connection: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from ase import Atoms
    from ase.calculators.emt import EMT
    from fireworks import FWorker
    from fireworks.core.rocket_launcher import launch_rocket

    from nft_fw.firetasks.submission import submit
    from nft_fw.launchpad import records
    from nft_fw.spec.campaign import load_campaign, prepare

    assert MPIEXEC.exists(), "make setup installs mpiexec (PyPI mpich) into .venv/bin"
    lp = connection.launchpad
    ledger = tmp_path / "ledger.jsonl"
    name = f"mpi-{uuid.uuid4().hex[:6]}"
    spec = {
        "name": name,
        "target": {"builder": {"kind": "octahedron", "element": "Pt", "length": 3, "cutoff": 1}},
        "parent": {"name": "mpi-emt", "params": {"ledger": str(ledger)}},
        "initial": {"generator": "bulk", "n_structures": 3, "n_candidates": 6},
        "nft": {"max_iterations": 1},
        "service": {"labels_per_firework": 1},
    }
    submit(lp, prepare(load_campaign(spec)))
    # the init Firework runs here; the two-rank worker takes the label Fireworks it appends
    (tmp_path / "init").mkdir()
    monkeypatch.chdir(tmp_path / "init")
    assert launch_rocket(lp, FWorker(category="train"))

    out = subprocess.run(
        [str(MPIEXEC), "-n", "2", sys.executable, str(SUPPORT / "worker.py"), "--data-dir",
         str(connection.server.data_dir), "--db-name", connection.db_name, "--category",
         "label", "--idle-timeout", "4", "--poll", "0.2", "--work-dir", str(tmp_path / "w")],
        capture_output=True, text=True, timeout=300, env=_mpi_env(), check=False,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr[-3000:]

    labels = records.labels(lp.db, name)
    assert len(labels) == 3
    assert {d["mpi_ranks"] for d in labels} == {2}
    lines = [json.loads(s) for s in ledger.read_text().splitlines()]
    assert sorted(d["rank"] for d in lines) == [0, 0, 0, 1, 1, 1]  # each label on both ranks
    assert {d["participants"] for d in lines} == {2}
    assert len({d["pid"] for d in lines}) == 2
    # rank 0 stored what both computed, and that is EMT's answer
    for doc in labels:
        atoms = Atoms(doc["numbers"], positions=doc["positions"], cell=doc["cell"], pbc=doc["pbc"])
        atoms.calc = EMT()
        assert doc["energy"] == pytest.approx(atoms.get_potential_energy(), abs=1e-9)
        np.testing.assert_allclose(doc["forces"], atoms.get_forces(), atol=1e-9)
        both = [d["energy"] for d in lines if d["n_atoms"] == len(atoms)]
        assert any(abs(e - doc["energy"]) < 1e-9 for e in both)
    # the round's trainer is ready once its labels are done, left for a train worker
    trainer = lp.fireworks.find_one({"spec.campaign": name, "spec.nft_role": "train"})
    assert trainer["state"] == "READY"


def test_gpaw_on_several_ranks_without_mpi_in_its_c_extension_is_refused(tmp_path: Path) -> None:
    # each rank writes its own file: the ranks share one stdout pipe, where their lines can
    # interleave
    script = (
        "import os, sys\n"
        "from ase import Atoms\n"
        "from nft_fw.parents.parent import get_parent, LabelFailed\n"
        "p = get_parent('gpaw', {'mode': 'lcao', 'basis': 'sz(dzp)', 'h': 0.3})\n"
        "try:\n"
        "    p.single_point(Atoms('Pt2', positions=[[0, 0, 0], [2.5, 0, 0]]))\n"
        "except LabelFailed as err:\n"
        "    with open(os.path.join(sys.argv[1], f'{os.getpid()}.txt'), 'w') as f:\n"
        "        f.write(str(err))\n"
    )
    out = subprocess.run(
        [str(MPIEXEC), "-n", "2", sys.executable, "-c", script, str(tmp_path)],
        capture_output=True, text=True, timeout=300, env=_mpi_env(), check=False,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr[-3000:]
    refused = [f.read_text() for f in sorted(tmp_path.glob("*.txt"))]
    assert len(refused) == 2  # on both ranks, before any SCF step
    assert all("built without MPI" in r for r in refused)
