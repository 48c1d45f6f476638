"""The science core stands alone: importing it never pulls in FireWorks or pymongo."""

from __future__ import annotations

import ast
import json
import pkgutil
import re
import subprocess
import sys
from pathlib import Path

import nft_fw

ADAPTERS = {"nft_fw.cli", "nft_fw.__main__"}


def _core_modules() -> list[str]:
    names = [
        m.name
        for m in pkgutil.walk_packages(nft_fw.__path__, prefix="nft_fw.")
        if not m.name.startswith(("nft_fw.firetasks", "nft_fw.workflows", "nft_fw.launchpad"))
        and not m.name.startswith(tuple(ADAPTERS))
    ]
    return ["nft_fw", *sorted(names)]


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
        "import nft_fw.firetasks.smoke, nft_fw.workflows.campaign, nft_fw.launchpad.connection, sys\n"
        "print('fireworks' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "True"


# ----------------------------------------------------------------------------- rooms

ROOT = Path(__file__).resolve().parent.parent
# folder → the import prefix it installs under (pyproject's package-dir mapping)
FOLDERS = {
    "nft_fw": "nft_fw",
    "launchpad": "nft_fw.launchpad",
    "workflows": "nft_fw.workflows",
    "firetasks": "nft_fw.firetasks",
}
ROOMS = ("nft_fw.launchpad", "nft_fw.workflows", "nft_fw.firetasks")
# which rooms each room may import (DESIGN.md, "Layout"); the core imports none of them
MAY_IMPORT = {
    "core": set(),
    "nft_fw.launchpad": {"nft_fw.launchpad"},
    "nft_fw.workflows": {"nft_fw.workflows"},
    "nft_fw.firetasks": set(ROOMS),
    "cli": set(ROOMS),
}
CLI = ("nft_fw.cli", "nft_fw.__main__")


def _modules() -> dict[str, Path]:
    out = {}
    for folder, prefix in FOLDERS.items():
        for path in sorted((ROOT / folder).rglob("*.py")):
            parts = path.relative_to(ROOT / folder).with_suffix("").parts
            if parts[-1] == "__init__":
                parts = parts[:-1]
            out[".".join((prefix, *parts))] = path
    return out


def _room(module: str) -> str:
    if module.startswith(CLI):
        return "cli"
    return next((r for r in ROOMS if module == r or module.startswith(r + ".")), "core")


def _imports(module: str, path: Path, known: set[str]) -> set[str]:
    """Every nft_fw module ``module`` imports, at the top or inside a function."""
    found = set()
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(
                    [*package.split(".")[: len(package.split(".")) - node.level + 1], base]
                ).strip(".")
            # a name that is a module counts as that module, else as its package's attribute
            names = [
                f"{base}.{a.name}" if f"{base}.{a.name}" in known else base for a in node.names
            ]
        for name in names:
            while name and name not in known:
                name = name.rpartition(".")[0]
            if name and name != module:
                found.add(name)
    return found


def _graph() -> dict[str, set[str]]:
    modules = _modules()
    known = set(modules)
    return {m: _imports(m, p, known) for m, p in modules.items()}


def test_each_room_imports_only_what_it_may() -> None:
    wrong = []
    for module, targets in _graph().items():
        room = _room(module)
        for target in sorted(targets):
            other = _room(target)
            if other not in ("core", room) and other not in MAY_IMPORT[room]:
                wrong.append(f"{module} ({room}) imports {target} ({other})")
    assert not wrong, "\n".join(wrong)


# the core's rooms (nft_fw/ subpackages), lowest first: each imports only rooms before it
# (docs/layout.md draws them)
CORE_LAYERS = (
    "nft_fw.potential",
    "nft_fw.structures",
    "nft_fw.parents",
    "nft_fw.labels",
    "nft_fw.spec",
    "nft_fw.steps",
    "nft_fw.report",
    "nft_fw.runners",
)


def _layer(module: str) -> str | None:
    return next((r for r in CORE_LAYERS if module == r or module.startswith(r + ".")), None)


