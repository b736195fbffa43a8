"""Synthetic data: rows from a known mixture, stored with its parameters, the same whatever the chunking."""

from __future__ import annotations

from pathlib import Path

import dask
import numpy as np
import pytest

from bmm_dask import SettingsError, open_dataset
from bmm_dask.datasets import synth, synth_parameters


def test_same_rows_whatever_the_chunking_and_scheduler(tmp_path: Path) -> None:
    kwargs = {"n_samples": 5000, "n_features": 50, "n_components": 4, "seed": 3}
    synth(tmp_path / "a.zarr", chunk_rows=5000, **kwargs)
    with dask.config.set(scheduler="synchronous"):
        synth(tmp_path / "b.zarr", chunk_rows=333, **kwargs)
    a, b = open_dataset(tmp_path / "a.zarr"), open_dataset(tmp_path / "b.zarr")
    assert b.bits.chunks[0][:2] == (333, 333)
    np.testing.assert_array_equal(a.bits.compute(), b.bits.compute())
    np.testing.assert_array_equal(a.labels.compute(), b.labels.compute())
    np.testing.assert_array_equal(a.read_array("true_means"), b.read_array("true_means"))
    synth(tmp_path / "c.zarr", **{**kwargs, "seed": 4})
    assert not np.array_equal(open_dataset(tmp_path / "c.zarr").bits.compute(), a.bits.compute())


def test_rows_follow_the_stored_mixture(tmp_path: Path) -> None:
    synth(tmp_path / "d.zarr", n_samples=60_000, n_features=37, n_components=5, seed=1)
    data = open_dataset(tmp_path / "d.zarr")
    means, weights = data.read_array("true_means"), data.read_array("true_weights")
    assert means.shape == (5, 37) and weights.shape == (5,)
    assert np.all((means > 0) & (means < 1))
    np.testing.assert_array_equal(means * 256, np.rint(means * 256))  # on the 1/256 grid
    assert weights.sum() == pytest.approx(1.0)
    X = data.unpacked().compute()
    z = data.labels.compute()
    assert data.n_features == 37 and X.shape == (60_000, 37)
    np.testing.assert_allclose(np.bincount(z, minlength=5) / len(z), weights, atol=0.01)
    for k in range(5):
        np.testing.assert_allclose(X[z == k].mean(axis=0), means[k], atol=0.05)


def test_given_means_and_weights(tmp_path: Path) -> None:
    means = np.array([[0.0, 1.0, 0.5], [1.0, 0.0, 0.25]])
    synth(
        tmp_path / "d.zarr",
        n_samples=20_000,
        n_features=3,
        n_components=2,
        means=means,
        weights=[0.25, 0.75],
    )
    data = open_dataset(tmp_path / "d.zarr")
    np.testing.assert_array_equal(
        data.read_array("true_means"), [[1 / 256, 255 / 256, 0.5], [255 / 256, 1 / 256, 0.25]]
    )
    X, z = data.unpacked().compute(), data.labels.compute()
    assert abs((z == 1).mean() - 0.75) < 0.01
    assert abs(X[z == 1, 2].mean() - 0.25) < 0.02


@pytest.mark.parametrize(
    "kwargs",
    [
        {"n_samples": 0, "n_features": 3, "n_components": 2},
        {"n_samples": 10, "n_features": 0, "n_components": 2},
        {"n_samples": 10, "n_features": 3, "n_components": 0},
        {"n_samples": 10, "n_features": 3, "n_components": 2, "seed": -1},
        {"n_samples": 10, "n_features": 3, "n_components": 2, "weights": [0.5, 0.6]},
        {"n_samples": 10, "n_features": 4, "n_components": 2, "image_shape": (3, 3)},
    ],
)
def test_bad_settings(tmp_path: Path, kwargs: dict) -> None:
    with pytest.raises(SettingsError):
        synth(tmp_path / "d.zarr", **kwargs)
    assert list(tmp_path.iterdir()) == []


def test_the_dense_mixture_draws_the_same_bits_as_before(tmp_path: Path) -> None:
    """Stored benchmarks were drawn from these bits: the mixture without a density is drawn
    cell by cell, bit for bit as it always was."""
    import hashlib

    synth(tmp_path / "d.zarr", n_samples=3000, n_features=100, n_components=3, seed=5)
    data = open_dataset(tmp_path / "d.zarr")
    digest = hashlib.sha256(data.bits.compute().tobytes()).hexdigest()
    assert digest[:16] == "d5fdcbab7ff1dee3"
    assert hashlib.sha256(data.labels.compute().tobytes()).hexdigest()[:16] == "0df7fc1fce258b47"


