"""Figures and an HTML page for a fitted model: means, objective by iteration, confusion, samples."""

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
    "grid_shape",
    "plot_confusion",
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
    fig.colorbar(image, ax=ax, label="images")
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

    Returns
    -------
    pathlib.Path
        ``path``.
    """
    sections = [f"<h1>{html.escape(title)}</h1>", "<h2>Summary</h2>", _table(list(facts))]
    if metrics:
        shown = [(k, v) for k, v in metrics.items() if not isinstance(v, list | dict)]
        sections += ["<h2>Metrics</h2>", _table(shown)]
    for name, caption in figures:
        sections.append(
            f'<figure><img src="{html.escape(name)}" alt="{html.escape(caption)}">'
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
