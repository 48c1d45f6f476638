"""One-node SLURM clusters for the tests: Debian's slurm-wlm and munge, started as root in a
temporary folder, stopped afterwards.

Each :class:`Cluster` has its own munge daemon and key, controller, node daemon, ports,
state and spool folders and partition, so two of them on one machine are as independent as
two sites. With ``netns``, the node daemon (and so every job it starts) runs in a network
namespace joined to the controller by a veth pair and nothing else: a compute node with no
route to the database, which listens on the host's loopback.

``make cluster-check`` installs the packages (scripts/cluster-check.sh); :func:`missing`
says what is absent, so a test tier that needs a cluster fails naming the fix.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

DAEMONS = ("munged", "slurmctld", "slurmd")
CLIENTS = ("sbatch", "squeue", "scancel", "scontrol", "sinfo")


def missing() -> str | None:
    """Why no cluster can start here (None: one can)."""
    absent = [
        p
        for p in (*DAEMONS, *CLIENTS)
        if shutil.which(p) is None and not Path(f"/usr/sbin/{p}").exists()
    ]
    if absent:
        return f"{', '.join(absent)} not installed: make cluster-check installs slurm-wlm and munge"
    if os.geteuid() != 0:
        return "a test cluster's slurmd must run as root (it starts jobs as their user)"
    return None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _bin(name: str) -> str:
    return shutil.which(name) or f"/usr/sbin/{name}"


@dataclass
class Cluster:
    """A one-node SLURM cluster under ``root`` named ``name`` with one partition."""

    root: Path
    name: str
    partition: str = "cpu"
    cpus: int = 2
    memory_mb: int = 16000
    netns: str | None = None  # run slurmd (and the jobs) in this new network namespace
    subnet: int = 0  # 10.231.<subnet>.1/.2 for the veth pair of a netns cluster
    ctld_port: int = field(default_factory=free_port)
    slurmd_port: int = field(default_factory=free_port)
    _pids: dict[str, int] = field(default_factory=dict)

    # ---------------------------------------------------------------- files and env

    @property
    def conf(self) -> Path:
        return self.root / "slurm.conf"

    @property
    def node(self) -> str:
        return f"{self.name}-node"

    @property
    def env(self) -> dict[str, str]:
        """The environment of a client of this cluster (login node): sbatch & co. read it."""
        return {**os.environ, "SLURM_CONF": str(self.conf)}

    def _write(self) -> None:
        for sub in ("munge", "state", "spool", "log", "run"):
            (self.root / sub).mkdir(parents=True, exist_ok=True)
        (self.root / "munge").chmod(0o700)
        key = self.root / "munge" / "munge.key"
        key.write_bytes(os.urandom(1024))
        key.chmod(0o600)
        ctld_addr = f"10.231.{self.subnet}.1" if self.netns else "127.0.0.1"
        node_addr = f"10.231.{self.subnet}.2" if self.netns else "127.0.0.1"
        r = self.root
        self.conf.write_text(
            f"""\
