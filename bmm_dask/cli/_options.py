"""Options shared by several commands (where the work runs: a cluster named or a local one) and
the helpers behind them."""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import Any

import click

from bmm_dask.errors import SettingsError

logger = logging.getLogger("bmm_dask")


def seed_option(what: str) -> Any:
    """``--seed``: a whole number from 0, 0 by default, seeding ``what``."""
    return click.option(
        "--seed", default=0, show_default=True, type=click.IntRange(min=0), help=f"Seed of {what}."
    )


def overwrite_option(what: str = "the output") -> Any:
    """``--overwrite``: replace ``what`` if it exists (every command refuses to otherwise)."""
    return click.option("--overwrite", is_flag=True, help=f"Replace {what} if it exists.")


CHUNK_ROWS_OPTION = click.option(
    "--chunk-rows",
    type=click.IntRange(min=1),
    help="Rows per chunk [default: about 1 MiB packed].",
)


PERSIST_OPTION = click.option(
    "--persist/--no-persist",
    default=None,
    help="Hold the data in the cluster's memory, or read it from the store every iteration "
    "[default: held when it takes at most half the cluster's memory].",
)


def scheduler_options(instead: str) -> list[Any]:
    """The --scheduler and --scheduler-file options.

    Parameters
    ----------
    instead : str
        Where the command runs without them, for the help text ("a local cluster").

    Returns
    -------
    list
        The two click option decorators.
    """
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


