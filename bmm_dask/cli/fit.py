"""The ``fit`` command, and ``demo``: the whole MNIST job in one command."""

from __future__ import annotations

import json
import logging
import time
import warnings
from pathlib import Path
from typing import Any

import click

from bmm_dask._settings import EM_SETTINGS
from bmm_dask.cli._client import check_report_path, cluster_client, cluster_settings
from bmm_dask.cli._display import print_metrics, progress_bar, say_done
from bmm_dask.cli._em_options import em_options
from bmm_dask.cli._files import open_data, write_json
from bmm_dask.cli._group import CONTEXT, cli
from bmm_dask.cli._options import PERSIST_OPTION, cluster_options, overwrite_option, seed_option
from bmm_dask.cli._signals import output_saved

logger = logging.getLogger("bmm_dask")


def log_resume_point(out: str, point: tuple[int, int, float | None], n_init: int) -> None:
    """Say where a resumed fit continues: which start, after how many saved iterations.

    Parameters
    ----------
    out : str
        The fit's output, which holds the checkpoint.
    point : tuple of (int, int, float or None)
        The start (counted from 1), the iterations of it saved, and the objective after the
        last of them (None when none was saved).
    n_init : int
        Number of starts.
    """
    start, saved, objective = point
    if saved:
        logger.info(
            "resuming %s: start %d of %d, after its iteration %d (the last saved), objective %.4f",
            out,
            start,
            n_init,
            saved,
            objective,
        )
    else:
        logger.info("resuming %s: start %d of %d, from its beginning", out, start, n_init)


def fit_summary(model: Any) -> str:
    """What the fit did, in order: iterations of batch EM, passes of stepwise EM, convergence."""
    groups: list[list[bool]] = []  # runs of records: stepwise passes (True) or iterations
    for record in model.history_:
        is_pass = "pass" in record
        if groups and groups[-1][0] == is_pass:
            groups[-1].append(is_pass)
        else:
            groups.append([is_pass])
    done = []
    for group in groups:
        n = len(group)
        if group[0]:
            done.append(
                f"{n} stepwise pass{'es' if n > 1 else ''} "
                f"({model.batch_size_:,} rows per mini-batch)"
            )
        else:
            done.append(f"{n} iteration{'s' if n != 1 else ''}")
    if not groups or not groups[-1][0]:
        converged = "converged" if model.converged_ else "not converged"
        done[-1:] = [f"{done[-1]}, {converged}" if done else f"0 iterations, {converged}"]
    return " then ".join(done)


def make_fit_job(
    *,
    data: str,
    n_components: int,
    out: str,
    seed: int,
    overwrite: bool,
    checkpoint_every: int,
    resume: bool,
    checkpoint: str | None = None,
    owner: str | None = None,
    **options: Any,
) -> Any:
    """The :class:`~bmm_dask.job.FitJob` that ``fit``'s options describe, checked: the data
    opened, the output and the settings checked against it.

    ``fit`` calls it in the terminal; a submitted fit calls it on a worker, to check and then
    to run. ``options`` holds the EM settings (:data:`~bmm_dask._settings.EM_SETTINGS`);
    its options of where the work runs play no part.

    Returns
    -------
    FitJob

    Raises
    ------
    BmmDaskError
        As :class:`~bmm_dask.job.FitJob` does, and when the data cannot be opened.
    """
    from bmm_dask.job import FitJob
    from bmm_dask.model import BernoulliMixture

    dataset = open_data(data)
    settings = {setting.name: options[setting.name] for setting in EM_SETTINGS}
    model = BernoulliMixture(n_components, random_state=seed, **settings)
    return FitJob(
        model,
        dataset,
        out,
        overwrite=overwrite,
        checkpoint_every=checkpoint_every,
        resume=resume,
        checkpoint=checkpoint,
        owner=owner,
    )


def log_resume(job: Any) -> None:
    """Say where a resumed fit continues (nothing when it does not resume)."""
    n_init = job.model.n_init
    if job.resume_step is not None and job.resume_point is not None:
        logger.info(
            "resuming %s: start %d of %d, in stepwise pass %d, after step %d (the last saved)",
            job.checkpoint,
            job.resume_point[0],
            n_init,
            *job.resume_step,
        )
    elif job.resume_point is not None:
        log_resume_point(job.checkpoint, job.resume_point, n_init)


def fit_done(job: Any, seconds: float) -> str:
    """The line a fit ends with: what it wrote and did."""
    model = job.model
    return (
        f"wrote {job.out}: K = {model.n_components}, {fit_summary(model)}, objective "
        f"{model.lower_bound_:.4f} nats per sample, {seconds:.1f} s of fitting"
    )


