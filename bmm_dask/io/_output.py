"""Writing an output whole, one writer at a time: a lock beside it, a temporary sibling, a rename
that never replaces what another command put there meanwhile."""

from __future__ import annotations

import contextlib
import ctypes
import errno
import functools
import json
import os
import shutil
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

from bmm_dask.errors import OutputError, setting


def is_url(path: str | os.PathLike[str]) -> bool:
    """Whether ``path`` is a URL (holds ``://``) rather than a path on this machine.

    Parameters
    ----------
    path : str or path-like
        A path or URL.

    Returns
    -------
    bool
    """
    return "://" in str(path)


def _filesystem(url: str) -> tuple[Any, str]:
    """The fsspec filesystem of a URL, and the path within it.

    Raises
    ------
    DependencyError
        When the package for the URL's protocol (s3fs for ``s3://``) is not installed.
    """
    from bmm_dask.errors import DependencyError

    try:
        import fsspec.core

        return fsspec.core.url_to_fs(url)
    except ImportError as err:
        protocol = url.split("://", 1)[0]
        extra = {"s3": "s3", "gs": "gcs", "gcs": "gcs", "http": "http", "https": "http"}
        raise DependencyError(
            f"{url}: reading and writing {protocol}:// needs a package that is not installed "
            f"(pip install 'bmm-dask[{extra.get(protocol, protocol)}]'): {err}"
        ) from err


def join(base: str | os.PathLike[str], name: str) -> str:
    """``base/name``, for a local path or a URL (where ``Path`` would fold ``s3://`` to
    ``s3:/``).

    Parameters
    ----------
    base : str or path-like
        A folder or a URL.
    name : str
        A name within it.

    Returns
    -------
    str
    """
    text = os.fspath(base)
    return f"{text.rstrip('/')}/{name}" if is_url(text) else os.path.join(text, name)


def exists(path: str | os.PathLike[str]) -> bool:
    """Whether a file or folder exists, on this machine or at a URL.

    Parameters
    ----------
    path : str or path-like

    Returns
    -------
    bool
    """
    text = os.fspath(path)
    if is_url(text):
        fs, inner = _filesystem(text)
        fs.invalidate_cache()  # another process may have written or removed it since
        return bool(fs.exists(inner))
    return os.path.exists(text) or os.path.islink(text)


def remove_output(path: str | os.PathLike[str]) -> None:
    """Remove a folder (or a file), on this machine or at a URL; nothing if it is not there.

    Parameters
    ----------
    path : str or path-like
    """
    text = os.fspath(path)
    if is_url(text):
        fs, inner = _filesystem(text)
        fs.invalidate_cache()
        with contextlib.suppress(FileNotFoundError):
            fs.rm(inner, recursive=True)
        return
    if os.path.isdir(text) and not os.path.islink(text):
        shutil.rmtree(text, ignore_errors=True)
    else:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(text)


def _upload(local: Path, url: str, *, overwrite: bool) -> None:
    """Copy a folder written here to a URL, its root ``zarr.json`` last.

    Object stores have no rename: a reader finds a store by its root ``zarr.json``, so the
    store appears only once everything else is there. A store it replaces is removed first, so
    a reader never sees parts of both.
    """
    fs, inner = _filesystem(url)
    fs.invalidate_cache()
    if fs.exists(inner):
        if not overwrite:
            raise OutputError(
                f"{url}: appeared while this command was writing it; pass "
                f"{setting('--overwrite')} to replace it"
            )
        with contextlib.suppress(FileNotFoundError):
            fs.rm(f"{inner.rstrip('/')}/zarr.json")  # readers stop finding the old store first
        fs.rm(inner, recursive=True)
    files = sorted(f for f in local.rglob("*") if f.is_file())
    root = local / "zarr.json"
    for file in [f for f in files if f != root] + ([root] if root in files else []):
        fs.put_file(os.fspath(file), f"{inner.rstrip('/')}/{file.relative_to(local).as_posix()}")
    fs.invalidate_cache()


def _local_input(path: str | os.PathLike[str]) -> Path | None:
    """The file or folder on this machine that an input path reads (a zip for ``x.zip/train``)."""
    text = os.fspath(path)
    if is_url(text):
        return None
    zip_file, sep, _ = text.partition(".zip/")
    return Path(zip_file + ".zip" if sep else text).resolve()


