"""Parent calculations shared by the MPI ranks of one worker.

A worker started as N ranks (``mpiexec -n N nft-fw worker …``, ``srun nft-fw worker …``)
is still one FireWorks client: rank 0 checks out Fireworks, talks to the database and
trains; ranks 1…N−1 only take part in parent calculations that run in parallel (GPAW
built with MPI). Before each such calculation rank 0 broadcasts the structure, the
parent's settings and the retry overrides as JSON; every rank builds the same calculator
and runs it, so the calculator's own collective operations (GPAW's domain and band
decomposition) span all ranks. Rank 0 alone keeps the result and the log. When the worker
stops, rank 0 broadcasts a stop and every rank exits.

The communicator is GPAW's ``gpaw.mpi.world`` (its C extension's MPI, or mpi4py with
``GPAW_MPI_BACKEND=mpi4py``); only its ``rank``, ``size`` and ``broadcast`` of numpy arrays
are used. Messages are JSON, never pickles.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any, Protocol

import numpy as np
from ase import Atoms

from nft_fw.structures import atoms_io

log = logging.getLogger(__name__)

STOP = "stop"
SINGLE_POINT = "single_point"


class Communicator(Protocol):
    rank: int
    size: int

    def broadcast(self, buf: np.ndarray, root: int) -> None: ...


def launched_ranks() -> int:
    """How many MPI ranks this process was started as, from the launcher's environment
    (Open MPI, MPICH/Hydra and PMI-based launchers, SLURM's srun); 1 when not under one."""
    for key in ("OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "MPI_LOCALNRANKS"):
        if os.environ.get(key, "").isdigit():
            return int(os.environ[key])
    if os.environ.get("SLURM_STEP_ID") and os.environ.get("SLURM_STEP_NUM_TASKS", "").isdigit():
        return int(os.environ["SLURM_STEP_NUM_TASKS"])
    return 1


class MPIUnavailable(RuntimeError):
    """Started as several ranks, but no MPI communicator spans them."""


def gpaw_world(expected: int) -> Any:
    """GPAW's world communicator, checked to span the ``expected`` ranks."""
    try:
        from gpaw.mpi import world
    except RuntimeError as err:  # GPAW refuses a serial build under an MPI launcher
        raise MPIUnavailable(_no_mpi(expected, str(err).strip().splitlines()[0])) from err
    except ImportError as err:
        raise MPIUnavailable(_no_mpi(expected, f"GPAW is not importable: {err}")) from err
    if world.size != expected:
        raise MPIUnavailable(
            _no_mpi(expected, f"GPAW's communicator has {world.size} rank(s), not {expected}")
        )
    return world


def _no_mpi(ranks: int, why: str) -> str:
    return (
        f"nft-fw worker was started as {ranks} MPI ranks, but {why}. Either build GPAW "
        "with MPI (siteconfig: mpi = True, compiler = 'mpicc') and start the worker with "
        "`mpiexec -n N gpaw python -m nft_fw worker …` (or GPAW_MPI_BACKEND=cgpaw), or "
        "start one worker without mpiexec/srun: GPAW then runs on one core per label"
    )


def c_extension_has_mpi() -> bool:
    """Whether GPAW's C extension was built with MPI (domain decomposition needs it)."""
    try:
        from gpaw import cgpaw
    except ImportError:
        return False
    return bool(getattr(cgpaw, "have_mpi", False))


def _broadcast_json(comm: Communicator, message: dict[str, Any] | None) -> dict[str, Any]:
    if comm.rank == 0:
        data = json.dumps(message).encode()
        size = np.array([len(data)], dtype=np.int64)
    else:
        size = np.zeros(1, dtype=np.int64)
    comm.broadcast(size, 0)
    buf = (
        np.frombuffer(data, dtype=np.uint8).copy()
        if comm.rank == 0
        else np.empty(int(size[0]), dtype=np.uint8)
    )
    comm.broadcast(buf, 0)
    return dict(json.loads(buf.tobytes().decode()))


class Coordinator:
    """Rank 0's side: announces each collective calculation, then the stop."""

    def __init__(self, comm: Communicator) -> None:
        if comm.rank != 0:
            raise ValueError(f"the coordinator runs on rank 0, not rank {comm.rank}")
        self.comm = comm
        self.announced = 0

    @property
    def size(self) -> int:
        return int(self.comm.size)

    def single_point(
        self,
        parent: dict[str, Any],
        atoms: Atoms,
        overrides: dict[str, Any],
        log_path: str | None,
        attempt: int,
    ) -> None:
        _broadcast_json(
            self.comm,
            {
                "op": SINGLE_POINT,
                "parent": parent,
                "atoms": atoms_io.to_doc(atoms),
                "overrides": overrides,
                "log_path": log_path,
                "attempt": attempt,
            },
        )
        self.announced += 1

    def stop(self) -> None:
        _broadcast_json(self.comm, {"op": STOP})


_COORDINATOR: Coordinator | None = None


def serial_ase() -> None:
    """Make ASE's own MPI awareness serial in this process. With GPAW imported, ASE's I/O
    (``ase.io.read``/``write``, trajectories, optimizer logs) reads on rank 0 and broadcasts
    to all ranks of GPAW's world; here only rank 0 does I/O, so such a broadcast would land
    in the other ranks' wait for the next calculation. GPAW's calculations use their own
    communicator and stay parallel."""
    import ase.parallel

    ase.parallel.world.comm = ase.parallel.DummyMPI()


def coordinator() -> Coordinator | None:
    """The coordinator of this process (rank 0 of a multi-rank worker), else None."""
    return _COORDINATOR


@contextmanager
def coordinating(comm: Communicator) -> Iterator[Coordinator]:
    """On rank 0: make collective parents announce their calculations while the block runs,
    and release the other ranks when it ends (also on an error)."""
    global _COORDINATOR
    serial_ase()
    _COORDINATOR = Coordinator(comm)
    try:
        yield _COORDINATOR
    finally:
        coord, _COORDINATOR = _COORDINATOR, None
        coord.stop()


class _Runner(Protocol):
    def run_attempt(
        self, atoms: Atoms, overrides: Mapping[str, Any], log_path: str | None, attempt: int
    ) -> Any: ...


def serve(comm: Communicator, get_parent: Callable[[str, dict[str, Any]], _Runner]) -> int:
    """Ranks ≥ 1: run every announced calculation with rank 0 until the stop; returns how
    many were run. ``get_parent(name, params)`` builds the parent an announcement names
    (:func:`nft_fw.parents.parent.get_parent`: this module sits below the parents, which announce
    through it). A calculation that fails here fails on rank 0 too (the calculator's
    collective operations fail together); rank 0 records it, this rank waits for the next."""
    serial_ase()
    served = 0
    while True:
        msg = _broadcast_json(comm, None)
        if msg["op"] == STOP:
            log.info("rank %d: stop after %d parent calculations", comm.rank, served)
            return served
        parent = get_parent(msg["parent"]["name"], msg["parent"]["params"])
        atoms = atoms_io.from_doc(msg["atoms"])
        log_path = msg["log_path"]
        try:
            parent.run_attempt(
                atoms, msg["overrides"], None if log_path is None else log_path, msg["attempt"]
            )
        except Exception as err:  # rank 0 records the failure with its message
            log.info("rank %d: attempt %d failed: %s", comm.rank, msg["attempt"], err)
        served += 1
