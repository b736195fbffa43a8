"""The report of a model of data that are not images: each component's top features by mean and
by lift (in metrics.json and the page) and the heat map of their means; images keep their
pictures."""

from __future__ import annotations

import json
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
from matplotlib.text import Text

from bmm_dask import BernoulliMixture, open_dataset
from bmm_dask.evaluation import evaluate, write_report
from bmm_dask.metrics import MIN_MEAN_FOR_LIFT, component_features
from bmm_dask.report import feature_means_figure, heatmap_columns
from tests._helpers import assert_nothing_cut
from tests.test_feature_names import named_dataset

FRUITS = ["apple", "banana", "cherry", "date", "egg", "fig"]

#: Component 0 is apple (0.9, the rest 0.01); 1 is banana and cherry; 2 is everything but apple.
MEANS = np.array(
    [
        [0.9, 0.01, 0.01, 0.01, 0.01, 0.01],
        [0.01, 0.6, 0.5, 0.01, 0.01, 0.01],
        [0.03, 0.3, 0.3, 0.3, 0.3, 0.3],
    ]
)
WEIGHTS = np.array([0.2, 0.3, 0.5])


def hand_made(names: list[str] | None = FRUITS) -> BernoulliMixture:
    """A fitted model of MEANS and WEIGHTS, as if fitted on data with ``names``."""
    model = BernoulliMixture(3)
    model.means_, model.weights_ = MEANS.copy(), WEIGHTS.copy()
    model.converged_, model.n_iter_, model.lower_bound_ = True, 2, -3.5
    model.history_ = [
        {"iteration": i, "objective": -3.5 - 1 / i, "change": None, "seconds": 0.1, "reseeded": 0}
        for i in (1, 2)
    ]
    model.n_features_in_ = MEANS.shape[1]
    if names is not None:
        model.feature_names_in_ = np.asarray(names, dtype=object)
    return model


