"""The README's campaign-file reference lists every field the spec accepts."""

from __future__ import annotations

import typing
from pathlib import Path

from pydantic import BaseModel

from nft_fw.campaign import CampaignSpec

README = Path(__file__).resolve().parent.parent / "README.md"


def _fields(model: type[BaseModel], prefix: str = "") -> list[str]:
    out = []
    for name, field in model.model_fields.items():
        out.append(prefix + name)
        for t in (field.annotation, *typing.get_args(field.annotation)):
            if isinstance(t, type) and issubclass(t, BaseModel):
                out += _fields(t, f"{prefix}{name}.")
    return out


def test_readme_documents_every_campaign_field() -> None:
    text = README.read_text()
    fields = _fields(CampaignSpec)
    assert len(fields) > 50
    missing = [f for f in fields if f"| `{f}` |" not in text]
    assert not missing, f"README's campaign table lacks {missing}"


def test_readme_documents_every_nearsightedness_campaign_field() -> None:
    from nft_fw.campaign import NearsightednessSpec

    text = README.read_text()
    start = text.index("### Nearsightedness campaign files")
    section = text[start : text.index("\n## ", start)]
    # target and parent are the NFT campaign's models, documented in the table above
    fields = [f for f in _fields(NearsightednessSpec) if not f.startswith(("target.", "parent."))]
    assert len(fields) >= 12
    missing = [f for f in fields if f"| `{f}` |" not in section]
    assert not missing, f"README's nearsightedness campaign table lacks {missing}"


def _commands(parser: typing.Any, prefix: tuple[str, ...] = ()) -> dict[str, typing.Any]:
    """Every leaf command of the CLI ('worker', 'db start', …) and its parser."""
    import argparse

    out: dict[str, typing.Any] = {}
    subs = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    if not subs:
        return {" ".join(prefix): parser}
    for name, child in subs[0].choices.items():
        out.update(_commands(child, (*prefix, name)))
    return out


def test_every_command_help_shows_examples_that_parse() -> None:
    import shlex

    from nft_fw.cli import EXAMPLES, build_parser

    parser = build_parser()
    commands = _commands(parser)
    assert {"worker", "db start", "recover", "demo"} <= set(commands)
    assert set(EXAMPLES) == set(commands), "a command without examples, or examples of none"
    for name, sub in commands.items():
        help_text = sub.format_help()
        assert "examples:" in help_text, name
        for cmd, why in EXAMPLES[name]:
            assert cmd in help_text and why in help_text
            argv = shlex.split(cmd)
            assert argv[0] == "nft-fw" and argv[1 : 1 + len(name.split())] == name.split()
            args = parser.parse_args(argv[1:])  # exits (SystemExit) on a bad example
            assert args.func is not None


def test_the_tested_constraints_satisfy_the_declared_ranges() -> None:
    """constraints.txt (what make setup installs) pins every dependency pyproject.toml
    declares, each within its declared range, and pins nothing twice."""
    import tomllib

    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name

    root = README.parent
    project = tomllib.loads((root / "pyproject.toml").read_text())["project"]
    pins: dict[str, str] = {}
    for line in (root / "constraints.txt").read_text().splitlines():
        line = line.split("#")[0].strip()
        if line:
            name, version = line.split("==")
            assert canonicalize_name(name) not in pins, name
            pins[canonicalize_name(name)] = version
    declared = [*project["dependencies"], *project["optional-dependencies"]["dev"]]
    assert len(declared) > 15
    for text in declared:
        req = Requirement(text)
        version = pins.get(canonicalize_name(req.name))
        assert version is not None, f"constraints.txt does not pin {req.name}"
        assert req.specifier.contains(version, prereleases=True), (text, version)
