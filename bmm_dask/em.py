"""The EM driver over a Dask array of packed rows: initialisation, the loop, the tree reduction, convergence."""

from __future__ import annotations

import itertools
import logging
import math
import os
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Literal

import dask
import dask.array as da
import numpy as np
import psutil
from dask.base import tokenize
from dask.delayed import Delayed
from dask.highlevelgraph import HighLevelGraph
from numpy.typing import NDArray

from bmm_dask.errors import DataError, SettingsError
from bmm_dask.io import Dataset, default_chunk_rows
from bmm_dask.kernels import (
    combine_stats,
    estep_stats,
    log_parameters,
    log_prior,
    log_resp,
    mstep,
    n_packed_bytes,
    pack_bits,
    unpack_bits,
)

__all__ = [
    "EMResult",
    "PackedData",
    "as_packed",
    "count_distinct_rows",
    "estep",
    "fit_em",
    "initialize",
    "predict_log_resp",
    "run_em",
    "task_blocks",
]

logger = logging.getLogger(__name__)

Init = Literal["random", "random_from_data", "kmeans++"]
INITS: tuple[str, ...] = ("random", "random_from_data", "kmeans++")

#: A component whose responsibilities sum to less than this (a thousandth of a row) has lost
#: its mass and is re-seeded.
EMPTY_MASS = 1e-3

#: k-means steps on the sample after k-means++ seeding, before EM starts.
LLOYD_STEPS = 10

#: Parameters up to this size travel inside each E-step task; larger ones (K * D * 4 bytes, so
#: K > 80 for MNIST) as one task of their own. Inside the tasks they save a task and a transfer
#: an iteration, which on a local cluster of processes is worth a few milliseconds.
INLINE_PARAMETERS = 256 * 1024

#: Statistics of at most this many blocks are added in one task of the tree reduction.
SPLIT_EVERY = 8


# --------------------------------------------------------------------------- data


@dataclass(frozen=True)
class PackedData:
    """Rows packed 8 bits to a byte, as a Dask array chunked by rows, and their width in bits."""

    bits: da.Array
    n_features: int
    source: str = "array"
    #: For rows straight from a store: ``reader(start, stop)`` returns those rows, so that a
    #: streamed E-step reads its chunk in its own task (one task a chunk, not two).
    reader: Callable[[int, int], NDArray[np.uint8]] | None = None

    @property
    def n_samples(self) -> int:
        return int(self.bits.shape[0])


def _check_binary_block(block: NDArray[Any]) -> NDArray[np.uint8]:
    if block.dtype != bool:
        if not np.isin(block, (0, 1)).all():
            raise DataError("X must hold only 0 and 1 (or booleans); found other values")
        block = block != 0
    return pack_bits(block)


def as_packed(X: Any, *, chunk_rows: int | None = None) -> PackedData:
    """Accept the inputs the estimator takes and return them as packed rows.

    Parameters
    ----------
    X : NumPy array of 0/1 (or bool) of shape (n_samples, n_features), a Dask array of the
        same, an opened :class:`~bmm_dask.io.Dataset`, or a :class:`PackedData`.
    chunk_rows : int, optional
        Rows a chunk for NumPy input; by default about 1 MiB of packed rows.
    """
    if isinstance(X, PackedData):
        return X
    if isinstance(X, Dataset):
        return PackedData(X.bits, X.n_features, X.path, X.row_reader())
    if isinstance(X, da.Array):
        if X.ndim != 2:
            raise DataError(f"X must be 2-dimensional (n_samples, n_features); got shape {X.shape}")
        if X.numblocks[1] != 1:
            X = X.rechunk({1: -1})
        n_features = int(X.shape[1])
        bits = X.map_blocks(
            _check_binary_block,
            dtype=np.uint8,
            chunks=(X.chunks[0], (n_packed_bytes(n_features),)),
            name="bmm-pack-" + tokenize(X),
            meta=np.empty((0, 0), dtype=np.uint8),
        )
        return PackedData(bits, n_features, "dask array")
    array = np.asarray(X)
    if array.ndim != 2:
        raise DataError(f"X must be 2-dimensional (n_samples, n_features); got shape {array.shape}")
    if array.shape[0] == 0 or array.shape[1] == 0:
        raise DataError(f"X must have at least one sample and one feature; got shape {array.shape}")
    packed = _check_binary_block(array)
    rows = chunk_rows or default_chunk_rows(array.shape[1])
    bits = da.from_array(
        packed, chunks=(rows, packed.shape[1]), name="bmm-data-" + tokenize(packed)
    )
    return PackedData(bits, int(array.shape[1]), "numpy array")


