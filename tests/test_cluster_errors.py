"""Mistakes in where and how a command runs on Dask: one line and exit status 2, at once, not a
command that hangs, restarts workers for ever or ends in a traceback."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from bmm_dask import BernoulliMixture, open_dataset
from bmm_dask.datasets import synth
from tests._helpers import (
    LOCAL_CLUSTER,
    Result,
    assert_one_line_error,
    run_bmm_dask,
    serving,
    silent_listener,
    url_of,
)

#: Runs ``bmm-dask ARGS`` in a process where no Dask client and no local cluster can start:
#: making one ends the process at once with exit status 3. A refusal that still comes (exit
#: status 2) came before the command waited on a cluster. (How soon it comes, against the
#: connect timeout and a cluster's start, is in benchmarks/bench_refusals.py.)
NO_CLUSTER = """
import os, sys
import distributed

def started(*args, **kwargs):
    sys.stderr.write("a Dask client or cluster was started\\n")
    sys.stderr.flush()
    os._exit(3)

distributed.Client = distributed.LocalCluster = started
from bmm_dask.cli import main
sys.exit(main(sys.argv[1:]))
"""


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small dataset (data.zarr) and a model of it (model.zarr)."""
    folder = tmp_path_factory.mktemp("cluster-errors")
    data = synth(folder / "data.zarr", n_samples=2000, n_features=64, n_components=2, seed=0)
    model = BernoulliMixture(2, max_iter=2, tol=10.0, random_state=0).fit(open_dataset(data))
    model.save(folder / "model.zarr")
    return folder


@pytest.fixture
def http_server(tmp_path: Path) -> Iterator[str]:
    """An HTTP server on 127.0.0.1, as the dashboard of a scheduler is."""
    with serving(tmp_path) as server:
        yield url_of(server, scheme="tcp")


@pytest.fixture
def silent_server() -> Iterator[str]:
    """A listener that takes connections and never says a word."""
    with silent_listener() as address:
        yield address


def _without_cluster(*args: str | Path) -> Result:
    """``bmm-dask ARGS`` in a process of its own where no client or cluster can start."""
    return run_bmm_dask(*args, script=NO_CLUSTER, timeout=60)


@pytest.mark.slow
@pytest.mark.parametrize(
    ("command", "listener", "how"),
    [
        ("fit", "http", "--scheduler"),
        ("fit", "silent", "--scheduler"),
        ("fit", "http", "--scheduler-file"),
        ("predict", "silent", "--scheduler"),
        ("evaluate", "http", "--scheduler"),
    ],
)
def test_a_scheduler_address_where_something_else_listens(
    folder: Path,
    tmp_path: Path,
    request: pytest.FixtureRequest,
    command: str,
    listener: str,
    how: str,
) -> None:
    # The client waited for ever for a Dask handshake (silent for minutes on the dashboard's
    # port 8787 given for the scheduler's 8786). Now the listener is looked at first and
    # refused before a client is made, so nothing waits for the client's connect timeout.
    address = request.getfixturevalue(f"{listener}_server")
    where = [how, address]
    if how == "--scheduler-file":
        (tmp_path / "scheduler.json").write_text(f'{{"address": "{address}"}}')
        where = [how, str(tmp_path / "scheduler.json")]
    data, model = folder / "data.zarr", folder / "model.zarr"
    args = {
        "fit": ["fit", data, "--k", "2", "--out", tmp_path / "m.zarr"],
        "predict": ["predict", model, data, "--out", tmp_path / "p.zarr"],
        "evaluate": ["evaluate", model, data],
    }[command]
    line = assert_one_line_error(_without_cluster(*args, *where))
    assert line.startswith(f"bmm-dask: error: {where[1]}: cannot connect")
    if listener == "http":
        assert "an HTTP server answered, not a Dask scheduler" in line
        assert "8786" in line
    else:
        assert "did not greet as a Dask scheduler does" in line
    if how == "--scheduler-file":
        assert address in line
    assert not (tmp_path / "m.zarr").exists() and not (tmp_path / "p.zarr").exists()


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("{not json", "not JSON"),
        ('{"adress": "tcp://127.0.0.1:8786"}', 'no "address"'),
        ("[]", 'no "address"'),
    ],
    ids=["not JSON", "no address", "a list"],
)
def test_a_scheduler_file_that_is_not_one(
    folder: Path, tmp_path: Path, bmm, text: str, needle: str
) -> None:
    scheduler_file = tmp_path / "scheduler.json"
    scheduler_file.write_text(text)
    result = bmm(
        "fit",
        folder / "data.zarr",
        "--k",
        "2",
        "--out",
        tmp_path / "m.zarr",
        "--scheduler-file",
        scheduler_file,
    )
    assert_one_line_error(result, f"{scheduler_file}: not a scheduler file", needle)


