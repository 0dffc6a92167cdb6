"""``TextGameEnv``: any Gymnasium env with a discrete action space, played by an LM in words.

A multi-turn LM environment: the game's state is described in text, the LM answers with a reply
(a completion, as in ``LMBandit-v0``), the reply is read back into the game's action, the game
steps, and the conversation goes on until the game ends. The reward is the game's, minus the same
KL penalty ``LMBandit-v0`` pays (its :class:`~lmgym.envs.sequence_reward.SequenceRewarder`
computes it), so PPO with :class:`~lmgym.agents.LMActorCriticPolicy` (one reply per step, a value
head over turns) trains on it unchanged.
"""

from __future__ import annotations

import copy
import numbers
from collections.abc import Callable
from pathlib import Path
from typing import Any, SupportsFloat

import gymnasium as gym
import numpy as np
import torch
from gymnasium import spaces
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from lmgym.envs.bandit import check_completion_action
from lmgym.envs.lm_env_parts import (
    LMModels,
    ModelSpec,
    build_lm_models,
    check_bool,
    check_lm_env_args,
    check_positive_int,
    check_render_mode,
    model_context_length,
    require_int,
)
from lmgym.envs.lm_spaces import completion_spaces
from lmgym.envs.rendering import show_human
from lmgym.envs.resets import check_seed, rng_restored_on_error
from lmgym.envs.sequence_reward import PolicyLogProbFn, SequenceRewarder, combine_reward
from lmgym.envs.text_game_parts import (
    ActionNames,
    AnsiDescription,
    ConversationCodec,
    ConversationState,
    Describe,
    Parse,
    check_description,
    reply_length,
)
from lmgym.error import ResetNeeded, short_repr

__all__ = ["DEFAULT_CONTEXT_TOKENS", "NOT_UNDERSTOOD", "TextGameEnv", "no_task_reward"]

DEFAULT_CONTEXT_TOKENS = 1024
"""Conversation budget when ``max_context_tokens=None``: the model's positions, at most this
(the observation is this wide, and a 32k-position model would make every observation 32k ids)."""

NOT_UNDERSTOOD = 'I did not understand "{reply}".'
"""What the game answers a reply that ``parse`` cannot read; the state's description follows."""


def no_task_reward(prompts: list[str], completions: list[str]) -> list[float]:
    """The reward model part of a reply: none; the game pays the task reward.

    Example:
        >>> no_task_reward(["a"], ["b"])
        [0.0]
    """
    return [0.0] * len(completions)


