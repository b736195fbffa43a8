"""Work on one block of rows, in NumPy (and scipy.sparse for large K): bit packing, the E-step, the M-step."""

from __future__ import annotations

import itertools
import os
from typing import Any

import numpy as np
from numpy.typing import NDArray

__all__ = [
    "combine_stats",
    "component_entropy",
    "count_ones",
    "estep_stats",
    "log_parameters",
    "log_prior",
    "log_resp",
    "mstep",
    "n_packed_bytes",
    "pack_bits",
    "pack_sparse",
    "sparse_block",
    "sparse_threshold",
    "split_components",
    "stacked_stats",
    "takes_sparse",
    "unpack_bits",
    "unpack_sparse",
]


def n_packed_bytes(n_features: int) -> int:
    """Bytes per row when ``n_features`` bits are packed 8 to a byte.

    Parameters
    ----------
    n_features : int
        Number of features (bits) in a row.

    Returns
    -------
    int
        ``ceil(n_features / 8)``.

    >>> n_packed_bytes(784), n_packed_bytes(9)
    (98, 2)
    """
    return (n_features + 7) // 8


def pack_bits(bits: NDArray[np.bool_]) -> NDArray[np.uint8]:
    """Pack 0/1 rows 8 to a byte, first feature in the highest bit (NumPy's big-endian order).

    Parameters
    ----------
    bits : ndarray of shape (n_samples, n_features)
        Bool or 0/1 integers.

    Returns
    -------
    packed : ndarray of shape (n_samples, ceil(n_features / 8)), dtype uint8
        The last byte of a row is padded with zero bits.
    """
    return np.packbits(bits, axis=1)


def pack_sparse(X: Any) -> NDArray[np.uint8]:
    """Pack the rows of a SciPy sparse matrix of ones as :func:`pack_bits` packs dense rows.

    Works in proportion to the ones (and the packed bytes it returns); no dense array of the
    rows is made.

    Parameters
    ----------
    X : scipy.sparse matrix or array of shape (n_samples, n_features)
        Its stored values are taken as ones (entries stored as 0 are dropped first).

    Returns
    -------
    packed : ndarray of shape (n_samples, ceil(n_features / 8)), dtype uint8

    >>> import scipy.sparse
    >>> pack_sparse(scipy.sparse.csr_matrix([[1, 0, 1], [0, 0, 0]])).tolist()
    [[160], [0]]
    """
    import scipy.sparse

    X = scipy.sparse.csr_matrix(X)
    X.eliminate_zeros()
    n_samples, n_features = X.shape
    row_bytes = n_packed_bytes(n_features)
    packed = np.zeros((n_samples, row_bytes), dtype=np.uint8)
    rows = np.repeat(np.arange(n_samples, dtype=np.int64), np.diff(X.indptr))
    cols = X.indices.astype(np.int64)
    # a bit a one: or-ed, so a one stored twice (a matrix with duplicates) is still one bit
    np.bitwise_or.at(
        packed.reshape(-1), rows * row_bytes + (cols >> 3), (128 >> (cols & 7)).astype(np.uint8)
    )
    return packed


def unpack_bits(
    packed: NDArray[np.uint8], n_features: int, dtype: np.typing.DTypeLike = np.uint8
) -> NDArray[np.generic]:
    """Unpack rows packed by :func:`pack_bits`.

    Parameters
    ----------
    packed : ndarray of shape (n_samples, ceil(n_features / 8)), dtype uint8
        Packed rows.
    n_features : int
        Bits to keep from each row; the padding bits of the last byte are dropped.
    dtype : dtype, default=np.uint8
        Type of the result; its values are 0 and 1.

    Returns
    -------
    X : ndarray of shape (n_samples, n_features)
        The rows' 0/1 values, of type ``dtype``.

    >>> unpack_bits(np.array([[0b10100000]], dtype=np.uint8), 3).tolist()
    [[1, 0, 1]]
    """
    X = np.unpackbits(packed, axis=1, count=n_features)
    if X.dtype != np.dtype(dtype):
        X = X.view(bool).astype(dtype)  # from bool: converts faster than from uint8
    return X


#: The number of ones in each byte value.
_ONES_IN_BYTE = np.unpackbits(np.arange(256, dtype=np.uint8)[:, None], axis=1).sum(
    axis=1, dtype=np.uint8
)