PERFORMANCE_REPORT_OPTION = click.option(
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


def cluster_options(func: Any) -> Any:
    """Where fit and demo run: a cluster named, else a local cluster of worker processes.

    Adds --scheduler, --scheduler-file, --workers, --threads-per-worker, --memory-limit,
    --dashboard-address and --performance-report to a command.

    Parameters
    ----------
    func : callable
        The command function.

    Returns
    -------
    callable
        ``func`` with the options.
    """
    local = [
        click.option(
            "--workers",
            type=click.IntRange(min=1),
            help="Worker processes of the local cluster [default: the number of cores].",
        ),
        click.option(
            "--threads-per-worker",
            type=click.IntRange(min=1),
            help="Threads per worker of the local cluster [default: 1].",
        ),
        click.option(
            "--memory-limit",
            metavar="SIZE",
            callback=_check_cluster_option,
            help="Memory per worker of the local cluster, e.g. 2GB [default: shared out].",
        ),
        click.option(
            "--dashboard-address",
            default="127.0.0.1:8787",
            show_default=True,
            callback=_check_cluster_option,
            help="Where the local cluster's dashboard listens (HOST:PORT; port 0 for any free one).",
        ),
    ]
    return _apply([*scheduler_options("a local cluster"), *local, PERFORMANCE_REPORT_OPTION], func)


def remote_options(func: Any) -> Any:
    """--scheduler, --scheduler-file and --performance-report for commands that run in this
    process unless told to use a cluster.

    Parameters
    ----------
    func : callable
        The command function.

    Returns
    -------
    callable
        ``func`` with the options.
    """
    return _apply([*scheduler_options("in this process"), PERFORMANCE_REPORT_OPTION], func)


#: The options of where the work runs (:func:`cluster_options`), as :func:`cluster_client`
#: takes them.
CLUSTER_SETTINGS = (
    "scheduler",
    "scheduler_file",
    "workers",
    "threads_per_worker",
    "memory_limit",
    "performance_report",
    "dashboard_address",
)


def cluster_settings(options: dict[str, Any]) -> dict[str, Any]:
    """The options of where the work runs, among all of a command's options.

    Parameters
    ----------
    options : dict
        A command's options by name.

    Returns
    -------
    dict
        Those :func:`cluster_client` takes.
    """
    return {name: options[name] for name in CLUSTER_SETTINGS if name in options}


@contextmanager
def cluster_client(
    scheduler: str | None = None,
    scheduler_file: str | None = None,
    workers: int | None = None,
    threads_per_worker: int | None = None,
    memory_limit: str | None = None,
    performance_report: str | None = None,
    dashboard_address: str = "127.0.0.1:8787",
    task_bytes: float = 0,
) -> Iterator[Any]:
    """A Dask client (the cluster named, else a local one) for the command.

    Its dashboard link (and that of the progress page) is logged first, and Dask's performance
    report is written when asked for.

    Parameters
    ----------
    scheduler : str, default=None
        Address of a running scheduler.
    scheduler_file : str, default=None
        A scheduler file naming one.
    workers : int, default=None
        Worker processes of the local cluster; None means the number of cores.
    threads_per_worker : int, default=None
        Threads per worker of the local cluster; None means 1.
    memory_limit : str, default=None
        Memory per worker of the local cluster; None means shared out.
    performance_report : str, default=None
        Where to write Dask's performance report of the work; None means nowhere.
    dashboard_address : str, default="127.0.0.1:8787"
        Where the local cluster's dashboard listens.
    task_bytes : float, default=0
        The memory a task needs, which sets the smallest --memory-limit accepted.

    Yields
    ------
    distributed.Client

    Raises
    ------
    SettingsError
        As :func:`bmm_dask.cluster.open_client`.
    """
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

        Path(performance_report).absolute().parent.mkdir(parents=True, exist_ok=True)
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


def maybe_client(
    scheduler: str | None, scheduler_file: str | None, performance_report: str | None
) -> Any:
    """A cluster when one is named (or a performance report asked for), else this process.

    Parameters
    ----------
    scheduler : str or None
        Address of a running scheduler.
    scheduler_file : str or None
        A scheduler file naming one.
    performance_report : str or None
        Where to write Dask's performance report.

    Returns
    -------
    context manager
        :func:`cluster_client`, or one that does nothing (the work runs on this process's
        threads).
    """
    if (
        scheduler
        or scheduler_file
        or os.environ.get("DASK_SCHEDULER_ADDRESS")
        or performance_report
    ):
        return cluster_client(scheduler, scheduler_file, performance_report=performance_report)
    return nullcontext()


def open_data(path: str) -> Any:
    """Open a dataset (see :func:`bmm_dask.io.open_dataset`), importing Dask only now.

    Parameters
    ----------
    path : str
        The dataset's path or URL.

    Returns
    -------
    Dataset

    Raises
    ------
    DataError
        When the path is missing or is not a dataset.
    """
    from bmm_dask.io import open_dataset

    return open_dataset(path)


def load_model(path: str) -> Any:
    """Read a model store (see :meth:`BernoulliMixture.load`), importing Dask only now.

    Parameters
    ----------
    path : str
        The model's path.

    Returns
    -------
    BernoulliMixture

    Raises
    ------
    ModelFileError
        When the path is missing, not a model, or damaged.
    """
    from bmm_dask.model import BernoulliMixture

    return BernoulliMixture.load(path)


def check_report_path(performance_report: str | None, inputs: Sequence[str | None]) -> None:
    """Check where a performance report goes, before any work: never over an input.

    Dask writes its report over whatever is there, so it must go somewhere it can write
    (missing folders are created when the report is written).

    Parameters
    ----------
    performance_report : str or None
        The report's path; None means no report, nothing to check.
    inputs : sequence of str or None
        What the command reads.

    Raises
    ------
    OutputError
        If the path is or holds an input, or cannot be written.
    """
    if performance_report is not None:
        from bmm_dask.io import check_output

        check_output(performance_report, overwrite=True, inputs=inputs)


def write_json(
    path: Path, value: Any, *, overwrite: bool = True, inputs: Sequence[str | None] = ()
) -> None:
    """Write a JSON file whole or not at all, under its lock; never over an input.

    Parameters
    ----------
    path : Path
        The file to write.
    value : object
        What to write, as JSON (indented).
    overwrite : bool, default=True
        Whether an existing file may be replaced.
    inputs : sequence of str or None, default=()
        What the command reads; ``path`` may be none of them.

    Raises
    ------
    OutputError
        If the file exists (without ``overwrite``), is or holds an input, cannot be written,
        or another command holds its lock.
    """
    from bmm_dask.io import atomic_file, check_output, output_lock

    check_output(path, overwrite=overwrite, inputs=inputs)
    with output_lock(path):
        check_output(path, overwrite=overwrite, inputs=inputs)
        atomic_file(
            path,
            lambda tmp: tmp.write_text(json.dumps(value, indent=2) + "\n"),
            overwrite=overwrite,
        )


def learn_mapping(model: Any, path: str | None, model_path: str) -> list[Any] | None:
    """The label of each component, learned on a labelled dataset (``--mapping-from``).

    Parameters
    ----------
    model : BernoulliMixture
        A fitted model.
    path : str or None
        The labelled dataset; None means no mapping.
    model_path : str
        Where the model was read from, for messages.

    Returns
    -------
    list of length n_components, or None
        A label, or None, for each component, as :func:`bmm_dask.evaluation.evaluate` matches
        them.

    Raises
    ------
    SettingsError
        If the dataset has no labels.
    DataError
        If the dataset cannot be opened, or does not fit the model.
    """
    if path is None:
        return None
    from bmm_dask.evaluation import evaluate

    train = open_data(path)
    if train.labels is None:
        raise SettingsError(f"{path}: has no labels to learn the components' labels from")
    return evaluate(model, train, model_path=model_path)["mapping"]
