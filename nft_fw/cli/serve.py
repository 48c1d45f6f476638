"""``nft-fw serve``: a read-only live page of the campaigns on a LaunchPad.

``/`` lists every campaign with its state; ``/campaign/NAME`` shows one — its records as they
land (NFT iterations, relax rounds, MD segments, transfers: δ and the error curves), its
label Fireworks done / running / waiting with an ETA from the label times so far, failed
labels and the workers seen. The pages poll ``/api/campaigns`` and ``/api/campaign/NAME``
(JSON) every few seconds and redraw themselves: nobody reloads. Nothing is written.

Loopback by default; an open address needs HTTP basic auth (``--password-env VAR``), as
``nft-fw db start`` refuses an open address without ``--auth``.
"""

from __future__ import annotations

import argparse
import base64
import hmac
import html
import json
import math
import os
import threading
import urllib.parse
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from nft_fw.cli.common import EXIT_OK, UsageError, _add_connection_options, _open, console
from nft_fw.labels.phase import Phase

LOOPBACK = frozenset({"127.0.0.1", "::1", "localhost"})
USER = "nft-fw"
#: the record fields a page shows, by phase
PHASES = (Phase.NFT, Phase.RELAX, Phase.MD, Phase.TRANSFER)


def _number(value: Any) -> float | None:
    if isinstance(value, int | float) and math.isfinite(value):
        return float(value)
    return None


def campaigns_snapshot(db: Any, lp: Any) -> list[dict[str, Any]]:
    """Every campaign: name, kind, state, iteration, labels, Fireworks by state."""
    from nft_fw.launchpad import queue, records

    out = []
    for doc in records.list_campaigns(db):
        name = doc["_id"]
        out.append(
            {
                "name": name,
                "kind": records.kind(doc),
                "state": doc.get("state"),
                "iteration": doc.get("iteration"),
                "labels": records.count_labels(db, name),
                "fireworks": queue.state_counts(lp, name),
                "updated": str(doc.get("updated") or ""),
            }
        )
    return out


def campaign_snapshot(db: Any, lp: Any, name: str) -> dict[str, Any]:
    """One campaign as its page shows it (KeyError when there is none)."""
    from nft_fw.launchpad import queue, records

    doc = records.get_campaign(db, name)
    history = []
    for phase in PHASES:
        for r in records.iterations(db, name, phase=phase):
            history.append(
                {
                    "phase": phase,
                    "iteration": r.get("iteration", r.get("index")),
                    "name": r.get("name"),
                    "delta": _number(r.get("structure_uncertainty")),
                    "true_mae": _number(r.get("true_force_mae", r.get("end_true_force_mae"))),
                    "oos_mae": _number(r.get("oos_mae")),
                    "labels": r.get("n_labels"),
                    "new": r.get("new_chunks"),
                }
            )
    states = queue.label_states(lp, name)
    done = states.get("COMPLETED", 0)
    running = states.get("RUNNING", 0) + states.get("RESERVED", 0)
    waiting = states.get("READY", 0) + states.get("WAITING", 0)
    median = records.median_label_seconds(db, name)
    workers = queue.workers_seen(lp, name)
    busy = max(1, running)
    eta = None if median is None else median * (running / 2 + waiting) / busy
    failed = [
        {"centre": d.get("centre"), "phase": d.get("phase"), "iteration": d.get("iteration"),
         "error": str(d.get("error", ""))[:300]}
        for d in records.failures(db, name)
    ]  # fmt: skip
    return {
        "name": name,
        "kind": records.kind(doc),
        "state": doc.get("state"),
        "stop_reason": doc.get("stop_reason"),
        "updated": str(doc.get("updated") or ""),
        "history": history,
        "labels": {
            "done": done,
            "running": running,
            "waiting": waiting,
            "fizzled": states.get("FIZZLED", 0),
            "stored": records.count_labels(db, name),
            "median_seconds": median,
            "eta_seconds": eta,
        },
        "failed": failed,
        "workers": workers,
        "fireworks": queue.state_counts(lp, name),
    }


