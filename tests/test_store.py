"""The dataset store: opening, its checks, and outputs that appear whole or not at all."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import zarr

from bmm_dask import DataError, OutputError, open_dataset
from bmm_dask.datasets import ingest, synth
from bmm_dask.store import atomic_output, default_chunk_rows


def test_atomic_output_leaves_nothing_on_failure(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError), atomic_output(tmp_path / "out.zarr") as tmp:
        (tmp / "half").write_text("written")
        raise RuntimeError("interrupted")
    assert list(tmp_path.iterdir()) == []


def test_atomic_output_replaces_only_when_complete(tmp_path: Path) -> None:
    out = tmp_path / "out.zarr"
    out.mkdir()
    (out / "old").write_text("old")
    with pytest.raises(OutputError, match="exists already; pass --overwrite"), atomic_output(out):
        pass
    with pytest.raises(KeyboardInterrupt), atomic_output(out, overwrite=True) as tmp:
        (tmp / "new").write_text("new")
        raise KeyboardInterrupt
    assert [p.name for p in out.iterdir()] == ["old"]
    with atomic_output(out, overwrite=True) as tmp:
        (tmp / "new").write_text("new")
    assert [p.name for p in out.iterdir()] == ["new"]
    assert [p.name for p in tmp_path.iterdir()] == ["out.zarr"]
    assert oct(out.stat().st_mode & 0o777) != oct(0o700)


def test_atomic_output_refuses_a_missing_or_unwritable_folder(tmp_path: Path) -> None:
    with (
        pytest.raises(OutputError, match="does not exist"),
        atomic_output(tmp_path / "no" / "out.zarr"),
    ):
        pass
    (tmp_path / "file").write_text("")
    with (
        pytest.raises(OutputError, match="is not a folder"),
        atomic_output(tmp_path / "file" / "out.zarr"),
    ):
        pass


def test_open_dataset_errors_name_the_path(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="no such file"):
        open_dataset(tmp_path / "missing.zarr")
    (tmp_path / "plain").mkdir()
    with pytest.raises(DataError, match="not a Zarr group"):
        open_dataset(tmp_path / "plain")
    zarr.open_group(tmp_path / "empty.zarr", mode="w")
    with pytest.raises(DataError, match="has no 'bits' array"):
        open_dataset(tmp_path / "empty.zarr")
    group = zarr.open_group(tmp_path / "two.zarr", mode="w")
    synth(
        tmp_path / "two.zarr" / "train", n_samples=10, n_features=3, n_components=1, overwrite=True
    )
    group.create_group("test")
    with pytest.raises(
        DataError, match=r"holds the datasets train; name one, as in .*two.zarr/train"
    ):
        open_dataset(tmp_path / "two.zarr")


def test_open_dataset_checks_the_row_size(tmp_path: Path) -> None:
    out = synth(tmp_path / "d.zarr", n_samples=10, n_features=9, n_components=1)
    group = zarr.open_group(out, mode="a")
    group.attrs["n_features"] = 17
    with pytest.raises(DataError, match="expected uint8 rows of 3 bytes for 17 features"):
        open_dataset(out)


def test_unpacked_is_lazy_and_chunked_like_the_bits(tmp_path: Path) -> None:
    X = np.random.default_rng(0).random((100, 11)) < 0.5
    np.save(tmp_path / "x.npy", X)
    data = open_dataset(ingest(tmp_path / "x.npy", tmp_path / "d.zarr", chunk_rows=30))
    unpacked = data.unpacked(np.float32)
    assert unpacked.chunks == ((30, 30, 30, 10), (11,))
    assert unpacked.dtype == np.float32
    assert unpacked.name.startswith("bmm-unpack-") and data.bits.name.startswith("bmm-read-bits-")
    np.testing.assert_array_equal(unpacked.compute(), X)


def test_default_chunk_rows() -> None:
    assert default_chunk_rows(784) == 10240
    assert default_chunk_rows(8 * 2**20) == 1
    assert default_chunk_rows(3) == 2**20
