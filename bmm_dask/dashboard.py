"""A page of our own on the Dask dashboard, /bmm-dask: the objective of each fit, by iteration.

``bmm-dask fit`` adds it to the scheduler it runs on (as a scheduler plugin, so bmm_dask must be
importable where the scheduler runs); in Python, ``client.register_plugin(ProgressPage())``. It
draws the events that the fit logs on the scheduler (topic ``bmm-dask``), refreshes itself every
two seconds, and needs no network beyond the dashboard: plain HTML, inline SVG, no scripts.

Above the runs, the jobs submitted to the cluster (``bmm-dask submit``), newest first: their
state, where they are, and how they ended.

A selection of the number of components (``bmm-dask select``) logs one event per shared
iteration with a record per candidate still running; each candidate is drawn as a run of its
own ("K = 10: iteration 12").

For each run (newest first) it shows where the fit is (pass p of P and step s of S of a stepwise
fit, with the time into the pass and the rows per second; else the iteration), two charts that
share the iteration axis, and a table of the last iterations:

- the objective, on a scale set by the iterations from the second on: the first, from the starting
  values, sits so far below the rest (hundreds of nats per sample at K = 30, where the later steps
  move by 1e-4) that a scale which holds it shows one vertical line and then a flat one;
- the change in the objective at each iteration, on a log scale. EM's steps shrink roughly
  geometrically, so the approach to convergence is a straight line there, and the stopping test
  compares this very number to ``tol``. (The distance to the best objective so far would show the
  same slope, but it is zero at the newest iteration, the one a person is watching.)
"""

from __future__ import annotations

import html
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from distributed.diagnostics.plugin import SchedulerPlugin
from tornado import web

from bmm_dask._events import EVENT_TOPIC as TOPIC
from bmm_dask.jobs import METADATA_KEY as JOBS_KEY
from bmm_dask.jobs import describe_progress

__all__ = ["PAGE", "ProgressPage", "render"]

#: Where the page lives on the dashboard, after the dashboard's prefix when it has one.
PAGE = "/bmm-dask"
#: Seconds between the page's reloads.
REFRESH = 2
#: Runs drawn (newest first; each candidate of a selection of K is a run) and table rows
#: under each.
SHOWN_RUNS = 8
SHOWN_ROWS = 10
#: Jobs listed (newest first).
SHOWN_JOBS = 20
#: Keys of the events that say where a stepwise fit is, shown when present.
POSITION_KEYS = ("pass", "step")

BLUE = "#1f77b4"
RED = "#d62728"
GRID = "#e5e5e5"
BORDER = "#ddd"
INK = "#333"

Record = dict[str, Any]


def _number(value: Any) -> float | None:
    """The value as a finite float, else None (the fit logs None for -inf and NaN)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if math.isfinite(value) else None


def _x(record: Record) -> float | None:
    """The record's place on the x axis: the iteration, else the step of a stepwise fit."""
    x = _number(record.get("iteration"))
    return x if x is not None else _number(record.get("step"))


def _candidate(record: Record) -> str:
    """'K = 10' (and ', start 2' from the second start) for a candidate of a selection."""
    start = _number(record.get("start"))
    label = f"K = {_text(record.get('n_components'))}"
    return label + (f", start {int(start) + 1}" if start else "")


def _runs(events: Sequence[tuple[float, Any]]) -> list[list[Record]]:
    """Iteration records split into runs (a new run whenever the iteration count restarts);
    the candidates of a selection of K, whose records come together in one event per shared
    iteration, a run each."""
    runs: list[list[Record]] = []
    selection: dict[str, list[Record]] = {}  # the runs of the selection under way, by label
    for _, event in events:
        if not isinstance(event, dict) or event.get("kind") != "iteration":
            continue
        if isinstance(event.get("candidates"), list):
            if _number(event.get("iteration")) == 1:
                selection = {}  # a new selection
            for candidate in event["candidates"]:
                if not isinstance(candidate, dict) or _x(candidate) is None:
                    continue
                label = _candidate(candidate)
                if label not in selection:
                    selection[label] = []
                    runs.append(selection[label])
                selection[label].append({**candidate, "candidate": label})
            continue
        x = _x(event)
        if x is None:
            continue
        if not runs or x <= (_x(runs[-1][-1]) or 0):
            runs.append([])
        runs[-1].append(event)
    return runs


