"""Synthetic data: rows drawn from a known Bernoulli mixture, for tests and benchmarks."""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import dask
import dask.array as da
import numpy as np
from numpy.typing import NDArray

from bmm_dask._kernels import count_ones, n_packed_bytes, pack_bits
from bmm_dask.datasets._random import block_rngs, rng_block_rows, sparse_block_rows
from bmm_dask.errors import SettingsError, setting
from bmm_dask.io import (
    MAX_CHUNKS,
    DatasetWriter,
    atomic_output,
    default_chunk_rows,
    parse_chunk_rows,
)

#: A sparse mixture's components each raise a few features far above their rates: the factor
#: per component and feature is Gamma(SPARSE_SHAPE) with mean 1, most of them near 0.
SPARSE_SHAPE = 0.2

#: A sparse mixture's means lie in [SPARSE_FLOOR, SPARSE_CAP]: off the 1/256 grid, so that a
#: feature can be rarer than 1 row in 256 (a word in 1 document of 10,000).
SPARSE_FLOOR = 1e-6
SPARSE_CAP = 0.5


def synth_parameters(
    n_features: int, n_components: int, seed: int, density: float | None = None
) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """The mixture that :func:`synth` draws from: means and weights.

    Weights follow a Dirichlet(5) so no component is vanishingly rare. Means follow
    Beta(0.5, 0.5) (mostly near 0 or 1, like pen strokes), rounded to k / 256 with k in 1..255.

    With ``density``, a sparse mixture, like words in documents, off the grid: each feature
    has a Zipf-like rate (proportional to ``1 / (1 + rank / 50)``), each component multiplies
    it by a factor drawn from Gamma(``SPARSE_SHAPE``) with mean 1 (so it raises a few features
    far above their rates), and the means are ``clip(scale * rate * factor, SPARSE_FLOOR,
    SPARSE_CAP)`` with the one scale that makes the share of ones the mixture draws (the
    weights-weighted mean of its means) ``density``, where the floor and cap allow it: a
    ``density`` under ``SPARSE_FLOOR`` gives the floor, and one near the cap as close to it as
    the factors near 0 allow.

    Parameters
    ----------
    n_features : int
        Number of features D.
    n_components : int
        Number of components K.
    seed : int
        Seed of the draws.
    density : float, default=None
        The share of ones, in (0, 0.5]: a sparse mixture; None for Beta(0.5, 0.5) means.

    Returns
    -------
    means : ndarray of shape (n_components, n_features)
    weights : ndarray of shape (n_components,)
    """
    rng = np.random.default_rng([seed, 0])
    weights = rng.dirichlet(np.full(n_components, 5.0))
    if density is None:
        means = rng.beta(0.5, 0.5, size=(n_components, n_features))
        return _on_grid(means), weights
    rates = 1 / (1 + rng.permutation(n_features) / 50)
    rates *= density / rates.mean()
    raw = rng.gamma(SPARSE_SHAPE, 1 / SPARSE_SHAPE, size=(n_components, n_features))
    raw *= rates
    return _scaled_to_share(raw, weights, density), weights


def _scaled_to_share(
    raw: NDArray[np.float64], weights: NDArray[np.float64], share: float
) -> NDArray[np.float64]:
    """``clip(scale * raw, SPARSE_FLOOR, SPARSE_CAP)`` for the scale whose weighted mean of
    means (``weights @ means.mean(axis=1)``) is ``share``, or as near as the clip allows.

    The mean is piecewise linear in the scale, rising, and concave above the floor: Newton's
    steps reach it from below in a few steps (2 or 3 where the cap clips few means).
    """
    scale = 1.0
    for _ in range(50):
        means = np.clip(scale * raw, SPARSE_FLOOR, SPARSE_CAP)
        error = share - float(weights @ means.mean(axis=1))
        if abs(error) <= 1e-9 * share:
            break
        free = (means > SPARSE_FLOOR) & (means < SPARSE_CAP)
        slope = float(weights @ np.where(free, raw, 0.0).mean(axis=1))
        if slope <= 0:
            break  # every mean at the floor or the cap: no scale does better
        scale = max(scale + error / slope, scale / 16)
    return means


def _on_grid(means: NDArray[np.float64]) -> NDArray[np.float64]:
    return np.clip(np.rint(np.asarray(means, dtype=np.float64) * 256), 1, 255) / 256


