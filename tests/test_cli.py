"""The command line as a user meets it: files written, and bad input ending with exit 2 and one line."""

from __future__ import annotations

import gzip
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from bmm_dask import BernoulliMixture, open_dataset
from bmm_dask.datasets import Binarization, ingest, synth, write_idx
from tests._helpers import LOCAL_CLUSTER, Result, assert_one_line_error, guard, random_images


@pytest.fixture
def idx_pair(tmp_path: Path) -> tuple[Path, Path]:
    X, y = random_images(100, 4, 5), np.arange(100, dtype=np.uint8) % 10
    return write_idx(tmp_path / "x-idx3-ubyte.gz", X), write_idx(tmp_path / "y-idx1-ubyte", y)


def test_ingest_and_info(tmp_path: Path, idx_pair: tuple[Path, Path], bmm) -> None:
    x, y = idx_pair
    result = bmm("ingest", x, "--labels", y, "--out", tmp_path / "d.zarr", "--chunk-rows", "30")
    assert result.code == 0, result.err
    assert "d.zarr" in result.out
    data = open_dataset(tmp_path / "d.zarr")
    assert data.bits.chunks[0] == (30, 30, 30, 10)
    np.testing.assert_array_equal(
        data.bits.compute(), np.packbits(random_images(100, 4, 5).reshape(100, 20) >= 128, axis=1)
    )

    result = bmm("info", tmp_path / "d.zarr")
    assert result.code == 0, result.err
    for needle in (
        "samples        100",
        "features       20 (images 4 x 5)",
        "threshold 128",
        "chunks         4 of up to 30 rows",
    ):
        assert needle in result.out
    info = json.loads(bmm("info", "--json", tmp_path / "d.zarr").out)
    assert info["n_samples"] == 100 and info["labels"] is True and info["bytes_stored"] > 0


def test_binarization_flags(tmp_path: Path, idx_pair: tuple[Path, Path], bmm) -> None:
    x, _ = idx_pair
    assert bmm("ingest", x, "--out", tmp_path / "t.zarr", "--threshold", "200").code == 0
    assert open_dataset(tmp_path / "t.zarr").binarization == {
        "method": "threshold",
        "threshold": 200,
    }
    assert (
        bmm(
            "ingest", x, "--out", tmp_path / "s.zarr", "--binarize", "stochastic", "--seed", "5"
        ).code
        == 0
    )
    assert open_dataset(tmp_path / "s.zarr").binarization == {"method": "stochastic", "seed": 5}
    result = bmm(
        "ingest", x, "--out", tmp_path / "u.zarr", "--binarize", "stochastic", "--threshold", "3"
    )
    assert_one_line_error(result, "--threshold goes with --binarize threshold")


def test_ingest_mnist_and_info_of_the_group(tmp_path: Path, bmm) -> None:
    assert bmm("ingest", "mnist", "--out", tmp_path / "m.zarr").code == 0
    result = bmm("info", tmp_path / "m.zarr")
    assert result.code == 0
    assert "m.zarr/test: dataset" in result.out and "m.zarr/train: dataset" in result.out
    assert "samples        60,000" in result.out


def test_synth_command(tmp_path: Path, bmm) -> None:
    result = bmm(
        "synth",
        "--n",
        "1000",
        "--d",
        "16",
        "--k",
        "3",
        "--seed",
        "2",
        "--out",
        tmp_path / "s.zarr",
        "--image-shape",
        "4x4",
    )
    assert result.code == 0, result.err
    data = open_dataset(tmp_path / "s.zarr")
    assert (data.n_samples, data.n_features, data.image_shape) == (1000, 16, (4, 4))
    assert_one_line_error(
        bmm("synth", "--n", "10", "--d", "16", "--k", "0", "--out", tmp_path / "z.zarr"), "--k"
    )


