"""Ingest benchmark: MNIST speed, and peak memory against file size, ours beside a naive in-memory ingest.

Run from the repository root:  python benchmarks/bench_ingest.py [--sizes 250000 500000 1000000 2000000]

1. The 60,000 MNIST training images (gzipped IDX from ../shared/data/mnist) -> Zarr: the median
   wall time of `bmm-dask ingest` (a fresh process each time, imports included) beside a naive
   script that reads the whole file, thresholds, packs and writes it in one piece.
2. Raw IDX files of 0.25 to 2 million images (MNIST tiled): the peak resident memory of each
   process (from wait4), ours beside the naive script. Ours reads a chunk at a time and should not
   grow with the file; the naive one holds the whole file.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
MNIST = ROOT.parent / "shared" / "data" / "mnist"
BMM = [sys.executable, "-m", "bmm_dask"]

NAIVE = r"""
import gzip, sys, numpy as np, zarr
src, out = sys.argv[1], sys.argv[2]
raw = (gzip.open if src.endswith(".gz") else open)(src, "rb").read()
ndim = raw[3]
shape = np.frombuffer(raw[4:4 + 4 * ndim], dtype=">i4")
X = np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim).reshape(shape[0], -1)
bits = np.packbits(X >= 128, axis=1)
zarr.create_array(out, data=bits, chunks=(10240, bits.shape[1]), overwrite=True)
"""


def run(command: list[str]) -> tuple[float, float]:
    """Wall seconds and peak resident MB of one child process."""
    start = time.perf_counter()
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(process.pid, 0)
    seconds = time.perf_counter() - start
    if status != 0:
        raise SystemExit(f"{command} failed: {process.stderr.read().decode()}")
    return seconds, usage.ru_maxrss / 1024  # Linux reports kB


def make_idx(path: Path, n_images: int, tile: np.ndarray) -> None:
    with open(path, "wb") as f:
        f.write(bytes([0, 0, 8, 3]) + np.array([n_images, 28, 28], dtype=">i4").tobytes())
        for start in range(0, n_images, len(tile)):
            f.write(tile[: min(len(tile), n_images - start)].tobytes())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--sizes", type=int, nargs="+", default=[250_000, 500_000, 1_000_000, 2_000_000]
    )
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--workdir", type=Path, default=None, help="scratch folder (needs ~2 GB)")
    args = parser.parse_args()
    source = MNIST / "train-images-idx3-ubyte.gz"
    if not source.is_file():
        raise SystemExit(f"{source}: not found; this benchmark needs the original MNIST files")
    work = Path(tempfile.mkdtemp(prefix="bench-ingest-", dir=args.workdir))
    try:
        print(
            f"# MNIST training set, 60,000 images: wall time of a fresh process, median of {args.repeats}"
        )
        times = {"bmm-dask ingest": [], "naive in-memory": []}
        for i in range(args.repeats):
            out = work / f"ours{i}.zarr"
            times["bmm-dask ingest"].append(
                run([*BMM, "ingest", str(source), "--out", str(out)])[0]
            )
            times["naive in-memory"].append(
                run([sys.executable, "-c", NAIVE, str(source), str(work / f"naive{i}.zarr")])[0]
            )
            shutil.rmtree(out)
            shutil.rmtree(work / f"naive{i}.zarr")
        for name, values in times.items():
            print(
                f"{name:18s} {statistics.median(values):6.2f} s   (min {min(values):.2f}, max {max(values):.2f})"
            )

        import gzip

        raw = gzip.decompress(source.read_bytes())
        tile = np.frombuffer(raw, dtype=np.uint8, offset=16).reshape(60_000, 28, 28)
        print("\n# Raw IDX files of MNIST images tiled: peak resident memory of the process")
        print(
            f"{'images':>10} {'file MB':>8} | {'ours s':>7} {'ours MB':>8} | {'naive s':>8} {'naive MB':>9}"
        )
        for n in sorted(args.sizes):
            idx = work / f"big-{n}-idx3-ubyte"
            make_idx(idx, n, tile)
            ours = run([*BMM, "ingest", str(idx), "--out", str(work / "ours.zarr")])
            naive = run([sys.executable, "-c", NAIVE, str(idx), str(work / "naive.zarr")])
            size = idx.stat().st_size / 1e6
            print(
                f"{n:>10,} {size:>8.0f} | {ours[0]:>7.2f} {ours[1]:>8.0f} | {naive[0]:>8.2f} {naive[1]:>9.0f}",
                flush=True,
            )
            for path in (idx, work / "ours.zarr", work / "naive.zarr"):
                shutil.rmtree(path) if path.is_dir() else path.unlink()
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
