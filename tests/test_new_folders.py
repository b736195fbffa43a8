"""Outputs in folders that do not exist yet are written there, the folders made as zarr makes
them; a command that fails leaves no folder behind."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bmm_dask import BernoulliMixture, open_dataset
from bmm_dask.datasets import synth, write_idx
from tests._helpers import LOCAL_CLUSTER, assert_one_line_error, random_images


@pytest.fixture(scope="module")
def fitted(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    folder = tmp_path_factory.mktemp("new-folders")
    data = synth(folder / "d.zarr", n_samples=600, n_features=16, n_components=2, seed=0)
    model = BernoulliMixture(2, max_iter=5, random_state=0).fit(open_dataset(data))
    model.save(folder / "m.zarr")
    return data, folder / "m.zarr"


def test_outputs_of_every_command_go_into_new_folders(
    tmp_path: Path, fitted: tuple[Path, Path], bmm
) -> None:
    data, model = fitted
    write_idx(tmp_path / "x.idx", random_images(50, 4, 4))
    runs = {
        "ingest": (("ingest", tmp_path / "x.idx", "--out"), "a/b/d.zarr"),
        "predict": (("predict", model, data, "--out"), "p/q/pred.zarr"),
        "evaluate": (("evaluate", model, data, "--json"), "out/metrics.json"),
        "report": (("report", model, "--data", data, "--out"), "r/s/report"),
    }
    for command, (args, out) in runs.items():
        result = bmm(*args, tmp_path / out)
        assert result.code == 0, (command, result.err)
        assert (tmp_path / out).exists(), command
    assert json.loads((tmp_path / "out/metrics.json").read_text())["n_samples"] == 600
    assert open_dataset(tmp_path / "a/b/d.zarr").n_samples == 50
    # Nothing else was left beside the outputs: no lock, no temporary sibling.
    for out in ("a/b/d.zarr", "p/q/pred.zarr", "out/metrics.json", "r/s/report"):
        assert [p.name for p in (tmp_path / out).parent.iterdir()] == [Path(out).name]


def test_a_failed_command_leaves_no_new_folder(tmp_path: Path, bmm) -> None:
    (tmp_path / "bad.npy").write_bytes(b"not an array")
    assert_one_line_error(bmm("ingest", tmp_path / "bad.npy", "--out", tmp_path / "x/y/d.zarr"))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.npy"]


def test_a_folder_that_cannot_be_made_is_one_line(tmp_path: Path, bmm) -> None:
    (tmp_path / "a-file").write_text("")
    write_idx(tmp_path / "x.idx", random_images(10, 2, 2))
    assert_one_line_error(
        bmm("ingest", tmp_path / "x.idx", "--out", tmp_path / "a-file/x/d.zarr"),
        "a-file is not a folder",
    )


@pytest.mark.slow
def test_fit_writes_its_model_and_report_into_new_folders(
    tmp_path: Path, fitted: tuple[Path, Path], bmm
) -> None:
    data, _ = fitted
    out = tmp_path / "results/run1/model.zarr"
    report = tmp_path / "reports/fit.html"
    result = bmm(
        "fit", data, "--k", "2", "--max-iter", "3", "--out", out,
        "--performance-report", report, *LOCAL_CLUSTER,
    )  # fmt: skip
    assert result.code == 0, result.err
    assert BernoulliMixture.load(out).n_iter_ <= 3
    assert report.stat().st_size > 0
