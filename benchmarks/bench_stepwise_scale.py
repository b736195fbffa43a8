"""Stepwise EM against batch EM at scale: streamed data drawn from a MNIST-shaped model.

Run from the repository root:

    python benchmarks/bench_stepwise_scale.py [--n 4000000] [--workdir /tmp/bmm_stepwise_scale]

What it does, side by side in one run:

1. Fits a K = 50 model to the packaged MNIST (batch EM, ``--model-iter`` iterations) and saves
   it in ``--workdir`` (reused when there).
2. Draws ``--n`` training rows and ``--heldout`` held-out rows (another seed) from that model
   with ``bmm_dask.datasets.synth(like=...)`` (reused when there).
3. On a local cluster of 2 worker processes of one thread (2 GB each), the data streamed from
   Zarr every pass (``persist=False``), the same k-means++ start (the same ``random_state``):

   - batch EM to ``--tol``, one iteration per ``fit`` (``warm_start=True``, ``max_iter=1``,
     which continues exactly as one long fit does) so that the held-out set can be scored after
     every iteration; at most ``--max-iter`` iterations and ``--batch-cap`` seconds;
   - stepwise EM, one fit of the most ``--passes``, its running statistics copied after every
     step (the copy's time noted; the copies cost well under a millisecond a step) and the
     models of every ``--snapshot-every`` steps and of each pass's end scored after the fit;
     the model at the end of pass p is the one a fit of p passes returns (same draws, same
     step sizes), so the time until the held-out target is met is known within a pass;
   - auto: the stepwise model after ``--auto-passes`` passes, then batch iterations one
     ``fit`` at a time, as above, to ``--tol``;
     ``--auto-direct`` also runs one real ``algorithm="auto"`` fit, to check the emulation.

   A pass is one read of every training row (a batch iteration or a stepwise pass). Times are
   wall time of the fits from the start (the k-means++ start included); scoring the held-out
   set after each point is timed apart and left out. For the one-iteration batch fits the
   iteration's own time is counted after the first (each ``fit`` call's set-up is not part of
   a continuous run; it is printed as "segment overhead").

``--throughput ROUNDS`` runs only this: a batch pass against stepwise passes with 1, 2 and 3
steps in flight, ROUNDS times side by side on the same cluster, with the CPU seconds each pass
costs in the driver's process (the driver and the local cluster's scheduler) and in the
workers.

Printed: each run's curve (held-out log-likelihood in nats per row against passes and
seconds), the curves on a common grid of passes and of seconds, and the issue's three targets:
(a) time until the held-out log-likelihood is within ``--within`` nats per row of batch EM's
at convergence, stepwise and auto against batch (target: at most 1/5); (b) final held-out
log-likelihood (target: stepwise/auto at least batch's); (c) throughput of a stepwise pass
against a batch pass, rows per second per core (target: at least 0.8). And where a stepwise
pass's time goes: seconds per step against what the same rows cost inside a batch pass.
"""

from __future__ import annotations

import argparse
import math
import os
import statistics
import time
import warnings
from pathlib import Path
from typing import Any

from bmm_dask import BernoulliMixture, open_dataset
from bmm_dask.datasets import packaged_mnist_path, synth

Point = dict[str, Any]  # passes, seconds, heldout (+ extra columns per run)


