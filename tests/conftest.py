"""Shared fixtures: an isolated data cache, the command line run in-process, the MNIST files when
present. Plain helpers the tests share are in ``tests/_helpers.py``."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

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


@pytest.fixture(autouse=True)
def slow_if_it_starts_processes(
    request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A test not marked ``slow`` fails if it starts a Dask cluster or a Python process, so that
    ``-m "not slow"`` stays quick: the mark is checked, not remembered.

    Fixtures of a wider scope (a module's cluster) are set up before this one, by a slow test.
    """
    if request.node.get_closest_marker("slow") is not None:
        return
    from distributed.deploy.spec import SpecCluster

    def refuse(what: str) -> None:
        pytest.fail(f"{what}: mark the test @pytest.mark.slow", pytrace=False)

    def cluster(self: Any, *args: Any, **kwargs: Any) -> None:
        refuse(f"this test starts a Dask cluster ({type(self).__name__})")

    popen = subprocess.Popen.__init__

    def start(self: Any, args: Any, *rest: Any, **kwargs: Any) -> None:
        program = os.fsdecode(args if isinstance(args, (str, bytes, os.PathLike)) else args[0])
        if program == sys.executable or "bmm-dask" in program:
            refuse(f"this test starts a Python process ({args!r})")
        popen(self, args, *rest, **kwargs)

    monkeypatch.setattr(SpecCluster, "__init__", cluster)
    monkeypatch.setattr(subprocess.Popen, "__init__", start)


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
