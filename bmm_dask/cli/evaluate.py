"""Using a fitted model: ``predict``, ``evaluate`` and ``report``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from bmm_dask.cli._client import check_report_path, maybe_client
from bmm_dask.cli._display import print_metrics, say_done
from bmm_dask.cli._files import load_model, open_data, write_json
from bmm_dask.cli._group import CONTEXT, cli
from bmm_dask.cli._options import overwrite_option, remote_options
from bmm_dask.errors import SettingsError


@cli.command(context_settings=CONTEXT)
@click.argument("model_path", metavar="MODEL")
@click.argument("data")
@click.option(
    "--out", "-o", required=True, type=click.Path(), help="Predictions to write (PRED.zarr)."
)
@click.option("--proba", is_flag=True, help="Also write the responsibilities (n_samples x K).")
@overwrite_option()
@remote_options
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

    model, dataset = load_model(model_path), open_data(data)
    check_output(out, overwrite=overwrite, inputs=[model_path, data])
    check_report_path(performance_report, [model_path, data], overwrite=overwrite, outputs=[out])
    with maybe_client(scheduler, scheduler_file, performance_report):
        write_predictions(
            model, dataset, out, proba=proba, overwrite=overwrite, model_path=model_path
        )
    say_done(
        f"wrote {out}: labels{' and responsibilities' if proba else ''} of {dataset.n_samples:,} rows"
    )


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
@overwrite_option("the JSON file")
@remote_options
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

    model, dataset = load_model(model_path), open_data(data)
    inputs = [model_path, data, mapping_from]
    if json_path is not None:
        check_output(json_path, overwrite=overwrite, inputs=inputs)
    check_report_path(performance_report, inputs, overwrite=overwrite, outputs=[None, json_path])
    with maybe_client(scheduler, scheduler_file, performance_report):
        mapping = learn_mapping(model, mapping_from, model_path)
        metrics = evaluate_model(model, dataset, mapping=mapping, model_path=model_path)
    metrics["model"] = model_path
    print_metrics(metrics)
    if json_path is not None:
        write_json(Path(json_path), metrics, overwrite=overwrite, inputs=inputs)
        say_done(f"wrote {json_path}")


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
@overwrite_option("the folder")
def report(
    model_path: str, data: str | None, mapping_from: str | None, out: str, overwrite: bool
) -> None:
    """Write report.html with its figures (loglik.png, confusion.png) and metrics.json.

    For images, means.png and samples.png draw the means and rows drawn from the model. For
    other data, the page and metrics.json list each component's top features by mean and by
    lift (its mean over the feature's rate in the whole mixture, for features of mean at least
    0.05), and features.png is a heat map of those means, features named as the model's (or
    the --data) names say.

    MODEL may be the folder that ``select`` wrote: the report is of the chosen model, with the
    selection's figure (selection.png) and candidates.
    """
    from bmm_dask.evaluation import write_report
    from bmm_dask.io import check_output
    from bmm_dask.selection import read_selection

    given = model_path  # the selection's whole folder is an input, not only its model
    selection = read_selection(model_path)
    if selection is not None:
        model_path = str(Path(model_path) / "model.zarr")
    model = load_model(model_path)
    dataset = open_data(data) if data else None
    check_output(out, overwrite=overwrite, inputs=[given, model_path, data, mapping_from])
    mapping = learn_mapping(model, mapping_from, model_path)
    written = write_report(
        model,
        out,
        dataset=dataset,
        mapping=mapping,
        model_path=model_path,
        overwrite=overwrite,
        selection=selection,
    )
    say_done(
        f"wrote {written}/report.html (open it in a browser) with its figures and metrics.json"
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
