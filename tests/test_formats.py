"""Ingest from every format: the same rows give the same stored bits (and labels and feature
names where the format has them) as from a .npy; bad input in each format ends with exit 2 and
one line that names the file and the line, row or column, and writes nothing."""

from __future__ import annotations

import csv
import gzip
import json
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import scipy.io
import scipy.sparse
import zarr
from sklearn.datasets import dump_svmlight_file

from bmm_dask import open_dataset
from bmm_dask.datasets import Binarization, ingest, open_rows
from bmm_dask.datasets._binarise import Binarization as _Binarization
from bmm_dask.errors import DataError
from tests._helpers import assert_one_line_error, tree_snapshot

#: Rows per chunk in these tests: 23 rows make chunks of 5, 5, 5, 5 and 3.
CHUNK = "5"


@dataclass(frozen=True)
class Rows:
    """The rows every format holds: counts (up to 3), an empty row, the last column all zeros."""

    X: np.ndarray
    y: np.ndarray
    names: list[str]


@pytest.fixture(scope="module")
def rows() -> Rows:
    rng = np.random.default_rng(0)
    X = rng.poisson(0.6, size=(23, 13)).clip(0, 3)
    X[4] = 0
    X[:, -1] = 0
    X[7, 2] = 3  # a count above 1 for sure
    return Rows(X, rng.integers(0, 4, size=23), [f"w{i:02d}" for i in range(13)])


@pytest.fixture(scope="module")
def expected(rows: Rows, tmp_path_factory: pytest.TempPathFactory) -> np.ndarray:
    """The stored bits of the rows ingested from a .npy of 0/1 with --binarize none."""
    folder = tmp_path_factory.mktemp("reference")
    np.save(folder / "x.npy", (rows.X > 0).astype(np.uint8))
    ingest(
        folder / "x.npy",
        folder / "x.zarr",
        binarization=Binarization("none"),
        chunk_rows=int(CHUNK),
    )
    return np.asarray(zarr.open_group(folder / "x.zarr", mode="r")["bits"][...])


def _vocabulary(path: Path, names: list[str]) -> Path:
    path.write_text("".join(f"{name}\n" for name in names))
    return path


def _ingested(bmm, source: Path | str, out: Path, *args: str):
    result = bmm("ingest", source, "--out", out, "--chunk-rows", CHUNK, *args)
    assert result.code == 0, result.err
    data = open_dataset(out)
    assert set(data.bits.chunks[0][:-1]) == {5}  # chunks of 5 rows, whatever the source's
    return data


def _same(data, expected: np.ndarray, rows: Rows, *, labels: bool, names: bool) -> None:
    assert data.n_features == rows.X.shape[1]
    np.testing.assert_array_equal(data.bits.compute(), expected)
    if labels:
        np.testing.assert_array_equal(data.labels.compute(), rows.y)
    else:
        assert data.labels is None
    if names:
        assert list(data.feature_names) == rows.names
    assert data.attrs["n_ones"] == int((rows.X > 0).sum())
    assert data.attrs["density"] == pytest.approx((rows.X > 0).mean())


# --------------------------------------------------------------------------- same bits


def test_npy_of_counts_with_nonzero(tmp_path: Path, rows: Rows, expected, bmm) -> None:
    np.save(tmp_path / "counts.npy", rows.X)
    data = _ingested(bmm, tmp_path / "counts.npy", tmp_path / "d.zarr", "--binarize", "nonzero")
    _same(data, expected, rows, labels=False, names=False)
    assert data.binarization == {"method": "nonzero"}


def test_svmlight_one_based(tmp_path: Path, rows: Rows, expected, bmm) -> None:
    path = tmp_path / "docs.svm"
    dump_svmlight_file(rows.X, rows.y, str(path), zero_based=False)
    # a comment, a blank line and a comment line do not make rows
    lines = path.read_text().splitlines()
    lines[0] += "  # the first document"
    path.write_text("# made by a test\n\n" + "\n".join(lines) + "\n")
    data = _ingested(bmm, path, tmp_path / "d.zarr", "--n-features", "13")
    _same(data, expected, rows, labels=True, names=False)
    source = data.attrs["source"]["data"]
    assert source["format"] == "svmlight" and source["zero_based"] is False
    assert data.binarization == {"method": "nonzero"}


