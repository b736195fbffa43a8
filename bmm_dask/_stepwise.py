"""Stepwise (online) EM: the parameters move after every mini-batch of rows, so a fit needs a
few passes over the data instead of dozens of iterations (Liang & Klein 2009, Cappé & Moulines
2009).

Running statistics per row, ``s = (sum r / N, r^T X / N)``, start from the starting parameters.
Each mini-batch B of m rows gives its own, ``s_B``, and ``s <- (1 - eta_t) s + eta_t s_B`` with
``eta_t = (t + t0) ** -kappa``; the M-step works on ``s`` scaled back to N rows, so that the
smoothing ``alpha`` means what it means in batch EM. The statistics are accumulated, never
replaced by one batch's: replacing them collapses the components.

How mini-batches meet chunks: every random draw is the driver's. A pass takes the chunks in a
random order, a window of a few chunks at a time, and the window's rows, shuffled, are cut into
mini-batches. The window is held in the workers' memory (read once from the store when the data
is streamed) as a few groups of chunks, one array per worker thread, each where it was read. A
step is one Dask computation with one task per group, on the rows of the mini-batch that its
group holds. The chunks' statistics are added in fixed point (exact integer sums), in the
tasks and then on the driver, so the sums, and the model, are the same bit for bit whatever the
number of groups, and so on every scheduler and cluster.

Steps in flight: the driver submits the next mini-batch's step before it has the last one's
statistics, so the workers compute while the driver and the scheduler pass results and
parameters back and forth (on a 2-core machine that round trip took a third of a step). With
``steps_in_flight`` s, the statistics of the j-th mini-batch of a pass are computed with the
parameters after its step j - s (the pass's starting ones for j <= s); s = 1 is stepwise EM as
published, and as ``partial_fit`` runs it. s is a setting of the model, never of the cluster:
the same s gives the same model on every scheduler.

A component whose running weight starves is re-seeded at once, between steps, by splitting
the component that leaves its rows worst explained (:meth:`StepwiseState.reseed`): left to die
in the passes, it would come back only in batch EM, after the others had settled.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import math
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import dask
import dask.core
import numpy as np
from dask.delayed import Delayed
from dask.highlevelgraph import HighLevelGraph, MaterializedLayer
from numpy.typing import NDArray

from bmm_dask._estep import PackedData
from bmm_dask._events import CURRENT_JOB
from bmm_dask._kernels import (
    estep_stats,
    log_parameters,
    log_prior,
    mstep,
    n_packed_bytes,
    sparse_threshold,
    split_components,
    stacked_stats,
)
from bmm_dask._settings import STEPS_IN_FLIGHT
from bmm_dask.errors import DataError

logger = logging.getLogger(__name__)

#: The step size's offset t0 in ``eta_t = (t + t0) ** -kappa``: the first steps move the
#: statistics by less than half, so that one mini-batch cannot undo the start.
STEP_OFFSET = 2.0

#: A step should keep every worker thread busy for about this long, so that Dask's round trip
#: and the driver's work between steps (together about 20-30 ms a step on the local cluster
#: here, where the processes share two cores) stay a modest part of it. Twice as long made a
#: pass of 4 million rows (K = 50, one step in flight) a little faster (0.75 of a batch pass's
#: throughput instead of 0.70) but halved the steps, and stepwise EM then took twice as long to get within 0.05
#: nats per row of batch EM's optimum (benchmarks/bench_stepwise_scale.py).
STEP_SECONDS = 0.06

#: Rows per second per core of the E-step kernel at K x D = 7,840 (K = 10 on MNIST), and how
#: the rate falls as K x D grows: rate = KERNEL_ROWS_PER_SECOND x (7,840 / (K x D)) **
#: KERNEL_EXPONENT, fitted to the rates measured here at K = 10, 50, 100 and 500
#: (benchmarks/bench_costs.py).
KERNEL_ROWS_PER_SECOND = 1.6e6
KERNEL_EXPONENT = 0.75

#: Mini-batches of ``batch_size="auto"`` take at most this fraction of the rows: a pass has
#: at least this many steps, since fewer, larger steps reach worse optima. (On MNIST, K = 100,
#: 10 passes, 4 seeds: mini-batches of 1,000 and 2,000 rows, a 30th, did about as well, and
#: 4,000 worse; benchmarks/bench_stepwise.py --grid.)
MIN_STEPS_PER_PASS = 30

#: ... but at least this many rows (or all of them): a step on fewer is mostly noise.
MIN_BATCH_SIZE = 256

#: A component whose running weight falls below this share of an equal one (1 / K) is
#: starving, and re-seeded at once during stepwise passes: left alone it dies, and batch EM
#: re-seeds it only after the others have settled, on their way to a worse optimum. On the
#: measured sparse corpus and on MNIST a component re-seeded at this level lived (a split
#: starts with half of a large component's mass), and no live component came near it.
STARVING = 0.01

#: The sparse E-step's costs per row (:func:`kernel_rows_per_second` with a density): each
#: packed byte is read, decompressed and scanned; each one is unpacked and, in both
#: products, costs K multiply-adds at a rate limited by fetching the parameters' rows. Fitted
#: to the rates measured here on D = 5,000 to 100,000 (benchmarks/bench_sparse.py).
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
#: work between steps, 20-30 ms on the local cluster here for MNIST's K = 100
#: (benchmarks/bench_costs.py), plus STEP_SECONDS_PER_PARAMETER per mean: the parameters go to
#: the step's tasks and their K x D sums come back, every step. With 100,000 features and
#: K = 50 that was 0.6 s a step (benchmarks/bench_sparse.py --wide).
STEP_ROUND_TRIP = 0.017
STEP_SECONDS_PER_PARAMETER = 1e-7

#: A stepwise pass's arithmetic, in batch passes: it reads the same rows, in more, smaller
#: tasks (a pass's throughput was 0.74-0.82 of a batch pass's, benchmarks/bench_stepwise_scale.py).
PASS_ARITHMETIC = 1.35

#: Seconds a batch iteration costs beyond its arithmetic (its graph, its tasks' scheduling, the
#: driver's M-step): with it the model gave a pass 7.6 and 5.0 iterations on MNIST with K = 10
#: and 100, where 7 and 4.5 were measured (2 workers, streamed).
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


def window_chunks(batch_size: int, chunk_rows: int) -> int:
    """Chunks held in memory at a time: at least 8, so that a mini-batch mixes rows of several
    chunks and a step has a task for each of several threads, and enough for four mini-batches.

    It depends on the mini-batch and the data alone, never on the cluster, so that one
    ``batch_size`` gives the same model on every cluster.

    Parameters
    ----------
    batch_size : int
        Rows per mini-batch.
    chunk_rows : int
        Rows of the data's typical chunk.

    Returns
    -------
    int
    """
    return max(8, math.ceil(4 * batch_size / max(1, chunk_rows)))


def step_size(step: int, kappa: float, t0: float = STEP_OFFSET) -> float:
    """``eta_t = (t + t0) ** -kappa`` for the ``step``-th step (counted from 1)."""
    return float((step + t0) ** -kappa)


@dataclass
class Batch:
    """One mini-batch: the window of chunks it is drawn from, and its rows in each chunk."""

    window: list[int]
    rows: list[NDArray[np.intp]] = field(default_factory=list)  # one array per chunk, sorted


def pass_batches(
    chunk_sizes: tuple[int, ...], batch_size: int, window: int, rng: np.random.Generator
) -> tuple[int, Iterator[Batch]]:
    """The mini-batches of one pass, drawn with ``rng``: every row once; and how many.

    Parameters
    ----------
    chunk_sizes : tuple of int
        Rows of each chunk.
    batch_size : int
        Rows per mini-batch; a window's last mini-batch may be smaller.
    window : int
        Chunks per window.
    rng : numpy.random.Generator
        The driver's random generator.

    Returns
    -------
    int
        The number of mini-batches.
    iterator of Batch
        The mini-batches in order; those of a window come one after the other.
    """
    windows = pass_windows(len(chunk_sizes), window, rng)
    count = sum(_batches_in(sum(chunk_sizes[c] for c in chunks), batch_size) for chunks in windows)
    batches = itertools.chain.from_iterable(
        window_batches(chunks, chunk_sizes, batch_size, rng) for chunks in windows
    )
    return count, batches


def _batches_in(rows: int, batch_size: int) -> int:
    """Mini-batches a window of ``rows`` rows is cut into."""
    return max(1, round(rows / batch_size))


def pass_windows(n_chunks: int, window: int, rng: np.random.Generator) -> list[list[int]]:
    """A pass's windows: the chunks in an order drawn with ``rng``, ``window`` at a time."""
    order = [int(c) for c in rng.permutation(n_chunks)]
    return [order[w : w + window] for w in range(0, n_chunks, window)]


