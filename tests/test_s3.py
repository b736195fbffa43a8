"""Data and models on object storage: a job submitted to a cluster reads its data from S3 and
writes its model and checkpoints there, through a local S3-compatible server (moto's server
mode, as s3fs's own tests use) started here on 127.0.0.1, and `dask scheduler` and two
`dask worker` processes that reach it as a deployment's would (``AWS_ENDPOINT_URL``)."""

from __future__ import annotations

import logging
import os
import signal
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from distributed import Client

from bmm_dask import BernoulliMixture, open_dataset
from bmm_dask.datasets import synth
from tests._helpers import assert_one_line_error, dask_processes, guard, wait_until

#: A server, a `dask scheduler` and two `dask worker` processes, started here.
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def s3(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict]:
    """A moto S3 server with a bucket holding a dataset, and a cluster whose processes use it."""
    import fsspec
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # one line per request otherwise
    # port 0: the server takes a free port itself (a port found free and then given to it
    # could be taken by another process meanwhile)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    port = server.get_host_and_port()[1]
    settings = {
        "AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}",
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
    }
    saved = {name: os.environ.get(name) for name in settings}
    os.environ.update(settings)  # for this process, and the cluster's processes it starts
    folder = tmp_path_factory.mktemp("s3")
    try:
        fs = fsspec.filesystem("s3")
        fs.mkdir("bucket")
        local = synth(
            folder / "data.zarr", n_samples=40_000, n_features=100, n_components=6, seed=3
        )
        fs.put(str(local), "bucket/data.zarr", recursive=True)
        workers = [["--name", name, "--memory-limit", "2GB"] for name in ("w1", "w2")]
        with (
            dask_processes(folder, [], workers) as scheduler_file,
            Client(scheduler_file=str(scheduler_file), timeout=guard(30)) as client,
        ):
            client.wait_for_workers(2, timeout=guard(60))
            yield {"fs": fs, "local": local, "file": str(scheduler_file), "client": client}
    finally:
        server.stop()
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def test_a_job_reads_and_writes_s3_and_survives_its_drivers_worker(s3: dict, bmm) -> None:
    fs, client = s3["fs"], s3["client"]
    on = ("--scheduler-file", s3["file"])
    fit = ("--k", "6", "--dtype", "float64", "--algorithm", "batch", "--tol", "0")
    out = "s3://bucket/models/m.zarr"
    submitted = bmm(
        "-q", "submit", "fit", "s3://bucket/data.zarr", *fit, "--max-iter", "60", "--out", out, *on
    )
    assert submitted.code == 0, submitted.err
    job_id = submitted.out.strip()

    def far_enough() -> bool:
        record = client.get_metadata(["bmm-dask-jobs", job_id])
        at = (record.get("progress") or {}).get("iteration") or 0
        fs.invalidate_cache()
        return at >= 5 and fs.exists("bucket/models/m.zarr.checkpoint/checkpoint.npz")

    wait_until(far_enough, "a checkpoint on S3 after iteration 5", timeout=120, interval=0.1)
    worker = client.get_metadata(["bmm-dask-jobs", job_id])["worker"]
    os.kill(client.run(os.getpid, workers=[worker])[worker], signal.SIGKILL)

    # wait gives up after a guard, should the job hang
    give_up = ("--timeout", f"{guard(300):.0f}")
    waited = bmm("wait", job_id, *give_up, *on)
    assert waited.code == 0, waited.err
    assert waited.out.startswith(f"wrote {out}: K = 6, 60 iterations")
    assert client.get_metadata(["bmm-dask-jobs", job_id])["attempt"] == 2
    model = BernoulliMixture.load(out)
    reference = BernoulliMixture(
        6, random_state=0, dtype="float64", algorithm="batch", tol=0, max_iter=60
    ).fit(open_dataset(s3["local"]))
    assert np.array_equal(model.means_, reference.means_)
    assert np.array_equal(model.weights_, reference.weights_)
    fs.invalidate_cache()
    assert not fs.exists("bucket/models/m.zarr.checkpoint")
    info = bmm("info", out)
    assert info.code == 0 and f"{out}: model" in info.out

    # the model there is kept without --overwrite, and replaced with it
    again = bmm("submit", "fit", "s3://bucket/data.zarr", "--k", "2", "--out", out, *on)
    assert_one_line_error(again, f"{out}: exists already; pass --overwrite to replace it")
    replaced = bmm(
        "-q", "submit", "fit", "s3://bucket/data.zarr", "--k", "2", "--out", out, "--overwrite", *on
    )
    assert bmm("wait", replaced.out.strip(), *give_up, *on).code == 0
    assert BernoulliMixture.load(out).n_components == 2


def test_s3_paths_the_workers_cannot_use(s3: dict, tmp_path: Path, bmm) -> None:
    on = ("--scheduler-file", s3["file"])
    missing = bmm(
        "submit", "fit", "s3://bucket/nothing.zarr", "--k", "2", "--out", "s3://bucket/m2.zarr", *on
    )
    assert_one_line_error(missing, "s3://bucket/nothing.zarr", "(checked on the worker tcp://")
    no_bucket = bmm(
        "submit", "fit", "s3://bucket/data.zarr", "--k", "2", "--out", "s3://nobucket/m.zarr", *on
    )
    assert_one_line_error(no_bucket, "s3://nobucket/m.zarr: cannot write there: no bucket nobucket")
    # datasets are written chunk by chunk by the workers: not to a URL
    ingest = bmm("synth", "--n", "100", "--d", "4", "--k", "2", "--out", "s3://bucket/new.zarr")
    assert_one_line_error(ingest, "not a URL")
