"""The /bmm-dask page: numbers a person can read, a way back to the dashboard, a picture that is not blank.

The picture is taken by headless Chromium where it is installed (Debian: ``apt-get install
chromium``); elsewhere that test is skipped. Set ``BMM_DASK_SCREENSHOT=FILE.png`` to keep it.
"""

from __future__ import annotations

import contextlib
import itertools
import math
import os
import re
import shutil
import subprocess
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from distributed import Client, LocalCluster
from matplotlib import image

from bmm_dask.dashboard import PAGE, TOPIC, ProgressPage, render

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


def chromium() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable"):
        if path := shutil.which(name):
            return path
    pytest.skip(
        "no Chromium on this machine to take the picture (Debian: apt-get install chromium)"
    )


@pytest.mark.slow
def test_the_page_in_a_browser_is_a_picture_of_the_fit(dashboard: str, tmp_path: Path) -> None:
    picture = tmp_path / "page.png"
    subprocess.run(
        [
            chromium(),
            "--headless",
            "--no-sandbox",  # as root, as on CI, Chromium starts only without its sandbox
            "--disable-gpu",
            "--hide-scrollbars",
            "--no-first-run",
            "--disable-background-networking",  # 127.0.0.1 only
            "--disable-component-update",
            "--disable-sync",
            "--disable-extensions",
            f"--user-data-dir={tmp_path / 'profile'}",
            "--window-size=1000,700",
            f"--screenshot={picture}",
            dashboard,
        ],
        check=True,
        capture_output=True,
        timeout=60,
    )
    if keep := os.environ.get("BMM_DASK_SCREENSHOT"):
        shutil.copyfile(picture, keep)
    pixels = image.imread(picture)[..., :3]
    assert pixels.shape[:2] == (700, 1000)
    colours, counts = np.unique(pixels.reshape(-1, 3), axis=0, return_counts=True)
    background = counts.max() / counts.sum()
    assert len(colours) > 20 and background < 0.97, (len(colours), background)
    # The curves are drawn: pixels of the line's blue, in both charts (left and right halves).
    blue = np.all(np.abs(pixels - np.array([0x1F, 0x77, 0xB4]) / 255) < 0.08, axis=-1)
    columns = np.flatnonzero(blue.any(axis=0))
    assert blue.sum() > 300, blue.sum()
    assert (columns < 482).sum() > 100 and (columns > 482).sum() > 100, columns


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
    assert "3.50 s into the pass, 32,000 rows per second" in page
    table = page[page.index("<h2>Jobs</h2>") : page.index("</table>")]
    # newest first, escaped, with where each is and how it ended
    assert table.index("ab12cd34") < table.index("ef56ab78")
    assert "<td>running</td><td>pass 2 of 10, step 56 of 234</td><td>10 s</td>" in table
    assert "<td>iteration 4, objective -99.2500</td><td>4 s</td>" in table
    assert "/models/&lt;x&gt;.zarr" in table and "chunk 3 cannot be read" in table
    assert "<h2>Jobs</h2>" not in render([(1010.0, step)], now=1011.0)