# Numbers as a person reads them: the objective (nats per sample, tens to hundreds) with 4
# decimals, which is where a converging fit still moves; changes with 4 significant digits in
# e-notation, so that a column of shrinking changes lines up and its exponent reads at a glance.


def _objective(value: Any) -> str:
    number = _number(value)
    return "n/a" if number is None else f"{number:.4f}"


def _significant(value: Any, *, signed: bool = False) -> str:
    number = _number(value)
    if number is None:
        return "n/a"
    return f"{number:+.3e}" if signed else f"{number:.3e}"


def _seconds(value: Any) -> str:
    number = _number(value)
    return "n/a" if number is None else f"{number:.2f}"


def _text(value: Any) -> str:
    number = _number(value)
    if number is not None and number == int(number):
        return str(int(number))
    return f"{number:.4g}" if number is not None else html.escape(str(value))


def _position(record: Record) -> str:
    """Where the fit is: 'pass 2 of 10, step 140 of 234' for a stepwise fit (its step within
    the pass, when the events carry it), else 'iteration 12' (after 'K = 10: ' for a candidate
    of a selection)."""
    if "step_in_pass" in record and "pass" in record:  # as a job's progress says it
        keys = ("pass", "passes", "step_in_pass", "steps_in_pass")
        return html.escape(describe_progress({k: record.get(k) for k in keys}))
    shown = [f"{key} {_text(record[key])}" for key in POSITION_KEYS if key in record]
    if "candidate" in record:
        return f"{html.escape(record['candidate'])}: " + _position(
            {k: v for k, v in record.items() if k != "candidate"}
        )
    if record.get("iteration") is not None or not shown:
        shown.append(f"iteration {_text(record.get('iteration'))}")
    return ", ".join(shown)


# Charts: inline SVG with ticks at round numbers.


def _step(span: float, count: int) -> float:
    """The round step (1, 2 or 5 times a power of ten) nearest to ``span / count``."""
    raw = span / max(count, 1)
    power = 10 ** math.floor(math.log10(raw))
    return min((m * power for m in (1, 2, 5, 10)), key=lambda step: abs(math.log(step / raw)))


def _ticks(low: float, high: float, count: int = 5) -> list[tuple[float, str]]:
    """Round values from ``low`` to ``high``, each with its label (decimals from the step)."""
    step = _step(high - low, count)
    decimals = max(0, -math.floor(math.log10(step)))
    first = math.ceil(low / step - 1e-9)
    values = [(first + i) * step for i in range(int((high - low) / step + 2))]
    # + 0.0 turns a -0.0 into 0.0, so no tick reads "-0.00".
    return [
        (v, f"{round(v, decimals) + 0.0:.{decimals}f}") for v in values if v <= high + step * 1e-9
    ]


@dataclass(frozen=True)
class _Frame:
    """The plot area of one chart and the map from data to SVG coordinates."""

    x0: float
    x1: float
    y0: float
    y1: float
    width: int = 450
    height: int = 270
    left: int = 84
    right: int = 16
    top: int = 34
    bottom: int = 44

    def px(self, x: float) -> float:
        return self.left + (x - self.x0) / (self.x1 - self.x0) * (
            self.width - self.left - self.right
        )

    def py(self, y: float) -> float:
        inner = self.height - self.top - self.bottom
        return self.height - self.bottom - (y - self.y0) / (self.y1 - self.y0) * inner

    def at(self, x: float, y: float) -> str:
        return f"{self.px(x):.1f},{self.py(y):.1f}"


def _x_ticks(frame: _Frame) -> list[tuple[float, str]]:
    """Whole iterations only: a step of at least 1."""
    step = max(1, round(_step(frame.x1 - frame.x0, 6)))
    first = math.ceil(frame.x0 / step) * step
    return [(float(x), str(x)) for x in range(int(first), int(frame.x1) + 1, step)]


