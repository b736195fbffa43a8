"""A real bag-of-words corpus, end to end: ingest from svmlight with its vocabulary, select K,
report.

Run from the repository root:  python benchmarks/bench_corpus.py [--k 10,20,40] [--workdir DIR]

The corpus is the one this machine has: the descriptions of the Debian packages in apt's lists
(``/var/lib/apt/lists/*_main_binary-amd64_Packages.lz4``, read with ``apt-helper cat-file``),
one document per package, words counted by scikit-learn's ``CountVectorizer`` (English stop
words out, words in at least 5 documents), the package's Section as its label. It is written
as an svmlight file of counts (what ``dump_svmlight_file`` writes, 0-based) and ``vocab.txt``,
one word a line, and, for comparison, as the dense ``.npy`` array of 0/1 that was the only way
in before.

Side by side, in one run:

1. ``bmm-dask ingest docs.svm --feature-names vocab.txt --zero-based`` (counts binarised by
   ``nonzero``)
   against ``bmm-dask ingest docs.npy --binarize none``: wall time, and that both store the
   same bits.
2. ``bmm-dask select debian.zarr --k ...``: wall time, the chosen K and the held-out
   log-likelihood per K.
3. ``bmm-dask report SELECTION --data debian.zarr``: the top words by lift of the heaviest
   components (printed), and ``features.png``, copied to ``docs/debian-features.png`` with
   ``--figure``.
"""

from __future__ import annotations

import argparse
import glob
import json
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import zarr

HERE = Path(__file__).resolve().parent.parent
BMM = [sys.executable, "-m", "bmm_dask"]


def run(*args: object) -> float:
    """Run ``bmm-dask ARGS``; return its wall time."""
    started = time.perf_counter()
    subprocess.run([*BMM, *map(str, args)], check=True, cwd=HERE)
    return time.perf_counter() - started


def corpus(work: Path) -> tuple[Path, Path, Path]:
    """docs.svm, vocab.txt and docs.npy of the Debian package descriptions."""
    from sklearn.datasets import dump_svmlight_file
    from sklearn.feature_extraction.text import CountVectorizer

    svm, vocab, npy = work / "docs.svm", work / "vocab.txt", work / "docs.npy"
    if svm.exists() and vocab.exists() and npy.exists():
        return svm, vocab, npy
    lists = sorted(glob.glob("/var/lib/apt/lists/*_main_binary-amd64_Packages.lz4"))
    if not lists:
        raise SystemExit("no apt Packages lists on this machine: this benchmark needs them")
    raw = subprocess.run(
        ["/usr/lib/apt/apt-helper", "cat-file", lists[0]], capture_output=True, check=True
    ).stdout.decode("utf-8", "replace")
    docs, sections = [], []
    for stanza in raw.split("\n\n"):
        description = re.search(r"^Description: (.*)$", stanza, re.MULTILINE)
        section = re.search(r"^Section: (.*)$", stanza, re.MULTILINE)
        if description:
            docs.append(description.group(1))
            sections.append(section.group(1).split("/")[-1] if section else "unknown")
    vectorizer = CountVectorizer(
        stop_words="english", min_df=5, token_pattern=r"(?u)\b[a-zA-Z][a-zA-Z0-9+]+\b"
    )
    X = vectorizer.fit_transform(docs).tocsr()
    keep = np.asarray(X.sum(axis=1)).ravel() > 0
    X = X[keep]
    names, y = np.unique(np.asarray(sections)[keep], return_inverse=True)
    dump_svmlight_file(X, y, str(svm), zero_based=True)
    vocab.write_text("\n".join(vectorizer.get_feature_names_out()) + "\n")
    (work / "sections.txt").write_text("\n".join(names) + "\n")
    np.save(npy, (X > 0).toarray().astype(np.uint8))
    print(
        f"corpus: {X.shape[0]:,} package descriptions, {X.shape[1]:,} words, "
        f"{X.nnz / X.shape[0]:.2f} distinct words per document ({X.nnz / np.prod(X.shape):.3%} "
        f"ones), {len(names)} sections; docs.svm {svm.stat().st_size / 1e6:.1f} MB, "
        f"docs.npy {npy.stat().st_size / 1e6:.0f} MB"
    )
    return svm, vocab, npy


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--k", default="10,20,40", help="the candidates of select")
    parser.add_argument("--workdir", type=Path, default=None)
    parser.add_argument(
        "--figure", action="store_true", help="copy features.png to docs/debian-features.png"
    )
    args = parser.parse_args()
    work = args.workdir or Path(tempfile.mkdtemp(prefix="bench-corpus-"))
    work.mkdir(parents=True, exist_ok=True)
    svm, vocab, npy = corpus(work)
    data, dense = work / "debian.zarr", work / "debian-npy.zarr"
    seconds_svm = run(
        "ingest", svm, "--feature-names", vocab, "--zero-based", "--out", data, "--overwrite"
    )
    seconds_npy = run("ingest", npy, "--binarize", "none", "--out", dense, "--overwrite")
    same = np.array_equal(zarr.open_array(data / "bits")[...], zarr.open_array(dense / "bits")[...])
    print(
        f"ingest: svmlight with its vocabulary {seconds_svm:.1f} s, dense .npy "
        f"{seconds_npy:.1f} s; the same stored bits: {same}"
    )
    run("info", data)
    selection, report = work / "selection", work / "report"
    seconds = run("select", data, "--k", args.k, "--out", selection, "--overwrite")
    table = json.loads((selection / "selection.json").read_text())
    print(f"select --k {args.k}: {seconds:.0f} s; chose K = {table['n_components']}")
    for row in table["candidates"]:
        print(
            f"  K = {row['n_components']:3}: held-out {row['heldout_loglik']:.3f} nats per "
            f"document, {row['n_iter']} iterations, {row['seconds']:.0f} s"
        )
    run("report", selection, "--data", data, "--out", report, "--overwrite")
    metrics = json.loads((report / "metrics.json").read_text())
    print("heaviest components, top words by lift (mean in the component):")
    for component in sorted(metrics["components"], key=lambda c: -c["weight"])[:6]:
        words = ", ".join(f"{w['name']} ({w['mean']:.2f})" for w in component["top_lift"][:6])
        print(f"  #{component['component']} ({component['weight']:.1%}): {words}")
    if args.figure:
        shutil.copy(report / "features.png", HERE / "docs" / "debian-features.png")
        print("copied features.png to docs/debian-features.png")


if __name__ == "__main__":
    main()
