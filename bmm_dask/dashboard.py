"""A page of our own on the Dask dashboard, /bmm-dask: where each fit is, and its objective.

``bmm-dask fit`` adds it to the scheduler it runs on (as a scheduler plugin, so bmm_dask must be
importable where the scheduler runs); in Python, ``client.register_plugin(ProgressPage())``. It
draws the events that the fit logs on the scheduler (topic ``bmm-dask``), refreshes itself every
two seconds, and needs no network beyond the dashboard: plain HTML, inline SVG, no scripts.

Above the runs, the jobs submitted to the cluster (``bmm-dask submit``), newest first: their
state, where they are, and how they ended.

Each start of a fit is a run. It begins with a ``run`` event (K, the data's shape, the algorithm
and its limits, the data and the output), and its records follow, named by the run's id: one per
stepwise step, one at the end of each stepwise pass, one per batch iteration. For each run
(newest first) the page shows:

- where it is ("stepwise pass 2 of 3, step 56 of 120", "batch iteration 12 of at most 100"), and
  how it ended where its records say so; K, the data and the output; the time since it began and
  since its last record; rows per second, and seconds per step, pass or iteration;
- two charts that share one x axis: the passes and the batch iterations in the order they ran,
  one place each, the passes shaded, a line where the fit switches between them, and the pass in
  progress drawn by its steps within its place:

  - the objective, on a scale set by the passes and iterations from the second on: the first,
    from the starting values, sits so far below the rest (hundreds of nats per sample at
    K = 30, where the later steps move by 1e-4) that a scale which holds it shows one vertical
    line and then a flat one. Within the pass in progress, the running objective of its steps
    so far (its mini-batches' mean log-likelihood, without the prior);
  - the change in the objective at each pass and iteration, on a log scale. EM's steps shrink
    roughly geometrically, so the approach to convergence is a straight line there, and the
    stopping test compares this very number to ``tol``. (The distance to the best objective so
    far would show the same slope, but it is zero at the newest iteration, the one a person is
    watching.)

- a table of its last passes and iterations.

Events from versions without run events (no ``run`` key) are drawn as those versions drew them:
a new run whenever the iteration (or step) count goes back, on an axis of that count. A
selection of the number of components (``bmm-dask select``) logs one event per shared iteration
with a record per candidate still running; each candidate is drawn as a run of its own
("K = 10: iteration 12").
"""

from __future__ import annotations

import html
import itertools
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
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
#: Steps of the pass in progress drawn at most (evenly spaced, the newest always): a pass can
#: have thousands, and the page is built afresh every ``REFRESH`` seconds.
SHOWN_STEPS = 300
#: Keys of the events of older versions that say where a stepwise fit is, shown when present.
POSITION_KEYS = ("pass", "step")

BLUE = "#1f77b4"
RED = "#d62728"
ORANGE = "#ff7f0e"  # the running objective of the pass in progress
SHADE = "#fbe6c8"  # behind the stepwise passes
BROWN = "#9c4a00"  # the passes' label, and the lines where the fit switches phase
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
    """An older version's record's place on the x axis: the iteration, else the step."""
    x = _number(record.get("iteration"))
    return x if x is not None else _number(record.get("step"))


#: The kinds of the events that are records of a fit's progress (bmm_dask._events); events
#: of older versions were all "iteration", told apart by their keys as :func:`_kind` does.
RECORD_KINDS = ("iteration", "pass", "step")


def _kind(record: Record) -> str:
    """What a record is: a stepwise 'step', the end of a stepwise 'pass', or a batch
    'iteration' (told apart by their keys; a pass's record of an older version also has an
    iteration)."""
    if "step" in record:
        return "step"
    return "pass" if "pass" in record else "iteration"


def _candidate(record: Record) -> str:
    """'K = 10' (and ', start 2' from the second start) for a candidate of a selection."""
    start = _number(record.get("start"))
    label = f"K = {_text(record.get('n_components'))}"
    return label + (f", start {int(start) + 1}" if start else "")