def check_not_input(
    target: str | os.PathLike[str], inputs: Sequence[str | os.PathLike[str] | None]
) -> None:
    """Refuse an output that is an input, holds one, or lies inside one (after symlinks).

    Replacing such an output (``--overwrite``) would destroy the data being read; writing inside
    one would change it. The current folder and the folders above it are refused as outputs
    too: replacing them would take everything in them.

    Parameters
    ----------
    target : str or path-like
        The output.
    inputs : sequence of paths or None
        What the command reads (None entries and URLs are skipped; ``x.zip/train`` counts as
        ``x.zip``).

    Raises
    ------
    OutputError
        If ``target`` is the current folder or above it, or is, holds or lies inside an input.
    """
    if is_url(target):
        text = os.fspath(target).rstrip("/")
        for given in inputs:
            other = os.fspath(given).rstrip("/") if given is not None else ""
            if (
                other
                and is_url(other)
                and (text == other or other.startswith(text + "/") or text.startswith(other + "/"))
            ):
                raise OutputError(
                    f"{target}: is, holds or lies inside {given}, an input of this command; choose another output"
                )
        return
    out = Path(target).resolve()
    cwd = Path.cwd().resolve()
    if out == cwd or out in cwd.parents:
        raise OutputError(
            f"{target}: is the current folder or holds it; write to a new folder inside it"
        )
    for given in inputs:
        if given is None:
            continue
        source = _local_input(given)
        if source is None:
            continue
        if out == source:
            raise OutputError(f"{target}: is an input of this command; choose another output")
        if out in source.parents:
            raise OutputError(
                f"{target}: holds {given}, an input of this command; choose another output"
            )
        if source in out.parents:
            raise OutputError(
                f"{target}: lies inside {given}, an input of this command; choose another output"
            )


def check_output(
    target: str | os.PathLike[str],
    *,
    overwrite: bool,
    inputs: Sequence[str | os.PathLike[str] | None] = (),
    urls: bool = False,
) -> None:
    """Refuse an output that exists (unless ``overwrite``), that is or holds one of ``inputs``,
    or that cannot be written: its folder, or the nearest folder above it that exists (missing
    ones are created as the output is written), is a file or read-only.

    Parameters
    ----------
    target : str or path-like
        The output: a local path, or a URL that fsspec writes (``s3://bucket/model.zarr``).
    overwrite : bool
        Whether an existing output may be replaced.
    inputs : sequence of paths, default=()
        What the command reads; ``target`` may be none of them (see :func:`check_not_input`).
    urls : bool, default=False
        Whether ``target`` may be a URL: models, selections and checkpoints (small, written
        here and copied there) may; datasets and predictions, written chunk by chunk by the
        workers, may not.

    Raises
    ------
    OutputError
        If ``target`` exists (without ``overwrite``), is or holds an input, cannot be written,
        or is a URL where one is not taken.
    DependencyError
        If ``target`` is a URL whose protocol needs a package that is not installed.
    """
    if is_url(target) and not urls:
        raise OutputError(f"{target}: outputs are written to a folder on this machine, not a URL")
    if is_url(target):
        check_not_input(target, inputs)
        fs, inner = _filesystem(os.fspath(target))
        try:
            there = exists(target)
            bucket = inner.split("/", 1)[0]
            if "/" in inner.strip("/") and not fs.exists(bucket):
                raise OutputError(f"{target}: cannot write there: no bucket {bucket}")
        except OutputError:
            raise
        except Exception as err:  # credentials, network: whatever the store's library says
            raise OutputError(f"{target}: cannot reach it: {err}") from err
        if there and not overwrite:
            raise OutputError(
                f"{target}: exists already; pass {setting('--overwrite')} to replace it"
            )
        return
    target = Path(target)
    check_not_input(target, inputs)
    if (target.exists() or target.is_symlink()) and not overwrite:
        raise OutputError(f"{target}: exists already; pass {setting('--overwrite')} to replace it")
    # Missing folders above the output are created when it is written (as zarr does): the
    # nearest one that exists must be a folder this process can write in.
    parent = target.absolute().parent
    while not (parent.exists() or parent.is_symlink()) and parent != parent.parent:
        parent = parent.parent
    if not parent.is_dir():
        raise OutputError(f"{target}: cannot write there: {parent} is not a folder")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise OutputError(f"{target}: cannot write there: {parent} is not writable")


