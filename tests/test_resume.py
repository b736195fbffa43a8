"""Never lose a fit: checkpoints, a SIGKILL and --resume, and one writer at a time."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from bmm_dask import BernoulliMixture, ModelFileError, open_dataset
from bmm_dask.datasets import synth
from bmm_dask.errors import SettingsError
from bmm_dask.io import read_checkpoint
from tests._helpers import (
    LOCAL_CLUSTER,
    assert_one_line_error,
    guard,
    start_bmm_dask,
    tree_snapshot,
    wait_until,
)

SETTINGS = [
    "--k",
    "6",
    "--seed",
    "1",
    "--dtype",
    "float64",
    "--max-iter",
    "12",
    "--tol",
    "0",
    "--n-init",
    "2",
]


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return synth(
        tmp_path_factory.mktemp("resume") / "d.zarr",
        n_samples=120_000,
        n_features=784,
        n_components=6,
        seed=4,
    )


@pytest.mark.slow
def test_killed_then_resumed_equals_uninterrupted(data: Path, tmp_path: Path, bmm) -> None:
    out = tmp_path / "model.zarr"
    fit = ("fit", data, *SETTINGS, "--out", out, "--checkpoint-every", "2", *LOCAL_CLUSTER)
    process = start_bmm_dask(*fit, group=True, capture=False)
    state = None

    def far_enough() -> bool:
        """A checkpoint of the second start, or of four iterations of the first."""
        nonlocal state
        if not (out / "checkpoint.npz").exists():
            return False
        try:
            _, state, _ = read_checkpoint(out)
        except ModelFileError:
            return False  # caught between two writes: read again
        return state["run"] == 1 or len(state["history"]) >= 4

    wait_until(far_enough, "checkpoint to resume from", worker=process, timeout=240, interval=0.2)
    assert process.poll() is None, "the fit ended before it could be killed"
    os.killpg(process.pid, signal.SIGKILL)  # the fit and its local cluster, at once
    process.wait(timeout=guard(30))
    assert state is not None
    with pytest.raises(ModelFileError, match="resume=True"):
        BernoulliMixture.load(out)
    assert Path(f"{out}.lock").exists()  # left by the killed fit: stale now

    result = bmm(*fit, "--resume")
    assert result.code == 0, result.err
    # It says where it continues: which start, after which iteration, how many were saved.
    assert re.search(
        r"resuming .*model\.zarr: start [12] of 2, (after its iteration \d+ \(the last saved\)"
        r"|from its beginning)",
        result.err,
    ), result.err
    resumed = BernoulliMixture.load(out)
    assert not Path(f"{out}.lock").exists()

    reference = BernoulliMixture(
        6, random_state=1, dtype="float64", max_iter=12, tol=0, n_init=2
    ).fit(open_dataset(data))
    assert np.array_equal(resumed.means_, reference.means_)
    assert np.array_equal(resumed.weights_, reference.weights_)
    assert resumed.lower_bound_ == reference.lower_bound_
    assert [h["objective"] for h in resumed.history_] == [
        h["objective"] for h in reference.history_
    ]


def test_resume_needs_the_same_settings_and_a_checkpoint(tmp_path: Path, bmm) -> None:
    small = synth(tmp_path / "s.zarr", n_samples=2000, n_features=20, n_components=2, seed=0)
    out = tmp_path / "m.zarr"
    model = BernoulliMixture(2, max_iter=4, tol=0, random_state=0)
    model.fit(open_dataset(small), checkpoint=out, checkpoint_every=2)
    _, state, attrs = read_checkpoint(out)
    assert state["run"] == 0 and len(state["history"]) == 4 and attrs["settings"]["max_iter"] == 4
    assert_one_line_error(
        bmm("fit", small, "--k", "3", "--max-iter", "4", "--out", out, "--resume"), "other settings"
    )
    assert_one_line_error(
        bmm("fit", small, "--k", "2", "--out", tmp_path / "none.zarr", "--resume"),
        "none.zarr: nothing to resume: it does not exist",
    )
    assert_one_line_error(
        bmm("predict", out, small, "--out", tmp_path / "p.zarr"), "checkpoint of an unfinished fit"
    )
    assert_one_line_error(bmm("fit", small, "--k", "2", "--out", out), "resume it (--resume)")


def test_resume_refuses_other_data_at_the_same_path(tmp_path: Path, bmm) -> None:
    # it went on, exit 0: passes 1-2 on the old data, the rest on the new
    data, out = tmp_path / "d.zarr", tmp_path / "m.zarr"
    synth(data, n_samples=2000, n_features=20, n_components=2, seed=0)
    model = BernoulliMixture(2, max_iter=4, tol=0, random_state=0)
    model.fit(open_dataset(data), checkpoint=out, checkpoint_every=2)
    before = tree_snapshot(out)
    synth(data, n_samples=2000, n_features=20, n_components=2, seed=1, overwrite=True)
    with pytest.raises(SettingsError, match="its checkpoint was made with other data"):
        BernoulliMixture(2, max_iter=4, tol=0, random_state=0).fit(
            open_dataset(data), checkpoint=out, resume=True
        )
    line = assert_one_line_error(
        bmm("fit", data, "--k", "2", "--max-iter", "4", "--tol", "0", "--out", out, "--resume"),
        "its checkpoint was made with other data",
        "generation",
    )
    assert str(out) in line
    assert tree_snapshot(out) == before


@pytest.mark.slow
def test_one_writer_at_a_time(tmp_path: Path, bmm) -> None:
    small = synth(tmp_path / "s.zarr", n_samples=500, n_features=8, n_components=2, seed=0)
    out = tmp_path / "m.zarr"
    Path(f"{out}.lock").write_text(json.dumps({"pid": os.getpid(), "host": os.uname().nodename}))
    assert_one_line_error(
        bmm("fit", small, "--k", "2", "--out", out, "--workers", "1"),
        "another bmm-dask command is writing it",
    )
    assert not out.exists()
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        capture_output=True,
        text=True,
        timeout=guard(30),
    )
    Path(f"{out}.lock").write_text(
        json.dumps({"pid": int(dead.stdout), "host": os.uname().nodename})
    )
    result = bmm(
        "fit",
        small,
        "--k",
        "2",
        "--out",
        out,
        *LOCAL_CLUSTER,
    )
    assert result.code == 0, result.err  # a stale lock is taken over
    assert out.is_dir() and not Path(f"{out}.lock").exists()


def test_info_says_where_a_stepwise_checkpoint_stands(tmp_path: Path, bmm) -> None:
    # it said "after 0 iterations, objective None"
    data = synth(tmp_path / "d.zarr", n_samples=2000, n_features=20, n_components=2, seed=0)
    out = tmp_path / "c.zarr"
    BernoulliMixture(2, algorithm="stepwise", passes=2, batch_size=200, random_state=0).fit(
        open_dataset(data), checkpoint=out, checkpoint_every=3
    )
    line = bmm("info", out).out.splitlines()[1]
    pattern = (
        r"  start          1, after 1 stepwise pass, in stepwise pass 2 after step \d+, "
        r"objective -\d+\.\d{4}"
    )
    assert re.fullmatch(pattern, line), line
    assert "None" not in line and "0 iterations" not in line
