"""Refusals benchmark: how soon a command refuses a cluster it cannot use, against a command that
does nothing and a fit that starts a local cluster.

Run from the repository root:  python benchmarks/bench_refusals.py [--runs 3]

Every command is a `bmm-dask` process of its own (``python -m bmm_dask``), timed from its start
to its exit, Python's start and imports included, as a user meets it. The data is small (2,000 x
64, K = 2), so that the fit's time is mostly its cluster's start. Rounds alternate between the
commands so that all see the same machine; the figure is the median of ``--runs`` rounds, and the
ratio is to that fit on a local cluster (``bmm-dask --version`` is the floor: a process that
imports little and does nothing).

- a scheduler address where an HTTP server listens (a dashboard's port given for the
  scheduler's): refused once the server answers a request for a page;
- one where a listener takes the connection and says nothing: refused after the wait for a
  greeting (``bmm_dask.cluster.GREETING_WAIT``, twice);
- ``--memory-limit 1MB``: refused before a cluster starts.

Targets (the tests once asserted them; a test now checks only that the refusal comes before a
client or cluster starts): each refusal at an address under the client's connect timeout
(``bmm_dask.cluster.CONNECT_TIMEOUT``), the memory refusal under 5 s and under the fit.
"""

from __future__ import annotations

import argparse
import contextlib
import http.server
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

from bmm_dask import BernoulliMixture, open_dataset
from bmm_dask.cluster import CONNECT_TIMEOUT
from bmm_dask.datasets import synth
from tests._helpers import silent_listener


def seconds(args: list[str], expected: int) -> float:
    """Seconds ``bmm-dask ARGS`` takes in a process of its own; it must exit with ``expected``."""
    started = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", "bmm_dask", *args], capture_output=True, text=True, timeout=600
    )
    elapsed = time.perf_counter() - started
    if done.returncode != expected:
        raise SystemExit(f"bmm-dask {' '.join(args)}: exit {done.returncode}\n{done.stderr}")
    return elapsed


@contextlib.contextmanager
def http_server(folder: str) -> Iterator[str]:
    """An HTTP server on 127.0.0.1, as a scheduler's dashboard is; yields its tcp:// address."""

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, format: str, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(
        ("127.0.0.1", 0), lambda *a: Quiet(*a, directory=folder)
    )
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"tcp://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    with (
        tempfile.TemporaryDirectory() as folder,
        http_server(folder) as http,
        silent_listener() as silent,
    ):
        data = synth(Path(folder) / "d.zarr", n_samples=2000, n_features=64, n_components=2, seed=0)
        model = Path(folder) / "model.zarr"
        BernoulliMixture(2, max_iter=2, tol=10.0, random_state=0).fit(open_dataset(data)).save(
            model
        )
        out = str(Path(folder) / "m.zarr")
        fit = ["-q", "fit", str(data), "--k", "2", "--out", out]
        cases = {
            "bmm-dask --version": (["--version"], 0),
            "fit at an HTTP server's address": ([*fit, "--scheduler", http], 2),
            "fit at a silent listener's address": ([*fit, "--scheduler", silent], 2),
            "predict at a silent listener's address": (
                ["predict", str(model), str(data), "--out", out, "--scheduler", silent],
                2,
            ),
            "fit --memory-limit 1MB": ([*fit, "--memory-limit", "1MB"], 2),
            "fit on a local cluster of 1 worker": (
                [*fit, "--workers", "1", "--dashboard-address", "127.0.0.1:0", "--overwrite"],
                0,
            ),
        }
        seconds(["--version"], 0)  # warm up: bytecode and disk cache
        times: dict[str, list[float]] = {name: [] for name in cases}
        for _ in range(args.runs):
            for name, (command, expected) in cases.items():
                times[name].append(seconds(command, expected))
    medians = {name: statistics.median(values) for name, values in times.items()}
    cluster = medians["fit on a local cluster of 1 worker"]
    print(f"median wall time of {args.runs} runs each; ratio to the fit on a local cluster")
    for name, value in medians.items():
        target = ""
        if name.startswith(("fit at", "predict at")):
            ok = value < CONNECT_TIMEOUT
            target = f"(< {CONNECT_TIMEOUT:g} s, the connect timeout) {'ok' if ok else 'SLOWER'}"
        elif name == "fit --memory-limit 1MB":
            ok = value < 5 and value < cluster
            target = f"(< 5 s, and < the fit) {'ok' if ok else 'SLOWER'}"
        print(f"  {name:<40} {value:6.2f} s  {value / cluster:5.2f}  {target}")


if __name__ == "__main__":
    main()
