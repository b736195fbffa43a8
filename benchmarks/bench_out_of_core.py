"""Out-of-core benchmark: fits that stream synthetic data from Zarr every iteration, 1 to 10 million rows.

Run from the repository root:  python benchmarks/bench_out_of_core.py [--rows 1000000 4000000 10000000]

For each size: `bmm-dask synth` data (784 features, K = 10), a local cluster of 2 worker processes
with one thread and a memory limit of 2 GB each, and fits with the data streamed from the store
every iteration (persist=False), side by side on the same cluster:

- "one task per chunk": every E-step task reads one chunk (10,240 rows, 1 MiB) and the tree of sums
  adds their statistics in tasks of 8 (what bmm_dask did before grouping);
- "groups of 8": every task reads 8 chunks at once and adds their statistics itself (the first
  level of the same tree), what bmm_dask does when there are at least two groups per thread.

Both compute the same sums in the same order. Printed: the median time per iteration, the
throughput in rows x iterations per second per core, and the peak resident memory of each worker
process (getrusage in the worker, over all the fits so far). For scale, "kernel alone" is the
E-step kernel (`bmm_dask._kernels.estep_stats`) on one chunk in this process with one BLAS thread
and no Dask: the most a core can do, measured before every fit (the speed of this machine's
cores was seen to vary by half from one minute to the next).
"""

from __future__ import annotations

import argparse
import resource
import statistics
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np

import bmm_dask._em
import bmm_dask._estep
from bmm_dask import BernoulliMixture, open_dataset
from bmm_dask._kernels import estep_stats, log_parameters
from bmm_dask.cluster import open_client
from bmm_dask.datasets import synth

CORES = 2


def peak_rss() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def kernel_rows_per_second(data) -> float:
    """Rows per second of the E-step kernel on the first chunk, one thread, no Dask."""
    packed = data.row_reader()(0, data.bits.chunks[0][0])
    rng = np.random.default_rng(0)
    W, b = log_parameters(
        rng.uniform(0.25, 0.75, (10, data.n_features)), np.full(10, 0.1), np.float32
    )
    times = []
    with bmm_dask._em.single_threaded_blas():
        for _ in range(20):
            start = time.perf_counter()
            estep_stats(packed, data.n_features, W, b)
            times.append(time.perf_counter() - start)
    return len(packed) / statistics.median(times)


def fit_seconds(data, iterations: int, grouped: bool) -> list[float]:
    threads = bmm_dask._estep._cluster_threads
    if not grouped:  # as many threads as the groups could never keep busy: one task per chunk
        bmm_dask._estep._cluster_threads = lambda: 1 << 30
    try:
        model = BernoulliMixture(10, algorithm="batch", max_iter=iterations, tol=0, random_state=0)
        model.fit(data, persist=False)
    finally:
        bmm_dask._estep._cluster_threads = threads
    return [h["seconds"] for h in model.history_]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, nargs="+", default=[1_000_000, 4_000_000, 10_000_000])
    parser.add_argument("--iterations", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=3, help="fits of each kind, alternating")
    parser.add_argument(
        "--workdir",
        type=Path,
        default=None,
        help="where the data goes (needs 1 GB per 10 million rows)",
    )
    args = parser.parse_args()
    warnings.simplefilter("ignore")
    work = args.workdir or Path(tempfile.mkdtemp(prefix="bench-ooc-"))
    print(
        f"# Streaming fits, K = 10, 784 features, {CORES} workers x 1 thread, memory limit 2 GB "
        f"each; median s per iteration over {args.repeats} fits of {args.iterations} iterations each"
    )
    print(
        f"{'rows':>11} {'packed GB':>9} {'kernel alone':>13} {'one task per chunk':>22} "
        f"{'groups of 8':>22} {'worker peak MB':>15}"
    )
    for rows in args.rows:
        path = work / f"synth-{rows}.zarr"
        if not path.exists():
            synth(path, n_samples=rows, n_features=784, n_components=10, seed=0)
        data = open_dataset(path)
        with open_client(
            workers=CORES, threads_per_worker=1, memory_limit="2GB", dashboard_address="127.0.0.1:0"
        ) as client:
            started = time.perf_counter()
            seconds: dict[bool, list[float]] = {False: [], True: []}
            kernel = []
            for _ in range(args.repeats):
                for grouped in (False, True):
                    kernel.append(kernel_rows_per_second(data))
                    seconds[grouped] += fit_seconds(data, args.iterations, grouped)
            peaks = sorted(client.run(peak_rss).values())
        cells = []
        for grouped in (False, True):
            median = statistics.median(seconds[grouped])
            cells.append(f"{median:6.2f} s {rows / median / CORES / 1e6:6.2f} M/core")
        print(
            f"{rows:>11,} {data.bits.nbytes / 1e9:>9.2f} "
            f"{statistics.median(kernel) / 1e6:>6.2f} M/core {cells[0]:>22} {cells[1]:>22} "
            f"{' / '.join(f'{p / 1e6:.0f}' for p in peaks):>15}   "
            f"({time.perf_counter() - started:.0f} s)",
            flush=True,
        )


if __name__ == "__main__":
    main()
