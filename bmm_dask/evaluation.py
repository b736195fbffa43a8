"""Evaluating a fitted model on a dataset, and writing its report (figures, metrics, HTML)."""

from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path
from typing import Any

import dask
import numpy as np

from bmm_dask._estep import as_packed, predict_log_resp
from bmm_dask.io import Dataset, atomic_output, store_predictions
from bmm_dask.metrics import (
    MIN_MEAN_FOR_LIFT,
    N_TOP_FEATURES,
    bits_per_dim,
    clustering_metrics,
    component_features,
)
from bmm_dask.model import BernoulliMixture
from bmm_dask.report import (
    MATCHING_NAMES,
    MATCHING_NOTES,
    component_name,
    format_number,
    majority_labels,
    objective_caption,
    plot_confusion,
    plot_feature_means,
    plot_means,
    plot_objective,
    plot_samples,
    plot_selection,
    steps_run,
    write_html,
)

__all__ = ["evaluate", "write_predictions", "write_report"]

logger = logging.getLogger(__name__)


def _check_fit(model: BernoulliMixture, dataset: Dataset, model_path: str | None) -> None:
    model._check_fitted()
    model._check_n_features(dataset.n_features, dataset.path, model_path)
    model._check_feature_names(dataset, model_path)


def evaluate(
    model: BernoulliMixture,
    dataset: Dataset,
    *,
    mapping: list[Any] | None = None,
    model_path: str | None = None,
    data_path: str | None = None,
) -> dict[str, Any]:
    """Metrics of a model on a dataset, from one pass over the data.

    Parameters
    ----------
    model : BernoulliMixture
        A fitted model.
    dataset : Dataset
        Data of as many features as the model's.
    mapping : list of length n_components, default=None
        The label of each component (learned on another dataset); None means learned here.
    model_path : str, default=None
        Where the model was read from, for messages and the record.
    data_path : str, default=None
        The data's path as the user knows it (None means ``dataset.path``): where the dataset
        is read from a temporary folder that is renamed later, the final path.

    Returns
    -------
    dict
        ``data``, ``n_samples``, ``n_components``, ``n_features``,
        ``log_likelihood_per_sample`` (nats), ``bits_per_dim``, ``seconds``,
        ``feature_names`` (whether the model has its features' names), where the
        dataset has labels the keys of :func:`bmm_dask.metrics.clustering_metrics` (confusion
        matrix, accuracy, NMI, ARI, ...), else ``cluster_sizes``, and for data that is not
        images ``components``, each component's top features by mean and by lift
        (:func:`~bmm_dask.metrics.component_features`, named by the model's names, else the
        data's).

    Raises
    ------
    DataError
        If the dataset's number of features is not the model's, or it has feature names other
        than the model's.
    """
    _check_fit(model, dataset, model_path)
    start = time.perf_counter()
    both = predict_log_resp(
        as_packed(dataset), model.means_, model.weights_, "score_label", np.dtype(model.dtype)
    )
    try:
        if dataset.labels is not None:
            both, labels = dask.compute(both, dataset.labels)
        else:
            (both,) = dask.compute(both)
            labels = None
    except Exception:
        dataset.check_unchanged()  # a store replaced mid-read says so, whatever broke
        raise
    dataset.check_unchanged()
    scores, components = both[:, 0], both[:, 1].astype(np.intp)
    per_sample = float(scores.mean())
    metrics: dict[str, Any] = {
        "data": data_path or dataset.path,
        "n_samples": dataset.n_samples,
        "n_components": len(model.weights_),
        "n_features": dataset.n_features,
        "log_likelihood_per_sample": per_sample,
        "bits_per_dim": bits_per_dim(per_sample, dataset.n_features),
        "feature_names": hasattr(model, "feature_names_in_"),
    }
    if labels is not None:
        metrics.update(clustering_metrics(components, labels, len(model.weights_), mapping))
    else:
        metrics["cluster_sizes"] = np.bincount(components, minlength=len(model.weights_)).tolist()
    image_shape = dataset.image_shape or (
        (getattr(model, "attrs_", {}) or {}).get("data") or {}
    ).get("image_shape")
    if not image_shape:  # rows of named things: say what each component is, by its features
        names = getattr(model, "feature_names_in_", None)
        metrics["components"] = component_features(
            model.means_, model.weights_, names if names is not None else dataset.feature_names
        )
    metrics["seconds"] = time.perf_counter() - start
    return metrics