def test_svmlight_zero_based_gzipped_with_a_vocabulary(
    tmp_path: Path, rows: Rows, expected, bmm
) -> None:
    X = rows.X.copy()
    X[0, 0] = X[0, 0] or 1  # index 0 occurs, so the indices count from 0
    np.save(tmp_path / "x.npy", (X > 0).astype(np.uint8))
    assert (
        bmm("ingest", tmp_path / "x.npy", "--out", tmp_path / "ref.zarr", "--binarize", "none").code
        == 0
    )
    path = tmp_path / "docs.svmlight"
    dump_svmlight_file(X, rows.y, str(path), zero_based=True)
    gzipped = tmp_path / "docs.svmlight.gz"
    gzipped.write_bytes(gzip.compress(path.read_bytes()))
    vocabulary = _vocabulary(tmp_path / "vocab.txt", rows.names)
    data = _ingested(bmm, gzipped, tmp_path / "d.zarr", "--feature-names", vocabulary)
    np.testing.assert_array_equal(
        data.bits.compute(), open_dataset(tmp_path / "ref.zarr").bits.compute()
    )
    assert data.n_features == 13  # the vocabulary's, though the last feature never occurs
    assert list(data.feature_names) == rows.names
    assert data.attrs["source"]["data"]["zero_based"] is True
    assert data.attrs["source"]["feature_names"]["file"] == "vocab.txt"


def test_svmlight_targets_that_are_not_whole_are_dropped(tmp_path: Path, rows: Rows) -> None:
    path = tmp_path / "reg.libsvm"
    dump_svmlight_file(rows.X, rows.y + 0.5, str(path), zero_based=False)
    ingest(path, tmp_path / "d.zarr", n_features=13)
    assert open_dataset(tmp_path / "d.zarr").labels is None


def test_svmlight_sniffed_without_a_suffix(tmp_path: Path, rows: Rows, expected, bmm) -> None:
    path = tmp_path / "docs"
    dump_svmlight_file(rows.X, rows.y, str(path), zero_based=False)
    data = _ingested(bmm, path, tmp_path / "d.zarr", "--n-features", "13")
    _same(data, expected, rows, labels=True, names=False)


def _write_mtx(path: Path, X: np.ndarray, *, shuffle: bool, duplicate: bool = False) -> Path:
    """A coordinate file of X's nonzeros, its entries in random order, maybe one split in two."""
    rows, columns = np.nonzero(X)
    values = X[rows, columns].astype(np.int64)
    entries = [(r + 1, c + 1, int(v)) for r, c, v in zip(rows, columns, values, strict=True)]
    if duplicate:  # a count of 3 as entries of 1 and 2, summed on reading
        r, c, v = next(e for e in entries if e[2] == 3)
        entries.remove((r, c, v))
        entries += [(r, c, 1), (r, c, 2)]
    if shuffle:
        np.random.default_rng(1).shuffle(entries)
    text = "%%MatrixMarket matrix coordinate integer general\n% a comment\n"
    text += f"{X.shape[0]} {X.shape[1]} {len(entries)}\n"
    text += "".join(f"{r} {c} {v}\n" for r, c, v in entries)
    if path.suffix == ".gz":
        path.write_bytes(gzip.compress(text.encode()))
    else:
        path.write_text(text)
    return path


def test_matrix_market_in_any_order(tmp_path: Path, rows: Rows, expected, bmm) -> None:
    path = _write_mtx(tmp_path / "counts.mtx", rows.X, shuffle=True, duplicate=True)
    data = _ingested(bmm, path, tmp_path / "d.zarr")
    _same(data, expected, rows, labels=False, names=False)
    assert data.attrs["source"]["data"]["format"] == "matrix-market"
    assert not list(tmp_path.glob("**/.bmm-dask-mtx-*"))  # the scratch files are gone


def test_matrix_market_gzipped_in_blocks_of_text(
    tmp_path: Path, rows: Rows, expected, bmm, monkeypatch: pytest.MonkeyPatch
) -> None:
    from bmm_dask.datasets._formats import MatrixMarketRows

    monkeypatch.setattr(MatrixMarketRows, "TEXT_BLOCK", 20)  # a few lines a block
    path = _write_mtx(tmp_path / "counts.mtx.gz", rows.X, shuffle=True)
    data = _ingested(
        bmm,
        path,
        tmp_path / "d.zarr",
        "--feature-names",
        _vocabulary(tmp_path / "v.txt", rows.names),
    )
    _same(data, expected, rows, labels=False, names=True)


