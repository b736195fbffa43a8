"""Jobs submitted to a cluster started as a deployment starts one (`dask scheduler` and two
`dask worker` processes on 127.0.0.1, apart from the tests): they outlive the process that
submitted them and the worker that runs their driver, and can be followed and cancelled."""

from __future__ import annotations

import json
import os
import shutil
import signal
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from distributed import Client

from bmm_dask import BernoulliMixture, open_dataset
from bmm_dask.datasets import synth
from tests._helpers import (
    Result,
    assert_one_line_error,
    dask_processes,
    guard,
    run_bmm_dask,
    start_bmm_dask,
    wait_until,
)

#: A `dask scheduler` and two `dask worker` processes, started here.
pytestmark = pytest.mark.slow

#: A fit long enough to be caught in the middle: batch EM to 60 iterations, in float64, where
#: a resumed fit is the same as an uninterrupted one bit for bit.
LONG = ("--k", "8", "--dtype", "float64", "--algorithm", "batch", "--tol", "0", "--max-iter", "60")
LONG_MODEL = {"dtype": "float64", "algorithm": "batch", "tol": 0, "max_iter": 60}


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict]:
    """A scheduler and two single-threaded workers (their nannies restart a killed one)."""
    folder = tmp_path_factory.mktemp("jobs")
    workers = [["--name", name, "--memory-limit", "2GB"] for name in ("w1", "w2")]
    with (
        dask_processes(folder, [], workers) as scheduler_file,
        Client(scheduler_file=str(scheduler_file), timeout=guard(30)) as client,
    ):
        client.wait_for_workers(2, timeout=guard(60))
        data = synth(
            folder / "data.zarr",
            n_samples=100_000,
            n_features=200,
            n_components=8,
            seed=4,
            chunk_rows=10_000,
        )
        dashboard = json.loads(scheduler_file.read_text())["services"]["dashboard"]
        yield {
            "file": str(scheduler_file),
            "client": client,
            "data": data,
            "folder": folder,
            "page": f"http://127.0.0.1:{dashboard}/bmm-dask",
        }


def on(cluster: dict) -> tuple[str, str]:
    return ("--scheduler-file", cluster["file"])


def submit(bmm, cluster: dict, *args: object) -> str:
    result = bmm("-q", "submit", *args, *on(cluster))
    assert result.code == 0, result.err
    return result.out.strip()


def wait(bmm, cluster: dict, job_id: str, *before: str) -> Result:
    """``bmm-dask [BEFORE] wait JOB``, which gives up (exit status 1) if the job hangs."""
    return bmm(*before, "wait", job_id, "--timeout", f"{guard(300):.0f}", *on(cluster))


def job(cluster: dict, job_id: str) -> dict:
    return cluster["client"].get_metadata(["bmm-dask-jobs", job_id])


def same_model(path: Path, reference: BernoulliMixture) -> None:
    model = BernoulliMixture.load(path)
    assert np.array_equal(model.means_, reference.means_)
    assert np.array_equal(model.weights_, reference.weights_)
    assert model.lower_bound_ == reference.lower_bound_


@pytest.fixture(scope="module")
def long_reference(cluster: dict) -> BernoulliMixture:
    """The LONG fit, uninterrupted, in this process."""
    return BernoulliMixture(8, random_state=0, **LONG_MODEL).fit(open_dataset(cluster["data"]))


def test_jobs_on_a_cluster_with_none(cluster: dict, bmm, monkeypatch: pytest.MonkeyPatch) -> None:
    result = bmm("jobs", *on(cluster))
    assert result.code == 0, result.err
    assert result.out.strip() == "no jobs on this cluster (bmm-dask submit fit ... starts one)"
    # the cluster named by the environment, as Dask's own clients find it
    monkeypatch.setenv("DASK_SCHEDULER_ADDRESS", cluster["client"].scheduler.address)
    assert json.loads(bmm("jobs", "--json").out) == []