def task_blocks(data: PackedData) -> PackedData:
    """Rows regrouped into E-step tasks of about 1 MiB of packed rows (10,240 MNIST images).

    Stores chunked that way (the default) are used as they are. A store of larger chunks (the
    packaged MNIST is one chunk) would leave cores idle, and one of much smaller chunks would
    spend more time scheduling than computing. The blocks depend on the data alone, never on
    the cluster, so every cluster computes the same sums in the same order.
    """
    rows = default_chunk_rows(data.n_features)
    chunks = data.bits.chunks[0]
    if max(chunks) <= rows and (len(chunks) == 1 or np.median(chunks) >= rows / 4):
        return data
    bits = data.bits.rechunk({0: rows})
    return PackedData(bits, data.n_features, data.source)  # blocks are no longer the store's chunks


def _fits_in_memory(data: PackedData) -> bool:
    """Whether the packed rows take at most half the memory of the cluster (or this machine)."""
    nbytes = data.bits.nbytes
    try:
        from distributed import default_client

        client = default_client()
    except (ImportError, ValueError):
        return nbytes <= 0.5 * psutil.virtual_memory().available
    workers = client.scheduler_info(n_workers=-1)["workers"].values()
    total = sum(w.get("memory_limit") or 0 for w in workers)
    return total > 0 and nbytes <= 0.5 * total


# --------------------------------------------------------------------------- one E-step


def _estep_task(
    packed: NDArray[np.uint8], n_features: int, params: dict[str, Any], n_worst: int, offset: int
) -> dict[str, Any]:
    return estep_stats(packed, n_features, params["W"], params["b"], n_worst, offset)


def _read_estep_task(
    reader: Callable[[int, int], NDArray[np.uint8]],
    stop: int,
    n_features: int,
    params: dict[str, Any],
    n_worst: int,
    offset: int,
) -> dict[str, Any]:
    return _estep_task(reader(offset, stop), n_features, params, n_worst, offset)


def _read_estep_group(
    reader: Callable[[int, int], NDArray[np.uint8]],
    bounds: list[int],
    n_features: int,
    params: dict[str, Any],
    n_worst: int,
) -> dict[str, Any]:
    """Read consecutive chunks at once and return the sum of their statistics: exactly what a
    task a chunk followed by one ``combine_stats`` of the tree computes, in one task."""
    packed = reader(bounds[0], bounds[-1])
    parts = [
        _estep_task(
            packed[start - bounds[0] : stop - bounds[0]], n_features, params, n_worst, start
        )
        for start, stop in itertools.pairwise(bounds)
    ]
    return combine_stats(parts)


def _cluster_threads() -> int:
    """Threads that run tasks: those of the distributed cluster in use, or of this machine."""
    try:
        from distributed import default_client

        return max(1, sum(default_client().nthreads().values()))
    except (ImportError, ValueError):
        return os.cpu_count() or 1


