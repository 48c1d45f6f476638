"""Clusters as the operator's guide sets them up, on this machine with the real server.

- Offline mode (compute nodes that cannot reach the database): FireWorks' own ``qlaunch -r``
  reserves a Firework with ``examples/clusters/my_qadapter_slurm_offline.yaml`` and submits
  it to a real SLURM whose node daemon, and so the job, runs in a network namespace that
  cannot reach the database server; ``lpad recover_offline`` brings the result back.
- Two "clusters": two worker processes with the example FWorker files, each taking only
  its categories.
"""

from __future__ import annotations

import collections
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml

from nft_fw.firetasks.smoke import smoke_workflow

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parent.parent
CLUSTERS = ROOT / "examples" / "clusters"
VENV_BIN = Path(sys.executable).parent


def _run(cmd: list[str], cwd: Path, env: dict[str, str] | None = None) -> str:
    out = subprocess.run(
        cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=300, check=False
    )
    assert out.returncode == 0, f"{cmd}\n{out.stdout}\n{out.stderr}"
    return out.stdout + out.stderr


def _offline_job(
    lp_file: Path, tmp: Path, slurm_cluster: Any, fworker: str = "my_fworker_dft.yaml"
) -> Path:
    """Reserve one Firework with qlaunch -r on the login node, as the guide's offline
    section does, and let a real SLURM run its queue script on a compute node in a network
    namespace with no route to the database (tests/support/slurm.py). Returns the launch
    directory (holding FW.json and FW_offline.json) once the job has ended."""
    cluster = slurm_cluster("offline", netns=f"nftfw-off-{os.getpid() % 100000}")
    home = tmp / "cluster-home"  # $HOME on the cluster: the adapter names files under it
    (home / "nft-fw-cluster").mkdir(parents=True)
    shutil.copy(CLUSTERS / fworker, home / "nft-fw-cluster" / fworker)
    adapter = yaml.safe_load((CLUSTERS / "my_qadapter_slurm_offline.yaml").read_text())
    assert "--offline" in adapter["rocket_launch"]
    # what the guide tells a site to set: partition, account, one job's size, the venv
    adapter.update(queue=cluster.partition, cpus_per_task=1, mem="1G",
                   pre_rocket=f"source {VENV_BIN}/activate")  # fmt: skip
    del adapter["account"]
    qadapter = home / "nft-fw-cluster" / "my_qadapter_slurm_offline.yaml"
    qadapter.write_text(yaml.safe_dump(adapter))
    launch_dir = tmp / "jobs"
    launch_dir.mkdir()
    login_env = {"HOME": str(home), "PATH": f"{VENV_BIN}:/usr/bin:/bin",
                 "SLURM_CONF": str(cluster.conf), "JAX_PLATFORMS": "cpu"}  # fmt: skip
    out = _run(
        [str(VENV_BIN / "qlaunch"), "-l", str(lp_file),
         "-w", str(home / "nft-fw-cluster" / fworker), "-q", str(qadapter), "-r", "singleshot"],
        cwd=launch_dir, env=login_env,
    )  # fmt: skip
    assert {"FW.json", "FW_offline.json", "FW_submit.script"} <= set(os.listdir(launch_dir)), out
    (job_id,) = cluster.jobs()
    deadline = time.monotonic() + 180
    while cluster.jobs()[job_id]["JobState"] in ("PENDING", "RUNNING", "CONFIGURING"):
        assert time.monotonic() < deadline, cluster.logs()
        time.sleep(0.5)
    job = cluster.jobs()[job_id]
    assert job["JobState"] == "COMPLETED", (job, list(launch_dir.glob("*.error")))
    assert Path(job["WorkDir"]) == launch_dir
    return launch_dir


def _recover(lp_file: Path, cwd: Path) -> str:
    return _run([str(VENV_BIN / "lpad"), "-l", str(lp_file), "recover_offline"], cwd=cwd)


# ---------------------------------------------------------------- FireWorks offline mode


