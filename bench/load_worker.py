"""`nft-fw worker` with the load bench's timed-emt parent registered:
python bench/load_worker.py ARGS (what bench/load_workers.py starts)."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import load_parent  # noqa: F401  (registers timed-emt)

from nft_fw.cli import main

if __name__ == "__main__":
    sys.exit(main(["worker", *sys.argv[1:]]))