def window_batches(
    chunks: list[int], chunk_sizes: tuple[int, ...], batch_size: int, rng: np.random.Generator
) -> Iterator[Batch]:
    """The mini-batches of one window, drawn with ``rng``: its rows shuffled, cut in pieces."""
    starts = np.cumsum([0, *(chunk_sizes[c] for c in chunks)])
    shuffled = rng.permutation(int(starts[-1]))
    n_batches = _batches_in(len(shuffled), batch_size)
    for piece in np.array_split(shuffled, n_batches):
        # Sorted, the rows fall into runs, one per chunk: one sort, not a pass per chunk
        # (a mask per chunk of the window would cost m x window).
        ordered = np.sort(piece)
        cuts = np.searchsorted(ordered, starts[1:-1])
        batch = Batch(chunks)
        for j, rows in enumerate(np.split(ordered, cuts)):
            batch.rows.append(rows - starts[j])
        yield batch


@dataclass
class StepwiseState:
    """Where a stepwise fit stands: the running statistics per row and the step count.

    ``resp_sum`` (K,) and ``resp_x`` (K, D) are ``s``; ``n_seen`` the rows of all mini-batches
    so far (the N the statistics are scaled back to when the data's size is not known, as in
    ``partial_fit``); ``step`` the steps taken.
    """

    resp_sum: NDArray[np.float64]
    resp_x: NDArray[np.float64]
    step: int = 0
    n_seen: int = 0

    @classmethod
    def start(cls, means: NDArray[np.float64], weights: NDArray[np.float64]) -> StepwiseState:
        """The statistics that the M-step turns back into ``means`` and ``weights`` (alpha 0)."""
        weights = np.asarray(weights, dtype=np.float64)
        return cls(weights.copy(), weights[:, None] * np.asarray(means, dtype=np.float64))

    def update(self, stats: dict[str, Any], kappa: float) -> float:
        """Blend a mini-batch's statistics into the running ones; return the step size used."""
        self.step += 1
        self.n_seen += int(stats["n_samples"])
        eta = step_size(self.step, kappa)
        m = stats["n_samples"]
        self.resp_sum = (1 - eta) * self.resp_sum + eta * (stats["resp_sum"] / m)
        self.resp_x = (1 - eta) * self.resp_x + eta * (stats["resp_x"] / m)
        return eta

    def reseed(self) -> int:
        """Re-seed the starving components, those whose running weight is below
        ``STARVING / K``, by splitting others (:func:`~bmm_dask._kernels.split_components`);
        return how many."""
        starving = np.flatnonzero(self.resp_sum < STARVING / len(self.resp_sum))
        if len(starving):
            split_components(self.resp_sum, self.resp_x, starving)
        return len(starving)

    def parameters(
        self, n_samples: int, alpha: float
    ) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
        """The M-step on the running statistics scaled back to ``n_samples`` rows."""
        means, weights = mstep(n_samples * self.resp_sum, n_samples * self.resp_x, n_samples, alpha)
        return means, weights / weights.sum()