def test_offline_firework_runs_without_the_database_and_is_recovered(
    connection: Any, tmp_path: Path, slurm_cluster: Any
) -> None:
    from fireworks import Firework

    from nft_fw.firetasks.smoke import SumTask

    lp = connection.launchpad
    ledger = tmp_path / "ledger.jsonl"
    # category label: the DFT cluster's FWorker (dft + label) takes it
    task = SumTask(tag="root", values=[1], ledger=str(ledger))
    lp.add_wf(Firework(task, name="root", spec={"_category": "label"}))
    (root_id,) = lp.get_fw_ids({"name": "root"})
    launch_dir = _offline_job(connection.lp_file, tmp_path, slurm_cluster)

    offline = json.loads((launch_dir / "FW_offline.json").read_text())
    assert offline["state"] == "COMPLETED"
    assert offline["fwaction"]["stored_data"]["sum"] == pytest.approx(1.0)
    assert lp.get_fw_by_id(root_id).state == "RESERVED"  # nothing reached the database yet
    assert [json.loads(line)["tag"] for line in ledger.read_text().splitlines()] == ["root"]

    log = _recover(connection.lp_file, tmp_path)
    assert "1 job(s) recovered" in log
    fw = lp.get_fw_by_id(root_id)
    assert fw.state == "COMPLETED"
    (launch,) = list(lp.launches.find({"fw_id": root_id}))
    assert launch["state"] == "COMPLETED" and launch["launch_dir"] == str(launch_dir)
    assert launch["action"]["stored_data"]["sum"] == pytest.approx(1.0)
    assert launch["fworker"]["name"] == "dft-cluster"
    reserved = [h for h in launch["state_history"] if h["state"] == "RESERVED"]
    (job_id,) = [int(p.stem.rsplit("-", 1)[1]) for p in launch_dir.glob("*-*.out")]
    assert [h.get("reservation_id") for h in reserved] == [str(job_id)]  # the SLURM job
    (run,) = list(lp.offline_runs.find({"fw_id": root_id}))
    assert run["completed"] is True
    assert "0 job(s) recovered" in _recover(connection.lp_file, tmp_path)  # idempotent


# ---------------------------------------------------------------- label Fireworks offline


def _label_round(conn: Any, name: str, service: dict[str, Any]) -> tuple[list[dict], int]:
    """A registered EMT campaign (a 79-atom Pt particle) and one round of three chunk labels
    laid out the way a trainer appends them: one label Firework, then the trainer.
    Returns the items and the label Firework's id."""
    from nft_fw.firetasks import labels as label_tasks
    from nft_fw.firetasks.nft import TASKS
    from nft_fw.launchpad import campaigns, queue, records
    from nft_fw.spec.campaign import load_campaign, prepare
    from nft_fw.workflows.campaign import round_workflow

    spec = {
        "name": name,
        "target": {
            "builder": {"kind": "octahedron", "element": "Pt", "length": 5, "cutoff": 1},
            "rattle": {"stdev": 0.1, "seed": 0},
        },
        "parent": {"name": "emt", "params": {}},
        "model": {"cutoff": 5.0},
        "service": {"labels_per_firework": 3, **service},
    }
    prepared = prepare(load_campaign(spec))
    lp = conn.launchpad
    queue.ensure_initialised(lp)
    campaigns.register(lp.db, prepared)
    source = records.get_campaign(lp.db, name)["target_file"]
    items = [
        {"kind": "chunk", "source": source, "centre": c, "radius": prepared.chunk_radius_A,
         "iteration": 1, "phase": "nft"}
        for c in (0, 17, 40)
    ]  # fmt: skip
    items = label_tasks.round_items(lp.db, name, items)
    lp.add_wf(round_workflow(prepared.spec, "nft", 1, items, TASKS))
    (label_id,) = lp.get_fw_ids({"spec.campaign": name, "spec.nft_role": "label"})
    assert lp.get_fw_by_id(label_id).spec["_category"] == "label"
    return items, label_id


def _assert_labels_once(db: Any, name: str, items: list[dict]) -> None:
    """Each item labelled exactly once, with EMT's force on the chunk's central atom."""
    from ase.calculators.emt import EMT

    from nft_fw.launchpad.campaigns import context
    from nft_fw.launchpad.records import LABELS
    from nft_fw.structures.chunks import cut

    target = context(db, name).target  # as stored: what every worker cuts chunks from

    docs = list(db[LABELS].find({"campaign": name}))
    assert len(docs) == len(items)
    hashes = collections.Counter(d["hash"] for d in docs)
    assert set(hashes.values()) == {1}
    by_centre = {d["centre"]: d for d in docs}
    for item in items:
        chunk = cut(target, item["centre"], item["radius"])
        doc = by_centre[item["centre"]]
        assert doc["hash"] == chunk.hash
        atoms = chunk.atoms.copy()
        atoms.calc = EMT()
        np.testing.assert_allclose(doc["central_force"], atoms.get_forces()[0], atol=1e-10)


def test_offline_label_firework_fizzles_loudly_and_reruns_online_once(
    connection: Any, tmp_path: Path, slurm_cluster: Any
) -> None:
    """Label Fireworks read the campaign and write labels through the database: offline,
    with no database, they fail with the reason, write nothing, and a rerun on a worker
    that reaches the database labels every chunk exactly once."""
    from nft_fw.launchpad.records import LABELS

    lp = connection.launchpad
    items, label_id = _label_round(connection, "off-rerun", {})
    _offline_job(connection.lp_file, tmp_path, slurm_cluster)
    _recover(connection.lp_file, tmp_path)

    assert lp.get_fw_by_id(label_id).state == "FIZZLED"
    (launch,) = list(lp.launches.find({"fw_id": label_id}))
    trace = launch["action"]["stored_data"]["_exception"]["_stacktrace"]
    assert "LabelTask" in trace and "LaunchPad" in trace
    assert lp.db[LABELS].count_documents({"campaign": "off-rerun"}) == 0

    lp.rerun_fw(label_id)
    _run(
        [sys.executable, "-m", "nft_fw", "worker", "--launchpad", str(connection.lp_file),
         "--category", "label", "--max", "1", "--work-dir", str(tmp_path / "online")],
        cwd=tmp_path,
    )  # fmt: skip
    assert lp.get_fw_by_id(label_id).state == "COMPLETED"
    _assert_labels_once(lp.db, "off-rerun", items)
    train = lp.fireworks.find_one({"spec.campaign": "off-rerun", "spec.nft_role": "train"})
    assert train["state"] == "READY"  # the round's trainer is next


