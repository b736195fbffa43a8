"""Ingest: the bits written equal NumPy's packbits of the thresholded images, for any shape and chunking."""

from __future__ import annotations

import gzip
import hashlib
import json
from pathlib import Path

import numpy as np
import pytest

from bmm_dask import DataError, open_dataset
from bmm_dask.datasets import (
    MNIST_FILES,
    Binarization,
    ingest,
    ingest_mnist,
    open_source,
    packaged_mnist_path,
    write_idx,
)
from tests._helpers import guard, random_images


def stored(path: Path) -> tuple[np.ndarray, np.ndarray | None]:
    dataset = open_dataset(path)
    labels = dataset.labels.compute() if dataset.labels is not None else None
    return dataset.bits.compute(), labels


@pytest.mark.parametrize(
    ("shape", "chunk_rows", "suffix"),
    [
        ((1000, 28, 28), 128, ".gz"),  # MNIST-like images, 1000 not a multiple of 128
        ((777, 13), 100, ""),  # 13 features: the last byte is padded
        ((5, 3, 3), 1, ".gz"),  # a chunk a row
        ((50, 1), None, ""),  # one feature
        ((300, 17), 1000, ""),  # one chunk larger than the data
    ],
)
def test_ingest_idx_equals_packbits(
    tmp_path: Path, shape: tuple[int, ...], chunk_rows: int | None, suffix: str
) -> None:
    X = random_images(*shape)
    y = np.random.default_rng(1).integers(0, 10, size=shape[0], dtype=np.uint8)
    write_idx(tmp_path / f"x-idx3-ubyte{suffix}", X)
    write_idx(tmp_path / f"y-idx1-ubyte{suffix}", y)
    out = ingest(
        tmp_path / f"x-idx3-ubyte{suffix}",
        tmp_path / "d.zarr",
        labels=tmp_path / f"y-idx1-ubyte{suffix}",
        chunk_rows=chunk_rows,
    )
    bits, labels = stored(out)
    expected = np.packbits(X.reshape(shape[0], -1) >= 128, axis=1)
    np.testing.assert_array_equal(bits, expected)
    np.testing.assert_array_equal(labels, y)
    dataset = open_dataset(out)
    assert dataset.n_features == int(np.prod(shape[1:]))
    assert dataset.image_shape == (shape[1:] if len(shape) > 2 else None)
    assert dataset.binarization == {"method": "threshold", "threshold": 128}
    np.testing.assert_array_equal(
        dataset.unpacked().compute(), (X.reshape(shape[0], -1) >= 128).astype(np.uint8)
    )


@pytest.mark.parametrize("threshold", [1, 100, 127.5, 255])
def test_threshold_is_at_least(tmp_path: Path, threshold: float) -> None:
    X = random_images(200, 20)
    np.save(tmp_path / "x.npy", X)
    ingest(
        tmp_path / "x.npy", tmp_path / "d.zarr", binarization=Binarization("threshold", threshold)
    )
    np.testing.assert_array_equal(
        stored(tmp_path / "d.zarr")[0], np.packbits(threshold <= X, axis=1)
    )


@pytest.mark.parametrize(
    "array",
    [
        random_images(40, 6, 7).astype(np.float32),
        random_images(40, 42).astype(np.int64),
        random_images(40, 42).astype(">u2"),  # big-endian integers
    ],
    ids=["float32 images", "int64 rows", "big-endian uint16"],
)
def test_npy_sources_of_other_types(tmp_path: Path, array: np.ndarray) -> None:
    np.save(tmp_path / "x.npy", array)
    ingest(tmp_path / "x.npy", tmp_path / "d.zarr", chunk_rows=16)
    expected = np.packbits(array.reshape(len(array), -1) >= 128, axis=1)
    np.testing.assert_array_equal(stored(tmp_path / "d.zarr")[0], expected)


def test_bool_npy_is_taken_as_bits(tmp_path: Path) -> None:
    X = np.random.default_rng(0).random((100, 30)) < 0.5
    np.save(tmp_path / "x.npy", X)
    np.save(tmp_path / "y.npy", np.arange(100, dtype=np.int32))
    ingest(tmp_path / "x.npy", tmp_path / "d.zarr", labels=tmp_path / "y.npy")
    bits, labels = stored(tmp_path / "d.zarr")
    np.testing.assert_array_equal(bits, np.packbits(X, axis=1))
    np.testing.assert_array_equal(labels, np.arange(100))
    assert open_dataset(tmp_path / "d.zarr").binarization == {"method": "none"}