def test_matrix_market_pattern_and_symmetric(tmp_path: Path) -> None:
    X = scipy.sparse.coo_array(np.array([[1, 0, 1], [0, 0, 0], [1, 0, 1]]))
    scipy.io.mmwrite(tmp_path / "p.mtx", X, field="pattern", symmetry="symmetric")
    assert "symmetric" in (tmp_path / "p.mtx").read_text().splitlines()[0]
    ingest(tmp_path / "p.mtx", tmp_path / "d.zarr")
    bits = open_dataset(tmp_path / "d.zarr").unpacked().compute()
    np.testing.assert_array_equal(bits, X.toarray())


@pytest.mark.parametrize("layout", ["csr", "coo"])
def test_scipy_npz(tmp_path: Path, rows: Rows, expected, bmm, layout: str) -> None:
    scipy.sparse.save_npz(tmp_path / "x.npz", scipy.sparse.csr_array(rows.X).asformat(layout))
    data = _ingested(bmm, tmp_path / "x.npz", tmp_path / "d.zarr")
    _same(data, expected, rows, labels=False, names=False)


def test_parquet_columns(tmp_path: Path, rows: Rows, expected, bmm) -> None:
    pa = pytest.importorskip("pyarrow")
    pq = pytest.importorskip("pyarrow.parquet")
    columns = {name: rows.X[:, i] for i, name in enumerate(rows.names)}
    columns["w00"] = rows.X[:, 0] > 0  # booleans beside counts
    columns["w01"] = rows.X[:, 1].astype(np.float32)
    table = pa.table({"doc": [f"d{i}" for i in range(23)], **columns, "topic": rows.y})
    pq.write_table(table, tmp_path / "x.parquet", row_group_size=7)  # groups across chunks
    data = _ingested(
        bmm,
        tmp_path / "x.parquet",
        tmp_path / "d.zarr",
        "--label-column",
        "topic",
        "--columns",
        ",".join(rows.names),
    )
    _same(data, expected, rows, labels=True, names=True)
    assert data.attrs["source"]["data"]["layout"] == "columns"


def test_parquet_list_of_items(tmp_path: Path, rows: Rows, expected, bmm) -> None:
    pa = pytest.importorskip("pyarrow")
    pq = pytest.importorskip("pyarrow.parquet")
    # an item counted 3 times is listed 3 times; the vocabulary keeps the never-seen last word
    baskets = [[rows.names[j] for j in np.flatnonzero(x) for _ in range(x[j])] for x in rows.X]
    table = pa.table({"basket": baskets, "label": rows.y})
    pq.write_table(table, tmp_path / "b.parquet", row_group_size=6)
    vocabulary = _vocabulary(tmp_path / "v.txt", rows.names)
    data = _ingested(
        bmm,
        tmp_path / "b.parquet",
        tmp_path / "d.zarr",
        "--label-column",
        "label",
        "--feature-names",
        vocabulary,
    )
    _same(data, expected, rows, labels=True, names=True)
    # without a vocabulary: the items seen, sorted (the last word never seen)
    seen = ingest(tmp_path / "b.parquet", tmp_path / "seen.zarr", label_column="label")
    assert list(open_dataset(seen).feature_names) == rows.names[:-1]


def test_parquet_integer_items_and_a_text_column(tmp_path: Path) -> None:
    pa = pytest.importorskip("pyarrow")
    pq = pytest.importorskip("pyarrow.parquet")
    table = pa.table({"ids": [[10, 2], [], [2, 2]], "text": ["b a", "", "c,a"]})
    pq.write_table(table, tmp_path / "t.parquet")
    numbers = ingest(tmp_path / "t.parquet", tmp_path / "n.zarr", items="ids")
    data = open_dataset(numbers)
    assert list(data.feature_names) == ["2", "10"]  # sorted as numbers
    np.testing.assert_array_equal(data.unpacked().compute(), [[1, 1], [0, 0], [1, 0]])
    words = ingest(tmp_path / "t.parquet", tmp_path / "w.zarr", items="text", item_separator=",")
    assert list(open_dataset(words).feature_names) == ["a", "b a", "c"]


def test_csv_columns_with_true_false(tmp_path: Path, rows: Rows, expected, bmm) -> None:
    path = tmp_path / "x.csv"
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["label", *rows.names])
        for x, y in zip(rows.X, rows.y, strict=True):
            cells = [str(v) for v in x]
            cells[0] = "true" if x[0] else "FALSE"
            writer.writerow([y, *cells])
    data = _ingested(bmm, path, tmp_path / "d.zarr", "--label-column", "label")
    _same(data, expected, rows, labels=True, names=True)


