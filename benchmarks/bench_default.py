"""The default algorithm (auto) against batch EM, through the command line, as a user runs it.

Run from the repository root (about an hour on 2 cores; every result is kept in
``--workdir``/results.jsonl and not run again, so an interrupted run goes on where it stopped):

    python benchmarks/bench_default.py [--cases mnist10 mnist100 ...] [--seeds 0 1 2]

Each case is fitted with ``bmm-dask fit DATA --k K --seed S --no-persist --workers 2
--max-iter 300`` and ``--algorithm auto`` (the default) or ``--algorithm batch``, 3 seeds each,
then scored with ``bmm-dask evaluate`` on held-out rows. Reported per fit: the fit command's
whole wall time (cluster start-up included), the passes over the data (batch iterations and
stepwise passes: each reads every row once), the held-out log-likelihood in nats per row,
and the components alive (weight above 0.1 / (K x 1,000)).

The cases (data made once, in ``--workdir``):

- ``mnist10``, ``mnist100``: MNIST's training images, K = 10 and 100; the test images held out.
- ``like100``, ``like30``, ``like50``: 1,000,000 rows (4,000,000 for ``like50``) drawn with
  ``bmm-dask synth --like`` from a model fitted to MNIST with the same K (batch EM, seed 0),
  fitted with that K; 20,000 rows drawn with another seed held out.
- ``wrongk``: 1,000,000 rows like an MNIST-fitted K = 20 model, fitted with K = 60.
- ``k20d500``: ``bmm-dask synth --k 20 --d 500``, 1,000,000 rows.
- ``sparse``: ``bmm-dask synth --k 20 --d 5000 --density 0.005``, 500,000 rows (0.5 % ones;
  before synth drew its sparse means off the 1/256 grid this case was ``--density 0.002``,
  which the grid's floor made about 0.5 % too).
- ``debian``: a real bag-of-words corpus found on this machine: the short descriptions of the
  Debian packages in apt's lists (``/var/lib/apt/lists/*_Packages.lz4``), binary words
  (scikit-learn's CountVectorizer, English stop words out, words in at least 5 descriptions),
  K = 20; a tenth of the documents held out. Also fitted by a plain SciPy EM of 20 lines
  (sparse products; start: the words' rates times a random factor in [0.5, 1.5] per component
  and word; alpha 0.1; tol 1e-4 on the mean log-likelihood per row), the reference the issue
  names.

For the held-out rows of the ``synth --k`` cases the mixture's true means and weights are
saved as a model and ``synth --like`` draws from it with another seed.

Targets (issue 18): in every case the default's mean held-out log-likelihood is at least batch
EM's minus 0.02 nats per row and its mean wall time at most 1.05x batch EM's; where batch EM
needs 20 or more iterations, at most 0.5x.
"""

from __future__ import annotations

import argparse
import glob
import json
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent.parent
BMM = [sys.executable, "-m", "bmm_dask"]

CASES = (
    "mnist10",
    "mnist100",
    "like100",
    "like30",
    "like50",
    "wrongk",
    "k20d500",
    "sparse",
    "debian",
)


def run(*args: Any, **kwargs: Any) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        [*BMM, "-q", *map(str, args)], capture_output=True, text=True, cwd=HERE, **kwargs
    )
    if result.returncode != 0:
        raise SystemExit(f"bmm-dask {' '.join(map(str, args))} failed:\n{result.stderr}")
    return result


def mnist(work: Path) -> Path:
    out = work / "mnist.zarr"  # the copy of MNIST inside the package, binarised at 128
    if not out.exists():
        run("ingest", "mnist", "--out", out)
    return out


def mnist_model(work: Path, k: int) -> Path:
    out = work / f"mnist-model-{k}.zarr"
    if not out.exists():
        train = mnist(work) / "train"
        run("fit", train, "--k", k, "--seed", 0, "--algorithm", "batch", "--max-iter", 300,
            "--workers", 2, "--out", out)  # fmt: skip
    return out


