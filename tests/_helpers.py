"""Helpers the tests share: time limits scaled to the machine, running bmm-dask, checking its
one-line errors, snapshots of folders, waiting for a process, serving a folder over HTTP,
`dask scheduler`/`dask worker` processes, and headless Chromium and matplotlib figures to look
at what a user sees.

Tests import them (``from tests._helpers import ...``); the fixtures stay in ``conftest.py``.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import http.server
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest

#: ``fit`` on a local cluster of one worker process, its dashboard on a free port.
LOCAL_CLUSTER = ("--workers", "1", "--dashboard-address", "127.0.0.1:0")


# --------------------------------------------------------------------------- time limits

#: The reference task of :func:`machine_factor`: a Python process that imports what a bmm-dask
#: command imports, then sorts a million numbers a few times (one core's work).
REFERENCE_TASK = """
import numpy as np
import bmm_dask.cli, dask.array, distributed
x = np.random.default_rng(0).random(1_000_000)
for _ in range(3):
    x = np.sort(np.sin(x) * 1e6 % 1.0)
"""

#: Seconds the reference task takes on an idle machine (the developers' 2-core machine at rest,
#: where it takes about 1.2 s of CPU time; a faster machine counts as this one).
REFERENCE_SECONDS = 1.3

#: How much longer than ``seconds`` times the machine factor :func:`guard` waits: the load may
#: grow after the factor was measured, and a guard is there to end a hang, not to time anything.
GUARD_MARGIN = 3.0


@functools.cache
def machine_factor() -> float:
    """How many times slower than an idle machine this one runs now, at least 1.

    Measured once per test session, when first asked for: the wall time of a Python process
    running :data:`REFERENCE_TASK`, divided by :data:`REFERENCE_SECONDS`. A machine whose two
    cores are shared with two busy processes comes out near 2; at a load of 10 on 2 cores, near 5.

    >>> machine_factor() >= 1.0
    True
    """
    started = time.monotonic()
    subprocess.run([sys.executable, "-c", REFERENCE_TASK], check=True, timeout=600)
    return max(1.0, (time.monotonic() - started) / REFERENCE_SECONDS)


def guard(seconds: float) -> float:
    """A time limit that only ends a hang: ``seconds`` scaled to how slow the machine is now.

    Tests assert what a command does, never how fast (speed belongs in ``benchmarks/``); a time
    limit is there so that a command, server or cluster that hangs fails the test instead of
    holding it for ever. ``seconds`` is a bound an idle machine keeps well within; the limit is
    ``seconds`` x :func:`machine_factor` x :data:`GUARD_MARGIN`, so a busy machine (a load of 10
    on 2 cores) still passes. Use it for every timeout: ``communicate(timeout=guard(60))``,
    ``urlopen(url, timeout=guard(10))``, ``Client(..., timeout=guard(30))``. The helpers here
    that wait (:func:`wait_until`, :func:`run_bmm_dask`, :func:`dask_processes`) apply it to
    their own ``timeout``.

    >>> guard(10) >= 10 * GUARD_MARGIN
    True
    """
    return seconds * machine_factor() * GUARD_MARGIN


# --------------------------------------------------------------------------- running bmm-dask


@dataclass
class Result:
    """What a bmm-dask command ended with: its exit status, stdout and stderr."""

    code: int
    out: str
    err: str

    @classmethod
    def of(cls, done: subprocess.CompletedProcess[str]) -> Result:
        """The result of ``subprocess.run(..., capture_output=True, text=True)``."""
        return cls(done.returncode, done.stdout, done.stderr)


def run_bmm_dask(
    *args: str | os.PathLike[str],
    script: str | None = None,
    env: dict[str, str] | None = None,
    timeout: float = 300,
) -> Result:
    """``bmm-dask ARGS`` in a Python process of its own, run to its end (or killed after
    ``guard(timeout)`` seconds: a hang).

    ``script`` is Python code to run instead of ``python -m bmm_dask``; it finds the command
    line in ``sys.argv[1:]``.
    """
    program = ["-c", script] if script is not None else ["-m", "bmm_dask"]
    done = subprocess.run(
        [sys.executable, *program, *map(str, args)],
        capture_output=True,
        text=True,
        env=env,
        timeout=guard(timeout),
    )
    return Result.of(done)


def start_bmm_dask(
    *args: str | os.PathLike[str], group: bool = False, capture: bool = True
) -> subprocess.Popen[str]:
    """``bmm-dask ARGS`` started in a process of its own, stdout and stderr piped (or thrown
    away without ``capture``).

    With ``group`` it runs in a process group of its own, as a terminal runs it: a signal to
    the group (a Ctrl-C) reaches every process of the command, its local cluster too.
    """
    output = subprocess.PIPE if capture else subprocess.DEVNULL
    return subprocess.Popen(
        [sys.executable, "-m", "bmm_dask", *map(str, args)],
        stdout=output,
        stderr=output,
        text=True,
        start_new_session=group,
    )


def assert_one_line_error(result: Result, *needles: str) -> str:
    """Exit status 2, one line on stderr naming what is wrong, no traceback; returns the line."""
    assert result.code == 2, (result.code, result.out, result.err)
    lines = result.err.strip().splitlines()
    assert len(lines) == 1, result.err
    assert "Traceback" not in result.err
    assert lines[0].startswith("bmm-dask: error: "), lines[0]  # one prefix for every mistake
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])
    return lines[0]


def wait_until(
    ready: Callable[[], object],
    what: str,
    *,
    worker: subprocess.Popen[Any] | threading.Thread | None = None,
    timeout: float = 60,
    interval: float = 0.01,
) -> None:
    """Wait until ``ready()`` is true; fail after ``guard(timeout)`` seconds (a hang), or at once
    when ``worker`` (the process or thread that should bring it about) has ended.

    ``what`` names the awaited event in the failure ("no chunks written after 180 s").
    """
    limit = guard(timeout)
    deadline = time.monotonic() + limit
    while not ready():
        if isinstance(worker, subprocess.Popen) and worker.poll() is not None:
            pytest.fail(f"the command ended before {what}: {worker.communicate()}")
        if isinstance(worker, threading.Thread) and not worker.is_alive():
            pytest.fail(f"the thread ended before {what}")
        assert time.monotonic() < deadline, f"no {what} after {limit:.0f} s"
        time.sleep(interval)


# --------------------------------------------------------------------------- data and files


def random_images(n: int = 100, *shape: int, seed: int = 0) -> np.ndarray:
    """``n`` images of uniformly random uint8 pixels, of ``shape`` (4 x 5 by default)."""
    size = (n, *(shape or (4, 5)))
    return np.random.default_rng(seed).integers(0, 256, size=size, dtype=np.uint8)


def tree_snapshot(root: Path) -> dict[str, tuple[int, int, int, str]]:
    """Every file and folder under ``root``, to compare before and after a command.

    A file maps to its size, inode, modification time (ns) and the md5 of its bytes, so a file
    rewritten or replaced, even with the same bytes, shows; a link to its target; a folder to
    ``"folder"`` (its own modification time changes with any file made and removed in it).
    """
    found = {}
    for folder, dirs, files in os.walk(root):
        for name in dirs + files:
            path = Path(folder) / name
            rel = str(path.relative_to(root))
            if path.is_symlink() or path.is_dir():
                found[rel] = (0, 0, 0, os.readlink(path) if path.is_symlink() else "folder")
                continue
            stat = path.stat()
            digest = hashlib.md5(path.read_bytes(), usedforsecurity=False).hexdigest()
            found[rel] = (stat.st_size, stat.st_ino, stat.st_mtime_ns, digest)
    return found


# --------------------------------------------------------------------------- servers and clusters


class QuietHandler(http.server.SimpleHTTPRequestHandler):
    """Serves the files of a folder, without a log line a request."""

    def log_message(self, format: str, *args: object) -> None:
        pass


@contextlib.contextmanager
def serving(
    folder: Path, handler: type[http.server.BaseHTTPRequestHandler] = QuietHandler, **kwargs: Any
) -> Iterator[http.server.ThreadingHTTPServer]:
    """``folder`` served over HTTP on 127.0.0.1 (any free port) from a thread of this process.

    ``kwargs`` go to ``handler``; the server is stopped on exit, if the test has not stopped it.
    """
    server = http.server.ThreadingHTTPServer(
        ("127.0.0.1", 0), functools.partial(handler, directory=str(folder), **kwargs)
    )
    # a short poll, so that stopping the server takes a twentieth of a second, not half of one
    threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True).start()
    try:
        yield server
    finally:
        server.shutdown()  # returns at once when already shut down
        server.server_close()


def url_of(server: http.server.HTTPServer, scheme: str = "http") -> str:
    """The server's address as a URL without a path: ``http://127.0.0.1:PORT``."""
    return f"{scheme}://127.0.0.1:{server.server_address[1]}"


