"""What the batched LM vector envs share: one set of models, per-env prompt generators, seeding.

A vector env builds one single env as a template (it checks every argument and loads the models
once), reuses its models, reward and prompt source for the whole batch, and gives each env its
own prompt generator, seeded as Gymnasium's ``SyncVectorEnv`` seeds its sub-envs (``seed + i``),
so a vector env and N single envs see the same prompts.
"""

from __future__ import annotations

from typing import Any, ClassVar

import gymnasium as gym
import numpy as np
from gymnasium.utils import seeding
from gymnasium.vector import AutoresetMode, VectorEnv
from gymnasium.vector.utils import batch_space


class LMVectorEnv(VectorEnv):
    """Base of ``LMBanditVectorEnv`` and ``LMTokenVectorEnv``; not registered by itself.

    Args:
        num_envs: Envs stepped as one batch.
        render_mode: ``"ansi"`` or ``None``.
        **env_kwargs: Keyword arguments of the single env (``single_env_class``).
            ``kl_batch_size`` defaults to ``num_envs`` here (capped at ``kl_horizon``).
    """

    metadata = {
        "render_modes": ["ansi"],
        "autoreset_mode": AutoresetMode.SAME_STEP,
    }
    single_env_class: ClassVar[type[gym.Env]]

    def __init__(self, num_envs: int = 1, render_mode: str | None = None, **env_kwargs: Any):
        if isinstance(num_envs, bool) or not isinstance(num_envs, int) or num_envs <= 0:
            raise ValueError(f"num_envs={num_envs!r} must be an int > 0.")
        if render_mode not in (None, "ansi"):
            raise ValueError(
                f"render_mode={render_mode!r} is not supported; expected 'ansi' or None."
            )
        template: Any = self.single_env_class(**env_kwargs)
        self._template = template
        if env_kwargs.get("kl_batch_size") is None:
            # One adaptive-β update per num_envs finished episodes: a whole step's batch in the
            # bandit env, about one episode per env in the token env.
            template.rewarder.use_default_kl_batch_size(num_envs)
        self.num_envs = num_envs
        self.render_mode = render_mode
        self.lm = template.lm
        self.rewarder = template.rewarder
        self.prompt_source = template.prompt_source
        self.max_new_tokens: int = template.max_new_tokens
        self.single_observation_space = template.observation_space
        self.single_action_space = template.action_space
        self.observation_space = batch_space(self.single_observation_space, num_envs)
        self.action_space = batch_space(self.single_action_space, num_envs)
        self._generators = [seeding.np_random()[0] for _ in range(num_envs)]
        self._needs_reset = True
        self._last_render = ""

    def _seed(self, seed: int | list[int | None] | None, options: dict[str, Any] | None) -> None:
        """Validate ``reset``'s arguments, then reseed the envs' prompt generators.

        ``seed`` is an int (env i gets ``seed + i``), a list (one per env, ``None`` keeps that
        env's generator) or ``None``. A seeded reset also restores an adaptive β.
        """
        if isinstance(seed, int):
            seeds: list[int | None] = [seed + i for i in range(self.num_envs)]
        elif seed is None:
            seeds = [None] * self.num_envs
        else:
            if len(seed) != self.num_envs:
                raise ValueError(
                    f"seed has {len(seed)} entries; expected num_envs={self.num_envs} "
                    "(or a single int)."
                )
            seeds = list(seed)
        if options is not None and "reset_mask" in options:
            raise ValueError(
                "options['reset_mask'] is not supported: LM vector envs reset each env in the "
                "same step that ends its episode."
            )
        super().reset(seed=seed if isinstance(seed, int) else None)
        if seed is not None:
            self.rewarder.reset_controller()
        for i, s in enumerate(seeds):
            if s is not None or self._needs_reset:
                self._generators[i], _ = seeding.np_random(s)

    def _draw_prompts(self, rows: list[int]) -> tuple[list[str], np.ndarray]:
        """Draw the next prompt of each env in ``rows``: texts and right-padded ids (R, P)."""
        texts, padded = [], []
        for i in rows:
            text, ids = self.prompt_source.draw(self._generators[i])
            texts.append(text)
            padded.append(self.prompt_source.pad(ids, self.lm.pad_token_id))
        return texts, np.stack(padded)

    def render(self) -> str | None:  # type: ignore[override]
        """``ansi``: the first env's last completion."""
        return self._last_render if self.render_mode == "ansi" else None
