"""Figures and an HTML page for a fitted model: means (as images, or a heat map of each component's
characteristic features), objective by iteration, confusion, samples."""

from __future__ import annotations

import html
import itertools
import math
import numbers
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.figure import Figure
from matplotlib.font_manager import FontProperties
from matplotlib.textpath import TextToPath
from matplotlib.ticker import MaxNLocator
from numpy.typing import NDArray

from bmm_dask.metrics import majority_mapping

__all__ = [
    "MATCHING_NAMES",
    "MATCHING_NOTES",
    "component_name",
    "confusion_figure",
    "feature_means_figure",
    "format_number",
    "grid_shape",
    "heatmap_columns",
    "majority_labels",
    "means_figure",
    "objective_caption",
    "objective_figure",
    "plot_confusion",
    "plot_feature_means",
    "plot_means",
    "plot_objective",
    "plot_samples",
    "samples_figure",
    "steps_run",
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


def format_number(value: Any) -> str:
    """A value as the page shows it: a count with thousands separators, any other number to 4
    significant digits, anything else as its text.

    Parameters
    ----------
    value : object
        An int, a float (or a NumPy scalar of either), or anything else.

    Returns
    -------
    str

    >>> format_number(0.09371202300008008), format_number(10000), format_number(-164.96983)
    ('0.09371', '10,000', '-165.0')
    >>> format_number(0.5), format_number(123456.7), format_number(2.5e-06), format_number(None)
    ('0.5', '123,500', '2.5e-06', 'None')
    """
    if isinstance(value, bool | np.bool_) or not isinstance(value, numbers.Real):
        return str(value)
    if isinstance(value, numbers.Integral):
        return f"{int(value):,}"
    number = float(value)
    if math.isfinite(number) and abs(number) >= 1e4:
        # "{:.4g}" would write 1.235e+05: a reader takes 123,500 in at a glance
        digits = 3 - math.floor(math.log10(abs(number)))
        return f"{round(number, digits):,.0f}"
    shown = f"{number:.4g}"
    if float(shown) != number:
        # keep the zeros that are significant: -164.97 is -165.0, not the whole number -165
        shown = f"{number:#.4g}".rstrip(".")
    return shown


# Widths of text, to wrap a title before it is drawn: a title wider than its figure is cut at
# both edges, and neither constrained layout nor the saved file's bounding box brings it back.
_TEXT_TO_PATH = TextToPath()
#: Text is measured this much wider than its outlines, for the renderer's hinting and kerning.
_TEXT_SLACK = 1.06


def _text_inches(text: str, fontsize: float) -> float:
    width, _, _ = _TEXT_TO_PATH.get_text_width_height_descent(
        text, FontProperties(size=fontsize), ismath=False
    )
    return _TEXT_SLACK * width / 72


def _wrap(text: str, width: float, fontsize: float) -> str:
    """``text`` with its lines broken between words so that each is at most ``width`` inches
    wide at ``fontsize`` points (a single word wider than that stays whole on its line)."""
    lines = []
    for paragraph in text.split("\n"):
        line = ""
        for word in paragraph.split(" "):
            longer = f"{line} {word}" if line else word
            if line and _text_inches(longer, fontsize) > width:
                lines.append(line)
                line = word
            else:
                line = longer
        lines.append(line)
    return "\n".join(lines)


def _suptitle(fig: Figure, text: str, fontsize: float = 11) -> None:
    """Title the figure, its lines wrapped to the figure's width (less a margin)."""
    fig.suptitle(_wrap(text, fig.get_figwidth() - 0.3, fontsize), fontsize=fontsize)


#: How each way of matching components to labels (``matching`` of
#: :func:`bmm_dask.metrics.clustering_metrics`) is named on the page and in the figures ...
MATCHING_NAMES = {
    "hungarian": "one-to-one matching of components to labels (Hungarian)",
    "majority": "majority matching: each component's commonest label",
    "given": "labels learned on another dataset (--mapping-from)",
}
#: ... and what it means for a reader of the confusion matrix.
MATCHING_NOTES = {
    "hungarian": (
        "Each component gets a distinct label, the assignment that puts the most rows under "
        "their own label over all components together, so a component can be matched to a "
        "label it is not mostly made of."
    ),
    "majority": (
        "Each component gets the label most of its rows have, so several components can share "
        "a label and a label can have none."
    ),
    "given": (
        "Each component keeps the label it was matched to on the other dataset, which need not "
        "be the label most of its rows have here."
    ),
}


def component_name(k: int, mapping: Sequence[Any] | None, majority: Sequence[Any] | None) -> str:
    """A component's name in the figures: its number, its matched label, and its commonest
    label where that differs.

    Parameters
    ----------
    k : int
        The component.
    mapping : sequence of length n_components, or None
        The label matched to each component (None where it has none).
    majority : sequence of length n_components, or None
        The commonest label of each component's rows (None where it has no rows).

    Returns
    -------
    str

    >>> component_name(4, [0, 2, 3, 8, 9], [0, 2, 3, 8, 1]), component_name(0, [5], [5])
    ('#4 \u2192 9 (mostly 1)', '#0 \u2192 5')
    """
    name = f"#{k}"
    matched = None if mapping is None else mapping[k]
    if matched is not None:
        name += f" \u2192 {matched}"
    commonest = None if majority is None else majority[k]
    if commonest is not None and commonest != matched:
        name += f" (mostly {commonest})"
    return name


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
    lines = max((title.count("\n") + 1 for title in titles), default=1)
    fig = Figure(
        # at least 5 inches wide: room for the title in a few lines over 2 or 3 panels
        figsize=(max(5.0, cols * size + 0.4), rows * (size + 0.15 * lines + 0.1) + 0.9),
        layout="constrained",
    )
    axes = fig.subplots(rows, cols, squeeze=False)
    for i, ax in enumerate(axes.flat):
        ax.set_axis_off()
        if i < len(images):
            ax.imshow(images[i], cmap=cmap, vmin=0, vmax=1, interpolation="nearest")
            ax.set_title(titles[i], fontsize=8 if len(images) <= 40 else 5)
    _suptitle(fig, suptitle)
    return fig


def means_figure(
    means: NDArray[np.float64],
    weights: NDArray[np.float64],
    *,
    image_shape: Sequence[int] | None = None,
    mapping: Sequence[Any] | None = None,
    majority: Sequence[Any] | None = None,
) -> Figure:
    """The figure of :func:`plot_means` (to draw, or to measure).

    Parameters
    ----------
    means, weights, image_shape, mapping, majority :
        As for :func:`plot_means`.

    Returns
    -------
    matplotlib.figure.Figure
    """
    order = np.argsort(-np.asarray(weights), kind="stable")
    titles = [
        f"{component_name(k, mapping, majority)}\nw={format_number(weights[k])}" for k in order
    ]
    above = "#component \u2192 matched label" if mapping is not None else "#component"
    return _panel_grid(
        _as_images(means[order], image_shape),
        titles,
        f"Means of the {len(weights)} components, heaviest first\n"
        f"(black: probability 1; above each: {above}, weight)",
    )


def plot_means(
    means: NDArray[np.float64],
    weights: NDArray[np.float64],
    path: str | os.PathLike[str],
    *,
    image_shape: Sequence[int] | None = None,
    mapping: Sequence[Any] | None = None,
    majority: Sequence[Any] | None = None,
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
    majority : sequence of length n_components, default=None
        The commonest label of each component's rows (None where it has none), shown where it
        is not the matched label.

    Returns
    -------
    pathlib.Path
        ``path``.
    """
    fig = means_figure(means, weights, image_shape=image_shape, mapping=mapping, majority=majority)
    fig.savefig(path, dpi=110)
    return Path(path)


def _runs(flags: Sequence[bool]) -> list[tuple[int, int]]:
    """The first and last index of each run of true flags.

    >>> _runs([False, True, True, False, True])
    [(1, 2), (4, 4)]
    """
    runs: list[tuple[int, int]] = []
    for i, flag in enumerate(flags):
        if flag and runs and runs[-1][1] == i - 1:
            runs[-1] = (runs[-1][0], i)
        elif flag:
            runs.append((i, i))
    return runs


def objective_figure(history: Sequence[Mapping[str, Any]]) -> Figure:
    """The figure of :func:`plot_objective` (to draw, or to measure).

    Parameters
    ----------
    history : sequence of mapping
        As for :func:`plot_objective`.

    Returns
    -------
    matplotlib.figure.Figure
    """
    # Records are placed by their position: models saved before and after the numbering of
    # iterations changed number them differently, and a pass's record may have no number.
    position = np.arange(1, len(history) + 1)
    objective = np.array([h["objective"] for h in history], dtype=np.float64)
    is_pass = np.array(["pass" in h for h in history], dtype=bool)
    reseeded = np.array([bool(h.get("reseeded")) for h in history], dtype=bool)
    fig = Figure(figsize=(6.4, 4.2), layout="constrained")
    ax = fig.subplots()
    ax.plot(position, objective, color="C0", linewidth=1, zorder=2)
    for i, (first, last) in enumerate(_runs(is_pass.tolist())):
        ax.axvspan(
            first + 0.5,
            last + 1.5,
            color="C1",
            alpha=0.15,
            linewidth=0,
            label="stepwise passes" if i == 0 else None,
        )
    switches = [i + 1.5 for i in range(len(history) - 1) if is_pass[i] and not is_pass[i + 1]]
    for i, x in enumerate(switches):
        ax.axvline(
            x,
            color="C1",
            linestyle="--",
            linewidth=1,
            label="switch to batch EM" if i == 0 else None,
        )
    ax.plot(
        position[~is_pass],
        objective[~is_pass],
        "o",
        color="C0",
        markersize=3,
        zorder=3,
        label="batch EM iteration" if is_pass.any() and not is_pass.all() else None,
    )
    if is_pass.any():
        ax.plot(
            position[is_pass],
            objective[is_pass],
            "s",
            color="C1",
            markersize=5,
            zorder=3,
            label="stepwise pass (running estimate)",
        )
    if reseeded.any():
        ax.plot(
            position[reseeded],
            objective[reseeded],
            "x",
            color="C3",
            markersize=8,
            markeredgewidth=1.5,
            zorder=4,
            label="component re-seeded",
        )
    if is_pass.any() or reseeded.any():
        ax.legend(fontsize=8)
    ax.set_xlim(0.5, len(history) + 0.5)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True, min_n_ticks=1))
    if is_pass.all():
        what, x_label = "pass", "stepwise pass"
    elif is_pass.any():
        what, x_label = (
            "iteration and pass",
            "batch EM iteration or stepwise pass, in the order run",
        )
    else:
        what, x_label = "iteration", "batch EM iteration"
    ax.set_xlabel(x_label)
    ax.set_ylabel("objective (nats per sample)")
    _suptitle(
        fig,
        f"Objective by {what} (best start):\nmean log-likelihood + log of the smoothing prior",
        fontsize=10,
    )
    ax.grid(alpha=0.3)
    return fig


def plot_objective(history: Sequence[Mapping[str, Any]], path: str | os.PathLike[str]) -> Path:
    """Plot the objective (nats per sample) of each iteration and pass, in the order run.

    Stepwise passes (records with a ``pass``) are drawn as squares on a shaded span, with the
    switch back to batch EM dashed; re-seeded components are marked with a cross. The x axis
    is each record's position in ``history`` (1, 2, ...), whatever its ``iteration``.

    Parameters
    ----------
    history : sequence of mapping
        One record per batch iteration or stepwise pass, in the order run, with ``objective``
        and ``reseeded``; a pass's record has ``pass``.
    path : str or path-like
        The image file to write (PNG).

    Returns
    -------
    pathlib.Path
        ``path``.
    """
    objective_figure(history).savefig(path, dpi=110)
    return Path(path)


def steps_run(history: Sequence[Mapping[str, Any]]) -> str:
    """How many batch EM iterations and stepwise passes the records are, in words.

    Parameters
    ----------
    history : sequence of mapping
        As for :func:`plot_objective`.

    Returns
    -------
    str

    >>> steps_run([{}, {}, {"pass": 1}]), steps_run([{"pass": 1}, {"pass": 2}]), steps_run([{}])
    ('2 batch EM iterations and 1 stepwise pass', '2 stepwise passes', '1 batch EM iteration')
    """
    passes = sum("pass" in h for h in history)
    batch = len(history) - passes
    said = []
    if batch or not passes:
        said.append(f"{format_number(batch)} batch EM iteration{'s' if batch != 1 else ''}")
    if passes:
        said.append(f"{format_number(passes)} stepwise pass{'es' if passes != 1 else ''}")
    return " and ".join(said)


def objective_caption(history: Sequence[Mapping[str, Any]]) -> str:
    """The page's caption of the objective plot, true of the records drawn.

    Parameters
    ----------
    history : sequence of mapping
        As for :func:`plot_objective`.

    Returns
    -------
    str
    """
    is_pass = ["pass" in h for h in history]
    sentences = [
        "The objective (mean log-likelihood plus the log of the smoothing prior, in nats per "
        f"sample) of the best start, after each of its {steps_run(history)}, in the order run."
    ]
    if any(is_pass):
        sentences.append(
            "Stepwise passes are shaded, their objective drawn as squares: a running estimate, "
            "taken over the pass's mini-batches while the parameters changed, so it is noisy "
            "and can fall from one pass to the next"
            + (" or below the batch iteration before." if not is_pass[0] else ".")
        )
    if any(a and not b for a, b in itertools.pairwise(is_pass)):
        sentences.append("After the dashed line the fit is batch EM again.")
    reseeded = any(h.get("reseeded") for h in history)
    if not all(is_pass):
        sentences.append(
            "Batch EM's objective never decreases from one iteration to the next (but for "
            "rounding near convergence)"
            + (
                ", except after an iteration that re-seeded a component (crosses)."
                if reseeded
                else "."
            )
        )
    elif reseeded:
        sentences.append("Crosses mark the passes that re-seeded a component.")
    return " ".join(sentences)


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


def majority_labels(confusion: Sequence[Sequence[int]], classes: Sequence[Any]) -> list[Any]:
    """The commonest label of each component's rows, by :func:`~bmm_dask.metrics.majority_mapping`.

    Parameters
    ----------
    confusion : sequence of sequence of int, of shape (n_components, n_classes)
        Counts of rows by component and label.
    classes : sequence of length n_classes
        The labels of the columns.

    Returns
    -------
    list of length n_components
        A label, or None for a component of no rows.
    """
    return [
        None if column < 0 else classes[column]
        for column in majority_mapping(np.asarray(confusion)).tolist()
    ]


def confusion_figure(
    confusion: Sequence[Sequence[int]],
    classes: Sequence[Any],
    *,
    mapping: Sequence[Any] | None = None,
    matching: str | None = None,
    title: str = "Components against labels",
    unit: str = "images",
) -> Figure:
    """The figure of :func:`plot_confusion` (to draw, or to measure).

    Parameters
    ----------
    confusion, classes, mapping, matching, title, unit :
        As for :func:`plot_confusion`.

    Returns
    -------
    matplotlib.figure.Figure
    """
    matrix = np.asarray(confusion)
    K = matrix.shape[0]
    if mapping is not None:
        position = {c: i for i, c in enumerate(classes)}
        order = sorted(range(K), key=lambda k: (position.get(mapping[k], len(classes)), k))
    else:
        order = list(range(K))
    majority = majority_labels(matrix, classes)
    matrix = matrix[order]
    height = max(3.5, min(0.32 * K + 2.0, 30))
    fig = Figure(figsize=(max(5.5, 0.55 * len(classes) + 3.5), height), layout="constrained")
    ax = fig.subplots()
    image = ax.imshow(matrix, cmap="Blues", aspect="auto")
    fig.colorbar(image, ax=ax, label=unit)
    ax.set_xticks(range(len(classes)), [str(c) for c in classes])
    row_names = [component_name(k, mapping, majority) for k in order]
    ax.set_yticks(range(K), row_names, fontsize=8 if K <= 30 else 5)
    ax.set_xlabel("true label")
    ax.set_ylabel("component \u2192 matched label" if mapping is not None else "component")
    if matching in MATCHING_NAMES:
        title += f"\nrows by {MATCHING_NAMES[matching]}"
    _suptitle(fig, title)
    if K * len(classes) <= 400:
        top = matrix.max() or 1
        for (i, j), value in np.ndenumerate(matrix):
            ax.text(
                j,
                i,
                f"{value:,}",
                ha="center",
                va="center",
                fontsize=7,
                color="white" if value > top / 2 else "black",
            )
    return fig


def plot_confusion(
    confusion: Sequence[Sequence[int]],
    classes: Sequence[Any],
    path: str | os.PathLike[str],
    *,
    mapping: Sequence[Any] | None = None,
    matching: str | None = None,
    title: str = "Components against labels",
    unit: str = "images",
) -> Path:
    """Draw a heatmap of counts: one row per component, one column per label.

    With a ``mapping`` the rows are in order of matched label; each row is named by its
    component, its matched label, and its commonest label where that differs ("#4 \u2192 9
    (mostly 1)"). The counts are written in the cells when there are at most 400 of them.

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
    matching : {"hungarian", "majority", "given"}, default=None
        How ``mapping`` was made (:data:`MATCHING_NAMES`), named under the title.
    title : str, default="Components against labels"
        The figure's title.
    unit : str, default="images"
        What is counted, for the colour bar ("rows" for data that are not images).

    Returns
    -------
    pathlib.Path
        ``path``.
    """
    confusion_figure(
        confusion, classes, mapping=mapping, matching=matching, title=title, unit=unit
    ).savefig(path, dpi=110)
    return Path(path)


def samples_figure(
    samples: NDArray[np.uint8],
    components: NDArray[np.intp],
    *,
    image_shape: Sequence[int] | None = None,
) -> Figure:
    """The figure of :func:`plot_samples` (to draw, or to measure).

    Parameters
    ----------
    samples, components, image_shape :
        As for :func:`plot_samples`.

    Returns
    -------
    matplotlib.figure.Figure
    """
    return _panel_grid(
        _as_images(samples.astype(np.float64), image_shape),
        [f"from #{k}" for k in components],
        f"{len(samples)} images drawn from the model (above each: its component)",
    )


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
    samples_figure(samples, components, image_shape=image_shape).savefig(path, dpi=110)
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
        f"<tr><td>#{c['component']}</td><td>{format_number(c['weight'])}</td>"
        f"<td>{_feature_list(c['top_features'], lift=False)}</td>"
        f"<td>{_feature_list(c['top_lift'], lift=True)}</td></tr>"
        for c in sorted(components, key=lambda c: -c["weight"])
    )
    head = (
        "<tr><th>component</th><th>weight</th><th>top features by mean (mean)</th>"
        "<th>top features by lift (mean, \u00d7lift)</th></tr>"
    )
    return f"<table>{head}{rows}</table>"


def _cell(value: Any) -> str:
    """A value as HTML: numbers by :func:`format_number`, a mapping as a table of its own,
    a list as its items joined by commas."""
    if isinstance(value, Mapping):
        return _table(list(value.items()))
    if isinstance(value, list | tuple):
        return ", ".join(_cell(v) for v in value)
    return html.escape(format_number(value))


def _table(rows: Sequence[tuple[str, Any]], table_id: str | None = None) -> str:
    body = "".join(f"<tr><th>{html.escape(str(k))}</th><td>{_cell(v)}</td></tr>" for k, v in rows)
    return f'<table id="{table_id}">{body}</table>' if table_id else f"<table>{body}</table>"


def _confusion_table(confusion: Sequence[Sequence[int]], classes: Sequence[Any]) -> str:
    head = "".join(f"<th>{_cell(c)}</th>" for c in classes)
    rows = "".join(
        f"<tr><th>#{k}</th>" + "".join(f"<td>{_cell(v)}</td>" for v in row) + "</tr>"
        for k, row in enumerate(confusion)
    )
    return f"<table><tr><th>component \\ label</th>{head}</tr>{rows}</table>"


def _metric_rows(metrics: Mapping[str, Any]) -> list[tuple[str, str]]:
    """Each metric's name and its value as HTML: the lists of one entry per component or per
    label with the component or label named."""
    classes = metrics.get("classes")
    rows: list[tuple[str, str]] = []
    for name, value in metrics.items():
        if name == "confusion_matrix" and classes is not None:
            shown = _confusion_table(value, classes)
        elif name == "mapping":
            shown = ", ".join(
                f"#{k}&nbsp;\u2192&nbsp;{_cell(label)}" for k, label in enumerate(value)
            )
        elif name == "cluster_sizes":
            shown = ", ".join(f"#{k}:&nbsp;{_cell(size)}" for k, size in enumerate(value))
        elif name == "label_counts" and classes is not None:
            shown = ", ".join(
                f"{_cell(c)}:&nbsp;{_cell(n)}" for c, n in zip(classes, value, strict=True)
            )
        elif name == "components":
            shown = "each component's top features: the table of components above"
        else:
            shown = _cell(value)
        rows.append((name, shown))
    return rows


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

    Numbers are shown by :func:`format_number`: counts with thousands separators, the others to
    4 significant digits.

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
        Metrics on a dataset: the scalar ones are shown as a table near the top, all of them as
        a table (name, value) at the end.
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
    sections = [
        f"<h1>{html.escape(title)}</h1>",
        "<h2>Summary</h2>",
        _table(list(facts), "summary"),
    ]
    if metrics:
        shown = [(k, v) for k, v in metrics.items() if not isinstance(v, list | dict)]
        sections += ["<h2>Metrics</h2>", _table(shown, "metrics")]
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
    # a seed names a stream of random numbers: 20240101 is not a count of twenty million
    shown_settings = sorted(
        (name, str(value) if name == "random_state" else value) for name, value in settings.items()
    )
    sections += ["<h2>Settings</h2>", _table(shown_settings, "settings")]
    if metrics:
        body = "".join(
            f"<tr><th>{html.escape(k)}</th><td>{v}</td></tr>" for k, v in _metric_rows(metrics)
        )
        sections += [
            "<h2>All metrics</h2>",
            f'<table id="all-metrics"><tr><th>name</th><th>value</th></tr>{body}</table>',
            '<p>The same, as JSON: <a href="metrics.json">metrics.json</a>.</p>',
        ]
    style = (
        "body{font-family:sans-serif;max-width:70em;margin:2em auto;padding:0 1em}"
        "table{border-collapse:collapse}th,td{border:1px solid #ccc;padding:.2em .6em;text-align:left}"
        "td table th,td table td{padding:.1em .4em;text-align:right}"
        "img{max-width:100%}figure{margin:1.5em 0}figcaption{max-width:50em}"
    )
    page = (
        f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>'
        f"<style>{style}</style></head><body>\n" + "\n".join(sections) + "\n</body></html>\n"
    )
    Path(path).write_text(page, encoding="utf-8")
    return Path(path)
