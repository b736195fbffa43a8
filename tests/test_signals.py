"""Ctrl-C and SIGTERM while a command runs: one line, exit 130 or 143, no temporary output left,
an output being replaced intact, no tracebacks from the cluster as it shuts down."""

from __future__ import annotations

import os
import signal
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from bmm_dask import BernoulliMixture, open_dataset
from bmm_dask.datasets import ingest, synth
from tests._helpers import LOCAL_CLUSTER, guard, start_bmm_dask, wait_until

#: Every test here starts a bmm-dask command in a process of its own, and signals it.
pytestmark = pytest.mark.slow

INTERRUPTED = "bmm-dask: interrupted; outputs already saved are intact"
TERMINATED = "bmm-dask: terminated; outputs already saved are intact"
#: A fit that goes on until it is stopped, on a local cluster of one worker.
FIT = ("--k", "10", "--max-iter", "1000", "--tol", "0", *LOCAL_CLUSTER)


def _writing(out: Path, chunks: int = 1) -> Callable[[], bool]:
    """Whether the command has written ``chunks`` chunks into its temporary output
    (``.NAME.*.tmp``)."""
    return lambda: any(
        len(list((tmp / "bits" / "c").glob("*"))) >= chunks
        for tmp in out.parent.glob(f".{out.name}.*.tmp")
    )


def _leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.endswith((".tmp", ".part")))


def _after_iterations(process: subprocess.Popen[str], signum: int, *, group: bool) -> list[str]:
    """Send ``signum`` once the fit has logged an iteration (or a stepwise pass); the lines on
    stderr after the last such line.

    stderr is read by a thread, so that a fit that hangs without a word fails the test after a
    guard instead of holding it in a read for ever.
    """
    stderr = process.stderr
    assert stderr is not None
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(stderr), daemon=True)
    reader.start()

    def iterated() -> bool:
        return any(line.startswith(("iteration ", "pass ")) for line in list(lines))

    wait_until(lambda: iterated() or not reader.is_alive(), "iteration logged", timeout=120)
    assert iterated(), f"the fit ended before its first iteration: {''.join(lines)}"
    if group:
        os.killpg(process.pid, signum)
    else:
        process.send_signal(signum)
    process.wait(timeout=guard(120))
    reader.join(timeout=guard(10))
    assert not reader.is_alive(), "stderr still open after the fit ended"
    last = max(i for i, line in enumerate(lines) if line.startswith(("iteration ", "pass ")))
    return [line.rstrip("\n") for line in lines[last + 1 :]]


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Enough rows for a fit to take a while and for its E-step to gather several sums."""
    return synth(
        tmp_path_factory.mktemp("signals") / "d.zarr",
        n_samples=200_000,
        n_features=784,
        n_components=10,
        seed=0,
    )


@pytest.mark.parametrize(
    "group", [False, True], ids=["signal to the command", "Ctrl-C on a terminal (every process)"]
)
def test_ctrl_c_during_a_fit_prints_one_line(data: Path, tmp_path: Path, group: bool) -> None:
    # The tracebacks (asyncio's "Task exception was never retrieved ... AllExit", and each
    # worker's KeyboardInterrupt when the whole process group gets SIGINT) came in most tries,
    # not all, and at different moments: several tries, at different times after an iteration.
    for attempt, delay in enumerate((0.0, 0.6) if group else (0.0, 0.3, 0.8)):
        out = tmp_path / f"m{attempt}.zarr"
        fit = start_bmm_dask("fit", data, *FIT, "--out", out, group=group)
        assert fit.stderr is not None
        time.sleep(delay)
        rest = _after_iterations(fit, signal.SIGINT, group=group)
        assert fit.returncode == 130, rest
        assert rest == [INTERRUPTED], (attempt, rest)
        assert not out.exists() and _leftovers(tmp_path) == []


def test_sigterm_during_a_fit_replacing_a_model(data: Path, tmp_path: Path) -> None:
    out = tmp_path / "m.zarr"
    before = BernoulliMixture(2, max_iter=2, tol=10.0, random_state=0).fit(open_dataset(data))
    before.save(out)
    fit = start_bmm_dask("fit", data, *FIT, "--out", out, "--overwrite")
    rest = _after_iterations(fit, signal.SIGTERM, group=False)
    assert fit.returncode == 143, rest
    assert rest == [TERMINATED]
    assert _leftovers(tmp_path) == []
    np.testing.assert_array_equal(BernoulliMixture.load(out).means_, before.means_)


def test_sigterm_during_synth_leaves_no_temporary_folder(tmp_path: Path) -> None:
    out = tmp_path / "d.zarr"
    synth(out, n_samples=100, n_features=16, n_components=2, seed=1)
    # Tasks still running when the signal came wrote their chunks into the temporary folder
    # after its removal, in about 2 tries of 3: a few tries.
    for _ in range(3):
        command = start_bmm_dask(
            "synth", "--n", "3000000", "--d", "784", "--k", "5", "--out", out, "--overwrite"
        )
        wait_until(_writing(out, chunks=4), "chunks written", worker=command)
        command.send_signal(signal.SIGTERM)
        time.sleep(0.03)
        command.send_signal(signal.SIGTERM)  # scancel sends more: the cleanup must go on
        _, err = command.communicate(timeout=guard(120))
        assert command.returncode == 143, err
        assert err.splitlines() == [TERMINATED]
        assert _leftovers(tmp_path) == []
        assert open_dataset(out).n_samples == 100


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A .npy of 150,000 images that takes ingest a few seconds in chunks of 100 rows."""
    path = tmp_path_factory.mktemp("images") / "images.npy"
    rows = np.arange(150_000, dtype=np.uint32)[:, None] + np.arange(784, dtype=np.uint32)
    np.save(path, (rows * 7 % 256).astype(np.uint8))
    return path


