"""Two commands writing one output at once: exactly one wins, the other exits 2, and the output is
always whole (the output's lock, and a rename that never replaces what appeared meanwhile)."""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest

from bmm_dask import open_dataset
from bmm_dask.datasets import ingest
from tests._helpers import Result, assert_one_line_error, guard

#: Every test here starts bmm-dask commands in processes of their own.
pytestmark = pytest.mark.slow

#: Each racer imports bmm_dask first, then waits until every racer has (a file each in a
#: barrier folder), so that the commands really overlap: an import takes longer than the ingest.
#: The wait for the others gives up after a guard (a racer that died), and the race goes on.
RACER = """
import os, sys, time
from bmm_dask.cli import main
barrier, me, racers, wait = sys.argv[1], sys.argv[2], int(sys.argv[3]), float(sys.argv[4])
open(os.path.join(barrier, me), "w").close()
deadline = time.monotonic() + wait
while len(os.listdir(barrier)) < racers and time.monotonic() < deadline:
    time.sleep(0.001)
sys.exit(main(sys.argv[5:]))
"""


def _race(commands: list[list[str]], cwd: Path) -> list[subprocess.CompletedProcess[str]]:
    barrier = Path(tempfile.mkdtemp(prefix="barrier-"))
    wait = str(guard(60))
    processes = [
        subprocess.Popen(
            [sys.executable, "-c", RACER, str(barrier), str(i), str(len(commands)), wait, *command],
            cwd=cwd,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i, command in enumerate(commands)
    ]
    results = []
    for process, command in zip(processes, commands, strict=True):
        out, err = process.communicate(timeout=guard(120))
        results.append(subprocess.CompletedProcess(command, process.returncode, out, err))
    shutil.rmtree(barrier)
    return results


def test_two_ingests_racing_for_one_output(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    for name in ("a", "b"):
        np.save(tmp_path / f"{name}.npy", rng.integers(0, 256, size=(20_000, 64), dtype=np.uint8))
        ingest(tmp_path / f"{name}.npy", tmp_path / f"expected-{name}.zarr", chunk_rows=500)
    expected = {
        name: open_dataset(tmp_path / f"expected-{name}.zarr").bits.compute() for name in "ab"
    }
    out = tmp_path / "c.zarr"
    winners = []
    for _ in range(20):
        results = _race(
            [
                ["ingest", f"{name}.npy", "--out", "c.zarr", "--chunk-rows", "500"]
                for name in ("a", "b")
            ],
            tmp_path,
        )
        codes = sorted(r.returncode for r in results)
        assert codes == [0, 2], [(r.returncode, r.stderr) for r in results]
        winner = next(i for i, r in enumerate(results) if r.returncode == 0)
        assert_one_line_error(Result.of(results[1 - winner]), "c.zarr")
        bits = open_dataset(out).bits.compute()
        assert np.array_equal(bits, expected["ab"[winner]])  # whole, and the winner's
        assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []
        winners.append(winner)
        shutil.rmtree(out)
    print("winners:", winners)


def test_two_synths_racing_with_overwrite_leave_one_whole_output(tmp_path: Path) -> None:
    """synth writes its chunks in parallel with Dask: still one winner and one whole data set."""
    for _ in range(3):
        results = _race(
            [
                [
                    "synth",
                    "--n",
                    "50000",
                    "--d",
                    "64",
                    "--k",
                    "3",
                    "--seed",
                    seed,
                    "--out",
                    "s.zarr",
                ]
                for seed in ("1", "2")
            ],
            tmp_path,
        )
        assert sorted(r.returncode for r in results) == [0, 2], [r.stderr for r in results]
        seed = 1 + next(i for i, r in enumerate(results) if r.returncode == 0)
        data = open_dataset(tmp_path / "s.zarr")
        assert data.attrs["source"]["synthetic"]["seed"] == seed
        assert data.bits.compute().shape == (50_000, 8)
        shutil.rmtree(tmp_path / "s.zarr")


# --------------------------------------------------------------------------- a store replaced


def _write(path: Path, seed: int) -> None:
    from bmm_dask.datasets import synth

    synth(
        path,
        n_samples=20_000,
        n_features=64,
        n_components=5,
        seed=seed,
        chunk_rows=2_000,
        overwrite=True,
    )


REPLACED = "replaced by another command while this one read it"


def test_a_fit_racing_a_replacing_writer_sees_one_dataset_or_stops(tmp_path: Path) -> None:
    # A fit that streamed its rows while ingest --overwrite replaced them mixed the two datasets
    # (its objective fell, exit 0) or blamed a missing chunk.
    import threading

    import dask

    from bmm_dask import BernoulliMixture
    from bmm_dask.errors import DataError

    path = tmp_path / "dc.zarr"
    settings = {
        "algorithm": "batch",
        "max_iter": 6,
        "tol": 0,
        "dtype": "float64",
        "random_state": 0,
    }
    outcomes = []
    with dask.config.set(scheduler="threads"):
        for race in range(20):
            _write(path, seed=1)
            undisturbed = BernoulliMixture(5, **settings).fit(open_dataset(path), persist=False)
            writer = threading.Thread(target=_write, args=(path, 2))
            at = 1 + race % 5  # the writer starts after this iteration, and races the next

            def start_writer(event: dict, at: int = at, writer: threading.Thread = writer) -> None:
                if event["kind"] == "iteration" and event["iteration"] == at:
                    writer.start()

            try:
                model = BernoulliMixture(5, **settings).fit(
                    open_dataset(path), persist=False, callback=start_writer
                )
            except DataError as err:
                assert REPLACED in str(err) and str(path) in str(err), err
                outcomes.append("stopped")
            else:  # it ended before the writer's new store was in place: the old data alone
                np.testing.assert_array_equal(model.means_, undisturbed.means_)
                outcomes.append("one dataset")
            finally:
                writer.join(timeout=guard(60))
    assert len(outcomes) == 20 and "stopped" in outcomes, outcomes


def test_predict_racing_a_replacing_writer_writes_one_dataset_or_stops(tmp_path: Path, bmm) -> None:
    # predictions mixed the label chunks of both datasets, exit 0
    import threading

    import zarr

    from bmm_dask import BernoulliMixture

    path, out = tmp_path / "dc.zarr", tmp_path / "p.zarr"
    _write(path, seed=1)
    model = BernoulliMixture(5, max_iter=3, random_state=0).fit(open_dataset(path))
    model.save(tmp_path / "m.zarr")
    expected = []
    for seed in (1, 2):
        _write(path, seed=seed)
        expected.append(np.asarray(model.predict(open_dataset(path))))
    outcomes = []
    for race in range(20):
        _write(path, seed=1)
        writer = threading.Thread(target=_write, args=(path, 2))
        writer.start()
        threading.Event().wait(0.02 * (race % 5))  # the reader starts with the writer, or after
        result = bmm("-q", "predict", tmp_path / "m.zarr", path, "--out", out, "--overwrite")
        writer.join(timeout=guard(60))
        if result.code == 0:
            got = zarr.open_group(out, mode="r")["labels"][:]
            assert any(np.array_equal(got, e) for e in expected), race
            outcomes.append("one dataset")
        else:
            assert_one_line_error(result, REPLACED)
            outcomes.append("stopped")
    assert len(outcomes) == 20, outcomes
