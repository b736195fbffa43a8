"""Jobs benchmark: how fast submit, jobs and cancel answer, what a submitted fit costs against the
same fit run from the terminal, and that a fit survives kill -9 of its client and of the worker
running its driver.

Run from the repository root:  python benchmarks/bench_submit.py [--rounds 3] [--preload MODULE]

The cluster is started as a deployment starts one: a `dask scheduler` and two `dask worker`
processes of one thread each on 127.0.0.1, apart from this script. Every command is a
`bmm-dask` process of its own, timed from its start to its exit (Python's start and imports
included), as a user meets it. The data is the MNIST training set inside the package (60,000 x
784), K = 10, the defaults of `fit` (float32, algorithm auto), seed 0.

- submit, jobs: the first submit to fresh workers (they import bmm_dask then), and the median of
  the next ones; `jobs` listing every job so far.
- cancel: a stepwise fit cancelled in its second pass, --rounds times; time from the request (what
  `bmm-dask cancel` sends) until no worker thread runs a task, against the time of one step.
- terminal against submitted: `bmm-dask fit --scheduler-file` against `bmm-dask submit fit` then
  `bmm-dask wait`, alternating, --rounds of each; the medians and their ratio.
- kill -9: a float64 batch fit submitted, its submitting process killed once the job has its id,
  then the worker running its driver killed at iteration 5; its model against the same fit run
  from the terminal, bit for bit.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
from distributed import Client

from bmm_dask import BernoulliMixture
from bmm_dask.datasets import packaged_mnist_path
from bmm_dask.jobs import cancel_job


def bmm(*args: object, check: bool = True) -> tuple[float, subprocess.CompletedProcess[str]]:
    """Run `bmm-dask ARGS` in a process of its own; return its seconds and its result."""
    started = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", "bmm_dask", "-q", *map(str, args)], capture_output=True, text=True
    )
    seconds = time.perf_counter() - started
    if check and done.returncode != 0:
        raise SystemExit(f"bmm-dask {' '.join(map(str, args))}: {done.returncode}\n{done.stderr}")
    return seconds, done


def dask(*args: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "dask", *args], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument(
        "--preload",
        metavar="MODULE",
        help="start the workers with `dask worker --preload MODULE` (bmm_dask.model: the "
        "package imported as each worker starts, not by the first job's checks)",
    )
    args = parser.parse_args()
    data = f"{packaged_mnist_path()}/train"
    folder = Path(tempfile.mkdtemp(prefix="bench-submit-"))
    file = folder / "scheduler.json"
    on = ("--scheduler-file", file)
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
            str(file),
            "--no-show",
        )
    ]
    try:
        while not file.exists():
            time.sleep(0.1)
        preload = ["--preload", args.preload] if args.preload else []
        for name in ("w1", "w2"):
            processes.append(
                dask(
                    "worker",
                    "--scheduler-file",
                    str(file),
                    *common,
                    "--nthreads",
                    "1",
                    "--name",
                    name,
                    "--memory-limit",
                    "4GB",
                    *preload,
                )
            )
        client = Client(scheduler_file=str(file))
        client.wait_for_workers(2)
        run(client, data, folder, on, args.rounds)
        client.close()
    finally:
        for process in processes:
            process.terminate()
        for process in processes:
            process.wait()


def executing(dask_worker: Any) -> int:
    """Tasks running on a worker's threads (a seceded driver is not one of them)."""
    return dask_worker.state.executing_count


def job_of(client: Client, job_id: str) -> dict:
    return client.get_metadata(["bmm-dask-jobs", job_id])


