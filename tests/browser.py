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


class LivePage:
    """A page kept open in headless Chromium, driven over the DevTools protocol on a pipe
    (``--remote-debugging-pipe``: file descriptors 3 and 4, NUL-terminated JSON): the test
    reads what the page shows now, while it goes on updating itself."""

    def __init__(self, url: str, work: Path) -> None:
        import os

        work.mkdir(parents=True, exist_ok=True)
        self._to_browser_r, self._to_browser_w = os.pipe()
        self._from_browser_r, self._from_browser_w = os.pipe()
        # the browser reads commands on fd 3 and writes answers on fd 4
        self.proc = subprocess.Popen(
            [browser(), "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
             f"--user-data-dir={work / 'profile'}", "--remote-debugging-pipe", "about:blank"],
            preexec_fn=self._pipe_fds, close_fds=False,
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        os.close(self._to_browser_r)
        os.close(self._from_browser_w)
        self._out = os.fdopen(self._to_browser_w, "wb", buffering=0)
        self._in = os.fdopen(self._from_browser_r, "rb", buffering=0)
        self._buffer = b""
        self._id = 0
        target = self._call("Target.createTarget", {"url": url})["targetId"]
        self.session = self._call("Target.attachToTarget", {"targetId": target, "flatten": True})[
            "sessionId"
        ]

    def _pipe_fds(self) -> None:  # in the child, before exec: the pipes on fds 3 and 4
        import os

        commands, answers = os.dup(self._to_browser_r), os.dup(self._from_browser_w)
        os.dup2(commands, 3)
        os.dup2(answers, 4)

    def _read(self) -> dict[str, Any]:
        while b"\0" not in self._buffer:
            chunk = self._in.read(65536)
            if not chunk:
                raise AssertionError("Chromium closed the DevTools pipe")
            self._buffer += chunk
        message, self._buffer = self._buffer.split(b"\0", 1)
        return json.loads(message)

    def _call(self, method: str, params: dict[str, Any], session: str | None = None) -> Any:
        self._id += 1
        message: dict[str, Any] = {"id": self._id, "method": method, "params": params}
        if session:
            message["sessionId"] = session
        self._out.write(json.dumps(message).encode() + b"\0")
        while True:
            answer = self._read()
            if answer.get("id") == self._id:
                if "error" in answer:
                    raise AssertionError(f"{method}: {answer['error']}")
                return answer.get("result", {})

    def evaluate(self, expression: str) -> Any:
        """The value of a JavaScript expression in the page, now."""
        result = self._call(
            "Runtime.evaluate", {"expression": expression, "returnByValue": True}, self.session
        )
        if "exceptionDetails" in result:
            raise AssertionError(f"{expression}: {result['exceptionDetails']}")
        return result["result"].get("value")

    def close(self) -> None:
        try:
            self._out.close()
            self._in.close()
        finally:
            self.proc.kill()
            self.proc.wait(timeout=30)