class TextGameEnv(gym.Env[np.ndarray, np.ndarray]):
    """A Gymnasium game played by a language model, one reply per turn.

    ## Description
    Wraps an env with a ``Discrete`` action space (the *game*). Each turn the game's state is
    described in words (``describe``), the LM replies (the action), the reply is read back into
    a game action (``parse``) and the game steps. The conversation so far is the observation,
    so the LM sees its earlier replies and the game's answers.

    ## Action Space
    ``MultiDiscrete([vocab_size] * max_new_tokens)``: the reply's token ids, as in
    ``LMBandit-v0``. The reply ends at its first EOS or pad id.

    ## Observation Space
    ``Box(0, vocab_size - 1, (max_context_tokens - max_new_tokens,), int64)``: the conversation's
    token ids, right-padded with the pad id (``mask = obs != pad_token_id``), the padding
    contract of ``LMBandit-v0``. Without a chat template it is the system text and the first
    description (with the tokenizer's special tokens), then for each turn the reply's own ids (up
    to and including its EOS) and the game's answer. With a chat template (used when the
    tokenizer has one, unless ``chat_template=False``) the messages are rendered by it, with the
    generation prompt. With ``recent_turns=k`` the observation holds the opening (system text and
    first description) and only the last ``k`` turns (reply and answer); for a game whose every
    description holds its whole state (``TextCatGrid-v0``'s do) nothing is lost, and a turn
    costs the same few dozen tokens however long the game runs.

    ## Reward
    ``R = r_game − β · Σ_t k_t``: the game's reward for the move, minus β times the KL of the
    reply's tokens between the attached policy and the frozen reference (the estimators and the
    cross-entropy form when no policy is attached are those of ``LMBandit-v0``). A reply that
    ``parse`` cannot read pays ``parse_penalty`` instead of a game reward; the game does not
    step and answers ``not_understood`` followed by the state's description.

    ## Episode End
    ``terminated`` when the game terminates. ``truncated`` when the game is truncated (e.g. its
    ``TimeLimit``) or when the conversation outgrows ``max_context_tokens``
    (``info["context_overflow"]``; the observation then holds the conversation's last tokens).

    ## Information
    ``reset``: ``text`` (the opening), ``game_observation``, ``game_info``. ``step``: the
    bandit's reply parts (``completion``, ``kl``, ``kl_coef``, ``kl_form``,
    ``completion_length``, ``eos``, ``length_limited``), ``reward_model`` (the task part:
    the game's reward or the parse penalty, so ``reward == reward_model - kl_coef * kl``),
    ``game_reward``, ``parsed``, ``game_action`` (``None`` if not parsed), ``text`` (the game's
    answer), ``turn``, ``context_tokens``, ``context_overflow``, ``game_observation``,
    ``game_info``.

    ## Arguments
    - ``env``: the game, a ``gymnasium.Env`` with a ``Discrete`` action space.
    - ``describe``: ``describe(game, observation, info) -> str`` (default: the game's ``ansi``
      rendering and a question naming the actions; needs ``render_mode="ansi"``).
    - ``parse``: ``parse(reply) -> action | None`` (default: :class:`ActionNames`, the first
      action name in the reply).
    - ``action_names``: one name per action, for the default ``parse`` and question (default:
      ``"0"``, ``"1"``, ...).
    - ``system``: text that opens the conversation (rules, a map), or ``f(game) -> str``.
    - ``parse_penalty``: reward of an unreadable reply (default ``-1.0``); ``not_understood``:
      the game's answer to it, with ``{reply}`` for the reply's text.
    - ``max_context_tokens``: the conversation budget, prompt and reply together (default: the
      model's positions, at most :data:`DEFAULT_CONTEXT_TOKENS`); ``max_new_tokens``: reply
      length.
    - ``recent_turns``: turns the observation keeps after the opening (default ``None``: all).
    - ``model``, ``tokenizer``, ``ref_model``, ``kl_coef``, ``kl_estimator``, ``kl_target``,
      ``kl_horizon``, ``kl_batch_size``, ``trust_remote_code``, ``device``, ``dtype``: as in
      ``LMBandit-v0``; an adaptive β counts replies, not episodes.
    - ``chat_template``: ``None`` (use the tokenizer's if it has one), ``True`` or ``False``.
    - ``render_mode``: ``"ansi"`` (the conversation and the last reward's parts) or ``"human"``.

    Bad arguments raise before anything is loaded or changed. A ``parse`` that returns a value
    outside the game's action space raises ``ValueError`` naming the reply and the value, before
    anything changes.

    ## Version History
    - v0: initial version.

    Example:
        >>> import gymnasium as gym, lmgym
        >>> from lmgym.envs.text_game import TextGameEnv
        >>> game = gym.make("CatGrid-v0", render_mode="ansi")
        >>> env = TextGameEnv(game, action_names=("up", "right", "down", "left"))
        >>> obs, info = env.reset(seed=0)
        >>> obs, reward, terminated, truncated, info = env.step(env.action_space.sample())
        >>> info["parsed"], info["game_action"]
        (False, None)
    """

    metadata = {"render_modes": ["ansi", "human"], "render_fps": 1}

    def __init__(
        self,
        env: gym.Env,
        describe: Describe | None = None,
        parse: Parse | None = None,
        *,
        action_names: tuple[str, ...] | list[str] | None = None,
        system: str | Callable[[gym.Env], str] | None = None,
        parse_penalty: float = -1.0,
        not_understood: str = NOT_UNDERSTOOD,
        model: ModelSpec | None = None,
        tokenizer: str | Path | PreTrainedTokenizerBase | None = None,
        ref_model: str | Path | PreTrainedModel | None = None,
        kl_coef: float = 0.05,
        kl_estimator: str = "k1",
        kl_target: float | None = None,
        kl_horizon: int = 10_000,
        kl_batch_size: int | None = None,
        max_context_tokens: int | None = None,
        max_new_tokens: int = 8,
        recent_turns: int | None = None,
        chat_template: bool | None = None,
        render_mode: str | None = None,
        trust_remote_code: bool = False,
        device: str | torch.device | None = None,
        dtype: str | torch.dtype | None = None,
    ) -> None:
        self.render_mode = check_render_mode(render_mode, self.metadata["render_modes"])
        game_actions = _check_game(env)
        self.parse: Parse = _check_parse(parse, action_names, game_actions)
        self.describe: Describe = _check_describe(describe, env, self.parse)
        if system is not None and not (isinstance(system, str) or callable(system)):
            raise TypeError(
                f"system={short_repr(system)} is neither text nor a callable; expected the "
                "conversation's opening text (rules, a map), f(game) -> str, or None."
            )
        self.system = system
        self.parse_penalty = _check_penalty(parse_penalty)
        self.recent_turns = _check_recent_turns(recent_turns)
        self.not_understood = _check_not_understood(not_understood)
        check_lm_env_args(
            kl_coef=kl_coef,
            kl_target=kl_target,
            kl_horizon=kl_horizon,
            max_prompt_tokens=1,
            max_new_tokens=max_new_tokens,
            truncate_prompts=False,
        )
        if max_context_tokens is not None:
            check_positive_int("max_context_tokens", max_context_tokens, example=256)
        if chat_template is not None:
            check_bool("chat_template", chat_template)

        self.game = env
        self.models: LMModels = build_lm_models(
            model,
            tokenizer,
            ref_model,
            trust_remote_code=trust_remote_code,
            device=device,
            dtype=dtype,
        )
        self.max_new_tokens = int(max_new_tokens)
        self.max_context_tokens = _context_budget(
            max_context_tokens, model_context_length(self.models), self.max_new_tokens
        )
        self.max_prompt_tokens = self.max_context_tokens - self.max_new_tokens
        has_template = bool(getattr(self.models.tokenizer, "chat_template", None))
        if chat_template and not has_template:
            raise ValueError(
                f"chat_template=True, but the tokenizer {type(self.models.tokenizer).__name__} "
                "has no chat template; expected a chat model's tokenizer. Pass "
                "chat_template=None (plain text) or set tokenizer.chat_template."
            )
        self.codec = ConversationCodec(
            self.models.tokenizer,
            chat=has_template if chat_template is None else chat_template,
            pad_token_id=self.models.pad_token_id,
            recent_turns=self.recent_turns,
        )
        self.rewarder = SequenceRewarder(
            self.models,
            no_task_reward,
            kl_coef=float(kl_coef),
            kl_estimator=kl_estimator,
            kl_target=None if kl_target is None else float(kl_target),
            kl_horizon=int(kl_horizon),
            kl_batch_size=kl_batch_size,
        )
        self.observation_space, self.action_space = completion_spaces(
            self.max_prompt_tokens, self.max_new_tokens, self.models.vocab_size
        )
        self._check_first_turn_fits()
        self._done = True
        self._state: ConversationState | None = None
        self._game_obs: Any = None
        self._game_info: dict[str, Any] = {}
        self._turn = 0
        self._last_info: dict[str, Any] | None = None
        self._last_reward = 0.0

    # ------------------------------------------------------------------------------- episodes

    def attach_policy(self, policy: PolicyLogProbFn | None) -> None:
        """Use ``policy`` as π_θ in the KL term (``None`` detaches: the cross-entropy form).

        The protocol is ``LMBandit-v0``'s (:data:`~lmgym.envs.sequence_reward.PolicyLogProbFn`):
        observations are the conversations, actions the replies.
        """
        self.rewarder.policy = policy

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[np.ndarray, dict[str, Any]]:
        """Reset the game (with ``seed`` and ``options``) and open the conversation.

        A seeded reset also puts an adaptive β back to its initial value. If describing the
        game's first state fails, the error is raised and the env needs another reset.
        """
        seed = check_seed(seed)
        if options is not None and not isinstance(options, dict):
            raise TypeError(
                f"options={short_repr(options)} (type {type(options).__name__}) is not a dict; "
                "expected None or a dict, which is passed to the game's reset."
            )
        self._done = True
        with rng_restored_on_error(self):
            super().reset(seed=seed)
            game_obs, game_info = self.game.reset(seed=seed, options=options)
            text = self._describe(game_obs, game_info)
            state = self.codec.opening(self._system_text(), text)
            self._check_fits(state, "the first turn")
        if seed is not None:
            self.rewarder.reset_controller()
        self._state, self._game_obs, self._game_info = state, game_obs, game_info
        self._turn, self._last_info, self._done = 0, None, False
        info = {
            "text": text,
            "game_observation": copy.deepcopy(game_obs),
            "game_info": copy.deepcopy(game_info),
        }
        return self._observation(state.ids), info

    def step(
        self, action: np.ndarray
    ) -> tuple[np.ndarray, SupportsFloat, bool, bool, dict[str, Any]]:
        """Read the reply, step the game if it names a move, and answer with the new state."""
        if self._done or self._state is None:
            raise ResetNeeded(
                "step() called on a text game whose episode has ended (or never started); call "
                "reset() first."
            )
        reply_ids = check_completion_action(action, self.max_new_tokens, self.models.vocab_size)
        models = self.models
        counted = reply_ids[: reply_length(reply_ids, models.eos_token_id, models.pad_token_id)]
        reply = models.tokenizer.decode(counted.tolist(), skip_special_tokens=True)
        assert isinstance(reply, str), type(reply)  # one sequence decodes to one text
        game_action = self._parse(reply)
        state = self._state
        prompt = state.messages[-1][1]
        obs_row = self._observation(state.ids)
        # The KL of the reply's tokens, exactly as LMBandit-v0 computes it.
        batch = self.rewarder([prompt], obs_row[None, :], reply_ids[None, :])

        self._done = True  # until the new state is recorded: a failing describe needs a reset
        if game_action is None:
            game_reward, terminated, truncated = 0.0, False, False
            task_reward = self.parse_penalty
            answer = self.not_understood.format(reply=reply) + "\n"
            answer += self._describe(self._game_obs, self._game_info)
        else:
            game_obs, raw_reward, terminated, truncated, game_info = self.game.step(game_action)
            game_reward = task_reward = float(raw_reward)
            self._game_obs, self._game_info = game_obs, game_info
            answer = self._describe(game_obs, game_info)
        new_state = self.codec.extend(state, counted, reply, answer)
        overflow = new_state.ids.size > self.max_prompt_tokens
        truncated = bool(truncated or (overflow and not terminated))
        reward = float(combine_reward(np.array([task_reward]), batch.kl, batch.kl_coef)[0])

        self._state, self._turn = new_state, self._turn + 1
        self._done = bool(terminated or truncated)
        info = batch.info(0)
        info.update(
            reward_model=float(task_reward),
            game_reward=game_reward,
            parsed=game_action is not None,
            game_action=game_action,
            text=answer,
            turn=self._turn,
            context_tokens=int(new_state.ids.size),
            context_overflow=bool(overflow),
            game_observation=copy.deepcopy(self._game_obs),
            game_info=copy.deepcopy(self._game_info),
        )
        self._last_info, self._last_reward = info, reward
        if self.render_mode == "human":
            self.render()
        return self._observation(new_state.ids), reward, bool(terminated), truncated, info

    # ------------------------------------------------------------------------------- render

    def render(self) -> str | None:  # type: ignore[override]
        """``ansi``: the conversation so far and the last reward's parts; ``human`` prints it."""
        if self.render_mode is None:
            return None
        text = self.render_text()
        if self.render_mode == "human":
            show_human(text)
            return None
        return text

    def render_text(self) -> str:
        """The conversation as ``role: text`` lines, then the last step's reward parts."""
        if self._state is None:
            return "(no conversation yet: call reset())"
        lines = [f"{role}: {text}" for role, text in self._state.messages]
        info = self._last_info
        if info is not None:
            lines.append(
                f"reward = {info['reward_model']:.4f} - {info['kl_coef']:.4f} * "
                f"{info['kl']:.4f} = {self._last_reward:.4f} (kl form: {info['kl_form']}, "
                f"parsed: {info['parsed']}, context overflow: {info['context_overflow']})"
            )
        return "\n".join(lines)

    # ------------------------------------------------------------------------------- helpers

    def _observation(self, ids: np.ndarray) -> np.ndarray:
        out = np.full(self.max_prompt_tokens, self.models.pad_token_id, dtype=np.int64)
        kept = ids[-self.max_prompt_tokens :]  # an overflowing conversation keeps its end
        out[: kept.size] = kept
        return out

    def _system_text(self) -> str | None:
        if self.system is None or isinstance(self.system, str):
            return self.system
        return check_description(self.system(self.game), "system(game)")

    def _describe(self, game_obs: Any, game_info: dict[str, Any]) -> str:
        return check_description(self.describe(self.game, game_obs, game_info), "describe")

    def _parse(self, reply: str) -> int | None:
        value = self.parse(reply)
        if value is None:
            return None
        space = self.game.action_space
        ok = isinstance(value, (numbers.Integral, np.integer)) and not isinstance(
            value, (bool, np.bool_)
        )
        if not ok or not space.contains(np.int64(value)):
            raise ValueError(
                f"parse({reply!r}) returned {short_repr(value)} (type {type(value).__name__}), "
                f"which is not in the game's action space {space}; expected an int action of "
                "it, or None for a reply that names no action. Fix the parse function."
            )
        return int(value)

    def _check_fits(self, state: ConversationState, what: str) -> None:
        if state.ids.size > self.max_prompt_tokens:
            raise ValueError(
                f"max_context_tokens={self.max_context_tokens} is smaller than one turn: "
                f"{what} takes {state.ids.size} tokens, and a reply max_new_tokens="
                f"{self.max_new_tokens}; expected at least {state.ids.size + self.max_new_tokens}"
                ". Raise max_context_tokens (up to the model's positions), or shorten the "
                "system text and the description."
            )

    def _check_first_turn_fits(self) -> None:
        """Describe a copy of the game after a reset: a budget below one turn fails here."""
        probe = copy.deepcopy(self.game)
        game_obs, game_info = probe.reset(seed=0)
        text = check_description(self.describe(probe, game_obs, game_info), "describe")
        system = self.system
        if callable(system):
            system = check_description(system(probe), "system(game)")
        self._check_fits(self.codec.opening(system, text), "the first turn")