@dataclass
class _Run:
    """One start of a fit: its run event and its records in order (a candidate of a selection,
    or a run of an older version's events, has no run event: ``named`` is False)."""

    named: bool
    info: Record = field(default_factory=dict)
    records: list[Record] = field(default_factory=list)
    #: When its run event, and its latest event, were logged.
    began: float | None = None
    last: float | None = None
    #: A later start of the same fit has begun, so this one has ended.
    ended: bool = False

    def add(self, record: Record, at: float) -> None:
        self.records.append(record)
        self.last = at


def _next_start(before: Record, event: Record) -> bool:
    """Whether the run event ``event`` is the start after ``before`` of the same fit."""
    same = ("n_components", "n_init", "n_samples", "n_features", "data", "output")
    start, previous = _number(event.get("start")), _number(before.get("start"))
    return (
        start is not None
        and previous == start - 1
        and all(before.get(key) == event.get(key) for key in same)
    )


def _runs(events: Sequence[tuple[float, Any]]) -> list[_Run]:
    """The runs, in the order they began: a run event and the records that name it; the
    candidates of a selection of K, whose records come together in one event per shared
    iteration, a run each; and records of older versions, which name no run, split into runs
    whenever their iteration count restarts."""
    runs: list[_Run] = []
    named: dict[str, _Run] = {}
    selection: dict[str, _Run] = {}  # the runs of the selection under way, by label
    for at, event in events:
        if not isinstance(event, dict):
            continue
        name = event.get("run")
        if event.get("kind") == "run" and isinstance(name, str):
            for before in reversed(runs):
                if before.named and _next_start(before.info, event):
                    before.ended = True
                    break
            named[name] = _Run(True, info=event, began=at, last=at)
            runs.append(named[name])
            continue
        if event.get("kind") not in RECORD_KINDS:
            continue
        if isinstance(event.get("candidates"), list):
            if _number(event.get("iteration")) == 1:
                selection = {}  # a new selection
            for candidate in event["candidates"]:
                if not isinstance(candidate, dict) or _x(candidate) is None:
                    continue
                label = _candidate(candidate)
                if label not in selection:
                    selection[label] = _Run(False)
                    runs.append(selection[label])
                selection[label].add({**candidate, "candidate": label}, at)
            continue
        if isinstance(name, str):
            if name not in named:  # its run event has left the scheduler's log of events
                named[name] = _Run(True)
                runs.append(named[name])
            named[name].add(event, at)
            continue
        x = _x(event)
        if x is None:
            continue
        older = runs[-1] if runs and not runs[-1].named else None
        if older is None or "candidate" in older.records[-1] or x <= (_x(older.records[-1]) or 0):
            runs.append(_Run(False))
        runs[-1].add(event, at)
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


def _duration(seconds: float) -> str:
    """'42 s', '12 min 05 s' or '3 h 07 min'."""
    whole = max(0, round(seconds))
    if whole < 60:
        return f"{whole} s"
    if whole < 3600:
        return f"{whole // 60} min {whole % 60:02d} s"
    return f"{whole // 3600} h {whole // 60 % 60:02d} min"


def _text(value: Any) -> str:
    number = _number(value)
    if number is not None and number == int(number):
        return str(int(number))
    return f"{number:.4g}" if number is not None else html.escape(str(value))


def _count(value: Any) -> str:
    """A count with thousands marked: '60,000'."""
    number = _number(value)
    return f"{number:,.0f}" if number is not None else _text(value)


def _position(record: Record) -> str:
    """Where an older version's fit (or a candidate of a selection) is: 'pass 2 of 10, step
    140 of 234' for a stepwise fit (its step within the pass, when the events carry it), else
    'iteration 12' (after 'K = 10: ' for a candidate of a selection)."""
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


def _passes(run: _Run) -> Any:
    """The number of passes the run's passes make: as its latest step says (a pass's end
    record does not), else as its run event does."""
    for record in reversed(run.records):
        if record.get("passes") is not None:
            return record["passes"]
        if _kind(record) == "iteration":
            break
    return run.info.get("passes")


