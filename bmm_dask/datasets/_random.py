"""One random stream per block of rows, so a seed gives the same draws whatever the chunking
and whoever computes them."""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np


def rng_block_rows(n_features: int) -> int:
    """Rows drawn from one random stream: about 2**20 values, a power of two, set by n_features alone.

    Random bits are drawn in blocks of rows that depend on the row index only, never on the
    chunking, so a seed gives the same bits whatever the chunks and whoever computes them.

    Parameters
    ----------
    n_features : int
        Number of features (values per row).

    Returns
    -------
    int
        Rows per random stream: the largest power of two of at most ``2**20 // n_features``
        rows, and at least 1.

    >>> rng_block_rows(784), rng_block_rows(64), rng_block_rows(5_000_000)
    (1024, 16384, 1)
    """
    return 1 << max(0, (max(1, (1 << 20) // n_features)).bit_length() - 1)


def sparse_block_rows(ones_a_row: float) -> int:
    """Rows drawn from one random stream when rows are drawn in proportion to their ones.

    A sparse draw costs about its ones, not its cells: a stream covers about ``2**17`` ones
    (a few MB of indices while it is drawn), and at most ``2**16`` rows, which bounds the
    work a chunk of a few rows must do for the stream's rows it does not keep.

    Parameters
    ----------
    ones_a_row : float
        The expected ones in a row, positive; from settings, not draws, so that the blocks
        are known before any row is drawn.

    Returns
    -------
    int
        Rows per random stream: the largest power of two of at most ``2**17 / ones_a_row``
        rows, within [1, ``2**16``].

    >>> sparse_block_rows(100.0), sparse_block_rows(1e-3), sparse_block_rows(1e6)
    (1024, 65536, 1)
    """
    rows = int(min(1 << 16, max(1, (1 << 17) / ones_a_row)))
    return 1 << (rows.bit_length() - 1)


def block_rngs(
    start: int, stop: int, rows_a_block: int, key: Sequence[int]
) -> Iterator[tuple[np.random.Generator, slice, slice]]:
    """Random streams covering rows ``start:stop``, one per block of ``rows_a_block`` rows.

    Parameters
    ----------
    start, stop : int
        The range of rows, in the whole data.
    rows_a_block : int
        Rows per random stream, as from :func:`rng_block_rows` or :func:`sparse_block_rows`.
    key : sequence of int
        Seed and purpose of the draws; the block's index is appended to seed each stream.

    Yields
    ------
    rng : numpy.random.Generator
        The stream of one block, which draws a whole block's rows.
    block_rows : slice
        The rows of the block that lie in the range, counted from the block's first row.
    rows : slice
        The same rows, counted from ``start``.
    """
    for block in range(start // rows_a_block, -(-stop // rows_a_block)):
        first = block * rows_a_block
        lo, hi = max(start, first), min(stop, first + rows_a_block)
        rng = np.random.default_rng([*key, block])
        yield rng, slice(lo - first, hi - first), slice(lo - start, hi - start)
