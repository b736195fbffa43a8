"""Stepwise (online) EM: the parameters move after every mini-batch of rows, so a fit needs a
few passes over the data instead of dozens of iterations (Liang & Klein 2009, Cappé & Moulines
2009).

Running statistics per row, ``s = (sum r / N, r^T X / N)``, start from the starting parameters.
Each mini-batch B of m rows gives its own, ``s_B``, and ``s <- (1 - eta_t) s + eta_t s_B`` with
``eta_t = (t + t0) ** -kappa``; the M-step works on ``s`` scaled back to N rows, so that the
smoothing ``alpha`` means what it means in batch EM. The statistics are accumulated, never
replaced by one batch's: replacing them collapses the components.

How mini-batches meet chunks: every random draw is the driver's. A pass takes the chunks in a
random order, a window of a few chunks at a time; the window's chunks are held in the workers'
memory (read once from the store when the data is streamed), and its rows, shuffled, are cut
into mini-batches. A step is one Dask computation: one task per chunk of the window, each on
the rows of the mini-batch that its chunk holds, and the driver adds their statistics in a
fixed order, so every scheduler and cluster gives the same model.

Components that lose their mass are not re-seeded during stepwise passes (a step sees too few
rows to tell); the "auto" algorithm follows the passes with batch iterations, which do.
"""

from __future__ import annotations

import logging
import math
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import dask
import dask.core
import numpy as np
from dask.delayed import Delayed
from dask.highlevelgraph import HighLevelGraph
from numpy.typing import NDArray

from bmm_dask._estep import PackedData
from bmm_dask._events import publish
from bmm_dask._kernels import combine_stats, estep_stats, log_parameters, log_prior, mstep
from bmm_dask.errors import DataError

logger = logging.getLogger(__name__)

#: The step size's offset t0 in ``eta_t = (t + t0) ** -kappa``: the first steps move the
#: statistics by less than half, so that one mini-batch cannot undo the start.
STEP_OFFSET = 2.0

#: A step should keep every worker thread busy for about this long, so that Dask's round
#: trip (a few milliseconds per step here) stays a small part of it.
STEP_SECONDS = 0.02

#: Rows per second per core of the E-step kernel for K x D = 7,840 (K = 10 on MNIST), to size
#: mini-batches; the kernel's time grows with K x D.
KERNEL_ROWS_PER_SECOND = 1e6