def test_the_core_is_in_rooms_each_importing_only_the_rooms_below_it() -> None:
    modules = _modules()
    loose = [m for m in modules if _room(m) == "core" and m != "nft_fw" and _layer(m) is None
             and not m.startswith("nft_fw.examples")]  # fmt: skip
    assert not loose, f"core modules outside the rooms of CORE_LAYERS: {loose}"
    wrong = []
    for module, targets in _graph().items():
        layer = _layer(module)
        if layer is None:
            continue
        below = CORE_LAYERS[: CORE_LAYERS.index(layer) + 1]
        for target in sorted(targets):
            other = _layer(target)
            if other is not None and other not in below:
                wrong.append(f"{module} imports {target} ({other} is not below {layer})")
    assert not wrong, "\n".join(wrong)


def test_no_import_cycles_not_even_inside_functions() -> None:
    graph = _graph()
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    cycles: list[list[str]] = []

    def visit(v: str) -> None:  # Tarjan's strongly connected components
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    assert not cycles, f"import cycles: {cycles}"


# FireWorks' and nft-fw's collections are reached through nft_fw.launchpad only
RAW_ACCESS = re.compile(
    r"\.(fireworks|launches|workflows|fw_id_assigner)\.(find|find_one|count_documents|"
    r"update_one|update_many|delete_one|delete_many|insert_one|aggregate|distinct)\b"
    r"|\bdb\[[^\]]+\]\.(find|find_one|count_documents|update_one|delete_one|aggregate)\b"
)


def test_no_raw_collection_access_outside_launchpad() -> None:
    hits = []
    for module, path in _modules().items():
        if _room(module) == "nft_fw.launchpad":
            continue
        for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            if RAW_ACCESS.search(line):
                hits.append(f"{path.relative_to(ROOT)}:{n}: {line.strip()}")
    assert not hits, "\n".join(hits)


# launchpad/ stores and finds: what a Firework computes (a parent's single point, an NFT or
# relax step, a relaxation, training) is called from firetasks/ (or the CLI), never here
RUNS = re.compile(
    r"\.(single_point|label)\(|\b(nft_step|relax_step|label_chunk|label_structure|"
    r"target_forces|label_doc|relax|fit|train)\("
)


def test_launchpad_runs_no_parent_and_no_step() -> None:
    hits = []
    for module, path in _modules().items():
        if _room(module) != "nft_fw.launchpad":
            continue
        for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            code = line.split("#", 1)[0]
            if RUNS.search(code) and not code.lstrip().startswith(("def ", '"', "'")):
                hits.append(f"{path.relative_to(ROOT)}:{n}: {line.strip()}")
    assert not hits, "\n".join(hits)


# launchpad/ stores and finds, nothing else: from the science core it may use only the
# spec, the types its documents hold, the converters between the two and the rules that say
# which stored record is meant. Anything else — descriptors, training, a step, a report, a
# relaxation — belongs to firetasks/ or the CLI, which load, call and store.
LAUNCHPAD_MAY_USE: dict[str, set[str] | None] = {
    "nft_fw.spec.campaign": None,  # the spec (every name)
    "nft_fw.labels.phase": None,  # the phases' names
    "nft_fw.spec.amend": {"amend"},  # a change of the spec, validated as a whole
    "nft_fw.structures.atoms_io": {"extxyz_text", "read_extxyz_text", "from_doc", "to_doc"},
    "nft_fw.labels.label": {"ChunkLabel", "chunk_label", "image_label", "image_doc"},
    "nft_fw.labels.files": {"frame", "full_hash", "in_order"},
    "nft_fw.potential.model": {"Ensemble"},
    "nft_fw.potential.training": {"Image"},
    "nft_fw.steps.md": {"MDState", "MDResume", "segment_from"},
    "nft_fw.labels.prior": {"frames", "from_frames", "summary"},
    "nft_fw.structures.initial": {"from_file_frames"},
    "nft_fw.steps.kept": {"kept_iteration", "kept_round", "calibration_meta"},
    "nft_fw.parents.parent": {"get_parent", "Parent", "LabelFailed"},
    "nft_fw.steps.nearsightedness": {"StoredLabels"},
    "nft_fw.structures.chunks": {"ChunkPlan"},
    "nft_fw.report.summary": {"ReportInputs"},
}