def step_groups(threads: int, chunks: int) -> int:
    """Groups of a window's chunks, and so tasks per step: one per worker thread, at most one
    per chunk."""
    return max(1, min(threads, chunks))


#: A chunk's statistics are added in fixed point, as integers in units of 2**-FIXED_BITS:
#: integer sums are exact in any order, so the sum of a mini-batch is the same, bit for bit,
#: however its chunks are shared out among tasks (and so on any cluster). The rounding is at
#: most 2**-33 per value, far below float32's resolution of the responsibilities; a sum stays
#: below 2**63 up to 2**31 rows per mini-batch.
FIXED_BITS = 32


def to_fixed(stats: dict[str, Any]) -> dict[str, Any]:
    """A chunk's statistics in fixed point (see :data:`FIXED_BITS`)."""
    scale = 2.0**FIXED_BITS
    return {
        "resp_sum": np.rint(stats["resp_sum"] * scale).astype(np.int64),
        "resp_x": np.rint(stats["resp_x"] * scale).astype(np.int64),
        "loglik": round(float(stats["loglik"]) * scale),  # a Python int: never overflows
        "n_samples": stats["n_samples"],
    }


def from_fixed(stats: dict[str, Any]) -> dict[str, Any]:
    """Fixed-point statistics back in float64."""
    scale = 2.0**-FIXED_BITS
    return {
        "resp_sum": stats["resp_sum"] * scale,
        "resp_x": stats["resp_x"] * scale,
        "loglik": float(stats["loglik"] * scale),
        "n_samples": stats["n_samples"],
    }


def add_fixed(parts: list[dict[str, Any]]) -> dict[str, Any]:
    """The sum of fixed-point statistics: exact, whatever their order."""
    keys = ("resp_sum", "resp_x", "loglik", "n_samples")
    return {key: sum(p[key] for p in parts) for key in keys}


@dataclass
class Window:
    """A window's chunks, held in memory in groups: what its mini-batches are taken from.

    ``groups[g]`` holds the chunks at positions ``members[g]`` of ``chunks``, one after the
    other; ``starts[j]`` is the row where chunk j begins in its group's array.
    """

    chunks: list[int]
    members: list[list[int]]
    groups: list[Any]
    starts: list[int]


