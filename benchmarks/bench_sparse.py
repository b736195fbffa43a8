"""Sparse rows at the speed of their ones: the E-step's two paths side by side.

Run from the repository root:  python benchmarks/bench_sparse.py [--crossover] [--iteration] [--wide]

1. ``--crossover``: the E-step kernel on one block (``bmm_dask._kernels.estep_stats``), no Dask,
   one BLAS thread, with the dense products and with the sparse ones (forced by the
   ``BMM_DASK_KERNEL`` environment variable's values, set here in the process), on blocks of
   4,096 random rows of D = 5,000 at shares of ones from 0.2 % to 20 %, for K = 2 to 200, in
   float32 and float64: the time of each and the share of ones where the sparse path stops
   paying. ``SPARSE_DENSITY`` and ``SPARSE_HALF_K`` in ``_kernels.py`` come from this table.
2. ``--iteration``: rows drawn by ``bmm-dask synth --density 0.005`` (D = 20,000, K = 20,
   200,000 rows), fitted on a local cluster of 2 workers with ``--algorithm batch`` for a few
   iterations, once with every block on the dense path and once by the block's density (the
   default): seconds per iteration, their ratio, and the largest difference of the two models'
   means (float64: the same model within rounding).
3. ``--wide``: D = 100,000, 1,000,000 rows at 0.1 % ones (``synth --density 0.001``), K = 50,
   streamed (``--no-persist``) on 2 workers of one thread: seconds per batch iteration (a pass
   over the data), seconds per stepwise pass, and each worker's peak memory.

With no option, all three. This machine's speed swings by up to half from one minute to the
next: compare figures of the same run only.
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np
from threadpoolctl import threadpool_limits

from bmm_dask import BernoulliMixture, open_dataset
from bmm_dask._kernels import KERNEL_ENV, estep_stats, log_parameters, pack_bits, sparse_threshold
from bmm_dask.cluster import open_client
from bmm_dask.datasets import synth
from bmm_dask.io import describe_dataset


def _time(function, repeats: int = 3) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        function()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def crossover() -> None:
    """Dense against sparse E-step on one block, per K, dtype and share of ones."""
    rng = np.random.default_rng(0)
    n_rows, n_features = 4096, 5000
    densities = [0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2]
    blocks = {p: pack_bits(rng.random((n_rows, n_features)) < p) for p in densities}
    print(
        f"E-step on one block of {n_rows:,} rows x {n_features:,}, one thread: "
        "dense ms / sparse ms (ratio)"
    )
    print(
        f"{'dtype':8} {'K':>4} " + " ".join(f"{p:>17.1%}" for p in densities) + "   crossover  rule"
    )
    with threadpool_limits(1):
        for dtype in (np.float32, np.float64):
            for n_components in (2, 5, 10, 20, 50, 100, 200):
                means = rng.uniform(0.001, 0.3, (n_components, n_features))
                W, b = log_parameters(means, np.full(n_components, 1 / n_components), dtype)
                cells, cross = [], None
                for p in densities:
                    os.environ[KERNEL_ENV] = "dense"
                    dense = _time(lambda p=p, W=W, b=b: estep_stats(blocks[p], n_features, W, b))
                    os.environ[KERNEL_ENV] = "sparse"
                    sparse = _time(lambda p=p, W=W, b=b: estep_stats(blocks[p], n_features, W, b))
                    cells.append(f"{dense * 1e3:6.1f}/{sparse * 1e3:6.1f} ({dense / sparse:4.1f})")
                    if cross is None and sparse >= dense:
                        cross = p
                os.environ.pop(KERNEL_ENV)
                rule = sparse_threshold(n_components, dtype)
                print(
                    f"{np.dtype(dtype).name:8} {n_components:4} "
                    + " ".join(cells)
                    + f"   {'>' + format(densities[-1], '.1%') if cross is None else format(cross, '.1%'):>9}"
                    + f"  {rule:.1%}"
                )


def _on_workers(client: Any, kernel: str | None) -> None:
    """Set (or, with None, unset) the kernel every worker process uses."""

    def set_kernel(kernel: str | None = kernel) -> None:
        if kernel is None:
            os.environ.pop(KERNEL_ENV, None)
        else:
            os.environ[KERNEL_ENV] = kernel

    client.run(set_kernel)


def _peak_rss() -> int:
    """This process's peak resident memory, in bytes (Linux)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def _fit(
    data: Any, n_components: int, dtype: str, persist: bool | None = None, **settings: Any
) -> BernoulliMixture:
    model = BernoulliMixture(n_components, random_state=0, dtype=dtype, **settings)
    return model.fit(data, persist=persist)