def _ending(run: _Run) -> str | None:
    """How the run ended, where its events say so: 'converged' (its last record says so),
    'done' (its last batch iteration, or its last pass of a stepwise fit, was the last it
    may make), 'ended' (the next start of its fit has begun); else None."""
    if not run.records:
        return "ended" if run.ended else None
    last = run.records[-1]
    if last.get("converged") is True:
        return "converged"
    kind = _kind(last)
    limit = _number(run.info.get("max_iter"))
    if kind == "iteration" and limit and (_number(last.get("iteration")) or 0) >= limit:
        return "done"
    passes = _number(_passes(run))
    if (
        kind == "pass"
        and run.info.get("algorithm") == "stepwise"
        and passes
        and (_number(last.get("pass")) or 0) >= passes
    ):
        return "done"
    return "ended" if run.ended else None


def _phase(run: _Run) -> str:
    """Where a run is: 'stepwise pass 2 of 3, step 56 of 120', 'stepwise pass 2 of 3 ended',
    'batch iteration 12 of at most 100' (after 'start 2 of 5, ' when the fit makes several),
    and how it ended, where its events say so."""
    info = run.info
    start = ""
    if (_number(info.get("n_init")) or 1) > 1:
        start = f"start {_text(info.get('start'))} of {_text(info.get('n_init'))}, "
    ending = _ending(run)
    if not run.records:
        return f"{start}{ending or 'starting'}"
    last = run.records[-1]
    kind = _kind(last)
    if kind == "iteration":
        where = "batch " + describe_progress(
            {"iteration": last.get("iteration"), "max_iter": info.get("max_iter")}
        )
    else:
        progress = {"pass": last.get("pass"), "passes": _passes(run)}
        if kind == "step":
            progress.update(
                step_in_pass=last.get("step_in_pass"), steps_in_pass=last.get("steps_in_pass")
            )
        where = "stepwise " + describe_progress(progress)
        if kind == "pass" and ending is None:
            where += " ended"
    return start + html.escape(where) + (f", {ending}" if ending else "")


def _facts(info: Record) -> str:
    """What a run fits, and to what: K, rows x features, the algorithm and its limits, the
    data and the output."""
    if not info:
        return ""
    parts = [f"K = <b>{_text(info.get('n_components'))}</b>"]
    if info.get("n_samples") is not None and info.get("n_features") is not None:
        parts.append(
            f"{_count(info['n_samples'])} rows &times; {_count(info['n_features'])} features"
        )
    algorithm, passes, limit = info.get("algorithm"), info.get("passes"), info.get("max_iter")
    limits = {
        "batch": f"at most {_text(limit)} iterations",
        "stepwise": f"at most {_text(passes)} passes",
        "auto": f"at most {_text(passes)} stepwise passes and {_text(limit)} batch iterations",
    }
    if algorithm is not None:
        parts.append(
            f"algorithm {html.escape(str(algorithm))}"
            + (f" ({limits[algorithm]})" if algorithm in limits else "")
        )
    data, output = info.get("data"), info.get("output")
    files = [
        f"data <code>{html.escape(str(data))}</code>" if data else "data given in Python",
        f"output <code>{html.escape(str(output))}</code>" if output else "no output file",
    ]
    return f'<p class="facts">{" &middot; ".join(parts)}<br>{" &middot; ".join(files)}</p>'


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
    top: int = 52  # the title, and a row of keys under it
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


Point = tuple[float, Record]


