"""Bad campaign files, generated: every one is refused with a clean error naming a field,
exit code 2, and nothing written to the database."""

from __future__ import annotations

import copy
import math
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
from ase import Atoms
from ase.io import write
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from nft_fw.spec.campaign import CampaignError, example_campaign, load_campaign, prepare

BASE = example_campaign()
BASE["relax"] = {"fmax": 0.05, "max_steps": 200}
BASE["transfer"] = [
    {"name": "ico", "builder": {"kind": "icosahedron", "element": "Pt", "shells": 3}}
]
BASE["md"] = {
    "integrator": "langevin",
    "temperature_K": 600.0,
    "timestep_fs": 2.0,
    "length_ps": 1.0,
    "structure": "relaxed",
    "chunks_per_pause": 4,
}


def _leaves(d: Any, path: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    if isinstance(d, dict):
        return [p for k, v in d.items() for p in _leaves(v, (*path, k))] or [path]
    if isinstance(d, list) and d and isinstance(d[0], dict):
        return [p for i, v in enumerate(d) for p in _leaves(v, (*path, i))]
    return [path]


LEAVES = [p for p in _leaves(BASE) if p]
SECTIONS = [p for p in {p[:-1] for p in LEAVES}]

WRONG = st.one_of(
    st.text(max_size=12),
    st.lists(st.integers(), max_size=3),
    st.dictionaries(st.text(max_size=5), st.integers(), max_size=2),
    st.sampled_from([math.nan, math.inf, -math.inf, -1, -1e300, 1e300, 10**40, 0, True]),
)


def _set(d: Any, path: tuple[Any, ...], value: Any) -> None:
    for k in path[:-1]:
        d = d[k]
    d[path[-1]] = value


def _get(d: Any, path: tuple[Any, ...]) -> Any:
    for k in path:
        d = d[k]
    return d


@st.composite
def mutated(draw: st.DrawFn) -> tuple[dict[str, Any], str, str]:
    """(campaign, where, kind): one change to the valid base campaign."""
    spec = copy.deepcopy(BASE)
    kind = draw(st.sampled_from(["unknown_key", "wrong_value", "missing"]))
    if kind == "unknown_key":
        section = draw(st.sampled_from([(), *SECTIONS]))
        # "x_" + letters: never the name of a real field
        key = "x_" + draw(st.text(alphabet="abcdefghijklmnopqrstuvwxyz_", max_size=10))
        target = _get(spec, section) if section else spec
        target[key] = draw(st.integers())
        where = ".".join(map(str, (*section, key)))
    elif kind == "wrong_value":
        path = draw(st.sampled_from(LEAVES))
        _set(spec, path, draw(WRONG))
        where = ".".join(map(str, path))
    else:
        path = draw(st.sampled_from([("name",), ("target",), ("target", "builder")]))
        parent = _get(spec, path[:-1]) if len(path) > 1 else spec
        del parent[path[-1]]
        where = ".".join(map(str, path))
    return spec, where, kind


def _outcome(spec: dict[str, Any]) -> CampaignError | None:
    try:
        prepare(load_campaign(spec))
    except CampaignError as err:
        return err
    return None


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(mutated())
def test_any_single_change_is_valid_or_refused_naming_its_field(case: Any) -> None:
    spec, where, kind = case
    err = _outcome(spec)  # any other exception fails the test: no raw tracebacks
    if err is None:
        # only values that happen to be valid pass (e.g. a number replaced by another)
        assert kind == "wrong_value", f"{kind} at {where} was accepted"
        return
    text = str(err)
    # the field itself, or (for a rule across fields) the section that holds it
    section = ".".join(where.split(".")[:-1]) or where
    named = where if kind == "unknown_key" else section
    assert named in text, f"the error does not name {named}: {text}"
    assert "Traceback" not in text


def _structure_file(tmp: Path, kind: str) -> Path:
    path = tmp / f"{kind}.xyz"
    if kind == "missing":
        return path
    if kind == "unreadable":
        path.write_bytes(b"\x00\x01 not a structure \xff\n" * 3)
        return path
    positions = np.array([[0.0, 0.0, 0.0], [2.8, 0.0, 0.0], [0.0, 2.8, 0.0]])
    symbols = "Pt3"
    if kind == "nan":
        positions[1, 2] = np.nan
    elif kind == "overlap":
        positions[2] = [0.1, 0.0, 0.0]
    elif kind == "unsupported":
        symbols = "PtUPt"
    write(path, Atoms(symbols, positions=positions), format="extxyz")
    return path


FILE_CASES = ["missing", "unreadable", "nan", "overlap", "unsupported"]


@pytest.mark.parametrize("kind", FILE_CASES)
@pytest.mark.parametrize("section", ["target", "transfer"])
def test_bad_structure_files_are_refused_naming_the_field(
    tmp_path: Path, kind: str, section: str
) -> None:
    spec = copy.deepcopy(BASE)
    path = str(_structure_file(tmp_path, kind))
    if section == "target":
        spec["target"] = {"file": path}
        field = "target"
    else:
        spec["transfer"] = [{"name": "x", "file": path}]
        field = "transfer.0"
    err = _outcome(spec)
    assert err is not None
    assert field in str(err)


def _submit(
    connection: Any, spec: dict[str, Any], path: Path, capsys: pytest.CaptureFixture[str]
) -> tuple[int, str, dict[str, tuple[int | None, int | None]]]:
    """`nft-fw submit` of ``spec`` written to ``path``: exit code, stderr, and the
    collections whose document count changed (or that appeared), as (before, after)."""
    from nft_fw.cli import main

    path.write_text(yaml.safe_dump(spec))
    db = connection.launchpad.db
    before = {name: db[name].count_documents({}) for name in db.list_collection_names()}
    code = main(
        ["submit", str(path), "--data-dir", str(connection.server.data_dir),
         "--db-name", connection.db_name]
    )  # fmt: skip
    after = {name: db[name].count_documents({}) for name in db.list_collection_names()}
    changed = {k: (before.get(k), after.get(k)) for k in set(before) | set(after)}
    return code, capsys.readouterr().err, {k: v for k, v in changed.items() if v[0] != v[1]}


@pytest.mark.integration
@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow,
          HealthCheck.function_scoped_fixture])  # fmt: skip
