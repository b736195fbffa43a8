"""Out-of-core benchmark: fits that stream synthetic data from Zarr every iteration, 1 to 10 million rows.

Run from the repository root:  python benchmarks/bench_out_of_core.py [--rows 1000000 4000000 10000000]

For each size: `bmm-dask synth` data (784 features, K = 10), a local cluster of 2 worker processes
with a memory limit of 2 GB each, and a fit with the data streamed from the store every iteration
(persist=False). Printed: the median time an iteration, the throughput in rows x iterations a
second a core, and the peak resident memory of each worker process (getrusage in the worker).
"""

from __future__ import annotations

import argparse
import resource
import statistics
import tempfile
import time
import warnings
from pathlib import Path

from bmm_dask import BernoulliMixture, open_dataset
from bmm_dask.cluster import open_client
from bmm_dask.datasets import synth


def peak_rss() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, nargs="+", default=[1_000_000, 4_000_000, 10_000_000])
    parser.add_argument("--iterations", type=int, default=4)
    parser.add_argument(
        "--workdir",
        type=Path,
        default=None,
        help="where the data goes (needs 1 GB per 10 million rows)",
    )
    args = parser.parse_args()
    warnings.simplefilter("ignore")
    work = args.workdir or Path(tempfile.mkdtemp(prefix="bench-ooc-"))
    print("# Streaming fits, K = 10, 784 features, 2 workers x 1 thread, memory limit 2 GB each")
    print(
        f"{'rows':>11} {'packed GB':>9} {'s/iter':>7} {'rows.iter/s/core':>17} {'worker peak MB':>15}"
    )
    for rows in args.rows:
        path = work / f"synth-{rows}.zarr"
        if not path.exists():
            synth(path, n_samples=rows, n_features=784, n_components=10, seed=0)
        data = open_dataset(path)
        with open_client(
            workers=2, threads_per_worker=1, memory_limit="2GB", dashboard_address="127.0.0.1:0"
        ) as client:
            started = time.perf_counter()
            model = BernoulliMixture(10, max_iter=args.iterations, tol=0, random_state=0)
            model.fit(data, persist=False)
            seconds = statistics.median(h["seconds"] for h in model.history_)
            peaks = sorted(client.run(peak_rss).values())
        throughput = rows / seconds / 2
        print(
            f"{rows:>11,} {data.bits.nbytes / 1e9:>9.2f} {seconds:>7.2f} {throughput / 1e6:>14.2f} M "
            f"{' / '.join(f'{p / 1e6:.0f}' for p in peaks):>15}   (whole fit {time.perf_counter() - started:.0f} s)",
            flush=True,
        )


if __name__ == "__main__":
    main()
