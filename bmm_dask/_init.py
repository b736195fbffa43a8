"""Initial means and weights from a sample of rows drawn on the driver: the data's feature rates
perturbed, random rows, or k-means++ seeding and a few hard-EM steps.

Every start keeps the data's own feature rates where its rows say nothing. A component made
from rows alone (0.75 on a row's ones, 0.25 elsewhere, say) is one that, on sparse rows, no row
prefers: each of the thousands of features a row lacks costs it log 0.75 there, against about
log 1 in a component with the data's rates; it dies at once. So a component anchored on a row
x is ``(x + p) / 2``, with p the feature rates of the sample, and k-means++ and the k-means
steps measure rows by their log-likelihood under such components, not by Hamming distance
(which between sparse rows is mostly their numbers of ones).
"""

from __future__ import annotations

from typing import Any, Literal

import dask
import numpy as np
import scipy.sparse
from dask.base import tokenize
from numpy.typing import NDArray

from bmm_dask._estep import PackedData
from bmm_dask._kernels import CLIP, unpack_sparse
from bmm_dask._settings import INITS
from bmm_dask.errors import SettingsError

Init = Literal["random", "random_from_data", "kmeans++"]

#: Hard-EM (k-means) steps on the sample after k-means++ seeding, before EM starts.
LLOYD_STEPS = 10

#: Rows in the sample that starts are drawn from: at least this many, and 20 per component.
MIN_SAMPLE = 2000

#: Below this share of ones, the sample is held as a sparse matrix: its products then cost in
#: proportion to its ones.
SPARSE_SAMPLE = 0.05


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


def _unpack_sample(packed: NDArray[np.uint8], n_features: int) -> Any:
    """The sample's rows as float64: a CSR matrix when they are sparse, else an array.

    Sparse rows are unpacked to their ones directly: a dense array of 2,000 rows of 100,000
    features would take 1.6 GB.
    """
    X = unpack_sparse(packed, n_features, np.float64)
    if X.nnz < SPARSE_SAMPLE * X.shape[0] * X.shape[1]:
        return X
    return X.toarray()


def feature_rates(X: Any) -> NDArray[np.float64]:
    """Each feature's share of ones in the rows ``X``, kept off 0 and 1 (``(ones + 0.5) /
    (n + 1)``): the background of every start.

    Parameters
    ----------
    X : ndarray or scipy.sparse matrix of shape (n_rows, n_features)
        0/1 rows.

    Returns
    -------
    ndarray of shape (n_features,)
    """
    ones = np.asarray(X.sum(axis=0), dtype=np.float64).ravel()
    return (ones + 0.5) / (X.shape[0] + 1)


def anchored(rows: Any, rates: NDArray[np.float64]) -> NDArray[np.float64]:
    """Components that lean towards given rows and keep the feature rates elsewhere:
    ``(x + p) / 2``.

    Parameters
    ----------
    rows : ndarray or scipy.sparse matrix of shape (n_rows, n_features)
        0/1 rows.
    rates : ndarray of shape (n_features,)
        The feature rates p (:func:`feature_rates`).

    Returns
    -------
    ndarray of shape (n_rows, n_features)
        One component's means per row.
    """
    dense = rows.toarray() if scipy.sparse.issparse(rows) else np.asarray(rows)
    return (dense + rates) / 2


def _log_likelihoods(X: Any, means: NDArray[np.float64]) -> NDArray[np.float64]:
    """``log p(x | mu_k)`` of every row (rows) under every component (columns)."""
    means = np.clip(means, CLIP, 1 - CLIP)
    log_one_minus = np.log1p(-means)
    return np.asarray(X @ (np.log(means) - log_one_minus).T) + log_one_minus.sum(axis=1)


