"""Sizes checked before work starts, so that a setting too large fails at once, not after minutes."""

from __future__ import annotations

from bmm_dask.errors import SettingsError

__all__ = ["available_memory", "check_fits", "format_bytes"]


def available_memory() -> int:
    """Bytes of memory this machine can give a new allocation now (free plus reclaimable cache)."""
    import psutil

    return int(psutil.virtual_memory().available)


def format_bytes(n: float) -> str:
    """``1.5 GB``-style sizes (powers of 1000, as Dask's memory limits are written)."""
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
    limit : float, optional
        Bytes available; by default what this machine has available now.
    where : str, optional
        Whose memory ``limit`` is ("a worker's memory limit"); by default this machine's.

    Raises
    ------
    SettingsError
    """
    if limit is None:
        limit = available_memory()
        where = where or "this machine has available"
    if need > limit:
        raise SettingsError(
            f"{what} need about {format_bytes(need)} of memory, more than the "
            f"{format_bytes(limit)} {where}"
        )
