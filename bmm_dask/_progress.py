"""A progress bar of a fit, fed by its events (:mod:`bmm_dask._events`): a bar per start, as
long as its batch iterations and stepwise passes may be, moved by each iteration and pass."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any


class FitBar:
    """Follows a fit's events on a tqdm bar that ``new_bar`` makes for each start.

    Parameters
    ----------
    new_bar : callable
        ``new_bar(total, unit, suffix)`` returns a new tqdm bar of ``total`` steps in ``unit``
        (its description ends with ``suffix``, which names the start when there are several).
    """

    def __init__(self, new_bar: Callable[[int, str, str], Any]) -> None:
        self.new_bar = new_bar
        self.bar: Any = None
        self.passes = 0
        self.reseeded = 0

    def __call__(self, event: dict[str, Any]) -> None:
        """Take one event of the fit.

        Parameters
        ----------
        event : dict
            An event with its "kind": a "run" begins a new bar; an "iteration" or a "pass"
            moves it; others (steps) are left to the log lines and the progress page.
        """
        kind = event.get("kind")
        if kind == "run":
            self.close()
            self.passes = event["passes"]
            self.reseeded = 0
            n_init = event["n_init"]
            suffix = f" (start {event['start']} of {n_init})" if n_init > 1 else ""
            unit = " iterations and passes" if self.passes else " iterations"
            self.bar = self.new_bar(event["max_iter"] + self.passes, unit, suffix)
            return
        if kind not in ("iteration", "pass") or self.bar is None:
            return
        self.bar.update(1)
        self.reseeded += event.get("reseeded") or 0
        postfix = [f"stepwise pass {event['pass']} of {self.passes}"] if kind == "pass" else []
        postfix.append(f"objective {event['objective']:.4f}")
        if self.reseeded:  # components re-seeded in this start so far
            postfix.append(f"re-seeded {self.reseeded}")
        self.bar.set_postfix_str(", ".join(postfix), refresh=True)

    def close(self) -> None:
        """Close the bar shown, if any."""
        if self.bar is not None:
            self.bar.close()
            self.bar = None