def test_binary_uint8_needs_binarize_none(tmp_path: Path) -> None:
    X = (np.random.default_rng(0).random((100, 30)) < 0.5).astype(np.uint8)
    np.save(tmp_path / "x.npy", X)
    with pytest.raises(DataError, match=r"binarization=Binarization\(\"none\"\)"):
        ingest(tmp_path / "x.npy", tmp_path / "d.zarr")
    assert not (tmp_path / "d.zarr").exists()
    ingest(tmp_path / "x.npy", tmp_path / "d.zarr", binarization=Binarization("none"))
    np.testing.assert_array_equal(stored(tmp_path / "d.zarr")[0], np.packbits(X, axis=1))


def test_stochastic_bits_do_not_depend_on_chunking(tmp_path: Path) -> None:
    X = random_images(3000, 28, 28)
    write_idx(tmp_path / "x.gz", X)
    runs = []
    for chunk_rows in (10_000, 1000, 333):
        out = tmp_path / f"d{chunk_rows}.zarr"
        ingest(
            tmp_path / "x.gz",
            out,
            binarization=Binarization("stochastic", seed=7),
            chunk_rows=chunk_rows,
        )
        runs.append(stored(out)[0])
    np.testing.assert_array_equal(runs[0], runs[1])
    np.testing.assert_array_equal(runs[0], runs[2])
    other = ingest(
        tmp_path / "x.gz", tmp_path / "seed8.zarr", binarization=Binarization("stochastic", seed=8)
    )
    assert not np.array_equal(stored(other)[0], runs[0])
    assert open_dataset(other).binarization == {"method": "stochastic", "seed": 8}


def test_streams_of_one_seed_draw_apart() -> None:
    grey = np.full((2_000, 784), 128, dtype=np.uint8)
    first = Binarization("stochastic", seed=4).apply(grey, start=0)
    again = Binarization("stochastic", seed=4, stream=0).apply(grey, start=0)
    other = Binarization("stochastic", seed=4, stream=1).apply(grey, start=0)
    np.testing.assert_array_equal(first, again)  # stream 0 keeps the draws of before
    # independent draws agree on about half the pixels, not on all of them
    assert 0.48 < (first == other).mean() < 0.52


def test_stochastic_bit_is_one_with_probability_value_over_255(tmp_path: Path) -> None:
    levels = np.array([0, 1, 51, 128, 204, 254, 255], dtype=np.uint8)
    X = np.tile(levels, (40_000, 1))
    np.save(tmp_path / "x.npy", X)
    ingest(tmp_path / "x.npy", tmp_path / "d.zarr", binarization=Binarization("stochastic", seed=0))
    freq = open_dataset(tmp_path / "d.zarr").unpacked().mean(axis=0).compute()
    # 40,000 draws: the standard error is at most 0.0025; allow 4 of them.
    np.testing.assert_allclose(freq, levels / 255, atol=0.01)
    assert freq[0] == 0 and freq[-1] == 1


def test_chunks_are_by_rows_and_about_a_mebibyte(tmp_path: Path) -> None:
    write_idx(tmp_path / "x", random_images(25_000, 28, 28))
    dataset = open_dataset(ingest(tmp_path / "x", tmp_path / "d.zarr"))
    assert dataset.bits.chunks[1] == (98,)
    assert dataset.chunk_rows * 98 >= 1_000_000
    assert dataset.bits.chunks[0] == (10240, 10240, 4520)


def test_idx_round_trip_of_every_type(tmp_path: Path) -> None:
    for dtype in ("u1", "i1", ">i2", "<i4", "f4", "f8"):
        array = np.arange(24, dtype=dtype).reshape(2, 3, 4)
        path = write_idx(tmp_path / f"{np.dtype(dtype).name}.idx", array)
        source = open_source(path)
        assert source.shape == (2, 3, 4)
        blocks = [block for _, block in source.blocks(1)]
        np.testing.assert_array_equal(np.concatenate(blocks), array.reshape(2, 12))


def test_source_checksums_are_recorded(tmp_path: Path) -> None:
    X = random_images(10, 4, 4)
    write_idx(tmp_path / "x.gz", X)
    ingest(tmp_path / "x.gz", tmp_path / "d.zarr")
    raw = gzip.decompress((tmp_path / "x.gz").read_bytes())
    source = open_dataset(tmp_path / "d.zarr").attrs["source"]["images"]
    assert source == {
        "file": "x.gz",
        "format": "idx",
        "md5": hashlib.md5(raw).hexdigest(),
        "md5_of": "uncompressed bytes",
    }


# --------------------------------------------------------------------------- MNIST


def md5(array: np.ndarray) -> str:
    return hashlib.md5(np.ascontiguousarray(array).tobytes()).hexdigest()


