"""``LMToken-v0``: write a completion one token per step, with a per-token KL penalty.

The same task as ``LMBandit-v0`` with a finer action: the policy picks the next token, the env
appends it. Per step the reward is ``−β · k_t`` (the KL estimate of that token), and the step that
ends the episode adds the reward model's score of the whole completion, so an episode's rewards
sum to the bandit's ``R = r_φ(x, y) − β · Σ_t k_t`` for the same prompt and completion (with a
fixed β). The stepping core (:mod:`lmgym.envs.token_batch`) works on a batch of rows: the single
env is one row of it and the vector env (:mod:`lmgym.envs.token_vector`) N rows, so both compute
the same numbers by construction.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, SupportsFloat

import numpy as np
import torch
from gymnasium import spaces
from torch import nn
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from lmgym.envs.lm_env import LMEnv
from lmgym.envs.lm_env_parts import ModelSpec, check_bool
from lmgym.envs.lm_spaces import (
    ActionMaskSpec,
    TokenActionMask,
    check_token_action,
    token_spaces,
)
from lmgym.envs.prompts import PromptSpec
from lmgym.envs.token_batch import TokenBatch, TokenPolicyLogProbFn, TokenStepBatch
from lmgym.error import ResetNeeded
from lmgym.rewards import RewardLike

__all__ = ["LMTokenEnv"]


class LMTokenEnv(LMEnv[np.int64]):
    """Write a completion for a prompt, one token per step, rewarded token by token.

    ## Description
    The RLHF recipe as a sequential decision problem: each episode draws a prompt; at each step
    the agent picks the next token (the action), the env appends it to the observation and pays
    the token's KL penalty to a frozen reference LM; the step that ends the completion also pays
    the reward model's score of the whole completion.

    ## Action Space
    ``Discrete(vocab_size)``: the next token id. Every id is accepted. The pad id is not a text
    token: emitting it ends the text like EOS (so it can never be mistaken for padding in the
    observation; ``LMBandit-v0`` ends a completion there too) and costs its KL term, which
    under the reference is large. ``action_masks()``
    (used by sb3-contrib's ``MaskablePPO``) forbids pad and BOS by default, intersected with the
    ``action_mask`` argument; masks advise the agent, ``step`` does not enforce them.

    ## Observation Space
    ``Box(0, vocab_size - 1, (max_prompt_tokens + max_new_tokens,), int64)``: the prompt's ids
    right-padded to ``max_prompt_tokens`` (the bandit's observation), then the tokens generated so
    far, right-padded with the pad id. Padding is recoverable: ``mask = obs != pad_token_id``;
    ``obs[:max_prompt_tokens]`` is the prompt and ``obs[max_prompt_tokens:]`` the completion.

    ## Reward
    ``R_t = −β · k_t``, plus ``r_φ(x, y)`` on the step that ends the episode. k_t is one of
    Schulman's estimators of the KL between the attached policy's and the reference's next-token
    distributions at that step (:mod:`lmgym.rewards.kl`), both normalised over the tokenizer's
    tokens. With no policy attached, k_t = −log π_ref(y_t), a cross-entropy, not a KL
    (``info["kl_form"] == "cross_entropy"``). With a fixed β an episode's rewards sum to the
    bandit env's reward for the same prompt and completion.

    ## Episode End
    ``terminated=True`` when the action is EOS (or the pad id), and also after
    ``max_new_tokens`` tokens: the completion is scored there and nothing follows, so no value
    may be bootstrapped past it (TRL uses a next value of 0 there too).
    ``info["length_limited"]`` says which ending it was. The env never sets ``truncated``; it
    is left for cuts outside the task, such as a ``TimeLimit`` wrapper.

    ## Information
    ``reset`` gives ``prompt``. Every ``step`` gives ``prompt``, ``completion`` (the text so far),
    ``reward_model`` (r_φ on the final step, 0.0 before), ``kl`` (this step's k_t), ``kl_coef``
    (β of this step), ``kl_form``, ``episode_kl`` (Σ k_t so far; on the final step the bandit's
    ``kl``), ``completion_length`` (tokens so far), ``eos`` (this token is EOS) and
    ``length_limited`` (the episode ended at ``max_new_tokens`` without ending the text), with
    ``reward == reward_model - kl_coef * kl`` at every step. The final step of an episode whose
    reward is a ``WeightedSum`` also gives ``reward_parts``.

    ## Arguments
    The bandit's (``model``, ``tokenizer``, ``ref_model``, ``prompts``, ``reward_fn``, ``kl_coef``,
    ``kl_estimator``, ``kl_target``, ``kl_horizon``, ``kl_batch_size``, ``max_prompt_tokens``,
    ``max_new_tokens``,
    ``truncate_prompts``, ``render_mode``, ``trust_remote_code``, ``device``, ``dtype``,
    ``minibatch_size``; see
    :class:`~lmgym.envs.bandit.LMBanditEnv`), plus:

    - ``action_mask``: a bool array of vocabulary size, or ``f(observation) -> bool array``,
      restricting the tokens ``action_masks()`` allows.
    - ``reference_cache``: keep the reference model's KV cache across steps (default ``True``);
      ``False`` re-encodes the whole prefix every step (same results; to measure the cache).

    ``minibatch_size`` splits the reference's forwards over many rows (encoding new prompts, and
    every step with ``reference_cache=False``) into micro-batches of that many rows; the cached
    one-token steps run over every row at once (one position per row).

    Adaptive β (``kl_target``) is updated once per ``kl_batch_size`` finished episodes (default
    64, capped at ``kl_horizon``; ``num_envs`` in the vector env), from their mean summed KL.
    It needs π_θ attached: a step in the cross-entropy form raises ``ValueError``.

    ## Version History
    - v0: initial version.

    Example:
        >>> import gymnasium as gym, lmgym
        >>> env = gym.make("LMToken-v0")
        >>> obs, info = env.reset(seed=0)
        >>> mask = env.unwrapped.action_masks()
        >>> obs, reward, terminated, truncated, info = env.step(int(mask.nonzero()[0][0]))
        >>> info["kl_form"], info["completion_length"], info["length_limited"]
        ('cross_entropy', 1, False)
    """

    metadata = {"render_modes": ["ansi", "human"], "render_fps": 4}

    def __init__(
        self,
        model: ModelSpec | None = None,
        tokenizer: str | Path | PreTrainedTokenizerBase | None = None,
        ref_model: str | Path | PreTrainedModel | None = None,
        prompts: PromptSpec | None = None,
        reward_fn: RewardLike | None = None,
        kl_coef: float = 0.05,
        kl_estimator: str = "k1",
        kl_target: float | None = None,
        kl_horizon: int = 10_000,
        kl_batch_size: int | None = None,
        max_prompt_tokens: int = 16,
        max_new_tokens: int = 16,
        truncate_prompts: bool = False,
        action_mask: ActionMaskSpec | None = None,
        reference_cache: bool = True,
        render_mode: str | None = None,
        trust_remote_code: bool = False,
        device: str | torch.device | None = None,
        dtype: str | torch.dtype | None = None,
        minibatch_size: int | None = None,
    ) -> None:
        self.reference_cache = check_bool("reference_cache", reference_cache)
        super().__init__(
            model, tokenizer, ref_model, prompts, reward_fn, kl_coef, kl_estimator, kl_target,
            kl_horizon, kl_batch_size, max_prompt_tokens, max_new_tokens, truncate_prompts,
            render_mode, trust_remote_code, device, dtype, minibatch_size,
        )  # fmt: skip
        self.masks = TokenActionMask(self.models, action_mask)
        self.batch = TokenBatch(self.parts, num_rows=1, reference_cache=self.reference_cache)
        self._started = False
        self._last: TokenStepBatch | None = None

    def _spaces(self) -> tuple[spaces.Box, spaces.Discrete]:
        return token_spaces(self.max_prompt_tokens, self.max_new_tokens, self.models.vocab_size)

    def use_reference(self, reference: nn.Module) -> None:
        """Make ``reference`` π_ref: in the env's models and in its incremental reference state.

        See :meth:`lmgym.envs.lm_env_parts.LMModels.use_reference`.
        """
        super().use_reference(reference)
        self.batch.reference.use_model(reference)

    def attach_policy(self, policy: TokenPolicyLogProbFn | None) -> None:
        """Use ``policy`` as π_θ in the KL term (``None`` detaches: the cross-entropy form).

        See :data:`lmgym.envs.token_batch.TokenPolicyLogProbFn` for what it must return, and
        :func:`lmgym.agents.attach_sb3` for the one-line way to attach an SB3 model.
        """
        self.batch.policy = policy

    def action_masks(self) -> np.ndarray:
        """Allowed next tokens (V,) bool, for sb3-contrib's ``MaskablePPO``."""
        return self.masks.for_observation(self.batch.obs[0])

    def _start(self, prompt: str, prompt_ids: np.ndarray) -> np.ndarray:
        # Drops the reference cache and encodes the new prompt; changes nothing if that raises.
        self.batch.start(np.zeros(1, dtype=np.int64), [prompt], prompt_ids[None, :])
        self._started = True
        self._last = None
        return self.batch.obs[0]

    def step(self, action: Any) -> tuple[np.ndarray, SupportsFloat, bool, bool, dict[str, Any]]:
        """Append the token ``action`` and pay its reward (see the class docstring)."""
        if self._done:
            raise ResetNeeded(
                "step() called on an LMToken-v0 episode that has ended (or never started); "
                "call reset() first."
            )
        token = check_token_action(action, self.models.vocab_size)
        result = self.batch.step(np.array([token], dtype=np.int64))
        self._done = bool(result.done[0])
        self._last = result
        self._render_step()
        return (
            result.obs[0],
            float(result.reward[0]),
            bool(result.terminated[0]),
            bool(result.truncated[0]),
            result.info(0),
        )

    def render_text(self) -> str:
        """The current episode as text."""
        if self._last is None:
            prompt = self.batch.prompts[0] if self._started else None
            return f"prompt: {prompt!r}\n(no token yet)"
        return self._last.describe(0)