_STYLE = """
body { font: 14px/1.4 system-ui, sans-serif; margin: 1.5em; color: #222; }
table { border-collapse: collapse; margin: .5em 0 1em; }
td, th { border-bottom: 1px solid #ddd; padding: 2px 10px; text-align: right; }
th { background: #f4f4f4; } td:first-child, th:first-child { text-align: left; }
.muted { color: #777; } svg { border: 1px solid #ddd; background: #fff; }
"""

_INDEX = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>nft-fw campaigns</title>
<style>@@STYLE@@</style></head><body>
<h1>nft-fw campaigns</h1>
<p class="muted">live: redrawn every @@REFRESH@@ s from <code>/api/campaigns</code></p>
<table id="campaigns"><thead><tr><th>campaign</th><th>kind</th><th>state</th>
<th>iteration</th><th>labels</th><th>Fireworks</th></tr></thead><tbody></tbody></table>
<script>
const esc = (s) => String(s ?? "—").replace(/[&<>"]/g, (c) => ({"&": "&amp;", "<": "&lt;",
  ">": "&gt;", '"': "&quot;"}[c]));
async function draw() {
  const rows = await (await fetch("api/campaigns")).json();
  document.querySelector("#campaigns tbody").innerHTML = rows.map((c) =>
    `<tr><td><a href="campaign/${encodeURIComponent(c.name)}">${esc(c.name)}</a></td>` +
    `<td>${esc(c.kind)}</td><td>${esc(c.state)}</td><td>${esc(c.iteration)}</td>` +
    `<td>${esc(c.labels)}</td><td>${esc(Object.entries(c.fireworks).map(([k, v]) =>
      k + " " + v).join(", "))}</td></tr>`).join("");
  document.body.dataset.drawn = String(Number(document.body.dataset.drawn || 0) + 1);
}
draw(); setInterval(draw, @@REFRESH@@ * 1000);
</script></body></html>
"""

_CAMPAIGN = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>@@NAME@@ — nft-fw</title>
<style>@@STYLE@@</style></head><body>
<p><a href="../">all campaigns</a></p>
<h1 id="title">@@NAME@@</h1>
<p id="state" class="muted"></p>
<h2>Uncertainty and errors</h2>
<svg id="plot" width="640" height="260" role="img" aria-label="δ and errors per record"></svg>
<p class="muted">δ max (●, eV/Å), true-force MAE (■) and out-of-sample MAE of new chunks
(▲), log scale, in the order the records landed (NFT, relaxation, MD, transfers).</p>
<h2>Labels</h2><p id="labels"></p>
<h2>Records</h2>
<table id="history"><thead><tr><th>phase</th><th>#</th><th>δ max</th><th>true MAE</th>
<th>OOS MAE</th><th>labels</th><th>new</th></tr></thead><tbody></tbody></table>
<h2>Failed labels</h2><table id="failed"><tbody></tbody></table>
<h2>Workers seen</h2>
<table id="workers"><thead><tr><th>host</th><th>FireWorker</th><th>launches</th>
<th>running</th><th>last seen (UTC)</th></tr></thead><tbody></tbody></table>
<script>
const CAMPAIGN = @@JSON_NAME@@;
const esc = (s) => String(s ?? "—").replace(/[&<>"]/g, (c) => ({"&": "&amp;", "<": "&lt;",
  ">": "&gt;", '"': "&quot;"}[c]));
const num = (x, d = 3) => (x === null || x === undefined) ? "—" : Number(x).toFixed(d);
const dur = (s) => s === null ? "—" : s < 120 ? `${Math.round(s)} s` :
  s < 7200 ? `${Math.round(s / 60)} min` : `${(s / 3600).toFixed(1)} h`;
function plot(history) {
  const svg = document.getElementById("plot"), W = 640, H = 260, L = 50, B = 30;
  const series = [["delta", "#c33", "circle"], ["true_mae", "#36c", "rect"],
                  ["oos_mae", "#393", "tri"]];
  const values = history.flatMap((h) => series.map(([k]) => h[k]))
    .filter((v) => v !== null && v > 0);
  if (!values.length) { svg.innerHTML = ""; return; }
  const lo = Math.log10(Math.min(...values)) - 0.1, hi = Math.log10(Math.max(...values)) + 0.1;
  const x = (i) => L + (W - L - 10) * (history.length < 2 ? 0.5 : i / (history.length - 1));
  const y = (v) => 10 + (H - B - 10) * (hi - Math.log10(v)) / (hi - lo);
  let out = `<line x1="${L}" y1="${H - B}" x2="${W - 10}" y2="${H - B}" stroke="#999"/>`;
  for (let e = Math.ceil(lo); e <= Math.floor(hi); e++) {
    out += `<text x="${L - 6}" y="${y(10 ** e) + 4}" text-anchor="end" font-size="11">` +
           `1e${e}</text><line x1="${L}" x2="${W - 10}" y1="${y(10 ** e)}" y2="${y(10 ** e)}"` +
           ` stroke="#eee"/>`;
  }
  for (const [k, colour, shape] of series) {
    const pts = history.map((h, i) => [i, h[k]]).filter(([, v]) => v !== null && v > 0);
    if (pts.length > 1) out += `<polyline fill="none" stroke="${colour}" points="` +
      pts.map(([i, v]) => `${x(i)},${y(v)}`).join(" ") + `"/>`;
    for (const [i, v] of pts) {
      const cx = x(i), cy = y(v);
      out += shape === "circle" ? `<circle cx="${cx}" cy="${cy}" r="3" fill="${colour}"/>` :
        shape === "rect" ? `<rect x="${cx - 3}" y="${cy - 3}" width="6" height="6" ` +
        `fill="${colour}"/>` : `<polygon points="${cx},${cy - 4} ${cx - 4},${cy + 3} ` +
        `${cx + 4},${cy + 3}" fill="${colour}"/>`;
    }
  }
  svg.innerHTML = out;
}
async function draw() {
  const c = await (await fetch(`../api/campaign/${encodeURIComponent(CAMPAIGN)}`)).json();
  document.getElementById("state").textContent =
    `${c.kind} campaign, ${c.state}${c.stop_reason ? " (" + c.stop_reason + ")" : ""}; ` +
    `updated ${c.updated}; Fireworks ` +
    Object.entries(c.fireworks).map(([k, v]) => `${k} ${v}`).join(", ");
  const l = c.labels;
  document.getElementById("labels").textContent =
    `label Fireworks: ${l.done} done, ${l.running} running, ${l.waiting} waiting` +
    (l.fizzled ? `, ${l.fizzled} fizzled` : "") + `; ${l.stored} labels stored; ` +
    `median label time ${dur(l.median_seconds)}; ETA of the queued labels ` +
    `${l.running + l.waiting ? dur(l.eta_seconds) : "—"}`;
  document.querySelector("#history tbody").innerHTML = c.history.map((h) =>
    `<tr data-phase="${esc(h.phase)}" data-iteration="${esc(h.iteration)}">` +
    `<td>${esc(h.phase)}${h.name ? " " + esc(h.name) : ""}</td><td>${esc(h.iteration)}</td>` +
    `<td>${num(h.delta)}</td><td>${num(h.true_mae)}</td><td>${num(h.oos_mae)}</td>` +
    `<td>${esc(h.labels)}</td><td>${esc(h.new)}</td></tr>`).join("");
  document.querySelector("#failed tbody").innerHTML = c.failed.length ? c.failed.map((f) =>
    `<tr><td>${esc(f.phase)} ${esc(f.iteration)} centre ${esc(f.centre)}</td>` +
    `<td style="text-align:left">${esc(f.error)}</td></tr>`).join("") :
    "<tr><td>none</td></tr>";
  document.querySelector("#workers tbody").innerHTML = c.workers.map((w) =>
    `<tr><td>${esc(w.host)}</td><td>${esc(w.fworker)}</td><td>${w.launches}</td>` +
    `<td>${w.running}</td><td>${esc(w.last)}</td></tr>`).join("");
  plot(c.history);
  document.body.dataset.drawn = String(Number(document.body.dataset.drawn || 0) + 1);
  document.body.dataset.records = String(c.history.length);
}
draw(); setInterval(draw, @@REFRESH@@ * 1000);
</script></body></html>
"""