@dataclass
class _Axis:
    """Where a run's records lie on the x axis of its charts, and what the axis says.

    A run with a run event: its passes and batch iterations one place each, in the order they
    ran (``entries``), and the pass in progress by its steps, each at its share of the pass
    (``steps``). A run of an older version: every record at its iteration, else its step.
    """

    named: bool
    entries: list[Point] = field(default_factory=list)
    steps: list[Point] = field(default_factory=list)
    #: Where the stepwise passes lie (shaded), and where the fit switches phase (a line).
    passes: list[tuple[float, float]] = field(default_factory=list)
    switches: list[float] = field(default_factory=list)
    #: Runs of passes or of batch iterations, each a list of (place, pass or iteration number).
    phases: list[tuple[str, list[tuple[float, float]]]] = field(default_factory=list)

    @property
    def title(self) -> str:
        if not self.named:
            every_step = self.entries and all("iteration" not in r for _, r in self.entries)
            return "step" if every_step else "iteration"
        kinds = {kind for kind, _ in self.phases} | ({"pass"} if self.passes else set())
        if kinds == {"pass"}:
            return "stepwise pass"
        return "batch iteration (p: stepwise pass)" if "pass" in kinds else "batch iteration"

    def name(self, record: Record) -> str:
        """'pass 2', 'iteration 12' or (an older version's) 'step 130'."""
        if self.named:
            kind = _kind(record)
        else:
            kind = "iteration" if record.get("iteration") is not None else "step"
        return f"{kind} {_text(record.get(kind))}"

    def span(self) -> tuple[float, float]:
        xs = [x for x, _ in self.entries + self.steps] + [x for span in self.passes for x in span]
        if not xs:
            return 0.0, 1.0
        return min(xs), max(max(xs), min(xs) + 1)


def _fraction(step: Record) -> float | None:
    """How far into its pass a step is (0 to 1), where its record says so."""
    done, count = _number(step.get("step_in_pass")), _number(step.get("steps_in_pass"))
    return min(max(done / count, 0.0), 1.0) if done is not None and count else None


def _layout(run: _Run) -> _Axis:
    """The run's records placed on its charts' x axis."""
    if not run.named:
        return _Axis(False, [(x, r) for r in run.records if (x := _x(r)) is not None])
    axis = _Axis(True)
    place = 0  # passes and batch iterations so far
    began: float | None = None  # where the passes under way began
    for record in run.records:
        kind = _kind(record)
        if kind != "iteration" and began is None:
            began = place
            if place:
                axis.switches.append(place)
        if kind == "step":
            fraction = _fraction(record)
            if fraction is not None:
                axis.steps.append((place + fraction, record))
            continue
        if kind == "iteration" and began is not None:
            axis.passes.append((began, place))
            axis.switches.append(place)
            began = None
        place += 1
        axis.entries.append((place, record))
        axis.steps = []  # a pass's steps are drawn while it is under way, then its end
        if not axis.phases or axis.phases[-1][0] != kind:
            axis.phases.append((kind, []))
        number = _number(record.get(kind))
        if number is not None:
            axis.phases[-1][1].append((place, number))
    if began is not None:
        last = run.records[-1]
        if _kind(last) == "step":
            # the pass under way takes its place, its number where it will end
            axis.passes.append((began, place + 1))
            number = _number(last.get("pass"))
            if number is not None:
                if not axis.phases or axis.phases[-1][0] != "pass":
                    axis.phases.append(("pass", []))
                axis.phases[-1][1].append((place + 1, number))
        else:
            axis.passes.append((began, place))
    return axis


def _thin(points: list[Point]) -> list[Point]:
    """At most about ``SHOWN_STEPS`` of the points, evenly spaced, with the last."""
    if len(points) <= SHOWN_STEPS:
        return points
    every = math.ceil(len(points) / SHOWN_STEPS)
    return points[::every] + ([points[-1]] if (len(points) - 1) % every else [])


def _x_ticks(frame: _Frame, axis: _Axis) -> list[tuple[float, str]]:
    """Ticks at whole iterations (a step of at least 1); on an axis of passes and batch
    iterations, at round pass and iteration numbers of each phase ('p2' for pass 2), and at
    the first of a phase that has none, never two so close that their numbers touch."""
    step = max(1, round(_step(frame.x1 - frame.x0, 6)))
    if not axis.named:
        first = math.ceil(frame.x0 / step) * step
        return [(float(x), str(x)) for x in range(int(first), int(frame.x1) + 1, step)]
    ticks = []
    for kind, numbers in axis.phases:
        chosen = [(x, n) for x, n in numbers if n % step == 0] or numbers[:1]
        ticks += [(x, ("p" if kind == "pass" else "") + _text(n)) for x, n in chosen]
    kept: list[tuple[float, str]] = []
    for x, label in sorted(ticks):
        if not kept or frame.px(x) - frame.px(kept[-1][0]) >= 28:
            kept.append((x, label))
    return kept


