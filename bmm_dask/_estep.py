"""The E-step over the chunks of a Dask array of packed rows: one task per chunk (or per group
of chunks read together), a tree of sums of their statistics; and per-row responsibilities
for prediction."""

from __future__ import annotations

import dataclasses
import itertools
import os
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

import dask
import dask.array as da
import numpy as np
import psutil
import scipy.sparse
from dask.base import tokenize
from dask.delayed import Delayed
from dask.highlevelgraph import HighLevelGraph
from numpy.typing import NDArray

from bmm_dask._events import current_client
from bmm_dask._kernels import (
    combine_stats,
    count_ones,
    estep_stats,
    log_parameters,
    log_resp,
    n_packed_bytes,
    pack_bits,
    pack_sparse,
    sparse_block,
    stacked_stats,
    takes_sparse,
)
from bmm_dask.errors import DataError
from bmm_dask.io import Dataset, default_chunk_rows

#: Parameters up to this size travel inside each E-step task; larger ones (K * D * 4 bytes, so
#: K > 80 for MNIST) as one task of their own. Inside the tasks they save a task and a transfer
#: per iteration, which counts on a local cluster of processes.
INLINE_PARAMETERS = 256 * 1024

#: Statistics of at most this many blocks are added in one task of the tree reduction.
SPLIT_EVERY = 8


@dataclass(frozen=True)
class PackedData:
    """Rows packed 8 bits to a byte, as a Dask array chunked by rows, and their width in bits."""

    bits: da.Array
    n_features: int
    source: str = "array"
    #: For rows straight from a store: ``reader(start, stop)`` returns those rows, so that a
    #: streamed E-step reads its chunk in its own task (one task per chunk, not two).
    reader: Callable[[int, int], NDArray[np.uint8]] | None = None
    #: For persisted sparse rows: per group of ``SPLIT_EVERY`` consecutive chunks, the
    #: chunks held unpacked to their ones, in the cluster's memory beside the packed rows
    #: (:func:`with_sparse_chunks`).
    sparse: tuple[Delayed, ...] | None = None
    #: For rows from a store: ``unchanged()`` raises DataError if the store at their path was
    #: replaced since it was opened (another command wrote a dataset there), so that what was
    #: read may mix two datasets. Called after each computation that read the rows.
    unchanged: Callable[[], None] | None = None

    def held(self) -> PackedData:
        """The same rows, once held in memory: the store is read by the first computation on
        them alone, so ``unchanged`` is called after that one and no more (not each iteration)."""
        unchanged, checked = self.unchanged, False

        def once() -> None:
            nonlocal checked
            if unchanged is not None and not checked:
                unchanged()
                checked = True

        return dataclasses.replace(self, unchanged=once)

    def check_unchanged(self) -> None:
        """Raise DataError if the store the rows come from was replaced (see ``unchanged``)."""
        if self.unchanged is not None:
            self.unchanged()

    @property
    def n_samples(self) -> int:
        """Number of rows."""
        return int(self.bits.shape[0])


def _check_binary_block(block: Any) -> NDArray[np.uint8]:
    if scipy.sparse.issparse(block):
        _check_sparse_values(block)
        return pack_sparse(block)
    if block.dtype != bool:
        if not np.isin(block, (0, 1)).all():
            raise DataError("X must hold only 0 and 1 (or booleans); found other values")
        block = block != 0
    return pack_bits(block)


def _check_sparse_values(X: Any) -> None:
    values = X.data
    if values.dtype != bool and not np.isin(values, (0, 1)).all():
        raise DataError("X must hold only 0 and 1 (or booleans); found other values")


def _sparse_chunk(X: Any, start: int, stop: int) -> NDArray[np.uint8]:
    return pack_sparse(X[start:stop])


def _pack_sparse_matrix(X: Any, chunk_rows: int | None) -> PackedData:
    """A SciPy sparse matrix as packed rows, each chunk packed in its own task: the packed
    rows (D / 8 bytes a row) exist only where the tasks run, or where they are persisted."""
    X = scipy.sparse.csr_matrix(X)
    n_samples, n_features = X.shape
    if n_samples == 0 or n_features == 0:
        raise DataError(f"X must have at least one sample and one feature; got shape {X.shape}")
    _check_sparse_values(X)
    rows = chunk_rows or default_chunk_rows(n_features)
    token = tokenize(X.data, X.indices, X.indptr, X.shape)
    matrix = dask.delayed(X, pure=True, name=f"bmm-sparse-{token}")
    chunks = [
        da.from_delayed(
            dask.delayed(_sparse_chunk, pure=True)(matrix, start, min(start + rows, n_samples)),
            shape=(min(start + rows, n_samples) - start, n_packed_bytes(n_features)),
            dtype=np.uint8,
        )
        for start in range(0, n_samples, rows)
    ]
    return PackedData(da.concatenate(chunks), n_features, "sparse matrix")


