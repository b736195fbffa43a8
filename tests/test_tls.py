"""TLS: a cluster that requires certificates runs a fit for a client that has them, and refuses one without."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator

import pytest

from bmm_dask.datasets import synth
from tests._helpers import assert_one_line_error, dask_processes, guard, run_bmm_dask

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        shutil.which("openssl") is None, reason="needs the openssl command to make certificates"
    ),
]


@pytest.fixture(scope="module")
def tls_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict]:
    folder = tmp_path_factory.mktemp("tls")
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            str(key),
            "-out",
            str(cert),
            "-days",
            "1",
            "-subj",
            "/CN=127.0.0.1",
            "-addext",
            "subjectAltName=IP:127.0.0.1",
        ],
        check=True,
        capture_output=True,
        timeout=guard(60),
    )
    tls = ["--tls-ca-file", str(cert), "--tls-cert", str(cert), "--tls-key", str(key)]
    with dask_processes(folder, ["--protocol", "tls", *tls], [tls]) as scheduler_file:
        env = {
            **os.environ,
            "DASK_DISTRIBUTED__COMM__TLS__CA_FILE": str(cert),
            "DASK_DISTRIBUTED__COMM__TLS__CLIENT__CERT": str(cert),
            "DASK_DISTRIBUTED__COMM__TLS__CLIENT__KEY": str(key),
            "DASK_DISTRIBUTED__COMM__REQUIRE_ENCRYPTION": "True",
        }
        waiter = "from distributed import Client; import sys; Client(sys.argv[1], timeout=float(sys.argv[2])).wait_for_workers(1, timeout=float(sys.argv[3]))"
        address = json.loads(scheduler_file.read_text())["address"]
        subprocess.run(
            [sys.executable, "-c", waiter, address, str(guard(30)), str(guard(60))],
            env=env,
            check=True,
            timeout=guard(120),
        )
        yield {"address": address, "env": env, "folder": folder}


def test_a_tls_cluster_fits_for_a_client_with_certificates_only(tls_cluster: dict) -> None:
    assert tls_cluster["address"].startswith("tls://127.0.0.1:")
    data = synth(
        tls_cluster["folder"] / "d.zarr", n_samples=3000, n_features=32, n_components=2, seed=0
    )
    model = tls_cluster["folder"] / "m.zarr"
    ok = run_bmm_dask(
        "fit",
        data,
        "--k",
        "2",
        "--out",
        model,
        "--scheduler",
        tls_cluster["address"],
        env=tls_cluster["env"],
    )
    assert ok.code == 0, ok.err
    assert model.is_dir()

    plain = {k: v for k, v in os.environ.items() if not k.startswith("DASK_DISTRIBUTED__COMM")}
    refused = run_bmm_dask(
        "fit",
        data,
        "--k",
        "2",
        "--out",
        tls_cluster["folder"] / "x.zarr",
        "--scheduler",
        tls_cluster["address"],
        env=plain,
    )
    assert_one_line_error(refused, "cannot connect to a Dask scheduler")
    assert not (tls_cluster["folder"] / "x.zarr").exists()
