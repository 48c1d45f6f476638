"""report.html: one self-contained page per campaign, checked in a real headless browser."""

from __future__ import annotations

import base64
from pathlib import Path

from browser import render

from nft_fw.report import page as html_report

# a 1×1 PNG
PIXEL = base64.b64decode(
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8BQDwAEhQGAhKmMIQAAAABJRU5ErkJggg=="
)


def test_the_browser_check_fails_on_a_broken_image_and_on_a_fetch(tmp_path: Path) -> None:
    """The probe can fail: a figure that does not decode and a resource from elsewhere are
    both seen, so a report that passes really is whole and self-contained."""
    page = tmp_path / "bad.html"
    page.write_text(
        "<!DOCTYPE html><html><head><title>t</title>"
        '<link rel="stylesheet" href="http://example.invalid/x.css"></head><body>'
        '<img src="data:image/png;base64,AAAA"><img src="missing.png"></body></html>'
    )
    seen = render(page, tmp_path / "bad")
    assert seen["images"] == 2 and seen["decoded"] == 0
    assert seen["fetched"] and any("example.invalid" in f for f in seen["fetched"])


def test_a_rendered_page_embeds_its_figures_and_marks_the_kept_row(tmp_path: Path) -> None:
    figure = tmp_path / "history.png"
    figure.write_bytes(PIXEL)
    markdown = (
        "# NFT campaign x\n\n| iteration | δ max |\n|---:|---:|\n| 0 | 1.0 |\n| 1 | 0.5 |\n\n"
        "Kept iteration: 1\nStop reason: threshold\n\n## Relaxation\n\n- a <b>list</b> item\n"
    )
    text = html_report.render(
        "NFT campaign <x>",
        [("state", "completed"), ("stopped by", "threshold: max δ 0.08 < 0.1")],
        [("the history", figure)],
        markdown,
        "name: x\nnft: {threshold: 0.1}\n",
        kept_iteration=1,
    )
    page = tmp_path / "report.html"
    page.write_text(text)
    assert "<b>" not in text and "&lt;b&gt;" in text  # text is escaped, never markup
    seen = render(page, tmp_path / "probe")
    assert seen["title"] == "NFT campaign <x>"
    assert seen["images"] == seen["decoded"] == 1 and seen["fetched"] == []
    assert seen["tables"] == [3] and seen["kept_rows"] == ["1"]
    for words in ("stopped by", "threshold: max δ 0.08 < 0.1", "Kept iteration: 1",
                  "Stop reason: threshold", "a <b>list</b> item", "nft: {threshold: 0.1}"):  # fmt: skip
        assert words in seen["text"], words
