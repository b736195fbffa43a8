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
import statistics
import time

import numpy as np
from threadpoolctl import threadpool_limits

from bmm_dask._kernels import KERNEL_ENV, estep_stats, log_parameters, pack_bits, sparse_threshold


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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--crossover", action="store_true")
    parser.add_argument("--iteration", action="store_true")
    parser.add_argument("--wide", action="store_true")
    args = parser.parse_args()
    every = not (args.crossover or args.iteration or args.wide)
    if args.crossover or every:
        crossover()


if __name__ == "__main__":
    main()