def test_csv_columns_beside_an_id_column_left_out(
    tmp_path: Path, rows: Rows, expected, bmm
) -> None:
    """Presence/absence by site: a column of site names that is not a feature."""
    path = tmp_path / "sites.csv"
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["site", *rows.names, "label"])
        for i, (x, y) in enumerate(zip(rows.X, rows.y, strict=True)):
            writer.writerow([f"S{i}", *x, y])
    refused = bmm("ingest", path, "--label-column", "label", "--out", tmp_path / "no.zarr")
    assert_one_line_error(refused, "sites.csv: line 2, column 'site': 'S0' is not a number")
    data = _ingested(
        bmm, path, tmp_path / "d.zarr", "--drop-columns", "site", "--label-column", "label"
    )
    _same(data, expected, rows, labels=True, names=True)


def test_tsv_gzipped(tmp_path: Path, rows: Rows, expected, bmm) -> None:
    text = "\t".join(rows.names) + "\n" + "".join("\t".join(map(str, x)) + "\n" for x in rows.X)
    (tmp_path / "x.tsv.gz").write_bytes(gzip.compress(text.encode()))
    data = _ingested(bmm, tmp_path / "x.tsv.gz", tmp_path / "d.zarr")
    _same(data, expected, rows, labels=False, names=True)


def test_csv_baskets(tmp_path: Path, rows: Rows, expected, bmm) -> None:
    path = tmp_path / "baskets.csv"
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["id", "items", "label"])
        for i, (x, y) in enumerate(zip(rows.X, rows.y, strict=True)):
            items = [rows.names[j] for j in np.flatnonzero(x) for _ in range(x[j])]
            writer.writerow([i, " ".join(items), y])
    vocabulary = _vocabulary(tmp_path / "v.txt", rows.names)
    data = _ingested(
        bmm,
        path,
        tmp_path / "d.zarr",
        "--items",
        "items",
        "--label-column",
        "label",
        "--feature-names",
        vocabulary,
    )
    _same(data, expected, rows, labels=True, names=True)
    assert data.attrs["source"]["data"]["items"] == "items"


def test_hdf5_dataset(tmp_path: Path, rows: Rows, expected, bmm) -> None:
    h5py = pytest.importorskip("h5py")
    with h5py.File(tmp_path / "x.h5", "w") as f:
        f.create_dataset("/group/counts", data=rows.X.astype(np.int16), chunks=(4, 13))
        f.create_dataset("/other", data=np.zeros(3))
    data = _ingested(
        bmm, f"{tmp_path / 'x.h5'}:/group/counts", tmp_path / "d.zarr", "--binarize", "nonzero"
    )
    _same(data, expected, rows, labels=False, names=False)
    assert data.attrs["source"]["data"]["dataset"] == "/group/counts"


def test_hdf5_images_follow_the_npy_rules(tmp_path: Path, bmm) -> None:
    h5py = pytest.importorskip("h5py")
    images = np.random.default_rng(0).integers(0, 256, size=(30, 4, 5), dtype=np.uint8)
    with h5py.File(tmp_path / "x.h5", "w") as f:
        f["images"] = images
    data = _ingested(bmm, tmp_path / "x.h5", tmp_path / "d.zarr")  # its only 2-D+ dataset
    assert data.image_shape == (4, 5) and data.binarization["method"] == "threshold"
    np.testing.assert_array_equal(
        data.bits.compute(), np.packbits(images.reshape(30, 20) >= 128, axis=1)
    )


def test_zarr_array(tmp_path: Path, rows: Rows, expected, bmm) -> None:
    array = zarr.create_array(tmp_path / "x.zarr", shape=rows.X.shape, chunks=(6, 13), dtype="u2")
    array[...] = rows.X
    data = _ingested(bmm, tmp_path / "x.zarr", tmp_path / "d.zarr", "--binarize", "nonzero")
    _same(data, expected, rows, labels=False, names=False)