def _keys(frame: _Frame, keys: list[tuple[str, str]]) -> str:
    """A row of keys under a chart's title, each a swatch and its words: "shade" (the
    stepwise passes), "running" (the running objective of the pass under way), "fell" (a fall
    of the objective)."""
    x, y, parts = float(frame.left), frame.top - 10, []
    for swatch, words in keys:
        if swatch == "shade":
            parts.append(
                f'<rect x="{x:.1f}" y="{y - 9}" width="14" height="11" fill="{SHADE}" '
                f'stroke="{BROWN}" stroke-dasharray="3,2"/>'
            )
        elif swatch == "running":
            parts.append(
                f'<line x1="{x:.1f}" x2="{x + 14:.1f}" y1="{y - 4}" y2="{y - 4}" '
                f'stroke="{ORANGE}" stroke-width="2"/>'
            )
        else:
            parts.append(
                f'<circle cx="{x + 7:.1f}" cy="{y - 4}" r="4" fill="white" stroke="{RED}" '
                f'stroke-width="2"/>'
            )
        parts.append(
            f'<text x="{x + 19:.1f}" y="{y}" font-size="11" fill="#555">{html.escape(words)}</text>'
        )
        x += 19 + 6.2 * len(words) + 14  # about the words' width at this size, and a gap
    return "".join(parts)


