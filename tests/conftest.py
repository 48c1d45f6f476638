"""Shared fixtures: one real SecantusDB server per test session (no mocks of the database)."""

from __future__ import annotations

import functools
import os
import re
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

# make check runs the tier that needs neither the database server nor GPAW
# (-m "not integration and not gpaw"); in it, a test that starts the server or a GPAW
# calculation anyway fails, naming the marker it lacks, so the tiers stay honest.
FAST_TIER = os.environ.get("NFT_FW_TEST_TIER") == "fast"


def pytest_configure(config: pytest.Config) -> None:
    """One JAX compilation cache for the whole run and the next: this process, its xdist
    workers and every worker or CLI process a test starts load what another already compiled
    (the variable is inherited; nft-fw's commands read it). It lives in .jax-cache/ (git
    ignores it; a clean clone starts without); a developer's own NFT_FW_JAX_CACHE is kept."""
    os.environ.setdefault(
        "NFT_FW_JAX_CACHE", str(Path(__file__).resolve().parent.parent / ".jax-cache")
    )
    from nft_fw.cli.common import enable_jax_cache

    enable_jax_cache()


SHARED_FIXTURE = re.compile(r"""@pytest\.fixture\(\s*scope\s*=\s*["'](module|package|class)["']""")


@functools.cache
def _shares_fixtures(path: str) -> bool:
    """Whether the test file defines a fixture computed once for several of its tests."""
    file = Path(__file__).resolve().parent.parent / path
    return file.is_file() and SHARED_FIXTURE.search(file.read_text()) is not None


@pytest.hookimpl(optionalhook=True)  # a hook of pytest-xdist, absent without it
def pytest_xdist_make_scheduler(config: pytest.Config, log: Any) -> Any:
    """Under pytest-xdist (make test: -n 3): the tests of a file that defines a module-scoped
    fixture (a campaign run once for its tests) go to one process together; every other
    test goes on its own to whichever process is free. (xdist 3.8's --dist loadgroup
    cannot group on pytest 9: it renames items through an attribute pytest 9 no longer
    reads.)"""
    from xdist.scheduler import LoadScopeScheduling

    class ByFile(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            path = nodeid.split("::", 1)[0]
            return path if _shares_fixtures(path) else nodeid

    return ByFile(config, log)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        names = getattr(item, "fixturenames", ())
        if "db_server" in names:
            item.add_marker(pytest.mark.integration)
        if "slurm_cluster" in names:
            item.add_marker(pytest.mark.slurm)


@pytest.fixture(autouse=True)
def _tier_guard(monkeypatch: pytest.MonkeyPatch) -> None:
    if not FAST_TIER:
        return

    def refuse(what: str, marker: str) -> object:
        def call(*args: object, **kwargs: object) -> None:
            raise RuntimeError(f"this test {what}: mark it {marker} (make test runs it)")

        return call

    from nft_fw.launchpad import server

    monkeypatch.setattr(server, "start", refuse("starts the database server", "integration"))
    import gpaw

    monkeypatch.setattr(gpaw, "GPAW", refuse("runs GPAW", "gpaw"))


@pytest.fixture(scope="session")
def db_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[object]:
    """A real MongoDB-wire server on a free loopback port with a temporary data directory."""
    from nft_fw.launchpad import server

    data_dir = tmp_path_factory.mktemp("secantus")
    info, started = server.start(data_dir)
    assert started
    yield info
    server.stop(data_dir)


@pytest.fixture
def connection(db_server: object, tmp_path: Path) -> Iterator[object]:
    """A LaunchPad on its own fresh database of the session server, plus its my_launchpad.yaml."""
    from nft_fw.launchpad.connection import embedded

    conn = embedded(db_server.data_dir, db_name=f"t_{uuid.uuid4().hex[:12]}", start=False)  # type: ignore[attr-defined]
    conn.launchpad.reset("", require_password=False)
    conn.lp_file = conn.write_launchpad_file(tmp_path / "my_launchpad.yaml")  # type: ignore[attr-defined]
    yield conn
    conn.launchpad.connection.drop_database(conn.db_name)
    conn.close(stop_server=False)


@pytest.fixture
def venv_bin() -> Path:
    """The directory holding this interpreter's console scripts (rlaunch, nft-fw)."""
    import sys

    return Path(sys.executable).parent


@pytest.fixture(autouse=True)
def _no_ambient_uri(monkeypatch: pytest.MonkeyPatch) -> None:
    # A developer's own database must never be touched by the test suite.
    monkeypatch.delenv("NFT_FW_MONGODB_URI", raising=False)
    os.environ.setdefault("JAX_PLATFORMS", "cpu")
    # the commands a test starts print to a wide console: a message naming a path or an
    # address is then one line whatever the temporary path or the port (a test of the
    # terminal's width sets COLUMNS itself)
    monkeypatch.setenv("COLUMNS", "400")


@pytest.fixture
def slurm_cluster() -> Iterator[Any]:
    """A factory of real one-node SLURM clusters (tests/support/slurm.py): each call starts
    munge, slurmctld and slurmd for a new cluster in a short folder under /tmp; all are
    stopped (and their folders removed) after the test, and the test fails if one of them had
    to be killed or is still running.

    Not under ``tmp_path``: slurmstepd and munged make Unix sockets in the spool and munge
    folders, and a socket path may not exceed 108 bytes — pytest's folder for a long test name
    under ``/tmp/pytest-of-root/pytest-NNN/`` reaches 109 with slurmd's socket name, and the
    job then dies before it starts."""
    import tempfile

    import slurm

    reason = slurm.missing()
    if reason is not None:
        pytest.fail(f"no SLURM here: {reason}")
    started: list[Any] = []
    roots: list[Path] = []
    counter = iter(range(1, 200))

    def start(name: str, **kwargs: Any) -> Any:
        if kwargs.get("netns"):
            kwargs.setdefault("subnet", (os.getpid() + next(counter)) % 250)
        root = Path(tempfile.mkdtemp(prefix=f"slurm-{name}-", dir="/tmp"))
        roots.append(root)
        cluster = slurm.Cluster(root, name, **kwargs).start()
        started.append(cluster)
        return cluster

    yield start
    pids = [pid for c in started for pid in c.pids().values()]
    try:
        killed = [f"{c.name}: {name}" for c in started for name in c.stop()]
        assert not killed, f"daemons that ignored SIGTERM: {killed}"
        alive = [pid for pid in pids if slurm._alive(pid)]
        assert not alive, f"SLURM daemons still running after the test: {alive}"
    finally:
        for root in roots:
            shutil.rmtree(root, ignore_errors=True)
