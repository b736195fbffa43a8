"""Unit costs for docs/scaling.md: scheduling, the E-step kernel, a chunk read, the driver's work.

Run from the repository root:  python benchmarks/bench_costs.py [--quick]

Everything in one run, one table per part, figures as medians of repeats:

1. Scheduling: graphs of trivial tasks shaped like an E-step (N leaf tasks, then a tree of sums
   of fan-in 8 down to at most 8 results, built as bmm_dask/_estep.py builds its graphs), computed
   on a local cluster of 2 worker processes of one thread (`open_client`, what `bmm-dask fit`
   starts) and on Dask's threaded scheduler (2 threads); wall time per task, and on the cluster
   the CPU time per task of the driver process (in a local cluster it holds the scheduler and
   the client) and of the workers. Also the round trip of one tiny task, of a trivial graph
   shaped like a stepwise step (8 row-taking tasks, then 2 tasks that each depend on all 8), and
   of a real stepwise step (`bmm_dask._stepwise.batch_step`, 4,096 rows, K = 100, a window of 8
   chunks held in the workers' memory, one task per worker thread), with one BLAS thread as in a fit.
2. The E-step kernel (`bmm_dask._kernels.estep_stats`), float32, one BLAS thread, no Dask, on
   MNIST rows (the copy inside the package) with means leaning towards K random rows (0.25 /
   0.75, the "random_from_data" start): rows per second per core for K = 10, 50, 100, 500 on
   blocks of 2,048 rows (a stepwise task's least) and 10,240 rows (one chunk of a store).
3. Reading: a `synth` store of 200,000 x 784 (zstd level 3, chunks of 10,240 rows) on local
   disk; one chunk by `Dataset.row_reader()`, with the chunk files in the page cache ("warm")
   and dropped from it with posix_fadvise first ("cold"; this machine's disk is virtual), and 8
   chunks read at once (what a streamed E-step task does). Bytes per row on disk of that store
   and of MNIST compressed the same way (zstd level 3, chunks of 10,240 rows), and the time to
   decode one such MNIST chunk (the synthetic rows hardly compress).
4. The driver: `mstep`, `log_parameters`, a stepwise update (`StepwiseState.update` and
   `.parameters`), `combine_stats` of 8 parts (the tree's fan-in) and of 256 parts (a step's
   most tasks, all added on the driver), the pickled size of one part's statistics; and the
   time `pass_batches` takes to draw one mini-batch of m rows of 10^9 rows in 10,240-row chunks
   with the window `window_chunks` gives it.

This machine's speed swings by up to half from one minute to the next: compare figures of the
same run only.
"""

from __future__ import annotations

import argparse
import os
import pickle
import statistics
import tempfile
import time
import uuid
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import dask
import numpy as np
from dask.delayed import Delayed
from dask.highlevelgraph import HighLevelGraph
from threadpoolctl import threadpool_limits

from bmm_dask import open_dataset
from bmm_dask._estep import PackedData
from bmm_dask._kernels import combine_stats, estep_stats, log_parameters, mstep
from bmm_dask._stepwise import (
    Batch,
    StepwiseState,
    batch_step,
    hold_window,
    pass_batches,
    step_groups,
    window_chunks,
)
from bmm_dask.cluster import open_client
from bmm_dask.datasets import packaged_mnist_path, synth

D = 784
CHUNK = 10_240  # default_chunk_rows(784)
FAN_IN = 8  # bmm_dask._estep.SPLIT_EVERY