def count_ones(packed: NDArray[np.uint8]) -> int:
    """The number of one bits in packed rows (padding bits are zero as :func:`pack_bits` writes
    them).

    Parameters
    ----------
    packed : ndarray of uint8

    Returns
    -------
    int

    >>> count_ones(np.array([[0b10100000, 0b1]], dtype=np.uint8))
    3
    """
    flat = np.ascontiguousarray(packed).reshape(-1)
    total = 0
    for start in range(0, flat.size, 1 << 24):  # a byte of counts per byte, a piece at a time
        total += int(_ONES_IN_BYTE[flat[start : start + (1 << 24)]].sum(dtype=np.int64))
    return total


def unpack_sparse(
    packed: NDArray[np.uint8], n_features: int, dtype: np.typing.DTypeLike = np.float64
) -> Any:
    """Unpack rows packed by :func:`pack_bits` to a sparse matrix of their ones.

    Only the bytes that hold a one are expanded, so the work is one scan of the packed bytes
    plus work in proportion to the ones, and no array of ``n_samples x n_features`` is made.

    Parameters
    ----------
    packed : ndarray of shape (n_samples, ceil(n_features / 8)), dtype uint8
        Packed rows.
    n_features : int
        Bits to keep from each row; the padding bits of the last byte are dropped.
    dtype : dtype, default=np.float64
        Type of the matrix's values (all 1).

    Returns
    -------
    scipy.sparse.csr_matrix of shape (n_samples, n_features)
        The ones, with sorted column indices in each row.

    >>> unpack_sparse(np.array([[0b10100000], [0]], dtype=np.uint8), 3).toarray().tolist()
    [[1.0, 0.0, 1.0], [0.0, 0.0, 0.0]]
    """
    import scipy.sparse

    n_samples, row_bytes = packed.shape
    flat = np.ascontiguousarray(packed).reshape(-1)
    # Found eight bytes at a time: most words of sparse rows are zero, and a scan for nonzero
    # bools is many times faster than NumPy's scan of bytes.
    whole = flat.size - flat.size % 8
    words = np.flatnonzero(flat[:whole].view(np.uint64) != 0)
    # the nonzero bytes of the nonzero words, then their bits (first feature in the highest
    # bit, as np.unpackbits gives them): each scan is of bools, several times shorter than
    # the last
    in_words = flat[:whole].view(np.uint64)[words].view(np.uint8)
    nonzero = np.flatnonzero(in_words != 0)
    where = words[nonzero >> 3] * 8 + (nonzero & 7)
    if whole < flat.size:
        where = np.concatenate([where, whole + np.flatnonzero(flat[whole:])])
    bits = np.flatnonzero(np.unpackbits(flat[where]).view(bool))
    position = where[bits >> 3] * 8 + (bits & 7)
    rows, cols = np.divmod(position, row_bytes * 8)
    if n_features < row_bytes * 8 and cols.size and (cols >= n_features).any():
        keep = cols < n_features  # padding bits, set by hand in a damaged store
        rows, cols = rows[keep], cols[keep]
    index_type = np.int32 if max(n_features, len(cols)) < 2**31 else np.int64
    indptr = np.searchsorted(rows, np.arange(n_samples + 1)).astype(index_type)
    return scipy.sparse.csr_matrix(
        (np.ones(len(cols), dtype=dtype), cols.astype(index_type), indptr),
        shape=(n_samples, n_features),
    )


# --------------------------------------------------------------------------- EM on one block

#: With alpha = 0 (maximum likelihood) a mean is kept within [CLIP, 1 - CLIP], so that no
#: log-probability is infinite: a pixel never seen on in a component costs log(CLIP) = -23 nats.
CLIP = 1e-10


def log_parameters(
    means: NDArray[np.float64],
    weights: NDArray[np.float64],
    dtype: np.typing.DTypeLike = np.float64,
) -> tuple[NDArray[np.floating], NDArray[np.floating]]:
    """The linear form of the log-probabilities: ``log p(x, k) = x @ W[k] + b[k]``.

    Parameters
    ----------
    means : ndarray of shape (n_components, n_features)
        Bernoulli means, in (0, 1); they are clipped to [CLIP, 1 - CLIP].
    weights : ndarray of shape (n_components,)
        Mixing weights, positive, summing to 1.
    dtype : dtype, default=np.float64
        Type of ``W`` and ``b``, and so of the E-step's arithmetic.

    Returns
    -------
    W : ndarray of shape (n_components, n_features)
        ``log(mu) - log(1 - mu)``
    b : ndarray of shape (n_components,)
        ``sum_d log(1 - mu_d) + log(weight)``
    """
    means = np.clip(means, CLIP, 1 - CLIP)
    log_one_minus = np.log1p(-means)
    W = np.log(means) - log_one_minus
    with np.errstate(divide="ignore"):
        b = log_one_minus.sum(axis=1) + np.log(weights)
    return W.astype(dtype), b.astype(dtype)


