"""Forward passes of the next-token head on ``LMToken-v0``: logits and features at the last token.

:class:`~lmgym.agents.heads.NextTokenHead` acts with these; :func:`~lmgym.agents.lm_token_logprobs`
scores any LM the same way.

A token-env observation is the prompt right-padded to P, then the completion so far right-padded
to T, so its real tokens are not contiguous. :func:`next_token_outputs` left-pads them (every
row's last real token in the last column) and counts positions over real tokens only, which is
exactly how the env's reference model (:mod:`lmgym.envs.ref_cache`) lays the same prefix out: a
policy that starts as the reference gets the reference's next-token log-probs (KL 0).
"""

from __future__ import annotations

import dataclasses

import torch
from torch import nn

from lmgym.models.padding import position_ids_from_mask
from lmgym.models.scoring import trimmed_left_padding

__all__ = [
    "NextTokenOutputs",
    "left_padded",
    "next_token_outputs",
    "trunk_last_hidden",
]


@dataclasses.dataclass
class NextTokenOutputs:
    """One forward over token-env observations.

    Attributes:
        logits: (B, n) next-token logits, sliced to the action space's ``n`` tokens (a model
            may have more embedding rows than the tokenizer has tokens).
        hidden: (B, H) last hidden state at the last real token (the value head's feature).
    """

    logits: torch.Tensor
    hidden: torch.Tensor


def left_padded(obs: torch.Tensor, pad_token_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Observations (B, L) as left-padded ``(ids, mask)``: padding is ``obs == pad_token_id``.

    The columns that are padding in every row are dropped (a forward runs over the batch's
    longest real prefix, not over ``L``); every row's last real token stays in the last column.

    Example:
        >>> left_padded(torch.tensor([[5, 6, 0, 7, 0], [5, 0, 0, 0, 0]]), pad_token_id=0)[0]
        tensor([[5, 6, 7],
                [0, 0, 5]])
    """
    ids = obs.long().reshape(obs.shape[0], -1)  # token ids, not features (no preprocess_obs)
    return trimmed_left_padding(ids, (ids != pad_token_id).long(), pad_token_id)


def next_token_outputs(
    lm: nn.Module, obs: torch.Tensor, *, pad_token_id: int, n_actions: int
) -> NextTokenOutputs:
    """Next-token logits (B, n) and last hidden states (B, H) of token-env observations.

    Only the last position's logits are computed (``logits_to_keep=1``): the vocabulary
    projection of the other positions would be thrown away.

    Example:
        >>> from lmgym.models.loading import load_default_model
        >>> lm, tok = load_default_model()
        >>> obs = torch.tensor([tok.encode("the food was") + [tok.pad_token_id] * 3])
        >>> out = next_token_outputs(lm, obs, pad_token_id=tok.pad_token_id, n_actions=len(tok))
        >>> out.logits.shape[1] == len(tok)
        True
    """
    ids, mask = left_padded(obs, pad_token_id)
    out = lm(
        input_ids=ids,
        attention_mask=mask,
        position_ids=position_ids_from_mask(mask),
        output_hidden_states=True,
        use_cache=False,
        logits_to_keep=1,
    )
    return NextTokenOutputs(
        logits=out.logits[:, -1, :n_actions],  # (B, n)
        hidden=out.hidden_states[-1][:, -1],  # (B, H)
    )


def trunk_last_hidden(trunk: nn.Module, obs: torch.Tensor, *, pad_token_id: int) -> torch.Tensor:
    """Last hidden state (B, H) at the last real token, from a transformer body (no LM head)."""
    ids, mask = left_padded(obs, pad_token_id)
    out = trunk(
        input_ids=ids,
        attention_mask=mask,
        position_ids=position_ids_from_mask(mask),
        use_cache=False,
    )
    return out.last_hidden_state[:, -1]
