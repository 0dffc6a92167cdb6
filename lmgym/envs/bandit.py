"""``LMBandit-v0``: one prompt, one whole completion, one reward."""

from __future__ import annotations

from pathlib import Path
from typing import Any, SupportsFloat

import gymnasium as gym
import numpy as np
from gymnasium import spaces
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from lmgym.envs.lm_env_parts import (
    build_lm_env_parts,
    check_seed,
    forced_prompt,
    rng_restored_on_error,
)
from lmgym.envs.lm_setup import ModelSpec
from lmgym.envs.prompts import PromptSpec
from lmgym.envs.sequence_reward import PolicyLogProbFn, SequenceRewardBatch
from lmgym.error import ResetNeeded, short_repr


def lm_observation_space(max_prompt_tokens: int, vocab_size: int) -> spaces.Box:
    """Right-padded prompt ids as an int64 ``Box``: SB3's ``MlpPolicy`` reads it directly.

    ``Discrete``/``MultiDiscrete`` would make SB3 one-hot encode every position (prompt length ×
    vocab inputs), and ``Sequence``/``Text`` spaces are not supported by SB3.
    """
    return spaces.Box(low=0, high=vocab_size - 1, shape=(max_prompt_tokens,), dtype=np.int64)


class LMBanditEnv(gym.Env[np.ndarray, np.ndarray]):
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
    - ``ref_model``: reference LM (default: a frozen copy of ``model``).
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

    def __init__(
        self,
        model: ModelSpec | None = None,
        tokenizer: str | Path | PreTrainedTokenizerBase | None = None,
        ref_model: str | Path | PreTrainedModel | None = None,
        prompts: PromptSpec | None = None,
        reward_fn: Any = None,
        kl_coef: float = 0.05,
        kl_estimator: str = "k1",
        kl_target: float | None = None,
        kl_horizon: int = 10_000,
        kl_batch_size: int | None = None,
        max_prompt_tokens: int = 16,
        max_new_tokens: int = 16,
        truncate_prompts: bool = False,
        render_mode: str | None = None,
        trust_remote_code: bool = False,
    ) -> None:
        parts = build_lm_env_parts(
            model=model,
            tokenizer=tokenizer,
            ref_model=ref_model,
            prompts=prompts,
            reward_fn=reward_fn,
            kl_coef=kl_coef,
            kl_estimator=kl_estimator,
            kl_target=kl_target,
            kl_horizon=kl_horizon,
            kl_batch_size=kl_batch_size,
            max_prompt_tokens=max_prompt_tokens,
            max_new_tokens=max_new_tokens,
            truncate_prompts=truncate_prompts,
            render_mode=render_mode,
            render_modes=self.metadata["render_modes"],
            trust_remote_code=trust_remote_code,
        )
        self.render_mode = render_mode
        self.lm, self.rewarder, self.prompt_source = parts.lm, parts.rewarder, parts.prompt_source
        self.max_prompt_tokens = parts.max_prompt_tokens
        self.max_new_tokens = parts.max_new_tokens
        self.observation_space = lm_observation_space(self.max_prompt_tokens, self.lm.vocab_size)
        self.action_space = spaces.MultiDiscrete(
            np.full(self.max_new_tokens, self.lm.vocab_size, dtype=np.int64)
        )
        self._prompt: str | None = None
        self._obs: np.ndarray | None = None
        self._done = True
        self._last: tuple[str, SequenceRewardBatch] | None = None

    def attach_policy(self, policy: PolicyLogProbFn | None) -> None:
        """Use ``policy`` as π_θ in the KL term (``None`` detaches: the cross-entropy form).

        See :data:`lmgym.envs.sequence_reward.PolicyLogProbFn` for what it must return, and
        :func:`lmgym.agents.attach_sb3` for the one-line way to attach an SB3 model.
        """
        self.rewarder.policy = policy

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[np.ndarray, dict[str, Any]]:
        """Draw a prompt from ``np_random``; ``options={"prompt": text}`` forces one.

        A seeded reset also puts an adaptive β back to its initial value, so the same seed and
        the same actions give the same rewards (Gymnasium's determinism contract). Bad
        arguments, or a prompts callable that raises, leave the env as it was.
        """
        forced = forced_prompt(options, self.prompt_source)
        seed = check_seed(seed)
        with rng_restored_on_error(self):
            super().reset(seed=seed)
            text, ids = self.prompt_source.draw(self.np_random) if forced is None else forced
        if seed is not None:
            self.rewarder.reset_controller()
        self._prompt = text
        self._obs = self.prompt_source.pad(ids, self.lm.pad_token_id)
        self._done = False
        self._last = None
        return self._obs.copy(), {"prompt": text}

    def step(
        self, action: np.ndarray
    ) -> tuple[np.ndarray, SupportsFloat, bool, bool, dict[str, Any]]:
        """Score the completion ``action`` for the current prompt; the episode then ends."""
        if self._done or self._obs is None or self._prompt is None:
            raise ResetNeeded(
                "step() called on an LMBandit-v0 episode that has ended (or never started); "
                "call reset() first: each episode is one prompt and one completion."
            )
        completion = check_completion_action(action, self.max_new_tokens, self.lm.vocab_size)
        batch = self.rewarder([self._prompt], self._obs[None, :], completion[None, :])
        self._done = True
        self._last = (self._prompt, batch)
        info = batch.info(0, self._prompt)
        if self.render_mode == "human":
            print(self.render_text())
        return self._obs.copy(), float(batch.reward[0]), True, False, info

    def render(self) -> str | None:  # type: ignore[override]
        """``ansi``: the prompt, the completion and the reward parts as text."""
        if self.render_mode == "ansi":
            return self.render_text()
        if self.render_mode == "human":
            print(self.render_text())
        return None

    def render_text(self) -> str:
        """The last step as text (or the current prompt before any step)."""
        if self._last is None:
            return f"prompt: {self._prompt!r}\n(no completion yet)"
        prompt, batch = self._last
        info = batch.info(0, prompt)
        return (
            f"prompt:     {prompt!r}\n"
            f"completion: {info['completion']!r}\n"
            f"reward = reward_model - kl_coef * kl = {info['reward_model']:.4f} - "
            f"{info['kl_coef']:.4f} * {info['kl']:.4f} = {float(batch.reward[0]):.4f} "
            f"(kl form: {info['kl_form']})"
        )


