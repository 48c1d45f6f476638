"""Workers started by a real SLURM, as docs/operators-guide.md sets them up.

Each test starts its own one-node clusters (Debian's slurm-wlm and munge; the
``slurm_cluster`` fixture, tests/support/slurm.py) and the campaign's label Fireworks run
as SLURM jobs that FireWorks' own ``qlaunch`` writes from the shipped adapter files,
changed only where the guide tells a user to change them (:data:`GUIDE_EDITS`). The
scheduler's unhappy paths are the real ones: a job killed at its time limit, one
cancelled with ``scancel``, a node taken down under a running label, and compute nodes in
a network namespace with no route to the database.
"""

from __future__ import annotations

import collections
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import slow_parent  # noqa: F401  (registers slow-emt in this process)
import specs
import yaml
from service import submit

pytestmark = [pytest.mark.integration, pytest.mark.slurm]

ROOT = Path(__file__).resolve().parent.parent
CLUSTERS = ROOT / "examples" / "clusters"
SUPPORT = Path(__file__).resolve().parent / "support"
VENV_BIN = Path(sys.executable).parent

# What docs/operators-guide.md (section 1, steps 3-4) tells a user to set in a shipped
# queue adapter for their site: the partition, the account (deleted: this cluster has
# none), one job's CPUs, memory and walltime on their nodes, the pre_rocket lines (modules,
# the venv), and on a GPU cluster its GPU request (deleted: these nodes have none).
GUIDE_EDITS = {"queue", "account", "cpus_per_task", "mem", "walltime", "pre_rocket", "gres"}


def tiny(name: str, parent: dict[str, Any] | None = None, **extra: Any) -> dict[str, Any]:
    """The tiny campaign with 2 iterations of 2 chunks, a label per Firework."""
    nft = {"chunks_per_iteration": 2, "max_iterations": 2, "threshold": 0.01}
    return specs.tiny(name, parent or {"name": "emt", "params": {}}, **{"nft": nft, **extra})


@dataclass
class Site:
    """A cluster's login node: a home with ~/nft-fw-cluster as the guide lays it out."""

    cluster: Any
    home: Path
    env: dict[str, str]

    @property
    def files(self) -> Path:
        return self.home / "nft-fw-cluster"

    @property
    def jobs(self) -> Path:
        return self.home / "jobs"


def login_node(tmp: Path, cluster: Any, lp_file: Path, fworker: str, adapter: str,
               **edits: Any) -> Site:  # fmt: skip
    """Set up a login node as the guide's section 1 does: my_launchpad.yaml installed mode
    0600 in ~/nft-fw-cluster, the FWorker file copied as shipped, the queue adapter copied
    with only :data:`GUIDE_EDITS` changed (``edits`` overrides them; None deletes a key)."""
    home = tmp / f"home-{cluster.name}"
    files = home / "nft-fw-cluster"
    files.mkdir(parents=True)
    (home / "jobs").mkdir()
    shutil.copy(lp_file, files / "my_launchpad.yaml")
    (files / "my_launchpad.yaml").chmod(0o600)
    shutil.copy(CLUSTERS / fworker, files / fworker)
    shipped = yaml.safe_load((CLUSTERS / adapter).read_text())
    site_edits: dict[str, Any] = {
        "queue": cluster.partition,
        "account": None,
        "cpus_per_task": 1,
        "mem": "1G",
        "pre_rocket": f"source {VENV_BIN}/activate\nexport OMP_NUM_THREADS=1",
        **edits,
    }
    # rocket_launch only as the adapter's own comment says (reservation mode) or to register
    # the tests' slow parent
    changed = set(site_edits) - {"rocket_launch"}
    assert changed <= GUIDE_EDITS, changed - GUIDE_EDITS
    local = dict(shipped)
    for key, value in site_edits.items():
        if value is None:
            local.pop(key, None)
        else:
            local[key] = value
    (files / adapter).write_text(yaml.safe_dump(local, sort_keys=False))
    # qlaunch waits QUEUE_UPDATE_INTERVAL (5 s) after each submission; 1 s here
    (home / ".fireworks").mkdir()
    (home / ".fireworks" / "FW_config.yaml").write_text("QUEUE_UPDATE_INTERVAL: 1\n")
    env = {
        "HOME": str(home),
        "PATH": f"{VENV_BIN}:/usr/bin:/bin:/usr/sbin:/sbin",
        "SLURM_CONF": str(cluster.conf),
        "JAX_PLATFORMS": "cpu",
        "LANG": "C.UTF-8",
    }
    return Site(cluster, home, env)


