"""Whether a campaign's history is the one recorded: every computed field equal to the bit,
timings and ids left out (they differ between runs by nature). The yardstick of a change that
must not change what nft-fw computes.

    make demo
    .venv/bin/nft-fw history pt260-emt --data-dir .nft-fw-demo/db --db-name nft_fw_demo \\
        --json > /tmp/now.json
    .venv/bin/python bench/same_history.py bench/data/demo-history.json /tmp/now.json

Prints the first differing field of each record (or "identical") and exits 1 on a difference.
Compare runs on one machine: XLA compiles for the CPU it runs on, so another CPU gives other
last digits (bench/data/README.md). To record a run: json.dump(computed(history), file).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

#: fields that measure the run, not the result
RUN_FIELDS = {"seconds", "timings", "fw_id", "predict_seconds", "features_seconds", "host",
              "created", "updated", "written", "model_file", "frames_file", "state_file", "final_file",
              "shared_files"}  # fmt: skip


def computed(value: Any) -> Any:
    """``value`` without the run's fields, at any depth."""
    if isinstance(value, dict):
        return {
            k: computed(v)
            for k, v in value.items()
            if k not in RUN_FIELDS and not k.endswith(("_file", "_files"))  # GridFS ids
        }
    if isinstance(value, list):
        return [computed(v) for v in value]
    return value


def first_difference(a: Any, b: Any, where: str = "") -> str | None:
    if isinstance(a, dict) and isinstance(b, dict):
        for key in sorted(set(a) | set(b)):
            if key not in a or key not in b:
                return f"{where}.{key}: only in {'the record' if key in a else 'this run'}"
            found = first_difference(a[key], b[key], f"{where}.{key}")
            if found:
                return found
        return None
    if isinstance(a, list) and isinstance(b, list):
        if len(a) != len(b):
            return f"{where}: {len(a)} against {len(b)} entries"
        for k, (x, y) in enumerate(zip(a, b, strict=True)):
            found = first_difference(x, y, f"{where}[{k}]")
            if found:
                return found
        return None
    return None if a == b else f"{where}: {a!r} against {b!r}"


def main() -> int:
    if len(sys.argv) != 3:
        print(__doc__)
        return 2
    recorded, now = (computed(json.loads(Path(p).read_text())) for p in sys.argv[1:])
    found = first_difference(recorded, now)
    print("identical" if found is None else f"differs at {found}")
    return 0 if found is None else 1


if __name__ == "__main__":
    sys.exit(main())
