"""The cost model of stepwise EM: how large a mini-batch "auto" takes, and what a pass costs
against a batch iteration (for "auto"'s choice). A model, fitted to measurements made by the
benchmarks named beside each constant, so that the same settings, data and cluster size make
the same choice on every run."""

from __future__ import annotations

import math

import numpy as np

from bmm_dask._kernels import (
    n_packed_bytes,
    sparse_threshold,
)

#: A step should keep every worker thread busy for about this long, so that Dask's round trip
#: and the driver's work between steps stay a modest part of it; longer steps would make a
#: pass a little faster but give it fewer steps, and stepwise EM then gets near batch EM's
#: optimum later (benchmarks/bench_stepwise_scale.py; the figures are in docs/performance.md,
#: "The cost model's constants").
STEP_SECONDS = 0.06

#: Rows per second per core of the E-step kernel at K x D = 7,840 (K = 10 on MNIST), and how
#: the rate falls as K x D grows: rate = KERNEL_ROWS_PER_SECOND x (7,840 / (K x D)) **
#: KERNEL_EXPONENT, fitted to the rates of benchmarks/bench_costs.py.
KERNEL_ROWS_PER_SECOND = 1.6e6
KERNEL_EXPONENT = 0.75

#: Mini-batches of ``batch_size="auto"`` take at most this fraction of the rows: a pass has
#: at least this many steps, since fewer, larger steps reach worse optima
#: (benchmarks/bench_stepwise.py --grid).
MIN_STEPS_PER_PASS = 30

#: ... but at least this many rows (or all of them): a step on fewer is mostly noise.
MIN_BATCH_SIZE = 256

#: The sparse E-step's costs per row (:func:`kernel_rows_per_second` with a density): each
#: packed byte is read, decompressed and scanned; each one is unpacked and, in both
#: products, costs K multiply-adds at a rate limited by fetching the parameters' rows. Fitted
#: to the rates of benchmarks/bench_sparse.py.
SPARSE_SECONDS_PER_BYTE = 2e-9
SPARSE_SECONDS_PER_ONE = 2e-8
SPARSE_SECONDS_PER_ONE_AND_COMPONENT = 1.5e-9


def kernel_rows_per_second(
    n_components: int, n_features: int, density: float | None = None
) -> float:
    """Modelled E-step rows per second on one core for K components and D features.

    Parameters
    ----------
    n_components, n_features : int
        Components K and features D.
    density : float, default=None
        The data's share of ones; where the E-step takes the sparse products
        (:func:`~bmm_dask._kernels.sparse_threshold`), the rate is that of its ones.

    Returns
    -------
    float
    """
    if density is not None and density < sparse_threshold(n_components, np.float32):
        ones = density * n_features
        seconds = SPARSE_SECONDS_PER_BYTE * n_packed_bytes(n_features) + ones * (
            SPARSE_SECONDS_PER_ONE + SPARSE_SECONDS_PER_ONE_AND_COMPONENT * n_components
        )
        return 1 / seconds
    return KERNEL_ROWS_PER_SECOND * (7840 / (n_components * n_features)) ** KERNEL_EXPONENT


def auto_batch_size(
    n_samples: int,
    n_components: int,
    n_features: int,
    threads: int,
    density: float | None = None,
) -> int:
    """Rows per mini-batch when ``batch_size="auto"``.

    Enough rows that each worker thread works about :data:`STEP_SECONDS` per step (the Dask
    round trip then costs little), but at most ``n_samples / MIN_STEPS_PER_PASS``: small steps
    reach better optima than few large ones. As it follows the cluster, the model records the
    size it used (``batch_size_``): give that size to get the same model on another cluster.

    Parameters
    ----------
    n_samples : int
        Rows of the data.
    n_components : int
        Components K.
    n_features : int
        Features D.
    threads : int
        Worker threads of the cluster (or of this machine).
    density : float, default=None
        The data's share of ones, for :func:`kernel_rows_per_second`.

    Returns
    -------
    int
        Rows per mini-batch, at least 1 and at most ``n_samples``.
    """
    per_thread = STEP_SECONDS * kernel_rows_per_second(n_components, n_features, density)
    rows = min(int(threads * per_thread), n_samples // MIN_STEPS_PER_PASS)
    return max(1, min(max(rows, MIN_BATCH_SIZE), n_samples))


#: Seconds a stepwise step costs beyond its arithmetic: Dask's round trip and the driver's
#: work between steps (benchmarks/bench_costs.py), plus STEP_SECONDS_PER_PARAMETER per mean:
#: the parameters go to the step's tasks and their K x D sums come back, every step, which
#: dominates on wide rows (benchmarks/bench_sparse.py --wide).
STEP_ROUND_TRIP = 0.017
STEP_SECONDS_PER_PARAMETER = 1e-7

#: A stepwise pass's arithmetic, in batch passes: it reads the same rows, in more, smaller
#: tasks, at a lower throughput (benchmarks/bench_stepwise_scale.py).
PASS_ARITHMETIC = 1.35

#: Seconds a batch iteration costs beyond its arithmetic (its graph, its tasks' scheduling, the
#: driver's M-step), set so that the model's cost of a pass on MNIST is near the measured one.
ITERATION_OVERHEAD = 0.1


def pass_cost(
    n_samples: int,
    n_components: int,
    n_features: int,
    threads: int,
    batch_size: int,
    density: float | None = None,
) -> float:
    """A stepwise pass's modelled cost in batch iterations: ``PASS_ARITHMETIC`` plus a round
    trip per step (``STEP_ROUND_TRIP``, and ``STEP_SECONDS_PER_PARAMETER`` per mean), against a
    batch iteration (its arithmetic, :func:`kernel_rows_per_second` on every thread, and
    ``ITERATION_OVERHEAD``). A model, not a measurement, so that the choice it makes is the
    same on every run with the same settings, data and cluster size.

    Parameters
    ----------
    n_samples, n_components, n_features : int
        Rows, components and features.
    threads : int
        Worker threads of the cluster.
    batch_size : int
        Rows per mini-batch.
    density : float, default=None
        The data's share of ones, for :func:`kernel_rows_per_second`.

    Returns
    -------
    float
    """
    rate = kernel_rows_per_second(n_components, n_features, density)
    iteration = n_samples / (threads * rate) + ITERATION_OVERHEAD
    steps = math.ceil(n_samples / batch_size)
    step = STEP_ROUND_TRIP + STEP_SECONDS_PER_PARAMETER * n_components * n_features
    return PASS_ARITHMETIC + steps * step / iteration
