"""The cloud's status page: plain HTML with inline SVG charts, Prometheus `/metrics`, `/api/rounds` JSON.

Served by the standard library's ThreadingHTTPServer on its own daemon thread; it only reads the
coordinator's immutable snapshot (a dict swapped in whole), so no lock is needed. No JavaScript, no CDN:
the page renders offline and refreshes itself with a meta refresh. Every value from the network (node
ids, states, reasons) is HTML-escaped.
"""

from __future__ import annotations

import html
import json
import logging
import math
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from aggregator_gateway.cloud.records import RecordState

logger = logging.getLogger(__name__)

Snapshot = Callable[[], dict[str, Any]]
_CHART_W, _CHART_H, _PAD = 420, 160, 30
_FAILED = RecordState.FAILED.value


def _fmt(value: Any, digits: int = 4) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:.{digits}g}" if math.isfinite(value) else "∞"
    return html.escape(str(value))


def svg_line_chart(title: str, points: list[tuple[float, float]], *, css_class: str) -> str:
    """A small inline SVG polyline of (x, y) points with the title and y range written as text."""
    head = (
        f'<svg class="{css_class}" width="{_CHART_W}" height="{_CHART_H}" role="img" '
        f'aria-label="{html.escape(title)}" xmlns="http://www.w3.org/2000/svg">'
    )
    frame = (
        f'<rect x="0" y="0" width="{_CHART_W}" height="{_CHART_H}" fill="#fafafa" stroke="#ccc"/>'
        f'<text x="{_PAD}" y="16" font-size="12">{html.escape(title)}</text>'
    )
    if not points:
        return f'{head}{frame}<text x="{_PAD}" y="80" font-size="12">no data yet</text></svg>'
    xs, ys = [p[0] for p in points], [p[1] for p in points]
    x_lo, x_hi = min(xs), max(xs) if max(xs) > min(xs) else min(xs) + 1
    y_lo, y_hi = min(ys), max(ys) if max(ys) > min(ys) else min(ys) + 1

    def at(x: float, y: float) -> str:
        px = _PAD + (x - x_lo) / (x_hi - x_lo) * (_CHART_W - 2 * _PAD)
        py = _CHART_H - _PAD - (y - y_lo) / (y_hi - y_lo) * (_CHART_H - 2 * _PAD)
        return f"{px:.1f},{py:.1f}"

    coords = " ".join(at(x, y) for x, y in points)
    line = f'<polyline fill="none" stroke="#1f77b4" stroke-width="2" points="{coords}"/>'
    labels = (
        f'<text x="2" y="{_PAD}" font-size="10">{_fmt(y_hi)}</text>'
        f'<text x="2" y="{_CHART_H - _PAD}" font-size="10">{_fmt(y_lo)}</text>'
    )
    return f"{head}{frame}{line}{labels}</svg>"


def _series(rounds: list[dict[str, Any]], key: str) -> list[tuple[float, float]]:
    return [
        (float(r["round"]), float(r[key]))
        for r in rounds
        if isinstance(r.get(key), (int, float)) and math.isfinite(r[key])
    ]


def _node_row(name: str, node: dict[str, Any]) -> str:
    details = node.get("details", {})
    cells = (name, node.get("state"), node.get("reason"), details.get("round"), details.get("train_loss"))
    return '<tr class="node-row">' + "".join(f"<td>{_fmt(c)}</td>" for c in cells) + "</tr>"