def test_a_submitted_fit_ends_with_the_terminals_model(cluster: dict, tmp_path: Path, bmm) -> None:
    data, out = cluster["data"], tmp_path / "m.zarr"
    args = ("--k", "5", "--seed", "2", "--dtype", "float64", "--algorithm", "stepwise")
    job_id = submit(bmm, cluster, "fit", data, *args, "--passes", "3", "--out", out, "--no-persist")
    assert len(job_id) == 8

    waited = wait(bmm, cluster, job_id)
    assert waited.code == 0, waited.err
    assert waited.out.startswith(f"wrote {out}: K = 5, 3 stepwise passes")
    reference = BernoulliMixture(
        5, random_state=2, dtype="float64", algorithm="stepwise", passes=3
    ).fit(open_dataset(data))
    same_model(out, reference)
    assert not Path(f"{out}.checkpoint").exists() and not Path(f"{out}.lock").exists()

    status = json.loads(bmm("status", job_id, "--json", *on(cluster)).out)
    assert status["state"] == "done" and status["attempt"] == 1
    assert status["output"] == str(out)
    # a pass's end: pass 3 of 3, every step of it taken
    progress = status["progress"]
    assert progress["pass"] == progress["passes"] == 3 and "iteration" not in progress
    assert progress["step_in_pass"] == progress["steps_in_pass"] > 0
    assert status["command"] == "fit" and f"--out {out}" in status["argv"]
    assert status["argv"].endswith("--no-persist")  # the command as typed
    assert status["started"] <= status["ended"]
    text = bmm("status", job_id, *on(cluster)).out
    assert f"job {job_id}: done" in text and "last line   wrote" in text

    log = bmm("logs", job_id, *on(cluster)).out.splitlines()
    messages = [line.split("  ", 1)[1] for line in log]
    assert messages[0].startswith("submitted: bmm-dask fit ")
    assert messages[1].startswith("started on tcp://127.0.0.1:")
    assert sum(m.startswith("pass ") for m in messages) == 3
    assert messages[-1] == f"done: {waited.out.strip()}"

    listed = bmm("jobs", *on(cluster)).out.splitlines()
    assert listed[0].split()[:3] == ["JOB", "STATE", "PROGRESS"]
    assert any(line.startswith(f"{job_id}  done") for line in listed[1:])
    # the dashboard's page lists it too (submit added the page to the scheduler)
    with urllib.request.urlopen(cluster["page"], timeout=guard(30)) as response:
        page = response.read().decode()
    assert f"<td>{job_id}</td><td>done</td><td>pass 3 of 3, step " in page


def test_a_job_outlives_its_submitting_process_killed(
    cluster: dict, tmp_path: Path, long_reference: BernoulliMixture, bmm
) -> None:
    out = tmp_path / "m.zarr"
    process = start_bmm_dask(
        "-q", "submit", "fit", cluster["data"], *LONG, "--out", out, *on(cluster)
    )
    assert process.stdout is not None
    job_id = process.stdout.readline().strip()
    process.kill()  # SIGKILL: no goodbye to the scheduler
    process.wait(timeout=guard(30))
    # killed, or ended by itself just before (it prints the id as its last act): either way
    # the job is the cluster's now
    assert process.returncode in (-signal.SIGKILL, 0), process.returncode
    waited = wait(bmm, cluster, job_id)
    assert waited.code == 0, waited.err
    same_model(out, long_reference)