def _axes(
    frame: _Frame, y_ticks: list[tuple[float, str]], title: str, y_label: str, clip: str
) -> list[str]:
    """Frame, grid, ticks with their numbers, axis titles, and the clip path of the plot area."""
    f = frame
    bottom, right = f.height - f.bottom, f.width - f.right
    parts = [
        f'<defs><clipPath id="{clip}"><rect x="{f.left}" y="{f.top}" width="{right - f.left}" '
        f'height="{bottom - f.top}"/></clipPath></defs>',
        f'<rect x="0.5" y="0.5" width="{f.width - 1}" height="{f.height - 1}" fill="white" '
        f'stroke="{BORDER}"/>',
        f'<text x="{f.left}" y="20" font-size="14" font-weight="bold" fill="{INK}">'
        f"{html.escape(title)}</text>",
    ]
    for x, label in _x_ticks(f):
        sx = f"{f.px(x):.1f}"
        parts.append(f'<line x1="{sx}" x2="{sx}" y1="{f.top}" y2="{bottom}" stroke="{GRID}"/>')
        parts.append(f'<line x1="{sx}" x2="{sx}" y1="{bottom}" y2="{bottom + 5}" stroke="{INK}"/>')
        parts.append(
            f'<text x="{sx}" y="{bottom + 18}" font-size="12" text-anchor="middle" '
            f'fill="{INK}">{label}</text>'
        )
    for y, label in y_ticks:
        sy = f"{f.py(y):.1f}"
        parts.append(f'<line x1="{f.left}" x2="{right}" y1="{sy}" y2="{sy}" stroke="{GRID}"/>')
        parts.append(f'<line x1="{f.left - 5}" x2="{f.left}" y1="{sy}" y2="{sy}" stroke="{INK}"/>')
        parts.append(
            f'<text x="{f.left - 8}" y="{sy}" dy="4" font-size="12" text-anchor="end" '
            f'fill="{INK}">{label}</text>'
        )
    parts.append(
        f'<rect x="{f.left}" y="{f.top}" width="{right - f.left}" height="{bottom - f.top}" '
        f'fill="none" stroke="{INK}"/>'
    )
    parts.append(
        f'<text x="{(f.left + right) / 2:.1f}" y="{f.height - 6}" font-size="12" '
        f'text-anchor="middle" fill="{INK}">iteration</text>'
    )
    middle = (f.top + bottom) / 2
    parts.append(
        f'<text transform="translate(13,{middle:.1f}) rotate(-90)" font-size="12" '
        f'text-anchor="middle" fill="{INK}">{html.escape(y_label)}</text>'
    )
    return parts


def _empty(message: str) -> list[str]:
    """A panel with nothing to draw yet, which says why."""
    f = _Frame(0, 1, 0, 1)
    return [
        f'<rect x="0.5" y="0.5" width="{f.width - 1}" height="{f.height - 1}" fill="white" '
        f'stroke="{BORDER}"/><text x="{f.width / 2}" y="{f.height / 2}" font-size="13" '
        f'text-anchor="middle" fill="#666">{html.escape(message)}</text>'
    ]


def _svg(panels: list[list[str]], label: str) -> str:
    """One picture for a run: its panels side by side, scaled down on a narrow window."""
    f, gap = _Frame(0, 1, 0, 1), 16
    width = len(panels) * f.width + (len(panels) - 1) * gap
    groups = "".join(
        f'<g transform="translate({i * (f.width + gap)},0)">{"".join(parts)}</g>'
        for i, parts in enumerate(panels)
    )
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{f.height}" '
        f'viewBox="0 0 {width} {f.height}" role="img" aria-label="{html.escape(label)}">'
        f"{groups}</svg>"
    )