@given(case=mutated())
def test_submit_of_a_bad_file_exits_2_and_writes_nothing(
    case: Any, connection: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    spec, where, _ = case
    if _outcome(spec) is None:
        return  # a valid variant: submitting it is not what this test is about
    code, err, written = _submit(connection, spec, tmp_path / f"{uuid.uuid4().hex}.yaml", capsys)
    assert code == 2
    assert where.split(".")[0] in err and "Traceback" not in err
    assert not written


@pytest.mark.integration
def test_chunk_radius_below_twice_the_cutoff_exits_2_and_writes_nothing(
    connection: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    spec = copy.deepcopy(BASE)
    cutoff = spec.get("model", {}).get("cutoff", 6.0)
    spec.setdefault("nft", {})["chunk_radius"] = 2 * cutoff - 0.5
    code, err, written = _submit(connection, spec, tmp_path / "short.yaml", capsys)
    assert code == 2
    err = " ".join(err.split())
    assert "nft.chunk_radius" in err and "below 2·model.cutoff" in err
    assert not written


def test_a_target_element_the_transfer_targets_lack_names_both_fields() -> None:
    """Found by the property test above: a target whose element changed refuses the transfer
    targets (no network for their element), naming the target's field as well."""
    spec = copy.deepcopy(BASE)
    assert spec.get("transfer"), "BASE carries transfer targets"
    spec["target"]["builder"]["element"] = "N"
    err = _outcome(spec)
    assert err is not None
    assert "transfer.0.builder" in str(err) and "target.builder: N" in str(err)