def test_logs_follow_and_a_resume_from_a_checkpoint_left_behind(
    cluster: dict, tmp_path: Path, long_reference: BernoulliMixture, bmm
) -> None:
    # A scheduler that restarts forgets its jobs; their checkpoints stay. Here one is copied
    # while its job runs, and a job submitted with --resume continues from it.
    out = tmp_path / "m.zarr"
    job_id = submit(bmm, cluster, "fit", cluster["data"], *LONG, "--out", out)
    follow = start_bmm_dask("logs", job_id, "--follow", *on(cluster))
    checkpoint = Path(f"{out}.checkpoint")

    def far_enough() -> bool:
        progress = job(cluster, job_id).get("progress") or {}
        return (progress.get("iteration") or 0) >= 5 and (checkpoint / "checkpoint.npz").is_file()

    wait_until(far_enough, "fifth iteration of the job", timeout=120)
    left = tmp_path / "again.zarr.checkpoint"
    shutil.copytree(checkpoint, left)

    lines, _ = follow.communicate(timeout=guard(120))  # --follow ends when the job does
    assert follow.returncode == 0
    assert lines.splitlines()[-1].split("  ", 1)[1].startswith(f"done: wrote {out}: K = 8")
    assert sum("  iteration " in line for line in lines.splitlines()) == 60

    again = tmp_path / "again.zarr"
    resumed = submit(bmm, cluster, "fit", cluster["data"], *LONG, "--out", again, "--resume")
    assert wait(bmm, cluster, resumed).code == 0
    assert "resuming " + str(left) in bmm("logs", resumed, *on(cluster)).out
    same_model(again, long_reference)
    assert not left.exists()


def test_waiting_gives_up_or_is_interrupted_and_the_job_goes_on(
    cluster: dict, tmp_path: Path, bmm
) -> None:
    # A job that runs until it is cancelled, so that it is surely running at each look.
    endless = ("--k", "2", "--algorithm", "batch", "--tol", "0", "--max-iter", "1000000")
    job_id = submit(bmm, cluster, "fit", cluster["data"], *endless, "--out", tmp_path / "m.zarr")
    wait_until(lambda: job(cluster, job_id)["state"] == "running", "the job running")
    timeout = bmm("wait", job_id, "--timeout", "0", *on(cluster))
    assert timeout.code == 1 and f"job {job_id} is still running" in timeout.err

    waiting = start_bmm_dask("wait", job_id, *on(cluster))
    assert waiting.stderr is not None
    # its first line says it waits (a signal before it, in the imports, would only kill it)
    assert waiting.stderr.readline().strip() == f"job {job_id} is running; waiting for it to end"
    waiting.send_signal(signal.SIGINT)  # Ctrl-C stops the waiting, not the job
    _, err = waiting.communicate(timeout=guard(60))
    assert waiting.returncode == 130
    assert err.strip() == "bmm-dask: interrupted; the job goes on (bmm-dask status JOB)"
    assert job(cluster, job_id)["state"] == "running"

    assert bmm("cancel", job_id, *on(cluster)).code == 0
    assert wait(bmm, cluster, job_id).code == 130


def test_a_job_survives_the_worker_running_its_driver_killed(
    cluster: dict, tmp_path: Path, long_reference: BernoulliMixture, bmm
) -> None:
    client, out = cluster["client"], tmp_path / "m.zarr"
    job_id = submit(bmm, cluster, "fit", cluster["data"], *LONG, "--out", out)
    checkpoint = Path(f"{out}.checkpoint") / "checkpoint.npz"

    def far_enough() -> bool:
        progress = job(cluster, job_id).get("progress") or {}
        return (progress.get("iteration") or 0) >= 5 and checkpoint.is_file()

    wait_until(far_enough, "fifth iteration of the job", timeout=120)
    worker = job(cluster, job_id)["worker"]
    pid = client.run(os.getpid, workers=[worker])[worker]
    os.kill(pid, signal.SIGKILL)  # its nanny starts a fresh worker process

    waited = wait(bmm, cluster, job_id)
    assert waited.code == 0, waited.err
    status = job(cluster, job_id)
    assert status["state"] == "done" and status["attempt"] == 2
    log = bmm("logs", job_id, *on(cluster)).out
    assert "(attempt 2: the worker of the last one died)" in log
    assert f"resuming {out}.checkpoint: start 1 of 1, after its iteration" in log
    same_model(out, long_reference)
    assert not checkpoint.parent.exists()