def _page(template: str, refresh: float, name: str = "") -> bytes:
    text = template.replace("@@STYLE@@", _STYLE).replace("@@REFRESH@@", f"{refresh:g}")
    text = text.replace("@@JSON_NAME@@", json.dumps(name)).replace("@@NAME@@", html.escape(name))
    return text.encode()


def make_handler(
    db: Any, lp: Any, refresh: float, password: str | None
) -> type[BaseHTTPRequestHandler]:
    """The request handler: GET only, every answer computed from the database at once."""
    lock = threading.Lock()  # one query at a time on the shared connection's cursors

    class Handler(BaseHTTPRequestHandler):
        server_version = "nft-fw-serve"

        def log_message(self, fmt: str, *args: Any) -> None:  # quiet: one line per error only
            return

        def _send(self, code: int, body: bytes, kind: str) -> None:
            self.send_response(code)
            self.send_header("Content-Type", kind)
            self.send_header("Cache-Control", "no-store")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def _authorised(self) -> bool:
            if password is None:
                return True
            given = self.headers.get("Authorization", "")
            want = "Basic " + base64.b64encode(f"{USER}:{password}".encode()).decode()
            if hmac.compare_digest(given.encode(), want.encode()):
                return True
            self.send_response(401)
            self.send_header("WWW-Authenticate", 'Basic realm="nft-fw"')
            self.send_header("Content-Length", "0")
            self.end_headers()
            return False

        def do_GET(self) -> None:
            if not self._authorised():
                return
            path = urllib.parse.urlparse(self.path).path
            routes: dict[str, Callable[[], tuple[int, bytes, str]]] = {
                "/": lambda: (200, _page(_INDEX, refresh), "text/html; charset=utf-8"),
                "/api/campaigns": lambda: (
                    200, json.dumps(campaigns_snapshot(db, lp)).encode(), "application/json"
                ),
            }  # fmt: skip
            try:
                with lock:
                    if path in routes:
                        code, body, kind = routes[path]()
                    elif path.startswith("/campaign/"):
                        name = urllib.parse.unquote(path[len("/campaign/") :])
                        campaign_snapshot(db, lp, name)  # 404 for an unknown name
                        code, body, kind = 200, _page(_CAMPAIGN, refresh, name), "text/html"
                    elif path.startswith("/api/campaign/"):
                        name = urllib.parse.unquote(path[len("/api/campaign/") :])
                        snap = campaign_snapshot(db, lp, name)
                        code, body, kind = 200, json.dumps(snap).encode(), "application/json"
                    else:
                        code, body, kind = 404, b"not found", "text/plain"
            except KeyError as err:
                code, body, kind = 404, str(err).encode(), "text/plain"
            self._send(code, body, kind)

    return Handler


