"""``submit fit|select``, ``jobs``, ``status``, ``logs``, ``wait``, ``cancel``: work that runs on
a Dask cluster after the terminal that sent it has gone (see :mod:`bmm_dask.jobs`)."""

from __future__ import annotations

import copy
import datetime
import json
import logging
import os
import shlex
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import click

from bmm_dask.cli import fit as _fit  # noqa: F401  (submit takes fit's and select's options)
from bmm_dask.cli import select as _select  # noqa: F401
from bmm_dask.cli._em_options import FiniteRange
from bmm_dask.cli._group import CONTEXT, cli
from bmm_dask.cli._options import scheduler_options
from bmm_dask.errors import SettingsError, command_line_messages
from bmm_dask.jobs import describe_progress

logger = logging.getLogger("bmm_dask")

#: Options of fit and select that set up a local cluster or a report on this machine: a
#: submitted job runs on the cluster named, and its driver writes nothing here.
NOT_SUBMITTED = {
    "workers",
    "threads_per_worker",
    "memory_limit",
    "dashboard_address",
    "performance_report",
    "scheduler",
    "scheduler_file",
}
#: Options that name files: made absolute on this machine before they travel to a worker.
PATHS = ("data", "out", "validation")
#: The suffix of a submitted fit's checkpoint, beside its output.
CHECKPOINT_SUFFIX = ".checkpoint"


def checkpoint_of(out: str) -> str:
    """Where a submitted fit keeps its checkpoint: beside its output, so that a model already
    there stays until the new one replaces it."""
    return out.rstrip("/") + CHECKPOINT_SUFFIX


def _absolute(path: str | None) -> str | None:
    if path is None or "://" in path:
        return path
    return os.path.abspath(path)


@contextmanager
def remote_client(scheduler: str | None, scheduler_file: str | None) -> Iterator[Any]:
    """A client of the cluster named by ``--scheduler``, ``--scheduler-file`` or
    ``DASK_SCHEDULER_ADDRESS``; jobs need one (a local cluster would stop with the command)."""
    from bmm_dask.cluster import open_client

    if not (scheduler or scheduler_file or os.environ.get("DASK_SCHEDULER_ADDRESS")):
        raise SettingsError(
            "name the cluster: --scheduler ADDRESS, --scheduler-file FILE, or the "
            "DASK_SCHEDULER_ADDRESS environment variable"
        )
    with open_client(scheduler=scheduler, scheduler_file=scheduler_file) as client:
        yield client


def _command_line(command: str, params: dict[str, Any], defaults: dict[str, Any]) -> str:
    """The command as a user would type it: its arguments and the options not at default."""
    words = ["bmm-dask", command, str(params["data"])]
    for name, value in params.items():
        if name == "data" or name in NOT_SUBMITTED or name == "json_output":
            continue
        if name == "persist" and value is not None:  # a flag pair: either may be given
            words.append("--persist" if value else "--no-persist")
            continue
        if value == defaults.get(name) or value is None or value is False:
            continue
        flag = "--k" if name in ("n_components", "ks") else "--" + name.replace("_", "-")
        if value is True:
            words.append(flag)
        else:
            words += [flag, str(value)]
    return shlex.join(words)


# --------------------------------------------------------------------------- on the worker


def check_fit(options: dict[str, Any]) -> None:
    """A submitted fit's checks, on a worker: its paths, data, output and settings."""
    from bmm_dask.cli.fit import make_fit_job

    with command_line_messages():
        make_fit_job(**options, checkpoint=checkpoint_of(options["out"]))


