"""Opening a Dask client: a local cluster of worker processes by default, or a scheduler by address or file."""

from __future__ import annotations

import contextlib
import copy
import json
import logging
import math
import os
import signal
import socket
import struct
import threading
import time
from collections.abc import Iterator
from typing import Any

import dask

from bmm_dask.errors import SettingsError, setting

__all__ = [
    "check_dashboard_address",
    "minimum_memory_limit",
    "open_client",
    "parse_memory_limit",
    "task_memory",
]

logger = logging.getLogger(__name__)

#: distributed starts worker processes with MALLOC_TRIM_THRESHOLD_=65536, which also fixes
#: glibc's mmap threshold, so every large temporary array is fresh, zero-filled memory, and the
#: E-step runs markedly slower in such a worker than without it.
#: The local cluster leaves it unset (a cluster of the user's keeps its own settings).
NO_TRIM = "distributed.nanny.pre-spawn-environ.MALLOC_TRIM_THRESHOLD_"

#: Seconds to connect to a scheduler before giving up.
CONNECT_TIMEOUT = 10.0

#: Seconds to wait for the first bytes of whatever listens at a scheduler's address, and then
#: for its answer to ``GET /``: a scheduler on this network greets in milliseconds.
GREETING_WAIT = 2.0

#: Workers of the local cluster that all stay down this long while tasks wait make the tasks
#: fail (``NoWorkerError``) instead of waiting for ever: a worker killed by its memory limit
#: while it starts, before it reaches the scheduler, never counts as a failure of a task.
NO_WORKERS_TIMEOUT = "60s"

#: Resident memory of a worker process of this package, the data and the tasks aside: a little
#: over what a worker of the local cluster of ``bmm-dask fit`` was measured to hold once it had
#: imported bmm_dask, NumPy, Zarr and dask.array, and at its peak through a small fit. A worker
#: held to less is restarted by Dask's memory monitor as soon as it starts, for ever.
WORKER_BYTES = 165_000_000

#: What the command says when an HTTP server answers at a scheduler's address.
HTTP_ANSWER = (
    "an HTTP server answered, not a Dask scheduler (the dashboard? a scheduler listens on "
    "port 8786 by default)"
)


def parse_memory_limit(value: str | int | None) -> str | int | None:
    """A worker's memory limit: ``"auto"``, or bytes from a size such as ``"2GB"`` or ``"500MiB"``.

    Parameters
    ----------
    value : str, int or None
        A size as Dask writes it, a number of bytes, ``"auto"`` or None.

    Returns
    -------
    str, int or None
        None and ``"auto"`` as they are, else the limit in bytes.

    Raises
    ------
    SettingsError
        For anything else, zero and negative sizes included.
    """
    from dask.utils import parse_bytes

    if value is None or value == "auto":
        return value
    try:
        n = value if isinstance(value, int) else parse_bytes(str(value))
    except (ValueError, OverflowError):  # "lots", "nan", "1e999GB"
        n = 0
    if n <= 0:
        raise SettingsError(
            f"{setting('--memory-limit')} must be a size such as 2GB or 500MiB, or auto; got {value!r}"
        )
    return n


