"""The ``nft-fw`` command line: the one place that ties the science core, FireWorks and the database together.

Every command that touches the database takes the same connection options:
``--uri U`` (or ``$NFT_FW_MONGODB_URI``), ``--launchpad my_launchpad.yaml``, or
by default the embedded server on ``--data-dir`` (``~/.nft-fw``).
Exit codes: 0 success, 1 runtime failure, 2 bad input or usage.

The commands live by group (``db``, ``workers``, ``campaigns``, ``queries``), each module
registering its own subparsers; ``common`` holds what they share.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from typing import Any

from nft_fw.cli import campaigns, db, queries, serve, workers
from nft_fw.cli.campaigns import demo_next_steps, run_campaign
from nft_fw.cli.common import (
    EXAMPLES,
    EXIT_FAILURE,
    EXIT_USAGE,
    UsageError,
    _examples,
    _setup_logging,
    enable_jax_cache,
    err_console,
)

__all__ = ["EXAMPLES", "UsageError", "build_parser", "demo_next_steps", "main", "run_campaign"]


def build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "-v", "--verbose", action="count", default=0, help="more log output (-v info, -vv debug)"
    )
    parser = argparse.ArgumentParser(
        prog="nft-fw", description="Nearsighted force training on FireWorks."
    )
    sub = parser.add_subparsers(dest="command", required=True)
    _add_parser = sub.add_parser

    def add(name: str, **kwargs: Any) -> argparse.ArgumentParser:
        return _add_parser(name, parents=[common], **_examples(name), **kwargs)

    sub.add_parser = add  # type: ignore[method-assign]

    db.register(sub, _add_parser, common)
    workers.register(sub)
    campaigns.register(sub)
    queries.register(sub)
    serve.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    _setup_logging(args.verbose)
    if getattr(args, "compiles", False):
        enable_jax_cache()
    func: Callable[[argparse.Namespace], int] = args.func
    from nft_fw.launchpad.connection import DatabaseConnectionError, redact
    from nft_fw.launchpad.server import ServerError

    try:
        return func(args)
    except UsageError as err:
        err_console.print(f"[red]error:[/red] {redact(str(err))}")
        return EXIT_USAGE
    except (DatabaseConnectionError, ServerError) as err:
        err_console.print(f"[red]error:[/red] {redact(str(err))}")
        return EXIT_FAILURE
    except KeyboardInterrupt:
        err_console.print("interrupted")
        return 130


if __name__ == "__main__":
    sys.exit(main())
