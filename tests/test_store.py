"""The dataset store: opening, its checks, and outputs that appear whole or not at all."""

from __future__ import annotations

import json
import os
import socket
import time
from pathlib import Path

import numpy as np
import pytest
import zarr

from bmm_dask import DataError, OutputError, open_dataset
from bmm_dask.datasets import ingest, synth
from bmm_dask.io import (
    UNREADABLE_LOCK_SECONDS,
    atomic_file,
    atomic_output,
    check_output,
    default_chunk_rows,
    output_lock,
)


def test_atomic_output_leaves_nothing_on_failure(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError), atomic_output(tmp_path / "out.zarr") as tmp:
        (tmp / "half").write_text("written")
        raise RuntimeError("interrupted")
    assert list(tmp_path.iterdir()) == []


def test_atomic_output_replaces_only_when_complete(tmp_path: Path) -> None:
    out = tmp_path / "out.zarr"
    out.mkdir()
    (out / "old").write_text("old")
    with (
        pytest.raises(OutputError, match="exists already; pass overwrite=True"),
        atomic_output(out),
    ):
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


def test_atomic_output_makes_missing_folders_and_removes_them_on_failure(tmp_path: Path) -> None:
    with atomic_output(tmp_path / "a" / "b" / "out.zarr") as tmp:
        (tmp / "x").write_text("x")
    assert (tmp_path / "a" / "b" / "out.zarr" / "x").read_text() == "x"
    with pytest.raises(RuntimeError), atomic_output(tmp_path / "c" / "d" / "out.zarr"):
        raise RuntimeError("interrupted")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a"]  # c/d made, then removed


def test_atomic_output_refuses_a_folder_it_cannot_make(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("")
    with (
        pytest.raises(OutputError, match="is not a folder"),
        atomic_output(tmp_path / "file" / "more" / "out.zarr"),
    ):
        pass
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
    assert default_chunk_rows(3) == 2**20
    # wide rows: at least 4,096 rows a chunk, while that is at most 64 MiB packed
    assert default_chunk_rows(100_000) == 4096
    assert default_chunk_rows(8 * 2**20) == 64
    assert default_chunk_rows(2**40) == 1


def test_an_output_that_appears_meanwhile_is_not_replaced(tmp_path: Path) -> None:
    out = tmp_path / "out.zarr"
    with (
        pytest.raises(OutputError, match="appeared while this command was writing it"),
        atomic_output(out) as tmp,
    ):
        (tmp / "mine").write_text("mine")
        out.mkdir()  # another writer (without our lock) finished first
        (out / "theirs").write_text("theirs")
    assert [p.name for p in out.iterdir()] == ["theirs"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.zarr"]
    # The same for a single file written without overwrite.
    target = tmp_path / "m.json"

    def write(tmp: Path) -> None:
        tmp.write_text("mine")
        target.write_text("theirs")

    with pytest.raises(OutputError, match="appeared while"):
        atomic_file(target, write, overwrite=False)
    assert target.read_text() == "theirs"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.json", "out.zarr"]


def test_the_output_lock(tmp_path: Path) -> None:
    out = tmp_path / "out.zarr"
    lock = tmp_path / "out.zarr.lock"
    with output_lock(out):
        holder = json.loads(lock.read_text())
        assert holder["pid"] == os.getpid()
        with output_lock(out):  # held again by the same process: a fit saving its model
            pass
        assert lock.exists()
    assert not lock.exists()
    # A live process of this machine holds it: refused, naming the process.
    lock.write_text(json.dumps({"pid": os.getppid(), "host": socket.gethostname()}))
    with pytest.raises(OutputError, match=f"process {os.getppid()}"), output_lock(out):
        pass
    # A dead process's lock is taken over.
    lock.write_text(json.dumps({"pid": 2**22 + 12345, "host": socket.gethostname()}))
    with output_lock(out):
        assert json.loads(lock.read_text())["pid"] == os.getpid()
    # An empty lock: being written (refused) while fresh, stale (taken over) once old.
    lock.write_text("")
    with pytest.raises(OutputError, match="starting to write it"), output_lock(out):
        pass
    old = time.time() - UNREADABLE_LOCK_SECONDS - 5
    os.utime(lock, (old, old))
    with output_lock(out):
        assert json.loads(lock.read_text())["pid"] == os.getpid()
    assert not lock.exists()


def test_an_output_never_replaces_an_input(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    data = synth(tmp_path / "d.zarr", n_samples=10, n_features=3, n_components=1)
    (tmp_path / "link.zarr").symlink_to(data)
    for out, needle in [
        (data, "is an input"),
        (tmp_path / "link.zarr", "is an input"),
        (tmp_path, "holds"),
        (data / "bits" / "x", "lies inside"),
    ]:
        with pytest.raises(OutputError, match=needle):
            check_output(out, overwrite=True, inputs=[data])
    monkeypatch.chdir(data)
    with pytest.raises(OutputError, match="current folder"):
        check_output(".", overwrite=True)
    with pytest.raises(OutputError, match="not a URL"):
        check_output("http://example.org/x.zarr", overwrite=True)
    # A URL input is never a local output.
    check_output(tmp_path / "new.zarr", overwrite=False, inputs=["http://127.0.0.1:9/d.zarr"])


def test_the_default_chunk_grows_to_keep_a_big_store_to_its_most_chunks() -> None:
    from bmm_dask.io import MAX_CHUNKS, default_chunk_rows, parse_chunk_rows

    assert parse_chunk_rows(None, 784, n_samples=100_000) == default_chunk_rows(784)
    rows = parse_chunk_rows(None, 784, n_samples=10**9)  # a billion images of MNIST's size
    assert rows > default_chunk_rows(784) and -(-(10**9) // rows) <= MAX_CHUNKS