def as_packed(X: Any, *, chunk_rows: int | None = None) -> PackedData:
    """Accept the inputs the estimator takes and return them as packed rows.

    Parameters
    ----------
    X : array-like of shape (n_samples, n_features), Dataset or PackedData
        A NumPy array of 0/1 (or bool), a SciPy sparse matrix (or array) of the same, a Dask
        array of either, an opened :class:`~bmm_dask.io.Dataset`, or a :class:`PackedData`
        (returned as it is).
    chunk_rows : int, default=None
        Rows per chunk for NumPy and SciPy input; None means
        :func:`~bmm_dask.io.default_chunk_rows`.

    Returns
    -------
    PackedData
        The rows packed 8 bits to a byte, chunked by rows. A Dask array is checked for values
        other than 0 and 1 only when its chunks are computed.

    Raises
    ------
    DataError
        If ``X`` is not 2-dimensional, has no rows or no features (NumPy input), or holds
        values other than 0 and 1.
    """
    if isinstance(X, PackedData):
        return X
    if isinstance(X, Dataset):
        return PackedData(X.bits, X.n_features, X.path, X.row_reader(), unchanged=X.check_unchanged)
    if scipy.sparse.issparse(X):
        return _pack_sparse_matrix(X, chunk_rows)
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
    if array.ndim == 0 and array.dtype == object:  # not rows at all: say what it was
        inside = array.item()
        if scipy.sparse.issparse(inside):  # np.asarray of a sparse matrix wraps it whole
            raise DataError(
                "X is a NumPy object array holding a SciPy sparse matrix (np.asarray of one); "
                "give the sparse matrix itself"
            )
        raise DataError(
            "X must be rows of 0/1: a 2-dimensional array, a SciPy sparse matrix, a Dask "
            f"array or an opened dataset; got a {type(inside).__module__}."
            f"{type(inside).__qualname__}"
        )
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


#: Persisted rows are held unpacked too only up to this share of ones: their indices and
#: values (5 bytes a one) then take at most half the packed rows' memory, so rows that fit in
#: half the cluster's memory (:func:`fits_in_memory`) take at most three quarters of it.
HELD_DENSITY = 1 / 80


def _held_group(
    n_features: int, n_components: int, dtype: np.dtype[Any], *chunks: Any
) -> list[Any]:
    """A group of chunks as the E-step takes them: a sparse matrix where the chunk takes the
    sparse E-step (its values of one byte: the E-step makes them floats), else the packed rows."""
    held = []
    for packed in chunks:
        X = sparse_block(packed, n_features, n_components, dtype)
        if X is not None:
            X.data = np.ones(X.nnz, dtype=bool)
        held.append(packed if X is None else X)
    return held


def with_sparse_chunks(
    data: PackedData, n_components: int, dtype: Any, density: float
) -> PackedData:
    """Persisted sparse rows, also held unpacked to their ones for every batch E-step.

    Unpacking a sparse chunk takes longer than the sparse E-step's two products, and on sparse
    rows the K x D statistics of a chunk weigh more than its rows: so the chunks are unpacked
    once, in groups of ``SPLIT_EVERY``, and each E-step task sums a group's statistics, chunk
    by chunk, as the tree's first level would (:func:`_held_group_task`). Each chunk takes
    the E-step it would take unpacked in its own task (the same choice, by its share of ones,
    K and dtype), so the sums are those of streamed rows, bit for bit.

    Data whose share of ones (``density``) is more than half the sparse E-step's threshold, or
    more than :data:`HELD_DENSITY`, is returned as it is:
    holding its chunks again would add to its memory more than it saves in time.

    Parameters
    ----------
    data : PackedData
        Rows persisted in the cluster's memory (no ``reader``).
    n_components : int
        Components of the E-steps to come (for several models, their sum).
    dtype : dtype
        Type of their arithmetic.
    density : float
        The rows' share of ones, as :func:`data_density` gives it.

    Returns
    -------
    PackedData
        ``data``, with ``sparse`` set and persisted where the rows are sparse.
    """
    dtype = np.dtype(dtype)
    # rows near the threshold gain little from being held, and may be dense in places
    if density > HELD_DENSITY or not takes_sparse(2 * density, 1, n_components, dtype):
        return data
    keys = [k for row in data.bits.__dask_keys__() for k in row]
    token = tokenize(data.bits.name, n_components, dtype.str, SPLIT_EVERY)
    name = f"bmm-sparse-chunks-{token}"
    layer = {
        (name, j): (_held_group, data.n_features, n_components, dtype, *keys[i : i + SPLIT_EVERY])
        for j, i in enumerate(range(0, len(keys), SPLIT_EVERY))
    }
    graph = HighLevelGraph.from_collections(name, layer, dependencies=[data.bits])
    held = dask.persist(*[Delayed(key, graph, layer=name) for key in layer])
    return PackedData(
        data.bits, data.n_features, data.source, sparse=tuple(held), unchanged=data.unchanged
    )


