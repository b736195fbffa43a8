"""Figures and an HTML page for a fitted model: means (as images, or a heat map of each component's
characteristic features), objective by iteration, confusion, samples."""

from __future__ import annotations

import html
import json
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.figure import Figure
from numpy.typing import NDArray

__all__ = [
    "feature_means_figure",
    "grid_shape",
    "heatmap_columns",
    "plot_confusion",
    "plot_feature_means",
    "plot_means",
    "plot_objective",
    "plot_samples",
    "write_html",
]


def grid_shape(n: int) -> tuple[int, int]:
    """Rows and columns for n panels: the notebook's 2 x 5 for 10, near-square otherwise.

    Parameters
    ----------
    n : int
        Number of panels.

    Returns
    -------
    rows, cols : tuple of int
        A grid of at least ``n`` cells.

    >>> grid_shape(10), grid_shape(100), grid_shape(3)
    ((2, 5), (10, 10), (2, 2))
    """
    if n == 10:
        return 2, 5
    cols = math.ceil(math.sqrt(n))
    return math.ceil(n / cols), cols


def _as_images(rows: NDArray[Any], image_shape: Sequence[int] | None) -> NDArray[Any]:
    """Rows as 2-D images: the dataset's image shape, else a near-square padded with NaN."""
    n, d = rows.shape
    if image_shape and math.prod(image_shape) == d and len(image_shape) == 2:
        return rows.reshape(n, *image_shape)
    side = math.ceil(math.sqrt(d))
    padded = np.full((n, side * side), np.nan)
    padded[:, :d] = rows
    return padded.reshape(n, side, side)


def _panel_grid(
    images: NDArray[Any], titles: Sequence[str], suptitle: str, *, cmap: str = "gray_r"
) -> Figure:
    rows, cols = grid_shape(len(images))
    size = 1.6 if len(images) <= 40 else 0.9
    fig = Figure(figsize=(cols * size + 0.4, rows * (size + 0.25) + 0.6), layout="constrained")
    axes = fig.subplots(rows, cols, squeeze=False)
    for i, ax in enumerate(axes.flat):
        ax.set_axis_off()
        if i < len(images):
            ax.imshow(images[i], cmap=cmap, vmin=0, vmax=1, interpolation="nearest")
            ax.set_title(titles[i], fontsize=8 if len(images) <= 40 else 5)
    fig.suptitle(suptitle)
    return fig


def plot_means(
    means: NDArray[np.float64],
    weights: NDArray[np.float64],
    path: str | os.PathLike[str],
    *,
    image_shape: Sequence[int] | None = None,
    mapping: Sequence[Any] | None = None,
) -> Path:
    """Draw the component means as images (black = probability 1), titled with label and weight.

    The components are drawn in order of decreasing weight.

    Parameters
    ----------
    means : ndarray of shape (n_components, n_features)
        Bernoulli means.
    weights : ndarray of shape (n_components,)
        Mixing weights.
    path : str or path-like
        The image file to write (PNG).
    image_shape : sequence of int, default=None
        Height and width of an image; None (or a shape that does not fit ``n_features``)
        means a near-square padded with blanks.
    mapping : sequence of length n_components, default=None
        The label matched to each component (None where it has none), shown in the titles.

    Returns
    -------
    pathlib.Path
        ``path``.
    """
    order = np.argsort(-weights)
    titles = []
    for k in order:
        label = "" if mapping is None or mapping[k] is None else f" \u2192 {mapping[k]}"
        titles.append(f"#{k}{label}  w={weights[k]:.3f}")
    fig = _panel_grid(
        _as_images(means[order], image_shape),
        titles,
        f"Means of the {len(weights)} components (probability of a 1; #component \u2192 matched label, weight)",
    )
    fig.savefig(path, dpi=110)
    return Path(path)


