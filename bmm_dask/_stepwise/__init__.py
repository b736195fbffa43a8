"""Stepwise (online) EM: the parameters move after every mini-batch of rows, so a fit needs a
few passes over the data instead of dozens of iterations (Liang & Klein 2009, Cappé & Moulines
2009).

Running statistics per row, ``s = (sum r / N, r^T X / N)``, start from the starting parameters.
Each mini-batch B of m rows gives its own, ``s_B``, and ``s <- (1 - eta_t) s + eta_t s_B`` with
``eta_t = (t + t0) ** -kappa``; the M-step works on ``s`` scaled back to N rows, so that the
smoothing ``alpha`` means what it means in batch EM. The statistics are accumulated, never
replaced by one batch's: replacing them collapses the components.

How mini-batches meet chunks: every random draw is the driver's. A pass takes the chunks in a
random order, a window of a few chunks at a time, and the window's rows, shuffled, are cut into
mini-batches. The window is held in the workers' memory (read once from the store when the data
is streamed) as a few groups of chunks, one array per worker thread, each where it was read. A
step is one Dask computation with one task per group, on the rows of the mini-batch that its
group holds. The chunks' statistics are added in fixed point (exact integer sums), in the
tasks and then on the driver, so the sums, and the model, are the same bit for bit whatever the
number of groups, and so on every scheduler and cluster.

Steps in flight: the driver submits the next mini-batch's step before it has the last one's
statistics, so the workers compute while the driver and the scheduler pass results and
parameters back and forth (on a 2-core machine that round trip took a third of a step). With
``steps_in_flight`` s, the statistics of the j-th mini-batch of a pass are computed with the
parameters after its step j - s (the pass's starting ones for j <= s); s = 1 is stepwise EM as
published, and as ``partial_fit`` runs it. s is a setting of the model, never of the cluster:
the same s gives the same model on every scheduler.

A component whose running weight starves is re-seeded at once, between steps, by splitting
the component that leaves its rows worst explained (:meth:`StepwiseState.reseed`): left to die
in the passes, it would come back only in batch EM, after the others had settled.
"""

from bmm_dask._settings import STEPS_IN_FLIGHT
from bmm_dask._stepwise.batches import (
    Batch,
    pass_batches,
    step_size,
    window_chunks,
)
from bmm_dask._stepwise.cost import (
    MIN_BATCH_SIZE,
    MIN_STEPS_PER_PASS,
    auto_batch_size,
    kernel_rows_per_second,
    pass_cost,
)
from bmm_dask._stepwise.run import StepwiseRun, stepwise_pass
from bmm_dask._stepwise.state import StepwiseState
from bmm_dask._stepwise.steps import batch_step, hold_window, pass_steps, step_groups

__all__ = [
    "MIN_BATCH_SIZE",
    "MIN_STEPS_PER_PASS",
    "STEPS_IN_FLIGHT",
    "Batch",
    "StepwiseRun",
    "StepwiseState",
    "auto_batch_size",
    "batch_step",
    "hold_window",
    "kernel_rows_per_second",
    "pass_batches",
    "pass_cost",
    "pass_steps",
    "step_groups",
    "step_size",
    "stepwise_pass",
    "window_chunks",
]