def test_stochastic_and_threshold_of_sparse_rows_match_dense(tmp_path: Path) -> None:
    grey = np.random.default_rng(2).integers(0, 256, size=(40, 30)).astype(np.float64)
    grey[grey < 150] = 0
    np.save(tmp_path / "g.npy", grey)
    scipy.sparse.save_npz(tmp_path / "g.npz", scipy.sparse.csr_array(grey))
    for binarization in (Binarization("stochastic", seed=3), Binarization("threshold", 200)):
        for name in ("g.npy", "g.npz"):
            ingest(
                tmp_path / name,
                tmp_path / f"{name}.zarr",
                binarization=binarization,
                chunk_rows=7,
                overwrite=True,
            )
        dense, sparse = (
            open_dataset(tmp_path / f"{n}.zarr").bits.compute() for n in ("g.npy", "g.npz")
        )
        np.testing.assert_array_equal(sparse, dense)


def test_nonzero_binarization() -> None:
    assert _Binarization("nonzero").apply(np.array([[0, 1, 7]]), 0).tolist() == [
        [False, True, True]
    ]
    assert _Binarization("nonzero").to_attrs() == {"method": "nonzero"}


def test_info_shows_density_and_names(tmp_path: Path, rows: Rows, bmm) -> None:
    text = ",".join(rows.names) + "\n" + "".join(",".join(map(str, x)) + "\n" for x in rows.X)
    (tmp_path / "x.csv").write_text(text)
    _ingested(bmm, tmp_path / "x.csv", tmp_path / "d.zarr")
    result = bmm("info", tmp_path / "d.zarr")
    assert result.code == 0, result.err
    ones = int((rows.X > 0).sum())
    assert "features       13, named (w00, w01, w02, w03, w04, ...)" in result.out
    assert f"density        {ones / rows.X.size:.4g} ({ones:,} ones)" in result.out
    assert "nonzero" in result.out and "source         data: x.csv (md5" in result.out
    info = json.loads(bmm("info", "--json", tmp_path / "d.zarr").out)
    assert info["n_ones"] == ones and info["density"] == pytest.approx(ones / rows.X.size)
    assert info["named_features"] == 13 and info["first_feature_names"][0] == "w00"


def test_a_missing_optional_package_is_one_line(
    tmp_path: Path, bmm, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "x.parquet").write_bytes(b"PAR1")
    (tmp_path / "x.h5").write_bytes(b"")
    for module in ("pyarrow", "pyarrow.parquet", "h5py"):
        monkeypatch.setitem(sys.modules, module, None)  # import raises ImportError
    assert_one_line_error(
        bmm("ingest", tmp_path / "x.parquet", "--out", tmp_path / "d.zarr"),
        "x.parquet: reading Parquet needs pyarrow: pip install 'bmm-dask[parquet]'",
    )
    assert_one_line_error(
        bmm("ingest", f"{tmp_path / 'x.h5'}:/data", "--out", tmp_path / "d.zarr"),
        "x.h5: reading HDF5 needs h5py: pip install 'bmm-dask[hdf5]'",
    )


def test_open_rows_reads_blocks_of_the_size_asked(tmp_path: Path, rows: Rows) -> None:
    dump_svmlight_file(rows.X, rows.y, str(tmp_path / "d.svm"), zero_based=False)
    source = open_rows(tmp_path / "d.svm", n_features=13)
    assert (source.n_samples, source.n_features) == (23, 13)
    blocks = list(source.blocks(10))
    assert [b.start for b in blocks] == [0, 10, 20]
    assert sum(b.X.shape[0] for b in blocks) == 23
    with pytest.raises(DataError, match="line 2: feature index 0"):
        (tmp_path / "z.svm").write_text("1 1:1\n0 0:1 2:1\n")
        open_rows(tmp_path / "z.svm", zero_based=False)


# --------------------------------------------------------------------------- bad input


