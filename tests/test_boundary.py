"""The science core stands alone: importing it never pulls in FireWorks or pymongo."""

from __future__ import annotations

import json
import pkgutil
import subprocess
import sys

import nft_fw

ADAPTERS = {"nft_fw.cli", "nft_fw.__main__"}


def _core_modules() -> list[str]:
    names = [
        m.name
        for m in pkgutil.walk_packages(nft_fw.__path__, prefix="nft_fw.")
        if not m.name.startswith(("nft_fw.firetasks", "nft_fw.workflows", "nft_fw.launchpad"))
    ]
    return ["nft_fw", *sorted(set(names) - ADAPTERS)]


def test_core_imports_no_fireworks_or_pymongo() -> None:
    modules = _core_modules()
    code = (
        "import importlib, json, sys\n"
        f"for m in {modules!r}: importlib.import_module(m)\n"
        "print(json.dumps(sorted(k for k in sys.modules if k.split('.')[0] in ('fireworks', 'pymongo', 'bson', 'gridfs'))))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    leaked = json.loads(out.stdout.strip().splitlines()[-1])
    assert leaked == [], f"science core imported {leaked[:5]} (modules checked: {modules})"


def test_adapters_are_importable_under_nft_fw_namespace() -> None:
    code = (
        "import nft_fw.firetasks.smoke, nft_fw.workflows.smoke, nft_fw.launchpad.connection, sys\n"
        "print('fireworks' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "True"
