"""What the batched LM vector envs share: one set of parts, per-env prompt generators, seeding.

A vector env builds the same parts as a single env (every argument checked, the models loaded
once; :func:`~lmgym.envs.lm_env_parts.build_lm_env_parts`) and uses them for the whole batch.
Each env gets its own prompt generator, seeded as Gymnasium's ``SyncVectorEnv`` seeds its
sub-envs (``seed + i``), so a vector env and N single envs see the same prompts.
"""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
from gymnasium import spaces as gym_spaces
from gymnasium.utils import seeding
from gymnasium.vector import AutoresetMode, VectorEnv
from gymnasium.vector.utils import batch_space

from lmgym.envs.lm_env_parts import (
    UsesLMEnvParts,
    build_lm_env_parts,
    check_minibatch_size,
    check_positive_int,
    check_render_mode,
)
from lmgym.envs.prompts import is_chat
from lmgym.envs.resets import check_reset_options, check_seed, generators_restored_on_error
from lmgym.envs.step_info import object_array
from lmgym.error import ResetNeeded, short_repr

__all__ = ["LMVectorEnv", "SpacesFn"]

SpacesFn = Callable[[int, int, int], tuple[gym_spaces.Box, gym_spaces.Space[Any]]]
"""``f(max_prompt_tokens, max_new_tokens, vocab_size) -> (observation space, action space)``."""