@pytest.fixture(scope="module")
def workspace(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Files of every format, good and bad, made once; the cases must leave them as they are."""
    ws = tmp_path_factory.mktemp("formats")
    text = {
        "good.svm": "1 1:1 3:2\n0 2:1\n",
        "zero.svm": "1 1:1\n0 0:1 2:1\n",
        "unsorted.svm": "1 1:1\n1 1:1\n0 3:1 2:1\n",
        "nan.svm": "1 1:1\n0 2:nan\n",
        "negative.svm": "1 1:1\n# a comment\n0 2:-2\n",
        "target.svm": "cat 1:1\n",
        "pairs.svm": "1 1:1\n0 2:x\n",
        "counts.mtx": "%%MatrixMarket matrix coordinate integer general\n3 4 2\n1 1 1\n3 4 2\n",
        "entries.mtx": "%%MatrixMarket matrix coordinate integer general\n3 4 3\n1 1 1\n3 4 2\n",
        "range.mtx": "%%MatrixMarket matrix coordinate integer general\n3 4 2\n1 1 1\n9 2 1\n",
        "negative.mtx": "%%MatrixMarket matrix coordinate real general\n3 4 2\n1 1 1\n2 2 -1.5\n",
        "word.mtx": "%%MatrixMarket matrix coordinate real general\n3 4 2\n1 1 1\n2 2 x\n",
        "short.mtx": "%%MatrixMarket matrix coordinate real general\n3 4 2\n1 1 1\n2 2\n",
        "array.mtx": "%%MatrixMarket matrix array real general\n2 2\n1\n0\n0\n1\n",
        "complex.mtx": "%%MatrixMarket matrix coordinate complex general\n2 2 1\n1 1 1 0\n",
        "good.csv": "a,b,label\n1,0,3\n0,1,4\n",
        "ragged.csv": "a,b,c\n1,0,1\n1,0\n",
        "word.csv": "a,b\n1,0\n0,x\n",
        "empty-cell.csv": "a,b\n1,\n",
        "negative.csv": "a,b\n1,0\n-1,0\n",
        "label.csv": "a,label\n1,3\n0,cat\n",
        "header-only.csv": "a,b\n",
        "baskets.csv": "id,items\n1,milk bread\n2,eggs\n",
        "vocab.txt": "milk\nbread\n",
        "two-names.txt": "a\nb\n",
        "twice.txt": "a\nb\nb\n",
        "fake.h5": "not HDF5\n",
        "fake.parquet": "not Parquet\n",
    }
    for name, content in text.items():
        (ws / name).write_text(content)
    np.savez(ws / "dense.npz", a=np.zeros(3))
    bad = scipy.sparse.csr_array(np.array([[1.0, 0], [0, 0], [0, -2.0]]))
    scipy.sparse.save_npz(ws / "negative.npz", bad)
    scipy.sparse.save_npz(ws / "good.npz", scipy.sparse.csr_array(np.eye(3)))
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq

        pq.write_table(pa.table({"a": [1, 0], "name": ["x", "y"]}), ws / "text.parquet")
        pq.write_table(pa.table({"a": [1, 0, 1, None]}), ws / "null.parquet")
        pq.write_table(pa.table({"a": [1.0, float("nan")]}), ws / "nan.parquet")
        pq.write_table(pa.table({"a": [1, 0], "y": [0.5, 1.5]}), ws / "float-label.parquet")
        pq.write_table(pa.table({"items": [["milk"], ["tea", "milk"]]}), ws / "baskets.parquet")
    except ImportError:
        pass
    try:
        import h5py

        with h5py.File(ws / "x.h5", "w") as f:
            f["g/x"] = np.ones((3, 2), dtype=np.uint8)
            f["g/y"] = np.ones((3, 2), dtype=np.uint8)
            f["flat"] = np.ones(3)
    except ImportError:
        pass
    np.save(ws / "counts.npy", np.array([[0, 3, 1], [2, 0, 0]], dtype=np.int32))
    zarr.create_array(ws / "counts.zarr", shape=(2, 3), dtype="f4")[:] = [[0, 2, 1], [0, 0, 1]]
    zarr.create_group(ws / "group.zarr").create_array("a", shape=(2, 2), dtype="u1")
    zarr.create_array(ws / "flat.zarr", shape=(4,), dtype="u1")
    ingest(ws / "good.npz", ws / "data.zarr")
    return ws


@dataclass(frozen=True)
class Case:
    """An ingest command line (run in the workspace) and what its one line of error must name."""

    args: tuple[str, ...]
    needles: tuple[str, ...]
    needs: str | None = None  # an optional package the case reads with


def case(*args: str, names: str | tuple[str, ...], needs: str | None = None) -> Case:
    return Case(
        ("ingest", *args, "--out", "d.zarr"), (names,) if isinstance(names, str) else names, needs
    )


CASES: dict[str, Case] = {
    # svmlight
    "svmlight index 0 when 1-based": case(
        "zero.svm", "--one-based", names="zero.svm: line 2: feature index 0 but indices are 1-based"
    ),
    "svmlight indices out of order": case(
        "unsorted.svm", names=("unsorted.svm: line 3", "must increase along a line")
    ),
    "svmlight NaN": case("nan.svm", names="nan.svm: line 2, feature index 2: NaN"),
    "svmlight negative count": case(
        "negative.svm", names="negative.svm: line 3, feature index 2: negative value -2"
    ),
    "svmlight target not a number": case(
        "target.svm", names="target.svm: line 1: the target 'cat' is not a number"
    ),
    "svmlight value not a number": case(
        "pairs.svm", names=("pairs.svm: line 2", "label index:value")
    ),
    "svmlight index beyond --n-features": case(
        "good.svm", "--n-features", "2", names="good.svm: line 1: feature index 3 is beyond the 2"
    ),
    "svmlight vocabulary too short": case(
        "good.svm", "--feature-names", "two-names.txt", names="good.svm: line 1: feature index 3"
    ),
    "svmlight with labels of its own and --labels": case(
        "good.svm", "--labels", "vocab.txt", names=("good.svm", "carries its own labels")
    ),
    "svmlight with --columns": case(
        "good.svm", "--columns", "a", names="--columns is for CSV and Parquet files"
    ),
    # Matrix Market
    "mtx fewer entries than declared": case(
        "entries.mtx", names="entries.mtx: the header declares 3 entries but the file holds 2"
    ),
    "mtx row out of range": case("range.mtx", names="range.mtx: line 4: row 9 is not in 1..3"),
    "mtx negative value": case("negative.mtx", names="negative.mtx: line 4: negative value -1.5"),
    "mtx not a number": case("word.mtx", names="word.mtx: line 4: 'x' is not a number"),
    "mtx an entry short of a value": case(
        "short.mtx", names="short.mtx: line 4: expected 3 numbers (row, column, value); found 2"
    ),
    "mtx a dense array": case("array.mtx", names=("array.mtx", "a dense Matrix Market array")),
    "mtx complex values": case("complex.mtx", names="complex.mtx: complex values"),
    "mtx with --n-features": case(
        "counts.mtx", "--n-features", "4", names="--n-features is for svmlight files"
    ),
    "mtx with too many names": case(
        "counts.mtx", "--feature-names", "twice.txt", names="twice.txt: line 3: 'b' again"
    ),
    "mtx with too few names": case(
        "counts.mtx",
        "--feature-names",
        "two-names.txt",
        names="two-names.txt: 2 names for the 4 features",
    ),
    # .npz
    "npz of dense arrays": case(
        "dense.npz", names=("dense.npz: not a SciPy sparse matrix", "it holds the arrays a")
    ),
    "npz negative value": case(
        "negative.npz", names="negative.npz: row 2, column 1: negative value -2"
    ),
    "a missing file of names": case(
        "good.npz", "--feature-names", "missing.txt", names="missing.txt: no such file"
    ),
    # CSV
    "csv row of another width": case(
        "ragged.csv", names="ragged.csv: line 3: 2 cells; the header has 3"
    ),
    "csv word in a column": case(
        "word.csv", names="word.csv: line 3, column 'b': 'x' is not a number"
    ),
    "csv empty cell": case(
        "empty-cell.csv", names="empty-cell.csv: line 2, column 'b': an empty cell"
    ),
    "csv negative count": case(
        "negative.csv", names="negative.csv: line 3, column 'a': negative value -1"
    ),
    "csv label not whole": case(
        "label.csv",
        "--label-column",
        "label",
        names="label.csv: line 3, column 'label': label 'cat'",
    ),
    "csv no rows": case("header-only.csv", names="header-only.csv: a header but no rows"),
    "csv no such label column": case(
        "good.csv",
        "--label-column",
        "topic",
        names="good.csv: no column 'topic' (for --label-column)",
    ),
    "csv items and columns": case(
        "baskets.csv",
        "--items",
        "items",
        "--columns",
        "id",
        names="--columns and --items do not go together",
    ),
    "csv item outside the vocabulary": case(
        "baskets.csv",
        "--items",
        "items",
        "--feature-names",
        "vocab.txt",
        names="baskets.csv: line 3: item 'eggs' is not among the 2 feature names given",
    ),
    "csv with --zero-based": case("good.csv", "--zero-based", names="--zero-based is for svmlight"),
    "csv no column to drop": case(
        "good.csv",
        "--drop-columns",
        "site",
        names="good.csv: no column 'site' (for --drop-columns)",
    ),
    "csv columns and drop-columns": case(
        "good.csv",
        "--columns",
        "a",
        "--drop-columns",
        "b",
        names="--columns and --drop-columns do not go together",
    ),
    # Parquet
    "parquet text column": case(
        "text.parquet", names="text.parquet: column 'name' holds string", needs="pyarrow"
    ),
    "parquet missing value": case(
        "null.parquet", names="null.parquet: row 3, column 'a': a missing value", needs="pyarrow"
    ),
    "parquet NaN": case(
        "nan.parquet", names="nan.parquet: row 1, column 'a': NaN", needs="pyarrow"
    ),
    "parquet float labels": case(
        "float-label.parquet",
        "--label-column",
        "y",
        names="column 'y' holds double; labels must be integers",
        needs="pyarrow",
    ),
    "parquet item outside the vocabulary": case(
        "baskets.parquet",
        "--feature-names",
        "vocab.txt",
        names="baskets.parquet: row 1: item 'tea' is not among",
        needs="pyarrow",
    ),
    "parquet not Parquet": case(
        "fake.parquet", names="fake.parquet: cannot read as Parquet", needs="pyarrow"
    ),
    # HDF5
    "hdf5 missing dataset": case("x.h5:/g/z", names="x.h5:/g/z: no such dataset", needs="h5py"),
    "hdf5 a group": case("x.h5:/g", names="x.h5:/g: a group, not a dataset", needs="h5py"),
    "hdf5 1-dimensional": case(
        "x.h5:/flat", names="x.h5:/flat: a 1-dimensional array", needs="h5py"
    ),
    "hdf5 which dataset": case(
        "x.h5", names=("x.h5: holds /flat, /g/x, /g/y", "name the dataset"), needs="h5py"
    ),
    "hdf5 not HDF5": case("fake.h5", names="fake.h5: cannot read as HDF5", needs="h5py"),
    "hdf5 missing file": case("none.h5:/x", names="none.h5: no such file"),
    # Zarr
    "zarr a group": case("group.zarr", names="group.zarr: a Zarr group, not an array (it holds a)"),
    "zarr 1-dimensional": case("flat.zarr", names="flat.zarr: a 1-dimensional array"),
    "zarr a dataset already": case("data.zarr", names="data.zarr: a bmm-dask dataset already"),
    # counts in a dense array, under the images' threshold: every bit would be 0
    "npy counts under the threshold": case(
        "counts.npy", names=("counts.npy: every value is a count between 0 and 3", "nonzero")
    ),
    "zarr counts under the threshold": case(
        "counts.zarr", names=("counts.zarr: every value is a count between 0 and 2", "nonzero")
    ),
}


@pytest.mark.parametrize("name", list(CASES))
def test_a_bad_file_is_one_line_and_changes_nothing(
    name: str, workspace: Path, bmm, monkeypatch: pytest.MonkeyPatch
) -> None:
    case = CASES[name]
    if case.needs:
        pytest.importorskip(case.needs)
    monkeypatch.chdir(workspace)
    before = tree_snapshot(workspace)
    assert_one_line_error(bmm(*case.args), *case.needles)
    assert tree_snapshot(workspace) == before


def test_every_format_has_bad_cases() -> None:
    firsts = {c.args[1].partition(":")[0].rsplit(".", 1)[-1] for c in CASES.values()}
    assert firsts >= {"svm", "mtx", "npz", "csv", "parquet", "h5", "zarr"}


def test_a_failed_ingest_leaves_no_scratch_files(tmp_path: Path, workspace: Path) -> None:
    shutil.copy(workspace / "negative.mtx", tmp_path / "negative.mtx")
    with pytest.raises(DataError, match="negative value"):
        ingest(tmp_path / "negative.mtx", tmp_path / "d.zarr")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["negative.mtx"]


def test_svmlight_indices_that_fit_the_names_both_ways_must_say_their_base(
    tmp_path: Path, rows: Rows, bmm
) -> None:
    """No index 0, and the highest fits the vocabulary counted from 0 or from 1: a guess
    would give every word its neighbour's name."""
    X = rows.X.copy()
    X[:, 0] = 0  # the first word never occurs
    path = tmp_path / "docs.svm"
    dump_svmlight_file(X, rows.y, str(path), zero_based=True)
    vocabulary = _vocabulary(tmp_path / "vocab.txt", rows.names)
    out = tmp_path / "d.zarr"
    result = bmm("ingest", path, "--feature-names", vocabulary, "--out", out)
    assert_one_line_error(result, "docs.svm: no feature index is 0", "--zero-based", "--one-based")
    assert not out.exists()
    data = _ingested(bmm, path, out, "--feature-names", vocabulary, "--zero-based")
    np.testing.assert_array_equal(data.unpacked().compute(), (X > 0).astype(np.uint8))
    assert list(data.feature_names) == rows.names