def _synth_rows(
    start: int, stop: int, levels: NDArray[np.uint8], weights: NDArray[np.float64], seed: int
) -> tuple[NDArray[np.bool_], NDArray[np.int64]]:
    """Rows ``start:stop`` of the synthetic data: bits (rows, D) and components (rows)."""
    n_components, n_features = levels.shape
    rows_a_block = rng_block_rows(n_features)
    bits = np.empty((stop - start, n_features), dtype=bool)
    components = np.empty(stop - start, dtype=np.int64)
    for rng, block_rows, rows in block_rngs(start, stop, rows_a_block, (seed, 1)):
        z = rng.choice(n_components, size=rows_a_block, p=weights)[block_rows]
        noise = np.frombuffer(rng.bytes(rows_a_block * n_features), dtype=np.uint8)
        noise = noise.reshape(rows_a_block, n_features)[block_rows]
        np.less(noise, levels[z], out=bits[rows])
        components[rows] = z
    return bits, components


def _synth_bits_block(
    levels: NDArray[np.uint8], weights: NDArray[np.float64], seed: int, block_info: Any = None
) -> NDArray[np.uint8]:
    start, stop = block_info[None]["array-location"][0]
    return pack_bits(_synth_rows(start, stop, levels, weights, seed)[0])


def _synth_labels_block(
    weights: NDArray[np.float64],
    rows_a_block: int,
    seed: int,
    dtype: np.dtype[Any],
    block_info: Any = None,
) -> NDArray[Any]:
    start, stop = block_info[None]["array-location"][0]
    n_components = len(weights)
    out = np.empty(stop - start, dtype=dtype)
    for rng, block_rows, rows in block_rngs(start, stop, rows_a_block, (seed, 1)):
        out[rows] = rng.choice(n_components, size=rows_a_block, p=weights)[block_rows]
    return out


@dataclass(frozen=True)
class _SparseBin:
    """The cells (component, feature) of a sparse mixture whose means lie in (level/2, level].

    ``features[starts[k]:starts[k] + counts[k]]`` are component k's features in the bin
    (ascending), and ``keep`` their ``mean / level``, the chance that a candidate is kept.
    """

    level: float
    counts: NDArray[np.int64]
    starts: NDArray[np.int64]
    features: NDArray[np.int32]
    keep: NDArray[np.float64]


@dataclass(frozen=True)
class _SparseMixture:
    """A mixture prepared for drawing rows in proportion to their ones (:func:`_sparse_cells`)."""

    weights: NDArray[np.float64]
    n_features: int
    rows_a_block: int
    bins: tuple[_SparseBin, ...]

    @classmethod
    def from_means(
        cls, means: NDArray[np.float64], weights: NDArray[np.float64], rows_a_block: int
    ) -> _SparseMixture:
        """Bin the cells by their means' power of two: mean in (2**(e - 1), 2**e]."""
        n_components, n_features = means.shape
        fraction, exponent = np.frexp(means)  # means = fraction * 2**exponent, fraction in [.5, 1)
        exponent -= fraction == 0.5  # a power of two is the top of its bin, not the bottom
        exponent[means <= 0] = 1  # never a one: in no bin (means are at most 1: exponents <= 0)
        bins = []
        for e in np.unique(exponent)[::-1]:
            if e > 0:
                continue
            components, features = np.nonzero(exponent == e)
            counts = np.bincount(components, minlength=n_components).astype(np.int64)
            level = math.ldexp(1.0, int(e))
            bins.append(
                _SparseBin(
                    level=level,
                    counts=counts,
                    starts=np.cumsum(counts) - counts,
                    features=features.astype(np.int32),
                    keep=means[components, features] / level,
                )
            )
        return cls(weights, n_features, rows_a_block, tuple(bins))


def _bernoulli_positions(rng: np.random.Generator, p: float, n_cells: int) -> NDArray[np.int64]:
    """The cells that are one among ``n_cells`` Bernoulli(``p``) cells, ascending, drawn as
    geometric gaps: work in proportion to the ones, not the cells."""
    expected = n_cells * p
    size = int(expected + 5 * math.sqrt(expected) + 8)  # one draw almost always covers them
    positions = np.cumsum(rng.geometric(p, size)) - 1
    while positions[-1] < n_cells:
        positions = np.concatenate([positions, positions[-1] + np.cumsum(rng.geometric(p, size))])
    return positions[: np.searchsorted(positions, n_cells)]