def _join(blocks: list[NDArray[np.uint8]]) -> NDArray[np.uint8]:
    return np.concatenate(blocks)


def _read_rows(
    reader: Callable[[int, int], NDArray[np.uint8]], bounds: list[tuple[int, int]]
) -> NDArray[np.uint8]:
    return _join([reader(start, stop) for start, stop in bounds])


def hold_window(
    data: PackedData,
    chunks: list[int],
    n_groups: int,
    persisted: bool,
    slots: list[str] | None = None,
) -> Window:
    """Read a window's chunks into the workers' memory, in ``n_groups`` groups.

    Parameters
    ----------
    data : PackedData
        The rows.
    chunks : list of int
        The window's chunks, in the pass's order.
    n_groups : int
        Groups (:func:`step_groups`).
    persisted : bool
        Whether ``data`` is in memory already; otherwise a group is read from the store by one
        task, and held where it was read (no chunk crosses between workers).
    slots : list of str, default=None
        The address of each worker thread (:func:`worker_slots`): group g is read on slot
        ``g % len(slots)`` if that worker is still there, so that every thread gets a group
        even when some are busy with the steps in flight (left to themselves, the scheduler
        puts the reads on the idle workers, and a step then waits for one overloaded worker).
        It places work; the model is the same without it.

    Returns
    -------
    Window
    """
    offsets = np.cumsum([0, *data.bits.chunks[0]])
    token = uuid.uuid4().hex
    members = [[int(j) for j in part] for part in np.array_split(np.arange(len(chunks)), n_groups)]
    held: list[Any] = []
    starts = [0] * len(chunks)
    for g, positions in enumerate(members):
        group = [chunks[j] for j in positions]
        sizes = [int(offsets[c + 1] - offsets[c]) for c in group]
        for j, start in zip(positions, np.cumsum([0, *sizes[:-1]]), strict=True):
            starts[j] = int(start)
        key = (f"bmm-window-{token}", g)
        name = f"bmm-window-{token}-{g}"
        if data.reader is not None and not persisted:
            bounds = [(int(offsets[c]), int(offsets[c + 1])) for c in group]
            annotations = None
            if slots:
                annotations = {"workers": [slots[g % len(slots)]], "allow_other_workers": True}
            layer = MaterializedLayer(
                {key: (_read_rows, data.reader, bounds)}, annotations=annotations
            )
            graph = HighLevelGraph({name: layer}, {name: set()})
        else:
            blocks = [data.bits.blocks[c] for c in group]
            block_keys = [next(iter(dask.core.flatten(b.__dask_keys__()))) for b in blocks]
            layer = MaterializedLayer({key: (_join, block_keys)})
            graph = HighLevelGraph.from_collections(name, layer, dependencies=blocks)
        held.append(Delayed(key, graph, layer=name))
    held = list(dask.persist(*held, optimize_graph=False))
    return Window(list(chunks), members, held, starts)


def _group_stats(
    block: NDArray[np.uint8],
    chunk_rows: list[NDArray[np.intp]],
    n_features: int,
    W: NDArray[Any],
    b: NDArray[Any],
    sizes: list[int] | None = None,
) -> Any:
    if sizes is not None:  # several models: their statistics, model by model
        parts = [
            [to_fixed(s) for s in stacked_stats(block[rows], n_features, W, b, sizes)]
            for rows in chunk_rows
            if len(rows)
        ]
        return [add_fixed(list(model)) for model in zip(*parts, strict=True)]
    stats = [estep_stats(block[rows], n_features, W, b) for rows in chunk_rows if len(rows)]
    return add_fixed([to_fixed(s) for s in stats])


def _add_parts(parts: list[Any]) -> Any:
    """The tasks' fixed-point sums added, as floats: one model's, or a list, model by model."""
    if parts and isinstance(parts[0], list):
        return [from_fixed(add_fixed(list(model))) for model in zip(*parts, strict=True)]
    return from_fixed(add_fixed(parts))


def distributed_client() -> Any:
    """The ``distributed.Client`` that ``dask.compute`` would use now, or None."""
    scheduler = dask.base.get_scheduler()
    client = getattr(scheduler, "__self__", None)
    try:
        from distributed import Client
    except ImportError:  # pragma: no cover - distributed is a dependency
        return None
    return client if isinstance(client, Client) else None


def worker_slots(client: Any) -> list[str] | None:
    """The address of every worker thread of ``client``'s cluster (one entry per thread)."""
    if client is None:
        return None
    workers = client.scheduler_info(n_workers=-1)["workers"]
    return [address for address, w in sorted(workers.items()) for _ in range(w["nthreads"])]