@contextlib.contextmanager
def atomic_output(
    path: str | os.PathLike[str],
    *,
    overwrite: bool = False,
    inputs: Sequence[str | os.PathLike[str] | None] = (),
    urls: bool = False,
) -> Iterator[Path]:
    """Write a folder (a Zarr store) under a temporary sibling name, then rename it into place.

    The body writes into the yielded folder. If it raises, or the process is interrupted, the
    temporary folder is removed and ``path`` is untouched: an existing output is replaced only
    once the new one is complete (and only with ``overwrite``). The output's lock
    (:func:`output_lock`) is held throughout, so two commands never write one output at once,
    and an output that appears meanwhile is never replaced without ``overwrite``.

    At a URL (object storage, which has no rename), the folder is written here and copied
    there when complete, its root ``zarr.json`` last, so that readers find the store only once
    it is whole; a store it replaces is removed just before. No lock is taken there: a job's
    output is guarded by the cluster's list of jobs.

    Parameters
    ----------
    path : str or path-like
        The output folder, or a URL.
    overwrite : bool, default=False
        Whether an existing output may be replaced.
    inputs : sequence of paths, default=()
        What the command reads; ``path`` may be none of them (see :func:`check_not_input`).
    urls : bool, default=False
        Whether ``path`` may be a URL (see :func:`check_output`).

    Yields
    ------
    Path
        The temporary folder to write into (on this machine).

    Raises
    ------
    OutputError
        When ``path`` exists and ``overwrite`` is false, is or holds one of ``inputs``, or its
        parent folder is missing or cannot be written.
    """
    check_output(path, overwrite=overwrite, inputs=inputs, urls=urls)
    if is_url(path):  # written here, then copied there whole (see _upload)
        local = Path(tempfile.mkdtemp(prefix="bmm-dask-", suffix=".tmp"))
        try:
            yield local
            _upload(local, os.fspath(path), overwrite=overwrite)
        finally:
            shutil.rmtree(local, ignore_errors=True)
        return
    target = Path(path)
    parent = target.absolute().parent
    with output_lock(target):
        check_output(target, overwrite=overwrite, inputs=inputs)  # again, now that we hold it
        try:
            tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".tmp", dir=parent))
        except OSError as err:
            raise OutputError(f"{target}: cannot write in {parent}: {err.strerror}") from err
        try:
            # mkdtemp makes a private (0700) folder; give the store the usual permissions.
            umask = os.umask(0)
            os.umask(umask)
            tmp.chmod(0o777 & ~umask)
            yield tmp
            _replace(tmp, target, overwrite=overwrite)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise


def atomic_file(
    final: str | os.PathLike[str], write: Callable[[Path], Any], *, overwrite: bool = True
) -> Path:
    """Write a file under a temporary name in its folder (``write(tmp)``), then rename it into place.

    Without ``overwrite`` a file that exists at the moment of the rename is left alone and
    :class:`OutputError` raised.

    Parameters
    ----------
    final : str or path-like
        The file to write, in a folder that exists.
    write : callable
        Called with the temporary file's path; writes the content there.
    overwrite : bool, default=True
        Whether an existing file may be replaced.

    Returns
    -------
    Path
        ``final``.

    Raises
    ------
    OutputError
        Without ``overwrite``, if ``final`` exists when the file is renamed into place.
    """
    if is_url(final):  # an object is written whole by one request
        fd, tmp_name = tempfile.mkstemp(prefix="bmm-dask-", suffix=".part")
        os.close(fd)
        try:
            write(Path(tmp_name))
            if not overwrite and exists(final):
                raise OutputError(
                    f"{final}: exists already; pass {setting('--overwrite')} to replace it"
                )
            fs, inner = _filesystem(os.fspath(final))
            fs.put_file(tmp_name, inner)
        finally:
            os.unlink(tmp_name)
        return Path(os.fspath(final))
    final = Path(final)
    fd, tmp_name = tempfile.mkstemp(
        prefix=f".{final.name}.", suffix=".part", dir=final.absolute().parent
    )
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        write(tmp)
        tmp.chmod(0o644)
        if overwrite:
            os.replace(tmp, final)
        else:
            try:  # a hard link is created whole, and never over an existing name
                os.link(tmp, final)
            except FileExistsError:
                raise OutputError(
                    f"{final}: appeared while this command was writing it; pass {setting('--overwrite')} to replace it"
                ) from None
    finally:
        tmp.unlink(missing_ok=True)
    return final