@pytest.mark.slow
def test_synth_density_draws_sparse_rows_and_fit_keeps_every_component(tmp_path: Path, bmm) -> None:
    """synth --density: rows of about the asked share of ones, each component raising a few
    features; the default fit keeps all 8 alive."""
    from bmm_dask._estep import as_packed

    args = ("--n", "20000", "--d", "2000", "--k", "8", "--density", "0.002", "--seed", "3")
    result = bmm("synth", *args, "--out", tmp_path / "s.zarr")
    assert result.code == 0, result.err
    data = open_dataset(tmp_path / "s.zarr")
    X = np.unpackbits(np.asarray(as_packed(data).bits), axis=1, count=2000)
    assert 0.0015 < X.mean() < 0.0025
    means = data.read_array("true_means")
    assert (means > 0.05).sum(axis=1).min() >= 5  # each component raises some features
    result = bmm(
        "fit", tmp_path / "s.zarr", "--k", "8", "--out", tmp_path / "m.zarr", *LOCAL_CLUSTER
    )
    assert result.code == 0, result.err
    assert np.all(BernoulliMixture.load(tmp_path / "m.zarr").weights_ > 0.01)
    for bad in ("0", "0.6"):
        assert_one_line_error(
            bmm("synth", *args[:6], "--density", bad, "--out", tmp_path / "z.zarr"), "--density"
        )
    assert not (tmp_path / "z.zarr").exists()


# --------------------------------------------------------------------------- bad input


def truncated(tmp_path: Path) -> Path:
    path = write_idx(tmp_path / "bad-idx3-ubyte", random_images())
    path.write_bytes(path.read_bytes()[:-7])
    return path


def truncated_gzip(tmp_path: Path) -> Path:
    path = write_idx(tmp_path / "bad-idx3-ubyte.gz", random_images())
    path.write_bytes(path.read_bytes()[:-40])
    return path


def gzip_of_wrong_length(tmp_path: Path) -> Path:
    raw = gzip.decompress(write_idx(tmp_path / "good.gz", random_images()).read_bytes())
    (tmp_path / "good.gz").unlink()
    path = tmp_path / "bad-idx3-ubyte.gz"
    path.write_bytes(gzip.compress(raw[:-20]))
    return path


def wrong_magic(tmp_path: Path) -> Path:
    path = write_idx(tmp_path / "bad-idx3-ubyte", random_images())
    path.write_bytes(b"\x01\x02" + path.read_bytes()[2:])
    return path


def wrong_dimensions(tmp_path: Path) -> Path:
    path = write_idx(tmp_path / "bad-idx3-ubyte", random_images())
    data = bytearray(path.read_bytes())
    data[4:8] = (90).to_bytes(4, "big")  # the header says 90 images, the file holds 100
    path.write_bytes(bytes(data))
    return path


def zero_dimension(tmp_path: Path) -> Path:
    path = tmp_path / "bad-idx3-ubyte"
    path.write_bytes(b"\x00\x00\x08\x03" + (0).to_bytes(4, "big") + (28).to_bytes(4, "big") * 2)
    return path


def npy_out_of_range(tmp_path: Path) -> Path:
    X = random_images().astype(np.int16)
    X[57, 3, 1] = 300
    np.save(tmp_path / "bad.npy", X)
    return tmp_path / "bad.npy"


def npy_negative(tmp_path: Path) -> Path:
    X = random_images().astype(np.float64)
    X[3, 0, 0] = -1
    np.save(tmp_path / "bad.npy", X)
    return tmp_path / "bad.npy"


def npy_nan(tmp_path: Path) -> Path:
    X = random_images().astype(np.float32)
    X[42, 2, 2] = np.nan
    np.save(tmp_path / "bad.npy", X)
    return tmp_path / "bad.npy"


def npy_strings(tmp_path: Path) -> Path:
    np.save(tmp_path / "bad.npy", np.array([["a", "b"]]))
    return tmp_path / "bad.npy"


def not_a_file_format(tmp_path: Path) -> Path:
    (tmp_path / "bad.txt").write_text("1,2,3\n4,5,6\n")  # CSV is read only as .csv
    return tmp_path / "bad.txt"


