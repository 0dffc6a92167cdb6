"""``LMBandit-v0``: one prompt, one whole completion, one reward."""

from __future__ import annotations

from typing import Any, SupportsFloat

import numpy as np
from gymnasium import spaces

from lmgym.envs.lm_env import LMEnv
from lmgym.envs.lm_spaces import check_token_ids, completion_spaces
from lmgym.envs.sequence_reward import PolicyLogProbFn, SequenceRewardBatch
from lmgym.error import ResetNeeded

__all__ = ["LMBanditEnv", "check_completion_action"]


class LMBanditEnv(LMEnv[np.ndarray]):
    """Write a completion for a prompt; get one reward for the whole of it.

    ## Description
    The RLHF recipe as a contextual bandit: each episode draws a prompt, the agent answers with a
    whole completion (the action), and the episode ends with the reward of that completion:
    the reward model's score minus a KL penalty to a frozen reference LM.

    ## Action Space
    ``MultiDiscrete([vocab_size] * max_new_tokens)``: the completion's token ids. The text ends
    at the first EOS or pad id (the pad id is no text token; it counts as the last token, as in
    ``LMToken-v0``), and the tokens after it are ignored. A completion with neither is cut at
    the length limit (``info["length_limited"]``).

    ## Observation Space
    ``Box(0, vocab_size - 1, (max_prompt_tokens,), int64)``: the prompt's token ids, right-padded
    with the tokenizer's pad id. The padding is recoverable: ``mask = obs != pad_token_id``.

    ## Reward
    ``R = r_φ(x, y) − β · Σ_t k_t``, with k_t one of Schulman's estimators of the per-token KL
    between the attached policy and the reference (:mod:`lmgym.rewards.kl`), both normalised
    over the tokenizer's tokens (a model's embedding may have more rows). With no policy
    attached, k_t = −log π_ref(y_t), a cross-entropy, not a KL
    (``info["kl_form"] == "cross_entropy"``).

    ## Episode End
    ``terminated=True`` after the single step; there is no truncation.

    ## Information
    ``reset`` gives ``prompt``. ``step`` gives ``prompt``, ``completion`` (text),
    ``reward_model``, ``kl``, ``kl_coef``, ``kl_form``, ``completion_length``, ``eos`` (the text
    ends with EOS) and ``length_limited`` (it was cut at ``max_new_tokens``), with
    ``reward == reward_model - kl_coef * kl``.

    ## Arguments
    - ``model``: local Hugging Face directory or model object (default: the embedded model).
    - ``tokenizer``: directory or object (default: the model's).
    - ``model``: a local directory, a hub id such as ``"openai-community/gpt2"`` (through
      transformers' cache; offline once cached) or a model object (default: the embedded model).
    - ``ref_model``: reference LM (default: ``model`` as it is now, frozen).
    - ``prompts``: list of texts, or ``f(np_random) -> str`` (default: the review prompts).
    - ``reward_fn``: a reward function (default: lexicon sentiment, "write a positive review").
    - ``kl_coef`` (β), ``kl_estimator`` (``k1|k2|k3|full``), ``kl_target`` and ``kl_horizon``
      (adaptive β; the target is the KL summed over a completion), ``kl_batch_size``
      (completions per adaptive-β update, from their mean KL; default 64, capped at
      ``kl_horizon``, and ``num_envs`` in the vector env). An adaptive β needs π_θ attached
      (:meth:`attach_policy`): a step in the cross-entropy form raises ``ValueError``.
    - ``max_prompt_tokens``, ``max_new_tokens``: their sum must fit the model's positions
      (``config.max_position_embeddings``). ``truncate_prompts``: keep the last tokens of a
      longer prompt instead of raising, and shrink the prompt block to fit the positions
      (``env.max_prompt_tokens`` is its width). ``render_mode`` (``ansi`` or ``human``),
      ``trust_remote_code``.
    - ``device`` (``"auto"``, ``"cpu"``, ``"cuda"``, ``"cuda:N"``, ``"mps"``) and ``dtype``
      (``"auto"``, ``"float32"``, ``"bfloat16"``, ``"float16"``): where the models run and in
      which precision (:mod:`lmgym.models.device`; default: where they are, float32 on the CPU).
      Only observations and actions cross to NumPy; the KL and log-prob sums are float32.
    - ``minibatch_size``: rows per forward of the reference when it scores a batch (default
      ``None``: the whole batch at once). The rows, sorted by length, run in micro-batches, each
      cut to its own longest sequence, so peak activation memory scales with ``minibatch_size``,
      not with the batch; the results equal the unbatched ones up to float rounding. A vector
      env's ``num_envs`` must be a multiple of it.

    Bad arguments raise before anything changes, and a call that raises leaves the env as it
    was (see docs/reliability.md).

    ## Version History
    - v0: initial version.

    Example:
        >>> import gymnasium as gym, lmgym
        >>> env = gym.make("LMBandit-v0")
        >>> obs, info = env.reset(seed=0)
        >>> obs, reward, terminated, truncated, info = env.step(env.action_space.sample())
        >>> terminated
        True
    """

    metadata = {"render_modes": ["ansi", "human"], "render_fps": 1}

    _prompt: str | None = None
    _obs: np.ndarray | None = None
    _last: SequenceRewardBatch | None = None

    def _spaces(self) -> tuple[spaces.Box, spaces.MultiDiscrete]:
        return completion_spaces(
            self.max_prompt_tokens, self.max_new_tokens, self.models.vocab_size
        )

    def attach_policy(self, policy: PolicyLogProbFn | None) -> None:
        """Use ``policy`` as π_θ in the KL term (``None`` detaches: the cross-entropy form).

        See :data:`lmgym.envs.sequence_reward.PolicyLogProbFn` for what it must return, and
        :func:`lmgym.agents.attach_sb3` for the one-line way to attach an SB3 model.
        """
        self.rewarder.policy = policy

    def _start(self, prompt: str, prompt_ids: np.ndarray) -> np.ndarray:
        self._prompt, self._obs, self._last = prompt, prompt_ids, None
        return prompt_ids

    def step(
        self, action: np.ndarray
    ) -> tuple[np.ndarray, SupportsFloat, bool, bool, dict[str, Any]]:
        """Score the completion ``action`` for the current prompt; the episode then ends."""
        if self._done or self._obs is None or self._prompt is None:
            raise ResetNeeded(
                "step() called on an LMBandit-v0 episode that has ended (or never started); "
                "call reset() first: each episode is one prompt and one completion."
            )
        completion = check_completion_action(action, self.max_new_tokens, self.models.vocab_size)
        batch = self.rewarder([self._prompt], self._obs[None, :], completion[None, :])
        self._done = True
        self._last = batch
        self._render_step()
        return self._obs.copy(), float(batch.reward[0]), True, False, batch.info(0)

    def render_text(self) -> str:
        """The last step as text (or the current prompt before any step)."""
        if self._last is None:
            return f"prompt: {self._prompt!r}\n(no completion yet)"
        return self._last.describe(0)


def check_completion_action(action: Any, max_new_tokens: int, vocab_size: int) -> np.ndarray:
    """Validate a completion action and return it as an int64 array of shape (max_new_tokens,).

    Raises ``TypeError`` for non-integer dtypes and ``ValueError`` for a wrong shape or ids
    outside ``[0, vocab_size)``, naming the offending value.

    Example:
        >>> check_completion_action([5, 2], max_new_tokens=2, vocab_size=10)
        array([5, 2])
    """
    return check_token_ids(
        action, (max_new_tokens,), vocab_size, name="action", layout=COMPLETION_LAYOUT
    )


COMPLETION_LAYOUT = (
    "one token id per position up to max_new_tokens (pad after EOS with any valid id)"
)
"""How action-shape errors describe a completion (the single and the vector bandit env)."""
