"""Shared fixtures: an isolated data cache, the command line run in-process, the MNIST files when
present. Plain helpers the tests share are in ``tests/_helpers.py``."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest

from bmm_dask.cli import main
from tests._helpers import Result

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


@pytest.fixture
def bmm(capsys: pytest.CaptureFixture[str]) -> Callable[..., Result]:
    """Run ``bmm-dask ARGS`` in this process, as the console script does; returns code, stdout, stderr."""

    def run(*args: str | os.PathLike[str]) -> Result:
        capsys.readouterr()
        code = main([os.fspath(a) for a in args])
        captured = capsys.readouterr()
        return Result(code, captured.out, captured.err)

    return run


@pytest.fixture
def passes_pay(monkeypatch: pytest.MonkeyPatch) -> None:
    """auto's stepwise passes on data too small for them to pay (so that tests can run them)."""
    import math

    import bmm_dask._em

    monkeypatch.setattr(bmm_dask._em, "MAX_PASS_COST", math.inf)
