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
