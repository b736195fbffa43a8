"""Cluster benchmark: time an EM iteration with two worker processes against Dask's threaded scheduler.

Run from the repository root:  python benchmarks/bench_cluster.py [--iterations 30] [--rounds 3]

MNIST training set (60,000 x 784, the copy inside the package), K = 10, float32, the same start.
"threads": no cluster, Dask's threaded scheduler in this process (two threads on two cores).
"2 processes": the local cluster `bmm-dask fit` starts (two worker processes of one thread, on
127.0.0.1). Rounds alternate between the two so that both see the same machine; the figure is the
median over all iterations of all rounds.
"""

from __future__ import annotations

import argparse
import statistics
import warnings

import numpy as np

from bmm_dask import BernoulliMixture, open_dataset
from bmm_dask.cluster import open_client
from bmm_dask.datasets import packaged_mnist_path


def iteration_times(train, means, weights, n_iter: int) -> list[float]:
    model = BernoulliMixture(
        10,
        algorithm="batch",
        means_init=means,
        weights_init=weights,
        max_iter=n_iter,
        tol=0,
    )
    return [h["seconds"] for h in model.fit(train).history_[1:]]  # the first carries the persist


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iterations", type=int, default=30)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    warnings.simplefilter("ignore")
    train = open_dataset(f"{packaged_mnist_path()}/train")
    rng = np.random.default_rng(0)
    means, weights = rng.uniform(0.25, 0.75, size=(10, 784)), np.full(10, 0.1)
    times: dict[str, list[float]] = {"threads": [], "2 processes": []}
    with open_client(workers=2, threads_per_worker=1, dashboard_address="127.0.0.1:0") as client:
        for _ in range(args.rounds):
            times["2 processes"] += iteration_times(train, means, weights, args.iterations)
            with client.as_current(), __import__("dask").config.set(scheduler="threads"):
                times["threads"] += iteration_times(train, means, weights, args.iterations)
    threads = statistics.median(times["threads"])
    processes = statistics.median(times["2 processes"])
    print("# MNIST K = 10, float32: median time an EM iteration")
    print(f"threaded scheduler (2 threads)     {threads * 1000:6.1f} ms")
    print(
        f"local cluster (2 worker processes) {processes * 1000:6.1f} ms   ratio {processes / threads:.2f}"
    )


if __name__ == "__main__":
    main()
