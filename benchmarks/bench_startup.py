"""Startup benchmark: how long the command takes to answer when it has little to do.

Run from the repository root:  python benchmarks/bench_startup.py [--runs 5]

Each command runs ``--runs`` times as a user runs it (the ``bmm-dask`` console script of this
environment, a new process each time) after one run to warm the disk cache and compile the
bytecode; the figure is the median wall time. Targets: ``--help``, ``--version`` and a mistake on
the command line under 0.5 s, ``info`` under 1.5 s. Also shows what ``import bmm_dask.cli`` takes
(``python -X importtime``) and that it leaves dask, distributed, zarr and scikit-learn unimported.
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

HEAVY = ("dask", "distributed", "zarr", "sklearn", "scipy", "matplotlib")


def wall_time(command: list[str], runs: int) -> float:
    subprocess.run(command, capture_output=True)  # warm up: bytecode and disk cache
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        subprocess.run(command, capture_output=True)
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def import_profile() -> tuple[float, list[str]]:
    """Seconds ``import bmm_dask.cli`` takes, and the heavy packages it imports."""
    code = "import sys, bmm_dask.cli; print(' '.join(sorted(set(m.split('.')[0] for m in sys.modules))))"
    done = subprocess.run(
        [sys.executable, "-X", "importtime", "-c", code], capture_output=True, text=True, check=True
    )
    line = next(x for x in done.stderr.splitlines() if x.rstrip().endswith("| bmm_dask.cli"))
    heavy = [m for m in done.stdout.split() if m in HEAVY]
    return int(line.split("|")[1]) / 1e6, heavy


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    exe = shutil.which("bmm-dask", path=os.path.dirname(sys.executable)) or "bmm-dask"
    with tempfile.TemporaryDirectory() as folder:
        data, model = Path(folder) / "d.zarr", Path(folder) / "m.zarr"
        subprocess.run(
            [exe, "synth", "--n", "2000", "--d", "64", "--k", "3", "--out", data],
            capture_output=True,
            check=True,
        )
        from bmm_dask import BernoulliMixture, open_dataset

        BernoulliMixture(3, max_iter=5, random_state=0).fit(open_dataset(data)).save(model)
        cases = {
            "bmm-dask --help": ([exe, "--help"], 0.5),
            "bmm-dask --version": ([exe, "--version"], 0.5),
            "bmm-dask fit --k 0 (a mistake)": ([exe, "fit", str(data), "--k", "0"], 0.5),
            "bmm-dask fit --help": ([exe, "fit", "--help"], 0.5),
            "bmm-dask info MODEL": ([exe, "info", str(model)], 1.5),
            "bmm-dask info DATA": ([exe, "info", str(data)], 1.5),
        }
        print(f"median wall time of {args.runs} runs each (target in brackets)")
        for name, (command, target) in cases.items():
            seconds = wall_time(command, args.runs)
            mark = "ok" if seconds < target else "SLOWER THAN THE TARGET"
            print(f"  {name:<34} {seconds:6.3f} s  (< {target} s) {mark}")
    seconds, heavy = import_profile()
    print(f"import bmm_dask.cli: {seconds:.3f} s; heavy packages imported: {heavy or 'none'}")


if __name__ == "__main__":
    main()
