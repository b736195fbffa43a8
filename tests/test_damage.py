"""Damaged inputs: a corrupt or missing chunk, a truncated model store; exit 2, one line, nothing written."""

from __future__ import annotations

import http.server
import json
import shutil
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from bmm_dask import BernoulliMixture, open_dataset
from bmm_dask.datasets import ingest, synth
from bmm_dask.errors import DataError
from tests._helpers import LOCAL_CLUSTER, QuietHandler, assert_one_line_error, serving, url_of


@pytest.mark.slow
def test_a_corrupt_chunk_is_named(tmp_path: Path, bmm) -> None:
    data = synth(
        tmp_path / "d.zarr", n_samples=5000, n_features=64, n_components=2, chunk_rows=1000, seed=0
    )
    (data / "bits" / "c" / "2" / "0").write_bytes(b"\x00garbage" * 20)
    result = bmm("-q", "fit", data, "--k", "2", "--out", tmp_path / "m.zarr", *LOCAL_CLUSTER)
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


@pytest.mark.slow
def test_a_corrupt_chunk_while_streaming(tmp_path: Path, bmm) -> None:
    data = synth(tmp_path / "d.zarr", n_samples=30_000, n_features=784, n_components=2, seed=0)
    (data / "bits" / "c" / "1" / "0").write_bytes(b"\x00garbage" * 20)
    fit = ("fit", data, "--k", "2", "--init", "random", "--out", tmp_path / "m.zarr")
    result = bmm("-q", *fit, "--no-persist", *LOCAL_CLUSTER)
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


# --------------------------------------------------------------------------- missing chunks

#: Where chunk 3 of each array lies in a store (rows are chunked, bits have one column chunk).
CHUNK_3 = {"bits": "bits/c/3/0", "labels": "labels/c/3"}


def _data_and_model(tmp_path: Path) -> tuple[Path, Path]:
    """A dataset of 5 chunks of 1,000 rows with labels, and a model fitted on it while intact."""
    data = synth(
        tmp_path / "d.zarr", n_samples=5000, n_features=64, n_components=2, chunk_rows=1000, seed=0
    )
    BernoulliMixture(2, max_iter=2, tol=0).fit(open_dataset(data)).save(tmp_path / "m.zarr")
    return data, tmp_path / "m.zarr"


@pytest.mark.parametrize("array", ["bits", "labels"])
def test_a_missing_chunk_stops_every_command(tmp_path: Path, bmm, array: str) -> None:
    """Zarr reads a missing chunk as zeros; a store that records every chunk refuses it instead."""
    data, model = _data_and_model(tmp_path)
    (data / CHUNK_3[array]).unlink()
    needle = f"d.zarr/{array}: chunk 3 (rows 3000..3999) is missing from the store"
    out = tmp_path / "out"
    assert_one_line_error(bmm("evaluate", model, data, "--json", tmp_path / "e.json"), needle)
    assert_one_line_error(bmm("predict", model, data, "--out", out), needle)
    assert_one_line_error(bmm("report", model, "--data", data, "--out", out), needle)
    assert_one_line_error(bmm("info", data), needle)
    for streamed in ((), ("--no-persist",)):
        assert_one_line_error(
            bmm("-q", "fit", data, "--k", "2", "--out", out, *streamed, *LOCAL_CLUSTER), needle
        )
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d.zarr", "m.zarr"]


def test_a_chunk_lost_after_opening_is_found_when_read(tmp_path: Path) -> None:
    data = synth(
        tmp_path / "d.zarr", n_samples=4500, n_features=64, n_components=2, chunk_rows=1000, seed=0
    )
    dataset = open_dataset(data)
    (data / CHUNK_3["bits"]).unlink()
    (data / "labels" / "c" / "4").unlink()
    with pytest.raises(DataError, match=r"d.zarr/bits: chunk 3 \(rows 3000..3999\) is missing"):
        dataset.bits.compute()
    # a streamed E-step task reads several chunks at once, from any row
    reader = dataset.row_reader()
    assert reader(500, 2500).shape == (2000, 8)
    with pytest.raises(DataError, match=r"d.zarr/bits: chunk 3 \(rows 3000..3999\) is missing"):
        reader(500, 3500)
    with pytest.raises(DataError, match=r"d.zarr/labels: chunk 4 \(rows 4000..4499\) is missing"):
        dataset.labels.compute()


class _Server(QuietHandler):
    """Files of a folder, except those named in ``failing``, which answer 500."""

    def __init__(self, *args: Any, failing: set[str], **kwargs: Any) -> None:
        self.failing = failing  # before the base class, which answers the request
        super().__init__(*args, **kwargs)

    def do_GET(self) -> None:
        if self.path.lstrip("/") in self.failing:
            self.send_error(500)
        else:
            super().do_GET()

    do_HEAD = do_GET


@dataclass
class Served:
    url: str
    failing: set[str]
    server: http.server.ThreadingHTTPServer

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def served(tmp_path: Path) -> Iterator[Served]:
    """``tmp_path`` over HTTP on 127.0.0.1: its URL, and the set of paths that answer 500."""
    failing: set[str] = set()
    with serving(tmp_path, _Server, failing=failing) as server:
        yield Served(url_of(server), failing, server)