def qlaunch(site: Site, fworker: str, adapter: str, *extra: str) -> subprocess.Popen[bytes]:
    """``qlaunch … rapidfire --nlaunches infinite`` as the guide's step 6, in the site's
    jobs folder, its output in qlaunch.log beside it."""
    f = site.files
    log = open(site.home / "qlaunch.log", "wb")  # noqa: SIM115 (closed with the process)
    return subprocess.Popen(
        ["qlaunch", "-l", str(f / "my_launchpad.yaml"), "-w", str(f / fworker),
         "-q", str(f / adapter), *extra, "rapidfire", "--nlaunches", "infinite",
         "-m", "50", "--sleep", "2"],
        cwd=site.jobs, env=site.env, stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip


def worker(conn: Any, where: Path, *args: str) -> subprocess.Popen[bytes]:
    """An ``nft-fw worker`` outside any queue (a trainer on the "login node" side)."""
    where.mkdir(parents=True, exist_ok=True)
    log = open(where.with_suffix(".log"), "wb")  # noqa: SIM115
    return subprocess.Popen(
        [sys.executable, str(SUPPORT / "worker.py"), "--launchpad", str(conn.lp_file),
         "--work-dir", str(where), "--poll", "0.5", *args],
        stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip


def stop(*procs: subprocess.Popen[bytes]) -> None:
    for p in procs:
        if p.poll() is None:
            p.send_signal(signal.SIGINT)
    for p in procs:
        try:
            p.wait(timeout=20)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


def wait_for(predicate: Callable[[], bool], timeout: float, what: str,
             context: Callable[[], str] = lambda: "") -> None:  # fmt: skip
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if predicate():
            return
        time.sleep(0.5)
    raise AssertionError(f"timed out after {timeout:g} s waiting for {what}\n{context()}")


def done(lp: Any, name: str) -> Callable[[], bool]:
    def check() -> bool:
        states = [d["state"] for d in lp.fireworks.find({"spec.campaign": name}, {"state": 1})]
        return (
            bool(states)
            and set(states) <= {"COMPLETED", "FIZZLED"}
            and any(
                d["spec"]["nft_role"] == "report" and d["state"] == "COMPLETED"
                for d in lp.fireworks.find(
                    {"spec.campaign": name}, {"state": 1, "spec.nft_role": 1}
                )
            )
        )

    return check


def diagnostics(lp: Any, name: str, *sites: Site) -> Callable[[], str]:
    def text() -> str:
        parts = []
        for d in lp.fireworks.find({"spec.campaign": name}, {"fw_id": 1, "state": 1, "name": 1}):
            parts.append(f"{d['fw_id']} {d['name']}: {d['state']}")
        for s in sites:
            parts.append(f"--- {s.cluster.name} jobs")
            parts += [
                f"{k}: {v['JobState']} {v.get('Reason')}" for k, v in s.cluster.jobs().items()
            ]
            log = s.home / "qlaunch.log"
            if log.exists():
                parts.append("\n".join(log.read_text(errors="replace").splitlines()[-15:]))
            for out in sorted(s.jobs.rglob("*.error"))[-3:]:
                parts.append(f"--- {out}\n{out.read_text(errors='replace')[-1500:]}")
            parts.append(s.cluster.logs())
        return "\n".join(parts)

    return text


def assert_labels_once(db: Any, name: str, expected: int) -> list[dict[str, Any]]:
    from nft_fw.launchpad import records

    labels = records.labels(db, name)
    hashes = collections.Counter(d["hash"] for d in labels)
    assert len(labels) == expected and set(hashes.values()) == {1}, hashes
    return labels


def job_of(launch_dir: Path, site: Site) -> tuple[int, dict[str, str]]:
    """The SLURM job a launch ran in: its directory holds the queue script qlaunch wrote and
    the job's output file, named by the job id the controller knows."""
    job_dir = launch_dir if (launch_dir / "FW_submit.script").exists() else launch_dir.parent
    assert (job_dir / "FW_submit.script").exists(), launch_dir
    # <job_name>-<job id>.out (the adapter's job_name; the Firework's name under -r)
    (out,) = [p for p in job_dir.glob("*-*.out") if p.stem.rsplit("-", 1)[1].isdigit()]
    job_id = int(out.stem.rsplit("-", 1)[1])
    job = site.cluster.jobs()[job_id]
    assert Path(job["WorkDir"]) == job_dir and Path(job["StdOut"]) == out
    return job_id, job


# ---------------------------------------------------------------- the guide's path


@pytest.mark.parametrize("mode", ["rapidfire", "reservation"])
def test_labels_run_as_slurm_jobs_from_the_shipped_adapter(
    connection: Any, slurm_cluster: Any, tmp_path: Path, mode: str
) -> None:
    """Section 1 of the guide, literally: cluster A's login node with the shipped
    my_qadapter_slurm.yaml and my_fworker_dft.yaml, ``qlaunch rapidfire`` (or ``-r``, with
    the adapter's reservation-mode rocket_launch line), a trainer where its category says:
    every label Firework runs once, as a SLURM job, in that job's folder."""
    lp = connection.launchpad
    name = f"sl-{mode[:4]}-{uuid.uuid4().hex[:6]}"
    cluster = slurm_cluster("alpha")
    edits: dict[str, Any] = {}
    extra: tuple[str, ...] = ()
    if mode == "reservation":
        shipped = (CLUSTERS / "my_qadapter_slurm.yaml").read_text()
        (line,) = [x for x in shipped.splitlines() if x.startswith("#   rocket_launch: rlaunch")]
        edits["rocket_launch"] = yaml.safe_load(line.lstrip("# "))["rocket_launch"]
        extra = ("-r",)
    site = login_node(tmp_path, cluster, connection.lp_file, "my_fworker_dft.yaml",
                      "my_qadapter_slurm.yaml", **edits)  # fmt: skip
    submit(connection, tiny(name))
    trainer = worker(connection, tmp_path / "trainer", "--category", "train", "--name", "trainer")
    queue = qlaunch(site, "my_fworker_dft.yaml", "my_qadapter_slurm.yaml", *extra)
    try:
        wait_for(done(lp, name), 400, f"campaign {name}", diagnostics(lp, name, site))
    finally:
        stop(queue, trainer)

    fws = list(lp.fireworks.find({"spec.campaign": name}))
    assert {d["state"] for d in fws} == {"COMPLETED"}, diagnostics(lp, name, site)()
    labels = [d for d in fws if d["spec"]["nft_role"] == "label"]
    assert len(labels) == 4 + 2 + 2  # bulk cells, then two rounds of two chunks
    assert_labels_once(lp.db, name, 8)
    job_ids = set()
    for d in fws:
        (launch,) = list(lp.launches.find({"fw_id": d["fw_id"]}))  # each ran once
        where = Path(launch["launch_dir"])
        if d["spec"]["nft_role"] == "label":
            assert launch["fworker"]["name"] == "dft-cluster"
            job_id, job = job_of(where, site)
            assert job["JobState"] == "COMPLETED" and job["Partition"] == cluster.partition
            job_ids.add(job_id)
            if mode == "reservation":  # the job ran the Firework reserved for it
                script = (where / "FW_submit.script").read_text()
                assert f"--fw_id {d['fw_id']}" in script
                reserved = [h for h in launch["state_history"] if h["state"] == "RESERVED"]
                assert [h.get("reservation_id") for h in reserved] == [str(job_id)]
        else:
            assert launch["fworker"]["name"] == "trainer"
            assert tmp_path / "trainer" in where.parents
    assert len(job_ids) == len(labels)  # one job per label Firework


# ---------------------------------------------------------------- overlapping rounds


def test_overlapping_rounds_keep_eight_slurm_jobs_labelling(
    connection: Any, slurm_cluster: Any, tmp_path: Path
) -> None:
    """nft.rounds: overlapping with eight chunks in flight on an eight-CPU node: eight label
    jobs run at once (held at their start until all eight are running), the next trainer
    starts after half of them arrived, and the campaign ends with every label once, each
    label Firework in a SLURM job of its own."""
    from nft_fw.launchpad import records

    lp = connection.launchpad
    name = f"sl-over-{uuid.uuid4().hex[:6]}"
    cluster = slurm_cluster("alpha", cpus=8)
    flag = tmp_path / "hold"
    shipped = yaml.safe_load((CLUSTERS / "my_qadapter_slurm.yaml").read_text())
    launch = shipped["rocket_launch"].replace(
        "nft-fw worker", f"{sys.executable} {SUPPORT / 'worker.py'}"
    )
    site = login_node(tmp_path, cluster, connection.lp_file, "my_fworker_dft.yaml",
                      "my_qadapter_slurm.yaml", rocket_launch=launch)  # fmt: skip
    spec = tiny(name, {"name": "slow-emt", "params": {"flag": str(flag)}})
    spec["nft"].update(chunks_per_iteration=8, max_iterations=3, patience=5,
                       rounds="overlapping", next_round_after=0.5)  # fmt: skip
    submit(connection, spec)
    trainer = worker(connection, tmp_path / "trainer", "--category", "train", "--name", "trainer")
    queue = qlaunch(site, "my_fworker_dft.yaml", "my_qadapter_slurm.yaml")
    context = diagnostics(lp, name, site)

    def count(query: dict[str, Any]) -> int:
        return lp.fireworks.count_documents({"spec.campaign": name, **query})

    try:
        # round 1's labels wait at their start once trainer 0 runs
        wait_for(lambda: count({"spec.nft_role": "train", "state": "RUNNING"}) > 0, 300,
                 "trainer 0 running", context)  # fmt: skip
        flag.touch()
        wait_for(lambda: count({"spec.nft_role": "label", "spec.nft_round": 1,
                                "state": "RUNNING"}) == 8, 300,
                 "eight label Fireworks running", context)  # fmt: skip
        running = [j for j in cluster.jobs().values() if j["JobState"] == "RUNNING"]
        assert len(running) >= 8, context()
        flag.unlink()
        wait_for(done(lp, name), 400, f"campaign {name}", context)
    finally:
        flag.unlink(missing_ok=True)
        stop(queue, trainer)

    fws = list(lp.fireworks.find({"spec.campaign": name}))
    assert {d["state"] for d in fws} == {"COMPLETED"}, context()
    history = records.iterations(lp.db, name)
    assert [r["iteration"] for r in history] == [0, 1, 2, 3]
    assert [len(r["requested"]) for r in history[:3]] == [
        8,
        *(8 - len(r["in_flight"]) for r in history[1:3]),
    ]
    asked = sum(len(r["requested"]) for r in history)
    assert_labels_once(lp.db, name, 4 + asked)
    assert len(records.arrivals(lp.db, name)) == asked
    labels = [d for d in fws if d["spec"]["nft_role"] == "label"]
    jobs = {job_of(Path(lp.launches.find_one({"fw_id": d["fw_id"]})["launch_dir"]), site)[0]
            for d in labels}  # fmt: skip
    assert len(jobs) == len(labels) == 4 + asked


# ---------------------------------------------------------------- two clusters


def test_two_clusters_one_for_labels_one_for_trainers(
    connection: Any, slurm_cluster: Any, tmp_path: Path
) -> None:
    """Cluster A (partition cpu: my_fworker_dft.yaml, my_qadapter_slurm.yaml) and cluster B
    (partition gpu: my_fworker_train.yaml, my_qadapter_slurm_gpu.yaml), each with its own
    controller, node, munge key and ports, both pulling from one LaunchPad: every label ran
    in a job of A, every trainer in a job of B."""
    lp = connection.launchpad
    name = f"sl-two-{uuid.uuid4().hex[:6]}"
    a = slurm_cluster("alpha", partition="cpu")
    b = slurm_cluster("beta", partition="gpu")
    assert a.conf.read_text() != b.conf.read_text() and a.ctld_port != b.ctld_port
    site_a = login_node(tmp_path, a, connection.lp_file, "my_fworker_dft.yaml",
                        "my_qadapter_slurm.yaml")  # fmt: skip
    # a GPU cluster's request for a GPU is site-specific: this one has none
    site_b = login_node(tmp_path, b, connection.lp_file, "my_fworker_train.yaml",
                        "my_qadapter_slurm_gpu.yaml", gres=None)  # fmt: skip
    submit(connection, tiny(name))
    queues = [
        qlaunch(site_a, "my_fworker_dft.yaml", "my_qadapter_slurm.yaml"),
        qlaunch(site_b, "my_fworker_train.yaml", "my_qadapter_slurm_gpu.yaml"),
    ]
    try:
        wait_for(done(lp, name), 400, f"campaign {name}", diagnostics(lp, name, site_a, site_b))
    finally:
        stop(*queues)
        for job_id, job in b.jobs().items():  # the trainer job idles until --idle-timeout
            if job["JobState"] in ("RUNNING", "PENDING"):
                b.run("scancel", str(job_id))

    fws = list(lp.fireworks.find({"spec.campaign": name}))
    assert {d["state"] for d in fws} == {"COMPLETED"}
    assert_labels_once(lp.db, name, 8)
    ran_on: dict[str, set[str]] = collections.defaultdict(set)
    for d in fws:
        (launch,) = list(lp.launches.find({"fw_id": d["fw_id"]}))
        where = Path(launch["launch_dir"])
        site = site_a if site_a.jobs in where.parents else site_b
        assert site.jobs in where.parents, where
        job_of(where, site)  # a job that cluster's controller ran
        ran_on[d["spec"]["_category"]].add(site.cluster.name)
        assert launch["fworker"]["name"] == ("dft-cluster" if site is site_a else "gpu-cluster")
    assert dict(ran_on) == {"label": {"alpha"}, "train": {"beta"}}
    # the trainer job of B ran every trainer in one allocation (it polls between rounds)
    train_jobs = {job_of(Path(lp.launches.find_one({"fw_id": d["fw_id"]})["launch_dir"]),
                         site_b)[0] for d in fws if d["spec"]["_category"] == "train"}  # fmt: skip
    assert len(train_jobs) >= 1
    # jobs qlaunch submitted after the last label was taken find nothing and exit cleanly
    wait_for(lambda: not {"PENDING", "RUNNING"} & {j["JobState"] for j in a.jobs().values()},
             60, "cluster A's queue to empty")  # fmt: skip
    assert {j["JobState"] for j in a.jobs().values()} == {"COMPLETED"}


# ---------------------------------------------------------------- the scheduler kills a job


KILLS = ["timeout", "scancel", "node_down", "drain"]


@pytest.mark.parametrize("kill", KILLS)
def test_a_label_job_the_scheduler_ends_is_recovered_once(
    connection: Any, slurm_cluster: Any, tmp_path: Path, kill: str
) -> None:
    """A label job ended by the scheduler while its label runs: at its time limit
    (TIMEOUT), by ``scancel``, by its node going down (a failed node: SLURM requeues the
    job), or its node drained (the label finishes; the next round's jobs wait for
    ``scontrol update … state=resume``). What the guide's operator does — ``nft-fw recover
    --lost-after`` from cron, sized against the workers' ``--ping`` — brings the campaign to
    its end with every label once."""
    lp = connection.launchpad
    name = f"sl-{kill[:5]}-{uuid.uuid4().hex[:6]}"
    cluster = slurm_cluster("alpha")
    flag = tmp_path / "hold"
    flag.touch()  # the slow parent's labels wait while it exists
    shipped = yaml.safe_load((CLUSTERS / "my_qadapter_slurm.yaml").read_text())
    # the test's worker entry point registers the slow parent; --ping as the guide sizes it
    launch = (
        shipped["rocket_launch"]
        .replace("nft-fw worker", f"{sys.executable} {SUPPORT / 'worker.py'}")
        .replace("--ping 300", "--ping 1")
    )
    assert "--ping 1" in launch
    edits: dict[str, Any] = {"rocket_launch": launch}
    if kill == "timeout":
        edits["walltime"] = "00:01:00"
    site = login_node(tmp_path, cluster, connection.lp_file, "my_fworker_dft.yaml",
                      "my_qadapter_slurm.yaml", **edits)  # fmt: skip
    spec = tiny(name, {"name": "slow-emt", "params": {"flag": str(flag)}})
    spec["nft"]["max_iterations"] = 1
    spec["service"]["labels_per_firework"] = 4  # one label Firework per round
    submit(connection, spec)
    trainer = worker(connection, tmp_path / "trainer", "--category", "train", "--name", "trainer")
    queue = qlaunch(site, "my_fworker_dft.yaml", "my_qadapter_slurm.yaml")
    context = diagnostics(lp, name, site)
    recovered: list[int] = []
    try:

        def running_job() -> int | None:
            for job_id, job in cluster.jobs().items():
                if job["JobState"] == "RUNNING":
                    return job_id
            return None

        def label_running() -> bool:
            return (
                lp.fireworks.count_documents(
                    {"spec.campaign": name, "spec.nft_role": "label", "state": "RUNNING"}
                )
                > 0
                and running_job() is not None
            )

        wait_for(label_running, 120, "a label running in a SLURM job", context)
        victim_fw = lp.fireworks.find_one(
            {"spec.campaign": name, "spec.nft_role": "label", "state": "RUNNING"}
        )["fw_id"]
        # the job that runs this label, not merely a running one: a job whose worker found
        # nothing to do may still be on its way out when the label starts in another
        launch = lp.launches.find_one({"fw_id": victim_fw, "state": "RUNNING"})
        victim, victim_job = job_of(Path(launch["launch_dir"]), site)
        assert victim_job["JobState"] == "RUNNING", victim_job
        node = cluster.node
        if kill == "scancel":
            cluster.run("scancel", str(victim))
        elif kill == "node_down":
            cluster.run("scontrol", "update", f"nodename={node}", "state=down", "reason=test")
        elif kill == "drain":
            cluster.run("scontrol", "update", f"nodename={node}", "state=drain", "reason=test")
        final = {"timeout": "TIMEOUT", "scancel": "CANCELLED", "node_down": "PENDING",
                 "drain": "RUNNING"}[kill]  # fmt: skip
        # node_down: the job is killed and requeued (it waits for the node to come back)
        wait_for(lambda: cluster.jobs()[victim]["JobState"] == final, 150,
                 f"job {victim} {final}", context)  # fmt: skip
        if kill == "drain":
            wait_for(lambda: cluster.node_state() == "draining", 30, "the node draining")
            flag.unlink()  # the label goes on and finishes in its job
            wait_for(lambda: cluster.jobs()[victim]["JobState"] == "COMPLETED", 120,
                     "the drained node's job to finish", context)  # fmt: skip
            # the node turns DRAINED once its last job has left it (a moment after)
            wait_for(lambda: cluster.node_state() == "drained", 60, "the node drained", context)

            def waiting() -> bool:  # the next round's label job cannot start
                return any(j["JobState"] == "PENDING" for j in cluster.jobs().values())

            wait_for(waiting, 120, "a job pending on the drained node", context)
            time.sleep(3)
            assert (
                lp.fireworks.count_documents(
                    {"spec.campaign": name, "spec.nft_role": "label", "state": "RUNNING"}
                )
                == 0
            )
            cluster.run("scontrol", "update", f"nodename={node}", "state=resume")
        else:
            assert lp.get_fw_by_id(victim_fw).state == "RUNNING"  # the database can't tell
            flag.unlink()
            if kill == "node_down":  # the operator brings the node back
                # (ReturnToService=2 may have done so already, when slurmd re-registered:
                # then scontrol refuses the resume, and the node is up anyway)
                cluster.run("scontrol", "update", f"nodename={node}", "state=resume", check=False)
                wait_for(lambda: cluster.node_state() in ("idle", "mixed", "allocated"), 60,
                         "the node back in service", context)  # fmt: skip

            # the operator's cron: nft-fw recover, its --lost-after well above --ping
            def recover() -> bool:
                out = subprocess.run(
                    [sys.executable, "-m", "nft_fw", "recover", "--launchpad",
                     str(connection.lp_file), "--lost-after", "10", "--json"],
                    capture_output=True, text=True, timeout=120, check=True,
                )  # fmt: skip
                recovered.extend(json.loads(out.stdout)["lost_fw_ids"])
                return bool(recovered)

            wait_for(recover, 120, "nft-fw recover to find the lost run", context)
            assert recovered == [victim_fw]
        wait_for(done(lp, name), 300, f"campaign {name}", context)
    finally:
        flag.unlink(missing_ok=True)
        stop(queue, trainer)

    fws = list(lp.fireworks.find({"spec.campaign": name}))
    assert {d["state"] for d in fws} == {"COMPLETED"}, context()
    assert_labels_once(lp.db, name, 4 + 2)
    runs = lp.get_fw_by_id(victim_fw)
    if kill == "drain":
        assert len(runs.launches) == 1 and not runs.archived_launches
    else:  # the killed run is archived, the rerun completed in another job
        assert len(runs.launches) == 1 and len(runs.archived_launches) == 1
        (rerun,) = runs.launches
        job_id, job = job_of(Path(rerun.launch_dir), site)
        assert job_id != victim and job["JobState"] == "COMPLETED"


# ---------------------------------------------------------------- no route to the database


def test_a_campaign_completes_on_compute_nodes_that_cannot_reach_the_database(
    connection: Any, slurm_cluster: Any, tmp_path: Path
) -> None:
    """The guide's offline mode end to end: the cluster's node daemon, and so every job, runs
    in a network namespace joined to its controller only (a job there cannot open a TCP
    connection to the database, shown first); the login node runs ``qlaunch -r rapidfire``
    with my_qadapter_slurm_offline.yaml and ``lpad recover_offline`` as its cron would, a
    trainer runs beside it; the campaign (``service.offline_labels``) completes with every
    label once."""
    lp = connection.launchpad
    name = f"sl-off-{uuid.uuid4().hex[:6]}"
    cluster = slurm_cluster("dark", netns=f"nftfw-dark-{os.getpid() % 100000}")
    site = login_node(tmp_path, cluster, connection.lp_file, "my_fworker_dft.yaml",
                      "my_qadapter_slurm_offline.yaml")  # fmt: skip
    host, port = connection.launchpad.host, int(connection.launchpad.port)
    probe = site.jobs / "probe.out"
    cluster.run(
        "sbatch", "--wait", "-o", str(probe), "--wrap",
        f"{sys.executable} -c \"import socket; s = socket.socket(); s.settimeout(5); "
        f"print('connect', s.connect_ex(('{host}', {port})))\"",
    )  # fmt: skip
    code = int(probe.read_text().split()[-1])
    assert code != 0, "the compute node reached the database"
    import socket

    with socket.create_connection((host, port), timeout=5):  # the login node does
        pass

    submit(connection, tiny(name, service={"labels_per_firework": 1, "offline_labels": True}))
    trainer = worker(connection, tmp_path / "trainer", "--category", "train", "--name", "trainer")
    queue = qlaunch(site, "my_fworker_dft.yaml", "my_qadapter_slurm_offline.yaml", "-r")
    context = diagnostics(lp, name, site)

    def cron() -> bool:
        subprocess.run(
            ["lpad", "-l", str(site.files / "my_launchpad.yaml"), "recover_offline"],
            cwd=site.jobs, env=site.env, capture_output=True, timeout=120, check=True,
        )  # fmt: skip
        return done(lp, name)()

    try:
        wait_for(cron, 400, f"campaign {name}", context)
    finally:
        stop(queue, trainer)

    fws = list(lp.fireworks.find({"spec.campaign": name}))
    assert {d["state"] for d in fws} == {"COMPLETED"}, context()
    assert_labels_once(lp.db, name, 8)
    for d in fws:
        if d["spec"]["nft_role"] != "label":
            continue
        (launch,) = list(lp.launches.find({"fw_id": d["fw_id"]}))
        where = Path(launch["launch_dir"])
        assert (where / "FW_offline.json").exists()  # the outcome came back through the file
        _, job = job_of(where, site)
        assert job["JobState"] == "COMPLETED"
        (run,) = list(lp.offline_runs.find({"fw_id": d["fw_id"]}))
        assert run["completed"] is True
