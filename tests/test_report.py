"""The report's figures and page as a user reads them: titles inside their figures, whole
iterations on the objective plot, stepwise passes marked, numbers to 4 significant digits, the
metrics as a table, the matching of components to labels named and explained; and the page as
headless Chromium shows it (skipped where Chromium is missing)."""

from __future__ import annotations

import json
import math
import re
import warnings
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from bmm_dask import BernoulliMixture, open_dataset
from bmm_dask.datasets import packaged_mnist_path
from bmm_dask.evaluation import write_report
from bmm_dask.metrics import component_features
from bmm_dask.report import (
    MATCHING_NAMES,
    component_name,
    confusion_figure,
    feature_means_figure,
    format_number,
    majority_labels,
    means_figure,
    objective_caption,
    objective_figure,
    samples_figure,
    write_html,
)
from tests._helpers import assert_nothing_cut, chromium_dom, chromium_screenshot
from tests.test_feature_names import named_dataset

HUNGARIAN = MATCHING_NAMES["hungarian"]


class PageReader(HTMLParser):
    """A page's text, its images' sources, and the rows of each of its tables that has an id:
    each row a list of its cells' text (a table inside a cell read as that cell's text)."""

    def __init__(self, page: str) -> None:
        super().__init__()
        self.text: list[str] = []
        self.images: list[str] = []
        self.tables: dict[str, list[list[str]]] = {}
        self._open: list[str | None] = []  # the ids of the tables we are in, outermost first
        self.feed(page)

    def _rows(self) -> list[list[str]] | None:
        return self.tables.get(self._open[0] or "") if self._open else None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        found = dict(attrs)
        if tag == "img":
            self.images.append(found.get("src") or "")
        elif tag == "table":
            self._open.append(found.get("id"))
            if len(self._open) == 1 and found.get("id"):
                self.tables[found["id"] or ""] = []
        rows = self._rows()
        if rows is not None and len(self._open) == 1:
            if tag == "tr":
                rows.append([])
            elif tag in ("th", "td"):
                rows[-1].append("")
        elif rows is not None and tag in ("th", "td"):
            rows[-1][-1] += " "

    def handle_endtag(self, tag: str) -> None:
        if tag == "table":
            self._open.pop()

    def handle_data(self, data: str) -> None:
        self.text.append(data)
        rows = self._rows()
        if rows and rows[-1]:
            rows[-1][-1] += data


def long_numbers(text: str) -> list[str]:
    """Numbers written with a decimal point and more than 4 significant digits."""
    found = re.findall(r"\d[\d,]*\.\d+", text)
    return [n for n in found if len(n.replace(",", "").replace(".", "").lstrip("0")) > 4]


def suptitle_inside(fig: Figure) -> str:
    """The figure's title, after checking that it lies inside the figure (to a pixel); the
    figure is drawn unless it has been."""
    if not isinstance(fig.canvas, FigureCanvasAgg):
        FigureCanvasAgg(fig).draw()
    (title,) = [t for t in fig.texts if t.get_text() and t.get_text() == fig.get_suptitle()]
    extent, box = title.get_window_extent(fig.canvas.get_renderer()), fig.bbox
    assert box.x0 - 1 <= extent.x0 and extent.x1 <= box.x1 + 1, (title.get_text(), extent, box)
    assert box.y0 - 1 <= extent.y0 and extent.y1 <= box.y1 + 1, (title.get_text(), extent, box)
    return title.get_text()


def batch_record(iteration: int | None, objective: float, reseeded: int = 0) -> dict[str, Any]:
    record = {"objective": objective, "change": None, "seconds": 0.1, "reseeded": reseeded}
    if iteration is not None:
        record["iteration"] = iteration
    return record


def pass_record(number: int, iteration: int | None, objective: float) -> dict[str, Any]:
    record = batch_record(iteration, objective)
    record.update({"pass": number, "steps": 10, "batch_size": 1000})
    return record


# --------------------------------------------------------------------------- titles that fit


