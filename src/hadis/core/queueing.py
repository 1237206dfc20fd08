"""Latency of a pool of GPUs that serve one model with dynamic batching.

Model: ``g`` identical servers; a free server takes up to ``b`` queued requests at once and
needs ``s(b)`` seconds for the batch. Under load, batches are full, so the pool behaves like
an M/D/g queue of batch jobs arriving at ``lambda / b`` with service time ``s(b)``. The wait
uses Erlang C (the probability that a job waits) with the exponential tail of the M/M/g wait,
whose decay rate is doubled for deterministic service (the Allen-Cunneen correction, which
halves the mean wait):

    P(wait > t) ~= C(g, a) * exp(-2 (g / s - lambda / b) t),   a = lambda * s / b

so the wait at quantile ``q`` is ``ln(C / (1 - q)) / (2 (g / s - lambda / b))`` when
``C > 1 - q`` and 0 otherwise. A request also waits for the ``backlog`` already queued to
drain at the pool's full rate ``g b / s``. Latency = that wait + backlog drain + ``s(b)``.
"""

from __future__ import annotations

import numpy as np

UNSTABLE = np.inf


def erlang_c_table(load: np.ndarray, max_servers: int) -> np.ndarray:
    """Erlang C for every server count 0..max_servers at once.

    ``load`` is the offered load in Erlangs (any shape). Returns shape
    ``(max_servers + 1,) + load.shape``; entries where the queue is unstable (load >= servers)
    are 1.0. Uses the stable Erlang B recursion, so one pass gives every server count.
    """
    load = np.asarray(load, dtype=float)
    out = np.ones((max_servers + 1, *load.shape))
    erlang_b = np.ones(load.shape)
    for k in range(1, max_servers + 1):
        erlang_b = load * erlang_b / (k + load * erlang_b)
        rho = load / k
        with np.errstate(divide="ignore", invalid="ignore"):
            c = erlang_b / (1.0 - rho * (1.0 - erlang_b))
        out[k] = np.where(rho < 1.0, np.clip(c, 0.0, 1.0), 1.0)
    return out


def pool_latency(
    rates: np.ndarray,
    backlogs: np.ndarray,
    batch_sizes: np.ndarray,
    batch_seconds: np.ndarray,
    max_gpus: int,
    quantile: float,
    max_utilisation: float,
) -> tuple[np.ndarray, np.ndarray]:
    """Best latency and batch size for each arrival rate and each GPU count.

    ``rates`` and ``backlogs`` have shape ``(n,)``; ``batch_sizes`` and ``batch_seconds`` list
    the model's feasible batch sizes. Returns ``(latency, batch)`` of shape ``(n, max_gpus + 1)``:
    the predicted latency at ``quantile`` with the batch size that minimises it, ``inf`` where
    no batch size keeps utilisation under ``max_utilisation``. Zero demand with zero backlog has
    latency 0 at any GPU count, including 0.
    """
    rates = np.asarray(rates, dtype=float)[:, None]  # (n, 1)
    backlogs = np.asarray(backlogs, dtype=float)[:, None]
    b = np.asarray(batch_sizes, dtype=float)[None, :]  # (1, k)
    s = np.asarray(batch_seconds, dtype=float)[None, :]
    load = rates * s / b  # Erlangs of batch jobs, (n, k)
    c_table = erlang_c_table(load, max_gpus)  # (g, n, k)
    g = np.arange(max_gpus + 1, dtype=float)[:, None, None]
    with np.errstate(divide="ignore", invalid="ignore"):
        util = load[None] / g
        spare = g / s[None] - rates[None] / b[None]  # batch jobs per second of spare capacity
        tail = np.log(np.maximum(c_table / (1.0 - quantile), 1.0)) / (2.0 * spare)
        drain = backlogs[None] * s[None] / (g * b[None])
    latency = tail + drain + s[None]
    latency = np.where((util < max_utilisation) & (g > 0), latency, UNSTABLE)
    best = np.argmin(latency, axis=2)  # (g, n)
    lat = np.take_along_axis(latency, best[..., None], axis=2)[..., 0].T  # (n, g)
    batch = np.asarray(batch_sizes)[best].T
    idle = (rates[:, 0] == 0) & (backlogs[:, 0] == 0)
    lat[idle, :] = 0.0
    batch[idle, :] = int(batch_sizes[0])
    return lat, batch
