"""Open a report.html in a real headless Chromium (Debian's ``chromium-headless-shell``,
installed by ``make setup``) and read back what the browser made of it."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

BROWSERS = ("chromium-headless-shell", "chromium", "chromium-browser")

# appended to a copy of the page: once everything has loaded, the browser writes what it
# rendered into an attribute of <body>, which --dump-dom then prints
_PROBE = """
<script>
window.addEventListener("load", () => {
  const images = [...document.images];
  const resources = performance.getEntriesByType("resource").map((e) => e.name);
  document.body.setAttribute("data-probe", JSON.stringify({
    images: images.length,
    decoded: images.filter((i) => i.complete && i.naturalWidth > 0).length,
    image_sizes: images.map((i) => [i.naturalWidth, i.naturalHeight]),
    tables: [...document.querySelectorAll("table")].map((t) => t.rows.length),
    kept_rows: [...document.querySelectorAll("tr.kept")].map((r) => r.cells[0].textContent),
    fetched: resources.filter((n) => !n.startsWith("data:")),
    title: document.title,
    text: document.body.innerText,
  }));
});
</script>
"""


def browser() -> str:
    for name in BROWSERS:
        found = shutil.which(name)
        if found:
            return found
    raise AssertionError(
        f"no headless Chromium ({', '.join(BROWSERS)}) on PATH: make setup installs Debian's "
        "chromium-headless-shell (apt-get install chromium-headless-shell)"
    )


def render(page: Path, work: Path) -> dict[str, Any]:
    """Load ``page`` from disk with the network shut off; return the probe's findings."""
    work.mkdir(parents=True, exist_ok=True)
    copy = work / "probed.html"
    text = page.read_text(encoding="utf-8")
    assert text.rstrip().endswith("</html>"), "report.html is cut off"
    copy.write_text(text.replace("</body>", _PROBE + "</body>"), encoding="utf-8")
    out = subprocess.run(
        [
            browser(), "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
            f"--user-data-dir={work / 'profile'}",
            "--host-resolver-rules=MAP * ~NOTFOUND",  # nothing may come from the network
            "--virtual-time-budget=5000", "--dump-dom", copy.as_uri(),
        ],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr[-2000:]
    found = re.search(r'<body[^>]*data-probe="([^"]*)"', out.stdout)
    assert found, f"the page never finished loading in the browser: {out.stderr[-2000:]}"
    raw = (
        found.group(1)
        .replace("&quot;", '"')
        .replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&amp;", "&")
    )
    return dict(json.loads(raw))