def check_completion_action(action: Any, max_new_tokens: int, vocab_size: int) -> np.ndarray:
    """Validate a completion action and return it as an int64 array of shape (max_new_tokens,).

    Raises ``TypeError`` for non-integer dtypes and ``ValueError`` for a wrong shape or ids
    outside ``[0, vocab_size)``, naming the offending value.
    """
    return check_completion_actions(action, (max_new_tokens,), vocab_size, name="action")


def check_completion_actions(
    actions: Any, shape: tuple[int, ...], vocab_size: int, *, name: str = "actions"
) -> np.ndarray:
    """Validate a whole array of completion ids at once (one env or a batch of envs)."""
    array = as_action_array(actions, name, shape)
    if array.dtype == object or not np.issubdtype(array.dtype, np.integer):
        raise TypeError(
            f"{name} has dtype {array.dtype}; expected integer token ids (e.g. np.int64) of "
            f"shape {shape}."
        )
    if array.shape != shape:
        raise ValueError(
            f"{name} has shape {array.shape}; expected {shape}: one token id per position up "
            "to max_new_tokens (pad after EOS with any valid id)."
        )
    bad = np.argwhere((array < 0) | (array >= vocab_size))
    if bad.size:
        where = ", ".join(str(int(i)) for i in bad[0])
        raise ValueError(
            f"{name}[{where}]={int(array[tuple(bad[0])])} is not a token id; expected ids in "
            f"[0, {vocab_size}) (the tokenizer's vocabulary)."
        )
    return array.astype(np.int64, copy=False)


def as_action_array(actions: Any, name: str, shape: tuple[int, ...]) -> np.ndarray:
    """``np.asarray(actions)``, with a clear ``TypeError`` for what NumPy cannot make an array of.

    Example:
        >>> as_action_array([[1], [2, 3]], "actions", (2, 2))  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        TypeError: actions=[[1], [2, 3]] (type list) is not an array of token ids; ...
    """
    try:
        return np.asarray(actions)
    except (TypeError, ValueError):  # ragged nesting, or objects NumPy cannot convert
        raise TypeError(
            f"{name}={short_repr(actions)} (type {type(actions).__name__}) is not an array of "
            f"token ids; expected integer token ids (e.g. np.int64) of shape {shape}."
        ) from None