def test_offline_label_firework_delivers_each_label_exactly_once(
    connection: Any, tmp_path: Path, slurm_cluster: Any
) -> None:
    from nft_fw.launchpad import campaigns
    from nft_fw.launchpad.records import LABELS

    lp = connection.launchpad
    items, label_id = _label_round(connection, "off-labels", {"offline_labels": True})
    _offline_job(connection.lp_file, tmp_path, slurm_cluster)
    assert lp.db[LABELS].count_documents({"campaign": "off-labels"}) == 0  # still offline
    _recover(connection.lp_file, tmp_path)

    assert lp.get_fw_by_id(label_id).state == "COMPLETED"
    train = lp.fireworks.find_one({"spec.campaign": "off-labels", "spec.nft_role": "train"})
    assert train["state"] == "READY"
    # what the trainer does first: store the labels the recovered launches brought back
    assert campaigns.import_offline_labels(lp.db, "off-labels") == len(items)
    _assert_labels_once(lp.db, "off-labels", items)
    assert campaigns.import_offline_labels(lp.db, "off-labels") == 0  # a rerun adds nothing
    _assert_labels_once(lp.db, "off-labels", items)
    hosts = {d.get("host") for d in lp.db[LABELS].find({"campaign": "off-labels"})}
    assert len(hosts) == 1 and None not in hosts  # recorded by the worker that labelled


# ---------------------------------------------------------------- two clusters


def test_two_clusters_each_take_only_their_categories(connection: Any, tmp_path: Path) -> None:
    """Cluster A (DFT, my_fworker_dft.yaml: dft + label) runs nft-fw worker with that file
    as my_qadapter_slurm.yaml does; cluster B (GPU, train) runs nft-fw worker --category
    train as my_qadapter_slurm_gpu.yaml does; both at once."""
    lp = connection.launchpad
    ledger = tmp_path / "ledger.jsonl"
    for category in ("dft", "label", "train"):
        lp.add_wf(
            smoke_workflow(4, 2, ledger=str(ledger), name=f"wf-{category}", category=category)
        )
    for cluster in ("cluster-a", "cluster-b"):
        (tmp_path / cluster).mkdir()
    cluster_a = subprocess.Popen(
        [sys.executable, "-m", "nft_fw", "worker", "--launchpad", str(connection.lp_file),
         "--fworker", str(CLUSTERS / "my_fworker_dft.yaml"), "--until-done", "--idle-timeout", "3",
         "--poll", "0.5"],
        cwd=tmp_path / "cluster-a", stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    cluster_b = subprocess.Popen(
        [sys.executable, "-m", "nft_fw", "worker", "--launchpad", str(connection.lp_file),
         "--category", "train", "--until-done", "--idle-timeout", "3", "--poll", "0.5", "--name", "gpu-cluster"],
        cwd=tmp_path / "cluster-b", stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    outs = [p.communicate(timeout=300)[0] for p in (cluster_a, cluster_b)]
    assert [cluster_a.returncode, cluster_b.returncode] == [0, 0], outs

    per_wf = 4 + 3 + 2  # leaves + root, fan-out, total + the two added at run time
    fws = list(lp.fireworks.find({}, {"fw_id": 1, "state": 1, "spec._category": 1}))
    assert len(fws) == 3 * per_wf
    assert {fw["state"] for fw in fws} == {"COMPLETED"}
    category = {fw["fw_id"]: fw["spec"]["_category"] for fw in fws}
    launches = list(lp.launches.find({}, {"fw_id": 1, "fworker.name": 1}))
    assert sorted(d["fw_id"] for d in launches) == sorted(category)  # each ran exactly once
    ran_on = collections.defaultdict(set)
    for d in launches:
        ran_on[category[d["fw_id"]]].add(d["fworker"]["name"])
    assert dict(ran_on) == {
        "dft": {"dft-cluster"},
        "label": {"dft-cluster"},
        "train": {"gpu-cluster"},
    }
    records = [json.loads(line) for line in ledger.read_text().splitlines()]
    assert len(records) == 3 * per_wf
    assert len({r["pid"] for r in records}) >= 2  # two processes did the work
    assert {p.name for p in (tmp_path / "cluster-a").glob("launcher_*")}  # launch dirs per site
    assert {p.name for p in (tmp_path / "cluster-b").glob("launcher_*")}