@dataclass
class Step:
    """A step submitted and not yet collected: its tasks (futures on a distributed cluster,
    else graphs to compute), the parameters it was given, and the window it reads, kept
    alive until the step is collected."""

    tasks: list[Any]
    means: NDArray[np.float64]
    weights: NDArray[np.float64]
    window: Window
    client: Any = None

    def result(self) -> dict[str, Any]:
        """The mini-batch's statistics (waits for the tasks)."""
        if self.client is not None:
            parts = self.client.gather(self.tasks)
        else:
            parts = dask.compute(*self.tasks, optimize_graph=False)
        return _add_parts(list(parts))


def submit_step(
    window: Window,
    batch: Batch,
    n_features: int,
    means: NDArray[np.float64],
    weights: NDArray[np.float64],
    dtype: np.typing.DTypeLike,
    token: str,
    client: Any = None,
) -> Step:
    """Start the step of one mini-batch: one task per group of the window.

    Parameters
    ----------
    window : Window
        The window the mini-batch is drawn from, held in memory (:func:`hold_window`).
    batch : Batch
        The mini-batch's rows in each chunk of the window.
    n_features : int
        Features D.
    means : ndarray of shape (n_components, n_features), or list of them
        The means its E-step uses (a list: of several models, whose statistics it computes
        together, and returns as a list).
    weights : ndarray of shape (n_components,), or list of them
        The weights its E-step uses.
    dtype : dtype
        Type of the E-step's arithmetic.
    token : str
        Makes the step's task names new.
    client : distributed.Client, default=None
        Submits the tasks at once (:func:`distributed_client`); without one they run when the
        step's result is asked for.

    Returns
    -------
    Step
    """
    sizes = None
    if isinstance(weights, list):  # several models, their parameters stacked
        params = [log_parameters(m, w, dtype) for m, w in zip(means, weights, strict=True)]
        W, b = np.vstack([p[0] for p in params]), np.concatenate([p[1] for p in params])
        sizes = [len(w) for w in weights]
    else:
        W, b = log_parameters(means, weights, dtype)
    # A graph written out (not dask.delayed over the arrays): a step is small, and building
    # it through the collections' machinery would cost as much as the step's arithmetic.
    name = f"bmm-step-{token}"
    layer: dict[Any, Any] = {}
    dependencies = []
    for g, (group, positions) in enumerate(zip(window.groups, window.members, strict=True)):
        rows = [batch.rows[j] + window.starts[j] for j in positions]
        if any(len(r) for r in rows):
            layer[(name, g)] = (_group_stats, group.key, rows, n_features, W, b, sizes)
            dependencies.append(group)
    graph = HighLevelGraph.from_collections(name, layer, dependencies=dependencies)
    tasks: list[Any] = [Delayed(key, graph, layer=name) for key in layer]
    if client is not None:
        tasks = client.compute(tasks, optimize_graph=False)
    return Step(tasks, means, weights, window, client)


def batch_step(
    window: Window,
    batch: Batch,
    n_features: int,
    means: NDArray[np.float64],
    weights: NDArray[np.float64],
    dtype: np.typing.DTypeLike,
    token: str,
) -> dict[str, Any]:
    """The statistics of one mini-batch: one task per group of the window, added on the driver.

    Parameters
    ----------
    window : Window
        The window the mini-batch is drawn from, held in memory (:func:`hold_window`).
    batch : Batch
        The mini-batch's rows in each chunk of the window.
    n_features : int
        Features D.
    means : ndarray of shape (n_components, n_features)
        The current means.
    weights : ndarray of shape (n_components,)
        The current weights.
    dtype : dtype
        Type of the E-step's arithmetic.
    token : str
        Makes the step's task names new.

    Returns
    -------
    dict
        ``resp_sum``, ``resp_x``, ``loglik`` and ``n_samples`` of the mini-batch.
    """
    return submit_step(window, batch, n_features, means, weights, dtype, token).result()


def with_last(items: Iterator[Batch]) -> Iterator[tuple[Batch, bool]]:
    """Each item with whether it is the last, drawing one ahead (the mini-batches are drawn
    as they are needed: a pass's row numbers would not fit on the driver at scale)."""
    ahead = next(items, None)
    while ahead is not None:
        item, ahead = ahead, next(items, None)
        yield item, ahead is None