@contextlib.contextmanager
def dask_processes(
    folder: Path, scheduler_args: Sequence[str], workers: Sequence[Sequence[str]]
) -> Iterator[Path]:
    """`dask scheduler` and `dask worker` processes on 127.0.0.1, as a user starts them.

    Yields the scheduler file once the scheduler has written it whole; each test waits for the
    workers in its own way (with or without TLS). The processes are stopped on exit.
    """

    def dask(*args: str) -> subprocess.Popen[bytes]:
        return subprocess.Popen(
            [sys.executable, "-m", "dask", *args],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )

    scheduler_file = folder / "scheduler.json"
    common = ["--host", "127.0.0.1"]
    processes = [
        dask(
            "scheduler",
            *common,
            "--port",
            "0",
            "--dashboard-address",
            "127.0.0.1:0",
            "--scheduler-file",
            str(scheduler_file),
            "--no-show",
            *scheduler_args,
        )
    ]
    try:
        wait_until(
            lambda: _scheduler_address(scheduler_file) is not None,
            "scheduler file",
            worker=processes[0],
            interval=0.2,
        )
        for args in workers:
            processes.append(
                dask(
                    "worker",
                    "--scheduler-file",
                    str(scheduler_file),
                    *common,
                    "--nthreads",
                    "1",
                    *args,
                )
            )
        yield scheduler_file
    finally:
        # the workers first: a worker whose scheduler has gone tries to reach it for a while
        # before it ends
        _stop(processes[1:])
        _stop(processes[:1])