@pytest.mark.parametrize(
    ("make", "needle"),
    [
        (truncated, "truncated"),
        (truncated_gzip, "truncated: the gzip stream is cut short after"),
        (
            gzip_of_wrong_length,
            "truncated: the header declares 100 x 4 x 5 uint8 (2016 bytes) but the gzip stream holds 1996 bytes",
        ),
        (wrong_magic, "wrong magic number 01 02"),
        (wrong_dimensions, "wrong dimensions"),
        (zero_dimension, "wrong dimensions 0 x 28 x 28"),
        (npy_out_of_range, "value 300 in row 57 is outside 0..255"),
        (npy_negative, "value -1.0 in row 3 is outside 0..255"),
        (npy_nan, "NaN in row 42"),
        (npy_strings, "cannot be pixels or bits"),
        (not_a_file_format, "wrong magic number"),
    ],
)
def test_bad_images_exit_2_with_one_line_and_nothing_written(
    tmp_path: Path, bmm, make, needle: str
) -> None:
    bad = make(tmp_path)
    before = sorted(tmp_path.iterdir())
    result = bmm("ingest", bad, "--out", tmp_path / "d.zarr")
    assert_one_line_error(result, str(bad), needle)
    assert sorted(tmp_path.iterdir()) == before


def test_bad_labels(tmp_path: Path, idx_pair: tuple[Path, Path], bmm) -> None:
    x, _ = idx_pair
    cases = {
        "short-idx1-ubyte": (
            np.arange(99, dtype=np.uint8),
            "holds 99 labels but the data holds 100 rows",
        ),
        "float.npy": (np.zeros(100, dtype=np.float32), "labels must be integers"),
        "twod.npy": (np.zeros((100, 2), dtype=np.int64), "a label file has one dimension"),
    }
    for name, (labels, needle) in cases.items():
        path = tmp_path / name
        if name.endswith(".npy"):
            np.save(path, labels)
        else:
            write_idx(path, labels)
        before = sorted(tmp_path.iterdir())
        assert_one_line_error(
            bmm("ingest", x, "--labels", path, "--out", tmp_path / "d.zarr"), str(path), needle
        )
        assert sorted(tmp_path.iterdir()) == before
    assert_one_line_error(
        bmm("ingest", x, "--labels", tmp_path / "nope", "--out", tmp_path / "d.zarr"),
        "nope: no such file",
    )


def test_existing_output_is_refused_unless_overwrite(
    tmp_path: Path, idx_pair: tuple[Path, Path], bmm
) -> None:
    x, _ = idx_pair
    assert bmm("ingest", x, "--out", tmp_path / "d.zarr").code == 0
    stamp = (tmp_path / "d.zarr" / "zarr.json").read_bytes()
    assert_one_line_error(
        bmm("ingest", x, "--out", tmp_path / "d.zarr", "--threshold", "9"),
        "d.zarr: exists already; pass --overwrite",
    )
    assert (tmp_path / "d.zarr" / "zarr.json").read_bytes() == stamp
    assert (
        bmm("ingest", x, "--out", tmp_path / "d.zarr", "--threshold", "9", "--overwrite").code == 0
    )
    assert open_dataset(tmp_path / "d.zarr").binarization["threshold"] == 9


def test_unwritable_output(tmp_path: Path, idx_pair: tuple[Path, Path], bmm) -> None:
    x, _ = idx_pair
    (tmp_path / "a-file").write_text("")
    assert_one_line_error(
        bmm("ingest", x, "--out", tmp_path / "a-file" / "d.zarr"),
        "d.zarr: cannot write there",
        "is not a folder",
    )
    assert_one_line_error(
        bmm("ingest", x, "--out", tmp_path / "a-file" / "more" / "d.zarr"),
        "cannot write there",
        "is not a folder",
    )
    if os.geteuid() != 0:  # root writes anywhere
        locked = tmp_path / "locked"
        locked.mkdir(mode=0o500)
        assert_one_line_error(bmm("ingest", x, "--out", locked / "d.zarr"), "not writable")