def test_cancel_stops_a_job_and_keeps_the_model_that_was_there(
    cluster: dict, tmp_path: Path, bmm
) -> None:
    client, out = cluster["client"], tmp_path / "m.zarr"
    small = ("--k", "2", "--max-iter", "2")
    assert bmm("-q", "fit", cluster["data"], *small, "--out", out, *on(cluster)).code == 0
    before = BernoulliMixture.load(out).means_
    endless = ("--k", "8", "--algorithm", "stepwise", "--passes", "1000000")  # until cancelled
    job_id = submit(bmm, cluster, "fit", cluster["data"], *endless, "--out", out, "--overwrite")
    checkpoint = Path(f"{out}.checkpoint")
    wait_until(lambda: (checkpoint / "checkpoint.npz").is_file(), "a checkpoint", timeout=120)

    cancelled = bmm("cancel", job_id, *on(cluster))
    assert cancelled.code == 0, cancelled.err
    assert "cancelling; it stops at its next step and removes its checkpoint" in cancelled.out
    waited = wait(bmm, cluster, job_id)
    assert waited.code == 130
    assert waited.err.strip().splitlines()[-1] == f"bmm-dask: job {job_id} was cancelled"
    assert job(cluster, job_id)["state"] == "cancelled"
    wait_until(
        lambda: not sum(client.run(lambda dask_worker: dask_worker.state.executing_count).values()),
        "the workers' threads free",
        timeout=30,
    )
    assert np.array_equal(BernoulliMixture.load(out).means_, before)
    assert not checkpoint.exists() and not Path(f"{out}.lock").exists()
    assert "cancelled: stopped at its next step" in bmm("logs", job_id, *on(cluster)).out
    # an ended job stays as it ended
    assert bmm("cancel", job_id, *on(cluster)).out.strip() == (
        f"job {job_id}: cancelled already; nothing to cancel"
    )


def test_two_jobs_at_once(cluster: dict, tmp_path: Path, bmm) -> None:
    data = cluster["data"]
    ids = [
        submit(
            bmm,
            cluster,
            "fit",
            data,
            "--k",
            str(k),
            "--dtype",
            "float64",
            "--out",
            tmp_path / f"m{k}.zarr",
        )
        for k in (3, 4)
    ]
    # a third writing the same output as a job still running is refused
    third = bmm("submit", "fit", data, "--k", "3", "--out", tmp_path / "m3.zarr", *on(cluster))
    if job(cluster, ids[0])["state"] in ("queued", "running"):
        assert_one_line_error(third, f"m3.zarr: job {ids[0]} is writing it")
    for job_id, k in zip(ids, (3, 4), strict=True):
        assert wait(bmm, cluster, job_id).code == 0
        reference = BernoulliMixture(k, random_state=0, dtype="float64").fit(open_dataset(data))
        same_model(tmp_path / f"m{k}.zarr", reference)


def test_a_job_that_fails_on_bad_data(cluster: dict, tmp_path: Path, bmm) -> None:
    data = tmp_path / "d.zarr"
    shutil.copytree(cluster["data"], data)
    (data / "bits" / "c" / "3" / "0").write_bytes(b"\x00garbage" * 20)  # readable only as junk
    out = tmp_path / "m.zarr"
    job_id = submit(bmm, cluster, "fit", data, "--k", "3", "--out", out)
    waited = wait(bmm, cluster, job_id, "-q")  # -q: the error's line alone
    line = assert_one_line_error(waited, f"job {job_id} failed: ", "d.zarr/bits: chunk 3")
    status = bmm("status", job_id, *on(cluster))
    assert f"job {job_id}: failed" in status.out
    assert "  error       " + line.split("failed: ", 1)[1] in status.out
    assert not out.exists() and not Path(f"{out}.checkpoint").exists()
    assert not Path(f"{out}.lock").exists()