@pytest.mark.parametrize("images", [True, False], ids=["images", "not images"])
@pytest.mark.parametrize("K", [2, 3, 10, 12, 30, 100])
def test_every_title_lies_inside_its_figure(K: int, images: bool) -> None:
    rng = np.random.default_rng(K)
    n_features = 784 if images else 40
    means = rng.uniform(0.01, 0.99, size=(K, n_features))
    weights = rng.dirichlet(np.ones(K))
    classes = list(range(10))
    confusion = rng.integers(0, 2000, size=(K, len(classes)))
    majority = majority_labels(confusion, classes)
    # every component matched to a label other than its commonest: the longest names
    mapping = [(label + 1) % 10 for label in majority]
    shape = (28, 28) if images else None
    figures = [
        means_figure(means, weights, image_shape=shape, mapping=mapping, majority=majority),
        confusion_figure(
            confusion,
            classes,
            mapping=mapping,
            matching="hungarian" if len(classes) == K else "majority",
            title="Components against labels: a-test-set-of-a-rather-long-name.zarr, "
            "accuracy 0.5857",
            unit="images" if images else "rows",
        ),
    ]
    if K == 100:  # the samples' titles do not change with K but for the numbers in them
        figures.append(
            samples_figure(
                (rng.random((40, n_features)) < 0.5).astype(np.uint8),
                rng.integers(0, K, 40),
                image_shape=shape,
            )
        )
    if not images:
        figures.append(feature_means_figure(means, weights, component_features(means, weights)))
    for fig in figures:
        assert_nothing_cut(fig)
    titles = [suptitle_inside(fig) for fig in figures if fig.get_suptitle()]
    assert titles[0].startswith(f"Means of the {K} components")


# --------------------------------------------------------------------------- the objective plot


def visible_ticks(fig: Figure) -> list[float]:
    FigureCanvasAgg(fig).draw()
    (ax,) = fig.axes
    low, high = ax.get_xlim()
    return [t for t in ax.get_xticks() if low <= t <= high]


@pytest.mark.parametrize("n_records", [1, 2, 3, 250])
def test_the_objective_plot_ticks_whole_iterations(n_records: int) -> None:
    history = [batch_record(i, -100 - 1 / i) for i in range(1, n_records + 1)]
    fig = objective_figure(history)
    ticks = visible_ticks(fig)
    assert ticks, "no tick at all"
    assert all(float(t).is_integer() for t in ticks), ticks
    assert min(ticks) >= 1 and max(ticks) <= n_records
    suptitle_inside(fig)


def test_records_are_drawn_in_order_whatever_their_numbers() -> None:
    """Models saved before the numbering changed count passes among the iterations; those
    saved after number the batch iterations alone and leave the passes unnumbered: both are
    drawn alike, each record at its place in the history."""
    objectives = [-120, -110, -108, -109, -107.5, -106, -105.5, -105.4]
    kinds = ["batch"] * 3 + ["pass"] * 2 + ["batch"] * 3
    old, new, batch_seen = [], [], 0
    for position, (kind, objective) in enumerate(zip(kinds, objectives, strict=True), start=1):
        if kind == "pass":
            number = position - 3
            old.append(pass_record(number, position, objective))
            new.append(pass_record(number, None, objective))
        else:
            batch_seen += 1
            reseeded = 1 if position == 7 else 0
            old.append(batch_record(position, objective, reseeded))
            new.append(batch_record(batch_seen, objective, reseeded))
    for history in (old, new):
        (ax,) = objective_figure(history).axes
        by_label = {line.get_label(): line for line in ax.lines}
        np.testing.assert_array_equal(ax.lines[0].get_xdata(), np.arange(1, 9))
        np.testing.assert_array_equal(ax.lines[0].get_ydata(), objectives)
        np.testing.assert_array_equal(
            by_label["stepwise pass (running estimate)"].get_xdata(), [4, 5]
        )
        np.testing.assert_array_equal(
            by_label["batch EM iteration"].get_xdata(), [1, 2, 3, 6, 7, 8]
        )
        np.testing.assert_array_equal(by_label["component re-seeded"].get_xdata(), [7])
        np.testing.assert_array_equal(by_label["switch to batch EM"].get_xdata(), [5.5, 5.5])


