"""What the command groups share: the consoles, usage errors and exit codes, logging, the
connection options and connections (read-only ones stop a server they started), tables that
fit the terminal, loading a campaign file, and the examples under each command's --help."""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import sys
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from nft_fw.labels.phase import Phase

logger = logging.getLogger("nft_fw.cli")
# Piped output (logs, CI) is 120 columns wide unless $COLUMNS says otherwise; tables leave
# out the columns that do not fit (_fitted), so no cell is ever cut.
PIPED_WIDTH = int(os.environ.get("COLUMNS") or 120)
console = Console(width=None if sys.stdout.isatty() else PIPED_WIDTH)
err_console = Console(stderr=True, width=None if sys.stderr.isatty() else PIPED_WIDTH)

EXIT_OK, EXIT_FAILURE, EXIT_USAGE = 0, 1, 2


class UsageError(Exception):
    """Bad input from the user: reported without a traceback, exit code 2."""


def _setup_logging(verbosity: int) -> None:
    level = max(logging.WARNING - 10 * verbosity, logging.DEBUG)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    # The handler filters too: FireWorks' loggers are DEBUG-level and propagate.
    handler.setLevel(level)
    logging.basicConfig(level=level, handlers=[handler])


# JAX's persistent compilation cache: a worker process compiles the trainer, the predictor
# and the force functions at its first launch (seconds each on a CPU); with the cache on disk
# every later worker process of the same settings loads them instead (docs/service.md).
JAX_CACHE_ENV = "NFT_FW_JAX_CACHE"
JAX_CACHE_MAX_BYTES = 2 * 1024**3  # least recently used entries go beyond this


def default_jax_cache() -> Path:
    """``$XDG_CACHE_HOME/nft-fw/jax`` (``~/.cache/nft-fw/jax``)."""
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "nft-fw" / "jax"


def enable_jax_cache() -> Path | None:
    """Turn on JAX's persistent compilation cache for this process and the workers it
    starts: ``$NFT_FW_JAX_CACHE`` (a directory, or ``off``), else JAX's own
    ``$JAX_COMPILATION_CACHE_DIR``, else :func:`default_jax_cache`. Every compiled program is
    kept (no minimum compile time), at most :data:`JAX_CACHE_MAX_BYTES`, least recently used
    out first; processes share it under a file lock. Only entry points call this (no global
    JAX configuration in library code). Returns the directory, or None when off."""
    setting = os.environ.get(JAX_CACHE_ENV, "")
    if setting.lower() in ("off", "0", "no", "false"):
        return None
    path = Path(setting or os.environ.get("JAX_COMPILATION_CACHE_DIR") or default_jax_cache())
    path = path.expanduser()
    # the cache holds executable code: only its owner may write it (JAX's documentation)
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    import jax

    jax.config.update("jax_compilation_cache_dir", str(path))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
    jax.config.update("jax_compilation_cache_max_size", JAX_CACHE_MAX_BYTES)
    os.environ[JAX_CACHE_ENV] = str(path)  # the worker processes this one starts
    return path


def _fw_stream_level(args: argparse.Namespace, default: str = "WARNING") -> str:
    """FireWorks prints its own log lines to stdout; -v raises them to INFO, -vv DEBUG."""
    return {0: default, 1: "INFO"}.get(getattr(args, "verbose", 0), "DEBUG")


def _add_connection_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("database connection (default: the embedded server)")
    group.add_argument("--uri", help="MongoDB connection string (or set $NFT_FW_MONGODB_URI)")
    group.add_argument(
        "--launchpad",
        "-l",
        metavar="FILE",
        help="a FireWorks my_launchpad.yaml (or set $NFT_FW_LAUNCHPAD_FILE)",
    )
    group.add_argument(
        "--data-dir", metavar="DIR", help="embedded server data directory (default ~/.nft-fw)"
    )
    group.add_argument("--db-name", metavar="NAME", help="database name (default nft_fw)")


def _open(
    args: argparse.Namespace, start_embedded: bool = True, fw_log_default: str = "WARNING"
) -> Any:
    from nft_fw.launchpad.connection import open_connection

    return open_connection(
        uri=args.uri,
        launchpad_file=args.launchpad,
        data_dir=args.data_dir,
        db_name=args.db_name,
        start_embedded=start_embedded,
        fw_log_level=_fw_stream_level(args, default=fw_log_default),
    )


@contextlib.contextmanager
def _reading(args: argparse.Namespace) -> Iterator[Any]:
    """A connection for a read-only command: an embedded server it had to start for the
    query is stopped again when the command ends (never left running unasked)."""
    conn = _open(args)
    try:
        yield conn
    finally:
        if conn.started_server:
            err_console.print(
                f"[dim]started the embedded server of {conn.server.data_dir} for this query; "
                "stopped it again (nft-fw db start keeps one running)[/dim]"
            )
        conn.close(stop_server=conn.started_server)


