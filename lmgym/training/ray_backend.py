"""``lmgym bench --backend ray``: the benchmark's runs as Ray tasks on a cluster.

Only the dispatch differs from the local process pool: each (algo, seed) run is the same
:func:`~lmgym.training.train.run_train` call, with the same :class:`TrainConfig`, executed by a
Ray task instead of a pool worker, so results, tables and plots are those of the local backend
for the same seeds.

- ``address``: ``None`` starts a Ray runtime on this machine for the benchmark (and stops it
  afterwards); ``"auto"`` joins the cluster that ``ray start`` started here; ``"HOST:PORT"`` or
  ``"ray://HOST:PORT"`` joins a remote one. An address that does not answer is an error within
  :data:`CONNECT_TIMEOUT_S` seconds, not a hang.
- ``resources``: what one run needs (``{"CPU": 1, "GPU": 0.5}``); refused before any run starts
  when no node of the cluster has that much.
- A run whose worker process dies (a node lost, the OOM killer) is retried up to
  :data:`MAX_RETRIES` times; each attempt continues from the run's last checkpoint (the atomic
  checkpoints of ``lmgym train``, the same rule as ``--resume``), so finished work is not
  redone. The table reports how many retries happened.

The run directories are written by the workers: on a cluster of several machines, ``--out``
must be a filesystem every node mounts at the same path (NFS, a shared volume).
"""

from __future__ import annotations

import logging
import socket
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any
from urllib.parse import urlsplit

from tqdm.auto import tqdm

from lmgym.error import Error
from lmgym.training.train import TrainConfig, run_train

__all__ = [
    "CONNECT_TIMEOUT_S",
    "MAX_RETRIES",
    "RayBackendError",
    "check_resources",
    "execute_on_ray",
    "import_ray",
    "parse_resources",
    "ray_cluster",
]

logger = logging.getLogger(__name__)

CONNECT_TIMEOUT_S = 10.0
"""Seconds to wait for a cluster address to accept a connection before giving up."""
MAX_RETRIES = 3
"""Retries of a run whose worker process died (Ray task retries on system failures)."""
DEFAULT_RESOURCES: dict[str, float] = {"CPU": 1.0}


class RayBackendError(Error, RuntimeError):
    """The Ray backend cannot run the benchmark (cluster unreachable, resources missing)."""


def import_ray() -> Any:
    """The ``ray`` module, or an ImportError naming the extra that installs it."""
    try:
        import ray
    except ImportError as err:
        raise ImportError(
            "backend='ray' needs Ray, which is not installed: pip install 'lmgym[ray]'"
        ) from err
    return ray


def parse_resources(value: str | dict[str, float] | None) -> dict[str, float]:
    """What one run needs: a dict, or its JSON text as ``--resources-per-run`` gives it.

    Example:
        >>> parse_resources('{"CPU": 1, "GPU": 0.5}')
        {'CPU': 1.0, 'GPU': 0.5}
        >>> parse_resources(None)
        {'CPU': 1.0}
    """
    import json

    if value is None:
        return dict(DEFAULT_RESOURCES)
    parsed: Any = value
    if isinstance(value, str):
        try:
            parsed = json.loads(value)
        except ValueError as err:
            raise ValueError(
                f"resources_per_run={value!r} is not JSON ({err}); expected an object of "
                'resource amounts per run, e.g. \'{"CPU": 1, "GPU": 0.5}\'.'
            ) from None
    if not isinstance(parsed, dict) or not parsed:
        raise ValueError(
            f"resources_per_run={value!r} must be a non-empty object of resource amounts per "
            'run, e.g. {"CPU": 1, "GPU": 0.5}.'
        )
    resources: dict[str, float] = {}
    for name, amount in parsed.items():
        number = isinstance(amount, int | float) and not isinstance(amount, bool)
        if not isinstance(name, str) or not number or amount < 0:
            raise ValueError(
                f"resources_per_run={value!r}: {name!r}: {amount!r} must be a resource name "
                'with an amount >= 0, e.g. {"CPU": 1, "GPU": 0.5}.'
            )
        resources[name] = float(amount)
    return resources


def _check_reachable(address: str) -> None:
    """Raise RayBackendError when ``HOST:PORT`` (or ``ray://HOST:PORT``) refuses or times out.

    ``ray.init`` retries a dead address for minutes; one plain TCP connection answers at once.
    """
    if address in ("auto", "local"):
        return
    parts = urlsplit(address if "://" in address else f"tcp://{address}")
    try:
        host, port = parts.hostname, parts.port
    except ValueError:
        host = port = None
    if not host or port is None:
        raise RayBackendError(
            f"address={address!r} is not a cluster address; expected 'auto' (the cluster "
            "started here by `ray start --head`), 'HOST:PORT' or 'ray://HOST:PORT'."
        )
    try:
        with socket.create_connection((host, port), timeout=CONNECT_TIMEOUT_S):
            pass
    except OSError as err:
        raise RayBackendError(
            f"address={address!r}: no Ray cluster answers there ({err}). Start one with "
            "`ray start --head` on that host, check the host and port, or omit --address to "
            "run on a Ray runtime started on this machine."
        ) from None


