"""Sparse rows: SciPy sparse input, the sparse E-step inside a fit, wide rows.

The sparse E-step must give the model the dense one gives (float64, within rounding), and a
SciPy sparse matrix, or a Dask array of them, the model its dense array gives.
"""

from __future__ import annotations

import re

import dask
import dask.array as da
import numpy as np
import pytest
import scipy.sparse

from bmm_dask import BernoulliMixture
from bmm_dask._estep import as_packed, estep
from bmm_dask._kernels import KERNEL_ENV, pack_bits
from bmm_dask.errors import DataError
from bmm_dask.io import DatasetWriter, open_dataset


def _documents(n_rows: int = 3000, n_features: int = 600, seed: int = 0) -> np.ndarray:
    """Rows like short documents: three topics, each with a few frequent words, 1-2 % ones."""
    rng = np.random.default_rng(seed)
    means = np.where(rng.random((3, n_features)) < 0.03, 0.4, 0.004)
    topic = rng.integers(0, 3, n_rows)
    return rng.random((n_rows, n_features)) < means[topic]


def _model(**settings: object) -> BernoulliMixture:
    return BernoulliMixture(3, random_state=0, dtype="float64", max_iter=30, **settings)


def test_a_sparse_matrix_fits_the_model_of_its_dense_array() -> None:
    X = _documents()
    dense = _model().fit(X)
    sparse = _model().fit(scipy.sparse.csr_matrix(X))
    dask_sparse = _model().fit(
        da.from_array(scipy.sparse.csr_matrix(X), chunks=(700, X.shape[1]), asarray=False)
    )
    np.testing.assert_allclose(sparse.means_, dense.means_, rtol=0, atol=1e-12)
    np.testing.assert_allclose(dask_sparse.means_, dense.means_, rtol=0, atol=1e-9)
    S = scipy.sparse.csr_array(X)
    np.testing.assert_array_equal(sparse.predict(S), dense.predict(X))
    np.testing.assert_allclose(sparse.score_samples(S), dense.score_samples(X), rtol=1e-12)
    np.testing.assert_allclose(sparse.predict_proba(S), dense.predict_proba(X), atol=1e-12)
    assert sparse.score(S) == pytest.approx(dense.score(X), rel=1e-12)


def test_partial_fit_takes_sparse_matrices() -> None:
    X = _documents()
    dense, sparse = _model(), _model()
    for block in np.array_split(np.arange(len(X)), 3):
        dense.partial_fit(X[block])
        sparse.partial_fit(scipy.sparse.csr_matrix(X[block]))
    np.testing.assert_allclose(sparse.means_, dense.means_, rtol=0, atol=1e-12)


def test_the_sparse_estep_fits_the_dense_estep_model(monkeypatch: pytest.MonkeyPatch) -> None:
    X = _documents()
    models = {}
    for kernel in ("dense", "sparse"):
        monkeypatch.setenv(KERNEL_ENV, kernel)
        models[kernel] = _model().fit(X)
    monkeypatch.delenv(KERNEL_ENV)
    assert models["dense"].n_iter_ == models["sparse"].n_iter_
    np.testing.assert_allclose(models["sparse"].means_, models["dense"].means_, atol=1e-9)
    np.testing.assert_allclose(models["sparse"].weights_, models["dense"].weights_, atol=1e-9)


@pytest.mark.parametrize(
    "matrix",
    [scipy.sparse.csr_matrix([[2, 0], [0, 1]]), scipy.sparse.csr_matrix([[0.5, 0], [0, 1]])],
)
def test_a_sparse_matrix_of_other_values_is_refused(matrix: scipy.sparse.csr_matrix) -> None:
    with pytest.raises(DataError, match="only 0 and 1"):
        _model().fit(matrix)


def test_an_empty_sparse_matrix_is_refused() -> None:
    with pytest.raises(DataError, match="at least one sample and one feature"):
        _model().fit(scipy.sparse.csr_matrix((0, 5)))