ClusterName={self.name}
SlurmctldHost={socket.gethostname()}({ctld_addr})
SlurmctldPort={self.ctld_port}
SlurmdPort={self.slurmd_port}
AuthType=auth/munge
AuthInfo=socket={r}/munge/munge.sock
CredType=cred/munge
SlurmUser=root
SlurmdUser=root
StateSaveLocation={r}/state
SlurmdSpoolDir={r}/spool
SlurmctldPidFile={r}/run/slurmctld.pid
SlurmdPidFile={r}/run/slurmd.pid
SlurmctldLogFile={r}/log/slurmctld.log
SlurmdLogFile={r}/log/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
SchedulerType=sched/backfill
MpiDefault=none
ReturnToService=2
SlurmctldTimeout=30
SlurmdTimeout=30
InactiveLimit=0
KillWait=5
MinJobAge=3600
MessageTimeout=10
JobAcctGatherType=jobacct_gather/none
SlurmdParameters=config_overrides
AccountingStorageType=accounting_storage/none
NodeName={self.node} NodeHostname={socket.gethostname()} NodeAddr={node_addr} CPUs={self.cpus} RealMemory={self.memory_mb} State=UNKNOWN
PartitionName={self.partition} Nodes={self.node} Default=YES MaxTime=INFINITE State=UP
"""
        )

    # ---------------------------------------------------------------- life cycle

    def _netns_up(self) -> None:
        ns, host, peer = self.netns, f"nfh{self.subnet}", f"nfp{self.subnet}"
        assert ns is not None
        # left by a run that was killed before it could clean up
        subprocess.run(["ip", "link", "del", host], capture_output=True)
        subprocess.run(["ip", "netns", "del", ns], capture_output=True)
        cmds = [
            ["ip", "netns", "add", ns],
            ["ip", "link", "add", host, "type", "veth", "peer", "name", peer],
            ["ip", "link", "set", peer, "netns", ns],
            ["ip", "addr", "add", f"10.231.{self.subnet}.1/30", "dev", host],
            ["ip", "link", "set", host, "up"],
            ["ip", "netns", "exec", ns, "ip", "addr", "add", f"10.231.{self.subnet}.2/30",
             "dev", peer],
            ["ip", "netns", "exec", ns, "ip", "link", "set", peer, "up"],
            ["ip", "netns", "exec", ns, "ip", "link", "set", "lo", "up"],
        ]  # fmt: skip
        for cmd in cmds:
            subprocess.run(cmd, check=True, capture_output=True, text=True)

    def start(self, timeout: float = 30.0) -> Cluster:
        try:
            return self._start(timeout)
        except BaseException:
            self.stop()
            raise

    def _start(self, timeout: float) -> Cluster:
        self._write()
        r = self.root
        subprocess.run(
            [_bin("munged"), f"--key-file={r}/munge/munge.key", f"--socket={r}/munge/munge.sock",
             f"--pid-file={r}/munge/munged.pid", f"--log-file={r}/munge/munged.log",
             f"--seed-file={r}/munge/seed", "--force"],
            check=True, capture_output=True, text=True,
        )  # fmt: skip
        self._pids["munged"] = int((r / "munge" / "munged.pid").read_text())
        # -i: ignore state left by an earlier controller (there is none: a new folder)
        subprocess.run([_bin("slurmctld"), "-f", str(self.conf), "-i"], check=True, env=self.env)
        self._pids["slurmctld"] = self._pid_file(r / "run" / "slurmctld.pid")
        slurmd = [_bin("slurmd"), "-f", str(self.conf), "-N", self.node]
        if self.netns:
            self._netns_up()
            # nsenter, not ip netns exec: that remounts /sys, hiding the cgroup file system
            # slurmd reads at start
            slurmd = ["nsenter", f"--net=/run/netns/{self.netns}", *slurmd]
        subprocess.run(slurmd, check=True, env=self.env)
        self._pids["slurmd"] = self._pid_file(r / "run" / "slurmd.pid")
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if self.node_state() == "idle":
                return self
            time.sleep(0.2)
        raise RuntimeError(f"cluster {self.name}: node not idle after {timeout:g} s\n{self.logs()}")

    @staticmethod
    def _pid_file(path: Path, timeout: float = 10.0) -> int:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if path.exists() and path.read_text().strip():
                return int(path.read_text())
            time.sleep(0.05)
        raise RuntimeError(f"{path} was not written")

    def stop(self) -> list[str]:
        """Stop every daemon (node, controller, munge) and the namespace; returns the names of
        daemons that had to be killed."""
        killed = []
        for name in ("slurmd", "slurmctld", "munged"):
            pid = self._pids.pop(name, None)
            if pid is None:
                continue
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                continue
            end = time.monotonic() + 15
            while time.monotonic() < end and _alive(pid):
                time.sleep(0.1)
            if _alive(pid):
                os.kill(pid, signal.SIGKILL)
                killed.append(name)
        if self.netns:
            subprocess.run(["ip", "link", "del", f"nfh{self.subnet}"], capture_output=True)
            subprocess.run(["ip", "netns", "del", self.netns], capture_output=True)
        return killed

    def pids(self) -> dict[str, int]:
        return dict(self._pids)

    # ---------------------------------------------------------------- clients

    def run(self, *cmd: str, check: bool = True) -> str:
        out = subprocess.run(
            list(cmd), env=self.env, capture_output=True, text=True, timeout=60, check=False
        )
        if check and out.returncode != 0:
            raise RuntimeError(f"{cmd}: {out.returncode}\n{out.stdout}\n{out.stderr}")
        return out.stdout

    def node_state(self) -> str:
        out = self.run("sinfo", "-h", "-n", self.node, "-o", "%T", check=False)
        return out.strip().rstrip("*")

    def jobs(self) -> dict[int, dict[str, str]]:
        """Every job the controller knows (MinJobAge keeps finished ones for an hour):
        id → scontrol's fields (JobState, Reason, WorkDir, StdOut, ...)."""
        out = self.run("scontrol", "show", "job", "-o", check=False)
        jobs = {}
        for line in out.splitlines():
            if not line.startswith("JobId="):
                continue
            fields = dict(p.split("=", 1) for p in line.split() if "=" in p)
            jobs[int(fields["JobId"])] = fields
        return jobs

    def logs(self) -> str:
        parts = []
        for f in sorted((self.root / "log").glob("*.log")):
            parts.append(f"--- {f.name}\n" + "\n".join(f.read_text().splitlines()[-20:]))
        return "\n".join(parts)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie child of this process counts as gone
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split()[2] != "Z"
    except FileNotFoundError:
        return False