def _axes(
    frame: _Frame,
    axis: _Axis,
    y_ticks: list[tuple[float, str]],
    title: str,
    y_label: str,
    clip: str,
    extra_keys: Sequence[tuple[str, str]] = (),
) -> list[str]:
    """Frame, the passes shaded, grid, ticks with their numbers, axis titles, the switches
    between passes and batch iterations, a row of keys under the title (the passes', then
    ``extra_keys``), and the clip path of the plot area."""
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
    for a, b in axis.passes:
        x0, x1 = max(f.px(a), f.left), min(f.px(b), right)
        parts.append(
            f'<rect x="{x0:.1f}" y="{f.top}" width="{max(x1 - x0, 1):.1f}" '
            f'height="{bottom - f.top}" fill="{SHADE}"/>'
        )
    for x, label in _x_ticks(f, axis):
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
    for x in axis.switches:
        sx = f"{f.px(x):.1f}"
        parts.append(
            f'<line x1="{sx}" x2="{sx}" y1="{f.top}" y2="{bottom}" stroke="{BROWN}" '
            f'stroke-dasharray="4,3"/>'
        )
    keys = [("shade", "stepwise passes")] if axis.passes else []
    parts.append(_keys(f, keys + list(extra_keys)))
    parts.append(
        f'<rect x="{f.left}" y="{f.top}" width="{right - f.left}" height="{bottom - f.top}" '
        f'fill="none" stroke="{INK}"/>'
    )
    parts.append(
        f'<text x="{(f.left + right) / 2:.1f}" y="{f.height - 6}" font-size="12" '
        f'text-anchor="middle" fill="{INK}">{html.escape(axis.title)}</text>'
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


def _objective_chart(axis: _Axis, clip: str) -> list[str]:
    points = [(x, y) for x, r in axis.entries if (y := _number(r.get("objective"))) is not None]
    named = [axis.name(r) for _, r in axis.entries if _number(r.get("objective")) is not None]
    running = [
        (x, y) for x, r in _thin(axis.steps) if (y := _number(r.get("objective"))) is not None
    ]
    if not points and not running:
        return _empty("no finite objective yet")
    # The scale starts at the second pass or iteration (see the module's docstring), and holds
    # the running objective of the pass in progress as it is now; the first is drawn all the
    # same, clipped, so the line comes in from below the chart.
    scaled = [y for _, y in points[1:] or points] + [y for _, y in running[-1:]]
    if not points:
        scaled = [y for _, y in running]
    low, high = min(scaled), max(scaled)
    pad = max((high - low) * 0.06, abs(high) * 1e-4, 1e-9)
    frame = _Frame(*axis.span(), low - pad, high + pad)
    title = f"Objective (scale from {named[1]})" if len(points) > 1 else "Objective"
    keys = []
    if running:
        keys.append(("running", f"pass {_text(axis.steps[-1][1].get('pass'))} so far (running)"))
    parts = _axes(frame, axis, _ticks(frame.y0, frame.y1), title, "nats per sample", clip, keys)
    if points:
        line = " ".join(frame.at(x, y) for x, y in points)
        parts.append(
            f'<g clip-path="url(#{clip})"><polyline points="{line}" fill="none" '
            f'stroke="{BLUE}" stroke-width="2" stroke-linejoin="round"/></g>'
        )
    if running:
        line = " ".join(frame.at(x, y) for x, y in running)
        x, y = running[-1]
        parts.append(
            f'<g clip-path="url(#{clip})"><polyline points="{line}" fill="none" '
            f'stroke="{ORANGE}" stroke-width="1.5" stroke-linejoin="round"/>'
            f'<circle cx="{frame.px(x):.1f}" cy="{frame.py(y):.1f}" r="4" fill="{ORANGE}"/></g>'
        )
    if points:
        x, y = points[-1]
        parts.append(f'<circle cx="{frame.px(x):.1f}" cy="{frame.py(y):.1f}" r="4" fill="{BLUE}"/>')
        first_y = points[0][1]
        if len(points) > 1 and first_y < frame.y0:
            parts.append(
                f'<text x="{frame.width - frame.right - 4}" y="{frame.height - frame.bottom - 6}" '
                f'font-size="11" text-anchor="end" fill="#666">{named[0]}: '
                f"{_objective(first_y)}, below the scale</text>"
            )
    return parts


def _log_label(power: int) -> str:
    """10 to the ``power``, written as a person writes it."""
    return f'10<tspan dy="-6" font-size="9">{power}</tspan>'


def _change_chart(axis: _Axis, clip: str) -> list[str]:
    points = [(x, _number(r.get("change"))) for x, r in axis.entries]
    points = [(x, c) for x, c in points if c is not None and c != 0]
    if not points:
        in_passes = axis.named and (axis.steps or axis.passes)
        return _empty(
            "the change shows from the end of the first pass"
            if in_passes
            else "the change shows from the second iteration"
        )
    logs = [math.log10(abs(c)) for _, c in points]
    tol = _number(axis.entries[-1][1].get("tol"))
    if tol is not None and tol > 0:
        logs.append(math.log10(tol))
    low, high = math.floor(min(logs)), math.ceil(max(logs))
    if high == low:
        high += 1
    frame = _Frame(*axis.span(), low, high)
    every = max(1, math.ceil((high - low) / 6))
    y_ticks = [(float(p), _log_label(p)) for p in range(low, high + 1, every)]
    fell = [("fell", "objective fell")] if any(c < 0 for _, c in points) else []
    parts = _axes(
        frame,
        axis,
        y_ticks,
        "Change in the objective (log scale)",
        "|change|, nats per sample",
        clip,
        fell,
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
    # A fall of the objective (a re-seeded component, a stepwise pass) is marked in red.
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
    return parts


def _table(run: _Run, axis: _Axis) -> str:
    """The last passes and batch iterations of a run, newest first (for an older version's
    run, its last records, with where a stepwise fit was)."""
    if axis.named:
        headers = ["after", "objective", "change", "mean shift", "seconds", "re-seeded"]
        shown = [r for _, r in axis.entries[-SHOWN_ROWS:]]
        if not shown:
            return ""
        first = [axis.name]
    else:
        positions = [key for key in POSITION_KEYS if any(key in r for r in run.records)]
        headers = [*positions, "iteration"]
        headers += ["objective", "change", "mean shift", "seconds", "re-seeded"]
        shown = run.records[-SHOWN_ROWS:]
        first = [lambda r, key=key: _text(r.get(key, "")) for key in [*positions, "iteration"]]
    rows = []
    for r in reversed(shown):  # newest first, where the eye is
        cells = [cell(r) for cell in first]
        cells += [
            _objective(r.get("objective")),
            _significant(r.get("change"), signed=True),
            _significant(r.get("mean_shift")),
            _seconds(r.get("seconds")),
            _text(r.get("reseeded", 0)),
        ]
        rows.append("<tr>" + "".join(f"<td>{cell}</td>" for cell in cells) + "</tr>")
    head = "".join(f"<th>{h}</th>" for h in headers)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table>"


def _pass_so_far(run: _Run) -> list[Record]:
    """The steps of the pass under way (the last records, while they are its steps)."""
    steps: list[Record] = []
    for record in reversed(run.records):
        if _kind(record) != "step" or (steps and record.get("pass") != steps[0].get("pass")):
            break
        steps.append(record)
    return steps[::-1]


def _step_pace(steps: list[Record]) -> list[str]:
    """How fast a pass goes, from its steps so far: the time into it, rows per second,
    seconds per step and about how long it has left."""
    last = steps[-1]
    rows = [r for r in (_number(s.get("rows")) for s in steps) if r is not None]
    seconds = [t for t in (_number(s.get("seconds")) for s in steps) if t is not None]
    if len(seconds) < len(steps):
        return []
    # A step's rows and seconds count from the start of its pass (StepwiseRun.advance), so
    # its rows grow from step to step; rows that do not grow are taken as each step's own.
    shown = []
    if len(rows) == len(steps) and all(b > a for a, b in itertools.pairwise(rows)):
        total_rows, total_seconds = rows[-1], seconds[-1]
        done = _number(last.get("step_in_pass")) or len(steps)
        shown.append(f"{_seconds(total_seconds)} s into the pass")
    else:
        total_rows = sum(rows) if len(rows) == len(steps) else 0.0
        total_seconds, done = sum(seconds), len(steps)
    if total_seconds <= 0:
        return shown
    if total_rows:
        shown.append(f"{total_rows / total_seconds:,.0f} rows per second")
    per_step = total_seconds / done
    shown.append(f"{per_step:.3g} s per step")  # steps can take hundredths of a second
    count, at = _number(last.get("steps_in_pass")), _number(last.get("step_in_pass"))
    if count and at is not None and count > at:
        shown.append(f"about {_duration((count - at) * per_step)} left in the pass")
    return shown


def _pace(run: _Run) -> list[str]:
    """How fast the run goes: in a pass, as its steps say (:func:`_step_pace`); after a pass,
    seconds per pass; in batch iterations, seconds per iteration; with rows per second, given
    the number of rows (each pass and each iteration reads every row once)."""
    if not run.records:
        return []
    kind = _kind(run.records[-1])
    if kind == "step":
        return _step_pace(_pass_so_far(run))
    entries = [r for r in run.records if _kind(r) == kind] if run.named else run.records
    seconds = [s for s in (_number(r.get("seconds")) for r in entries) if s is not None]
    if not seconds:
        return []
    shown = []
    n_samples = _number(run.info.get("n_samples"))
    if n_samples and seconds[-1] > 0:
        shown.append(f"{n_samples / seconds[-1]:,.0f} rows per second")
    what = "pass" if kind == "pass" else "iteration"
    shown.append(f"{_seconds(sum(seconds) / len(seconds))} s per {what}")
    return shown


def _summary(run: _Run, axis: _Axis, now: float) -> str:
    """The objective and its change after the run's last pass or iteration (and the running
    objective of the pass under way), how fast it goes, and how long it has taken."""
    shown = []
    last = run.records[-1] if run.records else {}
    latest = axis.entries[-1][1] if axis.named and axis.entries else None
    if not axis.named or latest is not None:
        record = latest if latest is not None else last
        after = f" after {axis.name(record)}" if latest is not None else ""
        shown.append(
            f"objective <b>{_objective(record.get('objective'))}</b> nats per sample{after}"
        )
        shown.append(f"change {_significant(record.get('change'), signed=True)}")
    if axis.named and last and _kind(last) == "step":
        shown.append(
            f"pass {_text(last.get('pass'))} so far: running objective "
            f"{_objective(last.get('objective'))}"
        )
    pace = _pace(run)
    if run.began is not None and run.last is not None:
        if run.named and _ending(run):
            pace.append(f"took {_duration(run.last - run.began)}")
        else:
            pace.append(f"{_duration(now - run.began)} elapsed")
    if run.last is not None:
        pace.append(f"last record {_duration(now - run.last)} ago")
    return (
        f'<p class="summary">{" &middot; ".join(shown)}</p>'
        f'<p class="pace">{" &middot; ".join(pace)}</p>'
    )


def _title(run: _Run) -> str:
    """Where a run is, for its heading and the page's title."""
    if run.named:
        return _phase(run)
    return _position(run.records[-1])


def _run(number: int, run: _Run, newest: bool, now: float) -> str:
    axis = _layout(run)
    if axis.entries or axis.steps:
        picture = _svg(
            [
                _objective_chart(axis, f"objective-{number}"),
                _change_chart(axis, f"change-{number}"),
            ],
            f"run {number}: the objective by {axis.title}, and its change on a log scale",
        )
    else:
        picture = _svg([_empty("no pass or iteration yet")], f"run {number}: nothing yet")
    return (
        f"<section><h2>Run {number}: {_title(run)}{' (newest)' if newest else ''}</h2>"
        f"{_facts(run.info)}{_summary(run, axis, now)}"
        f'<div class="charts">{picture}</div>{_table(run, axis)}</section>'
    )


STYLE = (
    "body{font-family:system-ui,sans-serif;margin:1.2em 1.5em;color:#222}"
    "nav{margin-bottom:.5em}nav a{color:#1f5fa0;text-decoration:none;font-weight:600}"
    "h1{font-size:1.5em;margin:.2em 0}h2{font-size:1.2em;margin:1.2em 0 .2em}"
    ".note{color:#666;margin:.2em 0}.summary{font-size:1.1em;margin:.3em 0 0}"
    ".facts{margin:.2em 0;color:#444}.facts code{font-size:.95em}.pace{margin:.3em 0 .6em}"
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
        As ``Scheduler.get_events("bmm-dask")`` gives them; events other than run events and
        records of steps, passes and iterations are left out.
    now : float, default=None
        The time (``time.time()``) that elapsed times and "last record ... ago" count to; None
        means now.
    jobs : sequence of dict, default=()
        The records of the cluster's jobs (``bmm-dask submit``), listed above the runs.

    Returns
    -------
    str
        A whole HTML page, which reloads itself every ``REFRESH`` seconds.
    """
    now = time.time() if now is None else now
    runs = _runs(events)
    times = [run.last for run in runs if run.last is not None]
    # A relative link, so it finds the status page under the dashboard's prefix, or behind a
    # proxy such as Jupyter's, as well as at the root.
    parts = [
        '<nav><a href="status">&larr; Dask dashboard</a></nav>',
        "<h1>bmm-dask: EM progress</h1>",
    ]
    note = f"Reloads every {REFRESH} seconds."
    if times:
        note += f" Last record logged {_duration(now - max(times))} ago."
    parts.append(f'<p class="note">{note}</p>')
    parts += _jobs(jobs, now)
    if not runs:
        parts.append("<p>No fit has run on this cluster yet.</p>")
    shown = list(enumerate(runs, start=1))[-SHOWN_RUNS:]
    for number, run in reversed(shown):
        parts.append(_run(number, run, len(runs) > 1 and number == len(runs), now))
    title = f"bmm-dask: {_title(runs[-1])}" if runs else "bmm-dask progress"
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
