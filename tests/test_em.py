"""The EM driver: equal to an in-memory NumPy EM, and the same model whatever the chunks or scheduler."""

from __future__ import annotations

from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import dask
import dask.array as da
import numpy as np
import pytest
from distributed import Client, LocalCluster
from scipy.optimize import linear_sum_assignment
from scipy.special import logsumexp

from bmm_dask import BernoulliMixture, open_dataset
from bmm_dask._estep import _estep_graph, as_packed
from bmm_dask._kernels import log_parameters
from bmm_dask.datasets import Binarization, ingest, synth


def numpy_em(X: np.ndarray, means: np.ndarray, weights: np.ndarray, alpha: float, n_iter: int):
    """EM as a user writes it with NumPy, in float64 and in memory."""
    X = X.astype(np.float64)
    for _ in range(n_iter):
        L = X @ np.log(means).T + (1 - X) @ np.log1p(-means).T + np.log(weights)
        loglik = logsumexp(L, axis=1)
        resp = np.exp(L - loglik[:, None])
        n_k = resp.sum(axis=0)
        means = (resp.T @ X + alpha) / (n_k[:, None] + 2 * alpha)
        weights = n_k / len(X)
    return means, weights


@pytest.fixture(scope="module")
def data() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(42)
    true = rng.uniform(0.05, 0.95, size=(4, 45))
    z = rng.integers(0, 4, size=3000)
    X = (rng.random((3000, 45)) < true[z]).astype(np.uint8)
    means_init = rng.uniform(0.3, 0.7, size=(4, 45))
    weights_init = np.array([0.1, 0.2, 0.3, 0.4])
    return X, means_init, weights_init


def fit(X, means_init, weights_init, **kwargs) -> BernoulliMixture:
    settings = {"max_iter": 20, "tol": 0, "alpha": 0.5, "dtype": "float64", **kwargs}
    return BernoulliMixture(4, means_init=means_init, weights_init=weights_init, **settings).fit(X)


def test_twenty_iterations_equal_numpy_em(data) -> None:
    X, means_init, weights_init = data
    want_means, want_weights = numpy_em(X, means_init, weights_init, 0.5, 20)
    model = fit(X, means_init, weights_init)
    assert model.n_iter_ == 20
    np.testing.assert_allclose(model.means_, want_means, rtol=0, atol=1e-9)
    np.testing.assert_allclose(model.weights_, want_weights, rtol=0, atol=1e-9)
    # float32 arithmetic (the default) lands close by
    model32 = fit(X, means_init, weights_init, dtype="float32")
    np.testing.assert_allclose(model32.means_, want_means, atol=1e-4)


@pytest.mark.parametrize("chunks", [3000, 1000, 777, 64])
def test_same_model_whatever_the_chunking(data, chunks: int) -> None:
    X, means_init, weights_init = data
    reference = fit(X, means_init, weights_init)
    model = fit(da.from_array(X, chunks=(chunks, 45)), means_init, weights_init)
    np.testing.assert_allclose(model.means_, reference.means_, rtol=0, atol=1e-9)
    np.testing.assert_allclose(model.weights_, reference.weights_, rtol=0, atol=1e-9)


@pytest.mark.slow
@pytest.mark.parametrize("shape", ["one block", "several blocks"])
def test_same_model_bit_for_bit_on_any_scheduler(data, tmp_path: Path, shape: str) -> None:
    if shape == "one block":  # stored in six chunks, one E-step task
        X, _, _ = data
        np.save(tmp_path / "x.npy", X)
        path = ingest(
            tmp_path / "x.npy",
            tmp_path / "x.zarr",
            chunk_rows=500,
            binarization=Binarization("none"),
        )
    else:  # three E-step tasks of 10,240 rows and a tree of sums
        path = synth(tmp_path / "x.zarr", n_samples=25_000, n_features=784, n_components=4, seed=5)
    store = open_dataset(path)

    def run() -> BernoulliMixture:
        model = BernoulliMixture(
            4, max_iter=15, tol=0, dtype="float64", init="kmeans++", random_state=7
        )
        return model.fit(store)

    reference = run()
    results = {}
    for scheduler in ("synchronous", "threads"):
        with dask.config.set(scheduler=scheduler):
            results[scheduler] = run()
    # dask's process scheduler starts a pool a compute unless given one
    with ProcessPoolExecutor(2) as pool, dask.config.set(scheduler="processes", pool=pool):
        results["processes"] = run()
    for n_workers in (1, 3):
        with (
            LocalCluster(
                n_workers=n_workers,
                threads_per_worker=1,
                processes=True,
                host="127.0.0.1",
                dashboard_address=None,
            ) as cluster,
            Client(cluster),
        ):
            results[f"distributed, {n_workers} workers"] = run()
    for name, model in results.items():
        assert np.array_equal(model.means_, reference.means_), name
        assert np.array_equal(model.weights_, reference.weights_), name
        assert model.lower_bound_ == reference.lower_bound_, name


def test_random_state_fixes_everything(data) -> None:
    X, _, _ = data
    for init in ("random", "random_from_data", "kmeans++"):
        a = BernoulliMixture(4, init=init, random_state=3, max_iter=5, tol=0, n_init=2).fit(X)
        b = BernoulliMixture(4, init=init, random_state=3, max_iter=5, tol=0, n_init=2).fit(X)
        c = BernoulliMixture(4, init=init, random_state=4, max_iter=5, tol=0, n_init=2).fit(X)
        assert np.array_equal(a.means_, b.means_), init
        assert not np.array_equal(a.means_, c.means_), init


