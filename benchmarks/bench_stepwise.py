"""Stepwise EM against batch EM on MNIST: passes over the data, wall time, test log-likelihood.

Run from the repository root:  python benchmarks/bench_stepwise.py [--k 100] [--scheduler threads]

MNIST binarised at 128 (the copy inside the package), float32, the same k-means++ start for
every algorithm (the same random_state). Batch EM runs to its tolerance (1e-4); "stepwise" runs
its passes alone; "auto" runs the stepwise passes, then batch EM to the same tolerance. A pass
is one read of every training row (a batch iteration or a stepwise pass). Side by side in one
run; the figures go to the README.
"""

from __future__ import annotations

import argparse
import contextlib
import time
import warnings

import dask

from bmm_dask import BernoulliMixture, open_dataset
from bmm_dask.datasets import packaged_mnist_path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--k", type=int, default=100)
    parser.add_argument("--passes", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument("--batch-size", default="auto")
    parser.add_argument("--scheduler", choices=["threads", "cluster"], default="threads")
    args = parser.parse_args()
    warnings.simplefilter("ignore")
    train = open_dataset(f"{packaged_mnist_path()}/train")
    test = open_dataset(f"{packaged_mnist_path()}/test")
    batch_size = args.batch_size if args.batch_size == "auto" else int(args.batch_size)
    runs = [("batch", {})]
    for passes in args.passes:
        runs.append(("stepwise", {"passes": passes}))
        runs.append(("auto", {"passes": passes}))
    if args.scheduler == "cluster":
        from bmm_dask.cluster import open_client

        context = open_client(workers=2, threads_per_worker=1, dashboard_address="127.0.0.1:0")
    else:
        context = contextlib.nullcontext()
    print(f"MNIST K = {args.k}, float32, scheduler: {args.scheduler}")
    print(f"{'algorithm':<22} {'passes':>7} {'seconds':>8} {'test nats per image':>20}")
    reference = None
    with context, dask.config.set(scheduler="threads" if args.scheduler == "threads" else None):
        for algorithm, settings in runs:
            model = BernoulliMixture(
                args.k, algorithm=algorithm, batch_size=batch_size, random_state=0, **settings
            )
            started = time.perf_counter()
            model.fit(train)
            seconds = time.perf_counter() - started
            score = model.score(test)
            if reference is None:
                reference = (model.n_iter_, seconds, score)
            name = algorithm + (f" ({settings['passes']} passes)" if settings else "")
            print(
                f"{name:<22} {model.n_iter_:>7} {seconds:>8.1f} {score:>20.3f}"
                f"   vs batch: {model.n_iter_ / reference[0]:.2f}x passes, "
                f"{seconds / reference[1]:.2f}x time, {score - reference[2]:+.3f} nats"
                + (f", mini-batches of {model.batch_size_}" if model.batch_size_ else "")
            )


if __name__ == "__main__":
    main()