def pass_steps(
    data: PackedData,
    batches: Iterator[Batch],
    given: Callable[[], tuple[Any, Any]],
    *,
    dtype: np.typing.DTypeLike,
    persisted: bool,
    threads: int,
    steps_in_flight: int,
    client: Any,
    skip: int = 0,
) -> Iterator[tuple[Any, int, list[Step]]]:
    """Take one pass's steps: hold each window, submit each mini-batch's step with the
    parameters ``given()`` returns at that moment, and yield each step's statistics as they
    come in, ``steps_in_flight`` submitted ahead.

    Parameters
    ----------
    data : PackedData
        Packed rows.
    batches : iterator of Batch
        The pass's mini-batches (:func:`pass_batches`).
    given : callable
        Returns the (means, weights) to submit the next step with (lists of them for
        several models): the caller updates them between the statistics it is given.
    dtype, persisted, threads, steps_in_flight :
        As for :func:`stepwise_pass`.
    client : distributed.Client or None
        From :func:`distributed_client`.
    skip : int, default=0
        Mini-batches drawn but not taken (those before a checkpoint being resumed from).

    Yields
    ------
    stats : dict or list of dict
        The step's statistics (:meth:`Step.result`).
    position : int
        The step's mini-batch, counted from 1 in the pass.
    in_flight : list of Step
        The steps submitted after it and not yet collected.
    """
    slots = None if persisted else worker_slots(client)  # once a pass: workers come and go
    held: Window | None = None
    in_flight: deque[Step] = deque()

    def drop() -> None:  # the steps in flight: their tasks leave the workers at once
        if client is not None and in_flight:
            client.cancel([task for step in list(in_flight) for task in step.tasks])

    job = CURRENT_JOB.get()
    # a submitted job: cancelling it drops the steps, without waiting for the next one
    dropping = job.dropping(drop) if job is not None else contextlib.nullcontext()
    with dropping:
        try:
            for position, (batch, last) in enumerate(with_last(batches), start=1):
                if position <= skip:
                    continue
                if held is None or held.chunks != batch.window:
                    groups = step_groups(threads, len(batch.window))
                    held = hold_window(data, batch.window, groups, persisted, slots)
                means, weights = given()
                token = uuid.uuid4().hex
                in_flight.append(
                    submit_step(held, batch, data.n_features, means, weights, dtype, token, client)
                )
                while in_flight and (len(in_flight) >= steps_in_flight or last):
                    stats = in_flight[0].result()  # in flight until in: a cancel drops it too
                    in_flight.popleft()
                    yield stats, position - len(in_flight), list(in_flight)
        finally:
            # Left early (an error, a cancelled job): the steps still in flight are dropped
            # now, not when the garbage collector gets to them.
            drop()
            in_flight.clear()