def prepare(args: argparse.Namespace) -> tuple[Path, Path, Path]:
    """The MNIST model and the training and held-out data, made unless already in workdir."""
    workdir = Path(args.workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    model_path = workdir / f"mnist_k{args.k}_it{args.model_iter}.zarr"
    train_path = workdir / f"train_n{args.n}_seed{args.seed}.zarr"
    heldout_path = workdir / f"heldout_n{args.heldout}_seed{args.seed + 1}.zarr"
    if not _is_model(model_path):
        started = time.perf_counter()
        mnist = open_dataset(f"{packaged_mnist_path()}/train")
        model = BernoulliMixture(
            args.k,
            algorithm="batch",
            max_iter=args.model_iter,
            tol=0,
            random_state=args.random_state,
        ).fit(mnist)
        model.save(model_path, overwrite=True)
        print(
            f"fitted K = {args.k} to MNIST ({args.model_iter} iterations, "
            f"{time.perf_counter() - started:.1f} s) -> {model_path}"
        )
    for path, n, seed in (
        (train_path, args.n, args.seed),
        (heldout_path, args.heldout, args.seed + 1),
    ):
        if not _has_rows(path, n):
            started = time.perf_counter()
            synth(path, n_samples=n, like=model_path, seed=seed, overwrite=True)
            print(f"drew {n:,} rows (seed {seed}, {time.perf_counter() - started:.1f} s) -> {path}")
    return model_path, train_path, heldout_path


def _is_model(path: Path) -> bool:
    if not path.exists():
        return False
    try:
        BernoulliMixture.load(path)
    except Exception:
        return False
    return True


def _has_rows(path: Path, n: int) -> bool:
    if not path.exists():
        return False
    try:
        return open_dataset(path).bits.shape[0] == n
    except Exception:
        return False


def scored(model: BernoulliMixture, heldout: Any) -> tuple[float, float]:
    """Held-out log-likelihood (nats per row) and the seconds it took."""
    started = time.perf_counter()
    score = model.score(heldout)
    return score, time.perf_counter() - started


def batch_segments(
    args: argparse.Namespace,
    train: Any,
    heldout: Any,
    *,
    means_init: Any = None,
    weights_init: Any = None,
    seconds0: float = 0.0,
    passes0: int = 0,
) -> tuple[list[Point], str]:
    """Batch EM one iteration per fit, scored after each; from ``means_init`` when given
    (continuing a run that has taken ``seconds0`` and ``passes0``), else from the k-means++
    start. Returns the points and how the run ended."""
    model = BernoulliMixture(
        args.k,
        algorithm="batch",
        max_iter=1,
        tol=args.tol,
        init="kmeans++",
        random_state=args.random_state,
        means_init=means_init,
        weights_init=weights_init,
        warm_start=True,
    )
    points: list[Point] = []
    elapsed, previous = seconds0, -math.inf
    ended = f"hit --max-iter {args.max_iter}"
    for iteration in range(1, args.max_iter + 1):
        started = time.perf_counter()
        model.fit(train, persist=False)
        wall = time.perf_counter() - started
        record = model.history_[-1]
        # The first fit from k-means++ includes the start (as every run's first point does);
        # after it, the iteration's own time, as in one long fit.
        first_with_start = iteration == 1 and means_init is None
        elapsed += wall if first_with_start else record["seconds"]
        score, score_seconds = scored(model, heldout)
        change = record["objective"] - previous
        previous = record["objective"]
        points.append(
            {
                "passes": passes0 + iteration,
                "seconds": elapsed,
                "heldout": score,
                "objective": record["objective"],
                "change": change,
                "iter_seconds": record["seconds"],
                "overhead": wall - record["seconds"],
                "first_with_start": first_with_start,
                "score_seconds": score_seconds,
                "reseeded": record["reseeded"],
            }
        )
        print(
            f"  iteration {passes0 + iteration:>3}: {record['seconds']:6.2f} s "
            f"(fit call {wall:6.2f} s), total {elapsed:7.1f} s, held-out {score:9.4f}, "
            f"objective change {change:+.2e}",
            flush=True,
        )
        if not record["reseeded"] and abs(change) < args.tol:
            ended = f"converged (objective change {change:+.1e} < tol {args.tol})"
            break
        if elapsed - seconds0 > args.batch_cap:
            ended = f"hit the time cap --batch-cap {args.batch_cap:.0f} s"
            break
    return points, ended


def stepwise_fit(
    args: argparse.Namespace, train: Any, heldout: Any, passes: int
) -> tuple[list[Point], list[Point]]:
    """One stepwise fit of ``passes`` passes from the k-means++ start, its parameters kept
    (from the fit's step events, timed when they come) every ``--snapshot-every`` steps and at
    the passes' ends, and scored on the held-out rows after the fit.

    A fit of fewer passes takes the same steps (the same draws and step sizes), so the
    snapshot at the end of pass p is the model a fit of p passes returns. Returns the points
    (``passes`` in fractions of a pass) and those at the passes' ends, with the passes' times.
    """
    model = BernoulliMixture(
        args.k,
        algorithm="stepwise",
        passes=passes,
        batch_size=args.batch_size,
        step_exponent=args.step_exponent,
        init="kmeans++",
        random_state=args.random_state,
    )
    snapshots: list[tuple[float, float, Any, Any]] = []

    def keep(event: dict[str, Any]) -> None:
        if event["kind"] != "step":
            return
        end = event["step_in_pass"] == event["steps_in_pass"]
        if end or event["step"] % args.snapshot_every == 0:
            at = event["pass"] - 1 + event["step_in_pass"] / event["steps_in_pass"]
            snapshots.append((at, time.perf_counter(), event["means"], event["weights"]))

    started = time.perf_counter()
    model.fit(train, persist=False, callback=keep)
    wall = time.perf_counter() - started
    pass_seconds = [r["seconds"] for r in model.history_]
    steps_per_pass = model.history_[0]["steps"]
    points: list[Point] = []
    scorer = BernoulliMixture(args.k)
    for at, taken, means, weights in snapshots:
        scorer.means_, scorer.weights_ = means, weights
        scorer.n_features_in_ = model.n_features_in_
        score, _ = scored(scorer, heldout)
        points.append(
            {
                "passes": at,
                "seconds": taken - started,
                "heldout": score,
                "means": means,
                "weights": weights,
            }
        )
    ends = []
    for p in range(1, passes + 1):
        point = next(q for q in points if abs(q["passes"] - p) < 1e-9)
        ends.append(
            {
                **point,
                "passes": p,
                "pass_seconds": pass_seconds[:p],
                "start_seconds": wall - sum(pass_seconds),
                "steps": steps_per_pass * p,
                "batch_size": model.batch_size_,
                "change": model.history_[p - 1]["change"],
            }
        )
        print(
            f"  after pass {p}: {point['seconds']:7.1f} s, held-out {point['heldout']:9.4f}",
            flush=True,
        )
    print(
        f"  stepwise {passes} passes: {wall:7.1f} s (start {wall - sum(pass_seconds):.1f} s, "
        "passes " + ", ".join(f"{s:.1f}" for s in pass_seconds) + f" s), {steps_per_pass} steps "
        f"of {model.batch_size_:,} rows a pass, {len(points)} snapshots {load()}",
        flush=True,
    )
    return points, ends


def auto_direct(args: argparse.Namespace, train: Any, heldout: Any) -> Point:
    """One real ``algorithm="auto"`` fit, scored at its end."""
    model = BernoulliMixture(
        args.k,
        algorithm="auto",
        max_iter=args.max_iter + 10,
        tol=args.tol,
        batch_size=args.batch_size,
        step_exponent=args.step_exponent,
        init="kmeans++",
        random_state=args.random_state,
    )
    started = time.perf_counter()
    model.fit(train, persist=False)
    wall = time.perf_counter() - started
    score, _ = scored(model, heldout)
    print(
        f"  auto, one fit: {model.n_iter_} passes, {wall:.1f} s (passes and iterations "
        + ", ".join(f"{r['seconds']:.1f}" for r in model.history_)
        + f" s), converged {model.converged_}, held-out {score:.4f}",
        flush=True,
    )
    return {"passes": model.n_iter_, "seconds": wall, "heldout": score}


def load() -> str:
    """This machine's load average over the last minute (the benchmark's own 2 workers count
    for about 2): a caveat to print with the timings, as other work on it slows them."""
    return f"[load average {os.getloadavg()[0]:.1f}]"


def first_within(points: list[Point], threshold: float) -> Point | None:
    """The first point (in time) whose held-out log-likelihood is at least ``threshold``."""
    for point in sorted(points, key=lambda p: p["seconds"]):
        if point["heldout"] >= threshold:
            return point
    return None


def at_or_before(points: list[Point], key: str, value: float) -> Point | None:
    """The last point with ``key`` at most ``value``."""
    before = [p for p in points if p[key] <= value + 1e-9]
    return max(before, key=lambda p: p[key]) if before else None


def _up(seconds: float) -> float:
    """Rounded up to a tenth of a second (so that a point's own time shows it)."""
    return math.ceil(seconds * 10) / 10


def print_grids(curves: dict[str, list[Point]]) -> None:
    """The curves side by side: held-out log-likelihood against passes and against seconds."""
    names = list(curves)
    width = max(14, *(len(n) + 2 for n in names))
    print("\nHeld-out log-likelihood (nats per row) against passes over the training rows:")
    print(f"{'passes':>7}" + "".join(f"{n:>{width}}" for n in names))
    max_passes = max(p["passes"] for points in curves.values() for p in points)
    for passes in range(1, max_passes + 1):
        cells = []
        for name in names:
            point = next((p for p in curves[name] if p["passes"] == passes), None)
            cells.append(f"{point['heldout']:>{width}.4f}" if point else f"{'':>{width}}")
        print(f"{passes:>7}" + "".join(cells))
    print("\nHeld-out log-likelihood reached by each time (the last point at or before it):")
    print(f"{'seconds':>8}" + "".join(f"{n:>19}" for n in names))
    times = [p["seconds"] for points in curves.values() for p in points]
    lo, hi = min(times), max(times)
    # A geometric grid, and the times of the stepwise points (few, and the ones that matter).
    grid = sorted(
        {_up(lo * (hi / lo) ** (i / 15)) for i in range(16)}
        | {_up(p["seconds"]) for name in names[1:] for p in curves[name]}
    )
    for t in grid:
        cells = []
        for name in names:
            point = at_or_before(curves[name], "seconds", t)
            if point is None:
                cells.append(f"{'-':>19}")
            else:
                cells.append(f"{point['heldout']:>13.4f} ({point['passes']:>3})")
        print(f"{t:>8.1f}" + "".join(cells))
    print("(in brackets: passes at that point)")


def process_cpu() -> tuple[float, float]:
    """CPU seconds so far of this process (the driver, and the local cluster's scheduler) and
    of its child processes that are still running (the workers)."""
    import psutil

    me = psutil.Process()
    workers = 0.0
    for child in me.children(recursive=True):
        try:
            times = child.cpu_times()
        except psutil.Error:
            continue
        workers += times.user + times.system
    own = me.cpu_times()
    return own.user + own.system, workers


def throughput(args: argparse.Namespace, train: Any, rounds: int) -> None:
    """A batch pass against stepwise passes with 1, 2 and 3 steps in flight, ``rounds`` times
    side by side on one cluster, and the CPU each pass costs (from 1 and 3 passes/iterations:
    the difference, halved, leaves out the start)."""
    from bmm_dask._settings import STEPS_IN_FLIGHT

    settings = {"n_components": args.k, "random_state": args.random_state}
    runs: dict[str, dict[str, Any]] = {
        "batch": {"algorithm": "batch", "tol": 0},
        **{
            f"stepwise, {s} in flight": {"algorithm": "stepwise", "steps_in_flight": s}
            for s in (1, 2, 3)
        },
    }
    seconds: dict[str, list[float]] = {name: [] for name in runs}
    cpu: dict[str, list[tuple[float, float, float]]] = {name: [] for name in runs}
    for r in range(rounds):
        for name, run in runs.items():
            costs = []
            for length in (1, 3):
                count = {"max_iter": length} if run["algorithm"] == "batch" else {"passes": length}
                before, wall = process_cpu(), time.perf_counter()
                model = BernoulliMixture(**settings, **run, **count).fit(train, persist=False)
                wall, after = time.perf_counter() - wall, process_cpu()
                costs.append((wall, after[0] - before[0], after[1] - before[1]))
            seconds[name].extend(record["seconds"] for record in model.history_)
            cpu[name].append(tuple((b - a) / 2 for a, b in zip(*costs, strict=True)))
            print(
                f"  round {r + 1}: {name:24s} median pass {statistics.median(seconds[name][-3:]):5.2f} s"
            )
    batch = statistics.median(seconds["batch"])
    print(f"\nthroughput against a batch pass ({rounds} rounds, median of every pass):")
    for name in runs:
        median = statistics.median(seconds[name])
        wall, driver, workers = (statistics.mean(c[i] for c in cpu[name]) for i in range(3))
        mark = " (the default)" if name.startswith(f"stepwise, {STEPS_IN_FLIGHT} ") else ""
        print(
            f"  {name:24s} {median:5.2f} s a pass, {batch / median:.2f} of batch's rows per "
            f"second; CPU a pass: driver and scheduler {driver:.2f} s, workers {workers:.2f} s, "
            f"{(driver + workers) / wall:.2f} cores busy{mark}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=4_000_000, help="training rows")
    parser.add_argument("--heldout", type=int, default=20_000, help="held-out rows")
    parser.add_argument("--k", type=int, default=50)
    parser.add_argument("--workdir", default="/tmp/bmm_stepwise_scale")
    parser.add_argument(
        "--seed", type=int, default=1, help="seed of the training rows (+1 held out)"
    )
    parser.add_argument("--model-iter", type=int, default=30, help="EM iterations on MNIST")
    parser.add_argument("--random-state", type=int, default=0)
    parser.add_argument("--tol", type=float, default=1e-4)
    parser.add_argument("--max-iter", type=int, default=60, help="batch iterations at most")
    parser.add_argument("--batch-cap", type=float, default=900, help="batch EM seconds at most")
    parser.add_argument("--passes", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument(
        "--auto-passes",
        type=int,
        help="stepwise passes of the auto emulation [default: where auto's own rule leaves]",
    )
    parser.add_argument(
        "--snapshot-every", type=int, default=5, help="steps between scored stepwise models"
    )
    parser.add_argument("--auto-direct", action="store_true", help="also one real auto fit")
    parser.add_argument("--batch-size", default="auto")
    parser.add_argument("--step-exponent", type=float, default=BernoulliMixture().step_exponent)
    parser.add_argument("--within", type=float, default=0.05, help="nats per row of batch's")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--memory-limit", default="2GB")
    parser.add_argument(
        "--throughput",
        type=int,
        metavar="ROUNDS",
        help="only compare a batch pass with stepwise passes of 1, 2 and 3 steps in flight, "
        "ROUNDS times side by side, and the CPU of each",
    )
    args = parser.parse_args()
    args.batch_size = args.batch_size if args.batch_size == "auto" else int(args.batch_size)
    warnings.simplefilter("ignore")  # ConvergenceWarning of every one-iteration fit

    model_path, train_path, heldout_path = prepare(args)
    train, heldout = open_dataset(train_path), open_dataset(heldout_path)
    n, chunks = train.bits.shape[0], train.bits.numblocks[0]

    from bmm_dask.cluster import open_client

    with open_client(
        workers=args.workers,
        threads_per_worker=1,
        dashboard_address="127.0.0.1:0",
        memory_limit=args.memory_limit,
    ) as client:
        cores = sum(client.nthreads().values())
        print(
            f"\n{n:,} training rows ({train.bits.nbytes / 1e9:.2f} GB packed, {chunks} chunks), "
            f"{heldout.bits.shape[0]:,} held out, drawn from {model_path.name}; K = {args.k}, "
            f"float32, k-means++ start (random_state {args.random_state}), streamed from Zarr; "
            f"{args.workers} workers, {cores} threads in all, {args.memory_limit} each"
        )
        if args.throughput:
            throughput(args, train, args.throughput)
            return
        print(f"\nbatch EM, one iteration per fit: {load()}")
        batch, batch_ended = batch_segments(args, train, heldout)
        print(f"  batch EM {batch_ended} {load()}")
        passes = max(*args.passes, args.auto_passes or 0)
        print(f"\nstepwise EM, one fit of {passes} passes, snapshots as it goes: {load()}")
        snapshots, stepwise = stepwise_fit(args, train, heldout, passes)
        if args.auto_passes is None:  # where the "auto" algorithm leaves stepwise EM
            from bmm_dask._em import SWITCH_GAIN

            args.auto_passes = next(
                (p["passes"] for p in stepwise[1:] if p["change"] < SWITCH_GAIN * args.tol),
                passes,
            )
            print(
                f"  auto would leave stepwise EM after pass {args.auto_passes} (running "
                "objective changes per pass: "
                + ", ".join(f"{p['change']:.2e}" for p in stepwise[1:])
                + f"; it leaves once one is below {SWITCH_GAIN} x tol)"
            )
        start = next(p for p in stepwise if p["passes"] == args.auto_passes)
        print(f"\nauto: the stepwise fit's first {args.auto_passes} passes, then batch iterations:")
        tail, auto_ended = batch_segments(
            args,
            train,
            heldout,
            means_init=start["means"],
            weights_init=start["weights"],
            seconds0=start["seconds"],
            passes0=args.auto_passes,
        )
        print(f"  auto's batch EM {auto_ended} {load()}")
        # auto's first passes are the stepwise fit's: its curve is the stepwise snapshots up to
        # the pass it leaves after, then the batch iterations
        auto = [p for p in snapshots if p["passes"] <= args.auto_passes] + tail
        direct = auto_direct(args, train, heldout) if args.auto_direct else None
        if args.auto_direct:
            print(
                f"  (the emulation above: {auto[-1]['passes']} passes, {auto[-1]['seconds']:.1f} s) "
                f"{load()}"
            )

    shown_stepwise = [p for p in stepwise if p["passes"] in args.passes]
    print("\nbatch EM curve:")
    print(f"{'passes':>7} {'seconds':>9} {'held-out':>10} {'objective':>10} {'iter s':>7}")
    for p in batch:
        print(
            f"{p['passes']:>7} {p['seconds']:>9.1f} {p['heldout']:>10.4f} "
            f"{p['objective']:>10.4f} {p['iter_seconds']:>7.2f}"
        )
    print("\nstepwise EM (a fit per row, from the same start):")
    print(
        f"{'passes':>7} {'seconds':>9} {'held-out':>10} {'start s':>8} {'steps':>6} "
        f"{'batch':>7}  seconds per pass"
    )
    for p in stepwise:
        print(
            f"{p['passes']:>7} {p['seconds']:>9.1f} {p['heldout']:>10.4f} "
            f"{p['start_seconds']:>8.1f} {p['steps']:>6} {p['batch_size']:>7}  "
            + ", ".join(f"{s:.1f}" for s in p["pass_seconds"])
        )
    print(f"\nstepwise EM within its passes (every {args.snapshot_every} steps):")
    print(f"{'passes':>7} {'seconds':>9} {'held-out':>10}")
    for p in snapshots:
        print(f"{p['passes']:>7.2f} {p['seconds']:>9.1f} {p['heldout']:>10.4f}")
    print(f"\nauto ({args.auto_passes} stepwise passes, then batch EM):")
    print(f"{'passes':>7} {'seconds':>9} {'held-out':>10}")
    for p in [q for q in auto if float(q["passes"]).is_integer()]:
        print(f"{p['passes']:>7} {p['seconds']:>9.1f} {p['heldout']:>10.4f}")

    auto_ends = [p for p in auto if float(p["passes"]).is_integer()]
    print_grids({"batch": batch, "stepwise": shown_stepwise, "auto": auto_ends})

    # ------------------------------------------------------------------ summary
    reference = batch[-1]["heldout"]
    threshold = reference - args.within
    converged = batch_ended.startswith("converged")
    print(
        f"\nbatch EM at {'convergence' if converged else 'its last iteration (' + batch_ended + ')'}"
        f": held-out {reference:.4f} nats per row after {batch[-1]['passes']} iterations, "
        f"{batch[-1]['seconds']:.1f} s"
    )
    reach = {
        name: first_within(points, threshold)
        for name, points in (("batch", batch), ("stepwise", snapshots), ("auto", auto))
    }
    print(f"(a) time until held-out >= {threshold:.4f} (within {args.within} of batch's):")
    for name, point in reach.items():
        if point is None:
            print(f"    {name:<9} not reached")
            continue
        ratio = point["seconds"] / reach["batch"]["seconds"]
        print(
            f"    {name:<9} {point['seconds']:8.1f} s after {point['passes']:>5.2f} passes "
            f"(held-out {point['heldout']:.4f}), {ratio:.3f} of batch's"
            + (
                ""
                if name == "batch"
                else f"  [target <= 0.2: {'met' if ratio <= 0.2 else 'not met'}]"
            )
        )
    print("(b) final held-out log-likelihood:")
    finals = {"batch": batch[-1], "stepwise": shown_stepwise[-1], "auto": auto[-1]}
    if direct is not None:
        finals["auto, one fit"] = direct
    for name, point in finals.items():
        diff = point["heldout"] - reference
        print(
            f"    {name:<13} {point['heldout']:.4f} after {point['passes']:>5.2f} passes, "
            f"{point['seconds']:7.1f} s, {diff:+.4f} against batch"
            + ("" if name == "batch" else f"  [target >= 0: {'met' if diff >= 0 else 'not met'}]")
        )
    batch_pass = statistics.median(p["iter_seconds"] for p in batch)
    step_passes = [s for p in stepwise for s in p["pass_seconds"]]
    stepwise_pass = statistics.median(step_passes)
    batch_rate, stepwise_rate = n / batch_pass / cores, n / stepwise_pass / cores
    ratio = stepwise_rate / batch_rate
    print(
        f"(c) throughput, rows per second per core: batch pass {batch_rate:,.0f} "
        f"(median {batch_pass:.2f} s of {len(batch)}), stepwise pass {stepwise_rate:,.0f} "
        f"(median {stepwise_pass:.2f} s of {len(step_passes)}): {ratio:.2f}  "
        f"[target >= 0.8: {'met' if ratio >= 0.8 else 'not met'}]"
    )
    steps_per_pass = stepwise[0]["steps"] / stepwise[0]["passes"]
    batch_size = stepwise[0]["batch_size"]
    per_step = stepwise_pass / steps_per_pass
    arithmetic = batch_size / (n / batch_pass)
    print(
        f"where a stepwise pass goes: {steps_per_pass:.0f} steps of {batch_size:,} rows "
        f"(batch_size_), {per_step * 1e3:.1f} ms per step; the same rows cost "
        f"{arithmetic * 1e3:.1f} ms inside a batch pass, so {(per_step - arithmetic) * 1e3:.1f} "
        f"ms per step ({(per_step - arithmetic) * steps_per_pass:.1f} s a pass, "
        f"{1 - arithmetic / per_step:.0%}) is the cost of stepping"
    )
    overhead = [p["overhead"] for p in batch[1:]]
    if overhead:
        print(
            f"one-iteration batch fits: {statistics.median(overhead):.2f} s median set-up per fit "
            "call, not counted; held-out scoring "
            f"{statistics.median(p['score_seconds'] for p in batch):.2f} s per point, not counted"
        )


if __name__ == "__main__":
    main()
