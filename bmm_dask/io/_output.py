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
) -> None:
    """Refuse an output that exists (unless ``overwrite``), that is or holds one of ``inputs``,
    or that cannot be written: its folder, or the nearest folder above it that exists (missing
    ones are created as the output is written), is a file or read-only.

    Parameters
    ----------
    target : str or path-like
        The output: a local path.
    overwrite : bool
        Whether an existing output may be replaced.
    inputs : sequence of paths, default=()
        What the command reads; ``target`` may be none of them (see :func:`check_not_input`).

    Raises
    ------
    OutputError
        If ``target`` is a URL, exists (without ``overwrite``), is or holds an input, or
        cannot be written.
    """
    if is_url(target):
        raise OutputError(f"{target}: outputs are written to a folder on this machine, not a URL")
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
) -> Iterator[Path]:
    """Write a folder (a Zarr store) under a temporary sibling name, then rename it into place.

    The body writes into the yielded folder. If it raises, or the process is interrupted, the
    temporary folder is removed and ``path`` is untouched: an existing output is replaced only
    once the new one is complete (and only with ``overwrite``). The output's lock
    (:func:`output_lock`) is held throughout, so two commands never write one output at once,
    and an output that appears meanwhile is never replaced without ``overwrite``.

    Parameters
    ----------
    path : str or path-like
        The output folder (local).
    overwrite : bool, default=False
        Whether an existing output may be replaced.
    inputs : sequence of paths, default=()
        What the command reads; ``path`` may be none of them (see :func:`check_not_input`).

    Yields
    ------
    Path
        The temporary folder to write into.

    Raises
    ------
    OutputError
        When ``path`` exists and ``overwrite`` is false, is or holds one of ``inputs``, or its
        parent folder is missing or cannot be written.
    """
    check_output(path, overwrite=overwrite, inputs=inputs)
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


def _rename_noreplace(source: Path, target: Path) -> bool:
    """Rename ``source`` to ``target`` unless ``target`` exists, in one step (Linux renameat2).

    Returns False where the system cannot do it in one step (the caller then checks under its
    lock); raises FileExistsError when ``target`` exists.
    """
    libc = _libc()
    renameat2 = getattr(libc, "renameat2", None) if libc is not None else None
    if renameat2 is None:
        return False
    at_fdcwd, rename_noreplace = -100, 1
    result = renameat2(
        at_fdcwd, os.fsencode(source), at_fdcwd, os.fsencode(target), rename_noreplace
    )
    if result == 0:
        return True
    code = ctypes.get_errno()
    if code == errno.EEXIST:
        raise FileExistsError(code, os.strerror(code), os.fspath(target))
    if code in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP):  # not on this filesystem or kernel
        return False
    raise OSError(code, os.strerror(code), os.fspath(target))


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
    The lock is re-entrant within a process.

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
