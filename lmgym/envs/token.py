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

from collections.abc import Callable
from pathlib import Path
from typing import Any, SupportsFloat

import gymnasium as gym
import numpy as np
from gymnasium import spaces
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from lmgym.envs.lm_env_parts import (
    build_lm_env_parts,
    check_bool,
    check_seed,
    forced_prompt,
    rng_restored_on_error,
)
from lmgym.envs.lm_setup import LMSetup, ModelSpec
from lmgym.envs.prompts import PromptSpec
from lmgym.envs.token_batch import TokenBatch, TokenPolicyLogProbFn, TokenStepBatch
from lmgym.error import ResetNeeded, short_repr

ActionMaskSpec = np.ndarray | Callable[[np.ndarray], np.ndarray]
"""A boolean array of vocabulary size (``True`` = allowed), or ``f(observation (L,)) -> (V,)``
bool array computed from the current observation."""


def token_observation_space(observation_length: int, vocab_size: int) -> spaces.Box:
    """The token env's observation: int64 ids, ``(max_prompt_tokens + max_new_tokens,)``.

    The same kind of ``Box`` as the bandit's (SB3's ``MlpPolicy`` reads it as is); see
    :func:`lmgym.envs.bandit.lm_observation_space` for why not ``MultiDiscrete``/``Sequence``.

    Example:
        >>> token_observation_space(32, 239).shape
        (32,)
    """
    return spaces.Box(low=0, high=vocab_size - 1, shape=(observation_length,), dtype=np.int64)


def default_action_mask(setup: LMSetup) -> np.ndarray:
    """Every token except pad and BOS (each only where it differs from EOS), shape (V,).

    Example:
        >>> import gymnasium as gym, lmgym
        >>> env = gym.make("LMToken-v0").unwrapped
        >>> bool(default_action_mask(env.lm)[env.lm.pad_token_id])
        False
    """
    mask = np.ones(setup.vocab_size, dtype=np.bool_)
    bos = setup.tokenizer.bos_token_id
    for special in (setup.pad_token_id, bos):
        if special is not None and special != setup.eos_token_id and special < setup.vocab_size:
            mask[special] = False
    return mask


def check_action_mask(mask: Any, vocab_size: int, *, where: str = "action_mask") -> np.ndarray:
    """Validate a vocabulary mask: a bool array of shape (V,) allowing at least one token.

    Example:
        >>> check_action_mask(np.array([False, True]), 2)
        array([False,  True])
        >>> check_action_mask(np.zeros(2, dtype=bool), 2)  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        ValueError: action_mask masks every token ...
    """
    array = np.asarray(mask)
    if array.dtype != np.bool_:
        raise TypeError(
            f"{where} has dtype {array.dtype}; expected a boolean array of shape ({vocab_size},) "
            "with True for allowed tokens, e.g. np.isin(np.arange(vocab_size), allowed_ids)."
        )
    if array.shape != (vocab_size,):
        raise ValueError(
            f"{where} has shape {array.shape}; expected ({vocab_size},): one flag per token of "
            "the tokenizer's vocabulary."
        )
    if not array.any():
        raise ValueError(
            f"{where} masks every token (together with the pad/BOS tokens, which are always "
            "masked); expected at least one allowed token id. Allow some ids, e.g. the EOS id."
        )
    return array


def check_token_action(action: Any, vocab_size: int) -> int:
    """Return ``action`` as an int token id, or raise ``TypeError``/``ValueError`` naming it.

    A Python int, a NumPy integer scalar and a 0-d integer array are the same action: each
    becomes the plain ``int``, so the env's state cannot depend on which one was passed.

    Example:
        >>> check_token_action(np.int64(5), vocab_size=10), check_token_action(np.array(5), 10)
        (5, 5)
    """
    if isinstance(action, np.ndarray):
        if action.shape != ():
            raise ValueError(
                f"action has shape {action.shape}; expected a scalar token id (Discrete "
                "action), e.g. int(action) for a one-element array."
            )
        value = action[()]  # the 0-d array's NumPy scalar
    else:
        value = action
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
        raise TypeError(
            f"action={short_repr(action)} has type {type(action).__name__}"
            f"{f' (dtype {action.dtype})' if isinstance(action, np.ndarray) else ''}; "
            f"expected one integer token id in [0, {vocab_size}), e.g. a Python int or np.int64."
        )
    token = int(value)
    if not 0 <= token < vocab_size:
        raise ValueError(
            f"action={token} is not a token id; expected an id in [0, {vocab_size}) (the "
            "tokenizer's vocabulary)."
        )
    return token


