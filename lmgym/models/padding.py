"""Conversions between right-padded (env observations) and left-padded (generation) batches.

Also the position ids and completion masks that go with them.

Observations are right-padded because that keeps the prompt at a fixed offset in the array, which
is what an MLP reads best; generation and teacher-forced scoring are left-padded so every row's
last prompt token sits in the same column.
"""

from __future__ import annotations

import torch

__all__ = ["completion_mask_from_ids", "position_ids_from_mask", "right_to_left_padding"]


def right_to_left_padding(
    ids: torch.Tensor, mask: torch.Tensor, pad_token_id: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Move each row's real tokens (``mask == 1``) to the right end of the row.

    Args:
        ids: Token ids, shape (B, L), any padding layout.
        mask: 1 for real tokens, 0 for padding, shape (B, L).
        pad_token_id: Id written into the freed positions.

    Returns:
        ``(ids, mask)`` left-padded, same shapes.

    Example:
        >>> ids = torch.tensor([[5, 6, 0, 0]]); mask = torch.tensor([[1, 1, 0, 0]])
        >>> right_to_left_padding(ids, mask, pad_token_id=0)[0].tolist()
        [[0, 0, 5, 6]]
    """
    mask = mask.to(torch.long)
    # A stable sort on "is real" puts padding first and keeps the real tokens in order.
    order = torch.sort(mask, dim=1, stable=True).indices  # (B, L)
    left_ids = torch.gather(ids, 1, order)
    left_mask = torch.gather(mask, 1, order)
    left_ids = left_ids.masked_fill(left_mask == 0, pad_token_id)
    return left_ids, left_mask


def position_ids_from_mask(mask: torch.Tensor) -> torch.Tensor:
    """Positions counted over real tokens only, as Hugging Face ``generate`` computes them.

    Example:
        >>> position_ids_from_mask(torch.tensor([[0, 0, 1, 1, 1]])).tolist()
        [[0, 0, 0, 1, 2]]
    """
    positions = mask.long().cumsum(-1) - 1
    return positions.clamp_(min=0)


def completion_mask_from_ids(completion_ids: torch.Tensor, eos_token_id: int) -> torch.Tensor:
    """1 for every token up to and including the first EOS, 0 after it.

    Tokens after the first EOS are ignored everywhere in lmgym (docs/design.md, section 3).

    Example:
        >>> completion_mask_from_ids(torch.tensor([[4, 2, 9, 9]]), eos_token_id=2).tolist()
        [[1, 1, 0, 0]]
    """
    is_eos = (completion_ids == eos_token_id).long()
    eos_before = is_eos.cumsum(-1) - is_eos  # number of EOS strictly before each position
    return (eos_before == 0).long()