def _objective_chart(run: list[Record], x0: float, x1: float, clip: str) -> list[str]:
    points = [(_x(r), _number(r.get("objective"))) for r in run]
    points = [(x, y) for x, y in points if x is not None and y is not None]
    if not points:
        return _empty("no finite objective yet")
    # The scale starts at the second iteration (see the module's docstring); the first is drawn
    # all the same, clipped, so the line comes in from below the chart.
    scaled = [y for _, y in points[1:]] or [points[0][1]]
    low, high = min(scaled), max(scaled)
    pad = max((high - low) * 0.06, abs(high) * 1e-4, 1e-9)
    frame = _Frame(x0, x1, low - pad, high + pad)
    parts = _axes(
        frame,
        _ticks(frame.y0, frame.y1),
        "Objective (scale from iteration 2)" if len(points) > 1 else "Objective",
        "nats per sample",
        clip,
    )
    line = " ".join(frame.at(x, y) for x, y in points)
    parts.append(
        f'<g clip-path="url(#{clip})"><polyline points="{line}" fill="none" stroke="{BLUE}" '
        f'stroke-width="2" stroke-linejoin="round"/></g>'
    )
    x, y = points[-1]
    parts.append(f'<circle cx="{frame.px(x):.1f}" cy="{frame.py(y):.1f}" r="4" fill="{BLUE}"/>')
    first_x, first_y = points[0]
    if len(points) > 1 and first_y < frame.y0:
        parts.append(
            f'<text x="{frame.width - frame.right}" y="{frame.height - frame.bottom - 6}" '
            f'font-size="11" text-anchor="end" fill="#666">iteration {_text(first_x)}: '
            f"{_objective(first_y)}, below the scale</text>"
        )
    return parts


def _log_label(power: int) -> str:
    """10 to the ``power``, written as a person writes it."""
    return f'10<tspan dy="-6" font-size="9">{power}</tspan>'


def _change_chart(run: list[Record], x0: float, x1: float, clip: str) -> list[str]:
    points = [(_x(r), _number(r.get("change"))) for r in run]
    points = [(x, c) for x, c in points if x is not None and c is not None and c != 0]
    if not points:
        return _empty("the change shows from the second iteration")
    logs = [math.log10(abs(c)) for _, c in points]
    tol = _number(run[-1].get("tol"))
    if tol is not None and tol > 0:
        logs.append(math.log10(tol))
    low, high = math.floor(min(logs)), math.ceil(max(logs))
    if high == low:
        high += 1
    frame = _Frame(x0, x1, low, high)
    every = max(1, math.ceil((high - low) / 6))
    y_ticks = [(float(p), _log_label(p)) for p in range(low, high + 1, every)]
    parts = _axes(
        frame, y_ticks, "Change in the objective (log scale)", "|change|, nats per sample", clip
    )
    if tol is not None and tol > 0:
        sy = f"{frame.py(math.log10(tol)):.1f}"
        parts.append(
            f'<line x1="{frame.left}" x2="{frame.width - frame.right}" y1="{sy}" y2="{sy}" '
            f'stroke="#888" stroke-dasharray="5,4"/>'
            f'<text x="{frame.width - frame.right - 4}" y="{sy}" dy="-4" font-size="11" '
            f'text-anchor="end" fill="#666">tol</text>'
        )
    line = " ".join(frame.at(x, math.log10(abs(c))) for x, c in points)
    parts.append(
        f'<g clip-path="url(#{clip})"><polyline points="{line}" fill="none" stroke="{BLUE}" '
        f'stroke-width="2" stroke-linejoin="round"/>'
    )
    # A fall of the objective (a re-seeded component, a stepwise step) is marked in red.
    for x, c in points:
        if c < 0:
            parts.append(
                f'<circle cx="{frame.px(x):.1f}" cy="{frame.py(math.log10(-c)):.1f}" r="4" '
                f'fill="white" stroke="{RED}" stroke-width="2"/>'
            )
    x, c = points[-1]
    colour = RED if c < 0 else BLUE
    parts.append(
        f'<circle cx="{frame.px(x):.1f}" cy="{frame.py(math.log10(abs(c))):.1f}" r="4" '
        f'fill="{colour}"/></g>'
    )
    if any(c < 0 for _, c in points):
        parts.append(
            f'<circle cx="{frame.left + 10}" cy="{frame.top + 12}" r="4" fill="white" '
            f'stroke="{RED}" stroke-width="2"/><text x="{frame.left + 18}" y="{frame.top + 16}" '
            f'font-size="11" fill="#666">objective fell</text>'
        )
    return parts


