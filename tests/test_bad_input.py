"""Bad inputs and situations across every command: exit status 2, one line that names the file or
flag, no traceback, and nothing written or changed.

Each case is a command line run in one shared workspace (the current folder during the case);
the whole workspace is compared before and after, so a case that destroys or leaves anything
fails. The README's reliability section counts these cases.
"""

from __future__ import annotations

import gzip
import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from bmm_dask import BernoulliMixture, open_dataset, select_n_components
from bmm_dask.datasets import Binarization, ingest, synth, write_idx
from tests._helpers import LOCAL_CLUSTER, assert_one_line_error, tree_snapshot


def _set_format_version(store: Path, version: int) -> None:
    meta = store / "zarr.json"
    record = json.loads(meta.read_text())
    record["attributes"]["format"]["version"] = version
    meta.write_text(json.dumps(record))


@pytest.fixture(scope="module")
def workspace(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Inputs of every kind, good and bad, made once; the cases must leave them as they are."""
    ws = tmp_path_factory.mktemp("workspace")
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, size=(100, 4, 5), dtype=np.uint8)
    write_idx(ws / "images-idx3-ubyte", pixels)
    write_idx(ws / "labels-idx1-ubyte", rng.integers(0, 10, size=100, dtype=np.uint8))
    write_idx(ws / "short-labels-idx1-ubyte", rng.integers(0, 10, size=99, dtype=np.uint8))
    np.save(ws / "float-labels.npy", np.zeros(100, dtype=np.float32))
    np.save(ws / "pixels.npy", pixels.reshape(100, 20))
    (ws / "raw").mkdir()
    np.save(ws / "raw" / "pixels.npy", pixels.reshape(100, 20))
    (ws / "pixels.npy.gz").write_bytes(gzip.compress((ws / "pixels.npy").read_bytes()))
    np.save(ws / "flat.npy", pixels.reshape(-1)[:100])
    np.save(ws / "fractions.npy", rng.random((100, 20)).astype(np.float32))
    np.save(ws / "bits.npy", rng.integers(0, 2, size=(100, 20), dtype=np.int64))
    np.save(ws / "twos.npy", np.full((100, 20), 2, dtype=np.int64))
    too_big = pixels.reshape(100, 20).astype(np.int64)
    too_big[57, 3] = 300
    np.save(ws / "too-big.npy", too_big)
    nan = pixels.reshape(100, 20).astype(np.float64)
    nan[42, 0] = np.nan
    np.save(ws / "nan.npy", nan)
    idx = (ws / "images-idx3-ubyte").read_bytes()
    (ws / "truncated-idx3-ubyte").write_bytes(idx[:-7])
    (ws / "magic-idx3-ubyte").write_bytes(b"\x01\x02" + idx[2:])
    (ws / "cut.gz").write_bytes(gzip.compress(idx)[:-40])
    (ws / "notes.txt").write_text("not data\n")
    (ws / "fake.zip").write_text("not a zip\n")
    (ws / "a-file").write_text("")
    (ws / "empty").mkdir()
    (ws / "wrong-mnist").mkdir()
    (ws / "wrong-mnist" / "train-images-idx3-ubyte").write_bytes(idx)
    (ws / "scheduler.json").write_text("{not json")
    (ws / "metrics.json").write_text("{}\n")
    os.symlink("pixels.npy", ws / "link.npy")

    synth(ws / "data.zarr", n_samples=300, n_features=16, n_components=3, seed=1)
    synth(ws / "wide.zarr", n_samples=50, n_features=20, n_components=2, seed=1)
    synth(ws / "v99.zarr", n_samples=50, n_features=16, n_components=2, seed=1)
    _set_format_version(ws / "v99.zarr", 99)
    (ws / "group.zarr").mkdir()
    (ws / "group.zarr" / "zarr.json").write_text(
        json.dumps({"zarr_format": 3, "node_type": "group", "attributes": {}})
    )
    (ws / "proj").mkdir()
    model = BernoulliMixture(3, random_state=0, max_iter=5).fit(open_dataset(ws / "data.zarr"))
    model.save(ws / "proj" / "model.zarr")
    model.save(ws / "v99-model.zarr")
    _set_format_version(ws / "v99-model.zarr", 99)
    np.save(ws / "zeros.npy", np.zeros((200, 16), dtype=np.uint8))
    ingest(ws / "zeros.npy", ws / "zeros.zarr", binarization=Binarization("none"))
    twice = np.zeros((200, 16), dtype=np.uint8)
    twice[::2] = 1
    np.save(ws / "two-rows.npy", twice)
    ingest(ws / "two-rows.npy", ws / "two-rows.zarr", binarization=Binarization("none"))
    np.save(ws / "sixteen.npy", rng.integers(0, 2, size=(50, 16), dtype=np.uint8))
    ingest(ws / "sixteen.npy", ws / "unlabelled.zarr", binarization=Binarization("none"))

    # stores edited by hand: attributes of the wrong type, metadata emptied or garbled
    def edit(src: str, name: str, change, file: str = "zarr.json") -> None:
        shutil.copytree(ws / src, ws / name)
        meta = ws / name / file
        record = json.loads(meta.read_text())
        change(record["attributes"])
        meta.write_text(json.dumps(record))

    edit("data.zarr", "format-str.zarr", lambda a: a.update(format="bmm_dask.dataset"))
    edit("data.zarr", "shape-str.zarr", lambda a: a.update(image_shape="4x4"))
    edit("proj/model.zarr", "m-format.zarr", lambda a: a.update(format=3))
    edit("proj/model.zarr", "m-settings.zarr", lambda a: a.update(settings=[1, 2]))
    edit("proj/model.zarr", "m-history.zarr", lambda a: a.update(history=[1, 2]))
    edit("proj/model.zarr", "m-data.zarr", lambda a: a.update(data="x"))
    edit("proj/model.zarr", "m-shape.zarr", lambda a: a.update(data={"image_shape": "28x28"}))
    for array, text in (("labels", ""), ("bits", "{not json")):
        shutil.copytree(ws / "data.zarr", ws / f"{array}-meta.zarr")
        (ws / f"{array}-meta.zarr" / array / "zarr.json").write_text(text)
    # checkpoints edited by hand: state not an object, a field missing, out of range, not finite
    fitted = ws / "ckpt.zarr"
    BernoulliMixture(3, max_iter=2, tol=0, random_state=0).fit(
        open_dataset(ws / "data.zarr"), checkpoint=fitted, checkpoint_every=1
    )

    def state_edit(name: str, change) -> None:
        shutil.copytree(fitted, ws / name)
        npz = ws / name / "checkpoint.npz"
        arrays = dict(np.load(npz))
        state = json.loads(str(arrays["state"]))
        state = change(arrays, state)
        arrays["state"] = np.array(json.dumps(state))
        np.savez(npz, **arrays)

    state_edit("c-list.zarr", lambda a, s: [1, 2])
    state_edit("c-rng.zarr", lambda a, s: {k: v for k, v in s.items() if k != "rng_state"})
    state_edit("c-run.zarr", lambda a, s: {**s, "run": -1})
    state_edit("c-start.zarr", lambda a, s: {**s, "run": 99})
    state_edit("c-nan.zarr", lambda a, s: (a.update(means=a["means"] * np.nan), s)[1])
    state_edit("c-width.zarr", lambda a, s: (a.update(means=a["means"][:, :3]), s)[1])
    stepwise = {"algorithm": "stepwise", "passes": 2, "batch_size": 50, "random_state": 0}
    fitted = ws / "ckpt-stepwise.zarr"
    BernoulliMixture(3, **stepwise).fit(
        open_dataset(ws / "data.zarr"), checkpoint=fitted, checkpoint_every=4
    )

    def in_pass(change):
        return lambda a, s: (change(a, s["stepwise"]), s)[1]

    state_edit("s-position.zarr", in_pass(lambda a, w: w.update(position=99_999)))
    state_edit("s-step.zarr", in_pass(lambda a, w: w.update(step=-3)))
    state_edit(
        "s-shape.zarr", in_pass(lambda a, w: a.update(stepwise_resp_sum=a["stepwise_resp_sum"][:2]))
    )
    fitted_selection = ws / "picked"
    select_n_components(open_dataset(ws / "data.zarr"), [2, 3], max_iter=2, random_state=0).save(
        fitted_selection
    )
    shutil.copytree(fitted_selection, ws / "sel-str")
    record = json.loads((ws / "sel-str" / "selection.json").read_text())
    record["candidates"] = "x"
    (ws / "sel-str" / "selection.json").write_text(json.dumps(record))
    # stores that lost a part: a model's chunk, a dataset's labels' metadata, a prediction's chunk
    shutil.copytree(ws / "proj" / "model.zarr", ws / "m-chunk.zarr")
    shutil.rmtree(ws / "m-chunk.zarr" / "means" / "c")
    shutil.copytree(ws / "data.zarr", ws / "no-labels-meta.zarr")
    (ws / "no-labels-meta.zarr" / "labels" / "zarr.json").unlink()
    from bmm_dask.evaluation import write_predictions

    write_predictions(
        model, open_dataset(ws / "data.zarr"), ws / "pred.zarr", model_path="proj/model.zarr"
    )
    next((ws / "pred.zarr" / "labels" / "c").iterdir()).unlink()
    # checkpoints whose state file is empty, or cut short
    for name, cut in (("empty", 0), ("cut", 100)):
        store = ws / f"{name}-ckpt.zarr"
        BernoulliMixture(3, max_iter=2, tol=0, random_state=0).fit(
            open_dataset(ws / "data.zarr"), checkpoint=store, checkpoint_every=1
        )
        npz = store / "checkpoint.npz"
        npz.write_bytes(npz.read_bytes()[:cut])
    return ws


@dataclass(frozen=True)
class Case:
    """A command line (run in the workspace) and what its one line of error must name."""

    args: tuple[str, ...]
    needles: tuple[str, ...]


def case(*args: str, names: str | tuple[str, ...]) -> Case:
    return Case(args, (names,) if isinstance(names, str) else names)


#: A fit of the workspace's checkpoints' settings, to be resumed.
RESUMED = ("fit", "data.zarr", "--k", "3", "--max-iter", "2", "--tol", "0")

CASES: dict[str, Case] = {
    # fetch
    "fetch from a missing folder": case(
        "fetch", "mnist", "--from", "nowhere", names="nowhere: no such folder"
    ),
    "fetch from a folder without the files": case(
        "fetch", "mnist", "--from", "empty", names="empty: has no train-images-idx3-ubyte"
    ),
    "fetch from a folder of other files": case(
        "fetch", "mnist", "--from", "wrong-mnist", names="not the MNIST file"
    ),
    "fetch an unknown data set": case("fetch", "cifar", names="'cifar' is not"),
    "fetch into a folder under a file": case(
        "fetch",
        "mnist",
        "--dir",
        "a-file/mnist",
        "--from",
        "wrong-mnist",
        names=("a-file/mnist", "cannot create the folder"),
    ),
    # ingest: the source
    "ingest a missing file": case(
        "ingest", "none.gz", "--out", "d.zarr", names="none.gz: no such file"
    ),
    "ingest a folder": case("ingest", "empty", "--out", "d.zarr", names="empty: is a folder"),
    "ingest a file of another kind": case(
        "ingest", "notes.txt", "--out", "d.zarr", names=("notes.txt", "wrong magic number")
    ),
    "ingest IDX with a wrong magic number": case(
        "ingest", "magic-idx3-ubyte", "--out", "d.zarr", names="wrong magic number 01 02"
    ),
    "ingest truncated IDX": case(
        "ingest",
        "truncated-idx3-ubyte",
        "--out",
        "d.zarr",
        names=("truncated-idx3-ubyte", "truncated"),
    ),
    "ingest a cut-short gzip": case(
        "ingest", "cut.gz", "--out", "d.zarr", names=("cut.gz", "the gzip stream is cut short")
    ),
    "ingest a gzipped .npy": case(
        "ingest", "pixels.npy.gz", "--out", "d.zarr", names=("pixels.npy.gz", "gunzip it first")
    ),
    "ingest a 1-dimensional .npy": case(
        "ingest", "flat.npy", "--out", "d.zarr", names=("flat.npy", "1-dimensional")
    ),
    "ingest fractions with threshold 128": case(
        "ingest", "fractions.npy", "--out", "d.zarr", names=("fractions.npy", "--threshold 0.5")
    ),
    "ingest bits with threshold 128": case(
        "ingest", "bits.npy", "--out", "d.zarr", names=("bits.npy", "--binarize none")
    ),
    "ingest values over 255": case(
        "ingest", "too-big.npy", "--out", "d.zarr", names="value 300 in row 57 is outside 0..255"
    ),
    "ingest NaN": case("ingest", "nan.npy", "--out", "d.zarr", names=("nan.npy", "NaN in row 42")),
    "ingest non-bits as bits": case(
        "ingest",
        "twos.npy",
        "--binarize",
        "none",
        "--out",
        "d.zarr",
        names=("twos.npy", "needs values 0 and 1"),
    ),
    "ingest too few labels": case(
        "ingest",
        "images-idx3-ubyte",
        "--labels",
        "short-labels-idx1-ubyte",
        "--out",
        "d.zarr",
        names=("short-labels-idx1-ubyte", "holds 99 labels"),
    ),
    "ingest float labels": case(
        "ingest",
        "images-idx3-ubyte",
        "--labels",
        "float-labels.npy",
        "--out",
        "d.zarr",
        names=("float-labels.npy", "labels must be integers"),
    ),
    "ingest missing labels": case(
        "ingest",
        "images-idx3-ubyte",
        "--labels",
        "none-idx1",
        "--out",
        "d.zarr",
        names="none-idx1: no such file",
    ),
    "ingest labels with mnist": case(
        "ingest", "mnist", "--labels", "labels-idx1-ubyte", "--out", "d.zarr", names="--labels"
    ),
    "ingest mnist at another threshold without the files": case(
        "ingest", "mnist", "--threshold", "100", "--out", "d.zarr", names="bmm-dask fetch mnist"
    ),
    # ingest: the output and the flags
    "ingest over an existing output": case(
        "ingest", "pixels.npy", "--out", "data.zarr", names="data.zarr: exists already"
    ),
    "ingest over its own source": case(
        "ingest",
        "pixels.npy",
        "--out",
        "pixels.npy",
        "--overwrite",
        names="pixels.npy: is an input",
    ),
    "ingest over a link to its source": case(
        "ingest", "pixels.npy", "--out", "link.npy", "--overwrite", names="link.npy: is an input"
    ),
    "ingest over its labels": case(
        "ingest",
        "images-idx3-ubyte",
        "--labels",
        "labels-idx1-ubyte",
        "--out",
        "labels-idx1-ubyte",
        "--overwrite",
        names="labels-idx1-ubyte: is an input",
    ),
    "ingest over the folder that holds the source": case(
        "ingest", "raw/pixels.npy", "--out", "raw", "--overwrite", names="raw: holds raw/pixels.npy"
    ),
    "ingest over the folder above the current one": case(
        "ingest", "pixels.npy", "--out", "..", "--overwrite", names="current folder or holds it"
    ),
    "ingest over the current folder": case(
        "ingest", "pixels.npy", "--out", ".", "--overwrite", names=".: is the current folder"
    ),
    "ingest into a folder under a file": case(
        "ingest", "pixels.npy", "--out", "a-file/d.zarr", names=("a-file/d.zarr", "is not a folder")
    ),
    "ingest to a URL": case(
        "ingest", "pixels.npy", "--out", "http://127.0.0.1:9/d.zarr", names="not a URL"
    ),
    "ingest with threshold 0": case(
        "ingest", "pixels.npy", "--threshold", "0", "--out", "d.zarr", names="'--threshold'"
    ),
    "ingest with threshold 300": case(
        "ingest", "pixels.npy", "--threshold", "300", "--out", "d.zarr", names="'--threshold'"
    ),
    "ingest with a negative seed": case(
        "ingest", "pixels.npy", "--seed", "-1", "--out", "d.zarr", names="'--seed'"
    ),
    "ingest with a seed and a threshold": case(
        "ingest",
        "pixels.npy",
        "--seed",
        "1",
        "--binarize",
        "threshold",
        "--out",
        "d.zarr",
        names="--seed goes with --binarize stochastic",
    ),
    "ingest with zero rows per chunk": case(
        "ingest", "pixels.npy", "--chunk-rows", "0", "--out", "d.zarr", names="'--chunk-rows'"
    ),
    "ingest without --out": case("ingest", "pixels.npy", names="Missing option '--out'"),
    # synth
    "synth no rows": case(
        "synth", "--n", "0", "--d", "4", "--k", "2", "--out", "s.zarr", names="'--n'"
    ),
    "synth no features": case(
        "synth", "--n", "9", "--d", "0", "--k", "2", "--out", "s.zarr", names="'--d'"
    ),
    "synth no components": case(
        "synth", "--n", "9", "--d", "4", "--k", "0", "--out", "s.zarr", names="'--k'"
    ),
    "synth a negative seed": case(
        "synth",
        "--n",
        "9",
        "--d",
        "4",
        "--k",
        "2",
        "--seed",
        "-1",
        "--out",
        "s.zarr",
        names="'--seed'",
    ),
    "synth more than memory holds": case(
        "synth",
        "--n",
        "10",
        "--d",
        "1000000000",
        "--k",
        "3",
        "--out",
        "s.zarr",
        names=("--d 1,000,000,000", "of memory"),
    ),
    "synth an image shape that does not fit": case(
        "synth",
        "--n",
        "9",
        "--d",
        "16",
        "--k",
        "2",
        "--image-shape",
        "3x3",
        "--out",
        "s.zarr",
        names="image shape (3, 3) does not hold 16 features",
    ),
    "synth a malformed image shape": case(
        "synth",
        "--n",
        "9",
        "--d",
        "16",
        "--k",
        "2",
        "--image-shape",
        "four",
        "--out",
        "s.zarr",
        names="'--image-shape'",
    ),
    "synth over an existing output": case(
        "synth",
        "--n",
        "9",
        "--d",
        "16",
        "--k",
        "2",
        "--out",
        "data.zarr",
        names="data.zarr: exists already",
    ),
    "synth like a dataset, not a model": case(
        "synth",
        "--n",
        "9",
        "--like",
        "wide.zarr",
        "--out",
        "s.zarr",
        names=("wide.zarr", "not a bmm-dask model"),
    ),
    "synth over the model it is like": case(
        "synth",
        "--n",
        "9",
        "--like",
        "proj/model.zarr",
        "--out",
        "proj/model.zarr",
        "--overwrite",
        names="proj/model.zarr: is an input",
    ),
    # info
    "info of nothing": case("info", "none.zarr", names="none.zarr: no such file"),
    "info of an empty folder": case("info", "empty", names=("empty", "not a Zarr group")),
    "info of a zip that is not one": case("info", "fake.zip", names=("fake.zip", "not a zip")),
    "info of a group that is not a dataset": case(
        "info", "group.zarr", names=("group.zarr", "a Zarr group, but none that bmm-dask writes")
    ),
    "info of a model from a newer version": case(
        "info", "v99-model.zarr", names=("v99-model.zarr", "newer than this bmm-dask")
    ),
    "info of a dataset from a newer version": case(
        "info", "v99.zarr", names=("v99.zarr", "newer than this bmm-dask")
    ),
    # fit: checked at the door, before any cluster starts
    "fit no components": case("fit", "data.zarr", "--k", "0", "--out", "m.zarr", names="'--k'"),
    "fit more components than rows": case(
        "fit",
        "data.zarr",
        "--k",
        "301",
        "--out",
        "m.zarr",
        names="larger than the number of samples",
    ),
    "fit more than memory holds": case(
        "fit", "data.zarr", "--k", "1000000000", "--out", "m.zarr", names="of memory"
    ),
    "fit a negative tolerance": case(
        "fit", "data.zarr", "--k", "2", "--tol", "-1", "--out", "m.zarr", names="'--tol'"
    ),
    "fit a tolerance that is not a number": case(
        "fit",
        "data.zarr",
        "--k",
        "2",
        "--tol",
        "nan",
        "--out",
        "m.zarr",
        names=("'--tol'", "not a finite number"),
    ),
    "fit infinite smoothing": case(
        "fit",
        "data.zarr",
        "--k",
        "2",
        "--alpha",
        "inf",
        "--out",
        "m.zarr",
        names=("'--alpha'", "not a finite number"),
    ),
    "fit a step exponent that is not a number": case(
        "fit",
        "data.zarr",
        "--k",
        "2",
        "--step-exponent",
        "nan",
        "--out",
        "m.zarr",
        names=("'--step-exponent'", "not a finite number"),
    ),
    "synth a density that is not a number": case(
        "synth",
        "--n",
        "10",
        "--d",
        "4",
        "--k",
        "2",
        "--density",
        "nan",
        "--out",
        "s.zarr",
        names=("'--density'", "not a finite number"),
    ),
    "fit no iterations": case(
        "fit", "data.zarr", "--k", "2", "--max-iter", "0", "--out", "m.zarr", names="'--max-iter'"
    ),
    "fit mini-batches of no rows": case(
        "fit",
        "data.zarr",
        "--k",
        "2",
        "--batch-size",
        "0",
        "--out",
        "m.zarr",
        names="'--batch-size'",
    ),
    "fit no stepwise passes": case(
        "fit", "data.zarr", "--k", "2", "--passes", "0", "--out", "m.zarr", names="'--passes'"
    ),
    "fit a step exponent of one half": case(
        "fit",
        "data.zarr",
        "--k",
        "2",
        "--step-exponent",
        "0.5",
        "--out",
        "m.zarr",
        names="'--step-exponent'",
    ),
    "fit no steps in flight": case(
        "fit",
        "data.zarr",
        "--k",
        "2",
        "--steps-in-flight",
        "0",
        "--out",
        "m.zarr",
        names="'--steps-in-flight'",
    ),
    "select an empty list of K": case(
        "select", "data.zarr", "--k", "", "--out", "sel", names=("--k", "5,10,20")
    ),
    "select a list of K that is not numbers": case(
        "select", "data.zarr", "--k", "5,,x", "--out", "sel", names="--k"
    ),
    "select a K of 0": case("select", "data.zarr", "--k", "0,4", "--out", "sel", names="--k"),
    "select a K named twice": case(
        "select", "data.zarr", "--k", "4,4", "--out", "sel", names=("--k", "twice")
    ),
    "select a K larger than the rows": case(
        "select", "data.zarr", "--k", "2,500", "--out", "sel", names=("data.zarr", "500")
    ),
    "select a validation fraction of 0": case(
        "select",
        "data.zarr",
        "--k",
        "2,3",
        "--validation-fraction",
        "0",
        "--out",
        "sel",
        names="--validation-fraction",
    ),
    "select a validation fraction of 1.5": case(
        "select",
        "data.zarr",
        "--k",
        "2,3",
        "--validation-fraction",
        "1.5",
        "--out",
        "sel",
        names="--validation-fraction",
    ),
    "select a validation set of another width": case(
        "select",
        "data.zarr",
        "--k",
        "2,3",
        "--validation",
        "wide.zarr",
        "--out",
        "sel",
        names=("wide.zarr", "20 features"),
    ),
    "fit an unknown algorithm": case(
        "fit",
        "data.zarr",
        "--k",
        "2",
        "--algorithm",
        "online",
        "--out",
        "m.zarr",
        names="'--algorithm'",
    ),
    "fit no starts": case(
        "fit", "data.zarr", "--k", "2", "--n-init", "0", "--out", "m.zarr", names="'--n-init'"
    ),
    "fit negative smoothing": case(
        "fit", "data.zarr", "--k", "2", "--alpha", "-1", "--out", "m.zarr", names="'--alpha'"
    ),
    "fit a negative seed": case(
        "fit", "data.zarr", "--k", "2", "--seed", "-1", "--out", "m.zarr", names="'--seed'"
    ),
    "fit an unknown start": case(
        "fit", "data.zarr", "--k", "2", "--init", "best", "--out", "m.zarr", names="'--init'"
    ),
    "fit missing data": case(
        "fit", "none.zarr", "--k", "2", "--out", "m.zarr", names="none.zarr: no such file"
    ),
    "fit a model as data": case(
        "fit",
        "proj/model.zarr",
        "--k",
        "2",
        "--out",
        "m.zarr",
        names="proj/model.zarr: a model, not a dataset",
    ),
    "fit a zip that is not one": case(
        "fit", "fake.zip", "--k", "2", "--out", "m.zarr", names="not a zip"
    ),
    "fit a dataset from a newer version": case(
        "fit", "v99.zarr", "--k", "2", "--out", "m.zarr", names="newer than this bmm-dask"
    ),
    "fit over its data": case(
        "fit",
        "data.zarr",
        "--k",
        "2",
        "--out",
        "data.zarr",
        "--overwrite",
        names="data.zarr: is an input",
    ),
    "fit into its data": case(
        "fit", "data.zarr", "--k", "2", "--out", "data.zarr/m.zarr", names="lies inside data.zarr"
    ),
    "fit over an existing model": case(
        "fit", "data.zarr", "--k", "2", "--out", "proj/model.zarr", names="exists already"
    ),
    "fit resume with nothing to resume": case(
        "fit",
        "data.zarr",
        "--k",
        "2",
        "--out",
        "m.zarr",
        "--resume",
        names="m.zarr: nothing to resume",
    ),
    "fit resume a finished model": case(
        "fit",
        "data.zarr",
        "--k",
        "2",
        "--out",
        "proj/model.zarr",
        "--resume",
        names="holds a finished model",
    ),
    "fit on two schedulers": case(
        "fit",
        "data.zarr",
        "--k",
        "2",
        "--out",
        "m.zarr",
        "--scheduler",
        "tcp://127.0.0.1:9",
        "--scheduler-file",
        "scheduler.json",
        names="not both",
    ),
    "fit a performance report over its data": case(
        "fit",
        "data.zarr",
        "--k",
        "2",
        "--out",
        "m.zarr",
        "--performance-report",
        "data.zarr/report.html",
        names="lies inside data.zarr",
    ),
    # sizes that cannot be done are refused up front (they hung in dask.tokenize, or ran for
    # 23 minutes and 7 GB, or ended in a MemoryError)
    "synth more rows than a store holds": case(
        "synth",
        "--n",
        "100000000000000",
        "--d",
        "8",
        "--k",
        "2",
        "--out",
        "x.zarr",
        names="100,000,000,000,000 rows of 8 features are more than a store can hold",
    ),
    **{
        f"synth {what} in chunks of one row": case(
            "synth",
            "--n",
            rows,
            "--d",
            "1",
            "--k",
            "2",
            "--chunk-rows",
            "1",
            "--out",
            "x.zarr",
            names=needles,
        )
        for what, rows, needles in (
            ("a million rows", "1000000", ("makes 1,000,000 chunks", "at least 50 rows")),
            ("ten billion rows", "10000000000", ("makes 10,000,000,000 chunks",)),
        )
    },
    # a checkpoint cut short (an empty one said "interrupted", exit 130, with no signal sent)
    **{
        f"resume from a checkpoint {how}": case(
            *RESUMED,
            "--out",
            f"{name}-ckpt.zarr",
            "--resume",
            names=(f"{name}-ckpt.zarr/checkpoint.npz: cannot read the checkpoint", "cut short"),
        )
        for name, how in (("empty", "emptied"), ("cut", "cut short"))
    },
    "info on a checkpoint cut short": case(
        "info", "cut-ckpt.zarr", names="cut-ckpt.zarr/checkpoint.npz: cannot read"
    ),
    # a lost part is told from zeros (a model's means read as fill values, labels dropped
    # silently, predictions of label 0)
    "predict with a model that lost a chunk": case(
        "predict",
        "m-chunk.zarr",
        "data.zarr",
        "--out",
        "p.zarr",
        names="m-chunk.zarr/means: 1 of its 1 chunks are missing",
    ),
    "evaluate on data whose labels' metadata is gone": case(
        "evaluate",
        "proj/model.zarr",
        "no-labels-meta.zarr",
        names="no-labels-meta.zarr/labels: missing from the store",
    ),
    "fit data whose labels' metadata is gone": case(
        "fit",
        "no-labels-meta.zarr",
        "--k",
        "2",
        "--out",
        "m.zarr",
        names="no-labels-meta.zarr/labels: missing",
    ),
    "info on predictions that lost a chunk": case(
        "info", "pred.zarr", names="pred.zarr/labels: 1 of its 1 chunks are missing"
    ),
    "fit a checkpoint as data": case(
        "fit",
        "ckpt.zarr",
        "--k",
        "2",
        "--out",
        "m.zarr",
        names="ckpt.zarr: the checkpoint of an unfinished fit",
    ),
    "fit with an alpha whose prior overflows": case(
        "fit",
        "data.zarr",
        "--k",
        "2",
        "--alpha",
        "1e308",
        "--out",
        "m.zarr",
        names="--alpha 1e+308 is too large",
    ),
    "report of a selection into its own folder": case(
        "report", "picked", "--out", "picked/rep", names="picked/rep: lies inside picked"
    ),
    **{
        f"resume from a stepwise checkpoint of {what}": case(
            "fit",
            "data.zarr",
            "--k",
            "3",
            "--algorithm",
            "stepwise",
            "--passes",
            "2",
            "--batch-size",
            "50",
            "--out",
            path,
            "--resume",
            names=(path, needle),
        )
        for path, what, needle in (
            ("s-position.zarr", "a position past its rows", "stepwise position 99999 is past"),
            ("s-step.zarr", "a negative step", "stepwise step should be"),
            ("s-shape.zarr", "statistics of 2 components", "stepwise_resp_sum has shape (2,)"),
        )
    },
    # hand-edited stores: one line naming the file and the field (they ended in tracebacks)
    **{
        f"info on {what}": case("info", path, names=(path, needle))
        for path, what, needle in (
            ("format-str.zarr", "a dataset whose format is a string", "attribute format"),
            ("shape-str.zarr", "a dataset whose image shape is a string", "image_shape"),
            ("labels-meta.zarr", "a dataset whose labels' metadata is empty", "labels: cannot"),
            ("bits-meta.zarr", "a dataset whose bits' metadata is garbled", "bits: cannot"),
            ("m-format.zarr", "a model whose format is a number", "attribute format"),
            ("m-settings.zarr", "a model whose settings are a list", "attribute settings"),
            ("m-history.zarr", "a model whose history is numbers", "attribute history"),
            ("m-data.zarr", "a model whose data is a string", "attribute data"),
            ("m-shape.zarr", "a model whose image shape is a string", "data.image_shape"),
            ("c-list.zarr", "a checkpoint whose state is a list", "should be an object"),
            ("c-rng.zarr", "a checkpoint without its generator's state", "rng_state"),
            ("c-run.zarr", "a checkpoint at start -1", "run should be"),
            ("c-nan.zarr", "a checkpoint of NaN means", "means holds values"),
            ("sel-str", "a selection whose candidates are a string", "candidates should be"),
        )
    },
    "predict with a model whose history is numbers": case(
        "predict", "m-history.zarr", "data.zarr", "--out", "p.zarr", names="attribute history"
    ),
    "report of a model whose image shape is a string": case(
        "report", "m-shape.zarr", "--out", "rep", names="data.image_shape"
    ),
    "report of a selection whose candidates are a string": case(
        "report", "sel-str", "--out", "rep", names="candidates should be"
    ),
    "predict on data whose labels' metadata is empty": case(
        "predict", "proj/model.zarr", "labels-meta.zarr", "--out", "p.zarr", names="labels: cannot"
    ),
    **{
        f"resume from {what}": case(
            *RESUMED,
            "--out",
            path,
            "--resume",
            names=(f"{path}/checkpoint.npz", needle),
        )
        for path, what, needle in (
            ("c-list.zarr", "a checkpoint whose state is a list", "should be an object"),
            ("c-rng.zarr", "a checkpoint without its generator's state", "rng_state"),
            ("c-start.zarr", "a checkpoint at a start past the last", "start 100"),
            ("c-nan.zarr", "a checkpoint of NaN means", "not finite"),
            ("c-width.zarr", "a checkpoint of means of 3 features", "16 features"),
        )
    },
    # a performance report never replaces a file without --overwrite (it did, exit 0)
    **{
        f"{name} a performance report over a file": case(
            *args, "--performance-report", "notes.txt", names=("notes.txt", "exists")
        )
        for name, args in {
            "fit": ("fit", "data.zarr", "--k", "2", "--out", "m.zarr"),
            "predict": ("predict", "proj/model.zarr", "data.zarr", "--out", "p.zarr"),
            "evaluate": ("evaluate", "proj/model.zarr", "data.zarr"),
            "select": ("select", "data.zarr", "--k", "2,3", "--out", "sel"),
        }.items()
    },
    "predict a performance report at its output": case(
        "predict",
        "proj/model.zarr",
        "data.zarr",
        "--out",
        "p.html",
        "--performance-report",
        "p.html",
        names="p.html: --performance-report and --out name the same file",
    ),
    # predict
    "predict with a missing model": case(
        "predict", "none.zarr", "data.zarr", "--out", "p.zarr", names="none.zarr: no such file"
    ),
    "predict with a dataset as model": case(
        "predict",
        "wide.zarr",
        "data.zarr",
        "--out",
        "p.zarr",
        names=("wide.zarr", "not a bmm-dask model"),
    ),
    "predict with a model from a newer version": case(
        "predict",
        "v99-model.zarr",
        "data.zarr",
        "--out",
        "p.zarr",
        names="newer than this bmm-dask",
    ),
    "predict data of another width": case(
        "predict",
        "proj/model.zarr",
        "wide.zarr",
        "--out",
        "p.zarr",
        names=("wide.zarr", "has 20 features"),
    ),
    "predict over its data": case(
        "predict",
        "proj/model.zarr",
        "data.zarr",
        "--out",
        "data.zarr",
        "--overwrite",
        names="data.zarr: is an input",
    ),
    "predict over its model": case(
        "predict",
        "proj/model.zarr",
        "data.zarr",
        "--out",
        "proj/model.zarr",
        "--overwrite",
        names="proj/model.zarr: is an input",
    ),
    "predict over an existing output": case(
        "predict",
        "proj/model.zarr",
        "data.zarr",
        "--out",
        "wide.zarr",
        names="wide.zarr: exists already",
    ),
    "predict to a URL": case(
        "predict",
        "proj/model.zarr",
        "data.zarr",
        "--out",
        "http://127.0.0.1:9/p.zarr",
        names="not a URL",
    ),
    # evaluate
    "evaluate over an existing JSON file": case(
        "evaluate",
        "proj/model.zarr",
        "data.zarr",
        "--json",
        "metrics.json",
        names="metrics.json: exists already",
    ),
    "evaluate JSON into its model": case(
        "evaluate",
        "proj/model.zarr",
        "data.zarr",
        "--json",
        "proj/model.zarr/zarr.json",
        "--overwrite",
        names="lies inside proj/model.zarr",
    ),
    "evaluate JSON over its data": case(
        "evaluate",
        "proj/model.zarr",
        "data.zarr",
        "--json",
        "data.zarr/zarr.json",
        "--overwrite",
        names="lies inside data.zarr",
    ),
    "evaluate JSON in a missing folder": case(
        "evaluate",
        "proj/model.zarr",
        "data.zarr",
        "--json",
        "a-file/m.json",
        names="is not a folder",
    ),
    "evaluate data of another width": case(
        "evaluate", "proj/model.zarr", "wide.zarr", names=("wide.zarr", "has 20 features")
    ),
    "evaluate labels learnt from unlabelled data": case(
        "evaluate",
        "proj/model.zarr",
        "data.zarr",
        "--mapping-from",
        "unlabelled.zarr",
        names=("unlabelled.zarr", "has no labels"),
    ),
    "evaluate on a scheduler file that is not JSON": case(
        "evaluate",
        "proj/model.zarr",
        "data.zarr",
        "--scheduler-file",
        "scheduler.json",
        names="scheduler.json",
    ),
    # report
    "report over the folder that holds its model": case(
        "report",
        "proj/model.zarr",
        "--out",
        "proj",
        "--overwrite",
        names="proj: holds proj/model.zarr",
    ),
    "report over the current folder": case(
        "report", "proj/model.zarr", "--out", ".", "--overwrite", names="current folder"
    ),
    "report over its model": case(
        "report",
        "proj/model.zarr",
        "--out",
        "proj/model.zarr",
        "--overwrite",
        names="proj/model.zarr: is an input",
    ),
    "report over its data": case(
        "report",
        "proj/model.zarr",
        "--data",
        "data.zarr",
        "--out",
        "data.zarr",
        "--overwrite",
        names="data.zarr: is an input",
    ),
    "report on data of another width": case(
        "report", "proj/model.zarr", "--data", "wide.zarr", "--out", "r", names="has 20 features"
    ),
    "report of a missing model": case(
        "report", "none.zarr", "--out", "r", names="none.zarr: no such file"
    ),
    "report over an existing folder": case(
        "report", "proj/model.zarr", "--out", "empty", names="empty: exists already"
    ),
    # demo: refused before the ingest
    "demo no components": case("demo", "--k", "0", "--out", "demo", names="'--k'"),
    "demo no starts": case("demo", "--n-init", "0", "--out", "demo", names="'--n-init'"),
    "demo a negative seed": case("demo", "--seed", "-1", "--out", "demo", names="'--seed'"),
    "demo over an existing folder": case("demo", "--out", "empty", names="empty: exists already"),
    "demo over the current folder": case(
        "demo", "--out", ".", "--overwrite", names="current folder"
    ),
}


#: Mistakes found once the local cluster runs: the cluster starts, stops, and nothing is written.
CLUSTER_CASES: dict[str, Case] = {
    # the training rows are known once the held-out ones are drawn
    "select a K larger than the training rows": case(
        "select",
        "data.zarr",
        "--k",
        "2,290",
        "--out",
        "sel",
        *LOCAL_CLUSTER,
        names=("data.zarr", "290", "training rows"),
    ),
    "fit more components than distinct rows": case(
        "fit",
        "zeros.zarr",
        "--k",
        "3",
        "--out",
        "m.zarr",
        *LOCAL_CLUSTER,
        names=("zeros.zarr", "has only 1 distinct row"),
    ),
    "fit more components than distinct rows, duplicated": case(
        "fit",
        "two-rows.zarr",
        "--k",
        "3",
        "--out",
        "m.zarr",
        *LOCAL_CLUSTER,
        names=("two-rows.zarr", "has only 2 distinct rows"),
    ),
}


@pytest.mark.slow
@pytest.mark.parametrize("name", list(CLUSTER_CASES))
def test_a_bad_input_found_on_the_cluster(
    name: str, workspace: Path, bmm, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(workspace)
    case = CLUSTER_CASES[name]
    before = tree_snapshot(workspace)
    result = bmm("-q", *case.args)  # without the dashboard's address and the progress lines
    assert_one_line_error(result, *case.needles)
    assert tree_snapshot(workspace) == before


@pytest.mark.parametrize("name", list(CASES))
def test_a_bad_input_is_one_line_and_changes_nothing(
    name: str, workspace: Path, bmm, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(workspace)
    case = CASES[name]
    before = tree_snapshot(workspace)
    result = bmm(*case.args)
    assert_one_line_error(result, *case.needles)
    assert tree_snapshot(workspace) == before


def test_there_are_at_least_60_cases() -> None:
    assert len(CASES) >= 60
    commands = {case.args[0] for case in CASES.values()}
    assert commands >= {
        "fetch",
        "ingest",
        "synth",
        "info",
        "fit",
        "predict",
        "evaluate",
        "report",
        "demo",
    }
