"""Sizes checked before work starts, so that a setting too large fails at once, not after minutes."""

from __future__ import annotations

from bmm_dask.errors import SettingsError

__all__ = ["available_memory", "check_fits", "format_bytes"]


def available_memory() -> int:
    """Bytes of memory this machine can give a new allocation now (free plus reclaimable cache).

    Returns
    -------
    int
        Available memory in bytes, as ``psutil.virtual_memory().available`` reports it.
    """
    import psutil

    return int(psutil.virtual_memory().available)


def format_bytes(n: float) -> str:
    """Write a number of bytes as a ``1.5 GB``-style size.

    Units are powers of 1000, as Dask's memory limits are written.

    Parameters
    ----------
    n : float
        A number of bytes.

    Returns
    -------
    str
        ``n`` in the largest unit (bytes, kB, MB, GB, TB, PB) that keeps it under 1000, with one
        decimal (none for bytes).
    """
    for unit in ("bytes", "kB", "MB", "GB", "TB", "PB"):
        if n < 1000 or unit == "PB":
            return f"{n:.0f} {unit}" if unit == "bytes" else f"{n:.1f} {unit}"
        n /= 1000
    raise AssertionError


def check_fits(need: float, what: str, *, limit: float | None = None, where: str = "") -> None:
    """Refuse work that needs more memory than there is.

    Parameters
    ----------
    need : float
        Bytes the work will hold at once (an estimate that errs low).
    what : str
        What needs it, for the message ("K = 3 means of 1,000,000,000 features").
    limit : float, default=None
        Bytes available; None means what this machine has available now.
    where : str, default=""
        Whose memory ``limit`` is ("a worker's memory limit"); empty means this machine's.

    Raises
    ------
    SettingsError
        If ``need`` is more than ``limit``.
    """
    if limit is None:
        limit = available_memory()
        where = where or "this machine has available"
    if need > limit:
        raise SettingsError(
            f"{what} need about {format_bytes(need)} of memory, more than the "
            f"{format_bytes(limit)} {where}"
        )