def _kmeans_plus_plus(
    X: Any, rates: NDArray[np.float64], n_components: int, rng: np.random.Generator
) -> NDArray[np.intp]:
    """Greedy k-means++ seeding (as scikit-learn's: each new centre the best of 2 + log(K)
    candidates), with the divergence of the Bernoulli likelihood in place of the squared
    distance: row x is ``log p(x | anchored(x)) - log p(x | anchored(c))`` from centre c, 0 for
    x = c. On sparse rows it counts a row's ones that the centre lacks by how rare they are."""
    n = X.shape[0]
    trials = 2 + int(np.log(n_components))
    own = np.log((1 + rates) / 2)  # log p(x | anchored(x)), a one at a time
    own_zero = np.log1p(-rates / 2)
    itself = np.asarray(X @ (own - own_zero)).ravel() + own_zero.sum()

    def divergence(rows: NDArray[np.intp]) -> NDArray[np.float64]:
        return np.maximum(itself[:, None] - _log_likelihoods(X, anchored(X[rows], rates)), 0)

    centres = [int(rng.integers(n))]
    closest = divergence(np.array(centres))[:, 0]
    for _ in range(1, n_components):
        total = closest.sum()
        if total <= 0:  # every row equals a centre already: pick any
            centres.append(int(rng.integers(n)))
            continue
        candidates = np.searchsorted(np.cumsum(closest), rng.random(trials) * total, side="right")
        candidates = np.minimum(candidates, n - 1)
        options = np.minimum(closest[:, None], divergence(candidates))
        best = int(np.argmin(options.sum(axis=0)))
        centres.append(int(candidates[best]))
        closest = options[:, best]
    return np.asarray(centres)


def _hard_em(
    X: Any, means: NDArray[np.float64], rates: NDArray[np.float64], steps: int
) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """k-means with the likelihood: each row to its most likely component, then each
    component's means to its rows' share of ones, with one row of the feature rates added.
    Returns the means and the rows of each component."""
    n, n_components = X.shape[0], len(means)
    counts = np.zeros(n_components)
    for _ in range(steps + 1):
        nearest = np.argmax(_log_likelihoods(X, means), axis=1)
        counts = np.bincount(nearest, minlength=n_components).astype(np.float64)
        members = scipy.sparse.csr_matrix(
            (np.ones(n), (nearest, np.arange(n))), shape=(n_components, n)
        )
        sums = members @ X
        sums = sums.toarray() if scipy.sparse.issparse(sums) else np.asarray(sums)
        means = (sums + rates) / (counts[:, None] + 1)
    return means, counts


def initialize(
    data: PackedData,
    n_components: int,
    init: str,
    rng: np.random.Generator,
) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """Starting means and weights, drawn on the driver from a sample of rows.

    The sample has max(2,000, 20 K) rows; p is its feature rates (:func:`feature_rates`).
    ``random``: means p times a factor uniform in [0.5, 1.5] per component and feature
    (kept below 1). ``random_from_data``: n_components rows of the sample, each anchored
    (:func:`anchored`: ``(x + p) / 2``). ``kmeans++``: k-means++ seeding by the likelihood's
    divergence, then ``LLOYD_STEPS`` hard-EM steps; each component starts at its rows' share
    of ones with one row of p added, weighted by its rows (plus one).

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
        Equal weights, except for ``kmeans++``.

    Raises
    ------
    SettingsError
        If ``init`` is none of the above.
    """
    if init not in INITS:
        raise SettingsError(f"init must be one of {', '.join(INITS)}; got {init!r}")
    n_sample = min(data.n_samples, max(20 * n_components, MIN_SAMPLE))
    X = _unpack_sample(_sample_rows(data, n_sample, rng), data.n_features)
    rates = feature_rates(X)
    equal = np.full(n_components, 1 / n_components)
    if init == "random":
        factors = rng.uniform(0.5, 1.5, size=(n_components, data.n_features))
        return np.minimum(rates * factors, 1 - CLIP), equal
    if init == "random_from_data":
        rows = rng.choice(X.shape[0], size=n_components, replace=n_components > X.shape[0])
        return anchored(X[rows], rates), equal
    centres = _kmeans_plus_plus(X, rates, n_components, rng)
    means, counts = _hard_em(X, anchored(X[centres], rates), rates, LLOYD_STEPS)
    return means, (counts + 1) / (counts.sum() + n_components)


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