def _stop(processes: Sequence[subprocess.Popen[bytes]]) -> None:
    """Terminate the processes and wait for them; kill those still there after a guard."""
    for process in processes:
        process.terminate()
    for process in processes:
        try:
            process.wait(timeout=guard(30))
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _scheduler_address(scheduler_file: Path) -> str | None:
    """The address in a scheduler file; None until the scheduler has written it whole.

    The scheduler writes the file in place, so it is there, empty or in part, for a moment
    before its address is (a moment that a busy machine draws out); a client that reads it
    then retries for a tenth of a second only.
    """
    try:
        info = json.loads(scheduler_file.read_text())
    except (OSError, ValueError):
        return None
    address = info.get("address") if isinstance(info, dict) else None
    return address if isinstance(address, str) and address else None


@contextlib.contextmanager
def silent_listener() -> Iterator[str]:
    """A listener that takes connections and never says a word; yields its tcp:// address."""
    listener = socket.create_server(("127.0.0.1", 0))
    taken: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        listener.settimeout(0.1)
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                taken.append(listener.accept()[0])

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        yield f"tcp://127.0.0.1:{listener.getsockname()[1]}"
    finally:
        stop.set()
        thread.join()
        for connection in taken:
            connection.close()
        listener.close()


# --------------------------------------------------------------------------- browser and figures


def find_chromium() -> str:
    """The path of Chromium (or Chrome); the test is skipped on a machine without one."""
    for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable"):
        if path := shutil.which(name):
            return path
    pytest.skip("no Chromium on this machine (Debian: apt-get install chromium)")


def _headless_chromium(page: str | os.PathLike[str], size: tuple[int, int], *args: str) -> str:
    """Run headless Chromium on ``page`` (a URL, or a file) in a profile of its own, offline;
    return its stdout."""
    url = str(page) if "://" in str(page) else Path(page).resolve().as_uri()
    with tempfile.TemporaryDirectory(prefix="chromium-") as profile:
        done = subprocess.run(
            [
                find_chromium(),
                "--headless",
                "--no-sandbox",  # as root, as on CI, Chromium starts only without its sandbox
                "--disable-gpu",
                "--disable-quic",
                "--hide-scrollbars",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--disable-extensions",
                f"--user-data-dir={profile}",
                f"--window-size={size[0]},{size[1]}",
                *args,
                url,
            ],
            check=True,
            capture_output=True,
            text=True,
            timeout=guard(120),  # only against a hang: Chromium takes a second or two
        )
    return done.stdout


def chromium_screenshot(
    page: str | os.PathLike[str], png: str | os.PathLike[str], size: tuple[int, int] = (1200, 900)
) -> np.ndarray:
    """A picture of ``page`` (a URL, or an HTML file) as headless Chromium shows it in a window
    of ``size`` (width, height) pixels, written to ``png``; returns its pixels, of shape
    (height, width, 3), RGB in 0 .. 1. Skips the test where there is no Chromium."""
    from matplotlib import image

    _headless_chromium(page, size, f"--screenshot={Path(png).resolve()}")
    return image.imread(png)[..., :3]


def chromium_dom(page: str | os.PathLike[str], size: tuple[int, int] = (1200, 900)) -> str:
    """The document of ``page`` (a URL, or an HTML file) as headless Chromium parsed it.
    Skips the test where there is no Chromium."""
    return _headless_chromium(page, size, "--dump-dom")


def assert_nothing_cut(fig: Any) -> None:
    """Every text of the matplotlib figure lies inside it (to a pixel)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.text import Text

    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    renderer = canvas.get_renderer()
    box = fig.bbox
    # Texts kept but not drawn: those of an axes turned off, and the labels of ticks beyond
    # the view (a locator gives a tick or two past each end), wherever they lie.
    hidden: set[int] = set()
    for ax in fig.axes:
        for axis in (ax.xaxis, ax.yaxis):
            if not ax.axison:
                hidden.update(id(text) for text in axis.findobj(Text))
                continue
            low, high = sorted(axis.get_view_interval())
            for tick in [*axis.get_major_ticks(), *axis.get_minor_ticks()]:
                place = tick.get_loc()
                if place is None or not low - 1e-9 * (high - low) <= place <= high + 1e-9 * (
                    high - low
                ):
                    hidden.update(id(text) for text in tick.findobj(Text))
    for text in fig.findobj(Text):
        if not (text.get_visible() and text.get_text()) or id(text) in hidden:
            continue
        extent = text.get_window_extent(renderer)
        assert box.x0 - 1 <= extent.x0 and extent.x1 <= box.x1 + 1, text.get_text()
        assert box.y0 - 1 <= extent.y0 and extent.y1 <= box.y1 + 1, text.get_text()