def _connect(ray: Any, address: str | None) -> bool:
    """Join the cluster at ``address`` (None: start one here); whether this call connected.

    A driver already connected by the caller (``ray.init`` before the benchmark) is kept.
    """
    if ray.is_initialized():
        return False
    if address is None:
        ray.init(address="local", include_dashboard=False, log_to_driver=False)
        return True
    _check_reachable(address)
    try:
        ray.init(address=address, log_to_driver=False)
    except ConnectionError as err:
        raise RayBackendError(
            f"address={address!r}: could not join a Ray cluster ({err}). With 'auto', start "
            "one first with `ray start --head`; otherwise check the address."
        ) from None
    return True


def check_resources(resources: dict[str, float], nodes: list[dict[str, Any]]) -> None:
    """Refuse ``resources`` per run when no alive node of ``nodes`` (``ray.nodes()``) has them.

    Example:
        >>> node = {"Alive": True, "Resources": {"CPU": 2.0}}
        >>> check_resources({"CPU": 1}, [node])
        >>> check_resources({"GPU": 1}, [node])  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        lmgym.training.ray_backend.RayBackendError: resources_per_run={'GPU': 1}: no node ...
    """
    alive = [n["Resources"] for n in nodes if n.get("Alive")]
    if any(all(have.get(k, 0.0) >= v for k, v in resources.items()) for have in alive):
        return
    have = "; ".join(
        ", ".join(f"{k}={v:g}" for k, v in sorted(r.items()) if not k.startswith("node:"))
        for r in alive
    )
    raise RayBackendError(
        f"resources_per_run={resources!r}: no node of the cluster has that much, so no run "
        f"could ever start. The nodes have: {have or 'no alive node'}. Ask for at most what one "
        "node has, or add a node that has it."
    )


def _resumable(config: TrainConfig) -> TrainConfig:
    """``config`` continuing from its run's checkpoint when an earlier attempt left one."""
    from dataclasses import replace

    from lmgym.training.bench import resumable

    return replace(config, **resumable(config.out, existing=True))


def _attempt(
    config: TrainConfig, attempts: Any, index: int, train: Callable[[TrainConfig], dict[str, Any]]
) -> dict[str, Any]:
    """One attempt of one run inside a Ray worker: log it, then train from the last checkpoint."""
    import ray

    ray.get(attempts.start.remote(index))
    return train(_resumable(config))


class _AttemptLog:
    """Counts the attempts of each run (a Ray actor: retried tasks report to it)."""

    def __init__(self) -> None:
        self.counts: dict[int, int] = {}

    def start(self, index: int) -> None:
        self.counts[index] = self.counts.get(index, 0) + 1

    def retries(self) -> dict[int, int]:
        return {i: n - 1 for i, n in self.counts.items()}


@contextmanager
def ray_cluster(address: str | None, resources: dict[str, float]) -> Iterator[None]:
    """Be connected to the cluster at ``address`` with ``resources`` checked, for a benchmark.

    Entered before the benchmark touches its directory, so an unreachable cluster or resources
    that no node has change nothing. On exit the driver disconnects if it connected here: a
    runtime it started stops, a cluster it joined keeps running.
    """
    ray = import_ray()
    connected_here = _connect(ray, address)
    try:
        check_resources(resources, ray.nodes())
        yield
    finally:
        if connected_here:
            ray.shutdown()


def execute_on_ray(
    configs: list[TrainConfig],
    resources: dict[str, float],
    progress: bool,
    train: Callable[[TrainConfig], dict[str, Any]] = run_train,
) -> tuple[list[dict[str, Any]], list[str], int]:
    """Run ``configs`` as Ray tasks, connected by :func:`ray_cluster`.

    Returns the results of the runs that finished (in order), the failure messages of the
    others, and how many attempts were retried after their worker died.

    ``train`` is what each task calls (``run_train``; tests pass one that kills its worker).
    """
    import ray

    custom = {k: v for k, v in resources.items() if k not in ("CPU", "GPU")}
    task = ray.remote(_attempt).options(
        num_cpus=resources.get("CPU", 0.0),
        num_gpus=resources.get("GPU", 0.0),
        resources=custom or None,
        max_retries=MAX_RETRIES,
    )
    attempts: Any = ray.remote(num_cpus=0)(_AttemptLog).remote()
    pending = {task.remote(config, attempts, i, train): i for i, config in enumerate(configs)}
    results: dict[int, dict[str, Any]] = {}
    failures: list[str] = []
    bar = tqdm(total=len(configs), desc="runs", unit="run", disable=not progress)
    while pending:
        done, _ = ray.wait(list(pending), num_returns=1)
        i = pending.pop(done[0])
        try:
            results[i] = ray.get(done[0])
        except Exception as error:  # a run's own error, or its retries used up
            cause = getattr(error, "cause", None) or error
            failures.append(f"{configs[i].out}: {type(cause).__name__}: {cause}")
        bar.update()
    bar.close()
    retries = sum(ray.get(attempts.retries.remote()).values())
    logger.info("ray: %d runs, %d retried attempts", len(configs), retries)
    return [results[i] for i in sorted(results)], failures, retries