class _References(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.found: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.found += [value for name, value in attrs if name in ("src", "href") and value]


def assert_self_contained(page: Path) -> None:
    """Every file the page refers to is beside it; nothing is fetched."""
    parser = _References()
    parser.feed(page.read_text())
    assert parser.found
    for reference in parser.found:
        assert "://" not in reference and (page.parent / reference).is_file(), reference


def test_top_features_by_mean_and_by_lift() -> None:
    components = component_features(MEANS, WEIGHTS, np.asarray(FRUITS, dtype=object))
    assert [c["component"] for c in components] == [0, 1, 2]
    assert [c["weight"] for c in components] == WEIGHTS.tolist()
    apple = components[0]
    assert apple["top_features"][0] == {"feature": 0, "name": "apple", "mean": 0.9}
    assert [f["name"] for f in apple["top_features"]] == FRUITS  # then the 0.01s, by column
    # lift = 0.9 / (0.2 * 0.9 + 0.3 * 0.01 + 0.5 * 0.03); the 0.01s are under the floor
    assert [f["name"] for f in apple["top_lift"]] == ["apple"]
    assert apple["top_lift"][0]["lift"] == pytest.approx(0.9 / 0.198)
    assert [f["name"] for f in components[1]["top_lift"]] == ["banana", "cherry"]
    assert components[1]["top_lift"][0]["lift"] == pytest.approx(0.6 / 0.332)
    # the broad component: its own features first (lift 0.3 / 0.155), the shared ones after
    assert [f["name"] for f in components[2]["top_lift"]] == [
        "date",
        "egg",
        "fig",
        "cherry",
        "banana",
    ]
    # no names: features are named by their column
    unnamed = component_features(MEANS, WEIGHTS, n_top=2)
    assert [f["name"] for f in unnamed[1]["top_features"]] == ["feature 1", "feature 2"]


def test_a_rare_feature_does_not_top_the_lift() -> None:
    """A feature almost never on anywhere but a bit more often in one component has a huge lift;
    under the floor it is not ranked."""
    means = np.array([[0.5, 0.04, 0.001], [0.5, 0.0001, 0.001]])
    weights = np.array([0.5, 0.5])
    (first, _) = component_features(means, weights)
    assert means[0, 1] < MIN_MEAN_FOR_LIFT
    assert [f["feature"] for f in first["top_lift"]] == [0]
    (loose, _) = component_features(means, weights, min_mean=0.01)
    assert [f["feature"] for f in loose["top_lift"]] == [1, 0]


def test_report_of_a_model_of_named_features(tmp_path: Path, bmm) -> None:
    hand_made().save(tmp_path / "m.zarr")
    result = bmm("report", tmp_path / "m.zarr", "--out", tmp_path / "r")
    assert result.code == 0, result.err
    folder = tmp_path / "r"
    assert {p.name for p in folder.iterdir()} == {
        "features.png",
        "loglik.png",
        "metrics.json",
        "report.html",
    }
    png = folder / "features.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 5000
    record = json.loads((folder / "metrics.json").read_text())
    assert record["lift_min_mean"] == MIN_MEAN_FOR_LIFT
    first = record["components"][0]
    assert first["component"] == 0 and first["weight"] == pytest.approx(0.2)
    assert first["top_features"][0] == {"feature": 0, "name": "apple", "mean": 0.9}
    assert [f["name"] for f in first["top_lift"]] == ["apple"]
    assert first["top_lift"][0]["lift"] == pytest.approx(0.9 / 0.198)
    page = (folder / "report.html").read_text()
    assert "<h2>Components and their features</h2>" in page
    assert "apple&nbsp;0.9&nbsp;\u00d74.5" in page and "banana&nbsp;0.6, cherry&nbsp;0.5" in page
    assert f"mean at least {MIN_MEAN_FOR_LIFT}" in page
    # heaviest first: component 2, then 1, then 0
    assert page.index("<td>#2</td>") < page.index("<td>#1</td>") < page.index("<td>#0</td>")
    assert_self_contained(folder / "report.html")


def test_names_come_from_the_data_where_the_model_has_none(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    z = rng.choice(3, size=200, p=WEIGHTS)
    X = (rng.random((200, 6)) < MEANS[z]).astype(np.uint8)
    data = named_dataset(tmp_path / "d.zarr", X, FRUITS, labels=z.astype(np.int8))
    with pytest.warns(UserWarning, match="has feature names, but BernoulliMixture was fitted"):
        write_report(hand_made(None), tmp_path / "r", dataset=data)
    record = json.loads((tmp_path / "r" / "metrics.json").read_text())
    assert record["components"][0]["top_features"][0]["name"] == "apple"
    assert record["feature_names"] is False and record["n_samples"] == 200
    assert (tmp_path / "r" / "confusion.png").is_file()
    page = (tmp_path / "r" / "report.html").read_text()
    assert "How many rows of each label" in page
    assert f"those of {data.path} (the model has none)" in page
    # neither the model nor the data: numbered
    write_report(hand_made(None), tmp_path / "bare")
    record = json.loads((tmp_path / "bare" / "metrics.json").read_text())
    assert record["components"][0]["top_features"][0]["name"] == "feature 0"


def test_the_heat_map_fits_50_components_with_long_names() -> None:
    rng = np.random.default_rng(1)
    K, D = 50, 2000
    means = np.where(rng.random((K, D)) < 0.01, rng.uniform(0.2, 0.9, (K, D)), 0.002)
    weights = rng.dirichlet(np.ones(K))
    names = np.array([f"a rather long name of feature number {d:04d}" * 2 for d in range(D)])
    components = component_features(means, weights, names)
    columns = heatmap_columns(components)
    assert len(columns) == 100  # two each
    for component in components:
        assert component["top_lift"][0]["feature"] in dict(columns)
    fig = feature_means_figure(means, weights, components)
    assert any(t.get_text().startswith("a rather long name") for t in fig.findobj(Text))
    assert_nothing_cut(fig)
    width, height = fig.get_size_inches()
    assert width <= 30 and height <= 30


@pytest.mark.parametrize("name_length", [5, 60])
def test_a_few_components_fit_too(name_length: int) -> None:
    """A few rows under long names leave a short colour bar, whose label must still fit."""
    names = np.array([f"{fruit:x<{name_length}}" for fruit in FRUITS], dtype=object)
    fig = feature_means_figure(MEANS, WEIGHTS, component_features(MEANS, WEIGHTS, names))
    assert_nothing_cut(fig)


def test_images_keep_their_pictures(tmp_path: Path) -> None:
    from bmm_dask.datasets import synth

    path = synth(
        tmp_path / "d.zarr", n_samples=300, n_features=16, n_components=2, image_shape=(4, 4)
    )
    data = open_dataset(path)
    model = BernoulliMixture(2, random_state=0, max_iter=5, tol=0).fit(data)
    write_report(model, tmp_path / "r", dataset=data)
    names = {p.name for p in (tmp_path / "r").iterdir()}
    assert {"means.png", "samples.png", "confusion.png"} <= names
    assert "features.png" not in names
    record = json.loads((tmp_path / "r" / "metrics.json").read_text())
    assert "components" not in record and "lift_min_mean" not in record
    page = (tmp_path / "r" / "report.html").read_text()
    assert "Components and their features" not in page
    assert "How many images of each label" in page
    assert evaluate(model, data)["feature_names"] is False