class LMVectorEnv(UsesLMEnvParts, VectorEnv):
    """Base of ``LMBanditVectorEnv`` and ``LMTokenVectorEnv``; not registered by itself.

    Holds the same parts as a single env (``parts``, and ``models``, ``rewarder``,
    ``prompt_source``, ``max_prompt_tokens``, ``max_new_tokens`` from it) for all its envs.

    Args:
        num_envs: Envs stepped as one batch.
        render_mode: ``"ansi"`` or ``None``.
        env_args: The single env's arguments shared by both LM envs (see
            :class:`~lmgym.envs.bandit.LMBanditEnv`), defaults filled in.
            ``kl_batch_size=None`` means ``num_envs`` here (capped at ``kl_horizon``).
        spaces: Builds the single env's observation and action spaces from
            ``(max_prompt_tokens, max_new_tokens, vocab_size)``.
    """

    metadata = {
        "render_modes": ["ansi"],
        "autoreset_mode": AutoresetMode.SAME_STEP,
    }

    def __init__(
        self,
        num_envs: int,
        render_mode: str | None,
        env_args: dict[str, Any],
        spaces: SpacesFn,
    ) -> None:
        num_envs = check_positive_int("num_envs", num_envs, example=8)
        check_minibatch_size(env_args["minibatch_size"], num_envs)  # before anything loads
        self.render_mode = check_render_mode(render_mode, self.metadata["render_modes"])
        parts = build_lm_env_parts(**env_args)
        if env_args["kl_batch_size"] is None:
            # One adaptive-β update per num_envs finished episodes: a whole step's batch in the
            # bandit env, about one episode per env in the token env.
            parts.rewarder.use_default_kl_batch_size(num_envs)
        self.num_envs = num_envs
        self.parts = parts
        self.single_observation_space, self.single_action_space = spaces(
            self.max_prompt_tokens, self.max_new_tokens, self.models.vocab_size
        )
        self.observation_space = batch_space(self.single_observation_space, num_envs)
        self.action_space = batch_space(self.single_action_space, num_envs)
        self._generators = [seeding.np_random()[0] for _ in range(num_envs)]
        self._needs_reset = True
        self._last_render = ""

    def reset(
        self,
        *,
        seed: int | list[int | None] | None = None,
        options: dict[str, Any] | None = None,
    ) -> tuple[np.ndarray, dict[str, Any]]:
        """Start an episode in every env. ``seed`` is an int (env i gets ``seed + i``) or a list.

        ``options={"prompt": text}`` forces one prompt for every env, ``{"prompt": [texts]}``
        one per env. Bad arguments, or a prompts callable that raises, change nothing.
        """
        forced = self._forced_prompts(options)
        generators = self._reset_generators(seed)
        rows = np.arange(self.num_envs)
        with generators_restored_on_error(generators):
            texts, padded = self._draw_prompts(rows.tolist(), generators, forced)
            obs = self._start(rows, texts, padded)
        self._commit_reset(seed, generators)
        self._needs_reset = False
        return obs.copy(), {
            "prompt": object_array(texts),
            "_prompt": np.ones(self.num_envs, dtype=np.bool_),
        }

    @abstractmethod
    def _start(self, rows: np.ndarray, texts: list[str], prompt_ids: np.ndarray) -> np.ndarray:
        """Start episodes in ``rows`` on prompts ``texts`` ((R, P) ids); return all observations.

        Called inside ``reset``'s guard: it may raise only before it changes anything.
        """

    def _check_started(self) -> None:
        if self._needs_reset:
            raise ResetNeeded("step() called before reset(); call envs.reset(seed=...) first.")

    def _reset_generators(self, seed: Any) -> list[np.random.Generator]:
        """The envs' prompt generators after ``reset(seed=seed)``, built without changing any.

        ``seed`` is an int (env i gets ``seed + i``), a list (one per env, ``None`` keeps that
        env's generator) or ``None``. Seeded envs get new generators; the others keep theirs
        (the same objects: draw from them inside :func:`generators_restored_on_error`).
        """
        if seed is None or isinstance(seed, (int, np.integer)):
            first = check_seed(seed)
            seeds: list[int | None] = [
                None if first is None else first + i for i in range(self.num_envs)
            ]
        elif isinstance(seed, (list, tuple, np.ndarray)):
            if len(seed) != self.num_envs:
                raise ValueError(
                    f"seed has {len(seed)} entries; expected num_envs={self.num_envs} "
                    "(or a single int)."
                )
            seeds = [check_seed(s, f"seed[{i}]") for i, s in enumerate(seed)]
        else:
            raise TypeError(
                f"seed={short_repr(seed)} (type {type(seed).__name__}) is not supported; "
                f"expected an int >= 0 (env i gets seed + i), a list of num_envs={self.num_envs} "
                "ints or Nones, or None."
            )
        return [
            seeding.np_random(s)[0] if s is not None or self._needs_reset else rng
            for s, rng in zip(seeds, self._generators, strict=True)
        ]

    def _forced_prompts(self, options: Any) -> list[tuple[str, np.ndarray] | None]:
        """Per env, the prompt ``options={"prompt": ...}`` forces (text and ids), or ``None``.

        ``options["prompt"]`` is one text for every env, or a list of ``num_envs`` texts.
        """
        if isinstance(options, Mapping) and "reset_mask" in options:
            raise ValueError(
                "options['reset_mask'] is not supported: LM vector envs reset each env in the "
                "same step that ends its episode."
            )
        checked = check_reset_options(options)
        if "prompt" not in checked:
            return [None] * self.num_envs
        prompt = checked["prompt"]
        if isinstance(prompt, str) or is_chat(prompt):  # one prompt for every env
            return [self.prompt_source.prepare(prompt, where='options["prompt"]')] * self.num_envs
        if not isinstance(prompt, (list, tuple)) or len(prompt) != self.num_envs:
            raise TypeError(
                f'options["prompt"]={short_repr(prompt)} (type {type(prompt).__name__}) is not '
                f"supported; expected one prompt (a text or a chat) for every env, or a list of "
                f"num_envs={self.num_envs} texts or chats (one per env)."
            )
        return [
            self.prompt_source.prepare(text, where=f'options["prompt"][{i}]')
            for i, text in enumerate(prompt)
        ]

    def _commit_reset(self, seed: Any, generators: list[np.random.Generator]) -> None:
        """Apply a reset whose prompts were drawn: seeds, generators and an adaptive β."""
        super().reset(seed=check_seed(seed) if isinstance(seed, (int, np.integer)) else None)
        if seed is not None:
            self.rewarder.reset_controller()
        self._generators = generators

    def _draw_prompts(
        self,
        rows: list[int],
        generators: list[np.random.Generator],
        forced: list[tuple[str, np.ndarray] | None] | None = None,
    ) -> tuple[list[str], np.ndarray]:
        """Draw the next prompt of each env in ``rows``: texts and right-padded ids (R, P).

        Env i draws from ``generators[i]`` unless ``forced[i]`` gives its prompt.
        """
        texts: list[str] = []
        padded = np.empty((len(rows), self.prompt_source.max_prompt_tokens), dtype=np.int64)
        for j, i in enumerate(rows):
            given = None if forced is None else forced[i]
            text, ids = self.prompt_source.draw(generators[i]) if given is None else given
            texts.append(text)
            padded[j] = self.prompt_source.pad(ids, self.models.pad_token_id)
        return texts, padded

    def render(self) -> str | None:  # type: ignore[override]
        """``ansi``: the first env's last completion."""
        return self._last_render if self.render_mode == "ansi" else None