def like(work: Path, k: int, n: int) -> tuple[Path, Path]:
    model = mnist_model(work, k)
    data, held = work / f"like{k}-{n}.zarr", work / f"like{k}-held.zarr"
    if not data.exists():
        run("synth", "--n", n, "--like", model, "--seed", 1, "--out", data)
    if not held.exists():
        run("synth", "--n", 20_000, "--like", model, "--seed", 2, "--out", held)
    return data, held


def synth_case(work: Path, name: str, *extra: Any, n: int) -> tuple[Path, Path]:
    """Training rows from ``synth``, and held-out rows drawn from the same mixture (saved as
    a model from the true means and weights, for ``synth --like``)."""
    from bmm_dask import BernoulliMixture, open_dataset

    data, held, truth = (
        work / f"{name}.zarr",
        work / f"{name}-held.zarr",
        work / f"{name}-truth.zarr",
    )
    if not data.exists():
        run("synth", "--n", n, *extra, "--seed", 1, "--out", data)
    if not held.exists():
        dataset = open_dataset(data)
        means, weights = dataset.read_array("true_means"), dataset.read_array("true_weights")
        model = BernoulliMixture(len(weights))
        model.means_, model.weights_ = means, weights
        model.converged_, model.n_iter_, model.lower_bound_ = True, 0, float("nan")
        model.history_, model.n_features_in_, model.batch_size_ = [], means.shape[1], None
        model.save(truth, overwrite=True)
        run("synth", "--n", 20_000, "--like", truth, "--seed", 2, "--out", held)
    return data, held


def debian_corpus(work: Path) -> tuple[Path, Path]:
    """The Debian package descriptions as binary bags of words: training and held-out."""
    import scipy.sparse

    data, held = work / "debian.zarr", work / "debian-held.zarr"
    if data.exists() and held.exists():
        return data, held
    from sklearn.feature_extraction.text import CountVectorizer

    lists = sorted(glob.glob("/var/lib/apt/lists/*_main_binary-amd64_Packages.lz4"))
    if not lists:
        raise SystemExit("no apt Packages lists on this machine: the debian case needs them")
    raw = subprocess.run(
        ["/usr/lib/apt/apt-helper", "cat-file", lists[0]], capture_output=True, check=True
    ).stdout.decode("utf-8", "replace")
    docs = [m.group(1) for m in re.finditer(r"^Description: (.*)$", raw, re.MULTILINE)]
    vectorizer = CountVectorizer(
        binary=True, stop_words="english", min_df=5, token_pattern=r"(?u)\b[a-zA-Z][a-zA-Z0-9+]+\b"
    )
    X = vectorizer.fit_transform(docs).tocsr()
    X = X[np.asarray(X.sum(axis=1)).ravel() > 0]
    order = np.random.default_rng(0).permutation(X.shape[0])
    cut = X.shape[0] // 10
    parts = {"held": X[np.sort(order[:cut])], "train": X[np.sort(order[cut:])]}
    for name, part in parts.items():
        scipy.sparse.save_npz(work / f"debian-{name}.npz", part.astype(np.uint8))
        np.save(work / f"debian-{name}.npy", part.toarray().astype(np.uint8))
    for path, name in ((data, "train"), (held, "held")):
        run("ingest", work / f"debian-{name}.npy", "--binarize", "none", "--out", path)
        (work / f"debian-{name}.npy").unlink()
    print(f"debian corpus: {X.shape[0]:,} documents, {X.shape[1]:,} words, "
          f"{X.nnz / X.shape[0]:.2f} words per document ({X.nnz / np.prod(X.shape):.3%})")  # fmt: skip
    return data, held


#: The cases drawn like a model fitted to MNIST: its K, the rows, the K fitted.
LIKE = {
    "like100": (100, 1_000_000, 100),
    "like30": (30, 1_000_000, 30),
    "like50": (50, 4_000_000, 50),
    "wrongk": (20, 1_000_000, 60),
}


