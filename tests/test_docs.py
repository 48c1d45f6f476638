"""The documentation: README.md stays short, the generated campaign-file reference
(docs/campaign-file.md) matches the models and lists every field, and every relative link in
README.md and docs/*.md leads to a file (and heading) that exists."""

from __future__ import annotations

import re
import typing
from pathlib import Path

from pydantic import BaseModel

from nft_fw.spec.campaign import CampaignSpec

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
DOCS = ROOT / "docs"
CAMPAIGN_FILE = DOCS / "campaign-file.md"


def _models(annotation: typing.Any) -> list[type[BaseModel]]:
    """The models a field holds: directly, in a list, in a union, inside Annotated."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    return [m for arg in typing.get_args(annotation) for m in _models(arg)]


def _fields(model: type[BaseModel], prefix: str = "") -> list[str]:
    out = []
    for name, field in model.model_fields.items():
        out.append(prefix + name)
        for t in _models(field.annotation):
            out += _fields(t, f"{prefix}{name}.")
    return out


def test_campaign_file_reference_is_generated_from_the_models() -> None:
    from nft_fw.spec.reference import campaign_file_reference

    assert CAMPAIGN_FILE.read_text() == campaign_file_reference(), (
        "docs/campaign-file.md differs from what nft_fw/spec/reference.py generates from the "
        "campaign models; regenerate it with `make docs` "
        "(.venv/bin/python -m nft_fw.spec.reference --write docs/campaign-file.md)"
    )


def test_campaign_file_reference_documents_every_campaign_field() -> None:
    text = CAMPAIGN_FILE.read_text()
    start = text.index("## NFT campaign files")
    section = text[start : text.index("\n## ", start)]
    fields = _fields(CampaignSpec)
    assert len(fields) > 50
    missing = [f for f in fields if f"| `{f}` |" not in section]
    assert not missing, f"docs/campaign-file.md's campaign table lacks {missing}"


def test_campaign_file_reference_documents_every_nearsightedness_campaign_field() -> None:
    from nft_fw.spec.campaign import NearsightednessSpec

    text = CAMPAIGN_FILE.read_text()
    start = text.index("## Nearsightedness campaign files")
    end = text.find("\n## ", start)
    section = text[start : None if end < 0 else end]
    # target and parent are the NFT campaign's models, documented in the table above
    fields = [f for f in _fields(NearsightednessSpec) if not f.startswith(("target.", "parent."))]
    assert len(fields) >= 12
    missing = [f for f in fields if f"| `{f}` |" not in section]
    assert not missing, f"docs/campaign-file.md's nearsightedness campaign table lacks {missing}"


def test_readme_is_short() -> None:
    n = len(README.read_text().splitlines())
    assert n <= 200, f"README.md has {n} lines; keep it at most 200 and move the rest to docs/"


def _pages() -> list[Path]:
    return [README, *sorted(DOCS.glob("*.md"))]


def _prose(text: str) -> str:
    """``text`` without fenced code blocks and HTML comments (inline code is left)."""
    text = re.sub(r"<!--.*?-->", "", text, flags=re.S)
    return re.sub(r"^(```|~~~).*?^\1[^\n]*$", "", text, flags=re.S | re.M)


def _slug(heading: str) -> str:
    """GitHub's anchor for a heading: the rendered text, lower case, punctuation other than
    - and _ dropped, each space a hyphen."""
    text = re.sub(r"`([^`]*)`", r"\1", heading)
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", text)
    text = re.sub(r"[*~]", "", text).strip().lower()
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def _anchors(page: Path) -> set[str]:
    anchors: set[str] = set()
    for line in _prose(page.read_text()).splitlines():
        m = re.match(r"#{1,6}\s+(.*?)\s*#*\s*$", line)
        if m:
            slug = base = _slug(m.group(1))
            k = 0
            while slug in anchors:  # repeated headings get -1, -2, …
                k += 1
                slug = f"{base}-{k}"
            anchors.add(slug)
    return anchors


def _links(page: Path) -> list[str]:
    text = re.sub(r"`[^`\n]*`", "", _prose(page.read_text()))
    return re.findall(r"\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)", text)


def test_slugs_follow_github() -> None:
    assert _slug("DFT parent (GPAW)") == "dft-parent-gpaw"
    assert _slug("A DFT campaign through the service: Pt140") == (
        "a-dft-campaign-through-the-service-pt140"
    )
    assert _slug("A calibrated δ") == "a-calibrated-δ"
    assert _slug("From nft-fw 0.2 to 0.3") == "from-nft-fw-02-to-03"


def test_every_relative_link_in_the_docs_resolves() -> None:
    broken = []
    checked = 0
    for page in _pages():
        for target in _links(page):
            if re.match(r"[A-Za-z][A-Za-z0-9+.-]*:", target):  # https:, mailto:
                continue
            path, _, anchor = target.partition("#")
            dest = (page.parent / path).resolve() if path else page
            checked += 1
            where = f"{page.relative_to(ROOT)} → {target}"
            if not dest.exists():
                broken.append(f"{where}: no such file")
            elif anchor and dest.suffix == ".md" and anchor not in _anchors(dest):
                broken.append(f"{where}: no heading with that anchor in {dest.name}")
    assert checked > 30
    assert not broken, "broken links:\n" + "\n".join(broken)


def test_readme_and_the_index_link_every_docs_page() -> None:
    pages = {p.name for p in DOCS.glob("*.md")}
    index = {Path(t.partition("#")[0]).name for t in _links(DOCS / "index.md")}
    readme = {Path(t.partition("#")[0]).name for t in _links(README) if t.startswith("docs/")}
    assert pages - {"index.md"} <= index, f"docs/index.md lacks {pages - {'index.md'} - index}"
    assert pages <= readme, f"README.md lacks links to {pages - readme}"


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

    root = ROOT
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


def test_using_what_a_campaign_made_runs() -> None:
    """docs/using.md: every nft-fw command parses, and the Python blocks that need only an
    exported model run with the shipped one (the others read files the parity test writes
    and reads back the same way)."""
    import os
    import re
    import shlex
    import tempfile

    from nft_fw.cli import build_parser

    text = (ROOT / "docs" / "using.md").read_text(encoding="utf-8")
    parser = build_parser()
    commands = [
        line
        for block in re.findall(r"```bash\n(.*?)```", text, re.S)
        for line in block.splitlines()
        if line.startswith("nft-fw ")
    ]
    assert len(commands) >= 6
    for line in commands:
        assert parser.parse_args(shlex.split(line)[1:]).func is not None, line
    blocks = re.findall(r"```python\n(.*?)```", text, re.S)
    runnable = [b for b in blocks if "pt260-model" in b]
    assert runnable
    here = Path.cwd()
    with tempfile.TemporaryDirectory() as tmp:
        os.symlink(ROOT / "bench" / "data" / "pt260-emt-model", Path(tmp) / "pt260-model")
        os.chdir(tmp)
        try:
            for block in runnable:
                exec(compile(block, "docs/using.md", "exec"), {})
        finally:
            os.chdir(here)