def task_blocks(data: PackedData) -> PackedData:
    """Rows regrouped into E-step tasks of about 1 MiB of packed rows (10,240 MNIST images).

    Stores chunked that way (the default) are used as they are. A store of larger chunks (the
    packaged MNIST is one chunk) would leave cores idle, and one of much smaller chunks would
    spend more time scheduling than computing. The blocks depend on the data alone, never on
    the cluster, so every cluster computes the same sums in the same order.

    Parameters
    ----------
    data : PackedData
        Packed rows, as from :func:`as_packed`.

    Returns
    -------
    PackedData
        ``data`` itself when its chunks already suit, else its rows rechunked into blocks of
        :func:`~bmm_dask.io.default_chunk_rows` rows (with no ``reader``).
    """
    rows = default_chunk_rows(data.n_features)
    chunks = data.bits.chunks[0]
    if max(chunks) <= rows and (len(chunks) == 1 or np.median(chunks) >= rows / 4):
        return data
    bits = data.bits.rechunk({0: rows})
    # blocks are no longer the store's chunks: no reader
    return PackedData(bits, data.n_features, data.source, unchanged=data.unchanged)


#: The rows :func:`data_density` counts the ones of.
DENSITY_ROWS = 4096


def data_density(data: PackedData) -> float:
    """The share of ones in the first rows (at most ``DENSITY_ROWS``, from the first chunk):
    what the cost model of a stepwise pass needs, read on the driver, the same on every run.

    Parameters
    ----------
    data : PackedData
        Packed rows.

    Returns
    -------
    float
        Ones over rows x features, in [0, 1].
    """
    stop = min(data.n_samples, data.bits.chunks[0][0], DENSITY_ROWS)
    if data.reader is not None:
        rows = data.reader(0, stop)
    else:
        (rows,) = dask.compute(data.bits[:stop])
    return count_ones(rows) / max(1, stop * data.n_features)


def fits_in_memory(data: PackedData) -> bool:
    """Whether the packed rows take at most half the memory of the cluster (or this machine).

    Parameters
    ----------
    data : PackedData
        Packed rows.

    Returns
    -------
    bool
        True if the rows' bytes are at most half the sum of the workers' memory limits of the
        distributed client in use, or, with none, half the memory this machine has available.
    """
    nbytes = data.bits.nbytes
    client = current_client()
    if client is None:
        return nbytes <= 0.5 * psutil.virtual_memory().available
    workers = client.scheduler_info(n_workers=-1)["workers"].values()
    total = sum(w.get("memory_limit") or 0 for w in workers)
    return total > 0 and nbytes <= 0.5 * total


# --------------------------------------------------------------------------- one E-step


def _held_group_task(held: list[Any], n_features: int, params: dict[str, Any]) -> Any:
    """The sum of a held group's statistics, chunk by chunk in order: what a task per chunk
    followed by one ``combine_stats`` of the tree computes. A chunk held unpacked that does not
    take the sparse E-step for these parameters (the K of a stacked E-step shrinks as models
    finish) is packed again, exactly, for the dense one."""
    W = params["W"]
    total = None
    for rows in held:
        if scipy.sparse.issparse(rows):
            cells = rows.shape[0] * n_features
            if not takes_sparse(rows.nnz, cells, W.shape[0], W.dtype):
                rows = pack_sparse(rows)
        part = _estep_task(rows, n_features, params)
        total = part if total is None else _combine([total, part])
    return total


def _estep_task(packed: Any, n_features: int, params: dict[str, Any]) -> Any:
    if "sizes" in params:  # several models at once: a list of statistics, one per model
        return stacked_stats(
            packed,
            n_features,
            params["W"],
            params["b"],
            params["sizes"],
            params["entropy"],
        )
    return estep_stats(packed, n_features, params["W"], params["b"])


