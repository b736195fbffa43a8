"""Synthetic data: rows from a known mixture, stored with its parameters, the same whatever the chunking."""

from __future__ import annotations

from pathlib import Path

import dask
import numpy as np
import pytest

from bmm_dask import SettingsError, open_dataset
from bmm_dask.datasets import synth


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