def _confusion_caption(metrics: dict[str, Any], unit: str) -> str:
    """What the matrix counts, how its rows were matched to labels, and which components are
    matched to a label other than their commonest."""
    matching = metrics["matching"]
    caption = (
        f"How many {unit} of each label fall in each component. Each row is a component, "
        f"named with the label it is matched to by {MATCHING_NAMES.get(matching, matching)}. "
        f"{MATCHING_NOTES.get(matching, '')}"
    ).rstrip()
    mapping = metrics["mapping"]
    majority = majority_labels(metrics["confusion_matrix"], metrics["classes"])
    differ = [
        component_name(k, mapping, majority)
        for k in range(len(mapping))
        if majority[k] is not None and mapping[k] is not None and majority[k] != mapping[k]
    ]
    if differ:
        caption += (
            " Where most of a component's rows have another label, that label follows "
            f"(\u201cmostly\u201d): here {', '.join(differ)}."
        )
    return caption


def write_report(
    model: BernoulliMixture,
    out: str | os.PathLike[str],
    *,
    dataset: Dataset | None = None,
    mapping: list[Any] | None = None,
    model_path: str | None = None,
    data_path: str | None = None,
    overwrite: bool = False,
    n_samples: int = 40,
    selection: dict[str, Any] | None = None,
) -> Path:
    """Write a report of a model into the folder ``out``, whole or not at all.

    The folder holds ``loglik.png``, ``metrics.json`` and ``report.html`` (which shows
    everything, offline), ``confusion.png`` when the dataset has labels, and:

    - for images (the model's training data, or ``dataset``, records an image shape):
      ``means.png``, the means drawn as images, and ``samples.png``, images drawn from the
      model;
    - for other data (words of documents, items of baskets, species at sites): each
      component's weight and most characteristic features, by mean and by lift (see
      :func:`bmm_dask.metrics.component_features`), as a table in the page and as
      ``components`` in ``metrics.json``, and ``features.png``, a heat map of the means of
      each component's top features. Features are named by the model's ``feature_names_in_``,
      else by the dataset's stored names, else by their column ("feature 123").

    Parameters
    ----------
    model : BernoulliMixture
        A fitted model.
    out : str or path-like
        The folder to write.
    dataset : Dataset, default=None
        Data to evaluate the model on (the test set, say): adds its metrics.
    mapping : list of length n_components, default=None
        The label of each component, learned on another dataset.
    model_path : str, default=None
        Where the model was read from, shown in the report.
    data_path : str, default=None
        The dataset's path to show (None means ``dataset.path``).
    overwrite : bool, default=False
        Replace ``out`` if it exists.
    n_samples : int, default=40
        Images drawn from the mixture for ``samples.png``.
    selection : dict, default=None
        The ``selection.json`` of the selection the model was chosen by: adds
        ``selection.png`` (held-out log-likelihood and BIC against K) and the candidates.

    Returns
    -------
    pathlib.Path
        ``out``.

    Raises
    ------
    DataError
        If the dataset's number of features is not the model's.
    OutputError
        If ``out`` exists and ``overwrite`` is false, is or holds an input, or cannot be
        written.
    """
    if dataset is not None:
        _check_fit(model, dataset, model_path)
    attrs = getattr(model, "attrs_", {}) or {}
    image_shape = (dataset.image_shape if dataset is not None else None) or (
        attrs.get("data") or {}
    ).get("image_shape")
    components = None
    names = getattr(model, "feature_names_in_", None)
    names_from = "the model's" if names is not None else "none (features are numbered from 0)"
    if not image_shape:
        if names is None and dataset is not None:
            names = dataset.feature_names
            if names is not None:
                names_from = f"those of {data_path or dataset.path} (the model has none)"
        components = component_features(model.means_, model.weights_, names)
    unit = "images" if image_shape else "rows"
    inputs = [model_path, dataset.path if dataset is not None else None]
    with atomic_output(out, overwrite=overwrite, inputs=inputs) as tmp:
        metrics = (
            evaluate(model, dataset, mapping=mapping, model_path=model_path, data_path=data_path)
            if dataset is not None
            else None
        )
        labels = metrics.get("mapping") if metrics else None
        majority = (
            majority_labels(metrics["confusion_matrix"], metrics["classes"])
            if metrics and "confusion_matrix" in metrics
            else None
        )
        figures = []
        if selection is not None:
            plot_selection(
                selection["candidates"],
                selection["n_components"],
                selection["criterion"],
                tmp / "selection.png",
            )
            figures.append(
                (
                    "selection.png",
                    "Choosing K: the log-likelihood per held-out and per training row and BIC "
                    "against K, each K's best start; the K chosen dashed.",
                )
            )
        if components is None:
            figures.append(
                (
                    "means.png",
                    "The component means, heaviest first: the probability that each pixel is on."
                    + (
                        " Above each: the component, the label it is matched to (as in the "
                        "matrix of components against labels), and its weight."
                        if labels is not None
                        else " Above each: the component and its weight."
                    ),
                )
            )
            plot_means(
                model.means_,
                model.weights_,
                tmp / "means.png",
                image_shape=image_shape,
                mapping=labels,
                majority=majority,
            )
        else:
            plot_feature_means(model.means_, model.weights_, components, tmp / "features.png")
            figures.append(
                (
                    "features.png",
                    "The means of each component's characteristic features (its top features "
                    "by lift), components by weight: the probability that each feature is on.",
                )
            )
        if model.history_:
            plot_objective(model.history_, tmp / "loglik.png")
            figures.append(("loglik.png", objective_caption(model.history_)))
        if metrics and "confusion_matrix" in metrics:
            plot_confusion(
                metrics["confusion_matrix"],
                metrics["classes"],
                tmp / "confusion.png",
                mapping=labels,
                matching=metrics["matching"],
                title=f"Components against labels: {Path(dataset.path).name if dataset else ''}, "
                f"accuracy {format_number(metrics['accuracy'])}",
                unit=unit,
            )
            figures.append(("confusion.png", _confusion_caption(metrics, unit)))
        if components is None:  # rows drawn from the model say little where they are not images
            sample = BernoulliMixture(len(model.weights_), random_state=0)
            sample.means_, sample.weights_ = model.means_, model.weights_
            rows, drawn_from = sample.sample(n_samples)
            plot_samples(rows, drawn_from, tmp / "samples.png", image_shape=image_shape)
            figures.append(("samples.png", "Images drawn from the fitted mixture."))
        record = {"model": model_path, **(metrics or {})}
        if components is not None:
            record["lift_min_mean"] = MIN_MEAN_FOR_LIFT
            record["components"] = components
        (tmp / "metrics.json").write_text(json.dumps(record, indent=2) + "\n")
        history = model.history_ or []
        facts = [
            ("model", model_path or "(in memory)"),
            ("components", len(model.weights_)),
            ("features", model.n_features_in_),
            ("iterations", steps_run(history) if history else model.n_iter_),
            ("converged", model.converged_),
            ("objective (nats per sample)", format_number(model.lower_bound_)),
            (
                "fit time",
                f"{format_number(sum(h['seconds'] for h in history))} s over "
                f"{steps_run(history) if history else 'no iterations'} (best start)",
            ),
            ("trained on", (attrs.get("data") or {}).get("path", "?")),
            ("feature names", names_from),
        ]
        if metrics:
            facts += [
                ("evaluated on", metrics["data"]),
                (
                    "log-likelihood",
                    f"{format_number(metrics['log_likelihood_per_sample'])} nats per sample",
                ),
            ]
            if "accuracy" in metrics:
                matching = MATCHING_NAMES.get(metrics["matching"], metrics["matching"])
                facts.append(("accuracy", f"{format_number(metrics['accuracy'])} ({matching})"))
        if selection is not None:
            chosen_by = {"heldout": "held-out log-likelihood"}.get(
                selection["criterion"], selection["criterion"].upper()
            )
            facts.append(
                (
                    "chosen by",
                    f"{chosen_by}, among K = "
                    + ", ".join(
                        f"{r['n_components']} ({format_number(r['heldout_loglik'])} held out)"
                        for r in selection["candidates"]
                        if r["best_start"]
                    ),
                )
            )
        settings = dict(attrs.get("settings") or model.get_params())
        for name in ("means_init", "weights_init"):
            settings.pop(name, None)
        write_html(
            tmp / "report.html",
            title=f"Bernoulli mixture, K = {len(model.weights_)}",
            figures=figures,
            settings=settings,
            facts=facts,
            metrics=metrics,
            components=components,
            components_note=(
                f"Each component's {N_TOP_FEATURES} features of largest mean, and of largest "
                "lift: the component's mean of the feature over the feature's rate in the whole "
                "mixture (the rate is sum over components of weight times mean; a lift of 5 "
                "means the feature is on 5 times as often in the component as overall). Only "
                f"features of mean at least {MIN_MEAN_FOR_LIFT} in the component are ranked by "
                "lift, so that rare features do not rank first by chance. Features are "
                "numbered from 0 where there are no names."
            ),
        )
    return Path(out)


