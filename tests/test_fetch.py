"""MNIST fetch: download from mirrors in turn, verify MD5 of the uncompressed bytes, never keep a bad file.

A real HTTP server on 127.0.0.1 serves small fixture files; no test touches the internet.
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from bmm_dask import DataError, FetchError
from bmm_dask.datasets import MNIST_FILES, fetch_mnist
from tests._helpers import assert_one_line_error, serving, tree_snapshot, url_of

CONTENT = {
    "a-idx1-ubyte": b"\x00\x00\x08\x01\x00\x00\x00\x03abc",
    "b-idx1-ubyte": b"\x00\x00\x08\x01\x00\x00\x00\x01z",
}
FILES = {name: (hashlib.md5(data).hexdigest(), len(data)) for name, data in CONTENT.items()}


@pytest.fixture
def serve() -> Iterator[Callable[[Path], str]]:
    """Start HTTP servers on 127.0.0.1 over folders; yields a function folder -> base URL."""
    with contextlib.ExitStack() as servers:
        yield lambda folder: f"{url_of(servers.enter_context(serving(folder)))}/"


def mirror(folder: Path, content: dict[str, bytes]) -> Path:
    folder.mkdir()
    for name, data in content.items():
        (folder / f"{name}.gz").write_bytes(gzip.compress(data))
    return folder


def test_download_verifies_and_skips_to_the_next_mirror(tmp_path: Path, serve) -> None:
    good = serve(mirror(tmp_path / "good", CONTENT))
    corrupt = serve(
        mirror(tmp_path / "corrupt", {name: data + b"!" for name, data in CONTENT.items()})
    )
    empty = serve(mirror(tmp_path / "empty", {}))
    unreachable = "http://127.0.0.1:9/"  # the discard port: nothing listens there
    target = fetch_mnist(
        tmp_path / "cache", mirrors=[unreachable, empty, corrupt, good], files=FILES
    )
    assert sorted(p.name for p in target.iterdir()) == ["a-idx1-ubyte.gz", "b-idx1-ubyte.gz"]
    for name, data in CONTENT.items():
        assert gzip.decompress((target / f"{name}.gz").read_bytes()) == data


def test_files_present_and_verified_are_not_downloaded_again(tmp_path: Path, serve) -> None:
    good = tmp_path / "good"
    url = serve(mirror(good, CONTENT))
    target = fetch_mnist(tmp_path / "cache", mirrors=[url], files=FILES)
    before = tree_snapshot(target)
    assert sorted(before) == ["a-idx1-ubyte.gz", "b-idx1-ubyte.gz"]
    for f in good.iterdir():
        f.unlink()  # the mirror is gone: a second fetch must not need it
    assert fetch_mnist(tmp_path / "cache", mirrors=[url], files=FILES) == target
    # the same files: same bytes, neither rewritten (mtime) nor replaced (inode)
    assert tree_snapshot(target) == before


def test_every_mirror_failing_raises_and_leaves_nothing(tmp_path: Path, serve) -> None:
    corrupt = serve(
        mirror(tmp_path / "corrupt", {name: data[:-1] for name, data in CONTENT.items()})
    )
    with pytest.raises(FetchError) as info:
        fetch_mnist(tmp_path / "cache", mirrors=[corrupt, "http://127.0.0.1:9/"], files=FILES)
    message = str(info.value)
    assert "a-idx1-ubyte.gz" in message and "bytes where" in message and "127.0.0.1:9" in message
    assert list((tmp_path / "cache").iterdir()) == []


def test_from_dir_copies_verified_files(tmp_path: Path) -> None:
    source = mirror(tmp_path / "source", CONTENT)
    (source / "b-idx1-ubyte.gz").unlink()
    (source / "b-idx1-ubyte").write_bytes(CONTENT["b-idx1-ubyte"])  # uncompressed works too
    target = fetch_mnist(tmp_path / "cache", from_dir=source, files=FILES)
    assert sorted(p.name for p in target.iterdir()) == ["a-idx1-ubyte.gz", "b-idx1-ubyte"]
    (source / "a-idx1-ubyte.gz").write_bytes(gzip.compress(b"not mnist"))
    with pytest.raises(DataError, match=r"md5|bytes where"):
        fetch_mnist(tmp_path / "other", from_dir=source, files=FILES)


def test_cli_fetch_downloads_real_mnist_from_a_local_mirror(
    tmp_path: Path,
    serve,
    shared_mnist: Path,
    bmm,
    monkeypatch: pytest.MonkeyPatch,
    isolated_cache: Path,
) -> None:
    monkeypatch.setenv("BMM_DASK_MNIST_MIRRORS", f"http://127.0.0.1:9/,{serve(shared_mnist)}")
    result = bmm("fetch", "mnist")
    assert result.code == 0, result.err
    assert sorted(p.name for p in (isolated_cache / "mnist").iterdir()) == sorted(
        f"{n}.gz" for n in MNIST_FILES
    )
    # ingest mnist now reads the fetched files, so stochastic binarisation is available
    result = bmm(
        "ingest", "mnist", "--out", tmp_path / "m.zarr", "--binarize", "stochastic", "--seed", "1"
    )
    assert result.code == 0, result.err


def test_cli_fetch_from_a_folder_of_wrong_files(tmp_path: Path, bmm) -> None:
    source = mirror(
        tmp_path / "source", {name: b"\x00\x00\x08\x01\x00\x00\x00\x00" for name in MNIST_FILES}
    )
    result = bmm("fetch", "mnist", "--from", source, "--dir", tmp_path / "cache")
    assert_one_line_error(result, "train-images-idx3-ubyte.gz", "not the MNIST file")
    assert list((tmp_path / "cache").iterdir()) == []