def render_html(snapshot: dict[str, Any]) -> str:
    """The whole status page for one snapshot."""
    rounds = snapshot.get("rounds", [])
    row_keys = (
        "round",
        "state",
        "model_version",
        "reported",
        "survivors",
        "dropped",
        "train_loss",
        "eval_loss",
        "epsilon",
        "seconds",
    )
    head = "".join(f"<th>{k}</th>" for k in row_keys)
    rows = "".join(
        f'<tr class="round-row" data-round="{int(r["round"])}">'
        + "".join(f"<td>{_fmt(r.get(k))}</td>" for k in row_keys)
        + "</tr>"
        for r in rounds
    )
    nodes = "".join(_node_row(name, n) for name, n in snapshot.get("nodes", {}).items())
    completed = [r for r in rounds if r.get("state") == RecordState.COMPLETED.value]
    loss = _series(completed, "train_loss") or _series(completed, "eval_loss")
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><meta http-equiv="refresh" content="5">
<title>fedlora cloud {_fmt(snapshot.get("fleet"))}</title>
<style>body{{font-family:sans-serif;margin:1em}}table{{border-collapse:collapse}}
td,th{{border:1px solid #ccc;padding:2px 6px;text-align:right}}</style></head><body>
<h1>fedlora cloud <span id="fleet">{_fmt(snapshot.get("fleet"))}</span></h1>
<p id="summary">state <b id="state">{_fmt(snapshot.get("state"))}</b>
· round {_fmt(snapshot.get("current_round"))} · model version {_fmt(snapshot.get("model_version"))}
· completed {len(completed)} of {_fmt(snapshot.get("rounds_planned"))}
· ε = {_fmt(snapshot.get("epsilon"))} at δ = {_fmt(snapshot.get("delta"))}</p>
<h2>Rounds</h2><table id="rounds"><thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table>
<h2>Curves</h2>{svg_line_chart("loss per round", loss, css_class="loss-chart")}
{svg_line_chart("epsilon per round", _series(completed, "epsilon"), css_class="epsilon-chart")}
<h2>Nodes</h2><table id="nodes"><thead><tr><th>node</th><th>state</th><th>reason</th><th>round</th>
<th>train_loss</th></tr></thead><tbody>{nodes}</tbody></table>
<p><a href="/metrics">/metrics</a> · <a href="/api/rounds">/api/rounds</a></p></body></html>
"""


def render_metrics(snapshot: dict[str, Any]) -> str:
    """Prometheus text exposition (version 0.0.4) of the latest round and totals."""
    rounds = snapshot.get("rounds", [])
    completed = [r for r in rounds if r.get("state") == RecordState.COMPLETED.value]
    last = completed[-1] if completed else {}
    gauges = {
        "fedlora_round": (
            "current (or last) round id",
            snapshot.get("current_round") or last.get("round", 0),
        ),
        "fedlora_model_version": ("latest published model version", snapshot.get("model_version") or 0),
        "fedlora_rounds_completed": ("completed rounds", len(completed)),
        "fedlora_rounds_failed": ("failed round attempts", sum(r.get("state") == _FAILED for r in rounds)),
        "fedlora_epsilon": ("epsilon spent so far (+Inf without DP)", snapshot.get("epsilon")),
        "fedlora_delta": ("delta of the epsilon", snapshot.get("delta")),
        "fedlora_survivors": ("survivors of the last completed round", last.get("survivors", 0)),
        "fedlora_reported": ("devices that reported the last completed round", last.get("reported", 0)),
        "fedlora_dropped": ("devices dropped in the last completed round", last.get("dropped", 0)),
        "fedlora_train_loss": ("mean train loss of the last completed round", last.get("train_loss")),
        "fedlora_uplink_bytes_per_device": (
            "packed uplink bytes per device",
            last.get("uplink_bytes_per_device", 0),
        ),
    }
    lines = []
    for name, (help_text, value) in gauges.items():
        if value is None and name != "fedlora_epsilon":
            continue
        number = "+Inf" if value is None else repr(float(value))
        lines += [f"# HELP {name} {help_text}", f"# TYPE {name} gauge", f"{name} {number}"]
    return "\n".join(lines) + "\n"


class _Handler(BaseHTTPRequestHandler):
    snapshot: Snapshot  # set on the subclass made by StatusPage

    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        snap = type(self).snapshot()
        path = self.path.split("?", 1)[0]
        if path in ("/", "/index.html"):
            self._send(200, "text/html; charset=utf-8", render_html(snap))
        elif path == "/metrics":
            self._send(200, "text/plain; version=0.0.4; charset=utf-8", render_metrics(snap))
        elif path == "/api/rounds":
            self._send(200, "application/json", json.dumps({"rounds": snap.get("rounds", [])}, indent=1))
        else:
            self._send(404, "text/plain; charset=utf-8", "not found\n")

    def _send(self, code: int, content_type: str, body: str) -> None:
        data = body.encode()
        self.send_response(code)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - http.server's signature
        logger.debug("status page: " + format, *args)


class StatusPage:
    """The HTTP server; `start()` binds (port 0 picks a free one, see `port`) and serves on a thread."""

    def __init__(self, snapshot: Snapshot, *, host: str, port: int) -> None:
        handler = type("StatusHandler", (_Handler,), {"snapshot": staticmethod(snapshot)})
        self._server = ThreadingHTTPServer((host, port), handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, name="status-page", daemon=True)

    @property
    def port(self) -> int:
        """The bound port."""
        return int(self._server.server_address[1])

    def start(self) -> None:
        """Serve in the background."""
        self._thread.start()
        logger.info("status page on http://%s:%d/", self._server.server_address[0], self.port)

    def stop(self) -> None:
        """Stop serving and close the socket."""
        self._server.shutdown()
        self._server.server_close()