@pytest.fixture(scope="module")
def mnist_fit() -> BernoulliMixture:
    """K = 10 by "auto" on 10,000 of the packaged MNIST training images: 3 batch iterations,
    stepwise passes, then batch iterations again (passes allowed whatever they cost here)."""
    import bmm_dask._em

    train = open_dataset(f"{packaged_mnist_path()}/train")
    X = train.unpacked()[:10_000].compute()
    model = BernoulliMixture(
        n_components=10, algorithm="auto", batch_size=1000, max_iter=12, random_state=0
    )
    with pytest.MonkeyPatch.context() as patch, warnings.catch_warnings():
        patch.setattr(bmm_dask._em, "MAX_PASS_COST", math.inf)
        warnings.simplefilter("ignore")  # not converged in 12 iterations: enough to draw
        return model.fit(X)


def test_the_switch_from_stepwise_passes_is_marked(mnist_fit: BernoulliMixture) -> None:
    history = mnist_fit.history_
    passes = [i + 1 for i, record in enumerate(history) if "pass" in record]
    assert passes and passes[0] > 1 and passes[-1] < len(history)  # batch, passes, batch
    fig = objective_figure(history)
    (ax,) = fig.axes
    legend = {text.get_text() for text in ax.get_legend().get_texts()}
    assert {
        "stepwise passes",
        "switch to batch EM",
        "batch EM iteration",
        "stepwise pass (running estimate)",
    } <= legend
    (span,) = ax.patches
    assert span.get_label() == "stepwise passes"
    assert span.get_x() == passes[0] - 0.5 and span.get_x() + span.get_width() == passes[-1] + 0.5
    (switch,) = [line for line in ax.lines if line.get_label() == "switch to batch EM"]
    assert switch.get_xdata()[0] == passes[-1] + 0.5
    squares = [line for line in ax.lines if line.get_marker() == "s"]
    np.testing.assert_array_equal(squares[0].get_xdata(), passes)
    assert "pass" in ax.get_xlabel() and "iteration" in ax.get_xlabel()
    assert all(float(t).is_integer() for t in visible_ticks(fig))
    assert_nothing_cut(fig)


def test_the_caption_says_what_the_plot_shows() -> None:
    batch = [batch_record(i, -100 - 1 / i) for i in range(1, 6)]
    caption = objective_caption(batch)
    assert "5 batch EM iterations" in caption and "pass" not in caption
    assert "never decreases from one iteration to the next" in caption
    mixed = [*batch[:3], pass_record(1, None, -101.0), pass_record(2, None, -100.5), *batch[3:]]
    caption = objective_caption(mixed)
    assert "5 batch EM iterations and 2 stepwise passes" in caption
    assert "can fall" in caption and "dashed line" in caption
    reseeded = [*batch, batch_record(6, -99.0, reseeded=2)]
    assert "re-seeded" in objective_caption(reseeded)
    # a stepwise fit: passes alone, nothing said or drawn of batch EM
    passes = [pass_record(i, None, -100 - 1 / i) for i in range(1, 4)]
    caption = objective_caption(passes)
    assert "3 stepwise passes" in caption and "batch EM" not in caption
    (ax,) = objective_figure(passes).axes
    legend = [text.get_text() for text in ax.get_legend().get_texts()]
    assert legend == ["stepwise passes", "stepwise pass (running estimate)"]
    assert ax.get_xlabel() == "stepwise pass"


# --------------------------------------------------------------------------- numbers and tables


@pytest.mark.parametrize(
    ("value", "shown"),
    [
        (0.09371202300008008, "0.09371"),
        (-164.96983097741386, "-165.0"),
        (0.30357290439720086, "0.3036"),
        (0.5, "0.5"),
        (0.0001, "0.0001"),
        (10_000, "10,000"),
        (np.int64(1_234_567), "1,234,567"),
        (123_456.7, "123,500"),
        (np.float32(0.25), "0.25"),
        (float("nan"), "nan"),
        (True, "True"),
        (None, "None"),
        ("mnist.zarr/test", "mnist.zarr/test"),
    ],
)
def test_numbers_are_shown_to_4_significant_digits(value: Any, shown: str) -> None:
    assert format_number(value) == shown