@cli.command(context_settings=CONTEXT)
@click.argument("data")
@click.option(
    "--k", "n_components", required=True, type=click.IntRange(min=1), help="Number of components."
)
@click.option("--out", "-o", required=True, type=click.Path(), help="Model to write (MODEL.zarr).")
@em_options()
@seed_option("every random draw")
@overwrite_option()
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
@PERSIST_OPTION
@cluster_options
def fit(data: str, n_components: int, out: str, persist: bool | None, **options: Any) -> None:
    """Fit a Bernoulli mixture of K components to DATA (DATA.zarr or DATA.zarr/group) by EM.

    With --checkpoint-every N the state is saved in OUT every N iterations (OUT is then marked
    unfinished until the model replaces it); --resume continues from it and ends with the same
    model as a fit that was never interrupted.
    """

    from sklearn.exceptions import ConvergenceWarning

    from bmm_dask.cluster import task_memory
    from bmm_dask.io import output_lock

    job = make_fit_job(**click.get_current_context().params)
    check_report_path(
        options["performance_report"], [data], overwrite=options["overwrite"], outputs=[out]
    )
    log_resume(job)
    itemsize = 8 if options["dtype"] == "float64" else 4
    task_bytes = task_memory(job.dataset.n_features, n_components, itemsize)
    with (
        output_lock(out),  # before the cluster starts: a second fit of out stops at once
        cluster_client(**cluster_settings(options), task_bytes=task_bytes),
        progress_bar("fit") as bar,
        warnings.catch_warnings(record=True) as caught,
    ):
        warnings.simplefilter("always", ConvergenceWarning)
        seconds = job.run(callback=bar.iteration, persist=persist)
    for warning in caught:
        logger.warning("warning: %s", warning.message)
    say_done(fit_done(job, seconds))


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
@seed_option("every random draw")
@overwrite_option("the folder")
@cluster_options
def demo(
    out: str, n_components: int, n_init: int, seed: int, overwrite: bool, **cluster: Any
) -> None:
    """The whole MNIST job, offline: ingest, fit on a local cluster, evaluate, report.

    Uses the binarised MNIST inside the package (or the fetched files when the cache has them).
    """

    from sklearn.exceptions import ConvergenceWarning

    from bmm_dask.datasets import ingest_mnist, mnist_dir, packaged_mnist_path
    from bmm_dask.evaluation import evaluate as evaluate_model
    from bmm_dask.evaluation import write_report
    from bmm_dask.io import atomic_output
    from bmm_dask.model import BernoulliMixture

    started = time.perf_counter()
    folder = Path(out)
    inputs = [mnist_dir(), packaged_mnist_path()]  # never replace the cache or the package
    check_report_path(cluster.get("performance_report"), inputs, overwrite=overwrite, outputs=[out])
    with atomic_output(folder, overwrite=overwrite, inputs=inputs) as tmp:
        logger.info("the demo writes everything into %s (--out)", folder.absolute())
        logger.info("1/4 ingest MNIST into %s", folder / "mnist.zarr")
        ingest_mnist(tmp / "mnist.zarr")
        train, test = (
            open_data(str(tmp / "mnist.zarr" / "train")),
            open_data(str(tmp / "mnist.zarr" / "test")),
        )
        model = BernoulliMixture(n_components, n_init=n_init, random_state=seed)
        with (
            cluster_client(**cluster),
            progress_bar("fit") as bar,
            warnings.catch_warnings(),
        ):
            warnings.simplefilter("ignore", ConvergenceWarning)
            logger.info("2/4 fit K = %d on the 60,000 training images", n_components)
            fit_started = time.perf_counter()
            model.fit(train, callback=bar.iteration)
            fit_seconds = time.perf_counter() - fit_started
            data_attrs = {
                **train.fingerprint(),
                "path": str(folder.absolute() / "mnist.zarr" / "train"),
            }
            model.save(tmp / "model.zarr", attrs={"data": data_attrs, "fit_seconds": fit_seconds})
            model = BernoulliMixture.load(tmp / "model.zarr")
            logger.info("3/4 evaluate on the training and test sets")
            on_train = evaluate_model(model, train, data_path=str(folder / "mnist.zarr" / "train"))
            logger.info("4/4 report on the test set")
            write_report(
                model,
                tmp / "report",
                dataset=test,
                model_path=str(folder / "model.zarr"),
                data_path=str(folder / "mnist.zarr" / "test"),
            )
        on_test = json.loads((tmp / "report" / "metrics.json").read_text())
        for split, metrics in (("train", on_train), ("test", on_test)):
            write_json(tmp / f"metrics-{split}.json", metrics)
    output_saved()
    for metrics in (on_train, on_test):
        print_metrics(metrics)
        click.echo("")
    click.echo(f"done in {time.perf_counter() - started:.0f} s; everything is in {folder}/:")
    click.echo(f"  {folder / 'mnist.zarr'}        the data (train and test), binarised at 128")
    click.echo(f"  {folder / 'model.zarr'}        the model: bmm-dask info {folder / 'model.zarr'}")
    click.echo(f"  {folder / 'metrics-train.json'}, metrics-test.json")
    click.echo(
        f"  {folder / 'report' / 'report.html'}  the report: means, objective, confusion, samples"
    )
