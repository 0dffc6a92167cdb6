"""ILQL decoding: the LM's logits plus β·(Q(s, ·) − V(s)), as a transformers logits processor.

Snell et al. sample from ``π(a | s) ∝ π_β(a | s) · exp(β (Q(s, a) − V(s)))``: the behaviour
policy re-weighted by the advantage. The processor needs the last hidden state of every row at
every decoding step; a forward pre-hook on the LM's output embedding (the input of the LM head
*is* that hidden state) hands it over from the forward that ``generate`` runs anyway, so
decoding costs one small MLP per step and no second forward. The processor is added after the
ones ``generate`` is given and before temperature, top-k and top-p, which then act on the
re-weighted distribution.

With β = 0 the processor adds exactly 0 and the samples are the LM's own, draw for draw.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from transformers import LogitsProcessor, LogitsProcessorList

if TYPE_CHECKING:
    from lmgym.envs.lm_env_parts import LMModels
    from lmgym.envs.sequence_reward import PolicyLogProbFn
    from lmgym.offline.model import ILQLHeads, ILQLModel

__all__ = ["ILQLLogitsProcessor", "ilql_logprobs", "perturbed_by_advantage"]


class _LastHidden:
    """Forward pre-hook of the LM head: keeps the hidden state at each row's last position."""

    def __init__(self) -> None:
        self.hidden: torch.Tensor | None = None

    def __call__(self, module: torch.nn.Module, args: tuple[Any, ...]) -> None:
        self.hidden = args[0][:, -1]  # (B, H)


class ILQLLogitsProcessor(LogitsProcessor):
    """Adds ``β · (min target Q(s, ·) − V(s))`` to the scores of each decoding step.

    Args:
        heads: The ILQL heads.
        beta: β >= 0.
        last_hidden: Filled with the (B, H) hidden state of the step by a pre-hook on the LM
            head (:func:`perturbed_by_advantage` installs both).
    """

    def __init__(self, heads: ILQLHeads, beta: float, last_hidden: _LastHidden) -> None:
        self.heads, self.beta, self.last_hidden = heads, beta, last_hidden

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        """``scores`` (B, V) plus β times the advantage at this step's states."""
        hidden = self.last_hidden.hidden
        assert hidden is not None and hidden.shape[0] == scores.shape[0], "no hidden state seen"
        advantage = self.heads.advantage(hidden.to(scores.dtype))  # (B, V)
        return scores + self.beta * advantage  # type: ignore[return-value]


@contextmanager
def perturbed_by_advantage(
    model: ILQLModel, processors: LogitsProcessorList
) -> Iterator[LogitsProcessorList]:
    """Append the ILQL processor to ``processors`` and hook the LM head while inside.

    Example:
        >>> from lmgym.models.loading import load_default_model
        >>> from lmgym.offline.model import ILQLModel
        >>> lm, tok = load_default_model()
        >>> with perturbed_by_advantage(ILQLModel(lm), LogitsProcessorList()) as processors:
        ...     len(processors)
        1
    """
    last_hidden = _LastHidden()
    head = model.lm.get_output_embeddings()
    assert head is not None, "a causal LM has an output embedding"
    handle = head.register_forward_pre_hook(last_hidden)
    processors.append(ILQLLogitsProcessor(model.heads, model.beta, last_hidden))
    try:
        yield processors
    finally:
        handle.remove()


def ilql_logprobs(model: ILQLModel, setup: LMModels) -> PolicyLogProbFn:
    """``f(observations, actions) -> (B, T, V)`` log-distributions of the ILQL policy.

    The π_θ an LM env's KL penalty needs (``env.attach_policy``): the LM's logits plus
    β·(Q − V), normalised, along teacher-forced completions, over the tokenizer's tokens.

    Example:
        >>> import gymnasium as gym, lmgym
        >>> from lmgym.offline.model import ILQLModel
        >>> env = gym.make("LMBandit-v0").unwrapped
        >>> env.attach_policy(ilql_logprobs(ILQLModel(env.models.model, beta=0.0), env.models))
    """

    def logprobs(observations: np.ndarray, actions: np.ndarray) -> torch.Tensor:
        prompt_ids = torch.as_tensor(observations, dtype=torch.long, device=model.device)
        completion_ids = torch.as_tensor(actions, dtype=torch.long, device=model.device)
        with torch.inference_mode():
            out = model.token_outputs(
                prompt_ids,
                (prompt_ids != setup.pad_token_id).long(),
                completion_ids,
                pad_token_id=setup.pad_token_id,
            )
            logits = out.logits + model.beta * model.heads.advantage(out.states[:, :-1])
            return torch.log_softmax(logits[..., : setup.vocab_size].float(), dim=-1)

    return logprobs