def _table(run: list[Record]) -> str:
    positions = [key for key in POSITION_KEYS if any(key in r for r in run)]
    headers = [*positions, "iteration", "objective", "change", "mean shift", "seconds", "re-seeded"]
    rows = []
    for r in reversed(run[-SHOWN_ROWS:]):  # newest first, where the eye is
        cells = [_text(r.get(key, "")) for key in positions]
        cells += [
            _text(r.get("iteration", "")),
            _objective(r.get("objective")),
            _significant(r.get("change"), signed=True),
            _significant(r.get("mean_shift")),
            _seconds(r.get("seconds")),
            _text(r.get("reseeded", 0)),
        ]
        rows.append("<tr>" + "".join(f"<td>{cell}</td>" for cell in cells) + "</tr>")
    head = "".join(f"<th>{h}</th>" for h in headers)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table>"


def _run(number: int, run: list[Record], newest: bool) -> str:
    last = run[-1]
    xs = [x for x in map(_x, run) if x is not None]
    x0, x1 = min(xs), max(max(xs), min(xs) + 1)
    seconds = [s for s in (_number(r.get("seconds")) for r in run) if s is not None]
    summary = [
        f"objective <b>{_objective(last.get('objective'))}</b> nats per sample",
        f"change {_significant(last.get('change'), signed=True)}",
    ]
    rows, elapsed = _number(last.get("rows")), _number(last.get("seconds"))
    if "step_in_pass" in last and rows and elapsed:  # a stepwise pass under way
        summary.append(
            f"{_seconds(elapsed)} s into the pass, {rows / elapsed:,.0f} rows per second"
        )
    elif seconds:
        summary.append(f"{_seconds(sum(seconds) / len(seconds))} s per iteration")
    picture = _svg(
        [
            _objective_chart(run, x0, x1, f"objective-{number}"),
            _change_chart(run, x0, x1, f"change-{number}"),
        ],
        f"run {number}: the objective by iteration, and its change on a log scale",
    )
    return (
        f"<section><h2>Run {number}: {_position(last)}{' (newest)' if newest else ''}</h2>"
        f'<p class="summary">{" &middot; ".join(summary)}</p>'
        f'<div class="charts">{picture}</div>{_table(run)}</section>'
    )


STYLE = (
    "body{font-family:system-ui,sans-serif;margin:1.2em 1.5em;color:#222}"
    "nav{margin-bottom:.5em}nav a{color:#1f5fa0;text-decoration:none;font-weight:600}"
    "h1{font-size:1.5em;margin:.2em 0}h2{font-size:1.2em;margin:1.2em 0 .2em}"
    ".note{color:#666;margin:.2em 0}.summary{font-size:1.1em;margin:.3em 0 .6em}"
    ".charts svg{max-width:100%;height:auto}"
    "table{border-collapse:collapse;margin-top:.8em;font-variant-numeric:tabular-nums}"
    "td,th{border:1px solid #ddd;padding:.2em .7em;text-align:right}th{background:#f4f4f4}"
)


def _jobs(jobs: Sequence[Record], now: float) -> list[str]:
    """The cluster's jobs (``bmm-dask submit``), newest first: state, progress, output."""
    if not jobs:
        return []
    rows = []
    for job in sorted(jobs, key=lambda j: -(_number(j.get("submitted")) or 0))[:SHOWN_JOBS]:
        where = describe_progress(job.get("progress") or {})
        started = _number(job.get("started"))
        ended = _number(job.get("ended"))
        elapsed = "-" if started is None else f"{(ended or now) - started:.0f} s"
        rows.append(
            "<tr>"
            + "".join(
                f"<td>{html.escape(str(cell))}</td>"
                for cell in (
                    job.get("id", "?"),
                    job.get("state", "?"),
                    where,
                    elapsed,
                    job.get("output") or "-",
                    job.get("message") or "",
                )
            )
            + "</tr>"
        )
    head = "".join(
        f"<th>{h}</th>" for h in ("job", "state", "where", "elapsed", "output", "last line")
    )
    return [
        "<h2>Jobs</h2>",
        f'<table class="jobs"><tr>{head}</tr>{"".join(rows)}</table>',
    ]


