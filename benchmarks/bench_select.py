"""Choosing K in shared passes against one fit per K, side by side on one local cluster.

Run from the repository root:

    python benchmarks/bench_select.py [--n 1000000] [--k 5 10 20 50] [--workdir /tmp/bmm_select]

What it does:

1. Draws ``--n`` rows of 784 bits from a mixture of ``--truth`` components with
   ``bmm_dask.datasets.synth`` into ``--workdir`` (reused when there).
2. On a local cluster of 2 worker processes of one thread, the data streamed from Zarr every
   pass (``persist=False``):

   - ``select_n_components`` over ``--k`` (batch EM to ``--tol``, at most ``--max-iter``
     iterations, 10 % of the rows held out): k-means++ starts, the shared iterations, the
     scoring of the training and held-out rows;
   - then, for every K, one ``BernoulliMixture`` fit of its own on the same training rows, with
     the same settings and exactly as many iterations as that K ran in the selection
     (``max_iter`` = its iterations, ``tol=0``), its own k-means++ start, then its score on the
     held-out rows: what a user selecting by hand runs.

Printed: the time of each, and the ratio (target: the selection at most 0.6 of the separate
fits), with the iterations and held-out log-likelihoods, so that the two can be seen to do the
same work.
"""

from __future__ import annotations

import argparse
import time
import warnings
from pathlib import Path

from bmm_dask import BernoulliMixture, open_dataset
from bmm_dask.datasets import synth


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=1_000_000, help="rows")
    parser.add_argument("--d", type=int, default=784, help="features")
    parser.add_argument("--truth", type=int, default=20, help="components of the data")
    parser.add_argument("--k", type=int, nargs="+", default=[5, 10, 20, 50])
    parser.add_argument("--workdir", default="/tmp/bmm_select")
    parser.add_argument("--max-iter", type=int, default=100)
    parser.add_argument("--tol", type=float, default=1e-4)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    warnings.simplefilter("ignore")  # the separate fits stop at max_iter on purpose

    path = Path(args.workdir) / f"synth_n{args.n}_d{args.d}_k{args.truth}.zarr"
    if not path.exists():
        print(f"drawing {args.n:,} rows into {path} ...", flush=True)
        synth(path, n_samples=args.n, n_features=args.d, n_components=args.truth, seed=1)
    data = open_dataset(path)

    from bmm_dask._estep import as_packed, task_blocks
    from bmm_dask.cluster import open_client
    from bmm_dask.selection import heldout_mask, select_n_components, split_rows

    with open_client(
        workers=args.workers, threads_per_worker=1, dashboard_address="127.0.0.1:0"
    ) as client:
        threads = sum(client.nthreads().values())
        print(
            f"{args.n:,} rows x {args.d} bits ({data.bits.nbytes / 1e6:.0f} MB packed, "
            f"{data.bits.numblocks[0]} chunks) from {args.truth} components, streamed; "
            f"K in {args.k}; {args.workers} workers, {threads} threads"
        )
        started = time.perf_counter()
        selection = select_n_components(
            data,
            args.k,
            random_state=args.seed,
            max_iter=args.max_iter,
            tol=args.tol,
            persist=False,
            algorithm="batch",  # shared batch iterations against separate batch fits
        )
        shared = time.perf_counter() - started
        iterations = {r["n_components"]: r["n_iter"] for r in selection.table}
        print(f"\nselection in shared passes: {shared:.1f} s, chose K = {selection.n_components}")
        for row in selection.table:
            print(
                f"  K = {row['n_components']:3d}: {row['n_iter']:3d} iterations, held-out "
                f"{row['heldout_loglik']:.4f} nats per row"
            )

        key = selection.heldout_key
        train, heldout = split_rows(task_blocks(as_packed(data)), 0.1, key)
        assert train.n_samples == selection.n_train
        assert int(heldout_mask(0, args.n, key, 0.1).sum()) == selection.n_heldout
        print("\none fit per K, as many iterations each, then its held-out score:")
        separate = 0.0
        for k in args.k:
            started = time.perf_counter()
            model = BernoulliMixture(
                k,
                algorithm="batch",
                max_iter=iterations[k],
                tol=0,
                random_state=args.seed,
            ).fit(train, persist=False)
            score = model.score(heldout)
            took = time.perf_counter() - started
            separate += took
            print(
                f"  K = {k:3d}: {model.n_iter_:3d} iterations, held-out {score:.4f} nats per "
                f"row, {took:.1f} s"
            )
        print(f"  in all: {separate:.1f} s")
        ratio = shared / separate
        verdict = "met" if ratio <= 0.6 else "not met"
        print(
            f"\nshared passes took {ratio:.2f} of the separate fits' time "
            f"({shared:.1f} s against {separate:.1f} s)  [target <= 0.6: {verdict}]"
        )


if __name__ == "__main__":
    main()