def test_packaged_mnist_matches_recorded_checksums() -> None:
    recorded = json.loads((packaged_mnist_path().parent / "mnist-checksums.json").read_text())
    for split, n in (("train", 60_000), ("test", 10_000)):
        dataset = open_dataset(f"{packaged_mnist_path()}/{split}")
        assert dataset.n_samples == n
        assert dataset.n_features == 784
        assert dataset.image_shape == (28, 28)
        assert md5(dataset.bits.compute()) == recorded[split]["bits"]
        assert md5(dataset.labels.compute()) == recorded[split]["labels"]
    assert packaged_mnist_path().stat().st_size < 2_500_000


def test_ingest_mnist_offline_from_the_packaged_copy(tmp_path: Path) -> None:
    out = ingest_mnist(tmp_path / "m.zarr")
    train, test = open_dataset(out / "train"), open_dataset(out / "test")
    assert (train.n_samples, test.n_samples) == (60_000, 10_000)
    counts = np.bincount(test.labels.compute())
    assert counts.tolist() == [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]
    packaged = open_dataset(f"{packaged_mnist_path()}/train")
    np.testing.assert_array_equal(train.bits.compute(), packaged.bits.compute())
    assert train.chunk_rows == 10240


def test_stochastic_mnist_needs_the_fetched_files(tmp_path: Path) -> None:
    from bmm_dask import SettingsError

    with pytest.raises(SettingsError, match="fetch mnist"):
        ingest_mnist(tmp_path / "m.zarr", binarization=Binarization("stochastic", seed=1))
    assert list(tmp_path.iterdir()) == []


def read_idx(path: Path) -> np.ndarray:
    raw = gzip.decompress(path.read_bytes())
    ndim = raw[3]
    shape = np.frombuffer(raw[4 : 4 + 4 * ndim], dtype=">i4")
    return np.frombuffer(raw[4 + 4 * ndim :], dtype=np.uint8).reshape(shape)


def test_mnist_bits_equal_packbits_of_the_original(tmp_path: Path, shared_mnist: Path) -> None:
    """On the real files: what ingest writes, and the packaged copy, equal packbits(images >= 128)."""
    X = read_idx(shared_mnist / "train-images-idx3-ubyte.gz").reshape(60_000, 784)
    y = read_idx(shared_mnist / "train-labels-idx1-ubyte.gz")
    expected = np.packbits(X >= 128, axis=1)
    out = ingest(
        shared_mnist / "train-images-idx3-ubyte.gz",
        tmp_path / "train.zarr",
        labels=shared_mnist / "train-labels-idx1-ubyte.gz",
    )
    bits, labels = stored(out)
    np.testing.assert_array_equal(bits, expected)
    np.testing.assert_array_equal(labels, y)
    assert (
        open_dataset(out).attrs["source"]["images"]["md5"]
        == MNIST_FILES["train-images-idx3-ubyte"][0]
    )
    packaged_bits, packaged_labels = stored(Path(f"{packaged_mnist_path()}/train"))
    np.testing.assert_array_equal(packaged_bits, expected)
    np.testing.assert_array_equal(packaged_labels, y)


def test_ingest_mnist_uses_the_fetched_files(
    tmp_path: Path, shared_mnist: Path, isolated_cache: Path
) -> None:
    from bmm_dask.datasets import fetch_mnist

    fetch_mnist(from_dir=shared_mnist)
    out = ingest_mnist(tmp_path / "m.zarr", binarization=Binarization("stochastic", seed=3))
    test = open_dataset(out / "test")
    assert open_dataset(out / "train").binarization == {"method": "stochastic", "seed": 3}
    # the test images are drawn from a stream of their own, not the training rows' draws
    assert test.binarization == {"method": "stochastic", "seed": 3, "stream": 1}
    assert test.attrs["source"]["images"]["md5"] == MNIST_FILES["t10k-images-idx3-ubyte"][0]
    X = read_idx(shared_mnist / "t10k-images-idx3-ubyte.gz").reshape(10_000, 784)
    # Stochastic bits average out to the grey levels: compare the mean image.
    mean = test.unpacked().mean(axis=0).compute()
    assert np.abs(mean - X.mean(axis=0) / 255).max() < 0.03


@pytest.mark.slow
def test_the_build_script_reproduces_the_packaged_copy(tmp_path: Path, shared_mnist: Path) -> None:
    import subprocess
    import sys

    script = Path(__file__).resolve().parent.parent / "scripts" / "build_packaged_mnist.py"
    run = subprocess.run(
        [sys.executable, str(script), "--from", str(shared_mnist), "--out-dir", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=guard(300),
    )
    assert run.returncode == 0, run.stderr
    packaged = packaged_mnist_path()
    recorded = (packaged.parent / "mnist-checksums.json").read_text()
    assert (tmp_path / "mnist-checksums.json").read_text() == recorded
    # Same arrays; the zip bytes match too while the zstd library is the same version.
    assert (tmp_path / "mnist.zarr.zip").read_bytes() == packaged.read_bytes()
