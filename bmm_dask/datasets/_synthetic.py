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

#: A sparse mixture's components each raise a few features far above their rates: the factor
#: per component and feature is Gamma(SPARSE_SHAPE) with mean 1, most of them near 0.
SPARSE_SHAPE = 0.2


def synth_parameters(
    n_features: int, n_components: int, seed: int, density: float | None = None
) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """The mixture that :func:`synth` draws from: means on a 1/256 grid, and weights.

    Means follow Beta(0.5, 0.5) (mostly near 0 or 1, like pen strokes), rounded to k / 256 with
    k in 1..255; weights follow a Dirichlet(5) so no component is vanishingly rare.

    With ``density``, a sparse mixture, like words in documents: each feature has a rate
    (Zipf-like: ``density * 2 / (1 + rank / 50)`` scaled to average ``density``), each component
    multiplies it by a factor drawn from Gamma(``SPARSE_SHAPE``) with mean 1 (so it raises a
    few features far above their rates), at most 0.5; on the grid no mean is below 1/256, so
    the share of ones is about ``max(density, 1/256)`` plus the raised features'.

    Parameters
    ----------
    n_features : int
        Number of features D.
    n_components : int
        Number of components K.
    seed : int
        Seed of the draws.
    density : float, default=None
        The mean of the features' rates, in (0, 0.5]: a sparse mixture; None for Beta(0.5, 0.5)
        means.

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
    factors = rng.gamma(SPARSE_SHAPE, 1 / SPARSE_SHAPE, size=(n_components, n_features))
    return _on_grid(np.minimum(rates * factors, 0.5)), weights


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


def _check_synth_memory(
    n_features: int, n_components: int, chunk_rows: int, mixture: str | None = None
) -> None:
    """Refuse sizes whose mixture and chunks in flight cannot fit in this machine's memory.

    ``mixture`` says where the means come from in the message (the model they are read from);
    None names the --k and --d settings.
    """
    from bmm_dask.memory import check_fits

    # The means are drawn in float64 and put on the grid (three such arrays at once); each
    # chunk being drawn holds a block of random bytes, the rows as bool, and their gathered
    # levels; Dask draws one chunk per core.
    cores = os.cpu_count() or 1
    per_chunk = (rng_block_rows(n_features) + 3 * chunk_rows) * n_features
    need = 25 * n_components * n_features + cores * per_chunk
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
    rounded to multiples of 1/256 and kept within [1/256, 255/256], and the weights are stored
    with the data as ``true_means`` and ``true_weights``, and the component of each row as
    ``labels``. The rows depend on the mixture, ``seed`` and the row index only: any chunking
    or scheduler gives the same data.

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
        Rows per chunk; None means about 1 MiB of packed rows.
    image_shape : sequence of int, default=None
        The shape of an image, recorded with the data; its product must be ``n_features``.
        None means the model's with ``like`` (if it records one), else no shape.
    density : float, default=None
        Draw a sparse mixture of about this share of ones (:func:`synth_parameters`), in
        (0, 0.5]; not with ``like``, ``means`` or ``weights``.
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
        like is not None or means is not None or isinstance(density, bool) or not 0 < density <= 0.5
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
    _check_synth_memory(n_features, n_components, parse_chunk_rows(chunk_rows, n_features), mixture)
    if means is None or weights is None:
        default_means, default_weights = synth_parameters(n_features, n_components, seed, density)
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
    # Summing to 1 within isclose is not within what Generator.choice accepts (1.5e-8): scale
    # them (weights that sum to exactly 1 are left as they are).
    weights = weights / weights.sum()
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
        da.store([bits, labels], [writer.bits, writer.labels], lock=False)
    return Path(out)
