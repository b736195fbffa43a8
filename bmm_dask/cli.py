"""The ``bmm-dask`` command: parse the command line, call the library, print; the only place that exits."""

from __future__ import annotations

import gc
import json
import logging
import os
import signal
import sys
import threading
import time
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, nullcontext, suppress
from pathlib import Path
from typing import Any

import click

from bmm_dask import __version__
from bmm_dask.errors import BmmDaskError, SettingsError

logger = logging.getLogger("bmm_dask")

CONTEXT = {"help_option_names": ["-h", "--help"], "max_content_width": 100}


def _configure_logging(verbose: int, quiet: int) -> None:
    level = logging.INFO - 10 * verbose + 10 * quiet
    handler = _ClearingHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(message)s"))
    logger.handlers[:] = [handler]
    logger.setLevel(max(logging.DEBUG, min(level, logging.CRITICAL)))
    logger.propagate = False


class _Progress:
    """A progress bar on a terminal (stderr), fed (rows done, rows in all); silent elsewhere."""

    def __init__(self, label: str) -> None:
        self.label = label
        self.bar: Any = None
        self.total = 0
        self.enabled = sys.stderr.isatty() and logger.isEnabledFor(logging.INFO)

    def __call__(self, done: int, total: int) -> None:
        if not self.enabled:
            return
        if self.bar is None or total != self.total:
            self.close()
            self.total = total
            self.bar = click.progressbar(length=total, label=self.label, file=sys.stderr)
            self.bar.__enter__()
        self.bar.update(done)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.__exit__(None, None, None)
            self.bar = None


@contextmanager
def _progress(label: str) -> Iterator[_Progress]:
    progress = _Progress(label)
    try:
        yield progress
    finally:
        progress.close()


class _Terminated(KeyboardInterrupt):
    """SIGTERM, raised in the main thread as Ctrl-C raises KeyboardInterrupt, so that it unwinds
    the same way: whatever cleans up after Ctrl-C (temporary outputs removed, the local cluster
    shut down) cleans up after ``kill``, ``timeout``, ``docker stop`` and ``scancel`` too."""


class _Stopped(BaseException):
    """A Ctrl-C or SIGTERM on its way out of a command, past click (which would print a blank
    line for a KeyboardInterrupt and turn it into ``Abort``); ``__cause__`` is the signal's."""