def auto_batch_size(n_samples: int, n_components: int, n_features: int, threads: int) -> int:
    """Rows per mini-batch when ``batch_size="auto"``.

    Large enough that each worker thread works about :data:`STEP_SECONDS` per step (the Dask
    round trip then costs little), small enough that a pass takes at least 20 steps, and at
    most a 200th of the data for data of over a million rows (hundreds of steps per pass: small
    steps reach better optima than few large ones). As it follows the cluster, the model
    records the size it used (``batch_size_``): give that size to get the same model on
    another cluster.

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

    Returns
    -------
    int
        Rows per mini-batch, at least 1 and at most ``n_samples``.
    """
    per_thread = STEP_SECONDS * KERNEL_ROWS_PER_SECOND * 7840 / (n_components * n_features)
    rows = max(500, int(threads * per_thread))
    rows = min(rows, max(1, n_samples // 20))
    if n_samples > 1_000_000:
        rows = max(rows, n_samples // 200)
    return max(1, min(rows, n_samples))


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
) -> Iterator[Batch]:
    """The mini-batches of one pass, drawn with ``rng``: every row once.

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

    Yields
    ------
    Batch
        In order; the batches of a window come one after the other.
    """
    order = rng.permutation(len(chunk_sizes))
    for w in range(0, len(order), window):
        chunks = [int(c) for c in order[w : w + window]]
        sizes = [chunk_sizes[c] for c in chunks]
        starts = np.cumsum([0, *sizes])
        shuffled = rng.permutation(int(starts[-1]))
        n_batches = max(1, round(len(shuffled) / batch_size))
        for piece in np.array_split(shuffled, n_batches):
            # Sorted, the rows fall into runs, one per chunk: one sort, not a pass per chunk
            # (a mask per chunk of the window would cost m x window).
            ordered = np.sort(piece)
            cuts = np.searchsorted(ordered, starts[1:-1])
            batch = Batch(chunks)
            for j, rows in enumerate(np.split(ordered, cuts)):
                batch.rows.append(rows - starts[j])
            yield batch


def _chunk_stats(
    block: NDArray[np.uint8],
    rows: NDArray[np.intp],
    n_features: int,
    W: NDArray[Any],
    b: NDArray[Any],
) -> dict[str, Any]:
    return estep_stats(block[rows], n_features, W, b)


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

    def parameters(
        self, n_samples: int, alpha: float
    ) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
        """The M-step on the running statistics scaled back to ``n_samples`` rows."""
        means, weights = mstep(n_samples * self.resp_sum, n_samples * self.resp_x, n_samples, alpha)
        return means, weights / weights.sum()


def batch_step(
    blocks: list[Any],
    batch: Batch,
    n_features: int,
    means: NDArray[np.float64],
    weights: NDArray[np.float64],
    dtype: np.typing.DTypeLike,
    token: str,
) -> dict[str, Any]:
    """The statistics of one mini-batch: one task per chunk of its window, added in order.

    Parameters
    ----------
    blocks : list of dask arrays
        The window's chunks, one single-block array each, held in memory (persisted).
    batch : Batch
        The mini-batch's rows in each of them.
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
        The statistics of :func:`~bmm_dask._kernels.estep_stats`, summed over the mini-batch.
    """
    W, b = log_parameters(means, weights, dtype)
    # A graph written out (not dask.delayed over the arrays): a step is small, and building
    # it through the collections' machinery would cost as much as the step's arithmetic. One
    # task per chunk, where the chunk is held: on a cluster of processes this costs less than
    # gathering the mini-batch's rows into fewer, larger tasks (about 75 ms a step of 20,000
    # rows at K = 50 here, against about 110 ms).
    layer: dict[Any, Any] = {}
    keys = []
    for j, (block, rows) in enumerate(zip(blocks, batch.rows, strict=True)):
        if len(rows):
            keys.append((f"bmm-step-{token}", j))
            (block_key,) = dask.core.flatten(block.__dask_keys__())
            layer[keys[-1]] = (_chunk_stats, block_key, rows, n_features, W, b)
    graph = HighLevelGraph.from_collections(f"bmm-step-{token}", layer, dependencies=blocks)
    steps = (Delayed(key, graph, layer=f"bmm-step-{token}") for key in keys)
    parts = dask.compute(*steps, optimize_graph=False)
    return combine_stats(list(parts))


def run_stepwise(
    data: PackedData,
    means: NDArray[np.float64],
    weights: NDArray[np.float64],
    rng: np.random.Generator,
    *,
    alpha: float,
    passes: int,
    batch_size: int,
    step_exponent: float,
    dtype: np.typing.DTypeLike = np.float32,
    persisted: bool = False,
    callback: Callable[[dict[str, Any]], None] | None = None,
    on_step: Callable[[dict[str, Any]], None] | None = None,
    resume: dict[str, Any] | None = None,
) -> tuple[NDArray[np.float64], NDArray[np.float64], list[dict[str, Any]]]:
    """Stepwise EM over ``passes`` passes of the data, from the given start.

    Parameters
    ----------
    data : PackedData
        Packed rows, in chunks (those of the store, or of :func:`~bmm_dask._estep.task_blocks`).
    means : ndarray of shape (n_components, n_features)
        Starting means.
    weights : ndarray of shape (n_components,)
        Starting weights.
    rng : numpy.random.Generator
        Draws the order of the chunks and the mini-batches.
    alpha : float
        Additive smoothing of the means.
    passes : int
        Passes over the data.
    batch_size : int
        Rows per mini-batch.
    step_exponent : float
        kappa in ``eta_t = (t + t0) ** -kappa``, in (0.5, 1].
    dtype : dtype, default=np.float32
        Type of the E-step's arithmetic.
    persisted : bool, default=False
        Whether ``data`` is held in memory already; otherwise each window's chunks are read
        once from the store and held while its mini-batches are taken.
    callback : callable, default=None
        Called with the record of each pass.
    on_step : callable, default=None
        Called after every step, and at the start of every pass but the first, with a
        snapshot (a dict: the running statistics, the step count, the pass and the mini-batches
        taken in it, the random generator's state at the pass's start, the pass's sums so far,
        the history) from which ``resume`` continues exactly.
    resume : dict, default=None
        Such a snapshot: the run goes on from it (``means`` and ``weights`` are then not used)
        and ends with the same model, bit for bit, as a run never interrupted.

    Returns
    -------
    means : ndarray of shape (n_components, n_features)
    weights : ndarray of shape (n_components,)
    history : list of dict
        One record per pass: ``pass``, ``steps``, ``objective`` (the mean log-likelihood of
        the pass's mini-batches, each under the parameters of its step, plus the prior's term),
        ``change``, ``mean_shift``, ``seconds``.

    Raises
    ------
    DataError
        If the objective stops being finite.
    """
    n_samples = data.n_samples
    chunk_sizes = tuple(int(c) for c in data.bits.chunks[0])
    window = window_chunks(batch_size, chunk_sizes[0])
    if resume is None:
        state = StepwiseState.start(means, weights)
        means, weights = np.array(means, dtype=np.float64), np.array(weights, dtype=np.float64)
        history: list[dict[str, Any]] = []
        first_pass, skip, previous = 1, 0, -math.inf
        loglik = rows = 0.0
        pass_start = means
    else:
        state = StepwiseState(
            np.array(resume["resp_sum"]),
            np.array(resume["resp_x"]),
            resume["step"],
            resume["n_seen"],
        )
        means, weights = state.parameters(n_samples, alpha)
        history = [dict(record) for record in resume["history"]]
        first_pass, skip = resume["pass"], resume["position"]
        previous = -math.inf if resume["previous"] is None else resume["previous"]
        loglik, rows = resume["loglik"], resume["rows"]
        pass_start = np.array(resume["pass_start"])
        rng.bit_generator.state = resume["pass_rng_state"]

    def snapshot(pass_: int, position: int, pass_rng_state: dict[str, Any]) -> dict[str, Any]:
        return {
            "resp_sum": state.resp_sum,
            "resp_x": state.resp_x,
            "step": state.step,
            "n_seen": state.n_seen,
            "pass": pass_,
            "position": position,
            "pass_rng_state": pass_rng_state,
            "loglik": loglik,
            "rows": rows,
            "pass_start": pass_start,
            "previous": None if previous == -math.inf else previous,
            "history": list(history),
        }

    for pass_ in range(first_pass, passes + 1):
        started = time.perf_counter()
        if pass_ > first_pass or resume is None:
            pass_rng_state = rng.bit_generator.state  # where this pass's draws begin
        else:
            pass_rng_state = resume["pass_rng_state"]
        held: tuple[tuple[int, ...], list[Any]] | None = None
        for position, batch in enumerate(
            pass_batches(chunk_sizes, batch_size, window, rng), start=1
        ):
            if position <= skip:  # taken before the checkpoint this fit resumes from
                continue
            key = tuple(batch.window)
            if held is None or held[0] != key:
                blocks = [data.bits.blocks[c] for c in batch.window]
                if not persisted:
                    blocks = list(dask.persist(*blocks))
                held = (key, blocks)
            token = uuid.uuid4().hex
            stats = batch_step(held[1], batch, data.n_features, means, weights, dtype, token)
            loglik += stats["loglik"]
            rows += stats["n_samples"]
            state.update(stats, step_exponent)
            means, weights = state.parameters(n_samples, alpha)
            publish(
                {
                    "pass": pass_,
                    "step": state.step,
                    "objective": loglik / rows,
                    "change": None,
                    "mean_shift": None,
                    "seconds": time.perf_counter() - started,
                    "reseeded": 0,
                }
            )
            if on_step is not None:
                on_step(snapshot(pass_, position, pass_rng_state))
        held = None
        skip = 0
        objective = loglik / rows + log_prior(means, alpha) / n_samples
        record = {
            "pass": pass_,
            "iteration": pass_,
            "steps": state.step,
            "batch_size": batch_size,
            "objective": objective,
            "change": objective - previous,
            "mean_shift": float(np.linalg.norm(means - pass_start)),
            "seconds": time.perf_counter() - started,
            "reseeded": 0,
        }
        previous = objective
        history.append(record)
        logger.info(
            "pass %d  steps %d  running objective %.6f  mean shift %.3e  %.3f s",
            pass_,
            state.step,
            objective,
            record["mean_shift"],
            record["seconds"],
        )
        if callback is not None:
            callback(record)
        if not math.isfinite(objective):
            raise DataError(
                f"the objective became {objective}; the data or settings give no finite likelihood"
            )
        loglik = rows = 0.0
        pass_start = means
        if on_step is not None and pass_ < passes:  # the next pass, from its beginning
            on_step(snapshot(pass_ + 1, 0, rng.bit_generator.state))
    return means, weights, history
