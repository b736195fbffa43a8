"""fit, predict, evaluate, report and demo run as a user runs them: exit codes, files, JSON."""

from __future__ import annotations

import json
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
import zarr

from bmm_dask import BernoulliMixture, open_dataset
from bmm_dask.datasets import synth
from tests._helpers import LOCAL_CLUSTER, assert_one_line_error

#: Every test here runs a fit on a local cluster, or uses the model that a fit on one wrote.
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A labelled dataset (3 components, 4x4 images) and a model fitted on it by the CLI."""
    from bmm_dask.cli import main

    folder = tmp_path_factory.mktemp("cli")
    synth(
        folder / "train.zarr",
        n_samples=3000,
        n_features=16,
        n_components=3,
        seed=1,
        image_shape=(4, 4),
        chunk_rows=700,
    )
    synth(
        folder / "test.zarr",
        n_samples=1000,
        n_features=16,
        n_components=3,
        seed=1,
        image_shape=(4, 4),
    )
    code = main(
        [
            "fit",
            str(folder / "train.zarr"),
            "--k",
            "3",
            "--out",
            str(folder / "model.zarr"),
            *LOCAL_CLUSTER,
            "--seed",
            "2",
        ]
    )
    assert code == 0
    return folder


def test_fit_writes_a_model_with_its_provenance(workdir: Path) -> None:
    model = BernoulliMixture.load(workdir / "model.zarr")
    assert model.means_.shape == (3, 16) and model.converged_
    attrs = model.attrs_
    assert attrs["data"]["path"] == str((workdir / "train.zarr").absolute())
    assert attrs["data"]["n_samples"] == 3000 and attrs["data"]["image_shape"] == [4, 4]
    assert attrs["settings"]["random_state"] == 2 and attrs["settings"]["n_components"] == 3
    assert attrs["bmm_dask_version"] and attrs["created"] and attrs["fit_seconds"] > 0
    assert len(attrs["history"]) == model.n_iter_
    group = zarr.open_group(workdir / "model.zarr", mode="r")
    assert group["means"].dtype == np.float64 and group["weights"].shape == (3,)
    # the same settings in Python give the same model
    again = BernoulliMixture(3, random_state=2).fit(open_dataset(workdir / "train.zarr"))
    np.testing.assert_allclose(again.means_, model.means_, atol=1e-6)


def test_fit_logs_a_line_an_iteration_and_the_dashboard(tmp_path: Path, workdir: Path, bmm) -> None:
    result = bmm(
        "fit",
        workdir / "train.zarr",
        "--k",
        "2",
        "--out",
        tmp_path / "m.zarr",
        *LOCAL_CLUSTER,
        "--max-iter",
        "3",
        "--tol",
        "0",
    )
    assert result.code == 0, result.err
    lines = result.err.splitlines()
    assert lines[0].startswith("Dask dashboard: http://127.0.0.1:")
    assert sum(line.startswith("iteration ") for line in lines) == 3
    assert "wrote" in result.out and "3 iterations" in result.out
    quiet = bmm(
        "-q",
        "fit",
        workdir / "train.zarr",
        "--k",
        "2",
        "--out",
        tmp_path / "q.zarr",
        *LOCAL_CLUSTER,
        "--max-iter",
        "3",
    )
    assert quiet.code == 0 and quiet.err == ""
    assert quiet.out == ""  # -q: warnings and errors only, not even "wrote q.zarr"
    assert (tmp_path / "q.zarr").exists()


def test_info_of_a_model(workdir: Path, bmm) -> None:
    result = bmm("info", workdir / "model.zarr")
    assert result.code == 0
    assert "model.zarr: model" in result.out and "components     3" in result.out
    assert "train.zarr" in result.out
    info = json.loads(bmm("info", "--json", workdir / "model.zarr").out)
    assert info["kind"] == "model" and info["n_features"] == 16


def test_predict_writes_labels_chunked_like_the_data(tmp_path: Path, workdir: Path, bmm) -> None:
    result = bmm(
        "predict",
        workdir / "model.zarr",
        workdir / "train.zarr",
        "--out",
        tmp_path / "p.zarr",
        "--proba",
    )
    assert result.code == 0, result.err
    group = zarr.open_group(tmp_path / "p.zarr", mode="r")
    assert group["labels"].shape == (3000,) and group["labels"].chunks == (700,)
    assert group["resp"].shape == (3000, 3) and group["resp"].chunks == (700, 3)
    model = BernoulliMixture.load(workdir / "model.zarr")
    data = open_dataset(workdir / "train.zarr")
    np.testing.assert_array_equal(group["labels"][:], model.predict(data).compute())
    np.testing.assert_allclose(group["resp"][:].sum(axis=1), 1, atol=1e-5)
    # info says what the store holds, and where it came from
    info = bmm("info", tmp_path / "p.zarr")
    assert info.code == 0, info.err
    assert info.out.splitlines()[:3] == [
        f"{tmp_path / 'p.zarr'}: predictions with responsibilities",
        "  samples        3,000",
        "  components     3",
    ]
    assert f"  model          {workdir / 'model.zarr'}" in info.out


def test_evaluate_prints_and_writes_the_metrics(tmp_path: Path, workdir: Path, bmm) -> None:
    result = bmm(
        "evaluate", workdir / "model.zarr", workdir / "test.zarr", "--json", tmp_path / "m.json"
    )
    assert result.code == 0, result.err
    metrics = json.loads((tmp_path / "m.json").read_text())
    for key in (
        "n_samples",
        "log_likelihood_per_sample",
        "bits_per_dim",
        "confusion_matrix",
        "accuracy",
        "nmi",
        "ari",
        "cluster_sizes",
        "label_counts",
    ):
        assert key in metrics, key
    assert np.array(metrics["confusion_matrix"]).sum() == metrics["n_samples"] == 1000
    assert np.array(metrics["confusion_matrix"]).shape == (3, 3)
    assert 0 <= metrics["accuracy"] <= 1 and metrics["accuracy"] > 0.9  # well separated components
    assert metrics["matching"] == "hungarian"
    assert metrics["log_likelihood_per_sample"] < 0
    assert f"accuracy {metrics['accuracy']:.4f}" in result.out
    # the mapping learned on the training set
    mapped = bmm(
        "evaluate",
        workdir / "model.zarr",
        workdir / "test.zarr",
        "--mapping-from",
        workdir / "train.zarr",
        "--json",
        tmp_path / "g.json",
    )
    assert mapped.code == 0, mapped.err
    assert json.loads((tmp_path / "g.json").read_text())["matching"] == "given"


class _References(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.found: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        for name, value in attrs:
            if name in ("src", "href") and value:
                self.found.append(value)


def assert_no_broken_references(page: Path) -> None:
    parser = _References()
    parser.feed(page.read_text())
    assert parser.found
    for reference in parser.found:
        assert "://" not in reference, reference  # viewable offline
        assert (page.parent / reference).is_file(), reference


def test_report_writes_every_file(tmp_path: Path, workdir: Path, bmm) -> None:
    result = bmm(
        "report", workdir / "model.zarr", "--data", workdir / "test.zarr", "--out", tmp_path / "r"
    )
    assert result.code == 0, result.err
    names = {p.name for p in (tmp_path / "r").iterdir()}
    assert names == {
        "means.png",
        "loglik.png",
        "confusion.png",
        "samples.png",
        "metrics.json",
        "report.html",
    }
    for png in (tmp_path / "r").glob("*.png"):
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 5000
    assert_no_broken_references(tmp_path / "r" / "report.html")
    assert json.loads((tmp_path / "r" / "metrics.json").read_text())["n_samples"] == 1000
    # without data: no confusion matrix, still a page
    assert bmm("report", workdir / "model.zarr", "--out", tmp_path / "bare").code == 0
    assert not (tmp_path / "bare" / "confusion.png").exists()
    assert_no_broken_references(tmp_path / "bare" / "report.html")


def test_mistakes_exit_2_with_one_line(tmp_path: Path, workdir: Path, bmm) -> None:
    synth(tmp_path / "wide.zarr", n_samples=50, n_features=20, n_components=2)
    cases = [
        (
            ("fit", workdir / "train.zarr", "--k", "0", "--out", tmp_path / "m.zarr"),
            "Invalid value for '--k'",
        ),
        (
            ("fit", workdir / "train.zarr", "--k", "3001", "--out", tmp_path / "m.zarr"),
            "larger than the number of samples",
        ),
        (
            (
                "fit",
                workdir / "train.zarr",
                "--k",
                "2",
                "--tol",
                "-1",
                "--out",
                tmp_path / "m.zarr",
            ),
            "Invalid value for '--tol'",
        ),
        (
            ("fit", tmp_path / "missing.zarr", "--k", "2", "--out", tmp_path / "m.zarr"),
            "missing.zarr: no such file",
        ),
        (
            ("fit", workdir / "train.zarr", "--k", "2", "--out", workdir / "model.zarr"),
            "exists already",
        ),
        (
            ("evaluate", workdir / "model.zarr", tmp_path / "wide.zarr"),
            "X has 20 features, but the model",
        ),
        (
            (
                "predict",
                tmp_path / "wide.zarr",
                workdir / "train.zarr",
                "--out",
                tmp_path / "p.zarr",
            ),
            "not a bmm-dask model",
        ),
        (
            ("report", tmp_path / "nothing.zarr", "--out", tmp_path / "r"),
            "nothing.zarr: no such file",
        ),
    ]
    before = sorted(tmp_path.iterdir())
    for args, needle in cases:
        assert_one_line_error(bmm(*args), needle)
    assert sorted(tmp_path.iterdir()) == before


def test_demo_does_the_whole_job(tmp_path: Path, bmm) -> None:
    result = bmm("demo", "--out", tmp_path / "demo", "--dashboard-address", "127.0.0.1:0")
    assert result.code == 0, result.err
    folder = tmp_path / "demo"
    # where it writes, before it writes it (it used to say so only at its end)
    assert result.err.splitlines()[0] == f"the demo writes everything into {folder} (--out)"
    for name in (
        "mnist.zarr/train",
        "mnist.zarr/test",
        "model.zarr",
        "metrics-train.json",
        "metrics-test.json",
        "report/report.html",
    ):
        assert (folder / name).exists(), name
    test = json.loads((folder / "metrics-test.json").read_text())
    assert test["n_samples"] == 10_000 and test["accuracy"] >= 0.55
    assert test["log_likelihood_per_sample"] > -166
    assert_no_broken_references(folder / "report" / "report.html")
    assert "report.html" in result.out
    # Paths shown to the user are the final ones, never the temporary folder the demo wrote in.
    for name in (
        "report/report.html",
        "report/metrics.json",
        "metrics-train.json",
        "metrics-test.json",
    ):
        text = (folder / name).read_text()
        assert ".tmp" not in text, name
    assert str(folder / "mnist.zarr" / "test") in (folder / "report/report.html").read_text()
    assert test["data"] == str(folder / "mnist.zarr" / "test")