def _renameat2(source: Path, target: Path, flag: int) -> int | None:
    """Linux renameat2 with ``flag``: 0 when done, else the error's code; None where the
    system has no such call."""
    libc = _libc()
    renameat2 = getattr(libc, "renameat2", None) if libc is not None else None
    if renameat2 is None:
        return None
    at_fdcwd = -100
    if renameat2(at_fdcwd, os.fsencode(source), at_fdcwd, os.fsencode(target), flag) == 0:
        return 0
    return ctypes.get_errno()


#: Error codes of renameat2 that mean the filesystem or kernel cannot do it in one step.
_CANNOT = (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP)


def _rename_exchange(source: Path, target: Path) -> bool:
    """Swap ``source`` and ``target`` in one step (Linux renameat2), so that a reader never
    finds ``target`` missing while it is replaced. Returns False where the system cannot."""
    code = _renameat2(source, target, 2)  # RENAME_EXCHANGE
    if code is None or code in (*_CANNOT, errno.ENOENT):  # or target gone meanwhile
        return False
    if code:
        raise OSError(code, os.strerror(code), os.fspath(target))
    return True


def _rename_noreplace(source: Path, target: Path) -> bool:
    """Rename ``source`` to ``target`` unless ``target`` exists, in one step (Linux renameat2).

    Returns False where the system cannot do it in one step (the caller then checks under its
    lock); raises FileExistsError when ``target`` exists.
    """
    code = _renameat2(source, target, 1)  # RENAME_NOREPLACE
    if code is None or code in _CANNOT:
        return False
    if code == errno.EEXIST:
        raise FileExistsError(code, os.strerror(code), os.fspath(target))
    if code:
        raise OSError(code, os.strerror(code), os.fspath(target))
    return True


@functools.cache
def _libc() -> Any:
    try:
        return ctypes.CDLL(None, use_errno=True)
    except OSError:
        return None


def _replace(tmp: Path, target: Path, *, overwrite: bool) -> None:
    if not (target.exists() or target.is_symlink()):
        try:
            if _rename_noreplace(tmp, target):
                return
        except FileExistsError:
            pass  # another writer finished first: refused below, unless overwrite
        else:
            if not (target.exists() or target.is_symlink()):
                os.rename(tmp, target)
                return
    if not overwrite:
        raise OutputError(
            f"{target}: appeared while this command was writing it; pass {setting('--overwrite')} to replace it"
        )
    if _rename_exchange(tmp, target):  # the old output now lies at tmp's name
        old = tmp
    else:
        old = target.with_name(f".{target.name}.{uuid.uuid4().hex[:8]}.old")
        os.rename(target, old)
        os.rename(tmp, target)
    if old.is_dir() and not old.is_symlink():
        shutil.rmtree(old, ignore_errors=True)
    else:
        old.unlink(missing_ok=True)


#: Locks this process holds, by path, with how many times each is held (a fit holds its output's
#: lock and saves the model through atomic_output, which takes it again).
_HELD_LOCKS: dict[str, int] = {}

#: An empty or unreadable lock younger than this may be one being written by another process
#: (locks of older versions were written after they were created); older ones are stale.
UNREADABLE_LOCK_SECONDS = 10.0