def test_missing_inputs_and_bad_flags(tmp_path: Path, bmm) -> None:
    assert_one_line_error(
        bmm("ingest", tmp_path / "none.gz", "--out", tmp_path / "d.zarr"), "none.gz: no such file"
    )
    assert_one_line_error(bmm("ingest", tmp_path, "--out", tmp_path / "d.zarr"), "is a folder")
    assert_one_line_error(
        bmm("ingest", "x", "--out", tmp_path / "d.zarr", "--chunk-rows", "0"), "--chunk-rows"
    )
    assert_one_line_error(bmm("ingest", "x"), "Missing option '--out'")
    assert_one_line_error(bmm("info", tmp_path / "none.zarr"), "none.zarr: no such file")
    assert_one_line_error(
        bmm("ingest", "x", "--out", "y", "--threshold", "0"), "Invalid value for '--threshold'"
    )
    assert list(tmp_path.iterdir()) == []


def test_an_interrupted_ingest_keeps_the_old_output(tmp_path: Path) -> None:
    x = write_idx(tmp_path / "x", random_images(1000))
    ingest(x, tmp_path / "d.zarr", chunk_rows=100)
    old = open_dataset(tmp_path / "d.zarr").bits.compute()
    calls = []

    def interrupt(done: int, total: int) -> None:
        calls.append(done)
        if len(calls) == 3:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        ingest(
            x,
            tmp_path / "d.zarr",
            chunk_rows=100,
            overwrite=True,
            progress=interrupt,
            binarization=Binarization("threshold", 3),
        )
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d.zarr", "x"]
    np.testing.assert_array_equal(open_dataset(tmp_path / "d.zarr").bits.compute(), old)


@pytest.mark.slow
@pytest.mark.parametrize("command", [["bmm-dask"], [sys.executable, "-m", "bmm_dask"]])
def test_entry_points(tmp_path: Path, command: list[str]) -> None:
    if command[0] == "bmm-dask":
        found = shutil.which(
            "bmm-dask",
            path=os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")]),
        )
        if found is None:
            pytest.fail("the bmm-dask console script is not installed beside this Python")
        command = [found]
    bad = wrong_magic(tmp_path)
    run = subprocess.run(
        [*command, "ingest", str(bad), "--out", str(tmp_path / "d.zarr")],
        capture_output=True,
        text=True,
        timeout=guard(60),
    )
    assert_one_line_error(Result.of(run), "wrong magic number")
    run = subprocess.run([*command, "--version"], capture_output=True, text=True, timeout=guard(60))
    assert run.returncode == 0 and "bmm-dask" in run.stdout


def test_the_fit_summary_says_what_ran_in_order() -> None:
    from types import SimpleNamespace

    from bmm_dask.cli.fit import fit_summary

    history = [{"iteration": i} for i in range(3)] + [{"pass": p} for p in (1, 2)]
    history += [{"iteration": i} for i in range(4)]
    model = SimpleNamespace(history_=history, batch_size_=2_000, converged_=True)
    assert fit_summary(model) == (
        "3 iterations then 2 stepwise passes (2,000 rows per mini-batch) then 4 iterations, "
        "converged"
    )
    model = SimpleNamespace(history_=history[3:5], batch_size_=500, converged_=False)
    assert fit_summary(model) == "2 stepwise passes (500 rows per mini-batch)"
    model = SimpleNamespace(history_=history[:1], batch_size_=None, converged_=False)
    assert fit_summary(model) == "1 iteration, not converged"


@pytest.mark.slow
def test_the_warning_of_a_fit_not_converged_names_the_flags(tmp_path: Path, bmm) -> None:
    data = synth(tmp_path / "d.zarr", n_samples=200, n_features=8, n_components=2, seed=0)
    result = bmm(
        "fit", data, "--k", "2", "--max-iter", "1", "--out", tmp_path / "m.zarr", *LOCAL_CLUSTER
    )
    assert result.code == 0, result.err
    warning = next(line for line in result.err.splitlines() if line.startswith("warning: "))
    assert warning.startswith("warning: EM did not converge in 1 iteration (")
    assert "try a larger --max-iter, a larger --tol, or more smoothing (--alpha)" in warning
    assert "max_iter" not in warning
