"""Bit packing: the layout every store uses (NumPy's big-endian packbits) and its inverse."""

from __future__ import annotations

import math

import numpy as np
import pytest

from bmm_dask._kernels import n_packed_bytes, pack_bits, unpack_bits


@pytest.mark.parametrize("n_features", [1, 7, 8, 9, 784, 1001])
def test_unpack_inverts_pack(n_features: int) -> None:
    rng = np.random.default_rng(n_features)
    X = rng.random((13, n_features)) < 0.3
    packed = pack_bits(X)
    assert packed.shape == (13, n_packed_bytes(n_features))
    assert packed.dtype == np.uint8
    np.testing.assert_array_equal(unpack_bits(packed, n_features), X.astype(np.uint8))
    assert unpack_bits(packed, n_features, np.float32).dtype == np.float32


def test_first_feature_is_the_highest_bit() -> None:
    X = np.zeros((1, 10), dtype=bool)
    X[0, 0] = X[0, 9] = True
    assert pack_bits(X).tolist() == [[0b10000000, 0b01000000]]


# --------------------------------------------------------------------------- EM kernels

from bmm_dask._kernels import (  # noqa: E402
    combine_stats,
    estep_stats,
    log_parameters,
    log_resp,
    mstep,
)


def brute_force_estep(X: np.ndarray, means: np.ndarray, weights: np.ndarray):
    """The notebook's formula, pixel by pixel, in plain Python."""
    n, d = X.shape
    k_count = len(weights)
    resp = np.zeros((n, k_count))
    loglik = np.zeros(n)
    for i in range(n):
        logp = []
        for k in range(k_count):
            total = math.log(weights[k])
            for j in range(d):
                p = means[k, j]
                total += math.log(p) if X[i, j] else math.log(1 - p)
            logp.append(total)
        top = max(logp)
        loglik[i] = top + math.log(sum(math.exp(v - top) for v in logp))
        resp[i] = [math.exp(v - loglik[i]) for v in logp]
    return resp, loglik