@pytest.mark.parametrize(
    ("option", "value", "needle"),
    [
        ("--memory-limit", "-1GB", "a size such as 2GB"),
        ("--memory-limit", "lots", "a size such as 2GB"),
        ("--dashboard-address", "garbage", "HOST:PORT, :PORT or PORT"),
        ("--dashboard-address", "127.0.0.1:70000", "from 0 to 65535"),
        ("--dashboard-address", "nohost.invalid:8787", "cannot resolve host 'nohost.invalid'"),
        ("--workers", "0", "x>=1"),
        ("--threads-per-worker", "0", "x>=1"),
    ],
)
def test_local_cluster_settings_are_checked_as_the_command_line_is_read(
    tmp_path: Path, bmm, option: str, value: str, needle: str
) -> None:
    # No data: the setting is refused before anything is opened, let alone a cluster started.
    result = bmm(
        "fit", tmp_path / "none.zarr", "--k", "2", "--out", tmp_path / "m.zarr", option, value
    )
    assert_one_line_error(result, option, needle)


@pytest.mark.slow
def test_a_memory_limit_too_small_for_a_worker_is_refused(folder: Path, tmp_path: Path) -> None:
    # A worker held to 1 MB ended in a MemoryError traceback, or the fit hung; held to 120 MB
    # it was restarted for ever (the fit said nothing unless run with -v; see the test below).
    # Refused before a cluster starts: in this process none can.
    out = tmp_path / "m.zarr"
    result = _without_cluster(
        "fit", folder / "data.zarr", "--k", "2", "--out", out, "--memory-limit", "1MB"
    )
    line = assert_one_line_error(result)
    assert line.startswith("bmm-dask: error: --memory-limit 1MB is too small")
    assert "a worker needs at least " in line and " MB" in line
    assert not out.exists()


#: A fit on a local cluster, in a process of its own, with the floor on --memory-limit taken
#: away (it would refuse the limits that make workers die at this size of data) and the wait
#: for a worker that stays up shortened.
WITHOUT_FLOOR = """
import sys
import bmm_dask.cluster
bmm_dask.cluster.WORKER_BYTES = 0
bmm_dask.cluster.NO_WORKERS_TIMEOUT = "5s"
from bmm_dask.cli import main
sys.exit(main(sys.argv[1:]))
"""


@pytest.mark.slow
@pytest.mark.parametrize(
    "limit",
    [
        # A worker process of this package takes about 100 MB (it imports neither
        # scikit-learn nor the CLI): it dies in its first E-step (some 50 MB more for K = 200
        # in float64; 150 MB is enough) and Dask gives up on the task after four deaths
        # (KilledWorker). Before, Dask paused it at 80 % of its limit: the fit hung.
        "120MB",
        # It dies as it starts, before it takes a task, so no task ever fails; the tasks fail
        # once no worker has been up for a while (NoWorkerError). Before, a traceback, or, with
        # workers that import bmm_dask as they start (as those of `bmm-dask fit` did), no end.
        "100MB",
    ],
)
def test_a_fit_whose_workers_keep_dying_ends_with_one_line(tmp_path: Path, limit: str) -> None:
    data = synth(tmp_path / "d.zarr", n_samples=60_000, n_features=784, n_components=5, seed=0)
    args = ["-q", "fit", data, "--k", "200", "--dtype", "float64", "--max-iter", "2"]
    args += ["--out", tmp_path / "m.zarr", "--no-persist", *LOCAL_CLUSTER, "--memory-limit", limit]
    line = assert_one_line_error(run_bmm_dask(*args, script=WITHOUT_FLOOR, timeout=120))
    assert line.startswith("bmm-dask: error: the workers ")
    assert f"their memory limit of {limit[:-2]} MB may be too small" in line
    assert "--memory-limit" in line
    assert not (tmp_path / "m.zarr").exists()
