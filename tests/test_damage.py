"""Damaged inputs: a corrupt chunk, a truncated model store; exit 2, one line, nothing written."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from bmm_dask import BernoulliMixture, open_dataset
from bmm_dask.datasets import synth
from bmm_dask.errors import DataError

from .conftest import assert_one_line_error


def test_a_corrupt_chunk_is_named(tmp_path: Path, bmm) -> None:
    data = synth(
        tmp_path / "d.zarr", n_samples=5000, n_features=64, n_components=2, chunk_rows=1000, seed=0
    )
    (data / "bits" / "c" / "2" / "0").write_bytes(b"\x00garbage" * 20)
    result = bmm(
        "-q",
        "fit",
        data,
        "--k",
        "2",
        "--out",
        tmp_path / "m.zarr",
        "--workers",
        "1",
        "--dashboard-address",
        "127.0.0.1:0",
    )
    assert_one_line_error(result, "d.zarr/bits: chunk 2 (rows 2000..2999) cannot be read")
    assert not (tmp_path / "m.zarr").exists() and not Path(f"{tmp_path / 'm.zarr'}.lock").exists()
    # in process too, and for any command that reads the data
    model = BernoulliMixture(2, max_iter=2, tol=0).fit(
        open_dataset(synth(tmp_path / "ok.zarr", n_samples=100, n_features=64, n_components=2))
    )
    model.save(tmp_path / "model.zarr")
    assert_one_line_error(bmm("evaluate", tmp_path / "model.zarr", data), "bits: chunk 2")


def test_a_truncated_model_store(tmp_path: Path, bmm) -> None:
    data = synth(tmp_path / "d.zarr", n_samples=300, n_features=16, n_components=2, seed=0)
    BernoulliMixture(2, max_iter=2, tol=0).fit(open_dataset(data)).save(tmp_path / "m.zarr")
    shutil.rmtree(tmp_path / "m.zarr" / "means")
    assert_one_line_error(
        bmm("evaluate", tmp_path / "m.zarr", data), "m.zarr: cannot read the model's arrays"
    )
    (tmp_path / "m.zarr" / "zarr.json").unlink()
    assert_one_line_error(
        bmm("predict", tmp_path / "m.zarr", data, "--out", tmp_path / "p.zarr"), "m.zarr"
    )
    assert not (tmp_path / "p.zarr").exists()


def test_a_corrupt_chunk_while_streaming(tmp_path: Path, bmm) -> None:
    data = synth(tmp_path / "d.zarr", n_samples=30_000, n_features=784, n_components=2, seed=0)
    (data / "bits" / "c" / "1" / "0").write_bytes(b"\x00garbage" * 20)
    result = bmm(
        "-q",
        "fit",
        data,
        "--k",
        "2",
        "--init",
        "random",
        "--out",
        tmp_path / "m.zarr",
        "--no-persist",
        "--workers",
        "1",
        "--dashboard-address",
        "127.0.0.1:0",
    )
    assert_one_line_error(result, "d.zarr/bits: chunk 1 (rows 10240..20479) cannot be read")
    assert not (tmp_path / "m.zarr").exists()


def test_a_read_of_several_chunks_names_the_corrupt_one(tmp_path: Path) -> None:
    """Streamed E-step tasks read eight chunks at once; the error still names the bad chunk."""
    data = synth(
        tmp_path / "d.zarr", n_samples=5000, n_features=64, n_components=2, chunk_rows=1000, seed=0
    )
    (data / "bits" / "c" / "3" / "0").write_bytes(b"\x00garbage" * 20)
    reader = open_dataset(data).row_reader()
    assert reader(500, 2500).shape == (2000, 8)
    with pytest.raises(DataError, match=r"d.zarr/bits: chunk 3 \(rows 3000..3999\) cannot be read"):
        reader(500, 4500)