class _Group(click.Group):
    """The ``bmm-dask`` group: a command stopped by a signal leaves it as ``_Stopped``."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except KeyboardInterrupt as err:
            raise _Stopped() from err


@click.group(cls=_Group, context_settings=CONTEXT)
@click.version_option(__version__, "-V", "--version", prog_name="bmm-dask")
@click.option("-v", "--verbose", count=True, help="More messages (-vv for debugging).")
@click.option("-q", "--quiet", count=True, help="Fewer messages (warnings and errors only).")
def cli(verbose: int, quiet: int) -> None:
    """Fit Bernoulli mixture models by EM on binary data in Zarr, with Dask.

    Start with `bmm-dask ingest mnist --out mnist.zarr`, then `bmm-dask info mnist.zarr`.
    """
    _configure_logging(verbose, quiet)


# --------------------------------------------------------------------------- data


@cli.command(context_settings=CONTEXT)
@click.argument("name", type=click.Choice(["mnist"]))
@click.option(
    "--dir",
    "directory",
    type=click.Path(file_okay=False),
    help="Where the files go [default: $BMM_DASK_DATA/mnist or ~/.cache/bmm-dask/mnist].",
)
@click.option(
    "--from",
    "from_dir",
    type=click.Path(file_okay=False),
    help="Copy the four IDX files (.gz or not) from this folder instead of downloading.",
)
def fetch(name: str, directory: str | None, from_dir: str | None) -> None:
    """Download the MNIST IDX files (or copy them with --from) and check their MD5.

    Mirrors are tried in turn; BMM_DASK_MNIST_MIRRORS (comma-separated base URLs) replaces them.
    """
    from bmm_dask.datasets import fetch_mnist

    folder = fetch_mnist(directory, from_dir=from_dir)
    click.echo(f"MNIST files verified in {folder}")


@cli.command(context_settings=CONTEXT)
@click.argument("source")
@click.option("--out", "-o", required=True, type=click.Path(), help="Dataset to write (DATA.zarr).")
@click.option(
    "--labels", type=click.Path(), help="IDX or .npy file of integer labels, one a sample."
)
@click.option(
    "--threshold",
    type=click.FloatRange(0, 255, min_open=True),
    help="A value at least this is 1 [default: 128].",
)
@click.option(
    "--binarize",
    type=click.Choice(["threshold", "stochastic", "none"]),
    help="threshold (default), stochastic (value/255 is the chance of a 1), or none (0/1 data).",
)
@click.option(
    "--seed", type=click.IntRange(min=0), help="Seed for --binarize stochastic [default: 0]."
)
@click.option(
    "--chunk-rows", type=click.IntRange(min=1), help="Rows a chunk [default: about 1 MiB packed]."
)
@click.option("--overwrite", is_flag=True, help="Replace the output if it exists.")
def ingest(
    source: str,
    out: str,
    labels: str | None,
    threshold: float | None,
    binarize: str | None,
    seed: int | None,
    chunk_rows: int | None,
    overwrite: bool,
) -> None:
    """Binarise images and write them to Zarr, packed 8 pixels a byte.

    SOURCE is an IDX file (raw or .gz), a .npy array (N x H x W or N x D), or `mnist`: the
    fetched MNIST files when the cache holds them, else the copy inside the package; it
    writes OUT/train and OUT/test.
    """
    from bmm_dask.datasets import Binarization, ingest_mnist
    from bmm_dask.datasets import ingest as ingest_file

    if binarize is None:
        binarize = (
            "stochastic" if seed is not None else "threshold" if threshold is not None else None
        )
    if threshold is not None and binarize != "threshold":
        raise click.UsageError(f"--threshold goes with --binarize threshold, not {binarize}")
    if seed is not None and binarize != "stochastic":
        raise click.UsageError(f"--seed goes with --binarize stochastic, not {binarize}")
    binarization = None
    if binarize is not None:
        binarization = Binarization(
            binarize, threshold=128 if threshold is None else threshold, seed=seed or 0
        )
    with _progress("ingest") as progress:
        if source == "mnist":
            if labels is not None:
                raise click.UsageError("--labels does not go with mnist: it has its own")
            written = ingest_mnist(
                out,
                binarization=binarization,
                chunk_rows=chunk_rows,
                overwrite=overwrite,
                progress=progress,
            )
        else:
            written = ingest_file(
                source,
                out,
                labels=labels,
                binarization=binarization,
                chunk_rows=chunk_rows,
                overwrite=overwrite,
                progress=progress,
            )
    click.echo(f"wrote {written}")


def _parse_shape(
    ctx: click.Context, param: click.Parameter, value: str | None
) -> tuple[int, ...] | None:
    if value is None:
        return None
    try:
        shape = tuple(int(n) for n in value.lower().split("x"))
    except ValueError:
        raise click.BadParameter(f"expected sizes like 28x28; got {value!r}") from None
    if any(n < 1 for n in shape):
        raise click.BadParameter(f"sizes must be positive; got {value!r}")
    return shape


@cli.command(context_settings=CONTEXT)
@click.option("--n", "n_samples", required=True, type=click.IntRange(min=1), help="Rows to draw.")
@click.option("--d", "n_features", required=True, type=click.IntRange(min=1), help="Bits per row.")
@click.option(
    "--k",
    "n_components",
    required=True,
    type=click.IntRange(min=1),
    help="Components of the mixture.",
)
@click.option(
    "--seed",
    default=0,
    show_default=True,
    type=click.IntRange(min=0),
    help="Seed of the mixture and the rows.",
)
@click.option("--out", "-o", required=True, type=click.Path(), help="Dataset to write (DATA.zarr).")
@click.option(
    "--chunk-rows", type=click.IntRange(min=1), help="Rows a chunk [default: about 1 MiB packed]."
)
@click.option(
    "--image-shape", callback=_parse_shape, help="Shape of a row as an image, e.g. 28x28."
)
@click.option("--overwrite", is_flag=True, help="Replace the output if it exists.")
def synth(
    n_samples: int,
    n_features: int,
    n_components: int,
    seed: int,
    out: str,
    chunk_rows: int | None,
    image_shape: tuple[int, ...] | None,
    overwrite: bool,
) -> None:
    """Draw rows from a known Bernoulli mixture and write them, chunk by chunk in parallel.

    The true means and weights are stored with the data (true_means, true_weights) and the
    component of each row as its label.
    """
    from bmm_dask.datasets import synth as synth_data

    written = synth_data(
        out,
        n_samples=n_samples,
        n_features=n_features,
        n_components=n_components,
        seed=seed,
        chunk_rows=chunk_rows,
        image_shape=image_shape,
        overwrite=overwrite,
    )
    click.echo(f"wrote {written}")


# --------------------------------------------------------------------------- fitting


class _IterationBar:
    """On a terminal, a bar of the iterations under the log lines; elsewhere nothing."""

    def __init__(self, max_iter: int, n_init: int) -> None:
        self.max_iter, self.n_init = max_iter, n_init
        self.start = 0
        self.enabled = sys.stderr.isatty() and logger.isEnabledFor(logging.INFO)

    def __call__(self, record: dict[str, Any]) -> None:
        if not self.enabled:
            return
        if record["iteration"] == 1:
            self.start += 1
        done = int(30 * record["iteration"] / self.max_iter)
        starts = f"start {self.start}/{self.n_init} " if self.n_init > 1 else ""
        sys.stderr.write(
            f"\r\033[K{starts}[{'#' * done}{'.' * (30 - done)}] iteration {record['iteration']}/"
            f"{self.max_iter}  objective {record['objective']:.4f}"
        )
        sys.stderr.flush()

    def clear(self) -> None:
        if self.enabled:
            sys.stderr.write("\r\033[K")
            sys.stderr.flush()


class _ClearingHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """Log lines that first wipe a progress bar drawn on the current terminal line."""

    def emit(self, record: logging.LogRecord) -> None:
        if self.stream.isatty():
            self.stream.write("\r\033[K")
        super().emit(record)


def _scheduler_options(instead: str) -> list[Any]:
    return [
        click.option(
            "--scheduler",
            metavar="ADDRESS",
            help=f"Run on this Dask scheduler (tcp://host:8786) instead of {instead}.",
        ),
        click.option(
            "--scheduler-file",
            type=click.Path(dir_okay=False),
            help="Run on the scheduler this file (from dask scheduler --scheduler-file) names.",
        ),
    ]


def _apply(options: list[Any], func: Any) -> Any:
    for option in reversed(options):
        func = option(func)
    return func


_PERFORMANCE_REPORT = click.option(
    "--performance-report",
    type=click.Path(dir_okay=False),
    help="Write Dask's performance report (an HTML page) of the work to this file.",
)


def _check_cluster_option(ctx: click.Context, param: click.Parameter, value: Any) -> Any:
    """Check --memory-limit or --dashboard-address as the command line is read, before any
    work or cluster starts; the value is kept as given, for messages that quote it."""
    from bmm_dask import cluster

    check = {
        "memory_limit": cluster.parse_memory_limit,
        "dashboard_address": cluster.check_dashboard_address,
    }[param.name or ""]
    try:
        if value is not None:
            check(value)
    except SettingsError as err:
        raise click.BadParameter(str(err).removeprefix(f"{param.opts[0]} "), ctx, param) from None
    return value


def _cluster_options(func: Any) -> Any:
    """Where fit and demo run: a cluster named, else a local cluster of worker processes."""
    local = [
        click.option(
            "--workers",
            type=click.IntRange(min=1),
            help="Worker processes of the local cluster [default: the number of cores].",
        ),
        click.option(
            "--threads-per-worker",
            type=click.IntRange(min=1),
            help="Threads a worker of the local cluster [default: 1].",
        ),
        click.option(
            "--memory-limit",
            metavar="SIZE",
            callback=_check_cluster_option,
            help="Memory a worker of the local cluster, e.g. 2GB [default: shared out].",
        ),
        click.option(
            "--dashboard-address",
            default="127.0.0.1:8787",
            show_default=True,
            callback=_check_cluster_option,
            help="Where the local cluster's dashboard listens (HOST:PORT; port 0 for any free one).",
        ),
    ]
    return _apply([*_scheduler_options("a local cluster"), *local, _PERFORMANCE_REPORT], func)


def _remote_options(func: Any) -> Any:
    """--scheduler, --scheduler-file and --performance-report for commands that run in this
    process unless told to use a cluster."""
    return _apply([*_scheduler_options("in this process"), _PERFORMANCE_REPORT], func)


@contextmanager
def _client(
    scheduler: str | None = None,
    scheduler_file: str | None = None,
    workers: int | None = None,
    threads_per_worker: int | None = None,
    memory_limit: str | None = None,
    performance_report: str | None = None,
    dashboard_address: str = "127.0.0.1:8787",
    task_bytes: float = 0,
) -> Iterator[Any]:
    """A Dask client (the cluster named, else a local one) for the command, its dashboard link
    logged first, and Dask's performance report written when asked for. ``task_bytes``, the
    memory a task needs, sets the smallest --memory-limit accepted."""
    from bmm_dask.cluster import open_client

    with open_client(
        scheduler=scheduler,
        scheduler_file=scheduler_file,
        workers=workers,
        threads_per_worker=threads_per_worker,
        memory_limit=memory_limit,
        dashboard_address=dashboard_address,
        worker_logs=logging.DEBUG if logger.isEnabledFor(logging.DEBUG) else logging.CRITICAL,
        task_bytes=task_bytes,
    ) as client:
        logger.info("Dask dashboard: %s", client.dashboard_link)
        _add_progress_page(client)
        if performance_report is None:
            yield client
            return
        from distributed import performance_report as report

        with report(filename=performance_report):
            yield client
        logger.info("Dask performance report: %s", performance_report)


def _add_progress_page(client: Any) -> None:
    """Our page on the dashboard, when the scheduler can import bmm_dask."""
    from bmm_dask.dashboard import PAGE, ProgressPage

    try:
        client.register_plugin(ProgressPage())
    except Exception as err:  # the scheduler may lack bmm_dask: the fit goes on without the page
        logger.debug("no progress page on the dashboard: %s", err)
        return
    logger.info("Progress page: %s", client.dashboard_link.rsplit("/", 1)[0] + PAGE)


def _maybe_client(
    scheduler: str | None, scheduler_file: str | None, performance_report: str | None
) -> Any:
    """A cluster when one is named (or a performance report asked for), else this process."""
    if (
        scheduler
        or scheduler_file
        or os.environ.get("DASK_SCHEDULER_ADDRESS")
        or performance_report
    ):
        return _client(scheduler, scheduler_file, performance_report=performance_report)
    return nullcontext()


def _open(path: str) -> Any:
    from bmm_dask.io import open_dataset

    return open_dataset(path)


def _load(path: str) -> Any:
    from bmm_dask.model import BernoulliMixture

    return BernoulliMixture.load(path)


def _check_resumable(out: str) -> None:
    """Refuse --resume when OUT holds no checkpoint of an unfinished fit, saying what it holds."""
    from bmm_dask.io import CHECKPOINT_FILE, read_checkpoint

    path = Path(out)
    if not (path / CHECKPOINT_FILE).is_file():
        if not path.exists():
            what = "does not exist"
        elif (path / "zarr.json").is_file() and (path / "means").exists():
            what = "holds a finished model"
        else:
            what = "holds no checkpoint"
        raise SettingsError(
            f"{out}: nothing to resume: it {what}; --resume continues a fit started with "
            "--checkpoint-every N into the same --out"
        )
    read_checkpoint(out)  # and it is readable, the checkpoint of an unfinished fit


@cli.command(context_settings=CONTEXT)
@click.argument("data")
@click.option(
    "--k", "n_components", required=True, type=click.IntRange(min=1), help="Number of components."
)
@click.option("--out", "-o", required=True, type=click.Path(), help="Model to write (MODEL.zarr).")
@click.option(
    "--max-iter",
    default=100,
    show_default=True,
    type=click.IntRange(min=1),
    help="EM iterations per start at most.",
)
@click.option(
    "--tol",
    default=1e-4,
    show_default=True,
    type=click.FloatRange(min=0),
    help="Stop when the objective (nats per sample) changes less.",
)
@click.option(
    "--mean-tol",
    type=click.FloatRange(min=0),
    help="Also stop when the means move less than this (L2).",
)
@click.option(
    "--n-init",
    default=1,
    show_default=True,
    type=click.IntRange(min=1),
    help="Starts; the best is kept.",
)
@click.option(
    "--init",
    default="kmeans++",
    show_default=True,
    type=click.Choice(["kmeans++", "random", "random_from_data"]),
)
@click.option(
    "--seed",
    default=0,
    show_default=True,
    type=click.IntRange(min=0),
    help="Seed of every random draw.",
)
@click.option(
    "--alpha",
    default=0.1,
    show_default=True,
    type=click.FloatRange(min=0),
    help="Additive smoothing of the means (0: maximum likelihood).",
)
@click.option(
    "--dtype",
    default="float32",
    show_default=True,
    type=click.Choice(["float32", "float64"]),
    help="Arithmetic of the E-step.",
)
@click.option("--overwrite", is_flag=True, help="Replace the output if it exists.")
@click.option(
    "--checkpoint-every",
    default=0,
    show_default=True,
    type=click.IntRange(min=0),
    metavar="N",
    help="Save the state in OUT every N iterations and after each start (0: never).",
)
@click.option(
    "--resume", is_flag=True, help="Continue the unfinished fit whose checkpoint is in OUT."
)
@click.option(
    "--persist/--no-persist",
    default=None,
    help="Hold the data in the cluster's memory, or read it from the store every iteration "
    "[default: held when it takes at most half the cluster's memory].",
)
@_cluster_options
def fit(
    data: str,
    n_components: int,
    out: str,
    max_iter: int,
    tol: float,
    mean_tol: float | None,
    n_init: int,
    init: str,
    seed: int,
    alpha: float,
    dtype: str,
    overwrite: bool,
    checkpoint_every: int,
    resume: bool,
    persist: bool | None,
    **cluster: Any,
) -> None:
    """Fit a Bernoulli mixture of K components to DATA (DATA.zarr or DATA.zarr/group) by EM.

    With --checkpoint-every N the state is saved in OUT every N iterations (OUT is then marked
    unfinished until the model replaces it); --resume continues from it and ends with the same
    model as a fit that was never interrupted.
    """
    import warnings

    from sklearn.exceptions import ConvergenceWarning

    from bmm_dask.cluster import task_memory
    from bmm_dask.io import CHECKPOINT_FILE, check_not_input, check_output, output_lock
    from bmm_dask.model import BernoulliMixture

    dataset = _open(data)
    check_not_input(out, [data])
    if cluster.get("performance_report"):
        check_not_input(cluster["performance_report"], [data, out])
    if resume:
        _check_resumable(out)
    else:
        if not overwrite and (Path(out) / CHECKPOINT_FILE).is_file():
            raise SettingsError(
                f"{out}: holds the checkpoint of an unfinished fit; pass --resume to finish it, "
                "or --overwrite to start afresh"
            )
        check_output(out, overwrite=overwrite)
    model = BernoulliMixture(
        n_components,
        max_iter=max_iter,
        tol=tol,
        mean_tol=mean_tol,
        n_init=n_init,
        init=init,
        random_state=seed,
        alpha=alpha,
        dtype=dtype,
    )
    model._check_settings(dataset.n_features)
    if n_components > dataset.n_samples:
        raise SettingsError(
            f"--k {n_components} is larger than the {dataset.n_samples} samples in {data}"
        )
    fingerprint = {"data": dataset.fingerprint()}
    if resume:  # at the door: the checkpoint must be of these settings and this data
        model._resume_state(out, model._settings(), fingerprint)
    bar = _IterationBar(max_iter, n_init)
    task_bytes = task_memory(dataset.n_features, n_components, 8 if dtype == "float64" else 4)
    with (
        output_lock(out),
        _client(**cluster, task_bytes=task_bytes),
        warnings.catch_warnings(record=True) as caught,
    ):
        warnings.simplefilter("always", ConvergenceWarning)
        started = time.perf_counter()
        try:
            model.fit(
                dataset,
                callback=bar,
                checkpoint=out if checkpoint_every or resume else None,
                checkpoint_every=checkpoint_every,
                resume=resume,
                checkpoint_attrs=fingerprint,
                persist=persist,
            )
        finally:
            bar.clear()
        seconds = time.perf_counter() - started
        replace = overwrite or resume or bool(checkpoint_every)
        model.save(out, overwrite=replace, attrs={**fingerprint, "fit_seconds": seconds})
    for warning in caught:
        logger.warning("warning: %s", warning.message)
    click.echo(
        f"wrote {out}: K = {n_components}, {model.n_iter_} iterations, "
        f"{'converged' if model.converged_ else 'not converged'}, objective {model.lower_bound_:.4f} nats "
        f"a sample, {seconds:.1f} s of fitting"
    )


@cli.command(context_settings=CONTEXT)
@click.argument("model_path", metavar="MODEL")
@click.argument("data")
@click.option(
    "--out", "-o", required=True, type=click.Path(), help="Predictions to write (PRED.zarr)."
)
@click.option("--proba", is_flag=True, help="Also write the responsibilities (n_samples x K).")
@click.option("--overwrite", is_flag=True, help="Replace the output if it exists.")
@_remote_options
def predict(
    model_path: str,
    data: str,
    out: str,
    proba: bool,
    overwrite: bool,
    scheduler: str | None,
    scheduler_file: str | None,
    performance_report: str | None,
) -> None:
    """Write the most likely component of each row of DATA (and with --proba the responsibilities)."""
    from bmm_dask.evaluation import write_predictions
    from bmm_dask.io import check_output

    model, dataset = _load(model_path), _open(data)
    check_output(out, overwrite=overwrite, inputs=[model_path, data])
    _check_report_path(performance_report, [model_path, data, out])
    with _maybe_client(scheduler, scheduler_file, performance_report):
        write_predictions(
            model, dataset, out, proba=proba, overwrite=overwrite, model_path=model_path
        )
    click.echo(
        f"wrote {out}: labels{' and responsibilities' if proba else ''} of {dataset.n_samples:,} rows"
    )


def _print_metrics(metrics: dict[str, Any]) -> None:
    click.echo(
        f"{metrics['data']}: {metrics['n_samples']:,} samples, log-likelihood "
        f"{metrics['log_likelihood_per_sample']:.3f} nats a sample ({metrics['bits_per_dim']:.4f} bits a feature)"
    )
    if "accuracy" not in metrics:
        return
    click.echo(
        f"accuracy {metrics['accuracy']:.4f} ({metrics['matching']} matching of components to labels), "
        f"NMI {metrics['nmi']:.4f}, ARI {metrics['ari']:.4f}"
    )
    classes = metrics["classes"]
    width = max(6, *(len(str(c)) + 1 for c in classes), len(str(max(metrics["cluster_sizes"]))) + 1)
    click.echo("confusion matrix: a row a component (-> its label), a column a true label")
    click.echo(" " * 12 + "".join(f"{c!s:>{width}}" for c in classes))
    for k, row in enumerate(metrics["confusion_matrix"]):
        label = metrics["mapping"][k]
        name = f"#{k}" + (f" -> {label}" if label is not None else "")
        click.echo(f"{name:<12}" + "".join(f"{v:>{width}}" for v in row))


def _mapping_from(model: Any, path: str | None, model_path: str) -> list[Any] | None:
    if path is None:
        return None
    from bmm_dask.evaluation import evaluate

    train = _open(path)
    if train.labels is None:
        raise SettingsError(f"{path}: has no labels to learn the components' labels from")
    return evaluate(model, train, model_path=model_path)["mapping"]


@cli.command(context_settings=CONTEXT)
@click.argument("model_path", metavar="MODEL")
@click.argument("data")
@click.option(
    "--json",
    "json_path",
    type=click.Path(dir_okay=False),
    help="Also write the metrics to this JSON file.",
)
@click.option(
    "--mapping-from",
    type=click.Path(),
    help="Learn each component's label on this dataset (e.g. the training set).",
)
@click.option("--overwrite", is_flag=True, help="Replace the JSON file if it exists.")
@_remote_options
def evaluate(
    model_path: str,
    data: str,
    json_path: str | None,
    mapping_from: str | None,
    overwrite: bool,
    scheduler: str | None,
    scheduler_file: str | None,
    performance_report: str | None,
) -> None:
    """Log-likelihood of DATA under MODEL and, with labels, how components match them."""
    from bmm_dask.evaluation import evaluate as evaluate_model
    from bmm_dask.io import check_output

    model, dataset = _load(model_path), _open(data)
    inputs = [model_path, data, mapping_from]
    if json_path is not None:
        check_output(json_path, overwrite=overwrite, inputs=inputs)
    _check_report_path(performance_report, [*inputs, json_path])
    with _maybe_client(scheduler, scheduler_file, performance_report):
        mapping = _mapping_from(model, mapping_from, model_path)
        metrics = evaluate_model(model, dataset, mapping=mapping, model_path=model_path)
    metrics["model"] = model_path
    _print_metrics(metrics)
    if json_path is not None:
        _write_json(Path(json_path), metrics, overwrite=overwrite, inputs=inputs)
        click.echo(f"wrote {json_path}")


def _write_json(
    path: Path, value: Any, *, overwrite: bool = True, inputs: Sequence[str | None] = ()
) -> None:
    """Write a JSON file whole or not at all, under its lock; never over an input."""
    from bmm_dask.io import atomic_file, check_output, output_lock

    check_output(path, overwrite=overwrite, inputs=inputs)
    with output_lock(path):
        check_output(path, overwrite=overwrite, inputs=inputs)
        atomic_file(
            path,
            lambda tmp: tmp.write_text(json.dumps(value, indent=2) + "\n"),
            overwrite=overwrite,
        )


def _check_report_path(performance_report: str | None, inputs: Sequence[str | None]) -> None:
    """Dask writes its performance report over whatever is there: never over an input."""
    if performance_report is not None:
        from bmm_dask.io import check_not_input

        check_not_input(performance_report, inputs)


@cli.command(context_settings=CONTEXT)
@click.argument("model_path", metavar="MODEL")
@click.option(
    "--data",
    help="Dataset to evaluate on (e.g. the test set): adds metrics and the confusion matrix.",
)
@click.option(
    "--mapping-from", type=click.Path(), help="Learn each component's label on this dataset."
)
@click.option("--out", "-o", required=True, type=click.Path(), help="Folder to write.")
@click.option("--overwrite", is_flag=True, help="Replace the folder if it exists.")
def report(
    model_path: str, data: str | None, mapping_from: str | None, out: str, overwrite: bool
) -> None:
    """Write means.png, loglik.png, confusion.png, samples.png, metrics.json and report.html."""
    from bmm_dask.evaluation import write_report
    from bmm_dask.io import check_output

    model = _load(model_path)
    dataset = _open(data) if data else None
    check_output(out, overwrite=overwrite, inputs=[model_path, data, mapping_from])
    mapping = _mapping_from(model, mapping_from, model_path)
    written = write_report(
        model, out, dataset=dataset, mapping=mapping, model_path=model_path, overwrite=overwrite
    )
    click.echo(
        f"wrote {written}/report.html (open it in a browser) with its figures and metrics.json"
    )


@cli.command(context_settings=CONTEXT)
@click.option(
    "--out",
    "-o",
    default="bmm-dask-demo",
    show_default=True,
    type=click.Path(),
    help="Folder for everything the demo writes.",
)
@click.option(
    "--k",
    "n_components",
    default=10,
    show_default=True,
    type=click.IntRange(1, 60_000),
    help="Number of components.",
)
@click.option(
    "--n-init",
    default=3,
    show_default=True,
    type=click.IntRange(min=1),
    help="Starts; the one with the highest likelihood is kept.",
)
@click.option(
    "--seed",
    default=0,
    show_default=True,
    type=click.IntRange(min=0),
    help="Seed of every random draw.",
)
@click.option("--overwrite", is_flag=True, help="Replace the folder if it exists.")
@_cluster_options
def demo(
    out: str, n_components: int, n_init: int, seed: int, overwrite: bool, **cluster: Any
) -> None:
    """The whole MNIST job, offline: ingest, fit on a local cluster, evaluate, report.

    Uses the binarised MNIST inside the package (or the fetched files when the cache has them).
    """
    import warnings

    from sklearn.exceptions import ConvergenceWarning

    from bmm_dask.datasets import ingest_mnist, mnist_dir, packaged_mnist_path
    from bmm_dask.evaluation import evaluate as evaluate_model
    from bmm_dask.evaluation import write_report
    from bmm_dask.io import atomic_output
    from bmm_dask.model import BernoulliMixture

    started = time.perf_counter()
    folder = Path(out)
    inputs = [mnist_dir(), packaged_mnist_path()]  # never replace the cache or the package
    with atomic_output(folder, overwrite=overwrite, inputs=inputs) as tmp:
        logger.info("1/4 ingest MNIST into %s", folder / "mnist.zarr")
        ingest_mnist(tmp / "mnist.zarr")
        train, test = (
            _open(str(tmp / "mnist.zarr" / "train")),
            _open(str(tmp / "mnist.zarr" / "test")),
        )
        model = BernoulliMixture(n_components, n_init=n_init, random_state=seed)
        bar = _IterationBar(model.max_iter, n_init)
        with _client(**cluster), warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            logger.info("2/4 fit K = %d on the 60,000 training images", n_components)
            try:
                fit_started = time.perf_counter()
                model.fit(train, callback=bar)
            finally:
                bar.clear()
            fit_seconds = time.perf_counter() - fit_started
            data_attrs = {
                **train.fingerprint(),
                "path": str(folder.absolute() / "mnist.zarr" / "train"),
            }
            model.save(tmp / "model.zarr", attrs={"data": data_attrs, "fit_seconds": fit_seconds})
            model = BernoulliMixture.load(tmp / "model.zarr")
            logger.info("3/4 evaluate on the training and test sets")
            on_train = evaluate_model(model, train)
            logger.info("4/4 report on the test set")
            write_report(model, tmp / "report", dataset=test, model_path=str(folder / "model.zarr"))
        on_test = json.loads((tmp / "report" / "metrics.json").read_text())
        for split, metrics in (("train", on_train), ("test", on_test)):
            metrics["data"] = str(folder / "mnist.zarr" / split)
            _write_json(tmp / f"metrics-{split}.json", metrics)
    for metrics in (on_train, on_test):
        _print_metrics(metrics)
        click.echo("")
    click.echo(f"done in {time.perf_counter() - started:.0f} s; everything is in {folder}/:")
    click.echo(f"  {folder / 'mnist.zarr'}        the data (train and test), binarised at 128")
    click.echo(f"  {folder / 'model.zarr'}        the model: bmm-dask info {folder / 'model.zarr'}")
    click.echo(f"  {folder / 'metrics-train.json'}, metrics-test.json")
    click.echo(
        f"  {folder / 'report' / 'report.html'}  the report: means, objective, confusion, samples"
    )


# --------------------------------------------------------------------------- info


def _size(n: float) -> str:
    for unit in ("bytes", "kB", "MB", "GB", "TB"):
        if n < 1000 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "bytes" else f"{n:.1f} {unit}"
        n /= 1000
    raise AssertionError


def _format_dataset(info: dict[str, Any]) -> list[str]:
    b = info["binarization"]
    how = {
        "threshold": f"threshold {b.get('threshold')}",
        "stochastic": f"stochastic, seed {b.get('seed')}",
        "none": "none (binary at the source)",
    }.get(b.get("method"), str(b))
    shape = info["image_shape"]
    n = info["n_samples"]
    lines = [
        f"{info['path']}: dataset",
        f"  samples        {n:,}",
        f"  features       {info['n_features']:,}"
        + (f" (images {' x '.join(map(str, shape))})" if shape else ""),
        f"  binarization   {how}",
        f"  labels         {'yes' if info['labels'] else 'no'}",
        f"  chunks         {info['n_chunks']} of up to {info['chunk_rows']:,} rows",
        f"  stored         {_size(info['bytes_stored'])} ({info['bytes_stored'] / n:.1f} bytes a sample)",
        f"  ratio          {info['bytes_unpacked'] / info['bytes_stored']:.1f}x smaller than a byte a "
        f"feature, {info['bytes_packed'] / info['bytes_stored']:.1f}x smaller than packed bits",
    ]
    source = info.get("source") or {}
    for role, entry in source.items():
        if isinstance(entry, dict) and "file" in entry:
            lines.append(
                f"  source         {role}: {entry['file']} (md5 {entry['md5']} of the {entry['md5_of']})"
            )
        else:
            lines.append(f"  source         {role}: {entry}")
    return lines


@cli.command(context_settings=CONTEXT)
@click.argument("path")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of text.")
def info(path: str, as_json: bool) -> None:
    """Describe a dataset (samples, features, binarisation, chunks, bytes stored) or a model.

    PATH may also be a group of datasets (as `ingest mnist` writes): each is described.
    """
    from bmm_dask.io import describe_path

    infos = describe_path(path)
    if as_json:
        click.echo(json.dumps(infos if len(infos) > 1 else infos[0], indent=2))
        return
    for i, entry in enumerate(infos):
        if i:
            click.echo("")
        if entry["kind"] == "checkpoint":
            lines = [
                f"{entry['path']}: checkpoint of an unfinished fit (finish it with bmm-dask fit ... --resume)",
                f"  start          {entry['start']}, after {entry['iterations']} iterations, objective {entry['objective']}",
                "  settings       "
                + ", ".join(f"{k}={v}" for k, v in sorted((entry["settings"] or {}).items())),
                f"  data           {(entry['data'] or {}).get('path')}",
            ]
        else:
            lines = _format_model(entry) if entry["kind"] == "model" else _format_dataset(entry)
        click.echo("\n".join(lines))


def _format_model(info: dict[str, Any]) -> list[str]:
    data = info.get("data") or {}
    settings = info.get("settings") or {}
    weights = info["weights"]
    shown = ", ".join(f"{w:.3f}" for w in weights[:12]) + (", ..." if len(weights) > 12 else "")
    return [
        f"{info['path']}: model",
        f"  components     {info['n_components']}",
        f"  features       {info['n_features']}",
        f"  weights        {shown}",
        f"  iterations     {info.get('n_iter')} ({'converged' if info.get('converged') else 'not converged'})",
        f"  objective      {info.get('lower_bound', float('nan')):.4f} nats a sample",
        "  settings       " + ", ".join(f"{k}={v}" for k, v in sorted(settings.items())),
        f"  fitted on      {data.get('path', '?')} ({data.get('n_samples', '?'):,} samples, binarization "
        f"{data.get('binarization')})"
        if data
        else "  fitted on      (not recorded)",
        f"  fit time       {info.get('fit_seconds', float('nan')):.1f} s",
        f"  written        {info.get('created')} by bmm_dask {info.get('bmm_dask_version')}",
    ]


# --------------------------------------------------------------------------- entry point


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; return the exit status (2 for a user's mistake, with one line)."""
    saved = logger.handlers[:], logger.level, logger.propagate
    try:
        with warnings.catch_warnings(), _unwinding_on_signals():
            warnings.showwarning = _show_warning
            return _main(argv)
    finally:  # leave logging as it was, for callers that run several commands in one process
        logger.handlers[:], logger.level, logger.propagate = saved


