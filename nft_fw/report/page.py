"""One self-contained ``report.html`` per campaign: figures embedded as data URIs, the
tables, the stop, the campaign file. No script, no stylesheet or font from elsewhere: it
opens from disk, offline, in any browser, and can be mailed as one file.

The tables come from the same markdown the report writes to ``history.md`` (one source
for both), converted by :func:`markdown_to_html` (markdown-it-py).
"""

from __future__ import annotations

import base64
import datetime as dt
import html
import importlib.metadata
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from markdown_it import MarkdownIt

_STYLE = """
body { font: 15px/1.45 system-ui, sans-serif; margin: 2em auto; max-width: 72em;
       padding: 0 1em; color: #1d1d1f; }
h1 { font-size: 1.6em; margin-bottom: 0.2em; } h2 { margin-top: 1.6em; }
.meta { color: #555; margin-top: 0; }
dl.facts { display: grid; grid-template-columns: max-content auto; gap: 0.2em 1.2em; }
dl.facts dt { font-weight: 600; } dl.facts dd { margin: 0; }
table { border-collapse: collapse; margin: 0.8em 0; font-variant-numeric: tabular-nums; }
th, td { border: 1px solid #ccc; padding: 0.25em 0.6em; text-align: right; }
th { background: #f2f2f2; } tr.kept td { background: #fff6d5; font-weight: 600; }
figure { margin: 1.2em 0; } figure img { max-width: 100%; height: auto; }
figcaption { color: #555; }
pre { background: #f6f6f6; padding: 0.8em; overflow-x: auto; font-size: 0.9em; }
"""


def _escape(text: Any) -> str:
    return html.escape(str(text), quote=True)


def markdown_table(columns: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    """The lines of a markdown table of right-aligned columns: the one table writer of the
    reports (history.md, the nearsightedness report)."""
    return [
        "| " + " | ".join(columns) + " |",
        "|" + "|".join("---:" for _ in columns) + "|",
        *("| " + " | ".join(row) + " |" for row in rows),
    ]


_MARKDOWN = MarkdownIt("commonmark", {"html": False}).enable("table")


def markdown_to_html(text: str, kept_iteration: int | None = None) -> str:
    """The report's markdown as HTML (markdown-it-py, CommonMark with tables, raw HTML
    escaped; headings one level down: the page has its own h1). A table row whose first
    cell is ``kept_iteration`` gets the class ``kept``."""
    tokens = _MARKDOWN.parse(text)
    for i, token in enumerate(tokens):
        if token.type in ("heading_open", "heading_close"):
            token.tag = f"h{min(int(token.tag[1:]) + 1, 6)}"
        elif token.type == "tr_open" and kept_iteration is not None:
            first = next(t for t in tokens[i:] if t.type == "inline")
            if first.content.strip() == str(kept_iteration):
                token.attrSet("class", "kept")
    return str(_MARKDOWN.renderer.render(tokens, _MARKDOWN.options, {}))


def _image(path: Path) -> str:
    data = base64.b64encode(Path(path).read_bytes()).decode("ascii")
    return f"data:image/png;base64,{data}"


def _version() -> str:
    try:
        return importlib.metadata.version("nft-fw")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def render(
    title: str,
    facts: Sequence[tuple[str, Any]],
    figures: Sequence[tuple[str, Path]],
    markdown: str,
    campaign_file: str,
    kept_iteration: int | None = None,
) -> str:
    """The page: ``facts`` (label, value) as a list, each figure (caption, PNG path)
    embedded, the markdown's tables, and the campaign file as submitted (YAML)."""
    when = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en">',
        "<head>",
        '<meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{_escape(title)}</title>",
        f"<style>{_STYLE}</style>",
        "</head>",
        "<body>",
        f"<h1>{_escape(title)}</h1>",
        f'<p class="meta">written {when} by nft-fw {_escape(_version())}</p>',
        '<dl class="facts">',
        *(f"<dt>{_escape(k)}</dt><dd>{_escape(v)}</dd>" for k, v in facts),
        "</dl>",
    ]
    for caption, path in figures:
        parts += [
            f'<figure id="{_escape(Path(path).stem)}">',
            f'<img src="{_image(path)}" alt="{_escape(caption)}">',
            f"<figcaption>{_escape(caption)}</figcaption>",
            "</figure>",
        ]
    parts.append(markdown_to_html(markdown, kept_iteration))
    parts += [
        "<h2>Campaign file (as stored: defaults filled in)</h2>",
        f'<pre id="campaign-file">{_escape(campaign_file)}</pre>',
        "</body>",
        "</html>",
    ]
    return "\n".join(parts) + "\n"


def _fmt(value: Any, unit: str = "", spec: str = ".3f") -> str | None:
    if value is None:
        return None
    try:
        return f"{format(float(value), spec)}{unit}"
    except (TypeError, ValueError):
        return str(value)


def campaign_facts(doc: dict[str, Any], summary: dict[str, Any]) -> list[tuple[str, str]]:
    """The headline of an NFT campaign: state and stop, the kept model's δ, its true error
    (with validation) and the latest out-of-sample error and calibration."""
    stop = doc.get("stop_reason") or "—"
    if doc.get("stop_detail"):
        stop = f"{stop}: {doc['stop_detail']}"
    facts: list[tuple[str, str | None]] = [
        ("state", doc.get("state")),
        ("stopped by", stop),
        ("parent", (doc.get("spec") or {}).get("parent", {}).get("name")),
        ("iterations", summary.get("last_iteration")),
        ("chunks trained on", summary.get("total_chunks")),
        ("kept iteration", summary.get("best_iteration")),
        ("kept model: max δ", _fmt(summary.get("best_structure_uncertainty"), " eV/Å")),
        ("kept model: mean δ", _fmt(summary.get("best_mean_uncertainty"), " eV/Å")),
        ("kept model: true-force MAE", _fmt(summary.get("best_true_force_mae"), " eV/Å")),
        ("kept model: true-force max error", _fmt(summary.get("best_true_force_max"), " eV/Å")),
        ("latest out-of-sample MAE", _fmt(summary.get("latest_oos_mae"), " eV/Å")),
        ("δ calibration scale", _fmt(summary.get("calibration_scale"), "", ".2f")),
        ("training time", _fmt(summary.get("total_training_seconds"), " s", ".0f")),
    ]
    return [(k, str(v)) for k, v in facts if v is not None]