def run_fit(options: dict[str, Any], job: Any) -> str:
    """A submitted fit, on a worker: fit and save as ``fit`` does, with checkpoints beside the
    output; a later attempt (after the worker of the last one died) continues from them."""
    from bmm_dask.cli.fit import fit_done, log_resume, make_fit_job
    from bmm_dask.io import CHECKPOINT_FILE
    from bmm_dask.io._output import exists, join, remove_output

    with command_line_messages():  # messages name settings by their flags
        out, checkpoint = options["out"], checkpoint_of(options["out"])
        if job.attempt > 1 and _written_by(out, job.id):
            return f"wrote {out} (by the last attempt, before its worker died)"
        resume = options["resume"] or (
            job.attempt > 1 and exists(join(checkpoint, CHECKPOINT_FILE))
        )
        fit_job = make_fit_job(**{**options, "resume": resume}, checkpoint=checkpoint, owner=job.id)
        log_resume(fit_job)
        try:
            # the fit's events reach job.record by publish(): CURRENT_JOB is this job
            seconds = fit_job.run(persist=options["persist"], attrs={"job": job.id})
        except Exception:
            if job.cancelled.is_set() and not options["resume"]:
                remove_output(checkpoint)  # the job's own checkpoint; one it was given stays
            raise
        return fit_done(fit_job, seconds)


def _written_by(out: str, job_id: str) -> bool:
    """Whether ``out`` holds a model that this job saved."""
    from bmm_dask.io._zarr import open_group

    try:
        attrs = dict(open_group(out, None).attrs)
    except Exception:  # not there, or not a store: not this job's model
        return False
    return isinstance(attrs, dict) and attrs.get("job") == job_id


def check_select(options: dict[str, Any]) -> None:
    """A submitted selection's checks, on a worker."""
    from bmm_dask.cli.select import SelectJob

    with command_line_messages():
        SelectJob(**options)


def run_select(options: dict[str, Any], job: Any) -> str:
    """A submitted selection, on a worker: fit the candidates, save, and log the table.

    It keeps no checkpoint: a later attempt (after the worker of the last one died) starts it
    again, and ends with the same selection.
    """
    from bmm_dask.cli.select import SelectJob

    with command_line_messages():
        select_job = SelectJob(**options)
        selection, seconds = select_job.run()
        select_job.save(selection)
        *table, last = select_job.summary(selection, seconds)
        for line in table:
            job.log(line)
        return last


RUNNERS = {"fit": (run_fit, check_fit), "select": (run_select, check_select)}


# --------------------------------------------------------------------------- the commands


def _cluster(func: Any) -> Any:
    """--scheduler and --scheduler-file: the cluster of the jobs."""
    for option in reversed(scheduler_options("DASK_SCHEDULER_ADDRESS")):
        func = option(func)
    return func


@cli.group(context_settings=CONTEXT)
def submit() -> None:
    """Run fit or select on a Dask cluster as a job that outlives this command.

    It checks the settings, the data and the output on one of the cluster's workers (so the
    paths are the workers' paths; local paths are made absolute here), starts the job's driver
    on a worker, prints the job's id and returns. Follow the job with `bmm-dask jobs`, `status`,
    `logs`, `wait` and `cancel`. A submitted fit saves checkpoints beside its output
    (OUT.checkpoint, every --checkpoint-every iterations); when the worker running its driver
    dies, the driver runs again on another and continues from them.
    """


def _submitted(name: str) -> click.Command:
    """``submit NAME``: the options of the command NAME, less those of a local cluster, with
    --json; a fit saves a checkpoint every iteration unless told otherwise."""
    original = cli.commands[name]
    params = []
    for param in original.params:
        if param.name in NOT_SUBMITTED:
            continue
        if param.name == "checkpoint_every":
            param = copy.copy(param)
            param.default = 1
            param.help = (
                "Save the state in OUT.checkpoint every N iterations (or stepwise steps) "
                "and after each start (0: never; a driver whose worker dies starts over)."
            )
        if param.name == "resume":
            param = copy.copy(param)
            param.help = "Continue the unfinished fit whose checkpoint is OUT.checkpoint."
        params.append(param)
    params += [
        *_cluster(lambda: None).__click_params__[::-1],
        click.Option(["--json", "json_output"], is_flag=True, help="Print the job as JSON."),
    ]

    def callback(
        scheduler: str | None, scheduler_file: str | None, json_output: bool, **options: Any
    ) -> None:
        _submit(name, options, scheduler, scheduler_file, json_output)

    return click.Command(
        name,
        params=params,
        callback=callback,
        context_settings=CONTEXT,
        help=f"Submit `bmm-dask {name}` to the cluster; print the job's id and return.",
        short_help=f"Submit {name} as a job.",
    )