def _check_game(env: Any) -> spaces.Discrete:
    if not isinstance(env, gym.Env):
        raise TypeError(
            f"env={short_repr(env)} (type {type(env).__name__}) is not a gymnasium.Env; "
            "expected the game, e.g. env=gym.make('CatGrid-v0', render_mode='ansi')."
        )
    if not isinstance(env.action_space, spaces.Discrete):
        raise TypeError(
            f"env has the action space {env.action_space}; expected Discrete(n): a reply is "
            "read back into one of n named actions, and a continuous or composite action has "
            "no name to say. Wrap the game so its actions are discrete (e.g. a list of moves)."
        )
    return env.action_space


def _check_parse(parse: Any, action_names: Any, space: spaces.Discrete) -> Parse:
    if parse is not None:
        if not callable(parse):
            raise TypeError(
                f"parse={short_repr(parse)} is not callable; expected parse(reply) -> action "
                "or None, e.g. parse=ActionNames(('up', 'down'))."
            )
        return parse
    n = int(space.n)
    names = tuple(str(i) for i in range(n)) if action_names is None else tuple(action_names)
    if len(names) != n:
        raise ValueError(
            f"action_names={short_repr(list(names))} has {len(names)} names; expected one per "
            f"action of the game's {space}, in action order."
        )
    return ActionNames(names, start=int(space.start))