class StepwiseRun:
    """Stepwise EM of one model, advanced one mini-batch at a time by the statistics of its
    steps: the blend into the running statistics, the re-seeding of starving components, the
    record of each pass, the stopping test. The steps are the caller's (:func:`stepwise_pass`,
    for one model or several taking the same mini-batches), so that a fit and ``select``'s
    candidates step, re-seed and record alike: the twin of :class:`~bmm_dask._em.BatchRun`.

    Parameters
    ----------
    means : ndarray of shape (n_components, n_features)
        Starting means.
    weights : ndarray of shape (n_components,)
        Starting weights.
    n_samples : int
        Rows of the data: the running statistics are scaled back to as many for the M-step.
    alpha : float
        Additive smoothing of the means.
    step_exponent : float
        kappa in ``eta_t = (t + t0) ** -kappa``, in (0.5, 1].
    batch_size : int
        Rows per mini-batch (recorded with each pass).
    passes : int
        Passes to run at most.
    min_gain : float, default=None
        Stop after a pass whose objective is less than this above the one before (for the first
        pass, ``previous``): the "auto" algorithm then goes on with batch EM.
    previous : float, default=-inf
        The objective before the first pass (batch EM's, when the passes follow its iterations).
    label : str, default=""
        Put before the lines it logs (one of several models).
    """

    def __init__(
        self,
        means: NDArray[np.float64],
        weights: NDArray[np.float64],
        *,
        n_samples: int,
        alpha: float,
        step_exponent: float,
        batch_size: int,
        passes: int,
        min_gain: float | None = None,
        previous: float = -math.inf,
        label: str = "",
    ) -> None:
        self.state = StepwiseState.start(means, weights)
        self.means = np.array(means, dtype=np.float64)
        self.weights = np.array(weights, dtype=np.float64)
        self.n_samples, self.alpha, self.step_exponent = n_samples, alpha, step_exponent
        self.batch_size, self.passes, self.min_gain = batch_size, passes, min_gain
        self.previous = previous
        self.label = label
        self.history: list[dict[str, Any]] = []
        self.left = False  # left before its passes were run: a pass gained too little
        self.begin_pass()

    @property
    def done(self) -> bool:
        """Whether the run has taken its passes, or left them."""
        return self.left or len(self.history) >= self.passes

    @property
    def objective(self) -> float:
        """The objective of the last pass (or the one before the first)."""
        return self.history[-1]["objective"] if self.history else self.previous

    def begin_pass(self) -> None:
        """Begin a pass: its sums start at nothing, its mean shift from the current means."""
        self.loglik = self.rows = 0.0
        self.reseeded = 0
        self.pass_start = self.means
        self.started = time.perf_counter()

    def advance(self, stats: dict[str, Any]) -> dict[str, Any]:
        """One step from a mini-batch's statistics; return the step's event (for the
        dashboard: the running objective of the pass so far)."""
        self.loglik += stats["loglik"]
        self.rows += stats["n_samples"]
        self.state.update(stats, self.step_exponent)
        reseeded = self.state.reseed()
        self.reseeded += reseeded
        self.means, self.weights = self.state.parameters(self.n_samples, self.alpha)
        return {
            "pass": len(self.history) + 1,
            "step": self.state.step,
            "objective": self.loglik / self.rows,
            "change": None,
            "mean_shift": None,
            "seconds": time.perf_counter() - self.started,
            "reseeded": reseeded,
        }

    def end_pass(self) -> dict[str, Any]:
        """End a pass: its record (and the next pass begun).

        Raises
        ------
        DataError
            If the objective stops being finite.
        """
        objective = self.loglik / self.rows + log_prior(self.means, self.alpha) / self.n_samples
        pass_ = len(self.history) + 1
        record = {
            "pass": pass_,
            "steps": self.state.step,
            "batch_size": self.batch_size,
            "objective": objective,
            "change": objective - self.objective,
            "mean_shift": float(np.linalg.norm(self.means - self.pass_start)),
            "seconds": time.perf_counter() - self.started,
            "reseeded": self.reseeded,
        }
        self.history.append(record)
        logger.log(
            logging.DEBUG if self.label else logging.INFO,
            "%spass %d  steps %d  running objective %.6f  mean shift %.3e  %.3f s%s",
            self.label,
            pass_,
            self.state.step,
            objective,
            record["mean_shift"],
            record["seconds"],
            f"  re-seeded {self.reseeded}" if self.reseeded else "",
        )
        if not math.isfinite(objective):
            raise DataError(
                f"the objective became {objective}; the data or settings give no finite likelihood"
            )
        if self.min_gain is not None and record["change"] < self.min_gain:
            self.left = True
        self.begin_pass()
        return record

    def snapshot(
        self,
        position: int,
        pass_rng_state: dict[str, Any],
        in_flight: list[tuple[NDArray[np.float64], NDArray[np.float64]]],
    ) -> dict[str, Any]:
        """Where the run stands, mid-pass or between passes, for :func:`stepwise_pass` to
        resume from exactly: after ``position`` mini-batches of the pass (0: between passes,
        the next from its beginning), whose draws began at ``pass_rng_state``, with the
        parameters of the steps ``in_flight`` then."""
        shape = (len(in_flight), *self.state.resp_x.shape)
        return {
            "pass": len(self.history) + 1,
            "position": position,
            "pass_rng_state": pass_rng_state,
            "in_flight_means": np.array([m for m, _ in in_flight]).reshape(shape),
            "in_flight_weights": np.array([w for _, w in in_flight]).reshape(shape[:2]),
            "resp_sum": self.state.resp_sum,
            "resp_x": self.state.resp_x,
            "step": self.state.step,
            "n_seen": self.state.n_seen,
            "loglik": self.loglik,
            "rows": self.rows,
            "pass_reseeded": self.reseeded,
            "pass_start": self.pass_start,
            "means": self.means,  # those of the next step (at the start, not the M-step's)
            "weights": self.weights,
            "previous": None if self.previous == -math.inf else self.previous,
            "history": [dict(record) for record in self.history],
            "left": self.left,
        }

    def restore(self, snapshot: dict[str, Any]) -> None:
        """Go on from a :meth:`snapshot`."""
        self.state = StepwiseState(
            np.array(snapshot["resp_sum"]),
            np.array(snapshot["resp_x"]),
            snapshot["step"],
            snapshot["n_seen"],
        )
        if "means" in snapshot:
            self.means = np.array(snapshot["means"])
            self.weights = np.array(snapshot["weights"])
        else:  # a snapshot of an earlier version, always after a step: the M-step's
            self.means, self.weights = self.state.parameters(self.n_samples, self.alpha)
        self.loglik, self.rows = snapshot["loglik"], snapshot["rows"]
        self.reseeded = snapshot.get("pass_reseeded", 0)
        self.pass_start = np.array(snapshot["pass_start"])
        previous = snapshot["previous"]
        self.previous = -math.inf if previous is None else previous
        self.history = [dict(record) for record in snapshot["history"]]
        self.left = snapshot.get("left", False)


