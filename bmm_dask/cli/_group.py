"""The ``bmm-dask`` group and ``main``: errors to exit status 2 and one line, signals to 130/143."""

from __future__ import annotations

import logging
import signal
import sys
import warnings
from collections.abc import Sequence
from typing import Any

import click

from bmm_dask import __version__
from bmm_dask.cli._display import configure_logging
from bmm_dask.cli._signals import (
    Stopped,
    Terminated,
    running_tasks_finish_on_failure,
    unwinding_on_signals,
)
from bmm_dask.errors import BmmDaskError, command_line_messages

logger = logging.getLogger("bmm_dask")


CONTEXT = {"help_option_names": ["-h", "--help"], "max_content_width": 100}
#: Commands that follow a job on a cluster: stopping them stops nothing there.
FOLLOWING = ("wait", "logs", "jobs", "status")


class _Command(click.Command):
    """A command of the group: when its work on Dask's threads fails or is interrupted, its
    running tasks finish before it unwinds (they would write into outputs being removed)."""

    def invoke(self, ctx: click.Context) -> Any:
        with running_tasks_finish_on_failure():
            return super().invoke(ctx)


class _Group(click.Group):
    """The ``bmm-dask`` group: a command stopped by a signal leaves it as ``Stopped``."""

    command_class = _Command

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except KeyboardInterrupt as err:
            stopped = Stopped()
            stopped.command = ctx.invoked_subcommand
            raise stopped from err


@click.group(cls=_Group, context_settings=CONTEXT)
@click.version_option(__version__, "-V", "--version", prog_name="bmm-dask")
@click.option("-v", "--verbose", count=True, help="More messages (-vv for debugging).")
@click.option("-q", "--quiet", count=True, help="Fewer messages (warnings and errors only).")
def cli(verbose: int, quiet: int) -> None:
    """Fit Bernoulli mixture models by EM on binary data in Zarr, with Dask.

    Start with `bmm-dask ingest mnist --out mnist.zarr`, then `bmm-dask info mnist.zarr`.
    """
    configure_logging(verbose, quiet)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; return the exit status (2 for a user's mistake, with one line).

    Parameters
    ----------
    argv : sequence of str, default=None
        The arguments after the program's name; None means ``sys.argv[1:]``.

    Returns
    -------
    int
        0 on success, 2 for a usage error or a :class:`~bmm_dask.errors.BmmDaskError`, 1 for
        another OS error, 130 after Ctrl-C and 143 after SIGTERM.
    """
    saved = logger.handlers[:], logger.level, logger.propagate
    try:
        with warnings.catch_warnings(), unwinding_on_signals(), command_line_messages():
            warnings.showwarning = _show_warning
            return _main(argv)
    finally:  # leave logging as it was, for callers that run several commands in one process
        logger.handlers[:], logger.level, logger.propagate = saved


def _show_warning(message: Warning | str, *args: Any, **kwargs: Any) -> None:
    """A warning as one line among the command's messages, not Python's two with a source line."""
    logger.warning("warning: %s", message)


def _main(argv: Sequence[str] | None) -> int:
    try:
        status = cli.main(
            args=list(argv) if argv is not None else None,
            prog_name="bmm-dask",
            standalone_mode=False,
        )
        if isinstance(status, int):  # click returns the code of an Exit raised in a command
            return status
    except click.exceptions.Exit as err:
        return err.exit_code
    except click.UsageError as err:
        # one prefix for every error; the command is named in the hint
        command = err.ctx.command_path if err.ctx is not None else "bmm-dask"
        click.echo(f"bmm-dask: error: {err.format_message()} (see '{command} --help')", err=True)
        return 2
    except click.ClickException as err:
        click.echo(f"bmm-dask: error: {err.format_message()}", err=True)
        return err.exit_code
    except BmmDaskError as err:
        click.echo(f"bmm-dask: error: {err}", err=True)
        return 2
    except (Stopped, KeyboardInterrupt, click.Abort) as err:
        signalled = err.__cause__ if isinstance(err, (Stopped, click.Abort)) else err
        if isinstance(signalled, EOFError):  # click makes an end of file an Abort: no signal
            reason = " ".join(str(signalled).split())
            click.echo(f"bmm-dask: error: a file ended before it should have ({reason})", err=True)
            return 2
        if isinstance(signalled, Terminated):
            click.echo("bmm-dask: terminated; outputs already saved are intact", err=True)
            return 128 + signal.SIGTERM
        if isinstance(err, Stopped) and sys.stderr.isatty():
            click.echo("", err=True)  # after the ^C the terminal echoes
        if getattr(err, "command", None) in FOLLOWING:  # they write nothing; the job is elsewhere
            click.echo("bmm-dask: interrupted; the job goes on (bmm-dask status JOB)", err=True)
        else:
            click.echo("bmm-dask: interrupted; outputs already saved are intact", err=True)
        return 128 + signal.SIGINT
    except OSError as err:
        click.echo(f"bmm-dask: error: {err}", err=True)
        return 1
    return 0