@contextlib.contextmanager
def output_lock(path: str | os.PathLike[str], *, owner: str | None = None) -> Iterator[None]:
    """Hold ``PATH.lock`` while a command writes ``path``; refuse when another live process does.

    A lock left by a process that no longer runs (killed, say) on this machine is taken over, and
    so is an empty or unreadable one more than a few seconds old, and one of the same ``owner``.
    The lock is re-entrant within a process. At a URL nothing is locked: object stores offer no
    file that one writer alone can create; a submitted job's output is guarded by its cluster.

    Parameters
    ----------
    path : str or path-like
        The output; the lock is ``PATH.lock`` beside it.
    owner : str, default=None
        Who takes the lock: a submitted job's id. Dask runs a job's driver again on another
        worker when the first one dies, and the new attempt takes over the lock of the old one,
        whose process it cannot see from another machine.

    Yields
    ------
    None
        While the lock is held; it is removed on exit.

    Raises
    ------
    OutputError
        When another process holds the lock, or it cannot be created.
    """
    import socket

    if is_url(path):  # no lock on object storage: a job's output is guarded by its cluster
        yield
        return
    lock = Path(f"{os.fspath(path).rstrip('/')}.lock")
    key = os.path.abspath(lock)
    if key in _HELD_LOCKS:
        _HELD_LOCKS[key] += 1
        try:
            yield
        finally:
            _HELD_LOCKS[key] -= 1
        return
    made = _make_parents(lock)
    me: dict[str, Any] = {"pid": os.getpid(), "host": socket.gethostname()}
    if owner is not None:
        me["owner"] = owner
    for _ in range(3):
        try:
            _create_whole(lock, json.dumps(me))
            break
        except FileExistsError:
            holder = _lock_holder(lock)
            if (
                holder is None
                or (owner is not None and holder.get("owner") == owner)
                or (holder.get("host") == me["host"] and not _alive(holder.get("pid")))
            ):
                lock.unlink(missing_ok=True)  # stale: its process is gone, or it was never written
                continue
            if not holder:
                raise OutputError(
                    f"{path}: another bmm-dask command is starting to write it (lock {lock}); "
                    "wait for it, or remove the lock if no such command runs"
                ) from None
            raise OutputError(
                f"{path}: another bmm-dask command is writing it (process {holder.get('pid')} on "
                f"{holder.get('host')}, lock {lock}); wait for it, or remove the lock if it is stale"
            ) from None
        except OSError as err:
            _remove_empty(made)
            raise OutputError(f"{lock}: cannot create the lock: {err.strerror}") from err
        except BaseException:
            _remove_empty(made)
            raise
    else:
        _remove_empty(made)
        raise OutputError(f"{lock}: cannot take the lock: other commands keep taking it")
    _HELD_LOCKS[key] = 1
    try:
        yield
    finally:
        del _HELD_LOCKS[key]
        lock.unlink(missing_ok=True)
        _remove_empty(made)  # the folders made for an output that was not written


def _make_parents(path: Path) -> list[Path]:
    """Create the missing folders above ``path``; return them, deepest first."""
    missing = []
    parent = path.absolute().parent
    while not (parent.exists() or parent.is_symlink()) and parent != parent.parent:
        missing.append(parent)
        parent = parent.parent
    for folder in reversed(missing):
        try:
            folder.mkdir()
        except FileExistsError:  # made meanwhile by another command
            pass
        except OSError as err:
            _remove_empty(missing)
            raise OutputError(
                f"{path.with_suffix('')}: cannot create {folder}: {err.strerror}"
            ) from err
    return missing


def _remove_empty(folders: Sequence[Path]) -> None:
    """Remove those of ``folders`` (deepest first) that are empty."""
    for folder in folders:
        try:
            folder.rmdir()
        except OSError:  # not empty (the output, or another command's), or gone
            return


def _create_whole(path: Path, text: str) -> None:
    """Create ``path`` holding ``text``, in one step: FileExistsError when it exists."""
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".part", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.chmod(tmp_name, 0o644)
        os.link(tmp_name, path)  # never over an existing name, and never seen half-written
    finally:
        os.unlink(tmp_name)


def _lock_holder(lock: Path) -> dict[str, Any] | None:
    """Who holds a lock: {"pid", "host"}; {} when it cannot be told yet; None when it is stale."""
    try:
        holder = json.loads(lock.read_text())
        if isinstance(holder, dict) and isinstance(holder.get("pid"), int):
            return holder
    except FileNotFoundError:
        return None  # released meanwhile: try again
    except (OSError, ValueError):
        pass
    try:
        age = time.time() - lock.stat().st_mtime
    except OSError:
        return None
    return None if age > UNREADABLE_LOCK_SECONDS else {}


def _alive(pid: Any) -> bool:
    if not isinstance(pid, int) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
