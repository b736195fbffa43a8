"""EM benchmark: time per iteration against a straightforward NumPy EM, and model quality on MNIST.

Run from the repository root:  python benchmarks/bench_em.py [--iterations 30] [--skip-quality]

Speed: the MNIST training set (60,000 x 784, threshold 128, the copy inside the package), K = 10
and K = 500, both EMs started from the same means and weights. The reference is the EM a user
writes with NumPy: X in memory as float64, ``L = X @ log(mu).T + (1 - X) @ log(1 - mu).T +
log(pi)``, scipy's logsumexp, ``resp.T @ X``; NumPy's BLAS uses every core. Ours is
``BernoulliMixture(dtype="float32")`` on the opened Zarr dataset with Dask's default (threaded)
scheduler, the data persisted in memory; its time per iteration is what ``history_`` records
(graph, compute, M-step). Medians over the iterations, in the same process, one after the other.

Quality: the mean log-likelihood per test image (nats) of models fitted on the training set.
"""

from __future__ import annotations

import argparse
import statistics
import time
import warnings

import numpy as np
from scipy.special import logsumexp

from bmm_dask import BernoulliMixture, open_dataset
from bmm_dask.datasets import packaged_mnist_path


def numpy_em_times(
    X: np.ndarray, means: np.ndarray, weights: np.ndarray, n_iter: int, alpha: float = 1.0
) -> list[float]:
    times = []
    for _ in range(n_iter):
        start = time.perf_counter()
        L = X @ np.log(means).T + (1 - X) @ np.log(1 - means).T + np.log(weights)
        loglik = logsumexp(L, axis=1)
        resp = np.exp(L - loglik[:, None])
        n_k = resp.sum(axis=0)
        means = (resp.T @ X + alpha) / (n_k[:, None] + 2 * alpha)
        weights = n_k / len(X)
        times.append(time.perf_counter() - start)
    return times


def ours_times(train, means, weights, n_iter: int, dtype: str) -> list[float]:
    model = BernoulliMixture(
        len(weights),
        algorithm="batch",
        means_init=means,
        weights_init=weights,
        max_iter=n_iter,
        tol=0,
        dtype=dtype,
    )
    model.fit(train)
    return [h["seconds"] for h in model.history_]


def speed(train, X: np.ndarray, k: int, n_iter: int) -> None:
    rng = np.random.default_rng(0)
    means, weights = rng.uniform(0.25, 0.75, size=(k, 784)), np.full(k, 1 / k)
    reference = statistics.median(numpy_em_times(X, means, weights, max(3, n_iter // 3)))
    ours32 = statistics.median(ours_times(train, means, weights, n_iter, "float32"))
    ours64 = statistics.median(ours_times(train, means, weights, max(3, n_iter // 3), "float64"))
    print(f"K = {k:3d}  NumPy float64 EM  {reference * 1000:8.1f} ms per iteration")
    print(
        f"        bmm_dask float32   {ours32 * 1000:8.1f} ms   ratio {reference / ours32:5.1f}x faster"
    )
    print(
        f"        bmm_dask float64   {ours64 * 1000:8.1f} ms   ratio {reference / ours64:5.1f}x faster",
        flush=True,
    )


def quality(train, test, k: int, n_init: int) -> None:
    start = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = BernoulliMixture(
            k, algorithm="batch", n_init=n_init, random_state=0, max_iter=300
        ).fit(train)
    seconds = time.perf_counter() - start
    print(
        f"K = {k:3d}, n_init = {n_init}: test log-likelihood {model.score(test):8.2f} nats per image, "
        f"train {model.score(train):8.2f}; {model.n_iter_} iterations (best start), "
        f"converged {model.converged_}, fit {seconds:.0f} s",
        flush=True,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iterations", type=int, default=30)
    parser.add_argument("--skip-quality", action="store_true")
    parser.add_argument("--skip-speed", action="store_true")
    args = parser.parse_args()
    train = open_dataset(f"{packaged_mnist_path()}/train")
    test = open_dataset(f"{packaged_mnist_path()}/test")
    if not args.skip_speed:
        X = train.unpacked(np.float64).compute()
        print("# Time an EM iteration, MNIST training set (60,000 x 784), median")
        speed(train, X, 10, args.iterations)
        speed(train, X, 500, max(5, args.iterations // 6))
        del X
    if not args.skip_quality:
        print("\n# Quality: mean log-likelihood of the 10,000 test images, fitted on the 60,000")
        quality(train, test, 10, 5)
        quality(train, test, 100, 1)


if __name__ == "__main__":
    main()