def render(
    events: Sequence[tuple[float, Any]],
    now: float | None = None,
    jobs: Sequence[Record] = (),
) -> str:
    """The page for the events of topic ``bmm-dask``: the last runs, newest first.

    Parameters
    ----------
    events : sequence of (timestamp, event)
        As ``Scheduler.get_events("bmm-dask")`` gives them; events other than iteration records
        are left out.
    now : float, default=None
        The time (``time.time()``) that "last iteration ... ago" counts from; None means now.
    jobs : sequence of dict, default=()
        The records of the cluster's jobs (``bmm-dask submit``), listed above the runs.

    Returns
    -------
    str
        A whole HTML page, which reloads itself every ``REFRESH`` seconds.
    """
    runs = _runs(events)
    times = [t for t, e in events if isinstance(e, dict) and e.get("kind") == "iteration"]
    # A relative link, so it finds the status page under the dashboard's prefix, or behind a
    # proxy such as Jupyter's, as well as at the root.
    parts = [
        '<nav><a href="status">&larr; Dask dashboard</a></nav>',
        "<h1>bmm-dask: EM progress</h1>",
    ]
    note = f"Reloads every {REFRESH} seconds."
    if times:
        ago = max(0.0, (time.time() if now is None else now) - max(times))
        note += f" Last iteration logged {ago:.0f} s ago."
    parts.append(f'<p class="note">{note}</p>')
    parts += _jobs(jobs, time.time() if now is None else now)
    if not runs:
        parts.append("<p>No fit has run on this cluster yet.</p>")
    shown = list(enumerate(runs, start=1))[-SHOWN_RUNS:]
    for number, run in reversed(shown):
        parts.append(_run(number, run, newest=len(runs) > 1 and number == len(runs)))
    title = f"bmm-dask: {_position(runs[-1][-1])}" if runs else "bmm-dask progress"
    return (
        '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
        f'<meta http-equiv="refresh" content="{REFRESH}"><title>{title}</title>'
        f"<style>{STYLE}</style></head><body>" + "".join(parts) + "</body></html>"
    )


def _prefix(application: Any) -> str:
    """The dashboard's prefix ('' or '/dask'), read off the route of distributed's /health page.

    The scheduler keeps no copy of the ``http_prefix`` it was started with.
    """
    rules = getattr(getattr(application, "wildcard_router", None), "rules", [])
    for rule in rules:
        pattern = getattr(getattr(rule.matcher, "regex", None), "pattern", "")
        if pattern.endswith("/health$"):
            return pattern[: -len("/health$")]
    return ""


class _Handler(web.RequestHandler):
    def initialize(self, scheduler: Any) -> None:
        self.scheduler = scheduler

    def get(self) -> None:
        self.set_header("Content-Type", "text/html; charset=utf-8")
        self.set_header("Cache-Control", "no-store")
        jobs = self.scheduler.get_metadata([JOBS_KEY], default={}) or {}
        records = [job for job in jobs.values() if isinstance(job, dict)]
        self.write(render(list(self.scheduler.get_events(TOPIC)), jobs=records))


class ProgressPage(SchedulerPlugin):
    """Adds the /bmm-dask page to the scheduler's dashboard (idempotent)."""

    name = "bmm-dask-progress-page"

    async def start(self, scheduler: Any) -> None:
        """Add the page to the scheduler's web application, once; nothing without a dashboard.

        Parameters
        ----------
        scheduler : distributed.Scheduler
            The scheduler the plugin is registered on.
        """
        application = getattr(scheduler, "http_application", None)
        if application is None or getattr(application, "_bmm_dask_page", False):
            return
        path = _prefix(application) + PAGE
        application.add_handlers(r".*$", [(path, _Handler, {"scheduler": scheduler})])
        application._bmm_dask_page = True