def _sparse_cells(
    rng: np.random.Generator, mixture: _SparseMixture
) -> tuple[NDArray[np.int64], NDArray[np.int64]]:
    """The ones of a block of ``mixture.rows_a_block`` rows: (row, feature) pairs.

    Each row's component is drawn first (as the labels draw it), then each cell
    (row, feature) is one with probability ``means[component, feature]``, exactly, at a cost
    in proportion to the ones: for each bin of means in (level/2, level], candidate cells of
    the grid (rows of component k x k's features in the bin, for every k, laid end to end)
    are drawn Bernoulli(level) by geometric gaps, and each is kept with chance mean / level.

    Returns
    -------
    rows : ndarray of shape (n_ones,)
        Row of each one in the block, from 0.
    features : ndarray of shape (n_ones,)
    """
    n_components = len(mixture.weights)
    z = rng.choice(n_components, size=mixture.rows_a_block, p=mixture.weights)
    order = np.argsort(z, kind="stable")  # the rows of component 0, then 1, ...
    n_rows = np.bincount(z, minlength=n_components)
    first_row = np.cumsum(n_rows) - n_rows
    rows, features = [], []
    for cells in mixture.bins:
        sizes = n_rows * cells.counts
        ends = np.cumsum(sizes)
        if ends[-1] == 0:
            continue
        positions = _bernoulli_positions(rng, cells.level, int(ends[-1]))
        k = np.searchsorted(ends, positions, side="right")
        row, column = np.divmod(positions - (ends[k] - sizes[k]), cells.counts[k])
        cell = cells.starts[k] + column
        kept = rng.random(len(positions)) < cells.keep[cell]
        rows.append(order[first_row[k[kept]] + row[kept]])
        features.append(cells.features[cell[kept]])
    if not rows:
        return np.empty(0, dtype=np.int64), np.empty(0, dtype=np.int64)
    return np.concatenate(rows), np.concatenate(features).astype(np.int64)


def _synth_sparse_bits_block(
    mixture: _SparseMixture, seed: int, block_info: Any = None
) -> NDArray[np.uint8]:
    """Packed rows of a chunk of a sparse mixture, set bit by bit from the ones' indices (in
    :func:`numpy.packbits`' order: feature j is bit ``7 - j % 8`` of byte ``j // 8``)."""
    start, stop = block_info[None]["array-location"][0]
    row_bytes = n_packed_bytes(mixture.n_features)
    packed = np.zeros((stop - start, row_bytes), dtype=np.uint8)
    for rng, block_rows, rows in block_rngs(start, stop, mixture.rows_a_block, (seed, 1)):
        row, feature = _sparse_cells(rng, mixture)
        if block_rows.stop - block_rows.start < mixture.rows_a_block:
            inside = (row >= block_rows.start) & (row < block_rows.stop)
            row, feature = row[inside], feature[inside]
        row += rows.start - block_rows.start
        # the ones are distinct cells, but two of them may share a byte: or-ed, not assigned
        np.bitwise_or.at(
            packed.reshape(-1),
            row * row_bytes + (feature >> 3),
            (128 >> (feature & 7)).astype(np.uint8),
        )
    return packed