def _fitted(
    title: str,
    columns: Sequence[str],
    rows: Sequence[Sequence[str]],
    optional: Sequence[str],
    wide: bool,
) -> tuple[Table, int | None]:
    """A table whose columns fit the terminal: the ``optional`` columns (least wanted
    first) are left out until the rest fits the console's width, and the caption names them
    (``--wide`` shows every column, at the width they need). Returns the table and the
    width to print it at (None: the console's)."""
    natural = {
        c: max([max(len(w) for w in c.split()), *(len(r[i]) for r in rows)])
        for i, c in enumerate(columns)
    }

    def width(cols: Sequence[str]) -> int:
        return sum(natural[c] + 3 for c in cols) + 1

    shown = list(columns)
    dropped: list[str] = []
    if not wide:
        for c in optional:
            if width(shown) <= console.width:
                break
            shown.remove(c)
            dropped.append(c)
    caption = f"not shown (--wide shows them): {', '.join(dropped)}" if dropped else None
    table = Table(title=title, caption=caption)
    for c in shown:
        table.add_column(c, justify="right", width=natural[c])
    keep = [columns.index(c) for c in shown]
    for r in rows:
        table.add_row(*(r[i] for i in keep))
    return table, (max(width(shown), console.width) if wide else None)


def _print_tables(tables: Sequence[tuple[Table, int | None]]) -> None:
    """Print tables; one with a width of its own (``--wide``) gets a console that wide (a
    console never prints wider than itself)."""
    for table, at in tables:
        out = console if at is None else Console(width=at, file=console.file)
        out.print(table)


def _load(path: str) -> Any:
    """Validate and prepare a campaign file of any kind (NFT, or ``kind: nearsightedness``);
    bad input becomes a UsageError (exit 2)."""
    from nft_fw.spec.campaign import CampaignError, load_any_campaign, prepare_any

    try:
        return prepare_any(load_any_campaign(path))
    except CampaignError as err:
        raise UsageError(str(err)) from err


@contextlib.contextmanager
def _campaign_errors() -> Iterator[None]:
    """A missing campaign (KeyError with the message) as a usage error."""
    try:
        yield
    except KeyError as err:
        raise UsageError(err.args[0]) from err


def _with_campaign(args: argparse.Namespace, fn: Callable[[Any], Any]) -> Any:
    from nft_fw.potential.model import ModelFormatError

    with _reading(args) as conn:
        try:
            return fn(conn.launchpad.db)
        except KeyError as err:
            raise UsageError(err.args[0]) from err
        except ModelFormatError as err:  # a campaign trained by an older nft-fw
            raise UsageError(f"{getattr(args, 'name', 'campaign')}: {err}") from err


PHASES = (Phase.NFT, Phase.RELAX, Phase.MD, Phase.TRANSFER)


# columns a narrow terminal leaves out first (--wide shows every column)
HISTORY_OPTIONAL = (
    "OOS ≤ sδ", "OOS ≤ δ", "δ scale", "OOS max (eV/Å)", "loss", "true max (eV/Å)", "new",
    "train (s)",
)  # fmt: skip
RELAX_OPTIONAL = (
    "parent fmax at end (eV/Å)", "δ scale", "converged", "OOS MAE (eV/Å)", "new",
    "true MAE start/end (eV/Å)",
)  # fmt: skip
MD_OPTIONAL = (
    "ms/step", "δ scale", "true max (eV/Å)", "OOS MAE (eV/Å)", "δ at start (eV/Å)", "time (ps)",
)  # fmt: skip
TRANSFER_OPTIONAL = (
    "relax (s)", "× trained at end", "flagged at end", "true MAE start/end (eV/Å)", "steps",
)  # fmt: skip


def _phase_tables(
    name: str, history: list[dict[str, Any]], wide: bool = False
) -> list[tuple[Table, int | None]]:
    from nft_fw.report import md_plots, plots, relax_plots

    tables = []
    for phase, title, columns, rows, optional in (
        (Phase.NFT, "NFT iterations", plots.HISTORY_COLUMNS, plots.history_table, HISTORY_OPTIONAL),
        (Phase.RELAX, "relax", relax_plots.RELAX_COLUMNS, relax_plots.relax_table, RELAX_OPTIONAL),
        (Phase.MD, "MD segments", md_plots.MD_COLUMNS, md_plots.md_table, MD_OPTIONAL),
        (
            Phase.TRANSFER, "transfer", relax_plots.TRANSFER_COLUMNS, relax_plots.transfer_table,
            TRANSFER_OPTIONAL,
        ),
    ):  # fmt: skip
        selected = [r for r in history if r["phase"] == phase]
        if selected:
            tables.append(_fitted(f"{name}: {title}", columns, rows(selected), optional, wide))
    return tables