@pytest.mark.parametrize("array", ["bits", "labels"])
def test_a_chunk_that_answers_404_over_http(
    tmp_path: Path, bmm, served: Served, array: str
) -> None:
    data, model = _data_and_model(tmp_path)
    (data / CHUNK_3[array]).unlink()
    url = f"{served.url}/d.zarr"
    needle = f"{url}/{array}: chunk 3 (rows 3000..3999) is missing from the store"
    assert_one_line_error(bmm("evaluate", model, url), needle)
    assert_one_line_error(bmm("report", model, "--data", url, "--out", tmp_path / "r"), needle)
    assert not (tmp_path / "r").exists()


@pytest.mark.slow
def test_a_chunk_that_answers_404_while_streaming(tmp_path: Path, bmm, served: Served) -> None:
    """The workers read the chunks over HTTP themselves."""
    data, _ = _data_and_model(tmp_path)
    (data / CHUNK_3["bits"]).unlink()
    url = f"{served.url}/d.zarr"
    result = bmm(
        "-q", "fit", url, "--k", "2", "--out", tmp_path / "f.zarr", "--no-persist", *LOCAL_CLUSTER
    )
    assert_one_line_error(
        result, f"{url}/bits: chunk 3 (rows 3000..3999) is missing from the store"
    )
    assert not (tmp_path / "f.zarr").exists()


def test_a_server_error_is_not_called_damage(tmp_path: Path, bmm, served: Served) -> None:
    _, model = _data_and_model(tmp_path)
    url = f"{served.url}/d.zarr"
    served.failing.add("d.zarr/bits/c/2/0")
    result = bmm("evaluate", model, url)
    assert_one_line_error(
        result,
        f"{url}/bits: chunk 2 (rows 2000..2999) could not be fetched: 500",
        "check the server or the connection",
    )
    assert "damaged" not in result.err
    served.failing.clear()
    reader = open_dataset(url).row_reader()
    assert reader(0, 1000).shape == (1000, 8)
    served.stop()  # the server goes away: the connection is refused
    with pytest.raises(DataError, match=r"chunk 1 \(rows 1000..1999\) could not be fetched") as err:
        reader(1000, 2000)
    assert "damaged" not in str(err.value) and "check the server" in str(err.value)


def _with_a_chunk_of_zeros(tmp_path: Path) -> tuple[Path, np.ndarray, np.ndarray]:
    """A dataset of 4 chunks of 10 rows whose chunk 1 is all zeros, bits and labels alike."""
    rng = np.random.default_rng(0)
    X = rng.random((40, 16)) < 0.5
    X[10:20] = False
    labels = np.ones(40, dtype=np.uint8)
    labels[10:20] = 0
    np.save(tmp_path / "x.npy", X)
    np.save(tmp_path / "y.npy", labels)
    data = ingest(tmp_path / "x.npy", tmp_path / "d.zarr", labels=tmp_path / "y.npy", chunk_rows=10)
    return data, X, labels


def test_a_chunk_of_zeros_is_stored_and_reads_back(tmp_path: Path, bmm) -> None:
    data, X, labels = _with_a_chunk_of_zeros(tmp_path)
    assert (data / "bits" / "c" / "1" / "0").is_file() and (data / "labels" / "c" / "1").is_file()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        dataset = open_dataset(data)
    np.testing.assert_array_equal(dataset.unpacked(bool).compute(), X)
    np.testing.assert_array_equal(dataset.labels.compute(), labels)
    np.testing.assert_array_equal(dataset.row_reader()(5, 25), np.packbits(X[5:25], axis=1))
    BernoulliMixture(2, max_iter=2, tol=0).fit(dataset).save(tmp_path / "m.zarr")
    result = bmm("evaluate", tmp_path / "m.zarr", data)
    assert result.code == 0 and not result.err, result.err


# pytest's settings make our own warnings errors; here the warning is what is tested.
@pytest.mark.filterwarnings("always::UserWarning")
def test_an_old_store_opens_with_one_warning(tmp_path: Path, bmm) -> None:
    """A store written before the record: its chunk of zeros was never stored, and it still opens."""
    data, X, labels = _with_a_chunk_of_zeros(tmp_path)
    BernoulliMixture(2, max_iter=2, tol=0).fit(open_dataset(data)).save(tmp_path / "m.zarr")
    metadata = json.loads((data / "zarr.json").read_text())
    metadata["attributes"].pop("chunks_stored", None)
    (data / "zarr.json").write_text(json.dumps(metadata))
    (data / "bits" / "c" / "1" / "0").unlink(missing_ok=True)  # the old writer left them out
    (data / "labels" / "c" / "1").unlink(missing_ok=True)
    with pytest.warns(UserWarning) as record:
        dataset = open_dataset(data)
    assert len(record) == 1
    message = str(record[0].message)
    assert "d.zarr: written without a record of its chunks" in message
    assert "rows of zeros" in message and "ingest it again" in message
    np.testing.assert_array_equal(dataset.unpacked(bool).compute(), X)
    np.testing.assert_array_equal(dataset.labels.compute(), labels)
    for args in (("info", data), ("evaluate", tmp_path / "m.zarr", data)):
        result = bmm(*args)
        assert result.code == 0, result.err
        lines = result.err.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("warning: "), result.err
        assert "d.zarr: written without a record of its chunks" in lines[0]