def _combine(parts: list[Any]) -> Any:
    """:func:`~bmm_dask._kernels.combine_stats` of one model's statistics, or per model of
    several models' (lists of statistics, one per model)."""
    if isinstance(parts[0], list):
        return [combine_stats(list(model)) for model in zip(*parts, strict=True)]
    return combine_stats(parts)


def _read_estep_task(
    reader: Callable[[int, int], NDArray[np.uint8]],
    stop: int,
    n_features: int,
    params: dict[str, Any],
    offset: int,
) -> dict[str, Any]:
    return _estep_task(reader(offset, stop), n_features, params)


#: A task of the streamed E-step reads its group of chunks in one Zarr read up to this many
#: packed bytes, else a chunk at a time (wide rows: 8 chunks of 4,096 rows of 100,000 features
#: would be 400 MB at once).
GROUP_READ_BYTES = 64 << 20


def _read_estep_group(
    reader: Callable[[int, int], NDArray[np.uint8]],
    bounds: list[int],
    n_features: int,
    params: dict[str, Any],
) -> dict[str, Any]:
    """Read consecutive chunks and return the sum of their statistics: exactly what a task per
    chunk followed by one ``combine_stats`` of the tree computes, in one task. The sum is
    kept as it goes, in the same order, so that only two chunks' statistics are held at once."""
    at_once = (bounds[-1] - bounds[0]) * n_packed_bytes(n_features) <= GROUP_READ_BYTES
    packed = reader(bounds[0], bounds[-1]) if at_once else None
    total = None
    for start, stop in itertools.pairwise(bounds):
        rows = packed[start - bounds[0] : stop - bounds[0]] if packed is not None else None
        part = _estep_task(reader(start, stop) if rows is None else rows, n_features, params)
        total = part if total is None else _combine([total, part])
    return total


def _cluster_threads() -> int:
    """Threads that run tasks: those of the distributed cluster in use, or of this machine."""
    client = current_client()
    if client is None:
        return os.cpu_count() or 1
    return max(1, sum(client.nthreads().values()))


