"""Real clusters: a `dask scheduler` and two `dask worker` processes on 127.0.0.1, started here."""

from __future__ import annotations

import json
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from distributed import Client

from bmm_dask import BernoulliMixture, open_dataset
from bmm_dask.datasets import synth
from tests._helpers import dask_processes, guard, serving, url_of


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict]:
    """A scheduler and two single-threaded workers, each its own process, as a user starts them."""
    folder = tmp_path_factory.mktemp("cluster")
    workers = [["--name", name, "--memory-limit", "2GB"] for name in ("w1", "w2")]
    with dask_processes(folder, [], workers) as scheduler_file:
        with Client(scheduler_file=str(scheduler_file), timeout=guard(30)) as client:
            client.wait_for_workers(2, timeout=guard(60))
        info = json.loads(scheduler_file.read_text())
        yield {
            "file": str(scheduler_file),
            "address": info["address"],
            "dashboard": info["services"]["dashboard"],
            "folder": folder,
        }


@pytest.fixture(scope="module")
def store(cluster: dict) -> Path:
    return synth(
        cluster["folder"] / "data.zarr",
        n_samples=24_000,
        n_features=100,
        n_components=4,
        seed=9,
        chunk_rows=5000,
    )


@pytest.mark.slow
def test_a_fit_on_separate_processes_equals_the_local_fit(
    cluster: dict, store: Path, tmp_path: Path, bmm
) -> None:
    # stepwise EM: its windows and steps cross the processes (auto is batch EM on so few rows)
    args = ("--k", "4", "--seed", "3", "--dtype", "float64", "--algorithm", "stepwise")
    result = bmm(
        "fit", store, *args, "--out", tmp_path / "remote.zarr", "--scheduler-file", cluster["file"]
    )
    assert result.code == 0, result.err
    assert f"Dask dashboard: http://127.0.0.1:{cluster['dashboard']}/status" in result.err
    remote = BernoulliMixture.load(tmp_path / "remote.zarr")
    local = BernoulliMixture(4, random_state=3, dtype="float64", algorithm="stepwise").fit(
        open_dataset(store)
    )
    assert np.array_equal(remote.means_, local.means_)
    assert np.array_equal(remote.weights_, local.weights_)

    with Client(cluster["address"]) as client:
        prefixes = client.run_on_scheduler(
            lambda dask_scheduler: list(dask_scheduler.task_prefixes)
        )
        # the fit logged each event with a call that returns once the scheduler has it
        events = client.get_events("bmm-dask")
    # 10 stepwise passes: windows read, then steps
    assert {"bmm-window", "bmm-step", "bmm-read-bits"} <= set(prefixes), prefixes
    steps = [event for _, event in events if event.get("kind") == "step"]
    assert sorted({e["pass"] for e in steps}) == list(range(1, 11))
    assert [e["step"] for e in steps] == list(range(1, len(steps) + 1))

    with urllib.request.urlopen(
        f"http://127.0.0.1:{cluster['dashboard']}/bmm-dask", timeout=guard(10)
    ) as page:
        text = page.read().decode()
    assert "EM progress" in text and "<svg" in text and "pass 10" in text

    by_address = bmm(
        "evaluate",
        tmp_path / "remote.zarr",
        store,
        "--scheduler",
        cluster["address"],
        "--json",
        tmp_path / "m.json",
    )
    assert by_address.code == 0, by_address.err
    assert json.loads((tmp_path / "m.json").read_text())["n_samples"] == 24_000


@pytest.mark.slow
def test_the_dashboard_answers_while_a_fit_runs(cluster: dict, store: Path) -> None:
    # A few reads while a short fit runs: the page answers while the scheduler is busy. Each
    # read has the scheduler draw the whole page, which on a busy machine slows the fit, so
    # there are three at most; their time limit only ends a hang (how fast the page comes is
    # no concern of a test).
    fitted: list[BernoulliMixture] = []
    read_while_fitting = 0
    with Client(cluster["address"]):
        model = BernoulliMixture(4, random_state=0, max_iter=8, tol=0)
        fitting = threading.Thread(target=lambda: fitted.append(model.fit(open_dataset(store))))
        fitting.start()
        while read_while_fitting < 3 and fitting.is_alive():
            with urllib.request.urlopen(
                f"http://127.0.0.1:{cluster['dashboard']}/status", timeout=guard(10)
            ) as page:
                assert page.status == 200
            read_while_fitting += 1
            time.sleep(0.3)
        fitting.join(timeout=guard(60))
    assert fitted and fitted[0].n_iter_ == 8  # the fit ran to its end
    assert read_while_fitting, "the fit ended before the page was read"


@pytest.mark.slow
def test_performance_report(cluster: dict, store: Path, tmp_path: Path, bmm) -> None:
    model = BernoulliMixture(2, random_state=0, max_iter=3).fit(open_dataset(store))
    model.save(tmp_path / "m.zarr")
    result = bmm(
        "predict",
        tmp_path / "m.zarr",
        store,
        "--out",
        tmp_path / "p.zarr",
        "--scheduler-file",
        cluster["file"],
        "--performance-report",
        tmp_path / "report.html",
    )
    assert result.code == 0, result.err
    page = (tmp_path / "report.html").read_text()
    assert "<html" in page.lower() and "bmm-label" in page


@pytest.fixture(scope="module")
def served(cluster: dict, store: Path) -> Iterator[str]:
    """The store's folder served over HTTP by a real server on 127.0.0.1."""
    with serving(store.parent) as server:
        yield f"{url_of(server)}/{store.name}"


@pytest.mark.slow
def test_a_fit_from_a_store_over_http_equals_the_fit_from_disk(
    cluster: dict, store: Path, served: str, tmp_path: Path, bmm
) -> None:
    remote = open_dataset(served)
    assert remote.n_samples == 24_000 and remote.labels is not None
    settings = {"random_state": 1, "dtype": "float64", "max_iter": 8, "tol": 0}
    from_disk = BernoulliMixture(4, **settings).fit(open_dataset(store))
    over_http = BernoulliMixture(4, **settings).fit(remote)
    assert np.array_equal(over_http.means_, from_disk.means_)
    # on the cluster, the workers read the store over HTTP themselves
    result = bmm(
        "fit",
        served,
        "--k",
        "4",
        "--seed",
        "1",
        "--dtype",
        "float64",
        "--max-iter",
        "8",
        "--tol",
        "0",
        "--out",
        tmp_path / "m.zarr",
        "--scheduler",
        cluster["address"],
    )
    assert result.code == 0, result.err
    assert np.array_equal(BernoulliMixture.load(tmp_path / "m.zarr").means_, from_disk.means_)
    assert BernoulliMixture.load(tmp_path / "m.zarr").attrs_["data"]["path"] == served


def test_the_progress_page_draws_each_run() -> None:
    from bmm_dask.dashboard import render

    events = [
        (
            0.0,
            {
                "kind": "iteration",
                "iteration": i,
                "objective": -10 + i / 10,
                "change": None if i == 1 else 0.1,
                "seconds": 0.01,
                "reseeded": 0,
            },
        )
        for i in range(1, 6)
    ]
    events += [
        (
            1.0,
            {
                "kind": "iteration",
                "iteration": 1,
                "objective": -9.0,
                "change": None,
                "seconds": 0.01,
                "reseeded": 0,
            },
        )
    ]
    page = render(events)
    assert page.count("<svg") == 2 and "Run 2: iteration 1" in page and "Run 1: iteration 5" in page
    assert "No fit has run" in render([])