def task_memory(n_features: int, n_components: int, itemsize: int = 8) -> int:
    """Bytes an E-step task holds at its peak, roughly (it errs high).

    A task reads up to 8 chunks of packed rows at once, as long as they are at most
    ``GROUP_READ_BYTES`` (compressed, decompressed and joined: about 4 copies, which matches
    what a worker was seen to grow by), holds the
    responsibilities of a chunk (rows x K) and, for each of the chunks, statistics and
    parameters of K x D floats. Its chunks are of at most ``default_chunk_rows`` rows, whatever
    the store's (``bmm_dask._estep.task_blocks``).

    Parameters
    ----------
    n_features : int
        Number of features D.
    n_components : int
        Number of components K.
    itemsize : int, default=8
        Bytes per float of the responsibilities (4 for float32, 8 for float64).

    Returns
    -------
    int
        The estimate, in bytes.
    """
    from bmm_dask._estep import GROUP_READ_BYTES
    from bmm_dask.io import default_chunk_rows

    rows = default_chunk_rows(n_features)
    packed_chunk = rows * -(-n_features // 8)
    read = min(8 * packed_chunk, max(GROUP_READ_BYTES, packed_chunk))
    return int(4 * read + rows * n_components * itemsize + 12 * n_components * n_features * 8)


def minimum_memory_limit(task_bytes: float = 0, threads: int = 1) -> int:
    """The smallest memory limit under which a worker is not restarted by Dask's memory monitor.

    The monitor restarts a worker at ``distributed.worker.memory.terminate`` (95 % of the limit
    by default); the worker needs ``WORKER_BYTES`` of its own plus ``task_bytes`` for each of
    its threads. The estimate was checked against the peak memory of workers running the
    streamed E-step.

    Parameters
    ----------
    task_bytes : float, default=0
        Memory one task needs, as from :func:`task_memory`.
    threads : int, default=1
        Threads of the worker, each running a task.

    Returns
    -------
    int
        The limit in bytes, rounded up to 10 MB.
    """
    fraction = dask.config.get("distributed.worker.memory.terminate") or 1.0
    need = (WORKER_BYTES + threads * task_bytes) / float(fraction)
    return int(math.ceil(need / 10e6) * 10_000_000)


def check_dashboard_address(value: str) -> str:
    """Check a dashboard address: ``HOST:PORT``, ``:PORT`` or ``PORT``, the port from 0 to 65535.

    Port 0 means any free one.

    Parameters
    ----------
    value : str
        The address.

    Returns
    -------
    str
        ``value``, unchanged.

    Raises
    ------
    SettingsError
        For another form (Dask takes no IPv6 address in brackets either), a port out of range,
        or a host name that does not resolve.
    """
    host, _, port = value.rpartition(":")
    if not (port.isascii() and port.isdigit() and int(port) <= 65535) or ":" in host:
        raise SettingsError(
            f"{setting('--dashboard-address')} must be HOST:PORT, :PORT or PORT with a port from 0 to 65535; "
            f"got {value!r}"
        )
    if host:
        try:
            socket.getaddrinfo(host, int(port))
        except (OSError, UnicodeError) as err:
            reason = getattr(err, "strerror", None) or str(err)
            raise SettingsError(
                f"{setting('--dashboard-address')} {value!r}: cannot resolve host {host!r} ({reason})"
            ) from err
    return value


def _megabytes(n: float) -> str:
    return f"{n / 1e9:.1f} GB" if n >= 1e10 else f"{n / 1e6:,.0f} MB"


def _read_scheduler_file(path: str | os.PathLike[str]) -> str:
    """The address in a scheduler file (JSON from ``dask scheduler --scheduler-file``)."""
    try:
        with open(path, encoding="utf-8") as f:
            info = json.load(f)
    except OSError as err:
        raise SettingsError(f"{path}: cannot read the scheduler file: {err.strerror}") from err
    except ValueError as err:  # not JSON, or not UTF-8
        raise SettingsError(
            f"{path}: not a scheduler file: not JSON ({err}); dask scheduler --scheduler-file "
            "writes one"
        ) from err
    address = info.get("address") if isinstance(info, dict) else None
    if not isinstance(address, str) or not address:
        raise SettingsError(
            f'{path}: not a scheduler file: it has no "address"; dask scheduler '
            "--scheduler-file writes one"
        )
    return address


def _receive(sock: socket.socket, wait: float, at_least: int) -> bytes:
    """What arrives on ``sock`` within ``wait`` seconds, until ``at_least`` bytes or its end."""
    data = b""
    deadline = time.monotonic() + wait
    while len(data) < at_least:
        left = deadline - time.monotonic()
        if left <= 0:
            break
        sock.settimeout(left)
        try:
            chunk = sock.recv(65536)
        except (TimeoutError, OSError):
            break
        if not chunk:
            break
        data += chunk
    return data


def _greeting_length(data: bytes) -> int | None:
    """Bytes of a Dask handshake that starts ``data`` (a length, a count of frames, their
    lengths), or None when ``data`` cannot start one."""
    if len(data) < 16:
        return None
    total, n_frames = struct.unpack("<QQ", data[:16])
    if not 1 <= n_frames <= 64 or not 8 * (1 + n_frames) <= total <= 1 << 20:
        return None
    return 8 + total


def _what_answers(host: str, port: int) -> str | None:
    """What listens at ``host:port`` when it is not a Dask scheduler, in words; None when it
    is one, or when nothing can be said (nothing listens there: the client says so)."""
    try:
        sock = socket.create_connection((host, port), timeout=CONNECT_TIMEOUT)
    except OSError:
        return None
    with sock:
        data = _receive(sock, GREETING_WAIT, 16)
        length = _greeting_length(data)
        if length is not None:
            data += _receive(sock, GREETING_WAIT, length - len(data))
            if len(data) == length:
                # The scheduler's own greeting, sent back as ours, completes the handshake: a
                # scheduler logs every connection that closes before it does.
                with contextlib.suppress(OSError):
                    sock.sendall(data)
            return None
        if not data:  # a Dask scheduler greets at once; ask the silent one for a web page
            with contextlib.suppress(OSError):
                sock.sendall(b"GET / HTTP/1.0\r\n\r\n")
                data = _receive(sock, GREETING_WAIT, 16)
            if not data:
                return (
                    "something there took the connection but did not greet as a Dask scheduler does"
                )
    if data.startswith(b"HTTP/"):
        return HTTP_ANSWER
    if data[:1] in (b"\x15", b"\x16") and data[1:2] == b"\x03":
        return "a TLS server answered; a scheduler with TLS takes a tls:// address"
    said = data.split(b"\n", 1)[0].strip()[:40]
    if said and all(32 <= byte < 127 for byte in said):  # a banner: "SSH-2.0-OpenSSH_9.6"
        return f"something that is not a Dask scheduler answered ({said.decode()!r})"
    return "something that is not a Dask scheduler answered"


def _check_listener(address: str, failure: str) -> None:
    """Refuse a tcp:// address where something other than a Dask scheduler listens.

    distributed's client sends its handshake and then waits for the scheduler's without a
    time limit, so an HTTP server (the dashboard's port 8787 for the scheduler's 8786) or any
    listener that waits for a request would hold the command for ever. A scheduler greets as
    soon as it takes a connection; what does not is asked for a web page, to tell an HTTP
    server from the rest.
    """
    from distributed.comm import parse_address
    from distributed.comm.addressing import parse_host_port

    try:
        scheme, location = parse_address(address)
        if scheme != "tcp":
            return
        host, port = parse_host_port(location)
    except (ValueError, TypeError):
        return  # the client says what is wrong with the address
    what = _what_answers(host, int(port))
    if what is not None:
        raise SettingsError(f"{failure}: {what}")


def _connect(failure: str, named: str, **where: str) -> Any:
    """A Client for a running scheduler (``named``, by ``address`` or ``scheduler_file``), or a
    SettingsError that says why not, in one line."""
    from distributed import Client

    _check_listener(named, failure)
    try:
        return Client(**where, timeout=CONNECT_TIMEOUT)
    except (OSError, TypeError, ValueError) as err:  # refused, timed out, or no TLS settings
        _forget_unstarted_clients()
        reason = " ".join(str(err).split()) or type(err).__name__
        raise SettingsError(f"{failure} ({reason})") from err


def _forget_unstarted_clients() -> None:
    """Unregister the clients of this process that failed to start.

    distributed registers a Client as the default before it connects, and keeps it there when
    the connection fails: every later computation in the process (a script or a test that goes
    on after the error) would wait on it until it times out.
    """
    from distributed import client as module

    clients = getattr(module, "_global_clients", {})
    forget = getattr(module, "_del_global_client", None)
    for client in list(clients.values()):
        if client.status not in ("running", "connecting", "closing") and forget is not None:
            forget(client)


def _killed_message(err: Exception, where: str) -> str:
    """One line for tasks that failed because the workers that ran them kept dying."""
    from dask.utils import key_split

    task = key_split(getattr(err, "task", "?"))
    doing = {
        "bmm-estep": "the E-step",
        "bmm-combine": "the E-step",
        "bmm-read-bits": "a read of the data",
        "bmm-window": "a read of the data",
        "bmm-step": "a stepwise step",
    }.get(task, f"task {task}")
    allowed_failures = getattr(err, "allowed_failures", None)  # KilledWorker has it
    if allowed_failures is not None:
        return f"the workers died {allowed_failures + 1} times running {doing}; {where}"
    # NoWorkerError, or NoValidWorkerError: the only restrictions bmm_dask puts on tasks (the
    # stepwise window reads) let them run on any worker, so they too fail only with none up.
    return (
        f"the workers kept dying before they could run {doing} (none was up for "
        f"{NO_WORKERS_TIMEOUT}); {where}"
    )


@contextlib.contextmanager
def open_client(
    *,
    scheduler: str | None = None,
    scheduler_file: str | os.PathLike[str] | None = None,
    workers: int | None = None,
    threads_per_worker: int | None = None,
    memory_limit: str | int | None = None,
    dashboard_address: str = "127.0.0.1:8787",
    worker_logs: int = logging.CRITICAL,
    task_bytes: float = 0,
) -> Iterator[object]:
    """A ``distributed.Client`` for the duration of a command.

    With ``scheduler`` (an address such as ``tcp://host:8786``), ``scheduler_file``, or the
    ``DASK_SCHEDULER_ADDRESS`` environment variable, it connects to that cluster, with the TLS
    certificates of the Dask configuration when it has them (``distributed.comm.tls.*``, e.g.
    ``DASK_DISTRIBUTED__COMM__TLS__CA_FILE``) for a ``tls://`` address. Otherwise it
    starts a local cluster of ``workers`` processes (the number of cores by default) of
    ``threads_per_worker`` threads (1), each held to ``memory_limit`` ("2GB", "auto", at least
    :func:`minimum_memory_limit` of ``task_bytes``, the memory a task needs), with the
    scheduler and the dashboard listening on 127.0.0.1 only; the cluster stops on exit. Its
    processes log at ``worker_logs`` and above (the command reports failures itself).

    Parameters
    ----------
    scheduler : str, default=None
        Address of a running scheduler.
    scheduler_file : str or path-like, default=None
        A scheduler file, as ``dask scheduler --scheduler-file`` writes it.
    workers : int, default=None
        Worker processes of the local cluster; None means the number of cores.
    threads_per_worker : int, default=None
        Threads per worker of the local cluster; None means 1.
    memory_limit : str or int, default=None
        Memory per worker of the local cluster (see :func:`parse_memory_limit`); None means
        "auto".
    dashboard_address : str, default="127.0.0.1:8787"
        Where the local cluster's dashboard listens (see :func:`check_dashboard_address`).
    worker_logs : int, default=logging.CRITICAL
        Lowest level of the local cluster's processes' log messages that are shown.
    task_bytes : float, default=0
        Memory one task needs, as from :func:`task_memory`.

    Yields
    ------
    distributed.Client
        The client, closed (and the local cluster stopped) on exit.

    Raises
    ------
    SettingsError
        For settings that do not go together or are out of range, a scheduler that cannot be
        reached, and (from the body) tasks that failed because their workers kept dying.
    """
    from distributed import Client, KilledWorker, LocalCluster
    from distributed.scheduler import NoValidWorkerError, NoWorkerError

    address = scheduler or os.environ.get("DASK_SCHEDULER_ADDRESS")
    if address and scheduler_file:
        raise SettingsError(
            f"give {setting('--scheduler')} or {setting('--scheduler-file')}, not both"
        )
    if (address or scheduler_file) and (workers or threads_per_worker or memory_limit):
        raise SettingsError(
            f"{setting('--workers')}, {setting('--threads-per-worker')} and "
            f"{setting('--memory-limit')} set up a local cluster; they do not go with "
            f"{setting('--scheduler')} or {setting('--scheduler-file')}"
        )
    for name, value in (("--workers", workers), ("--threads-per-worker", threads_per_worker)):
        if value is not None and value < 1:
            raise SettingsError(f"{setting(name)} must be at least 1; got {value}")
    remote = "see the workers' logs (their memory limit may be too small)"
    if scheduler_file:
        if not os.path.isfile(scheduler_file):
            raise SettingsError(f"{scheduler_file}: no such scheduler file")
        named = _read_scheduler_file(scheduler_file)
        try:
            with _connect(
                f"{scheduler_file}: cannot connect to the scheduler it names ({named})",
                named,
                scheduler_file=os.fspath(scheduler_file),
            ) as client:
                yield client
        except KilledWorker as err:
            raise SettingsError(_killed_message(err, remote)) from err
        return
    if address:
        try:
            with _connect(
                f"{address}: cannot connect to a Dask scheduler there", address, address=address
            ) as client:
                yield client
        except KilledWorker as err:
            raise SettingsError(_killed_message(err, remote)) from err
        return
    n_workers = workers or os.cpu_count() or 1
    threads = threads_per_worker or 1
    if isinstance(dashboard_address, str):
        check_dashboard_address(dashboard_address)
    requested = parse_memory_limit(memory_limit) or "auto"
    limit = _worker_memory(requested, threads)
    minimum = minimum_memory_limit(task_bytes, threads)
    if limit is not None and limit < minimum:
        if memory_limit in (None, "auto"):
            raise SettingsError(
                f"a worker of the local cluster would get {_megabytes(limit)} of memory "
                f"(this machine's, shared out by threads), less than the {_megabytes(minimum)} "
                f"it needs; give {setting('--memory-limit')}, or use fewer "
                f"{setting('--workers')} of more {setting('--threads-per-worker')}"
            )
        raise SettingsError(
            f"{setting('--memory-limit')} {memory_limit} is too small: a worker needs at least "
            f"{_megabytes(minimum)} (about {_megabytes(WORKER_BYTES)} for the process itself, the "
            f"rest for its tasks), or Dask restarts it over and over"
        )
    where = (
        f"their memory limit of {_megabytes(limit)} may be too small: raise "
        f"{setting('--memory-limit')} or use fewer, larger workers"
        if limit is not None
        else "see their logs (run with -v)"
    )
    local_settings = {
        NO_TRIM: None,
        "distributed.scheduler.no-workers-timeout": NO_WORKERS_TIMEOUT,
        # A worker over 80 % of its limit is paused until its memory falls, which for memory
        # that the tasks freed but the allocator keeps (seen: 191 MiB of 238 after three
        # iterations) is never: the fit hung. Unpaused, it finishes, or its worker is restarted
        # at 95 % and the tasks fail after a few restarts (KilledWorker), which is said below.
        "distributed.worker.memory.pause": False,
    }
    with dask.config.set(local_settings):
        # Handed to the nannies whole: a nanny's own copy of the configuration shares its
        # nested parts with the global one, which this block puts back as it ends, so a worker
        # restarted later would start without these settings.
        distributed_settings = copy.deepcopy(dask.config.get("distributed"))
        cluster = LocalCluster(
            n_workers=n_workers,
            threads_per_worker=threads,
            processes=True,
            memory_limit=requested,
            host="127.0.0.1",
            dashboard_address=dashboard_address,
            silence_logs=worker_logs,
            preload=[__name__],  # dask_setup
            config={"distributed": distributed_settings},
        )
    try:
        with cluster, Client(cluster) as client:
            yield client
    except (KilledWorker, NoWorkerError, NoValidWorkerError) as err:
        raise SettingsError(_killed_message(err, where)) from err


def dask_setup(worker: Any) -> None:
    """Make a worker process of the local cluster ignore SIGINT (run in it as a Dask preload).

    Ctrl-C in a terminal reaches every process of the command, and Python would stop each
    worker with a KeyboardInterrupt traceback; the command shuts its workers down itself.

    Parameters
    ----------
    worker : distributed.Worker
        The worker that runs the preload (unused).
    """
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGINT, signal.SIG_IGN)


def _worker_memory(memory_limit: str | int, threads: int) -> int | None:
    """Bytes a worker of ``threads`` threads may hold under ``memory_limit`` ("auto": this
    machine's memory shared out by threads, as Dask does); None for no limit."""
    from distributed.worker_memory import parse_memory_limit as dask_memory_limit

    return dask_memory_limit(memory_limit, threads, logger=logger)
