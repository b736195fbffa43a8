"""The /bmm-dask page: one run for each start of a fit, where it is and how fast it goes, numbers
a person can read, a way back to the dashboard, and a picture of the fit in a browser.

The picture is taken by headless Chromium where it is installed (Debian: ``apt-get install
chromium``); elsewhere that test is skipped. Set ``BMM_DASK_SCREENSHOT=FILE.png`` to keep it.
"""

from __future__ import annotations

import contextlib
import html
import itertools
import math
import os
import re
import shutil
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from distributed import Client, LocalCluster

from bmm_dask.dashboard import BROWN, ORANGE, PAGE, SHOWN_STEPS, TOPIC, ProgressPage, render
from tests._helpers import chromium_dom, chromium_screenshot

BEST = -96.123456789


def history(n_iterations: int = 30) -> list[dict]:
    """The records of a K = 30-like fit: a jump of a hundred nats per sample, then a slow approach."""
    records: list[dict] = []
    previous = -math.inf
    for iteration in range(1, n_iterations + 1):
        objective = -210.98765432 if iteration == 1 else BEST - 11.7 * 0.62 ** (iteration - 2)
        change = objective - previous
        records.append(
            {
                "kind": "iteration",
                "iteration": iteration,
                "objective": objective,
                "change": None if math.isinf(change) else change,  # as the fit logs it
                "mean_shift": 3.0 * 0.7**iteration,
                "seconds": 0.4 + 0.01 * (iteration % 7) / 3,
                "reseeded": 2 if iteration == 4 else 0,
            }
        )
        previous = objective
    return records


def events(records: list[dict]) -> list[tuple[float, dict]]:
    start = time.time() - 2.0 * len(records)
    return [(start + 2.0 * i, record) for i, record in enumerate(records)]


#: The run event of a fit's first start.
RUN = {
    "kind": "run",
    "run": "3f9c2a71",
    "n_components": 30,
    "n_samples": 60_000,
    "n_features": 784,
    "algorithm": "auto",
    "max_iter": 100,
    "passes": 3,
    "start": 1,
    "n_init": 1,
    "data": "/data/digits.zarr",
    "output": "/models/k30.zarr",
}


def a_fit(
    *,
    steps: int = 20,
    own_steps: bool = False,
    batch: tuple[int, int] = (3, 10),
    began: float = 1000.0,
    **run: object,
) -> list[tuple[float, dict]]:
    """The events of one start of a fit, as the fit logs them: its run event, ``batch[0]``
    batch iterations of 2.5 s, its passes of ``steps`` steps of 0.6 s and 60,000 / ``steps``
    rows, then ``batch[1]`` batch iterations (counting on from the first ones).

    A step's rows and seconds count from the start of its pass, as the fit logs them; with
    ``own_steps``, each step's own. ``run`` replaces keys of the run event.
    """
    info = {**RUN, **run}
    logged = [(began, info)]
    place, previous = 0, None

    def log(seconds: float, record: dict) -> None:
        logged.append(
            (logged[-1][0] + seconds, {"kind": "iteration", "run": info["run"], **record})
        )

    def after() -> dict:  # the objective after the next pass or batch iteration
        nonlocal place, previous
        place += 1
        objective = -210.98765432 if place == 1 else BEST - 40 * 0.6**place
        change = None if previous is None else objective - previous
        previous = objective
        return {"objective": objective, "change": change, "mean_shift": 0.5**place, "reseeded": 0}

    rows = 60_000 // steps
    for iteration in range(1, batch[0] + 1):
        log(2.5, {"iteration": iteration, "seconds": 2.5, **after()})
    for pass_ in range(1, info["passes"] + 1):
        for step in range(1, steps + 1):
            log(
                0.6,
                {
                    "pass": pass_,
                    "passes": info["passes"],
                    "step": (pass_ - 1) * steps + step,
                    "step_in_pass": step,
                    "steps_in_pass": steps,
                    "rows": rows if own_steps else rows * step,
                    "seconds": 0.6 if own_steps else 0.6 * step,
                    # the running objective of the pass (mini-batches of its steps so far)
                    "objective": (previous or -220.0) + 0.4 * step / steps - 0.5,
                    "change": None,
                    "mean_shift": None,
                    "reseeded": 0,
                },
            )
        log(0.0, {"pass": pass_, "seconds": 0.6 * steps, "batch_size": rows, **after()})
    for iteration in range(batch[0] + 1, sum(batch) + 1):
        log(2.5, {"iteration": iteration, "seconds": 2.5, **after()})
    return logged