@contextmanager
def _unwinding_on_signals() -> Iterator[None]:
    """Make SIGINT and SIGTERM raise KeyboardInterrupt and _Terminated, and silence logging
    from then on.

    Shutting a cluster down under way makes asyncio and distributed log tracebacks (tasks
    cancelled under a gather: "Task exception was never retrieved ... AllExit"); the command
    says it was interrupted, in one line. A second SIGTERM (``scancel`` sends more) does not
    cut the cleanup short; a second Ctrl-C does, as a user may want. The handlers are set only
    in the main thread, where Python runs them, and ignored signals stay ignored; the previous
    handlers come back on return (tests run commands in-process), except that after a SIGTERM
    a default one stays ignored.
    """
    from dask.callbacks import Callback

    if threading.current_thread() is not threading.main_thread():
        yield
        return
    disabled = logging.root.manager.disable
    stopping = False
    terminated = False

    def handle(signum: int, frame: Any) -> None:
        nonlocal stopping, terminated
        if terminated and signum == signal.SIGTERM:
            return
        stopping = True
        terminated = signum == signal.SIGTERM
        logging.disable(logging.CRITICAL)
        _let_zarr_writes_finish()
        raise _Terminated() if signum == signal.SIGTERM else KeyboardInterrupt()

    previous = {}
    for signum in (signal.SIGINT, signal.SIGTERM):
        if signal.getsignal(signum) is not signal.SIG_IGN:
            previous[signum] = signal.signal(signum, handle)
    try:
        with Callback(finish=_let_running_tasks_finish):
            yield
    finally:
        for signum, handler in previous.items():
            if terminated and signum == signal.SIGTERM and handler is signal.SIG_DFL:
                # The process is on its way out: a repeated SIGTERM now would only turn its
                # exit status 143 into a kill, as the interpreter shuts down.
                handler = signal.SIG_IGN
            signal.signal(signum, handler)
        if stopping:
            gc.collect()  # asyncio reports a cancelled task when it is collected
            logging.disable(disabled)


