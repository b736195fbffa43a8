"""Synthetic data: rows drawn from a known Bernoulli mixture, for tests and benchmarks."""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import dask
import dask.array as da
import numpy as np
from numpy.typing import NDArray

from bmm_dask._kernels import n_packed_bytes, pack_bits
from bmm_dask.datasets._random import block_rngs, rng_block_rows
from bmm_dask.errors import SettingsError, setting
from bmm_dask.io import (
    DatasetWriter,
    atomic_output,
    parse_chunk_rows,
)


def synth_parameters(
    n_features: int, n_components: int, seed: int
) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """The mixture that :func:`synth` draws from: means on a 1/256 grid, and weights.

    Means follow Beta(0.5, 0.5) (mostly near 0 or 1, like pen strokes), rounded to k / 256 with
    k in 1..255; weights follow a Dirichlet(5) so no component is vanishingly rare.

    Parameters
    ----------
    n_features : int
        Number of features D.
    n_components : int
        Number of components K.
    seed : int
        Seed of the draws.

    Returns
    -------
    means : ndarray of shape (n_components, n_features)
    weights : ndarray of shape (n_components,)
    """
    rng = np.random.default_rng([seed, 0])
    weights = rng.dirichlet(np.full(n_components, 5.0))
    means = rng.beta(0.5, 0.5, size=(n_components, n_features))
    return _on_grid(means), weights


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
    levels: NDArray[np.uint8],
    weights: NDArray[np.float64],
    seed: int,
    dtype: np.dtype[Any],
    block_info: Any = None,
) -> NDArray[Any]:
    start, stop = block_info[None]["array-location"][0]
    n_components = len(weights)
    rows_a_block = rng_block_rows(levels.shape[1])
    out = np.empty(stop - start, dtype=dtype)
    for rng, block_rows, rows in block_rngs(start, stop, rows_a_block, (seed, 1)):
        out[rows] = rng.choice(n_components, size=rows_a_block, p=weights)[block_rows]
    return out


def _check_synth_memory(n_features: int, n_components: int, chunk_rows: int) -> None:
    """Refuse sizes whose mixture and chunks in flight cannot fit in this machine's memory."""
    from bmm_dask.memory import check_fits

    # The means are drawn in float64 and put on the grid (three such arrays at once); each
    # chunk being drawn holds a block of random bytes, the rows as bool, and their gathered
    # levels; Dask draws one chunk per core.
    cores = os.cpu_count() or 1
    per_chunk = (rng_block_rows(n_features) + 3 * chunk_rows) * n_features
    need = 25 * n_components * n_features + cores * per_chunk
    check_fits(
        need,
        f"{setting('--k')} {n_components} means of {setting('--d')} {n_features:,} features, "
        "with a chunk of "
        f"{chunk_rows:,} row{'s' if chunk_rows > 1 else ''} drawn on each of {cores} cores,",
    )


def synth(
    out: str | os.PathLike[str],
    *,
    n_samples: int,
    n_features: int,
    n_components: int,
    seed: int = 0,
    means: NDArray[np.float64] | None = None,
    weights: NDArray[np.float64] | None = None,
    chunk_rows: int | None = None,
    image_shape: Sequence[int] | None = None,
    overwrite: bool = False,
) -> Path:
    """Write rows drawn from a known Bernoulli mixture, chunk by chunk in parallel with Dask.

    The true means (rounded to multiples of 1/256) and weights are stored with the data as
    ``true_means`` and ``true_weights``, and the component of each row as ``labels``. The rows
    depend on ``seed`` and the row index only: any chunking or scheduler gives the same data.

    Parameters
    ----------
    out : str or path-like
        The dataset to write (a local folder).
    n_samples : int
        Number of rows, at least 1.
    n_features : int
        Number of features, at least 1.
    n_components : int
        Number of components, at least 1.
    seed : int, default=0
        Seed of the mixture (unless given) and of the draws.
    means : ndarray of shape (n_components, n_features), default=None
        The mixture's means, rounded to multiples of 1/256; None means those of
        :func:`synth_parameters`.
    weights : ndarray of shape (n_components,), default=None
        The mixture's weights, non-negative and summing to 1; None means those of
        :func:`synth_parameters`.
    chunk_rows : int, default=None
        Rows per chunk; None means about 1 MiB of packed rows.
    image_shape : sequence of int, default=None
        The shape of an image, recorded with the data; its product must be ``n_features``.
    overwrite : bool, default=False
        Replace ``out`` if it exists.

    Returns
    -------
    pathlib.Path
        ``out``.

    Raises
    ------
    SettingsError
        If a size or the seed is out of range, ``means``, ``weights`` or ``image_shape`` do not
        fit the sizes, the weights are not a distribution, or the mixture and the chunks being
        drawn need more memory than this machine has.
    OutputError
        If ``out`` exists and ``overwrite`` is false, or cannot be written.
    """
    for name, value, least in (
        ("n", n_samples, 1),
        ("d", n_features, 1),
        ("k", n_components, 1),
        ("seed", seed, 0),
    ):
        if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < least:
            raise SettingsError(
                f"--{name} must be a whole number of at least {least}; got {value!r}"
            )
    _check_synth_memory(n_features, n_components, parse_chunk_rows(chunk_rows, n_features))
    if means is None or weights is None:
        default_means, default_weights = synth_parameters(n_features, n_components, seed)
        means = default_means if means is None else means
        weights = default_weights if weights is None else weights
    means = _on_grid(means)
    weights = np.asarray(weights, dtype=np.float64)
    if means.shape != (n_components, n_features) or weights.shape != (n_components,):
        raise SettingsError(
            f"means must have shape ({n_components}, {n_features}) and weights ({n_components},); "
            f"got {means.shape} and {weights.shape}"
        )
    if (weights < 0).any() or not np.isclose(weights.sum(), 1.0):
        raise SettingsError("weights must be non-negative and sum to 1")
    if image_shape is not None and math.prod(image_shape) != n_features:
        raise SettingsError(f"image shape {tuple(image_shape)} does not hold {n_features} features")
    rows = parse_chunk_rows(chunk_rows, n_features)
    levels = np.rint(means * 256).astype(np.uint8)
    labels_dtype = np.min_scalar_type(n_components - 1)
    row_chunks = da.core.normalize_chunks((rows,), (n_samples,))[0]
    token = dask.base.tokenize(levels, weights, seed, row_chunks)
    bits = da.map_blocks(
        _synth_bits_block,
        levels,
        weights,
        seed,
        chunks=(row_chunks, (n_packed_bytes(n_features),)),
        dtype=np.uint8,
        meta=np.empty((0, 0), dtype=np.uint8),
        name=f"bmm-synth-bits-{token}",
    )
    labels = da.map_blocks(
        _synth_labels_block,
        levels,
        weights,
        seed,
        labels_dtype,
        chunks=(row_chunks,),
        dtype=labels_dtype,
        meta=np.empty((0,), dtype=labels_dtype),
        name=f"bmm-synth-labels-{token}",
    )
    attrs = {
        "image_shape": list(image_shape) if image_shape is not None else None,
        "binarization": {"method": "none"},
        "source": {"synthetic": {"n_components": n_components, "seed": seed}},
    }
    with atomic_output(out, overwrite=overwrite) as tmp:
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
        da.store([bits, labels], [writer.bits, writer.labels], lock=False)
    return Path(out)
