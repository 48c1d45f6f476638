"""`nft-fw worker` with the test-only parents registered: python tests/support/worker.py ARGS."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import flaky_parent  # noqa: F401  (registers flaky-emt)
import mpi_parent  # noqa: F401  (registers mpi-emt)
import slow_parent  # noqa: F401  (registers slow-emt)

from nft_fw.cli import main

if __name__ == "__main__":
    sys.exit(main(["worker", *sys.argv[1:]]))