def plot_objective(history: Sequence[Mapping[str, Any]], path: str | os.PathLike[str]) -> Path:
    """Plot the objective (nats per sample) by iteration, with re-seeded components marked.

    Parameters
    ----------
    history : sequence of mapping
        One record per iteration, with ``iteration``, ``objective`` and ``reseeded``.
    path : str or path-like
        The image file to write (PNG).

    Returns
    -------
    pathlib.Path
        ``path``.
    """
    fig = Figure(figsize=(6.4, 4), layout="constrained")
    ax = fig.subplots()
    iterations = [h["iteration"] for h in history]
    objective = [h["objective"] for h in history]
    ax.plot(iterations, objective, marker="o", markersize=3)
    reseeded = [h["iteration"] for h in history if h.get("reseeded")]
    if reseeded:
        ax.plot(reseeded, [objective[i - 1] for i in reseeded], "rx", label="component re-seeded")
        ax.legend()
    ax.set_xlabel("EM iteration")
    ax.set_ylabel("objective (nats per sample)")
    ax.set_title(
        "Objective by iteration (best start):\nmean log-likelihood + log of the smoothing prior",
        fontsize=10,
    )
    ax.grid(alpha=0.3)
    fig.savefig(path, dpi=110)
    return Path(path)


def plot_selection(
    table: Sequence[Mapping[str, Any]], chosen: int, criterion: str, path: str | os.PathLike[str]
) -> Path:
    """Plot held-out log-likelihood and BIC against the number of components, the chosen K
    marked.

    Parameters
    ----------
    table : sequence of mapping
        The rows of a selection (:class:`~bmm_dask.selection.Selection`); each K's best start
        is plotted.
    chosen : int
        The K chosen.
    criterion : str
        What chose it.
    path : str or path-like
        The image file to write (PNG).

    Returns
    -------
    pathlib.Path
        ``path``.
    """
    rows = sorted((r for r in table if r["best_start"]), key=lambda r: r["n_components"])
    ks = [r["n_components"] for r in rows]
    fig = Figure(figsize=(6.4, 6), layout="constrained")
    top, bottom = fig.subplots(2, 1, sharex=True)
    top.plot(ks, [r["heldout_loglik"] for r in rows], marker="o", label="held-out rows")
    top.plot(ks, [r["train_loglik"] for r in rows], marker=".", alpha=0.6, label="training rows")
    top.set_ylabel("log-likelihood (nats per row)")
    top.legend()
    bottom.plot(ks, [r["bic"] for r in rows], marker="o", color="C2", label="BIC")
    bottom.set_ylabel("BIC (lower is better)")
    bottom.set_xlabel("number of components K")
    for ax in (top, bottom):
        ax.axvline(chosen, color="C3", linestyle="--", alpha=0.7)
        ax.grid(alpha=0.3)
    if len(ks) > 1 and ks[-1] / ks[0] >= 8:
        bottom.set_xscale("log")
    bottom.set_xticks(ks, [str(k) for k in ks])
    bottom.minorticks_off()
    by = {"heldout": "held-out log-likelihood"}.get(criterion, criterion.upper())
    top.set_title(f"Choosing K: K = {chosen}, by {by} (dashed)", fontsize=10)
    fig.savefig(path, dpi=110)
    return Path(path)


def plot_confusion(
    confusion: Sequence[Sequence[int]],
    classes: Sequence[Any],
    path: str | os.PathLike[str],
    *,
    mapping: Sequence[Any] | None = None,
    title: str = "Components against labels",
    unit: str = "images",
) -> Path:
    """Draw a heatmap of counts: one row per component, one column per label.

    With a ``mapping`` the rows are in order of matched label; the counts are written in the
    cells when there are at most 400 of them.

    Parameters
    ----------
    confusion : sequence of sequence of int, of shape (n_components, n_classes)
        Counts of rows by component and label, as from
        :func:`bmm_dask.metrics.confusion_matrix`.
    classes : sequence of length n_classes
        The labels of the columns.
    path : str or path-like
        The image file to write (PNG).
    mapping : sequence of length n_components, default=None
        The label matched to each component (None where it has none).
    title : str, default="Components against labels"
        The figure's title.
    unit : str, default="images"
        What is counted, for the colour bar ("rows" for data that are not images).

    Returns
    -------
    pathlib.Path
        ``path``.
    """
    matrix = np.asarray(confusion)
    K = matrix.shape[0]
    if mapping is not None:
        position = {c: i for i, c in enumerate(classes)}
        order = sorted(range(K), key=lambda k: (position.get(mapping[k], len(classes)), k))
    else:
        order = list(range(K))
    matrix = matrix[order]
    height = max(3.0, min(0.32 * K + 1.5, 30))
    fig = Figure(figsize=(max(5.0, 0.55 * len(classes) + 2.5), height), layout="constrained")
    ax = fig.subplots()
    image = ax.imshow(matrix, cmap="Blues", aspect="auto")
    fig.colorbar(image, ax=ax, label=unit)
    ax.set_xticks(range(len(classes)), [str(c) for c in classes])
    row_names = [
        f"#{k}" + ("" if mapping is None or mapping[k] is None else f" \u2192 {mapping[k]}")
        for k in order
    ]
    ax.set_yticks(range(K), row_names, fontsize=8 if K <= 30 else 5)
    ax.set_xlabel("true label")
    ax.set_ylabel("component (\u2192 matched label)")
    ax.set_title(title)
    if K * len(classes) <= 400:
        top = matrix.max() or 1
        for (i, j), value in np.ndenumerate(matrix):
            ax.text(
                j,
                i,
                str(value),
                ha="center",
                va="center",
                fontsize=7,
                color="white" if value > top / 2 else "black",
            )
    fig.savefig(path, dpi=110)
    return Path(path)


