"""Shared fixtures: an isolated data cache, the command line run in-process, the MNIST files when present."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest

from bmm_dask.cli import main

SHARED_MNIST = Path(__file__).resolve().parent.parent.parent / "shared" / "data" / "mnist"


@pytest.fixture(autouse=True)
def isolated_cache(
    tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> Path:
    """Every test gets an empty data cache, never the user's ~/.cache/bmm-dask."""
    cache = tmp_path_factory.mktemp("cache")
    monkeypatch.setenv("BMM_DASK_DATA", str(cache))
    monkeypatch.delenv("BMM_DASK_MNIST_MIRRORS", raising=False)
    return cache


@pytest.fixture
def shared_mnist() -> Path:
    """The original MNIST IDX files; tests that need them skip on a machine without ../shared."""
    if not (SHARED_MNIST / "train-images-idx3-ubyte.gz").is_file():
        pytest.skip(f"the original MNIST files are not at {SHARED_MNIST}")
    return SHARED_MNIST


@dataclass
class Result:
    code: int
    out: str
    err: str


@pytest.fixture
def bmm(capsys: pytest.CaptureFixture[str]):
    """Run ``bmm-dask ARGS`` in this process, as the console script does; returns code, stdout, stderr."""

    def run(*args: str | os.PathLike[str]) -> Result:
        capsys.readouterr()
        code = main([os.fspath(a) for a in args])
        captured = capsys.readouterr()
        return Result(code, captured.out, captured.err)

    return run


def assert_one_line_error(result: Result, *needles: str) -> None:
    """Exit status 2, one line on stderr naming what is wrong, no traceback."""
    assert result.code == 2, (result.code, result.out, result.err)
    lines = result.err.strip().splitlines()
    assert len(lines) == 1, result.err
    assert "Traceback" not in result.err
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])


@contextlib.contextmanager
def dask_processes(
    folder: Path, scheduler_args: Sequence[str], workers: Sequence[Sequence[str]]
) -> Iterator[Path]:
    """`dask scheduler` and `dask worker` processes on 127.0.0.1, as a user starts them.

    Yields the scheduler file once the scheduler has written it; each test waits for the workers
    in its own way (with or without TLS). The processes are stopped on exit.
    """

    def dask(*args: str) -> subprocess.Popen[bytes]:
        return subprocess.Popen(
            [sys.executable, "-m", "dask", *args],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )

    scheduler_file = folder / "scheduler.json"
    common = ["--host", "127.0.0.1"]
    processes = [
        dask(
            "scheduler",
            *common,
            "--port",
            "0",
            "--dashboard-address",
            "127.0.0.1:0",
            "--scheduler-file",
            str(scheduler_file),
            "--no-show",
            *scheduler_args,
        )
    ]
    try:
        deadline = time.monotonic() + 60
        while not scheduler_file.exists():
            assert time.monotonic() < deadline, "the scheduler did not start"
            time.sleep(0.2)
        for args in workers:
            processes.append(
                dask(
                    "worker",
                    "--scheduler-file",
                    str(scheduler_file),
                    *common,
                    "--nthreads",
                    "1",
                    *args,
                )
            )
        yield scheduler_file
    finally:
        for process in processes:
            process.terminate()
        for process in processes:
            process.wait(timeout=30)