def _check_describe(describe: Any, env: gym.Env, parse: Parse) -> Describe:
    if describe is not None:
        if not callable(describe):
            raise TypeError(
                f"describe={short_repr(describe)} is not callable; expected "
                "describe(game, observation, info) -> str."
            )
        return describe
    if env.render_mode != "ansi":
        raise ValueError(
            f"describe=None needs the game's ansi rendering, but env.render_mode="
            f"{env.render_mode!r}; make the game with render_mode='ansi', or pass "
            "describe(game, observation, info) -> str."
        )
    choices = parse.choices() if isinstance(parse, ActionNames) else "?"
    return AnsiDescription(f"Your move: {choices}?")


def _check_penalty(parse_penalty: Any) -> float:
    if isinstance(parse_penalty, (bool, np.bool_)) or not isinstance(parse_penalty, numbers.Real):
        raise TypeError(
            f"parse_penalty={short_repr(parse_penalty)} (type {type(parse_penalty).__name__}) "
            "is not a number; expected the reward of an unreadable reply, e.g. -1.0."
        )
    if not np.isfinite(float(parse_penalty)):
        raise ValueError(
            f"parse_penalty={parse_penalty!r} is not finite; expected a finite reward, e.g. -1.0."
        )
    return float(parse_penalty)


def _check_not_understood(not_understood: Any) -> str:
    if not isinstance(not_understood, str):
        raise TypeError(
            f"not_understood={short_repr(not_understood)} is not a str; expected a text with "
            f"{{reply}} for the reply, e.g. {NOT_UNDERSTOOD!r}."
        )
    try:
        not_understood.format(reply="x")
    except (KeyError, IndexError, ValueError) as err:
        raise ValueError(
            f"not_understood={not_understood!r} is not a format string with only {{reply}} "
            f"({err!r}); expected e.g. {NOT_UNDERSTOOD!r}."
        ) from None
    return not_understood


def _check_recent_turns(recent_turns: Any) -> int | None:
    if recent_turns is None:
        return None
    value = require_int("recent_turns", recent_turns, "an int >= 1 or None, e.g. recent_turns=1")
    if value < 1:
        raise ValueError(
            f"recent_turns={value} keeps no turn, so the LM would not read the game's current "
            "state; expected an int >= 1 (the last turns the observation keeps after the "
            "opening), or None to keep the whole conversation."
        )
    return int(value)


def _context_budget(requested: int | None, context: int | None, max_new_tokens: int) -> int:
    budget = requested
    if budget is None:
        budget = DEFAULT_CONTEXT_TOKENS if context is None else min(context, DEFAULT_CONTEXT_TOKENS)
    elif context is not None and budget > context:
        raise ValueError(
            f"max_context_tokens={budget} exceeds the model's {context} positions "
            f"(config.max_position_embeddings); expected at most {context}. Lower it."
        )
    if budget <= max_new_tokens:
        raise ValueError(
            f"max_context_tokens={budget} is smaller than one turn: a reply alone takes "
            f"max_new_tokens={max_new_tokens}; expected room for the game's text too. Raise "
            "max_context_tokens or lower max_new_tokens."
        )
    return int(budget)