def until(logged: list[tuple[float, dict]], where: dict) -> list[tuple[float, dict]]:
    """The events up to the first whose record has the keys and values of ``where``."""
    for i, (_, record) in enumerate(logged):
        if all(record.get(key) == value for key, value in where.items()):
            return logged[: i + 1]
    raise AssertionError(f"no record with {where}")


def objective_after(place: int) -> str:
    """The objective a_fit logs after its ``place``-th pass or batch iteration, as shown."""
    return f"{BEST - 40 * 0.6**place:.4f}"


def chart_line(page: str, title: str) -> list[str]:
    """The points of the (first) line of the first chart with this title."""
    return re.search(r'<polyline points="([^"]+)"', page[page.index(title) :])[1].split()


def long_floats(text: str) -> list[str]:
    """Numbers with more than 4 decimals and more than 4 significant digits.

    Objectives show 4 decimals, other numbers 4 significant digits; str(float) gives up to 17.
    """
    numbers = re.findall(r"(\d+)\.(\d+)", text)
    return [
        f"{whole}.{decimals}"
        for whole, decimals in numbers
        if len(decimals) > 4 and len((whole + decimals).lstrip("0")) > 4
    ]


def test_numbers_are_rounded_and_a_link_leads_back_to_the_dashboard() -> None:
    records = history()
    page = render(events(records))
    assert long_floats(page) == []
    for record in records:
        assert repr(record["objective"]) not in page
    last = records[-1]
    assert f"objective <b>{last['objective']:.4f}</b>" in page
    assert f"change {last['change']:+.3e}" in page
    assert '<a href="status">' in page
    assert "<title>bmm-dask: iteration 30</title>" in page
    # the first iteration does not set the objective's scale, and says so
    assert "iteration 1: -210.9877, below the scale" in page
    # ticks with numbers on both axes of both charts
    assert page.count(">iteration</text>") == 2
    assert '<tspan dy="-6" font-size="9">-5</tspan>' in page  # a decade on the log scale