def _let_zarr_writes_finish(timeout: float = 10) -> None:
    """Wait for the writes under way on Zarr's event loop (run in a thread of its own).

    A write this thread was waiting for goes on after the signal's exception, and may put its
    chunk back into the temporary output that is being removed (seen after 2 of 16 signals
    during ``ingest``). Called in the signal handler: nothing later runs before that removal.
    """
    import asyncio

    sync = sys.modules.get("zarr.core.sync")  # no import in a signal handler; none, no writes
    loop = (getattr(sync, "loop", None) or [None])[0]
    if loop is None or not loop.is_running():
        return

    async def settled() -> None:
        writes = asyncio.all_tasks() - {asyncio.current_task()}
        if writes:
            await asyncio.wait(writes, timeout=timeout)

    with suppress(Exception):
        asyncio.run_coroutine_threadsafe(settled(), loop).result(timeout + 1)


def _let_running_tasks_finish(dsk: Any, state: Any, failed: bool) -> None:
    """After a computation on Dask's threads in this process failed or was interrupted, wait
    for its tasks still running (a Dask callback).

    Left to themselves, they go on writing chunks into the temporary output that is being
    removed, and leave it behind: ``.NAME.*.tmp`` with a chunk or two, after 3 of 4 SIGTERMs
    during ``synth``. Tasks run first in first out, so the pool's threads are all free once
    each has reached a barrier put behind them.
    """
    import dask.threaded

    pool = dask.threaded.default_pool  # the one of computations from the main thread
    if not failed or pool is None or threading.current_thread() is not threading.main_thread():
        return
    barrier = threading.Barrier(pool._max_workers + 1, timeout=30)
    try:
        for _ in range(pool._max_workers):
            pool.submit(barrier.wait)
        barrier.wait()
    except (threading.BrokenBarrierError, RuntimeError):  # a task that runs on; a pool shut down
        barrier.abort()


