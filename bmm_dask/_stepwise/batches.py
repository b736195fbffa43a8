"""The mini-batches of a pass: the chunks in a random order, a window of a few at a time, the
window's rows shuffled and cut into mini-batches, every draw made on the driver; and the step
sizes."""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np
from numpy.typing import NDArray

#: The step size's offset t0 in ``eta_t = (t + t0) ** -kappa``: the first steps move the
#: statistics by less than half, so that one mini-batch cannot undo the start.
STEP_OFFSET = 2.0


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


def with_last(items: Iterator[Batch]) -> Iterator[tuple[Batch, bool]]:
    """Each item with whether it is the last, drawing one ahead (the mini-batches are drawn
    as they are needed: a pass's row numbers would not fit on the driver at scale)."""
    ahead = next(items, None)
    while ahead is not None:
        item, ahead = ahead, next(items, None)
        yield item, ahead is None