METRICS = {
    "data": "test.zarr",
    "n_samples": 10_000,
    "log_likelihood_per_sample": -164.96983097741386,
    "bits_per_dim": 0.30357290439720086,
    "accuracy": 0.5857,
    "matching": "hungarian",
    "mapping": [1, 0],
    "nmi": 0.5651554691386481,
    "confusion_matrix": [[3, 1200], [900, 5]],
    "classes": [0, 1],
    "cluster_sizes": [1203, 905],
    "label_counts": [903, 1205],
    "seconds": 0.09371202300008008,
}


def test_the_page_shows_every_metric_in_a_table(tmp_path: Path) -> None:
    page = write_html(
        tmp_path / "report.html",
        title="Bernoulli mixture, K = 2",
        figures=[],
        settings={"alpha": 0.1, "tol": 1e-4, "max_iter": 1000, "random_state": 20240101},
        facts=[("components", 2)],
        metrics=METRICS,
    ).read_text()
    assert "<pre>" not in page and "&quot;" not in page  # no JSON
    reader = PageReader(page)
    text = "".join(reader.text)
    assert not long_numbers(text), long_numbers(text)
    rows = reader.tables["all-metrics"]
    assert rows[0] == ["name", "value"]
    values = dict(rows[1:])
    assert list(values) == list(METRICS)
    assert values["n_samples"] == "10,000"
    assert values["log_likelihood_per_sample"] == "-165.0"
    assert values["seconds"] == "0.09371"
    assert values["mapping"] == "#0\xa0\u2192\xa01, #1\xa0\u2192\xa00"
    assert values["label_counts"] == "0:\xa0903, 1:\xa01,205"
    # the confusion matrix as a table of its own: a row per component, a column per label
    assert "#0 3 1,200" in " ".join(values["confusion_matrix"].split())
    settings = dict(reader.tables["settings"])
    assert settings == {
        "alpha": "0.1",
        "max_iter": "1,000",
        "random_state": "20240101",
        "tol": "0.0001",
    }


def test_the_matching_is_named_and_explained(tmp_path: Path) -> None:
    """Component 2's rows are mostly 1s, but 1 goes to component 1, the larger: one-to-one
    matching gives component 2 the label left over, 9, and the report says so."""
    rng = np.random.default_rng(0)
    means = np.full((3, 6), 0.02)
    for k in range(3):
        means[k, 2 * k : 2 * k + 2] = 0.98
    drawn = np.repeat([0, 1, 2], [300, 400, 300])
    labels = np.select([drawn == 0, drawn == 1], [0, 1], np.where(rng.random(1000) < 0.6, 1, 9))
    X = (rng.random((1000, 6)) < means[drawn]).astype(np.uint8)
    data = named_dataset(tmp_path / "d.zarr", X, None, labels=labels.astype(np.int8))
    model = BernoulliMixture(3)
    model.means_, model.weights_ = means, np.array([0.3, 0.4, 0.3])
    model.converged_, model.n_iter_, model.lower_bound_ = True, 1, -3.0
    model.history_ = [batch_record(1, -3.0)]
    model.n_features_in_ = 6
    write_report(model, tmp_path / "r", dataset=data)
    metrics = json.loads((tmp_path / "r" / "metrics.json").read_text())
    assert metrics["matching"] == "hungarian" and metrics["mapping"] == [0, 1, 9]
    page = (tmp_path / "r" / "report.html").read_text()
    assert HUNGARIAN in page
    assert "each component gets a distinct label" in page.lower()
    assert "#2 \u2192 9 (mostly 1)" in page
    fig = confusion_figure(
        metrics["confusion_matrix"],
        metrics["classes"],
        mapping=metrics["mapping"],
        matching="hungarian",
    )
    assert HUNGARIAN in " ".join(suptitle_inside(fig).split())
    rows = [label.get_text() for label in fig.axes[0].get_yticklabels()]
    assert rows == ["#0 \u2192 0", "#1 \u2192 1", "#2 \u2192 9 (mostly 1)"]


