"""``synth --like MODEL``: rows drawn from a fitted model's mixture, the same whatever the chunking,
from the library and the command line alike, and one line for a model that is not one."""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np
import pytest
from sklearn.exceptions import ConvergenceWarning

from bmm_dask import BernoulliMixture, SettingsError, open_dataset
from bmm_dask.datasets import synth
from bmm_dask.io import read_model
from tests._helpers import assert_one_line_error, tree_snapshot


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A model of K = 3 components and 16 features, fitted on rows near three prototypes; its
    data recorded as 4 x 4 images."""
    folder = tmp_path_factory.mktemp("model")
    rng = np.random.default_rng(0)
    prototypes = rng.random((3, 16)) < 0.5
    z = np.arange(600) % 3
    X = (prototypes[z] ^ (rng.random((600, 16)) < 0.1)).astype(np.uint8)
    path = folder / "model.zarr"
    with warnings.catch_warnings():  # three iterations may not converge
        warnings.simplefilter("ignore", ConvergenceWarning)
        fitted = BernoulliMixture(3, max_iter=3, random_state=0).fit(X)
    fitted.save(path, attrs={"data": {"image_shape": [4, 4]}})
    return path


def _read(path: Path) -> tuple[np.ndarray, np.ndarray]:
    data = open_dataset(path)
    return data.bits.compute(), data.labels.compute()


def test_rows_follow_the_model(model: Path, tmp_path: Path, bmm) -> None:
    means, weights, _ = read_model(model)
    assert weights.min() > 0.2  # so that every component has thousands of rows below
    out = tmp_path / "like.zarr"
    result = bmm("synth", "--like", model, "--n", "20000", "--seed", "1", "--out", out)
    assert result.code == 0, result.err
    data = open_dataset(out)
    X, z = data.unpacked().compute(), data.labels.compute()
    assert X.shape == (20_000, 16) and data.n_features == 16
    assert z.min() >= 0 and z.max() < 3
    np.testing.assert_allclose(np.bincount(z, minlength=3) / len(z), weights, atol=0.03)
    for k in range(3):
        np.testing.assert_allclose(X[z == k].mean(axis=0), means[k], atol=0.03)
    # The mixture stored is the model's, on the 1/256 grid the rows are drawn from.
    np.testing.assert_allclose(data.read_array("true_means"), means, atol=1 / 512)
    # The weights are scaled to sum to 1 as closely as float64 can (a fit's sum to 1 +- 1e-8).
    true_weights = data.read_array("true_weights")
    np.testing.assert_allclose(true_weights, weights, rtol=1e-6)
    assert true_weights.sum() == pytest.approx(1.0, abs=1e-15)
    assert data.image_shape == (4, 4)
    assert data.attrs["source"] == {
        "synthetic": {"n_components": 3, "seed": 1, "like": os.path.abspath(model)}
    }


def test_same_rows_whatever_the_chunking(model: Path, tmp_path: Path, bmm) -> None:
    def draw(name: str, *args: str) -> tuple[np.ndarray, np.ndarray]:
        result = bmm("synth", "--like", model, "--n", "5000", "--out", tmp_path / name, *args)
        assert result.code == 0, result.err
        return _read(tmp_path / name)

    bits, labels = draw("a.zarr", "--seed", "5")
    for chunk_rows in ("777", "5000"):
        other_bits, other_labels = draw(
            f"c{chunk_rows}.zarr", "--seed", "5", "--chunk-rows", chunk_rows
        )
        np.testing.assert_array_equal(other_bits, bits)
        np.testing.assert_array_equal(other_labels, labels)
    assert open_dataset(tmp_path / "c777.zarr").bits.chunks[0][:2] == (777, 777)
    other_bits, other_labels = draw("b.zarr", "--seed", "6")
    assert not np.array_equal(other_bits, bits)
    assert not np.array_equal(other_labels, labels)


def test_library_and_command_line_agree(model: Path, tmp_path: Path, bmm) -> None:
    synth(tmp_path / "lib.zarr", n_samples=3000, like=model, seed=2, chunk_rows=1000)
    result = bmm(
        "synth", "--like", model, "--n", "3000", "--seed", "2", "--d", "16", "--k", "3",
        "--out", tmp_path / "cli.zarr",
    )  # fmt: skip
    assert result.code == 0, result.err
    lib, cli = open_dataset(tmp_path / "lib.zarr"), open_dataset(tmp_path / "cli.zarr")
    for a, b in zip(_read(tmp_path / "lib.zarr"), _read(tmp_path / "cli.zarr"), strict=True):
        np.testing.assert_array_equal(a, b)
    for name in ("true_means", "true_weights"):
        np.testing.assert_array_equal(lib.read_array(name), cli.read_array(name))
    assert lib.attrs["source"] == cli.attrs["source"]
    assert lib.image_shape == cli.image_shape == (4, 4)


def test_the_same_rows_as_its_means_and_weights_given(model: Path, tmp_path: Path) -> None:
    means, weights, _ = read_model(model)
    synth(tmp_path / "like.zarr", n_samples=2000, like=model, seed=4, image_shape=(2, 8))
    synth(
        tmp_path / "given.zarr",
        n_samples=2000,
        n_features=16,
        n_components=3,
        means=means,
        weights=weights,
        seed=4,
    )
    for a, b in zip(_read(tmp_path / "like.zarr"), _read(tmp_path / "given.zarr"), strict=True):
        np.testing.assert_array_equal(a, b)
    assert open_dataset(tmp_path / "like.zarr").image_shape == (2, 8)  # given, not the model's


@pytest.mark.parametrize(
    ("kwargs", "needles"),
    [
        ({"n_features": 20}, ("n_features 20", "model of 16 features")),
        ({"n_components": 2}, ("n_components 2", "model of 3 components")),
        ({"means": np.full((3, 16), 0.5)}, ("means and weights",)),
    ],
)
def test_settings_that_contradict_the_model(
    model: Path, tmp_path: Path, kwargs: dict, needles: tuple[str, ...]
) -> None:
    with pytest.raises(SettingsError) as caught:
        synth(tmp_path / "d.zarr", n_samples=10, like=model, **kwargs)
    for needle in needles:
        assert needle in str(caught.value)
    assert list(tmp_path.iterdir()) == []


def test_sizes_needed_without_a_model(tmp_path: Path) -> None:
    with pytest.raises(SettingsError, match="n_features and n_components are needed"):
        synth(tmp_path / "d.zarr", n_samples=10, n_features=4)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    ("args", "needles"),
    [
        (("--like", "data.zarr"), ("data.zarr", "not a bmm-dask model")),
        (("--like", "missing.zarr"), ("missing.zarr", "no such file")),
        (("--like", "garbage.bin"), ("garbage.bin", "not a Zarr group")),
        (("--like", "model.zarr", "--d", "20"), ("--d 20", "model of 16 features")),
        (("--like", "model.zarr", "--out", "model.zarr", "--overwrite"), ("is an input",)),
        ((), ("--d and --k are needed", "--like")),
        (("--d", "16"), ("--k is needed",)),
    ],
)
def test_a_bad_model_is_one_line_and_writes_nothing(
    model: Path,
    tmp_path: Path,
    bmm,
    monkeypatch: pytest.MonkeyPatch,
    args: tuple[str, ...],
    needles: tuple[str, ...],
) -> None:
    monkeypatch.chdir(tmp_path)
    synth("data.zarr", n_samples=50, n_features=16, n_components=2, seed=1)
    Path("garbage.bin").write_bytes(bytes(range(256)) * 4)
    os.symlink(model, "model.zarr")
    before = tree_snapshot(tmp_path)
    out = () if "--out" in args else ("--out", "s.zarr")
    result = bmm("synth", "--n", "100", *args, *out)
    assert_one_line_error(result, *needles)
    assert tree_snapshot(tmp_path) == before