def case_data(work: Path, case: str) -> tuple[Path, int, Path]:
    if case in ("mnist10", "mnist100"):
        folder = mnist(work)
        return folder / "train", int(case[5:]), folder / "test"
    if case in LIKE:
        model_k, n, k = LIKE[case]
        data, held = like(work, model_k, n)
        return data, k, held
    if case == "k20d500":
        data, held = synth_case(work, "k20d500", "--k", 20, "--d", 500, n=1_000_000)
        return data, 20, held
    if case == "sparse":
        extra = ("--k", 20, "--d", 5000, "--density", 0.005)
        data, held = synth_case(work, "sparse", *extra, n=500_000)
        return data, 20, held
    if case == "debian":
        data, held = debian_corpus(work)
        return data, 20, held
    raise SystemExit(f"unknown case {case!r}")


def fit_and_score(work: Path, data: Path, k: int, held: Path, seed: int, algorithm: str) -> dict:
    from bmm_dask import BernoulliMixture

    out = work / "models" / f"{data.stem}-{k}-{seed}-{algorithm}.zarr"
    out.parent.mkdir(exist_ok=True)
    began = time.perf_counter()
    fitted = run("fit", data, "--k", k, "--seed", seed, "--algorithm", algorithm,
                 "--no-persist", "--workers", 2, "--max-iter", 300, "--out", out, "--overwrite")  # fmt: skip
    wall = time.perf_counter() - began
    scores = work / "score.json"
    run("evaluate", out, held, "--json", scores, "--overwrite")
    model = BernoulliMixture.load(out)
    passes = sum("pass" in r for r in model.history_)
    return {
        "wall": wall,
        "reads": model.n_iter_,
        "passes": passes,
        "iterations": model.n_iter_ - passes,
        "converged": model.converged_,
        "heldout": json.loads(scores.read_text())["log_likelihood_per_sample"],
        "alive": int((model.weights_ > 0.1 / (k * 1000)).sum()),
        "min_weight": float(model.weights_.min()),
        "reseeded": sum(r["reseeded"] for r in model.history_),
        "summary": fitted.stdout.strip().splitlines()[-1] if fitted.stdout.strip() else "",
    }


def scipy_em(X: Any, k: int, seed: int, alpha: float = 0.1, tol: float = 1e-4) -> dict:
    """Plain EM with SciPy's sparse products, from the words' rates times U[0.5, 1.5]."""
    n, d = X.shape
    rng = np.random.default_rng(seed)
    rates = np.asarray(X.mean(axis=0)).ravel()
    means = np.clip(rates * rng.uniform(0.5, 1.5, (k, d)), 1e-10, 1 - 1e-10)
    weights = np.full(k, 1 / k)
    previous, began = -np.inf, time.perf_counter()
    iterations = 0
    while iterations < 1000:
        iterations += 1
        log1m = np.log1p(-means)
        joint = X @ (np.log(means) - log1m).T + log1m.sum(axis=1) + np.log(weights)
        top = joint.max(axis=1, keepdims=True)
        row_ll = top.ravel() + np.log(np.exp(joint - top).sum(axis=1))
        resp = np.exp(joint - row_ll[:, None])
        objective = row_ll.mean()
        sums = resp.sum(axis=0)
        means = np.clip((X.T @ resp).T + alpha, 0, None) / (sums[:, None] + 2 * alpha)
        means = np.clip(means, 1e-10, 1 - 1e-10)
        weights = sums / n
        if abs(objective - previous) < tol:
            break
        previous = objective
    return {"means": means, "weights": weights, "iterations": iterations,
            "seconds": time.perf_counter() - began}  # fmt: skip


