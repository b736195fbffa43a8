"""The ``select`` command: fit several numbers of components in shared passes, choose one."""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import click

from bmm_dask.cli._group import CONTEXT, cli
from bmm_dask.cli._options import (
    ALPHA_OPTION,
    DTYPE_OPTION,
    INIT_OPTION,
    PASSES_OPTION,
    PERSIST_OPTION,
    STEP_EXPONENT_OPTION,
    STEPS_IN_FLIGHT_OPTION,
    check_report_path,
    cluster_client,
    cluster_options,
    open_data,
    overwrite_option,
    seed_option,
)
from bmm_dask.errors import SettingsError

logger = logging.getLogger("bmm_dask")


def parse_k_list(text: str) -> list[int]:
    """``"5,10,20"`` as ``[5, 10, 20]``.

    Raises
    ------
    SettingsError
        If the list is empty or names something other than whole numbers of at least 1.
    """
    parts = [part.strip() for part in text.split(",")]
    if not text.strip() or any(not part for part in parts):
        raise SettingsError(f"--k: expected numbers of components such as 5,10,20; got {text!r}")
    try:
        ks = [int(part) for part in parts]
    except ValueError:
        raise SettingsError(
            f"--k: expected whole numbers separated by commas, such as 5,10,20; got {text!r}"
        ) from None
    if any(k < 1 for k in ks):
        raise SettingsError(f"--k: every number of components must be at least 1; got {text!r}")
    if len(set(ks)) != len(ks):
        raise SettingsError(f"--k: a number of components is named twice in {text!r}")
    return ks


@cli.command(context_settings=CONTEXT)
@click.argument("data")
@click.option(
    "--k",
    "ks",
    required=True,
    metavar="K1,K2,...",
    help="Numbers of components to try, separated by commas (5,10,20,50).",
)
@click.option("--out", "-o", required=True, type=click.Path(), help="Folder to write (SELECTION).")
@click.option(
    "--validation-fraction",
    default=0.1,
    show_default=True,
    type=float,
    help="Share of the rows of DATA held out, chosen by row number from --seed, in (0, 1).",
)
@click.option(
    "--validation",
    metavar="HELDOUT.zarr",
    help="Held-out rows of their own (then every row of DATA trains).",
)
@click.option(
    "--criterion",
    default="heldout",
    show_default=True,
    type=click.Choice(["heldout", "bic", "aic", "icl"]),
    help="heldout: the largest held-out log-likelihood per row; bic, aic, icl: the smallest.",
)
@click.option(
    "--n-init",
    default=1,
    show_default=True,
    type=click.IntRange(min=1),
    help="Starts per K; each K keeps its start of the best training objective.",
)
@click.option(
    "--max-iter",
    default=100,
    show_default=True,
    type=click.IntRange(min=1),
    help="Most iterations (and passes) of each K.",
)
@click.option(
    "--tol",
    default=1e-4,
    show_default=True,
    type=click.FloatRange(min=0),
    help="A K stops when its objective changes by less (nats per row).",
)
@INIT_OPTION
@seed_option("every random draw (the held-out rows and the starts)")
@ALPHA_OPTION
@DTYPE_OPTION
@click.option(
    "--algorithm",
    default="auto",
    show_default=True,
    type=click.Choice(["batch", "stepwise", "auto"]),
    help="auto: each K as fit's default runs it (batch iterations, stepwise passes where "
    "they pay, batch iterations to --tol); batch: EM to --tol; stepwise: --passes passes, the "
    "same mini-batches for every K.",
)
@PASSES_OPTION
@click.option(
    "--batch-size",
    type=click.IntRange(min=1),
    metavar="ROWS",
    help="Rows per mini-batch of stepwise EM [default: sized for all the candidates together].",
)
@STEP_EXPONENT_OPTION
@STEPS_IN_FLIGHT_OPTION
@PERSIST_OPTION
@overwrite_option("the folder")
@cluster_options
def select(
    data: str,
    ks: str,
    out: str,
    validation_fraction: float,
    validation: str | None,
    criterion: str,
    n_init: int,
    max_iter: int,
    tol: float,
    init: str,
    seed: int,
    alpha: float,
    dtype: str,
    algorithm: str,
    passes: int,
    batch_size: int | None,
    step_exponent: float,
    steps_in_flight: int,
    persist: bool | None,
    overwrite: bool,
    **cluster: Any,
) -> None:
    """Fit a mixture for every K in --k on the training rows of DATA, in shared passes, score
    the held-out rows, and choose K.

    Writes OUT/selection.json (per K and start: training objective, held-out log-likelihood per
    row, BIC, AIC, ICL, iterations, seconds, converged), OUT/selection.png, OUT/model.zarr (the
    chosen model) and OUT/model-kK.zarr for the others.
    """
    from bmm_dask.cluster import task_memory
    from bmm_dask.io import check_output
    from bmm_dask.selection import select_n_components

    candidates = parse_k_list(ks)
    if validation is None and not 0 < validation_fraction < 1:
        raise SettingsError(f"--validation-fraction must be in (0, 1); got {validation_fraction!r}")
    inputs = [data, validation]
    check_output(out, overwrite=overwrite, inputs=inputs)
    check_report_path(cluster.get("performance_report"), [data, out])
    dataset = open_data(data)
    heldout = open_data(validation) if validation is not None else None
    if heldout is not None and heldout.n_features != dataset.n_features:
        raise SettingsError(
            f"{validation}: has {heldout.n_features} features, {data} has {dataset.n_features}"
        )
    if max(candidates) > dataset.n_samples:
        raise SettingsError(
            f"{data}: K = {max(candidates)} is more than its {dataset.n_samples} rows"
        )
    task_bytes = task_memory(dataset.n_features, sum(candidates), 8 if dtype == "float64" else 4)

    started = time.perf_counter()
    with cluster_client(**cluster, task_bytes=task_bytes):
        selection = select_n_components(
            dataset,
            candidates,
            validation_fraction=validation_fraction,
            validation=heldout,
            criterion=criterion,
            n_init=n_init,
            init=init,
            random_state=seed,
            alpha=alpha,
            max_iter=max_iter,
            tol=tol,
            dtype=dtype,
            algorithm=algorithm,
            passes=passes,
            batch_size=batch_size,
            step_exponent=step_exponent,
            steps_in_flight=steps_in_flight,
            persist=persist,
        )
    seconds = time.perf_counter() - started
    data_attrs = {**dataset.fingerprint(), "path": str(Path(data).absolute())}
    selection.save(out, overwrite=overwrite, attrs={"data": data_attrs}, inputs=inputs)
    click.echo(f"{'K':>6} {'held-out':>10} {'BIC':>14} {'iterations':>10}")
    for row in selection.table:
        if row["best_start"]:
            mark = "  <- chosen" if row["n_components"] == selection.n_components else ""
            click.echo(
                f"{row['n_components']:>6} {row['heldout_loglik']:>10.4f} {row['bic']:>14.1f} "
                f"{row['n_iter']:>10}{mark}"
            )
    click.echo(
        f"wrote {out}: K = {selection.n_components} chosen by {criterion} "
        f"({selection.n_train:,} training rows, {selection.n_heldout:,} held out), "
        f"{seconds:.1f} s"
    )
