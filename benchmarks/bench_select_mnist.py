"""Choosing K on MNIST: the selection curve, and the test log-likelihood of the chosen model.

Run from the repository root:

    python benchmarks/bench_select_mnist.py [--k 10 20 50 100 200] [--out /tmp/bmm_select/mnist]

Selects K on the packaged MNIST training set (60,000 images, threshold 128) with 10 % of the
rows held out (``select_n_components``, the default settings: auto, which is batch EM on
MNIST, where a stepwise pass costs more than 3 iterations; ``random_state`` 0,
Dask's threaded scheduler), writes the selection folder to ``--out`` (its ``selection.png`` is
docs/selection-mnist.png), and prints per K the held-out and training log-likelihoods, BIC, AIC,
ICL and iterations, which K each criterion picks, and the chosen model's log-likelihood on the
10,000 test images.
"""

from __future__ import annotations

import argparse
import time
import warnings

import dask

from bmm_dask import open_dataset
from bmm_dask.datasets import packaged_mnist_path
from bmm_dask.selection import select_n_components


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--k", type=int, nargs="+", default=[10, 20, 50, 100, 200])
    parser.add_argument("--out", default="/tmp/bmm_select/mnist")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    warnings.simplefilter("ignore")
    train = open_dataset(f"{packaged_mnist_path()}/train")
    test = open_dataset(f"{packaged_mnist_path()}/test")
    with dask.config.set(scheduler="threads"):
        started = time.perf_counter()
        selection = select_n_components(train, args.k, random_state=args.seed)
        seconds = time.perf_counter() - started
        test_loglik = selection.model.score(test)
    selection.save(args.out, overwrite=True)
    print(
        f"MNIST train, {selection.n_train:,} training and {selection.n_heldout:,} held-out "
        f"images; K in {args.k}; {seconds:.0f} s; wrote {args.out}"
    )
    print(f"{'K':>5} {'held-out':>9} {'train':>9} {'BIC':>12} {'AIC':>12} {'ICL':>12} {'iter':>5}")
    for r in selection.table:
        print(
            f"{r['n_components']:>5} {r['heldout_loglik']:>9.3f} {r['train_loglik']:>9.3f} "
            f"{r['bic']:>12.0f} {r['aic']:>12.0f} {r['icl']:>12.0f} {r['n_iter']:>5}"
        )
    rows = {r["n_components"]: r for r in selection.table}
    for criterion in ("heldout_loglik", "bic", "aic", "icl"):
        pick = (max if criterion == "heldout_loglik" else min)(
            rows, key=lambda k, c=criterion: rows[k][c]
        )
        print(f"  {criterion} picks K = {pick}")
    print(
        f"chosen K = {selection.n_components} (held-out log-likelihood): test log-likelihood "
        f"{test_loglik:.3f} nats per image"
    )


if __name__ == "__main__":
    main()