def plot_samples(
    samples: NDArray[np.uint8],
    components: NDArray[np.intp],
    path: str | os.PathLike[str],
    *,
    image_shape: Sequence[int] | None = None,
) -> Path:
    """Draw rows sampled from the fitted mixture, titled with the component each came from.

    Parameters
    ----------
    samples : ndarray of shape (n_samples, n_features)
        0/1 rows.
    components : ndarray of shape (n_samples,)
        The component each row was drawn from.
    path : str or path-like
        The image file to write (PNG).
    image_shape : sequence of int, default=None
        Height and width of an image; None means a near-square padded with blanks.

    Returns
    -------
    pathlib.Path
        ``path``.
    """
    fig = _panel_grid(
        _as_images(samples.astype(np.float64), image_shape),
        [f"from #{k}" for k in components],
        f"{len(samples)} images drawn from the model",
    )
    fig.savefig(path, dpi=110)
    return Path(path)


#: The heat map of feature means shows at most this many components (the heaviest) ...
HEATMAP_MAX_COMPONENTS = 100
#: ... and at most this many features, each component's top few by lift (3 each for up to 33
#: components, 2 for up to 50), so that the map stays about 20 inches wide at most.
HEATMAP_MAX_FEATURES = 100
#: Longer names are cut (with an ellipsis) in the heat map; the tables show them whole.
HEATMAP_NAME_CHARS = 40


