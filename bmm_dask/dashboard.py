"""A page of our own on the Dask dashboard, /bmm-dask: the objective of each fit, by iteration.

``bmm-dask fit`` adds it to the scheduler it runs on (as a scheduler plugin, so bmm_dask must be
importable where the scheduler runs); in Python, ``client.register_plugin(ProgressPage())``. It
draws the events that the fit logs on the scheduler (topic ``bmm-dask``), refreshes itself every
two seconds, and needs no network beyond the dashboard: no scripts, an inline SVG.
"""

from __future__ import annotations

import html
from typing import Any

from distributed.diagnostics.plugin import SchedulerPlugin
from tornado import web

__all__ = ["PAGE", "ProgressPage", "render"]

#: Where the page lives on the dashboard.
PAGE = "/bmm-dask"
TOPIC = "bmm-dask"


def _runs(events: list[tuple[float, dict[str, Any]]]) -> list[list[dict[str, Any]]]:
    """Iteration records split into runs (a new run whenever the iteration count restarts)."""
    runs: list[list[dict[str, Any]]] = []
    for _, event in events:
        if not isinstance(event, dict) or event.get("kind") != "iteration":
            continue
        if not runs or event.get("iteration", 0) <= runs[-1][-1].get("iteration", 0):
            runs.append([])
        runs[-1].append(event)
    return runs


def _svg(run: list[dict[str, Any]], width: int = 640, height: int = 240) -> str:
    points = [
        (r["iteration"], r["objective"]) for r in run if isinstance(r.get("objective"), int | float)
    ]
    if not points:
        return ""
    xs, ys = [p[0] for p in points], [p[1] for p in points]
    x0, x1 = min(xs), max(max(xs), min(xs) + 1)
    y0, y1 = min(ys), max(max(ys), min(ys) + 1e-9)
    pad = 40

    def at(x: float, y: float) -> str:
        return f"{pad + (x - x0) / (x1 - x0) * (width - 2 * pad):.1f},{height - pad - (y - y0) / (y1 - y0) * (height - 2 * pad):.1f}"

    line = " ".join(at(x, y) for x, y in points)
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" role="img" '
        f'aria-label="objective by iteration">'
        f'<rect width="{width}" height="{height}" fill="white" stroke="#ccc"/>'
        f'<polyline points="{line}" fill="none" stroke="#1f77b4" stroke-width="2"/>'
        f'<text x="{pad}" y="20" font-size="12">objective (nats per sample): {y1:.4f} at the top, {y0:.4f} at the bottom</text>'
        f'<text x="{pad}" y="{height - 10}" font-size="12">iteration {x0} to {x1}</text></svg>'
    )


def render(events: list[tuple[float, dict[str, Any]]]) -> str:
    """The page for the events of topic ``bmm-dask``: the last runs, newest first."""
    runs = _runs(events)
    parts = ["<h1>bmm-dask: EM progress</h1>"]
    if not runs:
        parts.append("<p>No fit has run on this cluster yet.</p>")
    for number, run in reversed(list(enumerate(runs[-5:], start=max(1, len(runs) - 4)))):
        last = run[-1]
        parts.append(
            f"<h2>Run {number}: iteration {last['iteration']}, objective {last['objective']:.6f}, "
            f"change {last.get('change') if last.get('change') is not None else 'n/a'}</h2>"
        )
        parts.append(_svg(run))
        rows = "".join(
            f"<tr><td>{r['iteration']}</td><td>{r['objective']:.6f}</td><td>{html.escape(str(r.get('change')))}</td>"
            f"<td>{r.get('seconds', 0):.3f}</td><td>{r.get('reseeded', 0)}</td></tr>"
            for r in run[-10:]
        )
        parts.append(
            "<table><tr><th>iteration</th><th>objective</th><th>change</th><th>seconds</th>"
            f"<th>re-seeded</th></tr>{rows}</table>"
        )
    return (
        '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><meta http-equiv="refresh" content="2">'
        "<title>bmm-dask progress</title><style>body{font-family:sans-serif;margin:2em}"
        "td,th{border:1px solid #ccc;padding:.2em .6em}table{border-collapse:collapse}</style></head><body>"
        + "".join(parts)
        + "</body></html>"
    )


class _Handler(web.RequestHandler):
    def initialize(self, scheduler: Any) -> None:
        self.scheduler = scheduler

    def get(self) -> None:
        self.set_header("Content-Type", "text/html; charset=utf-8")
        self.write(render(list(self.scheduler.get_events(TOPIC))))


class ProgressPage(SchedulerPlugin):
    """Adds the /bmm-dask page to the scheduler's dashboard (idempotent)."""

    name = "bmm-dask-progress-page"

    async def start(self, scheduler: Any) -> None:
        application = getattr(scheduler, "http_application", None)
        if application is None or getattr(application, "_bmm_dask_page", False):
            return
        application.add_handlers(r".*$", [(PAGE, _Handler, {"scheduler": scheduler})])
        application._bmm_dask_page = True