def _log_joint(
    packed: NDArray[np.uint8], n_features: int, W: NDArray[np.floating], b: NDArray[np.floating]
) -> tuple[NDArray[np.floating], NDArray[np.floating]]:
    X = unpack_bits(packed, n_features, W.dtype)
    L = X @ W.T
    L += b
    return X, L


def _floor(dtype: np.dtype[Any], n_components: int) -> float:
    """The lowest log-responsibility kept: below it exp() would give subnormal numbers, which are
    harmless to the result but make the next matrix product much slower."""
    return float(np.log(np.finfo(dtype).tiny) + np.log(n_components) + 1)


def _normalise(L: NDArray[np.floating], floor: float, axis: int) -> NDArray[np.floating]:
    """Turn log-joints into responsibilities in place, the components along ``axis``; return
    the data rows' log-likelihoods.

    With few components they run down the first axis (``axis=0``), so that every reduction
    is a vectorised pass along the data rows: a max or sum across a few numbers per row, along
    the last axis, is much slower. Every component has a finite log-joint (means are clipped
    and weights positive), so the maxima are finite.
    """
    top = L.max(axis=axis, keepdims=True)
    L -= top
    np.maximum(L, floor, out=L)
    np.exp(L, out=L)
    total = L.sum(axis=axis, keepdims=True)
    L /= total
    np.log(total, out=total)
    total += top
    return total.reshape(-1)


#: In float32 with this many components or more, responsibilities^T @ X skips responsibilities
#: below SPARSE_BELOW: each row has only a few components that matter, so the sparse product
#: beats the dense one for large K. What it drops is below float32's resolution of a sum of 1
#: (2**-24 = 6e-8); the sums N_k stay dense.
SPARSE_FROM = 64
SPARSE_BELOW = 1e-7


def _sparse_resp_x(resp: NDArray[np.float32], X: NDArray[np.float32]) -> NDArray[np.float32]:
    """``resp.T @ X`` for responsibilities that are mostly (almost) zero, by a sparse product."""
    import scipy.sparse

    row, component = np.nonzero(resp >= SPARSE_BELOW)
    sparse = scipy.sparse.csr_matrix(
        (resp[row, component], (component, row)), shape=(resp.shape[1], resp.shape[0])
    )
    return sparse @ X


def sub_block_rows(n_components: int, dtype: np.dtype[Any]) -> int:
    """Rows unpacked at a time inside a block.

    float32 (for speed): for K < 64, 512 rows, whose unpacked floats stay in a core's L2 cache
    between the two products; for K >= 64, 2048 rows, as with K in the hundreds the products
    are compute-bound and longer sub-blocks do better.

    float64 (for exactness) uses 256 rows: with longer sub-blocks, the same E-step in a
    distributed worker process was seen to differ from the driver's in the last bit of
    ``resp @ X`` (the BLAS's blocking, we think; see docs/design.md), and float64 promises
    the same model, bit for bit, on every scheduler.

    Parameters
    ----------
    n_components : int
        Number of components K.
    dtype : dtype
        Type of the arithmetic, float32 or float64.

    Returns
    -------
    int
        Rows per sub-block.
    """
    if dtype == np.float64:
        return 256
    return 512 if n_components < SPARSE_FROM else 2048


#: In float32, products of at most SMALL_PRODUCT multiply-adds take OpenBLAS's small-matrix
#: path, which runs thin products faster: for K = 10 and 784 features, both products run
#: faster on pieces of PIECE rows than on whole sub-blocks; for K >= 20 the pieces would be too
#: large for that path and only add calls.
SMALL_PRODUCT = 1_000_000
PIECE = 64


def _piece_rows(n_components: int, n_features: int, step: int) -> int:
    """Rows of the pieces the two products run on (0: on whole sub-blocks)."""
    product = n_components * n_features
    return PIECE if PIECE * product <= SMALL_PRODUCT < step * product else 0


#: The sparse E-step is used on a block whose share of ones is below
#: ``SPARSE_DENSITY[dtype] * K / (K + SPARSE_HALF_K)``: its two products cost the ones times K,
#: where the dense ones cost rows x features x K at the BLAS's higher rate per multiply-add;
#: with few components the dense products are cheap and the sparse path's unpacking weighs
#: more. Set a little below the measured crossovers (benchmarks/bench_sparse.py --crossover).
SPARSE_DENSITY = {np.dtype(np.float32): 0.07, np.dtype(np.float64): 0.1}
SPARSE_HALF_K = 6