def _submit(
    name: str,
    options: dict[str, Any],
    scheduler: str | None,
    scheduler_file: str | None,
    json_output: bool,
) -> None:
    from bmm_dask.jobs import submit_job

    if name == "select":  # a mistake the command line shows needs no worker to find it
        from bmm_dask.cli.select import parse_k_list

        parse_k_list(options["ks"])
    for key in PATHS:
        if key in options:
            options[key] = _absolute(options[key])
    # the options given, against submit's own defaults (a checkpoint every iteration)
    defaults = {p.name: p.default for p in click.get_current_context().command.params if p.name}
    argv = _command_line(name, options, defaults)
    runner, check = RUNNERS[name]
    with remote_client(scheduler, scheduler_file) as client:
        _add_page(client)
        job_id = submit_job(
            client, runner, options, command=name, argv=argv, output=options["out"], check=check
        )
        address = client.scheduler.address
    if json_output:
        click.echo(json.dumps({"id": job_id, "command": argv, "scheduler": address}))
        return
    click.echo(job_id)
    sys.stdout.flush()  # the id first: a script reads it as soon as it is there
    logger.info(
        "submitted job %s to %s: follow it with bmm-dask logs %s --follow, or wait for it "
        "with bmm-dask wait %s",
        job_id,
        address,
        job_id,
        job_id,
    )


def _add_page(client: Any) -> None:
    from bmm_dask.dashboard import ProgressPage

    try:
        client.register_plugin(ProgressPage())
    except Exception as err:  # the scheduler may lack bmm_dask: jobs run without the page
        logger.debug("no progress page on the dashboard: %s", err)


submit.add_command(_submitted("fit"))
submit.add_command(_submitted("select"))


def _when(seconds: float | None) -> str:
    if not seconds:
        return "-"
    return datetime.datetime.fromtimestamp(seconds).strftime("%Y-%m-%d %H:%M:%S")


def _duration(seconds: float | None) -> str:
    if not seconds:
        return "-"
    seconds = round(seconds)
    hours, rest = divmod(seconds, 3600)
    return f"{hours}:{rest // 60:02d}:{rest % 60:02d}" if hours else f"{rest // 60}:{rest % 60:02d}"


@cli.command(context_settings=CONTEXT)
@_cluster
@click.option("--json", "json_output", is_flag=True, help="Print the jobs as JSON.")
def jobs(scheduler: str | None, scheduler_file: str | None, json_output: bool) -> None:
    """List the cluster's jobs, oldest first: id, state, progress, times, output, command."""
    from bmm_dask.jobs import list_jobs

    with remote_client(scheduler, scheduler_file) as client:
        found = list_jobs(client)
    if json_output:
        click.echo(json.dumps(found, indent=2))
        return
    if not found:
        click.echo("no jobs on this cluster (bmm-dask submit fit ... starts one)")
        return
    rows = [("JOB", "STATE", "PROGRESS", "STARTED", "ELAPSED", "OUTPUT", "COMMAND")]
    for job in found:
        rows.append(
            (
                job["id"],
                job["state"],
                describe_progress(job.get("progress") or {}),
                _when(job.get("started")),
                _duration(job.get("elapsed")),
                job.get("output") or "-",
                job["argv"],
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]) - 1)]
    for row in rows:
        click.echo(
            "  ".join(f"{cell:<{w}}" for cell, w in zip(row, widths, strict=False)) + "  " + row[-1]
        )