def stepwise_pass(
    data: PackedData,
    runs: list[StepwiseRun],
    rng: np.random.Generator,
    *,
    batch_size: int,
    dtype: np.typing.DTypeLike = np.float32,
    persisted: bool = False,
    threads: int = 1,
    steps_in_flight: int = STEPS_IN_FLIGHT,
    on_step: Callable[[dict[str, Any]], None] | None = None,
    on_event: Callable[[dict[str, Any]], None] | None = None,
    resume: dict[str, Any] | None = None,
) -> list[dict[str, Any]]:
    """One pass of stepwise EM for one model or several, all taking the same mini-batches
    (several: each step one product of the rows with their parameters stacked); return the
    pass's record of each.

    Each model ends where a pass of its own from the same ``rng`` state ends: its statistics
    come from the same kernel, a model's columns apart.

    Parameters
    ----------
    data : PackedData
        Packed rows, in chunks (those of the store, or of :func:`~bmm_dask._estep.task_blocks`).
    runs : list of StepwiseRun
        The models.
    rng : numpy.random.Generator
        Draws the order of the chunks and the mini-batches.
    batch_size : int
        Rows per mini-batch.
    dtype : dtype, default=np.float32
        Type of the E-step's arithmetic.
    persisted : bool, default=False
        Whether ``data`` is held in memory already; otherwise each window's chunks are read
        once from the store and held while its mini-batches are taken.
    threads : int, default=1
        Worker threads of the cluster in use: the tasks per step (:func:`step_groups`). It
        changes how the work is shared out, never the result.
    steps_in_flight : int, default=STEPS_IN_FLIGHT
        Steps submitted before the oldest is collected: the j-th mini-batch of a pass is
        computed with the parameters after step j - ``steps_in_flight`` of the pass (its
        starting ones for the first). 1 is stepwise EM as published.
    on_step : callable, default=None
        For one model: called after every step with the run's :meth:`StepwiseRun.snapshot`,
        from which ``resume`` continues exactly.
    on_event : callable, default=None
        For one model: called after every step with its event (kind "step", as
        :mod:`bmm_dask._events` describes), for the progress page, a job's record and a
        fit's ``callback``.
    resume : dict, default=None
        Such a snapshot, already restored into the run: the pass goes on from it and ends as
        a pass never interrupted, bit for bit.

    Returns
    -------
    list of dict
        Each run's record of the pass (:meth:`StepwiseRun.end_pass`).
    """
    chunk_sizes = tuple(int(c) for c in data.bits.chunks[0])
    window = window_chunks(batch_size, chunk_sizes[0])
    skip, carried = 0, []
    if resume is not None:
        rng.bit_generator.state = resume["pass_rng_state"]
        skip = resume["position"]
        carried = [  # the parameters of the steps in flight at the snapshot, in order
            (np.array(m), np.array(w))
            for m, w in zip(resume["in_flight_means"], resume["in_flight_weights"], strict=True)
        ]
    pass_rng_state = rng.bit_generator.state  # where this pass's draws begin
    single = len(runs) == 1

    def given() -> tuple[Any, Any]:
        # the steps in flight at the checkpoint resumed from take the parameters they had;
        # every other step the latest
        if carried:
            return carried.pop(0)
        if single:
            return runs[0].means, runs[0].weights
        return [run.means for run in runs], [run.weights for run in runs]

    count, batches = pass_batches(chunk_sizes, batch_size, window, rng)
    steps = pass_steps(
        data,
        batches,
        given,
        dtype=dtype,
        persisted=persisted,
        threads=threads,
        steps_in_flight=steps_in_flight,
        client=distributed_client(),
        skip=skip,
    )
    with contextlib.closing(steps):  # on an error, the steps in flight stop at once
        for stats, position, in_flight in steps:
            for run, part in zip(runs, [stats] if single else stats, strict=True):
                event = run.advance(part)
            if single:
                # where the pass is, for the progress page and a job's record
                run = runs[0]
                event.update(passes=run.passes, step_in_pass=position, steps_in_pass=count)
                event["rows"] = int(run.rows)
                if on_event is not None:
                    on_event({"kind": "step", **event, "means": run.means, "weights": run.weights})
                if on_step is not None:
                    parameters = [(step.means, step.weights) for step in in_flight]
                    on_step(runs[0].snapshot(position, pass_rng_state, parameters))
    return [run.end_pass() for run in runs]