def test_a_component_is_named_with_its_commonest_label_where_that_differs() -> None:
    mapping, majority = [0, 9, None, 3], [0, 1, 4, None]
    names = [component_name(k, mapping, majority) for k in range(4)]
    assert names == ["#0 \u2192 0", "#1 \u2192 9 (mostly 1)", "#2 (mostly 4)", "#3 \u2192 3"]
    assert component_name(1, mapping, None) == "#1 \u2192 9"


# --------------------------------------------------------------------------- in a browser


@pytest.mark.slow
def test_the_report_in_a_browser(mnist_fit: BernoulliMixture, tmp_path: Path) -> None:
    test = open_dataset(f"{packaged_mnist_path()}/test")
    folder = write_report(mnist_fit, tmp_path / "report", dataset=test)
    page = folder / "report.html"
    metrics = json.loads((folder / "metrics.json").read_text())

    reader = PageReader(chromium_dom(page))
    text = " ".join(" ".join(reader.text).split())
    # every figure is a file beside the page
    assert set(reader.images) == {"means.png", "loglik.png", "confusion.png", "samples.png"}
    for name in reader.images:
        assert (folder / name).is_file(), name
    # the metrics as a table, numbers to 4 significant digits
    values = dict(reader.tables["all-metrics"][1:])
    assert values["n_samples"] == "10,000"
    assert values["bits_per_dim"] == format_number(metrics["bits_per_dim"])
    assert re.fullmatch(r"0\.\d{4}", values["bits_per_dim"]), values["bits_per_dim"]
    assert not long_numbers(text), long_numbers(text)
    # the matching named and explained, and each component matched against its rows named
    assert HUNGARIAN in text and "each component gets a distinct label" in text.lower()
    majority = majority_labels(metrics["confusion_matrix"], metrics["classes"])
    for k, label in enumerate(metrics["mapping"]):
        if majority[k] not in (None, label):
            assert component_name(k, metrics["mapping"], majority) in text
    # the objective's caption tells of the passes
    assert "stepwise pass" in text and "can fall" in text

    pixels = chromium_screenshot(page, tmp_path / "page.png", (1200, 3200))
    assert pixels.shape == (3200, 1200, 3)
    rgb = np.round(pixels * 255).astype(np.uint32) @ np.array([1 << 16, 1 << 8, 1], np.uint32)
    colours, counts = np.unique(rgb, return_counts=True)
    assert len(colours) > 200 and counts.max() / counts.sum() < 0.9  # not blank
    # the page is in parts, white between them: tables, then one figure after another
    inked = ~np.all(pixels > 0.97, axis=-1).all(axis=1)
    edges = np.flatnonzero(np.diff(np.r_[0, inked.astype(np.int8), 0]))
    starts, stops = edges[::2], edges[1::2]
    parts, last = [], -100
    for start, stop in zip(starts, stops, strict=True):
        if start - last > 12:
            parts.append([start, stop])
        else:
            parts[-1][1] = stop
        last = stop
    tall = [stop - start for start, stop in parts if stop - start > 100]
    assert len(tall) >= 5, parts

    def near(colour: str, within: float = 0.08) -> int:
        rgb = np.array([int(colour[i : i + 2], 16) for i in (1, 3, 5)]) / 255
        return int(np.all(np.abs(pixels - rgb) < within, axis=-1).sum())

    assert near("#ff7f0e") > 100  # the passes' squares and the switch, in the objective plot
    assert near("#1f77b4") > 300  # the objective's line
    assert near("#08306b", 0.1) > 300  # the confusion matrix's fullest cells
    grey = (
        (np.ptp(pixels, axis=-1) < 0.02)
        & (pixels.mean(axis=-1) > 0.2)
        & (pixels.mean(axis=-1) < 0.8)
    )
    assert grey.sum() > 5000  # the means, drawn as images
