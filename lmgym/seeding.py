"""One ``set_seed`` for every source of randomness lmgym touches: one seed, the same episodes."""

from __future__ import annotations

import random

import numpy as np
import torch

__all__ = ["set_seed"]


def set_seed(seed: int) -> None:
    """Seed Python's ``random``, NumPy's global generator and torch's global generator.

    Environments never use these global generators (they draw from ``self.np_random``); this is for
    model initialisation, sampling in ``generate`` and SB3's own draws.

    Example:
        >>> set_seed(0)
        >>> a = torch.rand(1)
        >>> set_seed(0)
        >>> bool(torch.equal(a, torch.rand(1)))
        True
    """
    if not isinstance(seed, int) or isinstance(seed, bool) or seed < 0:
        raise ValueError(f"seed={seed!r} is not a non-negative int; pass e.g. seed=0.")
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