def median_seconds(func: Callable[[], Any], repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        func()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


# --------------------------------------------------------------------------- 1. scheduling


def _leaf(i: int) -> int:
    return i


def _add(parts: list[int]) -> int:
    return sum(parts)


def _take(i: int) -> int:
    return i


def _part(pieces: list[int], part: int) -> int:
    return sum(pieces) + part


def estep_shaped(n_leaves: int) -> tuple[list[Delayed], int]:
    """N trivial leaf tasks and a tree of sums of fan-in 8 down to at most 8 results, with new
    keys; the graph and the number of tasks in it."""
    token = uuid.uuid4().hex
    layer: dict[Any, Any] = {}
    level = []
    for i in range(n_leaves):
        level.append((f"leaf-{token}", i))
        layer[level[-1]] = (_leaf, i)
    depth = 0
    while len(level) > FAN_IN:
        parents = []
        for j in range(0, len(level), FAN_IN):
            parents.append((f"add-{token}", depth, j // FAN_IN))
            layer[parents[-1]] = (_add, level[j : j + FAN_IN])
        level, depth = parents, depth + 1
    graph = HighLevelGraph.from_collections(f"leaf-{token}", layer, dependencies=[])
    return [Delayed(key, graph, layer=f"leaf-{token}") for key in level], len(layer)


def step_shaped(n_pieces: int = 8, n_parts: int = 2) -> list[Delayed]:
    """A trivial graph shaped like a stepwise step: row-taking tasks, then parts that each
    depend on all of them."""
    token = uuid.uuid4().hex
    layer: dict[Any, Any] = {}
    pieces = []
    for j in range(n_pieces):
        pieces.append((f"take-{token}", j))
        layer[pieces[-1]] = (_take, j)
    keys = []
    for part in range(n_parts):
        keys.append((f"part-{token}", part))
        layer[keys[-1]] = (_part, list(pieces), part)
    graph = HighLevelGraph.from_collections(f"part-{token}", layer, dependencies=[])
    return [Delayed(key, graph, layer=f"part-{token}") for key in keys]


def one_task() -> list[Delayed]:
    token = uuid.uuid4().hex
    layer = {(f"one-{token}", 0): (_leaf, 1)}
    graph = HighLevelGraph.from_collections(f"one-{token}", layer, dependencies=[])
    return [Delayed((f"one-{token}", 0), graph, layer=f"one-{token}")]


def _cpu() -> float:
    return time.process_time()


def scheduling(client: Any, sizes: list[int], repeats: int) -> list[tuple[str, str]]:
    rows: list[tuple[str, str]] = []
    threads = {"scheduler": "threads", "num_workers": 2}
    for n in sizes:
        for where, extra in (("cluster", {}), ("threads", threads)):
            walls, drivers, workers = [], [], []
            for _ in range(repeats):
                roots, n_tasks = estep_shaped(n)
                driver0 = time.process_time()
                worker0 = sum(client.run(_cpu).values()) if where == "cluster" else 0.0
                start = time.perf_counter()
                dask.compute(*roots, optimize_graph=False, **extra)
                walls.append((time.perf_counter() - start) / n_tasks)
                drivers.append((time.process_time() - driver0) / n_tasks)
                if where == "cluster":
                    workers.append((sum(client.run(_cpu).values()) - worker0) / n_tasks)
            wall = statistics.median(walls)
            text = f"{wall * 1e6:7.0f} us/task = {1 / wall:6.0f} tasks/s"
            if where == "cluster":
                text += (
                    f"; CPU per task: driver (scheduler + client) "
                    f"{statistics.median(drivers) * 1e6:.0f} us, workers "
                    f"{statistics.median(workers) * 1e6:.0f} us"
                )
            else:
                text += f"; CPU per task {statistics.median(drivers) * 1e6:.0f} us"
            rows.append((f"{n:,} leaves + tree ({n_tasks:,} tasks), {where}", text))
    for where, extra in (("cluster", {}), ("threads", threads)):
        for name, make in (("one tiny task", one_task), ("step-shaped, 8 + 2 tasks", step_shaped)):
            dask.compute(*make(), optimize_graph=False, **extra)  # warm
            seconds = median_seconds(
                lambda make=make, extra=extra: dask.compute(*make(), optimize_graph=False, **extra),
                repeats * 10,
            )
            rows.append((f"round trip, {name}, {where}", f"{seconds * 1e3:7.2f} ms"))
    return rows


def real_step(client: Any, train: Any, repeats: int) -> list[tuple[str, str]]:
    """`batch_step` of 4,096 rows, K = 100, over a window of 8 chunks held by the workers in
    one group per thread."""
    rng = np.random.default_rng(1)
    bits = train.bits.rechunk({0: 7_500})
    data = PackedData(bits, D, "MNIST")
    K = 100
    means = 0.25 + 0.5 * rng.random((K, D))
    weights = np.full(K, 1 / K)
    rows: list[tuple[str, str]] = []
    for where, scheduler in (("cluster", client), ("threads", "threads")):
        # one BLAS thread in this process, as a fit has (the workers set theirs themselves)
        with dask.config.set(scheduler=scheduler), threadpool_limits(limits=1, user_api="blas"):
            threads = sum(client.nthreads().values()) if where == "cluster" else 2
            window = hold_window(data, list(range(8)), step_groups(threads, 8), False)
            times = []
            for _ in range(repeats * 5):
                picks = [np.sort(rng.choice(7_500, 512, replace=False)) for _ in range(8)]
                batch = Batch(list(range(8)), picks)
                start = time.perf_counter()
                batch_step(window, batch, D, means, weights, np.float32, uuid.uuid4().hex)
                times.append(time.perf_counter() - start)
        rows.append(
            (
                f"batch_step 4,096 rows K = 100 (one task per thread), {where}",
                f"{statistics.median(times) * 1e3:7.2f} ms",
            )
        )
    return rows


# --------------------------------------------------------------------------- 2. the kernel


def kernel(train: Any, ks: list[int], blocks: list[int], seconds: float) -> list[tuple[str, str]]:
    packed = train.row_reader()(0, max(blocks))
    rng = np.random.default_rng(0)
    rows: list[tuple[str, str]] = []
    with threadpool_limits(limits=1, user_api="blas"):
        for K in ks:
            seeds = train.row_reader()(20_000, 60_000)[rng.choice(40_000, K, replace=False)]
            means = 0.25 + 0.5 * np.unpackbits(seeds, axis=1, count=D)
            W, b = log_parameters(means, np.full(K, 1 / K), np.float32)
            cells = []
            for n in blocks:
                block = packed[:n]
                once = median_seconds(lambda block=block, W=W, b=b: estep_stats(block, D, W, b), 1)
                repeats = max(3, int(seconds / max(once, 1e-4)))
                per = median_seconds(
                    lambda block=block, W=W, b=b: estep_stats(block, D, W, b), repeats
                )
                cells.append(f"{n:,} rows: {n / per / 1e3:7.0f} k rows/s ({per * 1e3:6.1f} ms)")
            rows.append((f"K = {K:3d} (K x D = {K * D:,})", ";  ".join(cells)))
    return rows


# --------------------------------------------------------------------------- 3. reading


def _drop_cache(folder: Path) -> None:
    for path in folder.rglob("*"):
        if path.is_file():
            fd = os.open(path, os.O_RDONLY)
            try:
                os.fsync(fd)
                os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
            finally:
                os.close(fd)


def _disk_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


def reading(workdir: Path, train: Any, n_rows: int) -> list[tuple[str, str]]:
    from numcodecs import Zstd

    path = workdir / "synth.zarr"
    synth(path, n_samples=n_rows, n_features=D, n_components=10, seed=0)
    data = open_dataset(str(path))
    read = data.row_reader()
    chunk = data.chunk_rows
    n_chunks = data.n_samples // chunk  # full chunks
    nbytes = chunk * data.bits.shape[1]
    rows: list[tuple[str, str]] = [(f"store: {path.name}", f"{n_rows:,} rows, {chunk:,} a chunk")]
    for label, cold in (("warm (page cache)", False), ("cold (fadvise DONTNEED)", True)):
        times = []
        for i in range(n_chunks):
            if cold:
                _drop_cache(path / "bits")
            start = time.perf_counter()
            read(i * chunk, (i + 1) * chunk)
            times.append(time.perf_counter() - start)
        t = statistics.median(times)
        rows.append(
            (f"one chunk, {label}", f"{t * 1e3:6.2f} ms = {nbytes / t / 1e6:5.0f} MB/s packed")
        )
    times = []
    for g in [*range(n_chunks // 8)] * 3:
        start = time.perf_counter()
        read(g * 8 * chunk, (g + 1) * 8 * chunk)
        times.append(time.perf_counter() - start)
    t = statistics.median(times) / 8
    rows.append(
        (
            "8 chunks in one read, warm, per chunk",
            f"{t * 1e3:6.2f} ms = {nbytes / t / 1e6:5.0f} MB/s",
        )
    )
    stored = _disk_bytes(path / "bits")
    rows.append(("synth store on disk", f"{stored / data.n_samples:5.1f} bytes/row (bits)"))
    packed = train.row_reader()(0, train.n_samples)
    codec = Zstd(level=3)
    encoded = [
        codec.encode(np.ascontiguousarray(packed[i : i + chunk]))
        for i in range(0, len(packed) - chunk + 1, chunk)
    ]
    size = sum(len(e) for e in encoded)
    rows.append(
        (
            "MNIST train, zstd 3, 10,240-row chunks",
            f"{size / (len(encoded) * chunk):5.1f} bytes/row (bits)",
        )
    )
    t = statistics.median(median_seconds(lambda e=e: codec.decode(e), 20) for e in encoded)
    rows.append(
        ("MNIST chunk: zstd 3 decode alone", f"{t * 1e3:6.2f} ms = {nbytes / t / 1e6:5.0f} MB/s")
    )
    rows.append(("packed, uncompressed", f"{packed.shape[1]} bytes/row"))
    return rows


# --------------------------------------------------------------------------- 4. the driver


def _stats(K: int, rng: np.random.Generator) -> dict[str, Any]:
    return {
        "resp_sum": rng.random(K) * 1000,
        "resp_x": rng.random((K, D)) * 500,
        "loglik": -1e6,
        "n_samples": 10_000,
    }


def driver(ks: list[int], repeats: int) -> list[tuple[str, str]]:
    rng = np.random.default_rng(0)
    rows: list[tuple[str, str]] = []
    for K in ks:
        parts = [_stats(K, rng) for _ in range(256)]
        total = combine_stats(parts[:8])
        means, weights = mstep(total["resp_sum"], total["resp_x"], 80_000, 1.0)
        state = StepwiseState.start(means, weights / weights.sum())
        figures = {
            "mstep": median_seconds(
                lambda t=total: mstep(t["resp_sum"], t["resp_x"], 80_000, 1.0), repeats
            ),
            "log_parameters": median_seconds(
                lambda m=means, w=weights: log_parameters(m, w, np.float32), repeats
            ),
            "stepwise update + parameters": median_seconds(
                lambda s=state, t=total: (s.update(t, 0.7), s.parameters(10**9, 1.0)), repeats
            ),
            "combine_stats of 8": median_seconds(lambda p=parts: combine_stats(p[:8]), repeats),
            "combine_stats of 256": median_seconds(lambda p=parts: combine_stats(p), repeats),
            "pickle one part": median_seconds(lambda p=parts: pickle.dumps(p[0]), repeats),
        }
        text = ", ".join(f"{name} {t * 1e3:.2f} ms" for name, t in figures.items())
        size = len(pickle.dumps(parts[0]))
        rows.append((f"K = {K} (K x D float64 = {K * D * 8 / 1e6:.2f} MB)", text))
        rows.append((f"K = {K}: one part's statistics pickled", f"{size / 1e6:.2f} MB"))
    return rows


def drawing(batch_sizes: list[int]) -> list[tuple[str, str]]:
    """Driver time of `pass_batches` per mini-batch, 10^9 rows in chunks of 10,240."""
    chunk_sizes = (CHUNK,) * (10**9 // CHUNK)
    rows: list[tuple[str, str]] = []
    for m in batch_sizes:
        window = window_chunks(m, CHUNK)
        _, batches = pass_batches(chunk_sizes, m, window, np.random.default_rng(0))
        start = time.perf_counter()
        count = 0
        for batch in batches:  # the first window's batches
            count += 1
            if len(batch.window) != window or count == round(window * CHUNK / m):
                break
        per = (time.perf_counter() - start) / count
        rows.append(
            (
                f"pass_batches, m = {m:,} (window {window:,} chunks)",
                f"{per * 1e3:8.1f} ms per mini-batch ({count} batches timed)",
            )
        )
    return rows


# --------------------------------------------------------------------------- main


def show(title: str, rows: list[tuple[str, str]]) -> None:
    print(f"\n## {title}")
    width = max(len(name) for name, _ in rows)
    for name, value in rows:
        print(f"{name:<{width}}  {value}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer repeats and smaller sizes")
    parser.add_argument("--workdir", type=Path, default=None, help="where the synth store goes")
    args = parser.parse_args()
    warnings.simplefilter("ignore")
    repeats = 3 if args.quick else 5
    train = open_dataset(f"{packaged_mnist_path()}/train")
    print(f"# bench_costs: {os.cpu_count()} cores, dask {dask.__version__}, numpy {np.__version__}")
    with open_client(workers=2, threads_per_worker=1, dashboard_address="127.0.0.1:0") as client:
        sizes = [1_000, 4_000] if args.quick else [1_000, 4_000, 12_000]
        show("1. scheduling (2 cores)", scheduling(client, sizes, 3))
        show("1b. a real stepwise step", real_step(client, train, repeats))
    show(
        "2. E-step kernel, float32, 1 BLAS thread (rows per second per core)",
        kernel(train, [10, 50, 100, 500], [2_048, CHUNK], 0.5 if args.quick else 1.5),
    )
    with tempfile.TemporaryDirectory(prefix="bench-costs-", dir=args.workdir) as work:
        n_rows = 100_000 if args.quick else 200_000
        show("3. reading a chunk (local disk)", reading(Path(work), train, n_rows))
    show("4. driver (one core)", driver([100, 500], repeats * 4))
    show(
        "4b. driver: drawing mini-batches of 10^9 rows",
        drawing([50_000, 500_000] if args.quick else [50_000, 500_000, 5_000_000]),
    )


if __name__ == "__main__":
    main()