#: The environment variable that forces one E-step for every block, ``dense`` or ``sparse``
#: (``auto``, or unset: by the block's share of ones). For comparisons and benchmarks: the
#: model is the same either way, within rounding. Worker processes read their own environment.
KERNEL_ENV = "BMM_DASK_KERNEL"


def sparse_threshold(n_components: int, dtype: np.typing.DTypeLike) -> float:
    """The share of ones below which a block's E-step takes the sparse products.

    Parameters
    ----------
    n_components : int
        Number of components K (summed over the models of a stacked E-step).
    dtype : dtype
        Type of the arithmetic, float32 or float64.

    Returns
    -------
    float
        A share of ones, in (0, 1).
    """
    return SPARSE_DENSITY[np.dtype(dtype)] * n_components / (n_components + SPARSE_HALF_K)


def sparse_block(
    packed: NDArray[np.uint8],
    n_features: int,
    n_components: int,
    dtype: np.typing.DTypeLike,
) -> Any:
    """The block's rows as a sparse matrix when its E-step costs less that way, else None.

    The choice depends on the block's ones and K alone, so every scheduler makes the same one
    (the environment variable :data:`KERNEL_ENV` can force it).

    Parameters
    ----------
    packed : ndarray of shape (n_samples, ceil(n_features / 8)), dtype uint8
        Packed rows.
    n_features : int
        Number of features D.
    n_components : int
        Number of components K.
    dtype : dtype
        Type of the arithmetic.

    Returns
    -------
    scipy.sparse.csr_matrix of shape (n_samples, n_features), or None
        The rows (:func:`unpack_sparse`) when their share of ones is below
        :func:`sparse_threshold`.
    """
    cells = packed.shape[0] * n_features
    if cells == 0 or not takes_sparse(0, cells, n_components, dtype):
        return None
    # a nonzero byte holds at least one 1: one fast scan settles most dense blocks
    if not takes_sparse(np.count_nonzero(packed), cells, n_components, dtype):
        return None
    X = unpack_sparse(packed, n_features, dtype)
    return X if takes_sparse(X.nnz, cells, n_components, dtype) else None


def takes_sparse(n_ones: int, cells: int, n_components: int, dtype: np.typing.DTypeLike) -> bool:
    """Whether a block of ``cells`` rows x features holding ``n_ones`` ones takes the sparse
    E-step (:func:`sparse_threshold`, unless :data:`KERNEL_ENV` forces a path).

    Parameters
    ----------
    n_ones : int
        Ones in the block.
    cells : int
        Its rows times its features.
    n_components : int
        Number of components K (summed over the models of a stacked E-step).
    dtype : dtype
        Type of the arithmetic.

    Returns
    -------
    bool
    """
    forced = os.environ.get(KERNEL_ENV, "auto")
    if forced in ("dense", "sparse"):
        return forced == "sparse"
    return n_ones < sparse_threshold(n_components, dtype) * cells


def _rows_for_sparse(packed: Any, n_features: int, n_components: int, dtype: np.dtype[Any]) -> Any:
    """The block as a sparse matrix of ``dtype`` for the sparse E-step, or None for the dense
    one: a sparse matrix given (rows unpacked once, and kept), or :func:`sparse_block`'s."""
    import scipy.sparse

    if scipy.sparse.issparse(packed):
        return packed if packed.dtype == dtype else packed.astype(dtype)
    return sparse_block(packed, n_features, n_components, dtype)


def _sparse_estep(
    X: Any,
    W: NDArray[np.floating],
    b: NDArray[np.floating],
    sizes: list[int],
    entropy: bool = False,
) -> tuple[NDArray[np.float64], NDArray[np.float64], NDArray[np.floating], NDArray[np.float64]]:
    """The E-step's sums on sparse rows, for one model or several stacked.

    Both products cost the ones times K: ``X @ W.T`` adds up, per row, the K-vectors of its
    ones' features, and ``resp^T @ X``, computed as ``X^T @ resp``, adds each row's
    responsibilities to the row of each of its features.

    Returns the sums of responsibilities, responsibilities^T @ X, the rows' log-likelihoods
    (one row per model) and, with ``entropy``, the sums of the entropies of the
    responsibilities (per model).
    """
    L = np.asarray(X @ np.ascontiguousarray(W.T))
    L += b
    bounds = np.cumsum([0, *sizes])
    row_ll = np.empty((len(sizes), X.shape[0]), dtype=W.dtype)
    entropies = np.zeros(len(sizes))
    for m, (lo, hi) in enumerate(itertools.pairwise(bounds)):
        block = L[:, lo:hi]
        row_ll[m] = _normalise(block, _floor(W.dtype, hi - lo), axis=1)
        if entropy:
            entropies[m] = -float(np.sum(block * np.log(block), dtype=np.float64))
    resp_sum = L.sum(axis=0, dtype=np.float64)
    # K x D in Fortran order: the sums are the same, without a copy to transpose them
    resp_x = np.asarray(X.T @ L, dtype=np.float64).T
    return resp_sum, resp_x, row_ll, entropies