def assert_streaming_equals_persisting(data, max_iter: int) -> None:
    """The same model, bit for bit, whether the data is held in memory or read every iteration."""
    from bmm_dask._em import fit_em

    settings = {"n_components": 3, "max_iter": max_iter, "tol": 0, "dtype": np.float64}
    held = fit_em(data, rng=np.random.default_rng(0), persist=True, **settings)
    streamed = fit_em(data, rng=np.random.default_rng(0), persist=False, **settings)
    np.testing.assert_array_equal(held.means, streamed.means)


def test_streaming_from_zarr_equals_persisting(tmp_path: Path) -> None:
    out = synth(
        tmp_path / "s.zarr", n_samples=4000, n_features=20, n_components=3, seed=1, chunk_rows=700
    )
    data = as_packed(open_dataset(out))
    assert_streaming_equals_persisting(data, max_iter=10)


@pytest.mark.parametrize("inline", [True, False])
def test_one_graph_an_iteration_with_bmm_task_names(
    data, inline: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    import bmm_dask._estep

    if not inline:  # large parameters travel as a task of their own
        monkeypatch.setattr(bmm_dask._estep, "INLINE_PARAMETERS", 0)
    X, means_init, weights_init = data
    packed = as_packed(da.from_array(X, chunks=(100, 45)))
    W, b = log_parameters(means_init, weights_init)
    parts = _estep_graph(packed, W, b, 8)
    assert len(parts) == 4  # 30 blocks -> 4 partial sums (of 8, 8, 8 and 6) for the driver
    graph = dict(parts[0].__dask_graph__())
    names = {k[0] if isinstance(k, tuple) else k for k in graph}
    ours = {name.rsplit("-", 1)[0] for name in names if name.startswith("bmm-")}
    assert {"bmm-estep", "bmm-combine", "bmm-pack"} <= ours
    assert ("bmm-params" in ours) is not inline
    assert sum(1 for k in graph if isinstance(k, tuple) and k[0].startswith("bmm-estep")) == 30
    assert all(name.startswith(("bmm-", "array-")) for name in names)  # array-: the NumPy input


def test_streamed_groups_of_chunks_equal_persisting(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With many chunks a streamed task reads a group of eight and sums them: the tree's first
    level in one task, giving the same model, bit for bit, as a task a chunk."""
    import bmm_dask._estep
    from bmm_dask._estep import _read_estep_group, task_blocks

    monkeypatch.setattr(bmm_dask._estep, "default_chunk_rows", lambda n_features: 100)
    monkeypatch.setattr(bmm_dask._estep, "_cluster_threads", lambda: 1)
    out = synth(
        tmp_path / "s.zarr", n_samples=2050, n_features=30, n_components=3, seed=4, chunk_rows=100
    )
    data = task_blocks(as_packed(open_dataset(out)))
    assert data.reader is not None and len(data.bits.chunks[0]) == 21
    W, b = log_parameters(np.full((3, 30), 0.5), np.full(3, 1 / 3))
    graph = dict(_estep_graph(data, W, b, 8)[0].__dask_graph__())
    groups = [task for task in graph.values() if task[0] is _read_estep_group]
    assert [task[2] for task in groups] == [
        list(range(0, 900, 100)),
        list(range(800, 1700, 100)),
        [1600, 1700, 1800, 1900, 2000, 2050],
    ]
    assert not any(str(k).startswith("('bmm-combine") for k in graph)  # 3 partial sums
    assert_streaming_equals_persisting(data, max_iter=6)


def test_recovers_a_known_mixture(tmp_path: Path) -> None:
    """K = 8, D = 64, 50,000 rows: means within 0.02 of the truth and weights within 0.01."""
    out = synth(tmp_path / "s.zarr", n_samples=50_000, n_features=64, n_components=8, seed=11)
    dataset = open_dataset(out)
    model = BernoulliMixture(8, n_init=3, random_state=0, tol=1e-6, max_iter=300).fit(dataset)
    true_means, true_weights = dataset.read_array("true_means"), dataset.read_array("true_weights")
    cost = np.abs(model.means_[:, None, :] - true_means[None, :, :]).sum(axis=2)
    rows, cols = linear_sum_assignment(cost)
    assert np.abs(model.means_[rows] - true_means[cols]).max() < 0.02
    assert np.abs(model.weights_[rows] - true_weights[cols]).max() < 0.01
    assert model.converged_


@pytest.mark.slow
def test_the_same_parameters_twice_on_a_distributed_cluster(data) -> None:
    """EM at a fixed point asks for the same E-step again: it must not race the last one."""
    from bmm_dask._estep import estep

    X, means_init, weights_init = data
    packed = as_packed(da.from_array(X, chunks=(500, 45)))
    with (
        LocalCluster(
            n_workers=2, threads_per_worker=1, processes=False, dashboard_address=None
        ) as cluster,
        Client(cluster),
    ):
        results = [estep(packed, means_init, weights_init, dtype=np.float64) for _ in range(5)]
    for result in results[1:]:
        np.testing.assert_array_equal(result["resp_x"], results[0]["resp_x"])


def test_streamed_blocks_read_their_own_chunk(tmp_path: Path) -> None:
    """Data streamed from a store chunked as the E-step wants: one task a chunk reads and computes."""
    from bmm_dask._estep import task_blocks

    out = synth(tmp_path / "s.zarr", n_samples=25_000, n_features=784, n_components=3, seed=2)
    data = task_blocks(as_packed(open_dataset(out)))
    assert data.reader is not None and data.bits.chunks[0] == (10240, 10240, 4520)
    W, b = log_parameters(np.full((3, 784), 0.5), np.full(3, 1 / 3))
    graph = dict(_estep_graph(data, W, b, 8)[0].__dask_graph__())
    assert not any(str(k).startswith(("bmm-read", "('bmm-read")) for k in graph)  # no read tasks
    assert_streaming_equals_persisting(data, max_iter=6)