def write_predictions(
    model: BernoulliMixture,
    dataset: Dataset,
    out: str | os.PathLike[str],
    *,
    proba: bool = False,
    overwrite: bool = False,
    model_path: str | None = None,
) -> Path:
    """Write a model's predictions on a dataset to a new Zarr group, chunked like the data.

    The group holds ``labels`` (the most likely component of each row) and, with ``proba``,
    ``resp`` (the responsibilities, float32).

    Parameters
    ----------
    model : BernoulliMixture
        A fitted model.
    dataset : Dataset
        Data of as many features as the model's.
    out : str or path-like
        The group to write (a local folder).
    proba : bool, default=False
        Also write the responsibilities, of shape (n_samples, n_components).
    overwrite : bool, default=False
        Replace ``out`` if it exists.
    model_path : str, default=None
        Where the model was read from, for messages and the group's attributes.

    Returns
    -------
    pathlib.Path
        ``out``.

    Raises
    ------
    DataError
        If the dataset's number of features is not the model's.
    OutputError
        If ``out`` exists and ``overwrite`` is false, is or holds an input, or cannot be
        written.
    """
    _check_fit(model, dataset, model_path)
    data = as_packed(dataset)
    n_components = len(model.weights_)
    labels_dtype = np.min_scalar_type(n_components - 1)
    labels = predict_log_resp(
        data, model.means_, model.weights_, "label", np.dtype(model.dtype)
    ).astype(labels_dtype)
    resp = None
    if proba:
        resp = predict_log_resp(
            data, model.means_, model.weights_, "proba", np.dtype(model.dtype)
        ).astype(np.float32)
    return store_predictions(
        out,
        labels,
        resp,
        {"model": model_path, "data": dataset.fingerprint(), "n_components": n_components},
        chunk_rows=dataset.bits.chunks[0][0],
        overwrite=overwrite,
        inputs=[model_path, dataset.path],
        check=dataset.check_unchanged,
    )
