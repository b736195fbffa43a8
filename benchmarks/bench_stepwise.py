"""Stepwise and auto EM against batch EM on MNIST: passes over the data, wall time, test
log-likelihood, for several starts.

Run from the repository root:

    python benchmarks/bench_stepwise.py [--k 100] [--seeds 0 1 2 3] [--scheduler threads]

MNIST binarised at 128 (the copy inside the package), float32. For each ``random_state`` (one
k-means++ start, the same for every algorithm), side by side in one run:

- batch EM to its tolerance (``tol`` 1e-4, at most ``--max-iter`` iterations);
- the algorithm under test (``--algorithm``, default "auto": 3 batch iterations, at most 3
  stepwise passes where they pay, then batch EM to the same tolerance), with the estimator's
  default settings unless given.

The parameters after every batch iteration and every stepwise pass are copied as the fit runs,
from the fit's events (its ``callback``; the time of the copy noted), and scored on the test
images after the fit, so the test log-likelihood is known after every pass without slowing the
fits. A pass is one read of every training row (a batch iteration or a stepwise pass).

Printed per start, and over all starts: batch EM's passes, seconds and final test
log-likelihood; when the algorithm under test first comes within ``--within`` nats per image of
that (passes and seconds, against half of batch's: the issue's target); and where it ends.
Also the hyper-parameter grid behind the defaults with ``--grid``: stepwise alone, 10 passes,
mini-batches of 1,000 / 2,000 / 4,000 rows and step exponents 0.55 / 0.6 / 0.7.
"""

from __future__ import annotations

import argparse
import statistics
import time
import warnings
from typing import Any

import dask
import numpy as np

from bmm_dask import BernoulliMixture, open_dataset
from bmm_dask.datasets import packaged_mnist_path

Point = dict[str, Any]  # passes, seconds, means, weights (then test)


def run(model: BernoulliMixture, train: Any, test: Any) -> tuple[list[Point], float]:
    """Fit, keeping the parameters after every batch iteration and stepwise pass (from the
    fit's events, with the seconds since the fit began); score them all on ``test`` after."""
    points: list[Point] = []

    def keep(event: dict[str, Any]) -> None:
        if event["kind"] in ("iteration", "pass"):
            points.append(
                {
                    "passes": len(points) + 1,
                    "seconds": time.perf_counter() - started,
                    "means": np.array(event["means"]),
                    "weights": np.array(event["weights"]),
                }
            )

    started = time.perf_counter()
    model.fit(train, callback=keep)
    seconds = time.perf_counter() - started
    scorer = BernoulliMixture(model.n_components)
    scorer.n_features_in_ = model.n_features_in_
    for point in points:
        scorer.means_, scorer.weights_ = point.pop("means"), point.pop("weights")
        point["test"] = scorer.score(test)
    return points, seconds


def first_within(points: list[Point], threshold: float) -> Point | None:
    return next((p for p in points if p["test"] >= threshold), None)