def run(client: Client, data: str, folder: Path, on: tuple, rounds: int) -> None:
    fit = (data, "--k", "10")
    print("# bmm-dask jobs on a cluster of 2 worker processes (1 thread each), MNIST train, K = 10")

    # --- submit and jobs
    first, done = bmm("submit", "fit", *fit, "--out", folder / "first.zarr", *on)
    bmm("wait", done.stdout.strip(), *on)
    later = []
    for i in range(rounds):
        seconds, done = bmm("submit", "fit", *fit, "--out", folder / f"s{i}.zarr", *on)
        later.append(seconds)
        bmm("wait", done.stdout.strip(), *on)
    listing = [bmm("jobs", *on)[0] for _ in range(rounds)]
    n_jobs = len(json.loads(bmm("jobs", "--json", *on)[1].stdout))
    print(f"submit, first to fresh workers     {first:6.2f} s")
    print(f"submit, median of {rounds}               {statistics.median(later):6.2f} s")
    print(f"jobs ({n_jobs} jobs), median of {rounds}         {statistics.median(listing):6.2f} s")

    # --- cancel
    stepwise = (*fit, "--algorithm", "stepwise", "--passes", "20")
    free, steps_taken = [], []
    for i in range(rounds):
        _, done = bmm("submit", "fit", *stepwise, "--out", folder / f"cancel{i}.zarr", *on)
        job_id = done.stdout.strip()
        while (job_of(client, job_id).get("progress") or {}).get("pass", 0) < 2:
            time.sleep(0.05)
        started = time.perf_counter()
        cancel_job(client, job_id)  # what `bmm-dask cancel` sends, timed without its start-up
        while sum(client.run(executing).values()):
            time.sleep(0.002)
        free.append(time.perf_counter() - started)
        while job_of(client, job_id)["state"] != "cancelled":
            time.sleep(0.01)
        _, log = bmm("logs", job_id, *on)
        first = next(line for line in log.stdout.splitlines() if "  pass 1  steps" in line)
        steps, seconds = int(first.split("steps")[1].split()[0]), float(first.split()[-2])
        steps_taken.append(seconds / steps)
    command, _ = bmm("cancel", job_id, *on)  # on an ended job: the command's own time
    step = statistics.median(steps_taken)
    print(
        f"cancel in pass 2: the workers' threads free {statistics.median(free) * 1000:.0f} ms "
        f"after the request (median of {rounds}; each {', '.join(f'{x * 1000:.0f}' for x in free)} "
        f"ms); one step {step * 1000:.0f} ms; `bmm-dask cancel` {command:.2f} s"
    )

    # --- terminal against submitted
    terminal, submitted = [], []
    for i in range(rounds):
        seconds, _ = bmm("fit", *fit, "--out", folder / f"t{i}.zarr", *on)
        terminal.append(seconds)
        started = time.perf_counter()
        _, done = bmm("submit", "fit", *fit, "--out", folder / f"j{i}.zarr", *on)
        bmm("wait", done.stdout.strip(), *on)
        submitted.append(time.perf_counter() - started)
    same = all(
        np.array_equal(
            BernoulliMixture.load(folder / f"t{i}.zarr").means_,
            BernoulliMixture.load(folder / f"j{i}.zarr").means_,
        )
        for i in range(rounds)
    )
    t, s = statistics.median(terminal), statistics.median(submitted)
    print(
        f"fit from the terminal, median of {rounds}  {t:6.2f} s   ({', '.join(f'{x:.2f}' for x in terminal)})"
    )
    print(
        f"submit + wait, median of {rounds}          {s:6.2f} s   ({', '.join(f'{x:.2f}' for x in submitted)})   ratio {s / t:.3f}; same models: {same}"
    )

    # --- kill -9 of the client and of the driver's worker
    exact = (*fit, "--dtype", "float64", "--algorithm", "batch", "--tol", "0", "--max-iter", "25")
    bmm("fit", *exact, "--out", folder / "exact-terminal.zarr", *on)
    out = folder / "exact-job.zarr"
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "bmm_dask",
            "-q",
            "submit",
            "fit",
            *map(str, exact),
            "--out",
            str(out),
            *map(str, on),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    job_id = process.stdout.readline().strip()
    process.send_signal(signal.SIGKILL)
    process.wait()
    while (job_of(client, job_id).get("progress") or {}).get("iteration", 0) < 5:
        time.sleep(0.05)
    worker = job_of(client, job_id)["worker"]
    os.kill(client.run(os.getpid, workers=[worker])[worker], signal.SIGKILL)
    bmm("wait", job_id, *on)
    record = job_of(client, job_id)
    a, b = BernoulliMixture.load(out), BernoulliMixture.load(folder / "exact-terminal.zarr")
    exact_same = np.array_equal(a.means_, b.means_) and np.array_equal(a.weights_, b.weights_)
    print(
        f"kill -9 of the submitting process, then of the driver's worker at iteration 5: "
        f"{record['state']} after {record['attempt']} attempts; "
        f"the same model as the terminal's, bit for bit (float64): {exact_same}"
    )


if __name__ == "__main__":
    main()