@pytest.mark.parametrize("seed", range(5))
def test_estep_equals_the_per_pixel_loop(seed: int) -> None:
    rng = np.random.default_rng(seed)
    n, d, k = rng.integers(1, 40), rng.integers(1, 30), rng.integers(1, 6)
    X = (rng.random((n, d)) < rng.random(d)).astype(np.uint8)
    means = rng.uniform(0.02, 0.98, size=(k, d))
    weights = rng.dirichlet(np.ones(k))
    resp, loglik = brute_force_estep(X, means, weights)

    W, b = log_parameters(means, weights, np.float64)
    stats = estep_stats(pack_bits(X), d, W, b)
    np.testing.assert_allclose(stats["resp_sum"], resp.sum(axis=0), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(stats["resp_x"], resp.T @ X, rtol=1e-12, atol=1e-12)
    assert stats["loglik"] == pytest.approx(loglik.sum(), rel=1e-12)
    assert stats["n_samples"] == n

    row_ll, log_r = log_resp(pack_bits(X), d, W, b)
    np.testing.assert_allclose(row_ll, loglik, rtol=1e-12)
    np.testing.assert_allclose(np.exp(log_r), resp, rtol=1e-10, atol=1e-12)

    W32, b32 = log_parameters(means, weights, np.float32)
    stats32 = estep_stats(pack_bits(X), d, W32, b32)
    np.testing.assert_allclose(stats32["resp_x"], resp.T @ X, rtol=1e-4, atol=1e-4)
    assert stats32["loglik"] == pytest.approx(loglik.sum(), rel=1e-5)


@pytest.mark.parametrize("k", [10, 20])
def test_float32_sub_blocks_and_pieces_agree_with_float64(k: int) -> None:
    """1,300 rows of 784 features: sub-blocks of 512 and a ragged one; for K = 10 the products
    of the full sub-blocks run on pieces of 64 rows, for K = 20 on whole sub-blocks. float32
    statistics within float32's precision of the float64 ones."""
    from bmm_dask._kernels import _piece_rows, sub_block_rows

    assert bool(_piece_rows(k, 784, sub_block_rows(k, np.dtype(np.float32)))) == (k == 10)
    rng = np.random.default_rng(k)
    means = rng.uniform(0.05, 0.95, (k, 784))
    X = rng.random((1300, 784)) < means[rng.integers(0, k, 1300)]
    packed = pack_bits(X)
    start = rng.uniform(0.3, 0.7, (k, 784)), np.full(k, 1 / k)
    exact = estep_stats(packed, 784, *log_parameters(*start, np.float64))
    fast = estep_stats(packed, 784, *log_parameters(*start, np.float32))
    assert fast["resp_x"].shape == (k, 784) and fast["resp_sum"].shape == (k,)
    np.testing.assert_allclose(fast["resp_x"], exact["resp_x"], rtol=1e-4, atol=1e-3)
    np.testing.assert_allclose(fast["resp_sum"], exact["resp_sum"], rtol=1e-4, atol=1e-3)
    assert fast["loglik"] == pytest.approx(exact["loglik"], rel=1e-6)


def test_statistics_add_up_over_blocks_in_any_split() -> None:
    rng = np.random.default_rng(0)
    X = rng.random((1000, 37)) < 0.3
    means, weights = rng.uniform(0.1, 0.9, (4, 37)), np.full(4, 0.25)
    W, b = log_parameters(means, weights, np.float64)
    whole = estep_stats(pack_bits(X), 37, W, b)
    parts = [estep_stats(pack_bits(X[a:z]), 37, W, b) for a, z in ((0, 1), (1, 333), (333, 1000))]
    combined = combine_stats(parts)
    np.testing.assert_allclose(combined["resp_x"], whole["resp_x"], rtol=1e-12)
    np.testing.assert_allclose(combined["resp_sum"], whole["resp_sum"], rtol=1e-12)
    assert combined["loglik"] == pytest.approx(whole["loglik"], rel=1e-12)
    assert combined["n_samples"] == 1000


def test_mstep_smoothing_and_clip() -> None:
    resp_sum = np.array([4.0, 0.0])
    resp_x = np.array([[0.0, 4.0, 2.0], [0.0, 0.0, 0.0]])
    means, weights = mstep(resp_sum, resp_x, 4, alpha=1.0)
    np.testing.assert_allclose(means[0], [1 / 6, 5 / 6, 0.5])
    np.testing.assert_allclose(weights, [1.0, 0.0])
    means, _ = mstep(resp_sum, resp_x, 4, alpha=0.0)
    assert means.min() > 0 and means.max() < 1  # clipped, never 0 or 1
    np.testing.assert_allclose(means[0], [1e-10, 1 - 1e-10, 0.5])
    assert np.all(np.isfinite(log_parameters(means, np.array([0.5, 0.5]))[0]))


def test_extreme_means_give_no_subnormal_slowdown_or_nan() -> None:
    X = np.zeros((300, 16), dtype=bool)
    X[::2] = True
    means = np.array([[1e-10] * 16, [1 - 1e-10] * 16])
    for dtype in (np.float32, np.float64):
        W, b = log_parameters(means, np.array([0.5, 0.5]), dtype)
        stats = estep_stats(pack_bits(X), 16, W, b)
        assert np.isfinite(stats["loglik"])
        np.testing.assert_allclose(stats["resp_sum"], [150, 150], rtol=1e-6)


def test_large_k_float32_skips_only_negligible_responsibilities() -> None:
    rng = np.random.default_rng(3)
    X = rng.random((3000, 50)) < rng.random(50)
    means = rng.uniform(0.05, 0.95, size=(80, 50))  # K >= 64: the sparse product
    weights = rng.dirichlet(np.ones(80))
    exact = estep_stats(pack_bits(X), 50, *log_parameters(means, weights, np.float64))
    fast = estep_stats(pack_bits(X), 50, *log_parameters(means, weights, np.float32))
    np.testing.assert_allclose(fast["resp_x"], exact["resp_x"], rtol=1e-4, atol=1e-3)
    np.testing.assert_allclose(fast["resp_sum"], exact["resp_sum"], rtol=1e-4, atol=1e-3)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_stacked_models_get_the_statistics_each_would_get_alone(dtype) -> None:
    from bmm_dask._kernels import stacked_stats

    rng = np.random.default_rng(0)
    packed = rng.integers(0, 256, size=(3_000, 98), dtype=np.uint8)
    sizes = [3, 10, 60]  # 73 in all: in float32, the sparse product of many components
    models = [(rng.uniform(0.05, 0.95, (k, 784)), rng.dirichlet(np.ones(k))) for k in sizes]
    params = [log_parameters(m, w, dtype) for m, w in models]
    W, b = np.vstack([p[0] for p in params]), np.concatenate([p[1] for p in params])
    stacked = stacked_stats(packed, 784, W, b, sizes, entropy=True)
    close = {"rtol": 1e-12, "atol": 1e-9} if dtype == np.float64 else {"rtol": 1e-4, "atol": 1e-2}
    for (Wm, bm), got in zip(params, stacked, strict=True):
        alone = estep_stats(packed, 784, Wm, bm)
        np.testing.assert_allclose(got["resp_x"], alone["resp_x"], **close)
        np.testing.assert_allclose(got["resp_sum"], alone["resp_sum"], **close)
        assert got["loglik"] == pytest.approx(alone["loglik"], rel=1e-6)
        assert got["n_samples"] == 3_000
        # the entropy of each row's responsibilities, summed
        _, log_r = log_resp(packed, 784, Wm.astype(np.float64), bm.astype(np.float64))
        entropy = -(np.exp(log_r) * log_r).sum()
        assert got["entropy"] == pytest.approx(entropy, rel=1e-3, abs=1e-3)


# --------------------------------------------------------------------------- sparse rows

from bmm_dask._kernels import (  # noqa: E402
    KERNEL_ENV,
    sparse_block,
    sparse_threshold,
    stacked_stats,
    unpack_sparse,
)


@pytest.mark.parametrize("n_features", [1, 7, 8, 9, 63, 64, 65, 784, 1001])
@pytest.mark.parametrize("n_rows", [1, 2, 17])
def test_unpack_sparse_gives_the_ones_of_unpack_bits(n_features: int, n_rows: int) -> None:
    rng = np.random.default_rng([n_features, n_rows])
    X = rng.random((n_rows, n_features)) < 0.1
    X[0] = False  # an empty row
    S = unpack_sparse(pack_bits(X), n_features, np.float32)
    assert S.shape == (n_rows, n_features) and S.dtype == np.float32
    assert S.has_sorted_indices
    np.testing.assert_array_equal(S.toarray(), X)


def test_unpack_sparse_drops_padding_bits_as_unpack_bits_does() -> None:
    packed = pack_bits(np.random.default_rng(0).random((5, 13)) < 0.5)
    packed[:, -1] |= 0b111  # the three padding bits of the last byte, set by a damaged store
    np.testing.assert_array_equal(unpack_sparse(packed, 13).toarray(), unpack_bits(packed, 13))


def _sparse_case(
    density: float, n_components: int = 6
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(7)
    packed = pack_bits(rng.random((600, 500)) < density)
    means = rng.uniform(0.001, 0.4, size=(n_components, 500))
    weights = rng.dirichlet(np.ones(n_components))
    return packed, means, weights


def test_a_block_takes_the_sparse_path_by_its_share_of_ones() -> None:
    sparse, means, _ = _sparse_case(0.01)
    dense, _, _ = _sparse_case(0.3)
    assert sparse_block(sparse, 500, len(means), np.float64) is not None
    assert sparse_block(dense, 500, len(means), np.float64) is None
    assert 0.005 < sparse_threshold(1, np.float32) < sparse_threshold(100, np.float32) < 0.2


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_the_sparse_estep_computes_the_dense_statistics(
    dtype: type, monkeypatch: pytest.MonkeyPatch
) -> None:
    packed, means, weights = _sparse_case(0.01)
    W, b = log_parameters(means, weights, dtype)
    stacked_W, stacked_b = np.vstack([W, W[:2]]), np.concatenate([b, b[:2]])
    results = {}
    for kernel in ("dense", "sparse"):
        monkeypatch.setenv(KERNEL_ENV, kernel)
        results[kernel] = (
            estep_stats(packed, 500, W, b),
            stacked_stats(packed, 500, stacked_W, stacked_b, [6, 2], entropy=True),
            log_resp(packed, 500, W, b),
        )
    rtol = 1e-9 if dtype == np.float64 else 1e-5
    (one, stacked, per_row), (one_s, stacked_s, per_row_s) = results["dense"], results["sparse"]
    for dense_stats, sparse_stats in [(one, one_s), *zip(stacked, stacked_s, strict=True)]:
        for key in ("resp_sum", "resp_x", "loglik", "entropy"):
            if key in dense_stats:
                scale = rtol * np.abs(dense_stats[key]).max()
                np.testing.assert_allclose(sparse_stats[key], dense_stats[key], atol=scale)
        assert sparse_stats["n_samples"] == dense_stats["n_samples"]
    np.testing.assert_allclose(per_row_s[0], per_row[0], rtol=rtol)
    np.testing.assert_allclose(per_row_s[1], per_row[1], rtol=rtol, atol=1e-9)