def test_paths_are_checked_on_a_worker(cluster: dict, tmp_path: Path, bmm) -> None:
    missing = bmm(
        "submit",
        "fit",
        tmp_path / "no.zarr",
        "--k",
        "2",
        "--out",
        tmp_path / "m.zarr",
        *on(cluster),
    )
    assert_one_line_error(
        missing, "no.zarr: no such file or folder", "(checked on the worker tcp://"
    )
    taken = tmp_path / "taken.zarr"
    taken.mkdir()
    exists = bmm("submit", "fit", cluster["data"], "--k", "2", "--out", taken, *on(cluster))
    assert_one_line_error(exists, "taken.zarr: exists already; pass --overwrite to replace it")
    big = bmm(
        "submit",
        "select",
        cluster["data"],
        "--k",
        "2,200000",
        "--out",
        tmp_path / "s",
        *on(cluster),
    )
    assert_one_line_error(big, "K = 200000 is more than its 100000 rows")
    listed = bmm(
        "submit", "select", cluster["data"], "--k", "2,x", "--out", tmp_path / "s", *on(cluster)
    )
    line = assert_one_line_error(listed, "--k: expected whole numbers separated by commas")
    assert "checked on the worker" not in line  # read here, before any connection
    unknown = bmm("status", "nosuchjob", *on(cluster))
    assert_one_line_error(unknown, "no job nosuchjob on the cluster at tcp://127.0.0.1:")


def test_a_submitted_selection(cluster: dict, tmp_path: Path, bmm) -> None:
    out = tmp_path / "sel"
    job_id = submit(bmm, cluster, "select", cluster["data"], "--k", "2,8", "--out", out, "--json")
    waited = wait(bmm, cluster, json.loads(job_id)["id"])
    assert waited.code == 0, waited.err
    assert waited.out.startswith(f"wrote {out}: K = 8 chosen by heldout")
    assert (out / "model.zarr").is_dir() and (out / "selection.json").is_file()
    status = json.loads(bmm("status", json.loads(job_id)["id"], "--json", *on(cluster)).out)
    assert "candidates" not in status["progress"]  # none still running once it is done


def test_jobs_need_a_cluster(tmp_path: Path, bmm, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DASK_SCHEDULER_ADDRESS", raising=False)
    result = run_bmm_dask("jobs")
    assert_one_line_error(result, "name the cluster: --scheduler ADDRESS, --scheduler-file FILE")


def test_a_jobs_progress_says_where_it_is() -> None:
    from bmm_dask.jobs import RunningJob

    job = RunningJob(None, "x", 1)
    step = {"pass": 2, "passes": 10, "step": 40, "step_in_pass": 7, "steps_in_pass": 30}
    assert job._progress({**step, "objective": -1.5}) == {
        "pass": 2,
        "passes": 10,
        "step_in_pass": 7,
        "steps_in_pass": 30,
        "objective": -1.5,
    }
    # a pass's end record (its iteration is the pass's number, its steps all steps so far)
    end = {"pass": 2, "iteration": 2, "steps": 60, "objective": -1.25}
    assert job._progress(end) == {
        "pass": 2,
        "passes": 10,
        "step_in_pass": 30,
        "steps_in_pass": 30,
        "objective": -1.25,
    }
    # then batch iterations (auto), and a selection's round: K counted once, whatever the starts
    assert job._progress({"iteration": 12, "objective": -1.0}) == {
        "iteration": 12,
        "objective": -1.0,
    }
    round_ = {
        "iteration": 3,
        "candidates": [{"n_components": k, "start": s} for k in (5, 10) for s in (0, 1)],
    }
    assert job._progress(round_) == {"iteration": 3, "candidates": 2}


def test_where_a_job_is_reads_as_a_person_says_it() -> None:
    from bmm_dask.jobs import describe_progress

    step = {"pass": 2, "passes": 10, "step_in_pass": 7, "steps_in_pass": 30, "objective": -1.5}
    assert describe_progress(step) == "pass 2 of 10, step 7 of 30, objective -1.5000"
    assert describe_progress({"iteration": 12}) == "iteration 12"
    # the dashboard's page knows how many batch iterations a run may make
    assert describe_progress({"iteration": 12, "max_iter": 100}) == "iteration 12 of at most 100"
    assert describe_progress({}) == "-"
