"""torch's intra-op threads: lmgym's default for the embedded model, and safety across ``fork``.

**The default.** The embedded model is tiny (1.8M parameters), so each op is too small for a
second thread to pay for its synchronisation. Measured on a 2-core machine (PPO with
``LMActorCriticPolicy`` on ``LMBandit-v0``, ``learn(128)``, the other core busy): 19 s on one
thread, 69 s on torch's default of two (an earlier measurement on an idle machine: 22 s and
119 s).
So loading the embedded model (:func:`lmgym.models.loading.load_default_model`) sets torch to
one thread, unless the thread count was chosen already: by :func:`set_torch_threads`, by the
``LMGYM_TORCH_THREADS`` environment variable, or by ``OMP_NUM_THREADS``. Models of your own are
left alone: for a larger model more threads can pay, so that choice stays yours.

**Fork.**
Gymnasium's ``AsyncVectorEnv`` (``gym.make_vec(..., vectorization_mode="async")``) forks its
workers on Linux, after the parent has already built one env to read the spaces, and so after
torch's OpenMP thread pool has run. That pool does not survive ``fork``: the first parallel
torch op in the child (loading the model, copying it for the reference) waits forever on a
futex of a thread that no longer exists. Measured with ``make_vec("LMBandit-v0", num_envs=2,
vectorization_mode="async")``: it never returned before this hook, and took about 8 s with it.

Registering the vector env with a ``spawn`` context is not an option: Gymnasium lets a spec's
``vector_kwargs`` override the caller's and refuses any for the default (vector entry point)
mode. So lmgym makes the child safe instead: right after a fork, the child's torch runs on one
intra-op thread, which never touches the inherited pool. One thread per process is also what
parallel workers should use on a small machine (each worker is one env's worth of work).
"""

from __future__ import annotations

import logging
import os
import sys

__all__ = [
    "EMBEDDED_MODEL_THREADS",
    "THREADS_ENV_VAR",
    "install_fork_hook",
    "set_torch_threads",
    "use_embedded_model_threads",
]

EMBEDDED_MODEL_THREADS = 1
"""torch intra-op threads lmgym chooses for the embedded model (see the module docstring)."""

THREADS_ENV_VAR = "LMGYM_TORCH_THREADS"
"""Environment variable that overrides lmgym's thread choice, e.g. ``LMGYM_TORCH_THREADS=2``."""

_installed = False
_chosen = False

logger = logging.getLogger(__name__)


def set_torch_threads(num_threads: int) -> None:
    """Set torch's intra-op threads, and keep lmgym from changing them afterwards.

    Example:
        >>> import torch
        >>> set_torch_threads(1)
        >>> torch.get_num_threads()
        1
    """
    if isinstance(num_threads, bool) or not isinstance(num_threads, int) or num_threads < 1:
        raise ValueError(f"num_threads={num_threads!r}; expected an int >= 1, e.g. 1.")
    import torch

    global _chosen
    torch.set_num_threads(num_threads)
    _chosen = True


def use_embedded_model_threads() -> None:
    """Apply lmgym's thread default for the embedded model, unless threads were chosen already.

    ``LMGYM_TORCH_THREADS`` (an int >= 1) wins over the default; ``OMP_NUM_THREADS`` or an
    earlier :func:`set_torch_threads` leave torch as it is.
    """
    if _chosen:
        return
    override = os.environ.get(THREADS_ENV_VAR)
    if override is not None:
        try:
            set_torch_threads(int(override))
        except ValueError:
            raise ValueError(
                f"{THREADS_ENV_VAR}={override!r}; expected an int >= 1 (torch intra-op "
                f"threads), e.g. {THREADS_ENV_VAR}=1. Unset it for lmgym's default."
            ) from None
        return
    if os.environ.get("OMP_NUM_THREADS"):
        return
    import torch

    if torch.get_num_threads() != EMBEDDED_MODEL_THREADS:
        logger.info(
            "lmgym: torch set to %d intra-op thread for the embedded model (faster for a "
            "model this small); set %s=N or call lmgym.torch_threads.set_torch_threads(N) to "
            "choose otherwise.",
            EMBEDDED_MODEL_THREADS,
            THREADS_ENV_VAR,
        )
    set_torch_threads(EMBEDDED_MODEL_THREADS)


def _one_thread_after_fork() -> None:
    torch = sys.modules.get("torch")
    if torch is not None:  # a child of a parent that never imported torch has nothing to fix
        torch.set_num_threads(1)


def install_fork_hook() -> None:
    """Make every process forked from this one run torch on one intra-op thread.

    Idempotent; called when :mod:`lmgym` is imported. A worker that wants more threads can
    still call ``torch.set_num_threads`` itself after it starts.
    """
    global _installed
    if not _installed and hasattr(os, "register_at_fork"):
        os.register_at_fork(after_in_child=_one_thread_after_fork)
        _installed = True