@pytest.mark.parametrize(
    ("signum", "code", "line"),
    [(signal.SIGTERM, 143, TERMINATED), (signal.SIGINT, 130, INTERRUPTED)],
    ids=["SIGTERM", "SIGINT"],
)
def test_a_signal_during_ingest(
    images: Path, tmp_path: Path, signum: int, code: int, line: str
) -> None:
    out = tmp_path / "d.zarr"
    small = tmp_path / "small.npy"
    np.save(small, (np.arange(7840) % 256).astype(np.uint8).reshape(10, 784))
    ingest(small, out)
    command = start_bmm_dask("ingest", images, "--out", out, "--chunk-rows", "100", "--overwrite")
    wait_until(_writing(out), "chunks written", worker=command)
    command.send_signal(signum)
    _, err = command.communicate(timeout=guard(120))
    assert command.returncode == code, err
    assert err.splitlines() == [line]
    assert _leftovers(tmp_path) == []
    assert open_dataset(out).n_samples == 10


#: ``bmm-dask ARGS`` in which the signal named by $BMM_DASK_SIGNAL reaches the command just after
#: it says "wrote ...": its output is saved by then.
SIGNAL_AFTER_WROTE = """
import os, signal, sys, time
import bmm_dask.cli.data, bmm_dask.cli.fit
from bmm_dask.cli import main
for module in (bmm_dask.cli.data, bmm_dask.cli.fit):
    def say_then_signal(line, said=module.say_done):
        said(line)
        os.kill(os.getpid(), getattr(signal, os.environ["BMM_DASK_SIGNAL"]))
        time.sleep(0.5)  # the handler runs in the main thread, between two bytecodes
    module.say_done = say_then_signal
sys.exit(main(sys.argv[1:]))
"""


@pytest.mark.parametrize("name", ["SIGINT", "SIGTERM"])
def test_a_signal_after_wrote_ends_with_the_output_saved(tmp_path: Path, name: str) -> None:
    # it exited 130 or 143, which says the output is as it was, when it had been replaced
    from tests._helpers import run_bmm_dask

    out = tmp_path / "s.zarr"
    args = ("synth", "--n", "1000", "--d", "8", "--k", "2", "--out", out)
    result = run_bmm_dask(
        *args, script=SIGNAL_AFTER_WROTE, env={**os.environ, "BMM_DASK_SIGNAL": name}
    )
    assert result.code == 0, result.err
    assert result.out.startswith(f"wrote {out}") and "interrupted" not in result.err
    assert open_dataset(out).n_samples == 1000