def _show_warning(message: Warning | str, *args: Any, **kwargs: Any) -> None:
    """A warning as one line among the command's messages, not Python's two with a source line."""
    logger.warning("warning: %s", message)


def _main(argv: Sequence[str] | None) -> int:
    try:
        cli.main(
            args=list(argv) if argv is not None else None,
            prog_name="bmm-dask",
            standalone_mode=False,
        )
    except click.exceptions.Exit as err:
        return err.exit_code
    except click.UsageError as err:
        command = err.ctx.command_path if err.ctx is not None else "bmm-dask"
        click.echo(f"{command}: error: {err.format_message()} (see '{command} --help')", err=True)
        return 2
    except click.ClickException as err:
        click.echo(f"bmm-dask: error: {err.format_message()}", err=True)
        return err.exit_code
    except BmmDaskError as err:
        click.echo(f"bmm-dask: error: {err}", err=True)
        return 2
    except (_Stopped, KeyboardInterrupt, click.Abort) as err:
        signalled = err.__cause__ if isinstance(err, (_Stopped, click.Abort)) else err
        if isinstance(signalled, _Terminated):
            click.echo("bmm-dask: terminated; outputs already saved are intact", err=True)
            return 128 + signal.SIGTERM
        if isinstance(err, _Stopped) and sys.stderr.isatty():
            click.echo("", err=True)  # after the ^C the terminal echoes
        click.echo("bmm-dask: interrupted; outputs already saved are intact", err=True)
        return 128 + signal.SIGINT
    except OSError as err:
        click.echo(f"bmm-dask: error: {err}", err=True)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
