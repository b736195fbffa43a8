"""The ``select`` command: fit several numbers of components in shared passes, choose one."""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import click

from bmm_dask._settings import EM_SETTINGS
from bmm_dask.cli._client import check_report_path, cluster_client, cluster_settings
from bmm_dask.cli._display import say_done
from bmm_dask.cli._em_options import em_options
from bmm_dask.cli._files import open_data
from bmm_dask.cli._group import CONTEXT, cli
from bmm_dask.cli._options import PERSIST_OPTION, cluster_options, overwrite_option, seed_option
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
@em_options(
    n_init="Starts per K; each K keeps its start of the best training objective.",
    algorithm="auto: each K as fit's default runs it (batch iterations, stepwise passes where "
    "they pay, batch iterations to --tol); batch: EM to --tol; stepwise: --passes passes, the "
    "same mini-batches for every K.",
    batch_size="Rows per mini-batch of stepwise EM; auto: sized for all the candidates' "
    "components together.",
)
@seed_option("every random draw (the held-out rows and the starts)")
@PERSIST_OPTION
@overwrite_option("the folder")
@cluster_options
def select(data: str, out: str, **options: Any) -> None:
    """Fit a mixture for every K in --k on the training rows of DATA, in shared passes, score
    the held-out rows, and choose K.

    Writes OUT/selection.json (per K and start: training objective, held-out log-likelihood per
    row, BIC, AIC, ICL, iterations, seconds, converged), OUT/selection.png, OUT/model.zarr (the
    chosen model) and OUT/model-kK.zarr for the others.
    """
    from bmm_dask.cluster import task_memory

    job = SelectJob(**click.get_current_context().params)
    check_report_path(
        options["performance_report"],
        [data, options["validation"]],
        overwrite=options["overwrite"],
        outputs=[out],
    )
    itemsize = 8 if options["dtype"] == "float64" else 4
    task_bytes = task_memory(job.dataset.n_features, sum(job.candidates), itemsize)
    with cluster_client(**cluster_settings(options), task_bytes=task_bytes):
        selection, seconds = job.run()
    job.save(selection)
    *table, done = job.summary(selection, seconds)
    click.echo("\n".join(table))
    say_done(done)


class SelectJob:
    """A selection of K that ``select``'s options describe, checked before any work: the list
    of K, the held-out share, the output, the data and the held-out rows.

    ``select`` makes one in the terminal; a submitted selection makes one on a worker, to check
    and then to run. Options of where the work runs (``ignored``) play no part.

    Raises
    ------
    BmmDaskError
        When a setting is out of range, the output cannot be written, or the data cannot be
        opened or does not suit the settings.
    """

    def __init__(self, *, data: str, ks: str, out: str, **options: Any) -> None:
        from bmm_dask.io import check_output

        self.data, self.out, self.options = data, out, options
        self.candidates = parse_k_list(ks)
        validation, fraction = options["validation"], options["validation_fraction"]
        if validation is None and not 0 < fraction < 1:
            raise SettingsError(f"--validation-fraction must be in (0, 1); got {fraction!r}")
        self.inputs = [data, validation]
        check_output(out, overwrite=options["overwrite"], inputs=self.inputs, urls=True)
        self.dataset = open_data(data)
        self.heldout = open_data(validation) if validation is not None else None
        if self.heldout is not None and self.heldout.n_features != self.dataset.n_features:
            raise SettingsError(
                f"{validation}: has {self.heldout.n_features} features, {data} has "
                f"{self.dataset.n_features}"
            )
        if max(self.candidates) > self.dataset.n_samples:
            raise SettingsError(
                f"{data}: K = {max(self.candidates)} is more than its {self.dataset.n_samples} rows"
            )

    def run(self) -> tuple[Any, float]:
        """Fit every candidate on the cluster in use; return the selection and its seconds."""
        from bmm_dask.selection import select_n_components

        o = self.options
        started = time.perf_counter()
        selection = select_n_components(
            self.dataset,
            self.candidates,
            validation_fraction=o["validation_fraction"],
            validation=self.heldout,
            criterion=o["criterion"],
            random_state=o["seed"],
            persist=o["persist"],
            **{setting.name: o[setting.name] for setting in EM_SETTINGS},
        )
        return selection, time.perf_counter() - started

    def save(self, selection: Any) -> None:
        """Write the selection's folder."""
        path = self.data if "://" in self.data else str(Path(self.data).absolute())
        # the models were fitted on the training rows alone; the rest were held out
        data_attrs = {
            **self.dataset.fingerprint(),
            "path": path,
            "n_samples": selection.n_train,
            "n_heldout": selection.n_heldout,
        }
        selection.save(
            self.out,
            overwrite=self.options["overwrite"],
            attrs={"data": data_attrs},
            inputs=self.inputs,
        )

    def summary(self, selection: Any, seconds: float) -> list[str]:
        """The table of the candidates (their best starts) and the line that ends it."""
        lines = [f"{'K':>6} {'held-out':>10} {'BIC':>14} {'iterations':>10} {'passes':>6}"]
        for row in selection.table:
            if row["best_start"]:
                mark = "  <- chosen" if row["n_components"] == selection.n_components else ""
                lines.append(
                    f"{row['n_components']:>6} {row['heldout_loglik']:>10.4f} "
                    f"{row['bic']:>14.1f} {row['n_iter']:>10} {row.get('n_passes', 0):>6}{mark}"
                )
        lines.append(
            f"wrote {self.out}: K = {selection.n_components} chosen by "
            f"{self.options['criterion']} ({selection.n_train:,} training rows, "
            f"{selection.n_heldout:,} held out), {seconds:.1f} s"
        )
        return lines