def test_wide_rows_fit_in_chunks_of_many_rows(tmp_path) -> None:
    """100,000 features: the rows travel packed in chunks of thousands of rows, and the model
    finds the topics."""
    rng = np.random.default_rng(1)
    n_rows, n_features = 4000, 100_000
    topic = rng.integers(0, 2, n_rows)
    n_noise = int(2e-4 * n_rows * n_features)
    # each row has about half of its topic's 50 words, and a few others
    words = rng.random((n_rows, 50)) < 0.5
    row, word = np.nonzero(words)
    rows = np.concatenate([rng.integers(0, n_rows, n_noise), row])
    cols = np.concatenate([rng.integers(0, n_features, n_noise), word + 50 * topic[row]])
    X = scipy.sparse.csr_matrix((np.ones(len(rows)), (rows, cols)), shape=(n_rows, n_features))
    X.data[:] = 1  # a word drawn twice is present once
    data = as_packed(X)
    assert data.bits.chunks[0][0] == n_rows  # one chunk: at least 4,096 rows of wide rows
    model = BernoulliMixture(2, random_state=0, max_iter=20).fit(X)
    assert model.means_.shape == (2, n_features)
    found = np.argmax(model.predict_proba(X), axis=1)
    agreement = max(np.mean(found == topic), np.mean(found != topic))
    assert agreement > 0.99


def test_a_streamed_group_read_a_chunk_at_a_time_gives_the_same_sums(
    tmp_path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import bmm_dask._estep as estep_module

    X = _documents(n_rows=4000)
    writer = DatasetWriter.create(
        tmp_path / "d.zarr", n_samples=4000, n_features=600, chunk_rows=100
    )
    writer.write(0, pack_bits(X))
    data = as_packed(open_dataset(tmp_path / "d.zarr"))
    means = np.random.default_rng(0).uniform(0.01, 0.3, (3, 600))
    weights = np.full(3, 1 / 3)
    at_once = estep(data, means, weights, dtype=np.float64, threads=1)
    monkeypatch.setattr(estep_module, "GROUP_READ_BYTES", 0)
    chunk_by_chunk = estep(data, means, weights, dtype=np.float64, threads=1)
    np.testing.assert_array_equal(chunk_by_chunk["resp_x"], at_once["resp_x"])
    np.testing.assert_array_equal(chunk_by_chunk["resp_sum"], at_once["resp_sum"])
    assert chunk_by_chunk["loglik"] == at_once["loglik"]


@pytest.mark.parametrize(
    ("density", "held_for", "n_components", "dtype"),
    [(0.008, 3, 3, np.float64), (0.011, 10, 1, np.float32)],  # the second: held, not taken
)
def test_persisted_sparse_chunks_give_the_sums_of_streamed_rows(
    tmp_path, density: float, held_for: int, n_components: int, dtype: type
) -> None:
    from bmm_dask._estep import data_density, with_sparse_chunks

    rng = np.random.default_rng(3)
    X = rng.random((3000, 800)) < density
    writer = DatasetWriter.create(
        tmp_path / "d.zarr", n_samples=3000, n_features=800, chunk_rows=150
    )
    writer.write(0, pack_bits(X))
    streamed = as_packed(open_dataset(tmp_path / "d.zarr"))
    bits = streamed.bits.persist()
    held = with_sparse_chunks(type(streamed)(bits, 800), held_for, dtype, data_density(streamed))
    assert held.sparse is not None
    assert all(
        scipy.sparse.issparse(rows) for group in dask.compute(*held.sparse) for rows in group
    )
    means = rng.uniform(0.001, 0.05, (n_components, 800))
    weights = np.full(n_components, 1 / n_components)
    one = estep(streamed, means, weights, dtype=dtype, threads=1)
    other = estep(held, means, weights, dtype=dtype, threads=1)
    np.testing.assert_array_equal(other["resp_x"], one["resp_x"])
    np.testing.assert_array_equal(other["resp_sum"], one["resp_sum"])
    assert other["loglik"] == one["loglik"]


@pytest.mark.parametrize(
    ("given", "says"),
    [
        (lambda m: np.asarray(m), "holding a SciPy sparse matrix (np.asarray of one)"),
        (lambda m: {"rows": m}, "got a builtins.dict"),
    ],
    ids=["np.asarray of a sparse matrix", "a dict"],
)
def test_what_is_not_rows_is_named(given, says: str) -> None:
    # a sparse matrix through np.asarray was refused as "2-dimensional ... got shape ()"
    matrix = scipy.sparse.csr_matrix([[1, 0], [0, 1]])
    with pytest.raises(DataError, match=re.escape(says)):
        BernoulliMixture(2).fit(given(matrix))