def sparse_chunk_rows(n_features: int, ones_a_row: float, rows_a_block: int) -> int:
    """Rows per chunk of sparse synthetic rows.

    An E-step unpacks a chunk to the indices of its ones, and returns K x D sums whatever its
    rows: a chunk should hold many ones, not 1 MiB of mostly zero bytes (80 rows of 100,000
    features). So: rows whose ones (``ones_a_row`` each) make about 1 MiB as 4-byte indices,
    no fewer than :func:`~bmm_dask.io.default_chunk_rows`, and no more than 64 MiB of packed
    rows (the chunk in memory, while drawn and read); then whole random streams of
    ``rows_a_block`` rows (none drawn twice) where a chunk holds one.

    >>> sparse_chunk_rows(1_000_000, 100.0, 1024), sparse_chunk_rows(784, 0.784, 65536)
    (536, 327680)
    """
    row_bytes = n_packed_bytes(n_features)
    by_ones = min(int((1 << 18) / ones_a_row), (64 << 20) // row_bytes)
    rows = max(default_chunk_rows(n_features), by_ones, 1)
    return rows - rows % rows_a_block if rows >= rows_a_block else rows


def _check_synth_memory(
    n_features: int,
    n_components: int,
    chunk_rows: int,
    mixture: str | None = None,
    sparse_block: tuple[float, int] | None = None,
) -> None:
    """Refuse sizes whose mixture and chunks in flight cannot fit in this machine's memory.

    ``mixture`` says where the means come from in the message (the model they are read from);
    None names the --k and --d settings. ``sparse_block`` is (ones a row, rows a random
    stream) for rows drawn in proportion to their ones; None for rows drawn cell by cell.
    """
    from bmm_dask.memory import check_fits

    cores = os.cpu_count() or 1
    if sparse_block is None:
        # The means are drawn in float64 and put on the grid (three such arrays at once); each
        # chunk being drawn holds a block of random bytes, the rows as bool, and their
        # gathered levels; Dask draws one chunk per core.
        per_chunk = (rng_block_rows(n_features) + 3 * chunk_rows) * n_features
        need = 25 * n_components * n_features + cores * per_chunk
    else:
        # The means are drawn and scaled in float64 (about four such arrays at once), then
        # binned (the means, and a feature index and a chance per cell: 36 bytes a cell at
        # the peak, measured); each chunk being drawn holds its packed rows, twice while
        # written, and a random stream's candidate cells (about 35 bytes a one, measured).
        ones_a_row, rows_a_block = sparse_block
        per_chunk = 2 * chunk_rows * n_packed_bytes(n_features) + 40 * ones_a_row * rows_a_block
        need = 36 * n_components * n_features + cores * per_chunk
    if mixture is None:
        mixture = (
            f"{setting('--k')} {n_components} means of {setting('--d')} {n_features:,} features"
        )
    check_fits(
        need,
        f"{mixture}, with a chunk of "
        f"{chunk_rows:,} row{'s' if chunk_rows > 1 else ''} drawn on each of {cores} cores,",
    )


def _model_mixture(
    like: str | os.PathLike[str], n_features: int | None, n_components: int | None
) -> tuple[NDArray[np.float64], NDArray[np.float64], tuple[int, ...] | None]:
    """The means, weights and image shape of the fitted model at ``like``, checked against the
    sizes asked for (None: take the model's)."""
    from bmm_dask.io import read_model

    means, weights, attrs = read_model(like)
    n_model_components, n_model_features = means.shape
    for flag, asked, found, what in (
        ("--d", n_features, n_model_features, "features"),
        ("--k", n_components, n_model_components, "components"),
    ):
        if asked is not None and asked != found:
            raise SettingsError(
                f"{setting(flag)} {asked} does not match {like}, a model of {found} {what}; "
                f"leave {setting(flag)} out to take the model's"
            )
    data = attrs.get("data")
    shape = data.get("image_shape") if isinstance(data, dict) else None
    image_shape = None
    if (
        isinstance(shape, list)
        and all(isinstance(n, int) and n >= 1 for n in shape)
        and math.prod(shape) == n_model_features
    ):
        image_shape = tuple(shape)
    return means, weights, image_shape


def synth(
    out: str | os.PathLike[str],
    *,
    n_samples: int,
    n_features: int | None = None,
    n_components: int | None = None,
    seed: int = 0,
    like: str | os.PathLike[str] | None = None,
    means: NDArray[np.float64] | None = None,
    weights: NDArray[np.float64] | None = None,
    chunk_rows: int | None = None,
    image_shape: Sequence[int] | None = None,
    density: float | None = None,
    overwrite: bool = False,
) -> Path:
    """Write rows drawn from a known Bernoulli mixture, chunk by chunk in parallel with Dask.

    The mixture is drawn from ``seed`` (:func:`synth_parameters`), given as ``means`` and
    ``weights``, or read from a fitted model (``like``), so that data shaped like that a model
    was fitted on (MNIST, say) can be made in any amount. The means the rows are drawn from,
    rounded to multiples of 1/256 and kept within [1/256, 255/256] (except a sparse mixture's,
    with ``density``, which lie in [``SPARSE_FLOOR``, ``SPARSE_CAP``] as drawn), and the
    weights are stored with the data as ``true_means`` and ``true_weights``, and the component
    of each row as ``labels``. The rows depend on the mixture, ``seed`` and the row index only:
    any chunking or scheduler gives the same data.

    A sparse mixture's rows are drawn at a cost in proportion to their ones, not their cells
    (each cell still a one with exactly its mean's chance), and set bit by bit in the packed
    chunk: 10^6 rows of 10^5 features at 0.1 % ones take minutes, not hours.

    Parameters
    ----------
    out : str or path-like
        The dataset to write (a local folder).
    n_samples : int
        Number of rows, at least 1.
    n_features : int, default=None
        Number of features, at least 1; needed unless ``like`` is given, and then, if given,
        must be the model's.
    n_components : int, default=None
        Number of components, at least 1; needed unless ``like`` is given, and then, if given,
        must be the model's.
    seed : int, default=0
        Seed of the mixture (unless given or read from ``like``) and of the draws.
    like : str or path-like, default=None
        A model written by ``bmm-dask fit`` or :meth:`BernoulliMixture.save
        <bmm_dask.BernoulliMixture.save>`: the rows are drawn from its means and weights, and
        the image shape its data had (if it records one) is recorded with them. None means
        the mixture of ``seed``, or ``means`` and ``weights``.
    means : ndarray of shape (n_components, n_features), default=None
        The mixture's means, rounded to multiples of 1/256; None means those of
        :func:`synth_parameters` (or of ``like``).
    weights : ndarray of shape (n_components,), default=None
        The mixture's weights, non-negative and summing to 1; None means those of
        :func:`synth_parameters` (or of ``like``).
    chunk_rows : int, default=None
        Rows per chunk; None means about 1 MiB of packed rows, or with ``density`` about 1 MiB
        of the ones' indices (:func:`sparse_chunk_rows`).
    image_shape : sequence of int, default=None
        The shape of an image, recorded with the data; its product must be ``n_features``.
        None means the model's with ``like`` (if it records one), else no shape.
    density : float, default=None
        Draw a sparse mixture of this share of ones (:func:`synth_parameters`), in (0, 0.5];
        not with ``like``, ``means`` or ``weights``.
    overwrite : bool, default=False
        Replace ``out`` if it exists.

    Returns
    -------
    pathlib.Path
        ``out``.

    Raises
    ------
    SettingsError
        If a size or the seed is out of range, a size is missing without ``like`` or differs
        from the model's with it, ``like`` comes with ``means`` or ``weights``, ``means``,
        ``weights`` or ``image_shape`` do not fit the sizes, the weights are not a
        distribution, or the mixture and the chunks being drawn need more memory than this
        machine has.
    ModelFileError
        If ``like`` is not a readable bmm-dask model (missing, a dataset, damaged).
    OutputError
        If ``out`` exists and ``overwrite`` is false, is ``like`` or holds it, or cannot be
        written.
    """
    for name, value, least in (
        ("n", n_samples, 1),
        ("d", n_features, 1),
        ("k", n_components, 1),
        ("seed", seed, 0),
    ):
        if value is None and name in ("d", "k"):
            continue
        if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < least:
            raise SettingsError(
                f"--{name} must be a whole number of at least {least}; got {value!r}"
            )
    mixture = None
    if density is not None and (
        like is not None
        or means is not None
        or weights is not None
        or isinstance(density, bool)
        or not 0 < density <= 0.5
    ):
        raise SettingsError(
            f"{setting('--density')} must be in (0, 0.5], and draws a mixture of its own (not "
            f"with {setting('--like')}); got {density!r}"
        )
    if like is not None:
        if means is not None or weights is not None:
            raise SettingsError(
                "the mixture comes from the model given as like, or from means and weights; "
                "give one of them"
            )
        means, weights, model_shape = _model_mixture(like, n_features, n_components)
        n_components, n_features = means.shape
        if image_shape is None:
            image_shape = model_shape
        mixture = f"the {n_components} means of {n_features:,} features of {like}"
    elif n_features is None or n_components is None:
        raise SettingsError(
            f"{setting('--d')} and {setting('--k')} are needed unless the mixture comes from a "
            f"model ({setting('--like')})"
        )
    if density is None:
        rows_a_block = rng_block_rows(n_features)
        rows = parse_chunk_rows(chunk_rows, n_features, n_samples=n_samples)
        _check_synth_memory(n_features, n_components, rows, mixture)
    else:
        # Rows drawn in proportion to their ones, in random streams and chunks sized by them.
        ones_a_row = density * n_features
        rows_a_block = sparse_block_rows(ones_a_row)
        rows = parse_chunk_rows(
            max(
                sparse_chunk_rows(n_features, ones_a_row, rows_a_block), -(-n_samples // MAX_CHUNKS)
            )
            if chunk_rows is None
            else chunk_rows,
            n_features,
            n_samples=n_samples,
        )
        _check_synth_memory(
            n_features, n_components, rows, mixture, sparse_block=(ones_a_row, rows_a_block)
        )
    if means is None or weights is None:
        default_means, default_weights = synth_parameters(n_features, n_components, seed, density)
        means = default_means if means is None else means
        weights = default_weights if weights is None else weights
    means = _on_grid(means) if density is None else np.asarray(means, dtype=np.float64)
    weights = np.asarray(weights, dtype=np.float64)
    if means.shape != (n_components, n_features) or weights.shape != (n_components,):
        raise SettingsError(
            f"means must have shape ({n_components}, {n_features}) and weights ({n_components},); "
            f"got {means.shape} and {weights.shape}"
        )
    if (weights < 0).any() or not np.isclose(weights.sum(), 1.0):
        raise SettingsError("weights must be non-negative and sum to 1")
    # Summing to 1 within isclose is not within what Generator.choice accepts (1.5e-8): scale
    # them (weights that sum to exactly 1 are left as they are).
    weights = weights / weights.sum()
    if image_shape is not None and math.prod(image_shape) != n_features:
        raise SettingsError(f"image shape {tuple(image_shape)} does not hold {n_features} features")
    labels_dtype = np.min_scalar_type(n_components - 1)
    row_chunks = da.core.normalize_chunks((rows,), (n_samples,))[0]
    packed_chunks = (row_chunks, (n_packed_bytes(n_features),))
    packed_meta = np.empty((0, 0), dtype=np.uint8)
    if density is None:
        levels = np.rint(means * 256).astype(np.uint8)
        token = dask.base.tokenize(levels, weights, seed, row_chunks)
        bits = da.map_blocks(
            _synth_bits_block,
            levels,
            weights,
            seed,
            chunks=packed_chunks,
            dtype=np.uint8,
            meta=packed_meta,
            name=f"bmm-synth-bits-{token}",
        )
    else:
        token = dask.base.tokenize(means, weights, seed, row_chunks, rows_a_block)
        bits = da.map_blocks(
            _synth_sparse_bits_block,
            _SparseMixture.from_means(means, weights, rows_a_block),
            seed,
            chunks=packed_chunks,
            dtype=np.uint8,
            meta=packed_meta,
            name=f"bmm-synth-sparse-bits-{token}",
        )
    labels = da.map_blocks(
        _synth_labels_block,
        weights,
        rows_a_block,
        seed,
        labels_dtype,
        chunks=(row_chunks,),
        dtype=labels_dtype,
        meta=np.empty((0,), dtype=labels_dtype),
        name=f"bmm-synth-labels-{token}",
    )
    source: dict[str, Any] = {"n_components": n_components, "seed": seed}
    if density is not None:
        source["density"] = density
    if like is not None:
        path = os.fspath(like)  # absolute, as a model records its data's path; a URL as it is
        source["like"] = path if "://" in path else os.path.abspath(path)
    attrs = {
        "image_shape": list(image_shape) if image_shape is not None else None,
        "binarization": {"method": "none"},
        "source": {"synthetic": source},
    }
    with atomic_output(out, overwrite=overwrite, inputs=[like]) as tmp:
        writer = DatasetWriter.create(
            tmp,
            n_samples=n_samples,
            n_features=n_features,
            chunk_rows=rows,
            labels_dtype=labels_dtype,
            attrs=attrs,
        )
        writer.group.create_array("true_means", data=means)
        writer.group.create_array("true_weights", data=weights)
        assert writer.labels is not None
        stored = da.store([bits, labels], [writer.bits, writer.labels], lock=False, compute=False)
        # the ones counted as the chunks are written, in the same computation: what info shows
        ones = bits.map_blocks(
            _ones_of_block, chunks=((1,) * bits.numblocks[0], (1,)), dtype=np.int64
        ).sum()
        _, n_ones = dask.compute(stored, ones)
        writer.update_attrs(
            {"n_ones": int(n_ones), "density": int(n_ones) / (n_samples * n_features)}
        )
    return Path(out)


def _ones_of_block(block: NDArray[np.uint8]) -> NDArray[np.int64]:
    return np.array([[count_ones(block)]], dtype=np.int64)
