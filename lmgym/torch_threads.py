"""torch's intra-op thread pool and ``fork``: what lmgym does so forked workers never hang.

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

import os
import sys

__all__ = ["install_fork_hook"]

_installed = False


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
