"""The options that several commands share: seeds, outputs, chunks, and where the work runs (a
cluster named or a local one)."""

from __future__ import annotations

import logging
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