def _estep_graph(
    data: PackedData, W: NDArray[Any], b: NDArray[Any], n_worst: int, split_every: int
) -> list[Delayed]:
    """One E-step as a graph: a task a chunk, then a tree of sums down to at most ``split_every``
    partial sums, which the driver adds (fetching them straight from the workers that hold them
    costs less than one more task and transfer on the cluster).

    Streamed data with enough chunks for every thread to get two groups of ``split_every``
    has no tasks a chunk: each task of the tree's first level reads its group of chunks itself
    (one Zarr read of 8 MiB) and computes their statistics and their sum. The sums are the same,
    bit for bit, as with a task a chunk; there are eight times fewer tasks to schedule and no
    statistics to move between workers before the second level: an iteration on 4 million
    rows took 34 % less time (benchmarks/bench_out_of_core.py).

    The keys are new every time, even for parameters seen before (EM at a fixed point): a
    distributed scheduler may still be forgetting the keys of the last iteration.
    """
    token = uuid.uuid4().hex
    layer: dict[Any, Any] = {}
    params: Any = {"W": W, "b": b}
    if W.nbytes + b.nbytes > INLINE_PARAMETERS:  # one task, fetched once by each worker
        layer[f"bmm-params-{token}"] = params
        params = f"bmm-params-{token}"
    level = []
    offsets = [int(o) for o in np.cumsum((0, *data.bits.chunks[0]))]
    n_groups = -(-(len(offsets) - 1) // split_every)
    if data.reader is not None and n_groups > 1 and n_groups >= 2 * _cluster_threads():
        for j in range(n_groups):  # streamed in groups: the first level of the tree reads
            level.append((f"bmm-estep-{token}", j))
            bounds = offsets[j * split_every : (j + 1) * split_every + 1]
            layer[level[-1]] = (
                _read_estep_group,
                data.reader,
                bounds,
                data.n_features,
                params,
                n_worst,
            )
    else:
        for i, key in enumerate(k for row in data.bits.__dask_keys__() for k in row):
            level.append((f"bmm-estep-{token}", i))
            if data.reader is not None:  # streamed: the task reads its chunk itself
                layer[level[-1]] = (
                    _read_estep_task,
                    data.reader,
                    offsets[i + 1],
                    data.n_features,
                    params,
                    n_worst,
                    offsets[i],
                )
            else:
                layer[level[-1]] = (_estep_task, key, data.n_features, params, n_worst, offsets[i])
    depth = 0
    while len(level) > split_every:
        parents = []
        for j in range(0, len(level), split_every):
            parents.append((f"bmm-combine-{token}", depth, j // split_every))
            layer[parents[-1]] = (combine_stats, level[j : j + split_every])
        level, depth = parents, depth + 1
    dependencies = [] if data.reader is not None else [data.bits]
    graph = HighLevelGraph.from_collections(f"bmm-estep-{token}", layer, dependencies=dependencies)
    return [Delayed(key, graph, layer=f"bmm-estep-{token}") for key in level]


def estep(
    data: PackedData,
    means: NDArray[np.float64],
    weights: NDArray[np.float64],
    *,
    dtype: np.typing.DTypeLike = np.float32,
    n_worst: int = 0,
    split_every: int = SPLIT_EVERY,
) -> dict[str, Any]:
    """Run one E-step over all chunks (one ``compute``) and return the summed statistics."""
    W, b = log_parameters(means, weights, dtype)
    parts = dask.compute(*_estep_graph(data, W, b, n_worst, split_every))
    return combine_stats(list(parts))


# --------------------------------------------------------------------------- initialisation


def _distinct_rows(block: NDArray[np.uint8], at_most: int) -> NDArray[np.uint8]:
    """Up to ``at_most`` distinct rows of a block of packed rows (any ``at_most`` of them)."""
    block = np.ascontiguousarray(block)
    if len(block) == 0:
        return block
    rows = np.unique(block.view(f"V{block.shape[1]}").ravel())[:at_most]
    return rows.view(np.uint8).reshape(len(rows), block.shape[1])


def count_distinct_rows(data: PackedData, *, at_most: int) -> int:
    """How many distinct rows the data holds, counted up to ``at_most`` (one pass).

    A block with ``at_most`` distinct rows settles the answer, so each block sends at most that
    many rows to the driver.
    """
    distinct = data.bits.map_blocks(
        _distinct_rows,
        at_most,
        dtype=np.uint8,
        chunks=((np.nan,) * data.bits.numblocks[0], data.bits.chunks[1]),
        name="bmm-distinct-" + tokenize(data.bits.name, at_most),
        meta=np.empty((0, 0), dtype=np.uint8),
    )
    (rows,) = dask.compute(distinct)
    return min(at_most, len(_distinct_rows(rows, at_most)))


def _sample_rows(data: PackedData, n: int, rng: np.random.Generator) -> NDArray[np.uint8]:
    """``n`` rows drawn on the driver (without replacement when there are enough), in row order."""
    replace = n > data.n_samples
    index = np.sort(rng.choice(data.n_samples, size=n, replace=replace))
    (rows,) = dask.compute(data.bits[np.unique(index)])
    if replace:
        rows = rows[np.searchsorted(np.unique(index), index)]
    return rows


def _soft(rows: NDArray[np.uint8], n_features: int) -> NDArray[np.float64]:
    """Means that lean towards given rows: 0.75 where the row has a 1, 0.25 where it has a 0."""
    return 0.25 + 0.5 * unpack_bits(rows, n_features, np.float64)


def _kmeans_plus_plus(
    X: NDArray[np.float64], n_components: int, rng: np.random.Generator
) -> NDArray[np.intp]:
    """Greedy k-means++ seeding (as scikit-learn's) by Hamming distance, which for 0/1 rows is the
    squared Euclidean distance: each new centre is the best of 2 + log(K) candidates."""
    n = len(X)
    ones = X.sum(axis=1)
    trials = 2 + int(np.log(n_components))

    def distance_to(rows: NDArray[np.intp]) -> NDArray[np.float64]:
        return np.maximum(ones[:, None] + ones[rows][None, :] - 2 * (X @ X[rows].T), 0)

    centres = [int(rng.integers(n))]
    closest = distance_to(np.array(centres))[:, 0]
    for _ in range(1, n_components):
        total = closest.sum()
        if total <= 0:  # every row equals a centre already: pick any
            centres.append(int(rng.integers(n)))
            continue
        candidates = np.searchsorted(np.cumsum(closest), rng.random(trials) * total, side="right")
        candidates = np.minimum(candidates, n - 1)
        options = np.minimum(closest[:, None], distance_to(candidates))
        best = int(np.argmin(options.sum(axis=0)))
        centres.append(int(candidates[best]))
        closest = options[:, best]
    return np.asarray(centres)


def _lloyd(X: NDArray[np.float64], centres: NDArray[np.float64], n_iter: int) -> NDArray[np.intp]:
    """A few k-means steps on the sample: the nearest centre of each row, then the centres moved."""
    ones = X.sum(axis=1)
    for _ in range(n_iter + 1):
        distance = ones[:, None] + (centres**2).sum(axis=1)[None, :] - 2 * (X @ centres.T)
        nearest = np.argmin(distance, axis=1)
        for k in range(len(centres)):
            members = nearest == k
            if members.any():
                centres[k] = X[members].mean(axis=0)
    return nearest


def initialize(
    data: PackedData,
    n_components: int,
    init: str,
    rng: np.random.Generator,
) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """Starting means (n_components, n_features) and weights (n_components,), drawn on the driver.

    ``random``: means uniform in [0.25, 0.75]. ``random_from_data``: n_components rows, softened
    to 0.25 / 0.75. ``kmeans++``: on a sample of rows, greedy k-means++ seeding by Hamming
    distance and 10 k-means steps; each component starts at the (Laplace-smoothed) mean of its
    sample rows.
    """
    D = data.n_features
    if init == "random":
        return rng.uniform(0.25, 0.75, size=(n_components, D)), np.full(
            n_components, 1 / n_components
        )
    if init == "random_from_data":
        rows = _sample_rows(data, n_components, rng)
        return _soft(rows, D), np.full(n_components, 1 / n_components)
    if init == "kmeans++":
        n_sample = min(data.n_samples, max(20 * n_components, 2000))
        X = unpack_bits(_sample_rows(data, n_sample, rng), D, np.float64)
        centres = X[_kmeans_plus_plus(X, n_components, rng)]
        nearest = _lloyd(X, centres, LLOYD_STEPS)
        counts = np.bincount(nearest, minlength=n_components).astype(np.float64)
        sums = np.zeros((n_components, D))
        np.add.at(sums, nearest, X)
        means = (sums + 1) / (counts[:, None] + 2)
        weights = (counts + 1) / (counts.sum() + n_components)
        return means, weights
    raise SettingsError(f"init must be one of {', '.join(INITS)}; got {init!r}")


# --------------------------------------------------------------------------- the loop


@dataclass
class EMResult:
    """The outcome of one EM run from one start."""

    means: NDArray[np.float64]
    weights: NDArray[np.float64]
    converged: bool
    n_iter: int
    lower_bound: float
    history: list[dict[str, Any]] = field(default_factory=list)


@contextmanager
def single_threaded_blas() -> Iterator[None]:
    """One BLAS thread while Dask's threads run the E-steps, so they do not fight over the cores.

    (Dask's worker processes set this themselves through OPENBLAS_NUM_THREADS and friends.)
    """
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=1, user_api="blas"):
        yield


def _reseed(
    means: NDArray[np.float64],
    weights: NDArray[np.float64],
    resp_sum: NDArray[np.float64],
    worst: tuple[NDArray[np.float64], NDArray[np.intp], NDArray[np.uint8]],
    n_features: int,
    n_samples: int,
) -> int:
    """Move components that lost their mass onto the worst-explained rows; return how many."""
    empty = np.flatnonzero(resp_sum < EMPTY_MASS)
    if len(empty) == 0:
        return 0
    rows = worst[2]
    for i, k in enumerate(empty):
        if len(rows):
            means[k] = _soft(rows[i % len(rows)][None, :], n_features)[0]
        weights[k] = 1.0 / n_samples
    weights /= weights.sum()
    return len(empty)


#: Topic of the Dask events a fit logs on a distributed scheduler, one an iteration; watch them
#: with ``Client.get_events("bmm-dask")`` or ``Client.subscribe_topic("bmm-dask", handler)``.
EVENT_TOPIC = "bmm-dask"


def _publish(record: dict[str, Any]) -> None:
    """Log the iteration as an event on the distributed scheduler, when there is one."""
    try:
        from distributed import default_client

        client = default_client()
    except (ImportError, ValueError):
        return
    event = {
        k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in record.items()
    }
    client.log_event(EVENT_TOPIC, {"kind": "iteration", **event})


def run_em(
    data: PackedData,
    means: NDArray[np.float64],
    weights: NDArray[np.float64],
    *,
    alpha: float,
    max_iter: int,
    tol: float,
    mean_tol: float | None = None,
    dtype: np.typing.DTypeLike = np.float32,
    split_every: int = SPLIT_EVERY,
    callback: Callable[[dict[str, Any]], None] | None = None,
    history: list[dict[str, Any]] | None = None,
    on_iteration: Callable[[NDArray[np.float64], NDArray[np.float64], list[dict[str, Any]]], None]
    | None = None,
) -> EMResult:
    """EM from the given start: one graph and one ``compute`` an iteration.

    Stops when the objective (mean log-likelihood per sample, plus the log of the smoothing
    prior) changes by less than ``tol``, or the means move less than ``mean_tol`` (L2), or after
    ``max_iter`` iterations. ``tol = 0`` runs exactly ``max_iter`` iterations.

    ``history`` continues a run from a checkpoint: ``means`` and ``weights`` are then the
    parameters after its last iteration. ``on_iteration(means, weights, history)`` is called
    after every iteration with the new parameters (for checkpoints).
    """
    means = np.array(means, dtype=np.float64)
    weights = np.array(weights, dtype=np.float64)
    n_components = len(weights)
    history = list(history or [])
    previous = history[-1]["objective"] if history else -math.inf
    objective = previous
    converged = bool(history) and _finished(history[-1], tol, mean_tol)
    distinct_checked = False
    first = len(history) + 1
    for iteration in range(first, max_iter + 1):
        if converged:
            break
        start = time.perf_counter()
        stats = estep(
            data, means, weights, dtype=dtype, n_worst=n_components, split_every=split_every
        )
        objective = (stats["loglik"] + log_prior(means, alpha)) / stats["n_samples"]
        change = objective - previous
        new_means, new_weights = mstep(
            stats["resp_sum"], stats["resp_x"], stats["n_samples"], alpha
        )
        reseeded = _reseed(
            new_means,
            new_weights,
            stats["resp_sum"],
            stats["worst"],
            data.n_features,
            stats["n_samples"],
        )
        if reseeded and not distinct_checked:
            # Re-seeding never ends when the data has fewer distinct rows than components.
            distinct_checked = True
            n_distinct = count_distinct_rows(data, at_most=n_components)
            if n_distinct < n_components:
                raise DataError(
                    f"{data.source}: has only {n_distinct} distinct "
                    f"row{'s' if n_distinct > 1 else ''}, fewer than the {n_components} "
                    f"components asked for; fit at most {n_distinct}"
                )
        shift = float(np.linalg.norm(new_means - means))
        means, weights, previous = new_means, new_weights, objective
        seconds = time.perf_counter() - start
        record = {
            "iteration": iteration,
            "objective": objective,
            "change": change,
            "mean_shift": shift,
            "seconds": seconds,
            "reseeded": reseeded,
        }
        history.append(record)
        logger.info(
            "iteration %d  objective %.6f  change %.3e  mean shift %.3e  %.3f s%s",
            iteration,
            objective,
            change,
            shift,
            seconds,
            f"  re-seeded {reseeded}" if reseeded else "",
        )
        _publish(record)
        if callback is not None:
            callback(record)
        if not math.isfinite(objective):
            raise DataError(
                f"the objective became {objective}; the data or settings give no finite likelihood"
            )
        converged = _finished(record, tol, mean_tol)
        if on_iteration is not None:
            on_iteration(means, weights, history)
    return EMResult(means, weights, converged, len(history), objective, history)


def _finished(record: dict[str, Any], tol: float, mean_tol: float | None) -> bool:
    """Whether the iteration of this record met the stopping test (never one that re-seeded)."""
    change = record["change"]
    if record["reseeded"] or change is None:
        return False
    return abs(change) < tol or (mean_tol is not None and record["mean_shift"] < mean_tol)


def fit_em(
    data: PackedData,
    *,
    n_components: int,
    rng: np.random.Generator,
    n_init: int = 1,
    init: str = "kmeans++",
    means_init: NDArray[np.float64] | None = None,
    weights_init: NDArray[np.float64] | None = None,
    alpha: float = 0.1,
    max_iter: int = 100,
    tol: float = 1e-4,
    mean_tol: float | None = None,
    dtype: np.typing.DTypeLike = np.float32,
    persist: bool | None = None,
    callback: Callable[[dict[str, Any]], None] | None = None,
    checkpoint: Callable[[FitState], None] | None = None,
    checkpoint_every: int = 0,
    resume: FitState | None = None,
) -> EMResult:
    """Run EM ``n_init`` times (once when starting values are given) and keep the best run.

    The data is persisted in the cluster's memory when it takes at most half of it (``persist``
    forces the choice either way); otherwise every iteration streams it from its store.

    ``checkpoint(state)`` is called every ``checkpoint_every`` iterations and when a start
    ends; ``resume`` continues from such a state and ends with the same model as a run that was
    never interrupted (bit for bit in float64: the state holds the parameters, the history and
    the random generator's state for the starts still to run).
    """
    data = task_blocks(data)
    if persist is None:
        persist = _fits_in_memory(data)
    if persist:
        (bits,) = dask.persist(data.bits)
        data = PackedData(bits, data.n_features, data.source)  # read once: no reader
        logger.info("data persisted in memory (%.1f MB packed)", data.bits.nbytes / 1e6)
    else:
        logger.info(
            "data streamed from its store each iteration (%.1f MB packed)", data.bits.nbytes / 1e6
        )
    best: EMResult | None = resume.best if resume is not None else None
    runs = 1 if means_init is not None else n_init
    first = resume.run if resume is not None else 0
    with single_threaded_blas():
        for run in range(first, runs):
            history: list[dict[str, Any]] = []
            if resume is not None and run == resume.run:
                rng.bit_generator.state = resume.rng_state
            if resume is not None and run == resume.run and resume.means is not None:
                means, weights, history = resume.means, resume.weights, resume.history
            elif means_init is not None:
                means = np.asarray(means_init, dtype=np.float64)
                weights = (
                    np.full(n_components, 1 / n_components)
                    if weights_init is None
                    else np.asarray(weights_init, dtype=np.float64)
                )
            else:
                means, weights = initialize(data, n_components, init, rng)
                if weights_init is not None:
                    weights = np.asarray(weights_init, dtype=np.float64)
            if runs > 1:
                logger.info("start %d of %d", run + 1, runs)
            rng_state = rng.bit_generator.state  # after this start's draws: for the next starts

            def save(
                means: NDArray[np.float64],
                weights: NDArray[np.float64],
                history: list[dict[str, Any]],
                run: int = run,
                rng_state: dict[str, Any] = rng_state,
                best: EMResult | None = best,
            ) -> None:
                if (
                    checkpoint is not None
                    and checkpoint_every
                    and len(history) % checkpoint_every == 0
                ):
                    checkpoint(FitState(run, means, weights, history, rng_state, best))

            result = run_em(
                data,
                means,
                weights,
                alpha=alpha,
                max_iter=max_iter,
                tol=tol,
                mean_tol=mean_tol,
                dtype=dtype,
                callback=callback,
                history=history,
                on_iteration=save,
            )
            if best is None or result.lower_bound > best.lower_bound:
                best = result
            if checkpoint is not None and checkpoint_every and run + 1 < runs:
                checkpoint(FitState(run + 1, None, None, [], rng.bit_generator.state, best))
    assert best is not None
    return best


@dataclass
class FitState:
    """Where a fit stands: enough to continue it exactly.

    ``run`` is the start in progress; ``means``, ``weights`` and ``history`` are its parameters
    after its last iteration (None and [] when it has not begun); ``rng_state`` is the random
    generator's state after its initialisation; ``best`` the best finished start so far.
    """

    run: int
    means: NDArray[np.float64] | None
    weights: NDArray[np.float64] | None
    history: list[dict[str, Any]]
    rng_state: dict[str, Any]
    best: EMResult | None


# --------------------------------------------------------------------------- prediction


def _log_resp_block(
    packed: NDArray[np.uint8], n_features: int, params: dict[str, Any], what: str
) -> NDArray[Any]:
    loglik, log_resp_ = log_resp(packed, n_features, params["W"], params["b"])
    if what == "score":
        return loglik
    if what == "proba":
        return np.exp(log_resp_)
    if what == "score_label":
        return np.stack([loglik, np.argmax(log_resp_, axis=1)], axis=1)
    return np.argmax(log_resp_, axis=1)


def predict_log_resp(
    data: PackedData,
    means: NDArray[np.float64],
    weights: NDArray[np.float64],
    what: Literal["score", "proba", "label", "score_label"],
    dtype: np.typing.DTypeLike = np.float64,
) -> da.Array:
    """Lazy per-row results: log-likelihoods (n,), responsibilities (n, K), most likely
    components (n,), or log-likelihood and component side by side (n, 2) from one pass."""
    W, b = log_parameters(means, weights, dtype)
    params = dask.delayed({"W": W, "b": b}, pure=True)
    n_components = len(weights)
    row_chunks = data.bits.chunks[0]
    if what in ("proba", "score_label"):
        chunks: tuple[Any, ...] = (row_chunks, (n_components if what == "proba" else 2,))
        dtype_out: Any = np.float64
        drop: Any = None
    else:
        chunks, dtype_out, drop = (row_chunks,), (np.float64 if what == "score" else np.intp), 1
    return da.map_blocks(
        _log_resp_block,
        data.bits,
        data.n_features,
        params,
        what,
        chunks=chunks,
        drop_axis=drop,
        dtype=dtype_out,
        name=f"bmm-{what}-" + tokenize(data.bits.name, W, b, what),
        meta=np.empty((0,) * len(chunks), dtype=dtype_out),
    )
