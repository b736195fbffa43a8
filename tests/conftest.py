"""Shared fixtures: an isolated data cache, the command line run in-process, the MNIST files when present."""

from __future__ import annotations

import os
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