def scipy_heldout(X: Any, means: Any, weights: Any) -> float:
    log1m = np.log1p(-means)
    joint = X @ (np.log(means) - log1m).T + log1m.sum(axis=1) + np.log(weights)
    top = joint.max(axis=1, keepdims=True)
    return float((top.ravel() + np.log(np.exp(joint - top).sum(axis=1))).mean())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cases", nargs="+", default=list(CASES), choices=CASES)
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/bmm_bench_default"))
    args = parser.parse_args()
    work = args.workdir
    work.mkdir(parents=True, exist_ok=True)
    results_file = work / "results.jsonl"
    done: dict[tuple, dict] = {}
    if results_file.exists():
        for line in results_file.read_text().splitlines():
            r = json.loads(line)
            done[r["case"], r["seed"], r["algorithm"]] = r
    for case in args.cases:
        data, k, held = case_data(work, case)
        for seed in args.seeds:
            for algorithm in ("auto", "batch", *(["scipy"] if case == "debian" else [])):
                if (case, seed, algorithm) in done:
                    continue
                if algorithm == "scipy":
                    import scipy.sparse

                    train = scipy.sparse.load_npz(work / "debian-train.npz").astype(np.float64)
                    test = scipy.sparse.load_npz(work / "debian-held.npz").astype(np.float64)
                    fitted = scipy_em(train, k, seed)
                    r = {"wall": fitted["seconds"], "reads": fitted["iterations"], "passes": 0,
                         "iterations": fitted["iterations"], "converged": True,
                         "heldout": scipy_heldout(test, fitted["means"], fitted["weights"]),
                         "alive": int((fitted["weights"] > 0.1 / (k * 1000)).sum()),
                         "min_weight": float(fitted["weights"].min()), "reseeded": 0}  # fmt: skip
                else:
                    r = fit_and_score(work, data, k, held, seed, algorithm)
                r.update(case=case, seed=seed, algorithm=algorithm)
                done[case, seed, algorithm] = r
                with results_file.open("a") as f:
                    f.write(json.dumps(r) + "\n")
                print(f"{case} seed {seed} {algorithm}: {r['wall']:.1f} s, {r['reads']} reads "
                      f"({r['passes']} passes), held-out {r['heldout']:.4f}, {r['alive']}/{k} "
                      f"alive", flush=True)  # fmt: skip
    report(done, args.cases, args.seeds)


def report(done: dict[tuple, dict], cases: list[str], seeds: list[int]) -> None:
    print()
    print("| case | batch: s, reads, held-out | auto: s, reads (passes), held-out | time ratio | "
          "held-out gap | targets |")  # fmt: skip
    print("|---|---|---|---|---|---|")
    for case in cases:
        rows = {a: [done[case, s, a] for s in seeds if (case, s, a) in done]
                for a in ("auto", "batch", "scipy")}  # fmt: skip
        if not rows["auto"] or not rows["batch"]:
            continue
        mean = {a: {key: float(np.mean([r[key] for r in rs])) for key in
                    ("wall", "reads", "passes", "heldout", "alive", "iterations")}
                for a, rs in rows.items() if rs}  # fmt: skip
        b, a = mean["batch"], mean["auto"]
        ratio, gap = a["wall"] / b["wall"], a["heldout"] - b["heldout"]
        limit = 0.5 if b["iterations"] >= 20 else 1.05
        met = "met" if gap >= -0.02 and ratio <= limit else f"NOT met (limit {limit}x)"
        print(f"| {case} | {b['wall']:.1f}, {b['reads']:.0f}, {b['heldout']:.3f} | "
              f"{a['wall']:.1f}, {a['reads']:.0f} ({a['passes']:.1f}), {a['heldout']:.3f} | "
              f"{ratio:.2f} | {gap:+.3f} | {met} |")  # fmt: skip
        if "scipy" in mean:
            s = mean["scipy"]
            print(f"|   SciPy EM | {s['wall']:.1f} s, {s['reads']:.0f} iterations, "
                  f"held-out {s['heldout']:.3f}, {s['alive']:.0f} alive | | | | |")  # fmt: skip
        alive = min(r["alive"] for rs in rows.values() for r in rs)
        print(f"|   fewest components alive in any fit: {alive} | | | | | |")


if __name__ == "__main__":
    main()