def test_a_stepwise_fit_shows_its_pass_and_step() -> None:
    records = [
        {"kind": "iteration", "pass": 1 + step // 50, "step": step, "objective": -100 + step / 1000}
        for step in range(10, 140, 10)
    ]
    for before, record in itertools.pairwise(records):
        record["change"] = record["objective"] - before["objective"]
    page = render(events(records))
    assert "<h2>Run 1: pass 3, step 130</h2>" in page
    assert "<th>pass</th><th>step</th>" in page
    assert "<svg" in page and long_floats(page) == []


def test_the_page_before_any_fit() -> None:
    page = render([(time.time(), {"kind": "other"})])
    assert "No fit has run on this cluster yet." in page and '<a href="status">' in page


@contextlib.contextmanager
def scheduler_page(prefix: str) -> Iterator[str]:
    """The page's address on a scheduler of our own (127.0.0.1, no workers) that has logged a fit."""
    with (
        LocalCluster(
            n_workers=0,
            processes=False,  # in-process comms: only the dashboard listens, on 127.0.0.1
            dashboard_address="127.0.0.1:0",
            scheduler_kwargs={"http_prefix": prefix or None},
        ) as cluster,
        Client(cluster) as client,
    ):
        client.register_plugin(ProgressPage())
        for record in history():
            client.log_event(TOPIC, record)
        deadline = time.monotonic() + 10
        while len(client.get_events(TOPIC)) < 30:
            assert time.monotonic() < deadline, "the events did not reach the scheduler"
            time.sleep(0.05)
        port = cluster.scheduler.http_server.port
        yield f"http://127.0.0.1:{port}{prefix}{PAGE}"


@pytest.fixture(scope="module")
def dashboard() -> Iterator[str]:
    with scheduler_page("") as url:
        yield url


def check_page_and_link(url: str) -> None:
    """The page answers with the fit, and its link leads to the dashboard's status page."""
    with urllib.request.urlopen(url, timeout=10) as answer:
        assert answer.status == 200
        page = answer.read().decode()
    assert "<h2>Run 1: iteration 30</h2>" in page and long_floats(page) == []
    status = urllib.parse.urljoin(url, re.search(r'<a href="([^"]+)"', page)[1])
    with urllib.request.urlopen(status, timeout=10) as answer:
        assert answer.status == 200 and answer.url == url.removesuffix(PAGE) + "/status"


@pytest.mark.slow
def test_the_page_on_a_scheduler_links_to_its_status_page(dashboard: str) -> None:
    check_page_and_link(dashboard)


@pytest.mark.slow
def test_the_page_under_a_dashboard_prefix() -> None:
    with scheduler_page("/dask") as url:
        assert url.endswith("/dask/bmm-dask")
        check_page_and_link(url)


def pixels_like(pixels: np.ndarray, colour: str) -> np.ndarray:
    """Where the picture has this colour ('#rrggbb'), give or take its anti-aliasing."""
    rgb = np.array([int(colour[i : i + 2], 16) for i in (1, 3, 5)]) / 255
    return np.all(np.abs(pixels - rgb) < 0.04, axis=-1)


@pytest.mark.slow
def test_a_fit_in_a_pass_seen_in_a_browser(tmp_path: Path) -> None:
    fit = until(a_fit(), {"pass": 2, "step_in_pass": 11})
    page = tmp_path / "page.html"
    page.write_text(render(fit, now=fit[-1][0] + 1.0), encoding="utf-8")

    # What a reader of the page sees, as the browser has it.
    dom = chromium_dom(page, (1000, 700))
    seen = " ".join(html.unescape(re.sub(r"<[^>]+>", " ", dom)).split())
    assert "Run 1: stepwise pass 2 of 3, step 11 of 20" in seen
    assert "K = 30 · 60,000 rows \N{MULTIPLICATION SIGN} 784 features · algorithm auto" in seen
    assert "data /data/digits.zarr · output /models/k30.zarr" in seen
    assert f"objective {objective_after(4)} nats per sample after pass 1" in seen
    assert "5,000 rows per second · 0.6 s per step · about 5 s left in the pass" in seen
    assert "Objective (scale from iteration 2)" in seen and "Change in the objective" in seen

    picture = tmp_path / "page.png"
    pixels = chromium_screenshot(page, picture, (1000, 700))
    if keep := os.environ.get("BMM_DASK_SCREENSHOT"):
        shutil.copyfile(picture, keep)
    assert pixels.shape[:2] == (700, 1000)
    colours, counts = np.unique(pixels.reshape(-1, 3), axis=0, return_counts=True)
    background = counts.max() / counts.sum()
    assert len(colours) > 20 and background < 0.97, (len(colours), background)
    # Both charts (left and right of the middle of the picture of the run, at x = 482) draw
    # their line, and shade the passes; the objective's chart draws the pass under way.
    left, right = np.arange(1000) < 482, np.arange(1000) > 482
    for name, colour, least in (("line", "#1f77b4", 100), ("passes", "#fbe6c8", 100)):
        columns = pixels_like(pixels, colour).any(axis=0)
        assert columns[left].sum() > least and columns[right].sum() > least, name
    running = pixels_like(pixels, "#ff7f0e")
    assert running[:, left].sum() > 30 and running[:, right].sum() == 0


def test_one_fit_is_one_run_through_its_batch_iterations_and_passes() -> None:
    fit = a_fit()
    page = render(fit, now=fit[-1][0] + 1.25)
    assert page.count("<h2>") == 1 and page.count("<svg") == 1
    assert "<h2>Run 1: batch iteration 13 of at most 100</h2>" in page
    assert "<title>bmm-dask: batch iteration 13 of at most 100</title>" in page
    assert "K = <b>30</b> &middot; 60,000 rows &times; 784 features &middot; algorithm auto" in page
    assert (
        "data <code>/data/digits.zarr</code> &middot; output <code>/models/k30.zarr</code>" in page
    )
    assert f"objective <b>{objective_after(16)}</b> nats per sample after iteration 13" in page
    # rows per second from the last iteration, seconds per batch iteration (the steps apart)
    assert (
        "24,000 rows per second &middot; 2.50 s per iteration &middot; 1 min 10 s elapsed "
        "&middot; last record 1 s ago"
    ) in page
    assert "per step" not in page
    # Both charts: an axis that says what it counts (passes at their numbers, p1 to p3), the
    # passes shaded and named, a line where the fit goes into them and where it comes out.
    assert page.count(">batch iteration (p: stepwise pass)</text>") == 2
    assert page.count(">stepwise passes</text>") == 2
    assert page.count(f'stroke="{BROWN}" stroke-dasharray="4,3"') == 4
    assert ">p2</text>" in page and ">12</text>" in page and ">iteration</text>" not in page
    # one place for each pass and each iteration: 3 + 3 + 10; a change from the second on
    assert len(chart_line(page, "Objective (scale from iteration 2)")) == 16
    assert len(chart_line(page, "Change in the objective")) == 15
    assert long_floats(page) == []


@pytest.mark.parametrize(
    ("where", "heading"),
    [
        ({"iteration": 2}, "batch iteration 2 of at most 100"),
        ({"pass": 1, "step_in_pass": 1}, "stepwise pass 1 of 3, step 1 of 20"),
        ({"pass": 3, "step_in_pass": 20}, "stepwise pass 3 of 3, step 20 of 20"),
        ({"pass": 3, "batch_size": 3000}, "stepwise pass 3 of 3 ended"),
        ({"iteration": 4}, "batch iteration 4 of at most 100"),
    ],
)
def test_a_run_says_where_it_is(where: dict, heading: str) -> None:
    page = render(until(a_fit(), where))
    assert f"<h2>Run 1: {heading}</h2>" in page and page.count("<h2>") == 1


@pytest.mark.parametrize("own_steps", [False, True], ids=["counted-from-the-pass", "own"])
def test_a_run_in_a_pass_says_how_fast_it_goes(own_steps: bool) -> None:
    fit = until(a_fit(own_steps=own_steps), {"pass": 2, "step_in_pass": 11})
    page = render(fit, now=fit[-1][0] + 1.0)
    assert "<h2>Run 1: stepwise pass 2 of 3, step 11 of 20</h2>" in page
    assert f"objective <b>{objective_after(4)}</b> nats per sample after pass 1" in page
    assert "pass 2 so far: running objective" in page
    # seconds per step, never per iteration, while in the passes
    pace = "5,000 rows per second &middot; 0.6 s per step &middot; about 5 s left in the pass"
    assert pace in page and "per iteration" not in page
    assert ("6.60 s into the pass" in page) is not own_steps
    assert "27 s elapsed &middot; last record 1 s ago" in page
    # the change goes on through the passes: iterations 2 and 3, then pass 1
    assert len(chart_line(page, "Change in the objective")) == 3
    assert "the change shows" not in page
    # the pass under way drawn in its place, up to its step (p2 marks where it ends)
    assert ">pass 2 so far (running)</text>" in page and ">p2</text>" in page
    assert long_floats(page) == []


def test_a_stepwise_fit_in_its_first_pass() -> None:
    fit = until(a_fit(batch=(0, 0), algorithm="stepwise"), {"pass": 1, "step_in_pass": 5})
    page = render(fit, now=fit[-1][0])
    assert "<h2>Run 1: stepwise pass 1 of 3, step 5 of 20</h2>" in page
    assert "algorithm stepwise (at most 3 passes)" in page
    assert "the change shows from the end of the first pass" in page
    assert ">stepwise pass</text>" in page and "<b>" in page


def test_a_run_says_how_it_ended() -> None:
    stepwise = a_fit(batch=(0, 0), algorithm="stepwise")
    page = render(stepwise, now=stepwise[-1][0] + 60)
    assert "<h2>Run 1: stepwise pass 3 of 3, done</h2>" in page
    assert "5,000 rows per second &middot; 12.00 s per pass &middot; took 36 s" in page
    assert "last record 1 min 00 s ago" in page
    limited = a_fit(max_iter=13)
    assert "<h2>Run 1: batch iteration 13 of at most 13, done</h2>" in render(limited)
    # what the fit was given, escaped
    odd = render(a_fit(data="s3://bucket/<x>.zarr", output=None))
    assert "data <code>s3://bucket/&lt;x&gt;.zarr</code> &middot; no output file" in odd
    converged = a_fit()
    converged[-1][1]["converged"] = True
    assert "<h2>Run 1: batch iteration 13 of at most 100, converged</h2>" in render(converged)
    # no record says so: where it was, and how long ago
    quiet = a_fit()
    assert "batch iteration 13 of at most 100</h2>" in render(quiet, now=quiet[-1][0] + 600)
    assert "last record 10 min 00 s ago" in render(quiet, now=quiet[-1][0] + 600)


def test_each_start_of_a_fit_is_a_run_and_fits_at_once_keep_apart() -> None:
    first = until(a_fit(n_init=2), {"iteration": 5})
    second = a_fit(n_init=2, start=2, run="77ab01cd", began=first[-1][0] + 1)[:4]
    page = render(first + second)
    assert "<h2>Run 2: start 2 of 2, batch iteration 3 of at most 100 (newest)</h2>" in page
    assert "<h2>Run 1: start 1 of 2, batch iteration 5 of at most 100, ended</h2>" in page
    # two fits on one cluster at once: their events come mixed
    other = a_fit(run="b0b0b0b0", n_components=10, output="/models/k10.zarr", began=1001.0)
    page = render(sorted(a_fit() + other, key=lambda event: event[0]))
    assert page.count("<h2>") == 2 and page.count("batch iteration 13 of at most 100") == 3
    assert "K = <b>10</b>" in page and "K = <b>30</b>" in page


def test_a_run_whose_run_event_has_left_the_log() -> None:
    # the scheduler keeps the newest events of a topic: a long fit's first may be gone
    page = render([event for event in a_fit() if event[1]["kind"] == "iteration"])
    assert "<h2>Run 1: batch iteration 13</h2>" in page and "K = " not in page
    assert page.count("<svg") == 1


def test_a_long_fit_draws_a_page_of_bounded_size() -> None:
    fit = until(a_fit(steps=3_000, passes=10), {"pass": 10, "step_in_pass": 2_999})
    page = render(fit)
    assert "<h2>Run 1: stepwise pass 10 of 10, step 2999 of 3000</h2>" in page
    running = re.search(rf'<polyline points="([^"]+)" fill="none" stroke="{ORANGE}"', page)
    assert len(running[1].split()) <= SHOWN_STEPS + 1
    assert len(page) < 60_000


def test_events_of_older_versions_still_render() -> None:
    # Events before run events: no run named, a pass's record with the iteration it made.
    # Nothing tells one fit from the next but the counts going back, so the passes' steps
    # make runs of their own, as they did.
    older = []
    for at, record in a_fit():
        if record["kind"] == "iteration":
            record = {key: value for key, value in record.items() if key != "run"}
            if "pass" in record and "step" not in record:
                record["iteration"] = 3 + record["pass"]
            older.append((at, record))
    page = render(older)
    assert "<h2>Run 1: iteration 3</h2>" in page
    assert "<h2>Run 2: pass 1 of 3, step 20 of 20</h2>" in page
    assert page.count("<svg") == page.count("<h2>") and long_floats(page) == []


def test_each_candidate_of_a_selection_is_a_run_of_its_own() -> None:
    shared = []
    for iteration in range(1, 6):
        candidates = [
            {
                "n_components": k,
                "start": 0,
                "iteration": iteration,
                "objective": -50 - k + iteration / k,
            }
            for k in (2, 5, 9)
            if iteration <= k  # K = 2 converges after 2 iterations, K = 5 after 5
        ]
        for record in candidates:
            record["change"] = 1 / (iteration * record["n_components"]) if iteration > 1 else None
        shared.append({"kind": "iteration", "iteration": iteration, "candidates": candidates})
    page = render(events(shared))
    assert "<h2>Run 1: K = 2: iteration 2</h2>" in page
    assert "<h2>Run 2: K = 5: iteration 5</h2>" in page
    assert "<h2>Run 3: K = 9: iteration 5 (newest)</h2>" in page
    assert page.count("<svg") == 3 and long_floats(page) == []


def test_the_page_says_where_a_stepwise_pass_is_and_lists_the_jobs() -> None:
    step = {
        "kind": "iteration",
        "pass": 2,
        "passes": 10,
        "step": 290,
        "step_in_pass": 56,
        "steps_in_pass": 234,
        "rows": 112_000,
        "seconds": 3.5,
        "objective": -101.5,
        "change": None,
    }
    jobs = [
        {
            "id": "ab12cd34",
            "state": "running",
            "submitted": 1000.0,
            "started": 1001.0,
            "ended": None,
            "output": "/models/m.zarr",
            "progress": {"pass": 2, "passes": 10, "step_in_pass": 56, "steps_in_pass": 234},
        },
        {
            "id": "ef56ab78",
            "state": "failed",
            "submitted": 900.0,
            "started": 901.0,
            "ended": 905.0,
            "output": "/models/<x>.zarr",
            "message": "d.zarr/bits: chunk 3 cannot be read",
            "progress": {"iteration": 4, "objective": -99.25},
        },
    ]
    page = render([(1010.0, step)], now=1011.0, jobs=jobs)
    assert "Run 1: pass 2 of 10, step 56 of 234" in page
    assert "3.50 s into the pass &middot; 32,000 rows per second &middot; 0.0625 s per step" in page
    assert "per iteration" not in page
    table = page[page.index("<h2>Jobs</h2>") : page.index("</table>")]
    # newest first, escaped, with where each is and how it ended
    assert table.index("ab12cd34") < table.index("ef56ab78")
    assert "<td>running</td><td>pass 2 of 10, step 56 of 234</td><td>10 s</td>" in table
    assert "<td>iteration 4, objective -99.2500</td><td>4 s</td>" in table
    assert "/models/&lt;x&gt;.zarr" in table and "chunk 3 cannot be read" in table
    assert "<h2>Jobs</h2>" not in render([(1010.0, step)], now=1011.0)