# ---------------------------------------------------------------- parser


# Shown under each command's --help (tests parse every line with this parser).
EXAMPLES: dict[str, list[tuple[str, str]]] = {
    "db start": [
        ("nft-fw db start", "embedded server in ~/.nft-fw, this machine only"),
        ("nft-fw db start --data-dir /scratch/nft --host 0.0.0.0 --auth --tls",
         "for workers on other machines: login ($NFT_FW_DB_PASSWORD or asked) and TLS"),
    ],
    "db stop": [("nft-fw db stop", "stop the server of ~/.nft-fw")],
    "db status": [("nft-fw db status --json", "running? answering? where?")],
    "db migrate": [
        ("nft-fw db migrate --dry-run", "which campaigns an older nft-fw stored"),
        ("nft-fw db migrate --data-dir run/db", "bring them to this nft-fw's schema"),
    ],
    "worker": [
        ("nft-fw worker", "run anything ready on the default database, keep polling"),
        ("nft-fw worker --category dft --idle-timeout 600",
         "only DFT labels; stop after 10 idle minutes"),
        ("nft-fw worker --until-done",
         "a batch job: stop once nothing is ready, reserved or running any more"),
        ("nft-fw worker --launchpad my_launchpad.yaml --work-dir /scratch/w1",
         "a worker on another machine"),
    ],
    "validate": [("nft-fw validate nft_fw/examples/pt260-emt.yaml", "check, write nothing")],
    "submit": [
        ("nft-fw submit nft_fw/examples/pt260-emt.yaml", "add it to the default database"),
        ("nft-fw submit campaign.yaml --launchpad my_launchpad.yaml", "to a shared MongoDB"),
    ],
    "run": [
        ("nft-fw run nft_fw/examples/pt260-emt.yaml --workers 2",
         "submit and run to the end with two local workers"),
    ],
    "recover": [
        ("nft-fw recover --dry-run", "list what would be re-queued or repaired"),
        ("nft-fw recover pt260-emt --lost-after 600",
         "re-queue its runs silent for 10 minutes"),
    ],
    "amend": [
        ("nft-fw amend pt140-gpaw --set relax.max_rounds=20", "more relax rounds than submitted"),
        ("nft-fw amend pt140-gpaw --set relax.resume=frontier --set relax.search_until=0.5",
         "later relax rounds resume from where δ first exceeded 0.5 eV/Å"),
    ],
    "serve": [
        ("nft-fw serve", "the live page of every campaign at http://127.0.0.1:8750/"),
        ("nft-fw serve --host 0.0.0.0 --password-env NFT_FW_PAGE",
         "beyond this machine, with HTTP basic auth (the password in $NFT_FW_PAGE)"),
    ],
    "status": [
        ("nft-fw status", "every campaign"),
        ("nft-fw status pt260-emt --json", "one campaign, machine-readable"),
    ],
    "history": [
        ("nft-fw history pt260-emt", "NFT iterations: δ, chunks, errors, calibration"),
        ("nft-fw history pt260-relax --phase all", "with relaxation rounds and transfers"),
        ("nft-fw history pt140-gpaw --against check-labels.extxyz",
         "every stored model's force error on whole-structure parent labels"),
    ],
    "labels": [
        ("nft-fw labels pt260-emt", "every parent single point and its cost"),
        ("nft-fw labels pt260-emt --export pt260-labels.extxyz", "all of them as a data set"),
    ],
    "lammps": [
        ("nft-fw lammps nft_fw/examples/lammps/in.pt-nvt --model model/ --elements Pt "
         "--structure particle.xyz --var temp 600",
         "NVT in LAMMPS with the model, δ in the dump, halted when δ exceeds 1 eV/Å"),
    ],
    "export": [("nft-fw export pt260-emt -o model/", "the kept model, for EnsembleCalculator")],
    "report": [("nft-fw report pt260-emt -o report/", "figures and summary")],
    "nearsightedness": [
        ("nft-fw nearsightedness nft_fw/examples/pt260-emt.yaml --radii 4,6,8,10 "
         "--n-centres 4", "how far the parent's force reaches, in this process"),
    ],
    "demo": [
        ("nft-fw demo", "the Pt260/EMT campaign with two local workers"),
        ("nft-fw demo --data-dir /tmp/nft-demo --workers 1", "elsewhere, one worker"),
    ],
}  # fmt: skip


def _examples(command: str) -> dict[str, Any]:
    lines = EXAMPLES.get(command)
    if not lines:
        return {}
    text = "\n".join(f"  # {why}\n  {cmd}" for cmd, why in lines)
    return {"epilog": "examples:\n" + text, "formatter_class": argparse.RawDescriptionHelpFormatter}