def _dataset(work: Path, name: str, **settings: Any) -> Any:
    path = work / name
    if not path.exists():
        started = time.perf_counter()
        synth(path, seed=0, **settings)
        print(f"({name}: drawn in {time.perf_counter() - started:.0f} s)", flush=True)
    return open_dataset(path)


def _density(data: Any) -> float:
    """The share of ones ingest recorded, or (synth records none) that of the first rows."""
    from bmm_dask._estep import as_packed, data_density

    recorded = describe_dataset(data).get("density")
    return recorded if recorded is not None else data_density(as_packed(data))


def iteration(work: Path, iterations: int) -> None:
    """Batch EM iterations on D = 20,000 at 0.5 % ones, K = 20: dense E-step against sparse."""
    data = _dataset(
        work, "d20000.zarr", n_samples=200_000, n_features=20_000, n_components=20, density=0.005
    )
    print(
        f"\n{data.n_samples:,} rows x {data.n_features:,}, {_density(data):.2%} "
        f"ones, K = 20, batch EM, {iterations} iterations from one start, 2 workers x 1 thread; "
        "seconds per iteration (median), dense E-step against the default (by density)"
    )
    print(f"{'dtype':8} {'dense s':>9} {'default s':>10} {'speed-up':>9} {'max |means diff|':>17}")
    with open_client(workers=2, threads_per_worker=1, dashboard_address="127.0.0.1:0") as client:
        for dtype in ("float32", "float64"):
            models = {}
            for kernel in ("dense", None):
                _on_workers(client, kernel)
                models[kernel] = _fit(
                    data, 20, dtype, algorithm="batch", max_iter=iterations, tol=0
                )
            _on_workers(client, None)
            seconds = {
                k: statistics.median(h["seconds"] for h in m.history_[1:])
                for k, m in models.items()
            }
            diff = np.abs(models["dense"].means_ - models[None].means_).max()
            print(
                f"{dtype:8} {seconds['dense']:9.2f} {seconds[None]:10.2f} "
                f"{seconds['dense'] / seconds[None]:8.1f}x {diff:17.2e}",
                flush=True,
            )


def wide(work: Path, iterations: int) -> None:
    """D = 100,000, 1,000,000 rows at 0.1 % ones, K = 50, streamed on 2 workers."""
    data = _dataset(
        work,
        "d100000.zarr",
        n_samples=1_000_000,
        n_features=100_000,
        n_components=50,
        density=0.001,
    )
    info = describe_dataset(data)
    print(
        f"\n{data.n_samples:,} rows x {data.n_features:,}, {_density(data):.2%} "
        f"ones, {info['bytes_stored'] / 1e6:.0f} MB stored ({data.bits.nbytes / 1e9:.1f} GB "
        "packed), K = 50, streamed (not persisted), 2 workers x 1 thread, float32"
    )
    print(f"{'algorithm':22} {'s per pass':>11} {'worker peak MB':>15}")
    for name, settings in (
        ("batch EM iteration", {"algorithm": "batch", "max_iter": iterations, "tol": 0}),
        ("stepwise pass", {"algorithm": "stepwise", "passes": 1, "max_iter": 1, "tol": 0}),
    ):
        with open_client(
            workers=2, threads_per_worker=1, dashboard_address="127.0.0.1:0"
        ) as client:
            started = time.perf_counter()
            model = _fit(data, 50, "float32", persist=False, **settings)
            total = time.perf_counter() - started
            peaks = sorted(client.run(_peak_rss).values())
        passes = [h["seconds"] for h in model.history_]
        print(
            f"{name:22} {statistics.median(passes):11.1f} "
            f"{' / '.join(f'{p / 1e6:.0f}' for p in peaks):>15}   ({total:.0f} s in all)",
            flush=True,
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--crossover", action="store_true")
    parser.add_argument("--iteration", action="store_true")
    parser.add_argument("--wide", action="store_true")
    parser.add_argument("--iterations", type=int, default=4)
    parser.add_argument(
        "--workdir", type=Path, default=None, help="where the data goes (about 1 GB for all)"
    )
    args = parser.parse_args()
    warnings.simplefilter("ignore")
    work = args.workdir or Path(tempfile.mkdtemp(prefix="bench-sparse-"))
    work.mkdir(parents=True, exist_ok=True)
    every = not (args.crossover or args.iteration or args.wide)
    if args.crossover or every:
        crossover()
    if args.iteration or every:
        iteration(work, args.iterations)
    if args.wide or every:
        wide(work, args.iterations)


if __name__ == "__main__":
    main()