def compare(args: argparse.Namespace, train: Any, test: Any, settings: dict[str, Any]) -> None:
    rows = []
    for seed in args.seeds:
        batch = BernoulliMixture(
            args.k, algorithm="batch", max_iter=args.max_iter, random_state=seed
        )
        batch_points, batch_seconds = run(batch, train, test)
        other = BernoulliMixture(
            args.k, algorithm=args.algorithm, max_iter=args.max_iter, random_state=seed, **settings
        )
        points, seconds = run(other, train, test)
        reference = batch_points[-1]["test"]
        reach = first_within(points, reference - args.within)
        stepwise_passes = sum(1 for r in other.history_ if "pass" in r)
        rows.append(
            {
                "seed": seed,
                "batch": (len(batch_points), batch_seconds, reference, batch.converged_),
                "reach": reach,
                "end": (len(points), seconds, points[-1]["test"], stepwise_passes),
            }
        )
        passes, secs, score, converged = rows[-1]["batch"]
        line = (
            f"seed {seed}: batch {passes} passes, {secs:.1f} s, test {score:.3f}"
            f"{'' if converged else ' (not converged)'}; {args.algorithm} "
        )
        if reach is None:
            line += "never within"
        else:
            line += (
                f"within {args.within} after {reach['passes']} passes "
                f"({reach['passes'] / passes:.2f} of batch's), {reach['seconds']:.1f} s "
                f"({reach['seconds'] / secs:.2f} of batch's), test {reach['test']:.3f}"
            )
        line += (
            f"; ends after {len(points)} passes ({stepwise_passes} stepwise), {seconds:.1f} s, "
            f"test {points[-1]['test']:.3f} ({points[-1]['test'] - score:+.3f})"
        )
        print(line, flush=True)
        print(
            "   test after each pass: "
            + " ".join(f"{p['passes']}:{p['test']:.3f}" for p in points[: args.show])
            + (" ..." if len(points) > args.show else ""),
            flush=True,
        )
    met = [
        r
        for r in rows
        if r["reach"] is not None
        and r["reach"]["passes"] <= r["batch"][0] / 2
        and r["reach"]["seconds"] <= r["batch"][1] / 2
    ]
    reached = [r for r in rows if r["reach"] is not None]
    print(
        f"\nover {len(rows)} starts: within {args.within} of batch EM's final test "
        f"log-likelihood in at most half its passes and half its time: {len(met)} of {len(rows)}"
    )
    if reached:
        print(
            "  passes to get within, as a fraction of batch's: median "
            f"{statistics.median(r['reach']['passes'] / r['batch'][0] for r in reached):.2f}; "
            "seconds, median "
            f"{statistics.median(r['reach']['seconds'] / r['batch'][1] for r in reached):.2f}"
        )
    print(
        "  final test log-likelihood minus batch's: "
        + ", ".join(f"{r['end'][2] - r['batch'][2]:+.3f}" for r in rows)
        + "; total passes / batch's: "
        + ", ".join(f"{r['end'][0]}/{r['batch'][0]}" for r in rows)
    )


def grid(args: argparse.Namespace, train: Any, test: Any) -> None:
    print("\nstepwise alone, 10 passes: mean test log-likelihood over the starts (and each)")
    for batch_size in (1_000, 2_000, 4_000):
        for kappa in (0.55, 0.6, 0.7):
            scores = []
            for seed in args.seeds:
                model = BernoulliMixture(
                    args.k,
                    algorithm="stepwise",
                    passes=10,
                    batch_size=batch_size,
                    step_exponent=kappa,
                    random_state=seed,
                ).fit(train)
                scores.append(model.score(test))
            print(
                f"  batch_size {batch_size:>5}, step_exponent {kappa}: "
                f"{statistics.mean(scores):.3f} (" + ", ".join(f"{s:.3f}" for s in scores) + ")",
                flush=True,
            )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--k", type=int, default=100)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3])
    parser.add_argument("--algorithm", choices=["auto", "stepwise"], default="auto")
    parser.add_argument("--passes", type=int, help="stepwise passes [default: the estimator's]")
    parser.add_argument("--batch-size", type=int, help="[default: the estimator's]")
    parser.add_argument("--step-exponent", type=float, help="[default: the estimator's]")
    parser.add_argument("--max-iter", type=int, default=400)
    parser.add_argument("--within", type=float, default=0.05)
    parser.add_argument("--show", type=int, default=20, help="passes shown per start")
    parser.add_argument("--grid", action="store_true", help="also the grid behind the defaults")
    parser.add_argument("--scheduler", choices=["threads", "cluster"], default="threads")
    args = parser.parse_args()
    warnings.simplefilter("ignore")
    train = open_dataset(f"{packaged_mnist_path()}/train")
    test = open_dataset(f"{packaged_mnist_path()}/test")
    settings = {
        name: value
        for name, value in (
            ("passes", args.passes),
            ("batch_size", args.batch_size),
            ("step_exponent", args.step_exponent),
        )
        if value is not None
    }
    if args.scheduler == "cluster":
        from bmm_dask.cluster import open_client

        context: Any = open_client(workers=2, threads_per_worker=1, dashboard_address="127.0.0.1:0")
    else:
        context = dask.config.set(scheduler="threads")
    print(
        f"MNIST K = {args.k}, float32, scheduler: {args.scheduler}; {args.algorithm} with "
        f"{settings or 'the default settings'} against batch EM, starts {args.seeds}"
    )
    with context:
        compare(args, train, test, settings)
        if args.grid:
            grid(args, train, test)


if __name__ == "__main__":
    main()