def estep_stats(
    packed: NDArray[np.uint8],
    n_features: int,
    W: NDArray[np.floating],
    b: NDArray[np.floating],
) -> dict[str, Any]:
    """The E-step on one block of packed rows: the sufficient statistics for the M-step.

    Parameters
    ----------
    packed : ndarray of shape (n_samples, ceil(n_features / 8)), dtype uint8
        Packed rows, as from :func:`pack_bits`, or those rows as a sparse matrix (as from
        :func:`sparse_block`), which takes the sparse E-step.
    n_features : int
        Number of features D.
    W : ndarray of shape (n_components, n_features)
        From :func:`log_parameters`; its dtype (float32 or float64) is the dtype of the
        arithmetic.
    b : ndarray of shape (n_components,)
        From :func:`log_parameters`, of the same dtype as ``W``.

    Returns
    -------
    dict
        ``resp_sum`` : ndarray of shape (n_components,), float64, the sum of responsibilities;
        ``resp_x`` : ndarray of shape (n_components, n_features), float64,
        responsibilities^T @ X;
        ``loglik`` : float, the sum of the rows' log-likelihoods;
        ``n_samples`` : int.
    """
    n_components = W.shape[0]
    n_samples = packed.shape[0]
    dtype = W.dtype
    X_sparse = _rows_for_sparse(packed, n_features, n_components, dtype)
    if X_sparse is not None:
        resp_sum, resp_x, row_ll, _ = _sparse_estep(X_sparse, W, b, [n_components])
        return {
            "resp_sum": resp_sum,
            "resp_x": resp_x,
            "loglik": float(row_ll[0].sum(dtype=np.float64)),
            "n_samples": n_samples,
        }
    step = sub_block_rows(n_components, dtype)
    sparse = dtype == np.float32 and n_components >= SPARSE_FROM
    floor = _floor(dtype, n_components)
    # Buffers made once per block: fresh large arrays for each sub-block cost page faults.
    piece = _piece_rows(n_components, n_features, step) if dtype == np.float32 and not sparse else 0
    W_t = np.ascontiguousarray(W.T)  # as OpenBLAS likes it best
    X = np.empty((min(step, n_samples), n_features), dtype=dtype)
    L = np.empty((min(step, n_samples), n_components), dtype=dtype)
    # With few components, responsibilities are kept one row per component (see _normalise);
    # with many (the sparse product), one row per data row, as they come out of X @ W.T.
    resp = np.empty((0 if sparse else n_components, n_samples), dtype=dtype)
    resp_sum = np.zeros(n_components)
    row_ll = np.empty(n_samples, dtype=dtype)
    resp_x = np.zeros((n_components, n_features))
    if piece:  # products of the pieces of a sub-block, before they are added
        products = np.empty((step // piece, n_components, n_features), dtype=dtype)
    for start in range(0, n_samples, step):
        stop = min(start + step, n_samples)
        rows = X[: stop - start]
        # viewed as bool, the 0/1 bytes convert to floats faster than uint8 does
        np.copyto(rows, np.unpackbits(packed[start:stop], axis=1, count=n_features).view(bool))
        joint = L[: stop - start]
        # pieces as one stacked product: one call, the BLAS calls in NumPy's loop without the GIL
        pieces = (stop - start) // piece if piece and (stop - start) % piece == 0 else 0
        if pieces:
            np.matmul(
                rows.reshape(pieces, piece, n_features), W_t, out=joint.reshape(pieces, piece, -1)
            )
        else:
            np.matmul(rows, W_t, out=joint)
        joint += b
        if sparse:
            row_ll[start:stop] = _normalise(joint, floor, axis=1)
            resp_sum += joint.sum(axis=0, dtype=np.float64)
            resp_x += _sparse_resp_x(joint, rows)
            continue
        block = resp[:, start:stop]
        np.copyto(block, joint.T)
        row_ll[start:stop] = _normalise(block, floor, axis=0)
        if pieces:
            stacked = products[:pieces]
            np.matmul(
                block.reshape(n_components, pieces, piece).transpose(1, 0, 2),
                rows.reshape(pieces, piece, n_features),
                out=stacked,
            )
            resp_x += stacked.sum(axis=0)
        else:
            resp_x += block @ rows
    if not sparse:
        resp_sum = resp.sum(axis=1, dtype=np.float64)
    return {
        "resp_sum": resp_sum,
        "resp_x": resp_x,
        "loglik": float(row_ll.sum(dtype=np.float64)),
        "n_samples": n_samples,
    }


def stacked_stats(
    packed: NDArray[np.uint8],
    n_features: int,
    W: NDArray[np.floating],
    b: NDArray[np.floating],
    sizes: list[int],
    entropy: bool = False,
) -> list[dict[str, Any]]:
    """The E-step of several models at once on one block of packed rows.

    The rows are unpacked once; the models' log-parameters, stacked, go into one product
    with them, each model's block of columns is turned into its responsibilities, and one more
    product gives every model's responsibilities^T @ X. For one model it computes what
    :func:`estep_stats` does.

    Parameters
    ----------
    packed : ndarray of shape (n_samples, ceil(n_features / 8)), dtype uint8
        Packed rows, as from :func:`pack_bits`, or those rows as a sparse matrix (as from
        :func:`sparse_block`), which takes the sparse E-step.
    n_features : int
        Number of features D.
    W : ndarray of shape (sum(sizes), n_features)
        The models' ``W`` (:func:`log_parameters`) one under the other; its dtype is the
        dtype of the arithmetic.
    b : ndarray of shape (sum(sizes),)
        The models' ``b``, in the same order.
    sizes : list of int
        Components of each model.
    entropy : bool, default=False
        Also return, per model, the sum over rows of the entropy of the responsibilities,
        ``-sum_k r_k log r_k`` (for ICL).

    Returns
    -------
    list of dict
        Per model, what :func:`estep_stats` returns (and ``entropy`` if asked).
    """
    bounds = np.cumsum([0, *sizes])
    total = int(bounds[-1])
    n_samples = packed.shape[0]
    dtype = W.dtype
    X_sparse = _rows_for_sparse(packed, n_features, total, dtype)
    if X_sparse is not None:
        resp_sum, resp_x, row_ll, entropies = _sparse_estep(X_sparse, W, b, sizes, entropy)
        return _per_model(bounds, resp_sum, resp_x, row_ll, entropies, n_samples, entropy)
    # Sub-blocks of 512 rows ran the stacked products fastest, though one model of as many
    # components runs best on longer ones, and the sparse product paid when a model has many
    # components, not when many models have a few each (the figures: docs/performance.md,
    # "The cost model's constants").
    # float64 keeps the single model's sub-blocks, so that its sums are those of estep_stats.
    step = 256 if dtype == np.float64 else 512
    sparse = dtype == np.float32 and max(sizes) >= SPARSE_FROM
    floors = [_floor(dtype, k) for k in sizes]
    W_t = np.ascontiguousarray(W.T)
    X = np.empty((min(step, n_samples), n_features), dtype=dtype)
    L = np.empty((min(step, n_samples), total), dtype=dtype)
    resp = np.empty((total, min(step, n_samples)), dtype=dtype)
    resp_sum = np.zeros(total)
    resp_x = np.zeros((total, n_features))
    row_ll = np.empty((len(sizes), n_samples), dtype=dtype)
    entropies = np.zeros(len(sizes))
    for start in range(0, n_samples, step):
        stop = min(start + step, n_samples)
        rows = X[: stop - start]
        np.copyto(rows, np.unpackbits(packed[start:stop], axis=1, count=n_features).view(bool))
        joint = L[: stop - start]
        np.matmul(rows, W_t, out=joint)
        joint += b
        # components along the first axis: every reduction then runs along the data rows
        block = resp[:, : stop - start]
        np.copyto(block, joint.T)
        for m, (lo, hi) in enumerate(itertools.pairwise(bounds)):
            row_ll[m, start:stop] = _normalise(block[lo:hi], floors[m], axis=0)
            if entropy:
                entropies[m] -= float(np.sum(block[lo:hi] * np.log(block[lo:hi]), dtype=np.float64))
        resp_sum += block.sum(axis=1, dtype=np.float64)
        if sparse:
            resp_x += _sparse_resp_x(np.ascontiguousarray(block.T), rows)
        else:
            resp_x += block @ rows
    return _per_model(bounds, resp_sum, resp_x, row_ll, entropies, n_samples, entropy)


def _per_model(
    bounds: NDArray[np.intp],
    resp_sum: NDArray[np.float64],
    resp_x: NDArray[np.float64],
    row_ll: NDArray[np.floating],
    entropies: NDArray[np.float64],
    n_samples: int,
    entropy: bool,
) -> list[dict[str, Any]]:
    """Stacked models' sums cut into one dict of statistics per model."""
    out = []
    for m, (lo, hi) in enumerate(itertools.pairwise(bounds)):
        stats = {
            "resp_sum": resp_sum[lo:hi].copy(),
            "resp_x": resp_x[lo:hi].copy(),
            "loglik": float(row_ll[m].sum(dtype=np.float64)),
            "n_samples": n_samples,
        }
        if entropy:
            stats["entropy"] = float(entropies[m])
        out.append(stats)
    return out


def combine_stats(parts: list[dict[str, Any]]) -> dict[str, Any]:
    """Add E-step statistics of several blocks, in the order given (so the sum is reproducible).

    Parameters
    ----------
    parts : list of dict
        Statistics as returned by :func:`estep_stats` (or by this function).

    Returns
    -------
    dict
        The same keys as :func:`estep_stats`: the sums of ``resp_sum``, ``resp_x``, ``loglik``
        and ``n_samples``.
    """
    total = {
        "resp_sum": _ordered_sum([p["resp_sum"] for p in parts]),
        "resp_x": _ordered_sum([p["resp_x"] for p in parts]),
        "loglik": float(sum(p["loglik"] for p in parts)),
        "n_samples": sum(p["n_samples"] for p in parts),
    }
    if "entropy" in parts[0]:
        total["entropy"] = float(sum(p["entropy"] for p in parts))
    return total


def _ordered_sum(arrays: list[NDArray[np.float64]]) -> NDArray[np.float64]:
    total = arrays[0].copy()
    for array in arrays[1:]:
        total += array
    return total


def mstep(
    resp_sum: NDArray[np.float64], resp_x: NDArray[np.float64], n_samples: int, alpha: float
) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """The M-step: ``mu = (S + alpha) / (N_k + 2 alpha)`` and ``pi = N_k / N``.

    ``alpha`` is additive (Lidstone) smoothing, as in scikit-learn's BernoulliNB: the maximum of
    the likelihood times a Beta(alpha + 1, alpha + 1) prior on every mean. With ``alpha = 0``
    (maximum likelihood) the means are clipped to [CLIP, 1 - CLIP]. A component with no mass
    gets mean 0.5 here; the driver re-seeds it.

    Parameters
    ----------
    resp_sum : ndarray of shape (n_components,)
        The sums of responsibilities N_k.
    resp_x : ndarray of shape (n_components, n_features)
        responsibilities^T @ X, the sums S.
    n_samples : int
        Number of rows N.
    alpha : float
        Additive smoothing of the means; 0 for maximum likelihood.

    Returns
    -------
    means : ndarray of shape (n_components, n_features)
    weights : ndarray of shape (n_components,)
    """
    with np.errstate(invalid="ignore", divide="ignore"):
        means = (resp_x + alpha) / (resp_sum[:, None] + 2 * alpha)
    means[~np.isfinite(means)] = 0.5
    np.clip(means, CLIP, 1 - CLIP, out=means)
    weights = resp_sum / n_samples
    return means, weights


#: A split moves each mean of the donor by up to this share of its distance to the nearer of 0
#: and 1, up in one half and down in the other: ``mu +- SPLIT_SPREAD * u * min(mu, 1 - mu)``,
#: u uniform in [-1, 1]. For a sparse feature that is ``mu`` times a factor in [0.5, 1.5], the
#: start from which a plain EM keeps every component alive on sparse rows.
SPLIT_SPREAD = 0.5

#: Seeds the draws of a split, with the numbers of the two components.
SPLIT_SEED = 0x5B117


def component_entropy(
    resp_sum: NDArray[np.float64], resp_x: NDArray[np.float64]
) -> NDArray[np.float64]:
    """What each component leaves unexplained: its mass times the entropy of its means (nats).

    For the means of the M-step (alpha 0) it is minus the log-likelihood of the component's
    own rows, ``-sum_i r_ik log p(x_i | k)``, so the largest is the component whose rows are
    worst explained in all.

    Parameters
    ----------
    resp_sum : ndarray of shape (n_components,)
        The sums of responsibilities N_k (or those sums per row).
    resp_x : ndarray of shape (n_components, n_features)
        responsibilities^T @ X (on the same scale).

    Returns
    -------
    ndarray of shape (n_components,)
    """
    with np.errstate(invalid="ignore", divide="ignore"):
        means = np.clip(resp_x / resp_sum[:, None], CLIP, 1 - CLIP)
    entropy = -(means * np.log(means) + (1 - means) * np.log1p(-means)).sum(axis=1)
    return np.where(resp_sum > 0, resp_sum * entropy, 0.0)


def split_components(
    resp_sum: NDArray[np.float64], resp_x: NDArray[np.float64], lost: NDArray[np.intp]
) -> None:
    """Re-seed the components ``lost`` by splitting others, in the statistics, in place.

    Each lost component takes half of the donor that leaves most unexplained
    (:func:`component_entropy`, the lost ones left out), and the two halves' means are pushed
    apart: ``mu +- SPLIT_SPREAD * u * min(mu, 1 - mu)`` per feature. A half of a component
    that many rows prefer is one that many rows can prefer: on dense and sparse rows alike
    its means are the data's own, where a component started from one row is, on sparse
    rows, one that no row prefers to the others (its background costs every row more than
    the feature rates of the live components), and it dies again at once. The statistics'
    totals, and so the data's feature rates, are kept.

    The draws u come from a generator seeded with the two components' numbers alone: the same
    split on every scheduler (and for statistics equal to rounding, as a NumPy reference has
    them), with no random state to carry in checkpoints.

    Parameters
    ----------
    resp_sum : ndarray of shape (n_components,)
        The sums of responsibilities N_k (or those sums per row, as stepwise EM keeps them).
    resp_x : ndarray of shape (n_components, n_features)
        responsibilities^T @ X, on the same scale.
    lost : ndarray of int
        The components to re-seed, in order.
    """
    score = component_entropy(resp_sum, resp_x)
    score[lost] = -np.inf
    for k in lost:
        donor = int(np.argmax(score))
        if not np.isfinite(score[donor]) or resp_sum[donor] <= 0:
            return  # nothing left to split
        u = np.random.default_rng([SPLIT_SEED, int(k), donor]).uniform(-1, 1, resp_x.shape[1])
        resp_sum[donor] += resp_sum[k]  # what little the lost one had: the totals are kept
        resp_x[donor] += resp_x[k]
        mass = resp_sum[donor] / 2
        means = np.clip(resp_x[donor] / resp_sum[donor], 0, 1)
        push = SPLIT_SPREAD * u * np.minimum(means, 1 - means)
        resp_sum[k] = resp_sum[donor] = mass
        resp_x[k] = mass * (means + push)
        resp_x[donor] = mass * (means - push)
        score[donor] = score[donor] / 2
        score[k] = -np.inf  # a half is not split again in the same call


def log_prior(means: NDArray[np.float64], alpha: float) -> float:
    """Log of the Beta(alpha + 1, alpha + 1) prior on the means, up to a constant (0 for alpha = 0).

    Parameters
    ----------
    means : ndarray of shape (n_components, n_features)
        Bernoulli means; they are clipped to [CLIP, 1 - CLIP].
    alpha : float
        Additive smoothing of the means.

    Returns
    -------
    float
        ``alpha * sum(log(mu) + log(1 - mu))`` over all means.
    """
    if alpha == 0:
        return 0.0
    means = np.clip(means, CLIP, 1 - CLIP)
    return float(alpha * (np.log(means).sum() + np.log1p(-means).sum()))


def log_resp(
    packed: NDArray[np.uint8], n_features: int, W: NDArray[np.floating], b: NDArray[np.floating]
) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """Per-row log-likelihoods and log-responsibilities of one block of packed rows.

    Parameters
    ----------
    packed : ndarray of shape (n_samples, ceil(n_features / 8)), dtype uint8
        Packed rows, as from :func:`pack_bits`.
    n_features : int
        Number of features D.
    W : ndarray of shape (n_components, n_features)
        From :func:`log_parameters`.
    b : ndarray of shape (n_components,)
        From :func:`log_parameters`.

    Returns
    -------
    loglik : ndarray of shape (n_samples,)
        Each row's log-likelihood, in float64.
    log_resp : ndarray of shape (n_samples, n_components)
        Each row's log-responsibilities, in float64.
    """
    X = sparse_block(packed, n_features, len(b), W.dtype)
    if X is not None:
        L = np.asarray(X @ W.T, dtype=np.float64) + b
    else:
        _, L = _log_joint(packed, n_features, W, b)
        L = L.astype(np.float64)
    top = L.max(axis=1, keepdims=True)
    loglik = top[:, 0] + np.log(np.exp(L - top).sum(axis=1))
    return loglik, L - loglik[:, None]
