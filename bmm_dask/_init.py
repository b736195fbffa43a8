"""Initial means and weights from a sample of rows drawn on the driver: random, random rows, or
k-means++ with a few k-means steps."""

from __future__ import annotations

from typing import Literal

import dask
import numpy as np
from dask.base import tokenize
from numpy.typing import NDArray

from bmm_dask._estep import PackedData
from bmm_dask._kernels import (
    unpack_bits,
)
from bmm_dask.errors import SettingsError

Init = Literal["random", "random_from_data", "kmeans++"]
INITS: tuple[str, ...] = ("random", "random_from_data", "kmeans++")

#: k-means steps on the sample after k-means++ seeding, before EM starts.
LLOYD_STEPS = 10


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

    Parameters
    ----------
    data : PackedData
        Packed rows.
    at_most : int
        Count no further than this.

    Returns
    -------
    int
        The number of distinct rows, or ``at_most`` if there are at least that many.
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


def soft_rows(rows: NDArray[np.uint8], n_features: int) -> NDArray[np.float64]:
    """Means that lean towards given rows: 0.75 where the row has a 1, 0.25 where it has a 0.

    Parameters
    ----------
    rows : ndarray of shape (n_rows, ceil(n_features / 8)), dtype uint8
        Packed rows.
    n_features : int
        Number of features D.

    Returns
    -------
    ndarray of shape (n_rows, n_features)
        One row of means per given row.
    """
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
    """Starting means and weights, drawn on the driver.

    ``random``: means uniform in [0.25, 0.75]. ``random_from_data``: n_components rows, softened
    to 0.25 / 0.75. ``kmeans++``: on a sample of rows, greedy k-means++ seeding by Hamming
    distance and ``LLOYD_STEPS`` k-means steps; each component starts at the (Laplace-smoothed)
    mean of its sample rows.

    Parameters
    ----------
    data : PackedData
        Packed rows.
    n_components : int
        Number of components K.
    init : {"random", "random_from_data", "kmeans++"}
        How to choose the means.
    rng : numpy.random.Generator
        Source of the random draws.

    Returns
    -------
    means : ndarray of shape (n_components, n_features)
    weights : ndarray of shape (n_components,)
        Equal weights, except for ``kmeans++``: the (Laplace-smoothed) share of the sample
        rows nearest each centre.

    Raises
    ------
    SettingsError
        If ``init`` is none of the above.
    """
    D = data.n_features
    if init == "random":
        return rng.uniform(0.25, 0.75, size=(n_components, D)), np.full(
            n_components, 1 / n_components
        )
    if init == "random_from_data":
        rows = _sample_rows(data, n_components, rng)
        return soft_rows(rows, D), np.full(n_components, 1 / n_components)
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


def starting_values(
    data: PackedData,
    n_components: int,
    init: str,
    rng: np.random.Generator,
    means_init: NDArray[np.float64] | None = None,
    weights_init: NDArray[np.float64] | None = None,
) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """The means and weights a start begins from: those given, else :func:`initialize`'s.

    Parameters
    ----------
    data : PackedData
        Packed rows.
    n_components : int
        Number of components K.
    init : {"random", "random_from_data", "kmeans++"}
        How to choose the means when ``means_init`` is None.
    rng : numpy.random.Generator
        Source of the random draws (none are made when ``means_init`` is given).
    means_init : ndarray of shape (n_components, n_features), default=None
        Starting means.
    weights_init : ndarray of shape (n_components,), default=None
        Starting weights; None means equal weights with ``means_init``, else those of the
        initialisation.

    Returns
    -------
    means : ndarray of shape (n_components, n_features)
    weights : ndarray of shape (n_components,)
    """
    if means_init is not None:
        means = np.asarray(means_init, dtype=np.float64)
        weights = np.full(n_components, 1 / n_components)
    else:
        means, weights = initialize(data, n_components, init, rng)
    if weights_init is not None:
        weights = np.asarray(weights_init, dtype=np.float64)
    return means, weights