def _estep_graph(
    data: PackedData,
    W: NDArray[Any],
    b: NDArray[Any],
    split_every: int,
    threads: int | None = None,
    sizes: list[int] | None = None,
    entropy: bool = False,
) -> list[Delayed]:
    """One E-step as a graph: one task per chunk, then a tree of sums down to at most
    ``split_every`` partial sums, which the driver adds (fetching them straight from the workers
    that hold them costs less than one more task and transfer on the cluster).

    Streamed data with enough chunks for every thread to get two groups of ``split_every``
    has no task per chunk: each task of the tree's first level reads its group of chunks itself
    (one Zarr read) and computes their statistics and their sum. The sums are the same, bit for
    bit, as with one task per chunk; there are ``split_every`` times fewer tasks to schedule and
    no statistics to move between workers before the second level, which makes iterations on
    large stores faster (benchmarks/bench_out_of_core.py).

    The keys are new every time, even for parameters seen before (EM at a fixed point): a
    distributed scheduler may still be forgetting the keys of the last iteration.
    """
    token = uuid.uuid4().hex
    layer: dict[Any, Any] = {}
    params: Any = {"W": W, "b": b}
    if sizes is not None:
        params.update(sizes=list(sizes), entropy=entropy)
    if W.nbytes + b.nbytes > INLINE_PARAMETERS:  # one task, fetched once by each worker
        layer[f"bmm-params-{token}"] = params
        params = f"bmm-params-{token}"
    level = []
    offsets = [int(o) for o in np.cumsum((0, *data.bits.chunks[0]))]
    n_groups = -(-(len(offsets) - 1) // split_every)
    if threads is None and data.reader is not None and n_groups > 1:
        threads = _cluster_threads()
    if data.sparse is not None and split_every == SPLIT_EVERY:
        for j, held in enumerate(data.sparse):  # held in groups: the tree's first level
            level.append((f"bmm-estep-{token}", j))
            layer[level[-1]] = (_held_group_task, held.key, data.n_features, params)
    elif data.reader is not None and n_groups > 1 and n_groups >= 2 * (threads or 1):
        for j in range(n_groups):  # streamed in groups: the first level of the tree reads
            level.append((f"bmm-estep-{token}", j))
            bounds = offsets[j * split_every : (j + 1) * split_every + 1]
            layer[level[-1]] = (
                _read_estep_group,
                data.reader,
                bounds,
                data.n_features,
                params,
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
                    offsets[i],
                )
            else:
                layer[level[-1]] = (_estep_task, key, data.n_features, params)
    depth = 0
    while len(level) > split_every:
        parents = []
        for j in range(0, len(level), split_every):
            parents.append((f"bmm-combine-{token}", depth, j // split_every))
            layer[parents[-1]] = (_combine, level[j : j + split_every])
        level, depth = parents, depth + 1
    dependencies: list[Any] = [] if data.reader is not None else [data.bits]
    if data.sparse is not None and split_every == SPLIT_EVERY:
        dependencies = list(data.sparse)
    graph = HighLevelGraph.from_collections(f"bmm-estep-{token}", layer, dependencies=dependencies)
    return [Delayed(key, graph, layer=f"bmm-estep-{token}") for key in level]


def estep(
    data: PackedData,
    means: NDArray[np.float64],
    weights: NDArray[np.float64],
    *,
    dtype: np.typing.DTypeLike = np.float32,
    split_every: int = SPLIT_EVERY,
    threads: int | None = None,
) -> dict[str, Any]:
    """Run one E-step over all chunks (one ``compute``) and return the summed statistics.

    Parameters
    ----------
    data : PackedData
        Packed rows.
    means : ndarray of shape (n_components, n_features)
        Bernoulli means.
    weights : ndarray of shape (n_components,)
        Mixing weights.
    dtype : dtype, default=np.float32
        Type of the arithmetic, float32 (for speed) or float64 (for exactness); the sums are
        in float64 either way.
    split_every : int, default=SPLIT_EVERY
        Statistics of at most this many blocks are added in one task of the tree of sums.
    threads : int, default=None
        Worker threads of the cluster in use; None asks the cluster (a round trip to the
        scheduler, which a loop of E-steps does once, not every iteration).

    Returns
    -------
    dict
        The statistics of :func:`~bmm_dask._kernels.estep_stats` summed over all rows:
        ``resp_sum`` of shape (n_components,), ``resp_x`` of shape (n_components, n_features),
        ``loglik`` and ``n_samples``.
    """
    W, b = log_parameters(means, weights, dtype)
    parts = dask.compute(*_estep_graph(data, W, b, split_every, threads))
    return combine_stats(list(parts))


def estep_stacked(
    data: PackedData,
    models: list[tuple[NDArray[np.float64], NDArray[np.float64]]],
    *,
    dtype: np.typing.DTypeLike = np.float32,
    split_every: int = SPLIT_EVERY,
    threads: int | None = None,
    entropy: bool = False,
) -> list[dict[str, Any]]:
    """One E-step of several models in one pass over the rows (one ``compute``).

    Each task reads and unpacks its rows once and computes every model's statistics with one
    product of the rows and the models' parameters stacked
    (:func:`~bmm_dask._kernels.stacked_stats`).

    Parameters
    ----------
    data : PackedData
        Packed rows.
    models : list of (means, weights)
        Each model's means, of shape (n_components, n_features), and weights.
    dtype : dtype, default=np.float32
        Type of the arithmetic.
    split_every : int, default=SPLIT_EVERY
        Statistics of at most this many blocks are added in one task of the tree of sums.
    threads : int, default=None
        Worker threads of the cluster in use; None asks the cluster.
    entropy : bool, default=False
        Also sum, per model, the entropy of the rows' responsibilities (``entropy``).

    Returns
    -------
    list of dict
        Per model, in order, what :func:`estep` returns for it.
    """
    params = [log_parameters(means, weights, dtype) for means, weights in models]
    W = np.vstack([W for W, _ in params])
    b = np.concatenate([b for _, b in params])
    sizes = [len(weights) for _, weights in models]
    graph = _estep_graph(data, W, b, split_every, threads, sizes, entropy)
    return _combine(list(dask.compute(*graph)))


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
    """Lazy per-row results: log-likelihoods, responsibilities, or most likely components.

    Parameters
    ----------
    data : PackedData
        Packed rows.
    means : ndarray of shape (n_components, n_features)
        Bernoulli means.
    weights : ndarray of shape (n_components,)
        Mixing weights.
    what : {"score", "proba", "label", "score_label"}
        Which result: log-likelihoods, responsibilities, most likely components, or
        log-likelihood and component side by side from one pass.
    dtype : dtype, default=np.float64
        Type of the arithmetic.

    Returns
    -------
    dask.array.Array
        Chunked like ``data``'s rows: of shape (n_samples,), float64, for "score";
        (n_samples, n_components), float64, for "proba"; (n_samples,), intp, for "label";
        (n_samples, 2), float64, for "score_label".
    """
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