def heatmap_columns(
    components: Sequence[Mapping[str, Any]], *, max_features: int = HEATMAP_MAX_FEATURES
) -> list[tuple[int, str]]:
    """The features of the heat map: each component's top few by lift, in the given order.

    Each component gives its first ``per`` features by lift (by mean where it has fewer by lift
    than that), where ``per`` is 3, or fewer when 3 per component would pass ``max_features``;
    a feature already taken is not repeated.

    Parameters
    ----------
    components : sequence of mapping
        As :func:`bmm_dask.metrics.component_features` returns them, in the order of the rows.
    max_features : int, default=HEATMAP_MAX_FEATURES
        Columns at most.

    Returns
    -------
    list of (int, str)
        Each column's feature (its index) and name.

    >>> comps = [
    ...     {"top_lift": [{"feature": 4, "name": "d"}], "top_features": [{"feature": 4, "name": "d"},
    ...      {"feature": 0, "name": "a"}]},
    ...     {"top_lift": [{"feature": 0, "name": "a"}], "top_features": []},
    ... ]
    >>> heatmap_columns(comps, max_features=4)
    [(4, 'd'), (0, 'a')]
    """
    per = max(1, min(3, max_features // max(1, len(components))))
    columns: dict[int, str] = {}
    for component in components:
        own: dict[int, str] = {}
        for entry in [*component["top_lift"], *component["top_features"]]:
            if len(own) == per:
                break
            own.setdefault(entry["feature"], entry["name"])
        for feature, name in own.items():
            if len(columns) < max_features:
                columns.setdefault(feature, name)
    return list(columns.items())


def _short(name: str, chars: int = HEATMAP_NAME_CHARS) -> str:
    return name if len(name) <= chars else name[: chars - 1] + "\u2026"


def feature_means_figure(
    means: NDArray[np.float64],
    weights: NDArray[np.float64],
    components: Sequence[Mapping[str, Any]],
) -> Figure:
    """The heat map of :func:`plot_feature_means`, as a figure (to draw, or to measure).

    Parameters
    ----------
    means : ndarray of shape (n_components, n_features)
        Bernoulli means.
    weights : ndarray of shape (n_components,)
        Mixing weights.
    components : sequence of mapping
        As :func:`bmm_dask.metrics.component_features` returns them, one per component.

    Returns
    -------
    matplotlib.figure.Figure
    """
    order = np.argsort(-np.asarray(weights), kind="stable")[:HEATMAP_MAX_COMPONENTS]
    columns = heatmap_columns([components[k] for k in order])
    features = [d for d, _ in columns]
    labels = [_short(name) for _, name in columns]
    matrix = np.asarray(means)[np.ix_(order, features)]
    n_rows, n_cols = matrix.shape
    annotate = n_rows * n_cols <= 200
    # Inches a cell: room for "0.90" in it, else for a name of 7 points beside the next.
    cell_width, cell_height = (0.36, 0.3) if annotate else (0.2, 0.22)
    label_font = 7 if n_cols <= 60 else 6
    # Rotated names hang below the map; at 7 points a character takes about 0.06 inch.
    names_height = 0.3 + 0.06 * max((len(label) for label in labels), default=1)
    row_labels = [f"#{k}  w={weights[k]:.3g}" for k in order]
    width = max(6.4, 1.2 + 0.06 * max(len(r) for r in row_labels) + n_cols * cell_width + 1.2)
    height = max(3.0, 1.0 + n_rows * cell_height + names_height)
    fig = Figure(figsize=(width, height), layout="constrained")
    ax = fig.subplots()
    top = float(matrix.max()) if matrix.size else 1.0
    image = ax.imshow(matrix, cmap="Blues", vmin=0, vmax=top, aspect="auto")
    # A short label: a colour bar of a few rows is short, and a long label would be cut.
    fig.colorbar(image, ax=ax, label="mean", shrink=0.9)
    ax.set_xticks(range(n_cols), labels, rotation=90, fontsize=label_font)
    ax.set_yticks(range(n_rows), row_labels, fontsize=7 if n_rows <= 60 else 5)
    ax.set_xlabel("feature (each component's top features by lift)")
    ax.set_ylabel("component, by weight")
    shown = f", the {n_rows} heaviest of {len(weights)}" if n_rows < len(weights) else ""
    ax.set_title(f"Means of the components' characteristic features{shown}", fontsize=10)
    if annotate:
        for (i, j), value in np.ndenumerate(matrix):
            ax.text(
                j,
                i,
                f"{value:.2g}",  # sparse data's means are often below 0.01
                ha="center",
                va="center",
                fontsize=6,
                color="white" if value > top / 2 else "black",
            )
    return fig


def plot_feature_means(
    means: NDArray[np.float64],
    weights: NDArray[np.float64],
    components: Sequence[Mapping[str, Any]],
    path: str | os.PathLike[str],
) -> Path:
    """Draw a heat map of the means of each component's characteristic features.

    One row per component, heaviest first (the :data:`HEATMAP_MAX_COMPONENTS` heaviest at
    most); one column per feature of :func:`heatmap_columns`, labelled with its name. The
    figure is sized from the counts of rows and columns and the longest name, so that every
    label is readable and none is cut.

    Parameters
    ----------
    means : ndarray of shape (n_components, n_features)
        Bernoulli means.
    weights : ndarray of shape (n_components,)
        Mixing weights.
    components : sequence of mapping
        As :func:`bmm_dask.metrics.component_features` returns them, one per component.
    path : str or path-like
        The image file to write (PNG).

    Returns
    -------
    pathlib.Path
        ``path``.
    """
    feature_means_figure(means, weights, components).savefig(path, dpi=110)
    return Path(path)


def _feature_list(entries: Sequence[Mapping[str, Any]], lift: bool) -> str:
    if not entries:
        return "(none)"
    return ", ".join(
        f"{html.escape(e['name'])}&nbsp;{e['mean']:.2g}"  # 2 digits: sparse means are small
        + (f"&nbsp;\u00d7{e['lift']:.1f}" if lift else "")
        for e in entries
    )


def _components_table(components: Sequence[Mapping[str, Any]]) -> str:
    """Each component's weight and characteristic features, heaviest first."""
    rows = "".join(
        f"<tr><td>#{c['component']}</td><td>{c['weight']:.4f}</td>"
        f"<td>{_feature_list(c['top_features'], lift=False)}</td>"
        f"<td>{_feature_list(c['top_lift'], lift=True)}</td></tr>"
        for c in sorted(components, key=lambda c: -c["weight"])
    )
    head = (
        "<tr><th>component</th><th>weight</th><th>top features by mean (mean)</th>"
        "<th>top features by lift (mean, \u00d7lift)</th></tr>"
    )
    return f"<table>{head}{rows}</table>"


def _table(rows: Sequence[tuple[str, Any]]) -> str:
    body = "".join(
        f"<tr><th>{html.escape(str(k))}</th><td>{html.escape(str(v))}</td></tr>" for k, v in rows
    )
    return f"<table>{body}</table>"


def write_html(
    path: str | os.PathLike[str],
    *,
    title: str,
    figures: Sequence[tuple[str, str]],
    settings: Mapping[str, Any],
    facts: Sequence[tuple[str, Any]],
    metrics: Mapping[str, Any] | None,
    components: Sequence[Mapping[str, Any]] | None = None,
    components_note: str = "",
) -> Path:
    """Write a self-contained HTML page (figures referenced by relative name, no scripts, no network).

    Parameters
    ----------
    path : str or path-like
        The page to write.
    title : str
        The page's title and heading.
    figures : sequence of (str, str)
        Each figure's file name, beside the page, and caption.
    settings : mapping
        The model's settings, shown as a table.
    facts : sequence of (str, object)
        Name and value of each line of the summary table.
    metrics : mapping or None
        Metrics on a dataset: the scalar ones are shown as a table, all of them as JSON.
    components : sequence of mapping, default=None
        Each component's characteristic features, as from
        :func:`bmm_dask.metrics.component_features`: shown as a table, heaviest first.
    components_note : str, default=""
        A paragraph above that table (how the features were chosen).

    Returns
    -------
    pathlib.Path
        ``path``.
    """
    sections = [f"<h1>{html.escape(title)}</h1>", "<h2>Summary</h2>", _table(list(facts))]
    if metrics:
        shown = [(k, v) for k, v in metrics.items() if not isinstance(v, list | dict)]
        sections += ["<h2>Metrics</h2>", _table(shown)]
    if components:
        sections += ["<h2>Components and their features</h2>"]
        if components_note:
            sections.append(f"<p>{html.escape(components_note)}</p>")
        sections.append(_components_table(components))
    for name, caption in figures:
        # Each figure links to itself: a wide one, scaled to the page, opens at full size.
        sections.append(
            f'<figure><a href="{html.escape(name)}"><img src="{html.escape(name)}" '
            f'alt="{html.escape(caption)}"></a>'
            f"<figcaption>{html.escape(caption)}</figcaption></figure>"
        )
    sections += ["<h2>Settings</h2>", _table(sorted(settings.items()))]
    if metrics:
        sections += [
            "<h2>All metrics</h2>",
            f"<pre>{html.escape(json.dumps(metrics, indent=1))}</pre>",
            '<p>The same, as JSON: <a href="metrics.json">metrics.json</a>.</p>',
        ]
    style = (
        "body{font-family:sans-serif;max-width:70em;margin:2em auto;padding:0 1em}"
        "table{border-collapse:collapse}th,td{border:1px solid #ccc;padding:.2em .6em;text-align:left}"
        "img{max-width:100%}figure{margin:1.5em 0}pre{background:#f6f6f6;padding:1em;overflow:auto}"
    )
    page = (
        f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>'
        f"<style>{style}</style></head><body>\n" + "\n".join(sections) + "\n</body></html>\n"
    )
    Path(path).write_text(page, encoding="utf-8")
    return Path(path)
