"""A pass's steps on the cluster: the window of chunks held in the workers' memory, a task
per group of chunks for each step, the steps in flight, and dropping them when the fit stops."""

from __future__ import annotations

import contextlib
import uuid
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass
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
    stacked_stats,
)
from bmm_dask._stepwise.batches import Batch, with_last
from bmm_dask._stepwise.state import add_fixed, from_fixed, to_fixed


def step_groups(threads: int, chunks: int) -> int:
    """Groups of a window's chunks, and so tasks per step: one per worker thread, at most one
    per chunk."""
    return max(1, min(threads, chunks))


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