class LMTokenEnv(gym.Env[np.ndarray, np.int64]):
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
    ``truncate_prompts``, ``render_mode``, ``trust_remote_code``; see
    :class:`~lmgym.envs.bandit.LMBanditEnv`), plus:

    - ``action_mask``: a bool array of vocabulary size, or ``f(observation) -> bool array``,
      restricting the tokens ``action_masks()`` allows.
    - ``reference_cache``: keep the reference model's KV cache across steps (default ``True``);
      ``False`` re-encodes the whole prefix every step (same results; to measure the cache).

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
        reward_fn: Any = None,
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
    ) -> None:
        reference_cache = check_bool("reference_cache", reference_cache)
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
        self.base_action_mask = default_action_mask(self.lm)
        self.mask_fn: Callable[[np.ndarray], np.ndarray] | None = None
        if callable(action_mask):
            self.mask_fn = action_mask
        elif action_mask is not None:
            user = check_action_mask(action_mask, self.lm.vocab_size)
            self.base_action_mask = check_action_mask(
                user & self.base_action_mask, self.lm.vocab_size
            )
        self.reference_cache = reference_cache
        length = self.max_prompt_tokens + self.max_new_tokens
        self.observation_space = token_observation_space(length, self.lm.vocab_size)
        self.action_space = spaces.Discrete(self.lm.vocab_size)
        self.batch = TokenBatch(
            self.lm,
            self.rewarder,
            max_prompt_tokens=self.max_prompt_tokens,
            max_new_tokens=self.max_new_tokens,
            num_rows=1,
            reference_cache=self.reference_cache,
        )
        self._done = True
        self._started = False
        self._last: TokenStepBatch | None = None

    def attach_policy(self, policy: TokenPolicyLogProbFn | None) -> None:
        """Use ``policy`` as π_θ in the KL term (``None`` detaches: the cross-entropy form).

        See :data:`lmgym.envs.token_batch.TokenPolicyLogProbFn` for what it must return, and
        :func:`lmgym.agents.attach_sb3` for the one-line way to attach an SB3 model.
        """
        self.batch.policy = policy

    def action_masks(self) -> np.ndarray:
        """Allowed next tokens (V,) bool, for sb3-contrib's ``MaskablePPO``."""
        return self.mask_for(self.batch.obs[0])

    def mask_for(self, observation: np.ndarray) -> np.ndarray:
        """The action mask in state ``observation`` (the default and ``action_mask`` combined)."""
        if self.mask_fn is None:
            return self.base_action_mask.copy()
        where = f"action_mask({short_repr(observation.tolist())})"
        user = check_action_mask(self.mask_fn(observation.copy()), self.lm.vocab_size, where=where)
        return check_action_mask(user & self.base_action_mask, self.lm.vocab_size, where=where)

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[np.ndarray, dict[str, Any]]:
        """Draw a prompt from ``np_random``; ``options={"prompt": text}`` forces one.

        Drops the reference cache and encodes the new prompt. A seeded reset also puts an
        adaptive β back to its initial value (same seed, same actions, same rewards). Bad
        arguments, or a prompts callable that raises, leave the env as it was.
        """
        forced = forced_prompt(options, self.prompt_source)
        seed = check_seed(seed)
        with rng_restored_on_error(self):
            super().reset(seed=seed)
            text, ids = self.prompt_source.draw(self.np_random) if forced is None else forced
            padded = self.prompt_source.pad(ids, self.lm.pad_token_id)
            self.batch.start(np.zeros(1, dtype=np.int64), [text], padded[None, :])
        if seed is not None:
            self.rewarder.reset_controller()
        self._done = False
        self._started = True
        self._last = None
        return self.batch.obs[0].copy(), {"prompt": text}

    def step(self, action: Any) -> tuple[np.ndarray, SupportsFloat, bool, bool, dict[str, Any]]:
        """Append the token ``action`` and pay its reward (see the class docstring)."""
        if self._done:
            raise ResetNeeded(
                "step() called on an LMToken-v0 episode that has ended (or never started); "
                "call reset() first."
            )
        token = check_token_action(action, self.lm.vocab_size)
        result = self.batch.step(np.array([token], dtype=np.int64))
        self._done = bool(result.done[0])
        self._last = result
        if self.render_mode == "human":
            print(self.render_text())
        return (
            result.obs[0],
            float(result.reward[0]),
            bool(result.terminated[0]),
            bool(result.truncated[0]),
            result.info(0),
        )

    def render(self) -> str | None:  # type: ignore[override]
        """``ansi``: the prompt, the completion so far and the last step's reward parts."""
        if self.render_mode == "ansi":
            return self.render_text()
        if self.render_mode == "human":
            print(self.render_text())
        return None

    def render_text(self) -> str:
        """The current episode as text."""
        if self._last is None:
            prompt = self.batch.prompts[0] if self._started else None
            return f"prompt: {prompt!r}\n(no token yet)"
        info = self._last.info(0)
        return (
            f"prompt:     {info['prompt']!r}\n"
            f"completion: {info['completion']!r}\n"
            f"reward = reward_model - kl_coef * kl = {info['reward_model']:.4f} - "
            f"{info['kl_coef']:.4f} * {info['kl']:.4f} = {float(self._last.reward[0]):.4f} "
            f"(kl form: {info['kl_form']}; episode kl so far {info['episode_kl']:.4f})"
        )