def cmd_serve(args: argparse.Namespace) -> int:
    password = None
    if args.password_env:
        password = os.environ.get(args.password_env)
        if not password:
            raise UsageError(f"--password-env {args.password_env}: that variable is empty or unset")
    if args.host not in LOOPBACK and password is None:
        raise UsageError(
            f"--host {args.host} serves the campaigns beyond this machine: give "
            "--password-env VAR (HTTP basic auth, user nft-fw, the password in $VAR), or keep "
            "the default 127.0.0.1 and reach it through an SSH tunnel"
        )
    if args.refresh <= 0:
        raise UsageError(f"--refresh {args.refresh}: give a positive number of seconds")
    conn = _open(args)
    try:
        handler = make_handler(conn.launchpad.db, conn.launchpad, args.refresh, password)
        server = ThreadingHTTPServer((args.host, args.port), handler)
        host, port = str(server.server_address[0]), int(server.server_address[1])
        console.print(f"nft-fw serve: http://{host}:{port}/ (read-only; Ctrl-C stops it)")
        try:
            server.serve_forever()
        except KeyboardInterrupt:
            pass
        finally:
            server.server_close()
    finally:
        conn.close(stop_server=conn.started_server)
    return EXIT_OK


def register(sub: Any) -> None:
    """Add ``serve`` to ``sub``."""
    p = sub.add_parser("serve", help="a live page of the campaigns (read-only)")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default loopback)")
    p.add_argument("--port", type=int, default=8750, help="port (default 8750; 0: any free)")
    p.add_argument("--refresh", type=float, default=5.0, help="seconds between redraws (5)")
    p.add_argument(
        "--password-env", metavar="VAR",
        help="HTTP basic auth (user nft-fw) with the password in $VAR; needed beyond loopback",
    )  # fmt: skip
    _add_connection_options(p)
    p.set_defaults(func=cmd_serve)