def _status_lines(job: dict[str, Any]) -> list[str]:
    lines = [
        f"job {job['id']}: {job['state']}",
        f"  command     {job['argv']}",
        f"  output      {job.get('output') or '-'}",
        f"  progress    {describe_progress(job.get('progress') or {})}",
        f"  submitted   {_when(job.get('submitted'))}",
        f"  started     {_when(job.get('started'))}"
        + (f" on {job['worker']}" if job.get("worker") and (job.get("attempt") or 0) <= 1 else ""),
        *(
            [
                f"  attempt     {job['attempt']}, on {job['worker']} (the worker of the last one died)"
            ]
            if (job.get("attempt") or 0) > 1
            else []
        ),
        f"  elapsed     {_duration(job.get('elapsed'))}",
    ]
    if job.get("ended"):
        lines.append(f"  ended       {_when(job['ended'])}")
    if job.get("message"):
        lines.append(
            f"  {'error' if job['state'] == 'failed' else 'last line':<11} {job['message']}"
        )
    return lines


@cli.command(context_settings=CONTEXT)
@click.argument("job_id", metavar="JOB")
@_cluster
@click.option("--json", "json_output", is_flag=True, help="Print the job as JSON.")
def status(
    job_id: str, scheduler: str | None, scheduler_file: str | None, json_output: bool
) -> None:
    """Show where JOB is: its state, progress, times, output, and how it ended."""
    from bmm_dask.jobs import get_job

    with remote_client(scheduler, scheduler_file) as client:
        job = get_job(client, job_id)
    if json_output:
        click.echo(json.dumps(job, indent=2))
        return
    for line in _status_lines(job):
        click.echo(line)


@cli.command(context_settings=CONTEXT)
@click.argument("job_id", metavar="JOB")
@_cluster
@click.option("--follow", "-f", is_flag=True, help="Go on printing lines until the job ends.")
def logs(job_id: str, scheduler: str | None, scheduler_file: str | None, follow: bool) -> None:
    """Print JOB's log: the lines its command would print in a terminal, with their times."""
    from bmm_dask.jobs import ACTIVE, get_job, job_log

    with remote_client(scheduler, scheduler_file) as client:
        shown = 0
        while True:
            # the state before the lines: the lines of a job seen ended are all there
            ended = get_job(client, job_id)["state"] not in ACTIVE
            lines = job_log(client, job_id)
            for when, event in lines[shown:]:
                click.echo(f"{_when(when)}  {event.get('message', '')}")
            shown = len(lines)
            sys.stdout.flush()
            if not follow or ended:
                return
            time.sleep(0.5)


@cli.command(context_settings=CONTEXT)
@click.argument("job_id", metavar="JOB")
@_cluster
@click.option(
    "--timeout",
    type=FiniteRange(min=0),
    metavar="SECONDS",
    help="Give up after this long (exit status 1) [default: wait as long as it takes].",
)
def wait(
    job_id: str, scheduler: str | None, scheduler_file: str | None, timeout: float | None
) -> None:
    """Wait for JOB to end. Exit status 0 when it is done, 2 when it failed (with its one-line
    error), 130 when it was cancelled."""
    from bmm_dask.jobs import wait_job

    with remote_client(scheduler, scheduler_file) as client:
        try:
            job = wait_job(client, job_id, timeout=timeout)
        except TimeoutError as err:
            click.echo(f"bmm-dask: {err}", err=True)
            raise click.exceptions.Exit(1) from None
    if job["state"] == "done":
        click.echo(job.get("message") or f"job {job_id} done")
        return
    if job["state"] == "cancelled":
        click.echo(f"bmm-dask: job {job_id} was cancelled", err=True)
        raise click.exceptions.Exit(130)
    raise SettingsError(f"job {job_id} failed: {job.get('message')}")


@cli.command(context_settings=CONTEXT)
@click.argument("job_id", metavar="JOB")
@_cluster
def cancel(job_id: str, scheduler: str | None, scheduler_file: str | None) -> None:
    """Stop JOB at its next step: its temporary output (the checkpoint) is removed, and a model
    that was in its output before stays."""
    from bmm_dask.jobs import cancel_job

    with remote_client(scheduler, scheduler_file) as client:
        job = cancel_job(client, job_id)
    if job["state"] in ("queued", "running"):
        click.echo(
            f"job {job_id}: cancelling; it stops at its next step and removes its checkpoint "
            f"(bmm-dask wait {job_id})"
        )
    else:
        click.echo(f"job {job_id}: {job['state']} already; nothing to cancel")