def test_sparse_rows_follow_the_stored_means(tmp_path: Path) -> None:
    """Rows drawn in proportion to their ones are still Bernoulli(mean) in every cell: per
    component and feature, and per bin of means (each thinned at its own rate), the counts of
    ones are those the stored means expect, within a generous margin (fixed seed)."""
    n_samples, n_features, n_components = 40_000, 403, 3  # 403: a padded last byte
    synth(
        tmp_path / "s.zarr",
        n_samples=n_samples,
        n_features=n_features,
        n_components=n_components,
        seed=7,
        density=0.03,
        chunk_rows=7000,
    )
    data = open_dataset(tmp_path / "s.zarr")
    packed = data.bits.compute()
    assert not (packed[:, -1] & 0b00011111).any()  # the padding bits are zero
    X = np.unpackbits(packed, axis=1, count=n_features).astype(bool)
    z = data.labels.compute()
    means, weights = data.read_array("true_means"), data.read_array("true_weights")
    np.testing.assert_allclose(np.bincount(z, minlength=3) / n_samples, weights, atol=0.01)
    counts = np.stack([X[z == k].sum(axis=0) for k in range(n_components)])
    expected = np.bincount(z, minlength=3)[:, None] * means
    # cells with enough expected ones, one by one: |z-score| under 5.5 (some 1,000 cells)
    sure = expected >= 20
    assert sure.sum() > 100
    score = (counts - expected) / np.sqrt(expected * (1 - means))
    assert np.abs(score[sure]).max() < 5.5
    assert abs(score[sure].mean()) < 0.2
    # every bin of means (level / 2, level], the rare ones pooled: within 5 standard deviations
    levels = np.exp2(np.ceil(np.log2(means)))
    for level in np.unique(levels):
        cells = levels == level
        assert abs(counts[cells].sum() - expected[cells].sum()) <= 5 * np.sqrt(
            expected[cells].sum() + 1
        ), level


def test_sparse_rows_are_the_same_whatever_the_chunking(tmp_path: Path, bmm) -> None:
    """The sparse draw is keyed by rows (random streams of 1,024 rows here, which chunks of 333
    rows cut across), never by chunks or the scheduler; --chunk-rows still sets the chunks."""
    args = ("--n", "5000", "--d", "2000", "--k", "5", "--density", "0.05", "--seed", "3")
    assert bmm("synth", *args, "--out", tmp_path / "a.zarr").code == 0
    with dask.config.set(scheduler="synchronous"):
        result = bmm("synth", *args, "--chunk-rows", "333", "--out", tmp_path / "b.zarr")
    assert result.code == 0, result.err
    a, b = open_dataset(tmp_path / "a.zarr"), open_dataset(tmp_path / "b.zarr")
    assert a.bits.chunks[0] == (4096, 904)  # 1 MiB of packed rows, whole random streams
    assert b.bits.chunks[0][:2] == (333, 333)
    np.testing.assert_array_equal(a.bits.compute(), b.bits.compute())
    np.testing.assert_array_equal(a.labels.compute(), b.labels.compute())
    np.testing.assert_array_equal(a.read_array("true_means"), b.read_array("true_means"))
    assert bmm("synth", *args[:-1], "4", "--out", tmp_path / "c.zarr").code == 0
    assert not np.array_equal(open_dataset(tmp_path / "c.zarr").bits.compute(), a.bits.compute())


@pytest.mark.parametrize(
    ("n_features", "n_components", "density"),
    [(100_000, 50, 0.001), (20_000, 20, 0.005), (2000, 8, 0.002), (50, 4, 0.3)],
)
def test_a_sparse_mixture_has_the_share_of_ones_asked(
    n_features: int, n_components: int, density: float
) -> None:
    """The weights-weighted mean of a sparse mixture's means is the density asked, with means
    off the 1/256 grid, between the floor and the cap."""
    from bmm_dask.datasets._synthetic import SPARSE_CAP, SPARSE_FLOOR

    means, weights = synth_parameters(n_features, n_components, seed=0, density=density)
    assert weights @ means.mean(axis=1) == pytest.approx(density, rel=1e-6)
    assert means.min() >= SPARSE_FLOOR and means.max() <= SPARSE_CAP
    if density < 0.01:
        assert (means < 1 / 256).mean() > 0.5  # most features are rarer than the grid allowed


def test_sparse_rows_have_the_share_of_ones_asked(tmp_path: Path) -> None:
    synth(
        tmp_path / "s.zarr",
        n_samples=20_000,
        n_features=2000,
        n_components=8,
        seed=3,
        density=0.002,
    )
    X = open_dataset(tmp_path / "s.zarr").unpacked().compute()
    assert X.mean() == pytest.approx(0.002, rel=0.05)
    assert (X.sum(axis=1) > 0).mean() > 0.9  # a few ones a row, in nearly every row


def test_a_sparse_mixture_too_large_for_memory_is_refused_at_once(tmp_path: Path) -> None:
    with pytest.raises(SettingsError, match=r"need about .* of memory"):
        synth(
            tmp_path / "s.zarr",
            n_samples=10,
            n_features=10**8,
            n_components=50,
            density=0.001,
        )
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("density", [None, 0.01])
def test_synth_records_its_ones(tmp_path: Path, density: float | None) -> None:
    from bmm_dask import open_dataset

    synth(tmp_path / "d.zarr", n_samples=3000, n_features=70, n_components=3, seed=2,
          density=density, chunk_rows=700)  # fmt: skip
    data = open_dataset(tmp_path / "d.zarr")
    ones = int(data.unpacked().sum().compute())
    assert data.attrs["n_ones"] == ones
    assert data.attrs["density"] == pytest.approx(ones / (3000 * 70))