def _core_names_used(path: Path) -> set[tuple[str, str]]:
    """(module, name) for every science-core name a file uses: ``from nft_fw.x import a``,
    and ``x.a`` for a module bound by ``from nft_fw import x`` or ``import nft_fw.x`` —
    at the top or inside a function; a core module used as a whole counts as ``*``."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    modules = set(_modules())
    alias: dict[str, str] = {}
    used: set[tuple[str, str]] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("nft_fw"):
            for a in node.names:
                full = f"{node.module}.{a.name}"
                if node.module == "nft_fw" or full in modules:  # a module bound to a name
                    alias[a.asname or a.name] = full
                elif not node.module.startswith(ROOMS):  # type: ignore[union-attr]
                    used.add((node.module, a.name))  # type: ignore[arg-type]
        elif isinstance(node, ast.Import):
            for a in node.names:
                if a.name.startswith("nft_fw.") and not a.name.startswith(ROOMS):
                    used.add((a.name, "*"))
    attributes = {
        id(n.value)
        for n in ast.walk(tree)
        if isinstance(n, ast.Attribute) and isinstance(n.value, ast.Name)
    }
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name):
            if node.value.id in alias and not alias[node.value.id].startswith(ROOMS):
                used.add((alias[node.value.id], node.attr))
        elif (
            isinstance(node, ast.Name)
            and node.id in alias
            and id(node) not in attributes
            and not alias[node.id].startswith(ROOMS)
        ):
            used.add((alias[node.id], "*"))
    return used


def test_launchpad_uses_only_the_spec_types_and_converters_of_the_core() -> None:
    wrong = []
    for module, path in _modules().items():
        if _room(module) != "nft_fw.launchpad":
            continue
        for target, name in sorted(_core_names_used(path)):
            allowed = LAUNCHPAD_MAY_USE.get(target, set())
            if allowed is not None and name not in allowed:
                wrong.append(f"{path.relative_to(ROOT)} uses {target}.{name}")
    assert not wrong, "launchpad/ may not use these (move the work to firetasks/):\n" + (
        "\n".join(wrong)
    )


def test_the_launchpad_allowlist_sees_what_it_must_refuse(tmp_path: Path) -> None:
    """The check itself: each way of reaching a refused name is found."""
    sample = tmp_path / "sample.py"
    sample.write_text(
        "from nft_fw.steps import step\nfrom nft_fw.report.summary import write\n"
        "import nft_fw.steps.relax\n"
        "def f():\n    from nft_fw.potential import descriptors as d\n    return step.fit, d\n",
        encoding="utf-8",
    )
    used = _core_names_used(sample)
    assert {("nft_fw.steps.step", "fit"), ("nft_fw.report.summary", "write"), ("nft_fw.steps.relax", "*"),
            ("nft_fw.potential.descriptors", "*")} <= used  # fmt: skip


# one registry of campaign kinds (nft_fw.firetasks.kinds): what a kind is is decided in
# nft_fw/spec/campaign.py (files and prepared campaigns) and in the kind's own storage module
KIND_TESTS = re.compile(
    r"is_nearsightedness\(|isinstance\([^)]*(PreparedNearsightedness|NearsightednessSpec)\)|"
    r"[\"']kind[\"']\)\s*==|==\s*[\"']nearsightedness[\"']"
)
KIND_DECIDERS = {
    "nft_fw.spec.campaign",
    "nft_fw.launchpad.nearsightedness",
    "nft_fw.launchpad.records",
}


def test_campaign_kinds_are_dispatched_from_one_registry() -> None:
    from nft_fw.cli.campaigns import PROGRESS_PRINTERS, VALIDATORS
    from nft_fw.firetasks.kinds import KINDS
    from nft_fw.spec.campaign import CAMPAIGN_KINDS

    assert tuple(KINDS) == CAMPAIGN_KINDS
    assert set(VALIDATORS) == set(CAMPAIGN_KINDS)
    # a kind that trains nothing shows its progress instead of iteration records
    assert {k for k, kind in KINDS.items() if kind.progress is not None} == set(PROGRESS_PRINTERS)
    assert all(kind.trains == (kind.progress is None) for kind in KINDS.values())
    hits = []
    for module, path in _modules().items():
        if module in KIND_DECIDERS:
            continue
        for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            if KIND_TESTS.search(line.split("#", 1)[0]):
                hits.append(f"{path.relative_to(ROOT)}:{n}: {line.strip()}")
    assert not hits, "test the kind through nft_fw.firetasks.kinds:\n" + "\n".join(hits)
