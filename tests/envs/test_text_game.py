"""TextGameEnv: the wrapper's contract on TextCatGrid-v0, LMText-v0 and Blackjack-v1."""

from __future__ import annotations

import pickle
import warnings
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
import torch
from gymnasium import spaces
from gymnasium.utils.env_checker import check_env as gym_check_env
from stable_baselines3 import PPO
from stable_baselines3.common.env_checker import check_env as sb3_check_env
from transformers import GPT2Config, GPT2LMHeadModel

import lmgym  # noqa: F401  (registers the envs)
from lmgym.agents import LMActorCriticPolicy, lm_logprobs, lm_policy_kwargs
from lmgym.envs import TextGameEnv
from lmgym.envs.text_game_tokenizer import word_tokenizer
from lmgym.envs.text_games import BLACKJACK_ACTIONS, describe_blackjack
from lmgym.error import ResetNeeded
from lmgym.models.scoring import completion_logprobs

GAME_TEXTS = [
    "Brooms: (1 3). Bathtubs: (0 3) none. Meat: 1 down, 2 right. Up: wall. Left: broom bathtub",
    "meat here",
    "The cat is at (0 0). Which way? " + " ".join(str(i) for i in range(32)),
    'I did not understand "x". Your hand: a no usable ace. Dealer shows: Stick or hit?',
    "Your move: up, right, down or left? C . T B M ( )",
]
"""Every word the games below say, so the tiny tokenizer has no unknown words."""

POSITIONS = 128


@pytest.fixture(scope="module")
def game_lm_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny GPT-2 (128 positions) with a word-level tokenizer over the games' words."""
    path = tmp_path_factory.mktemp("game_lm")
    tokenizer = word_tokenizer(GAME_TEXTS, model_max_length=POSITIONS)
    torch.manual_seed(0)
    config = GPT2Config(vocab_size=len(tokenizer), n_positions=POSITIONS, n_embd=32, n_layer=2,
                        n_head=2, bos_token_id=1, eos_token_id=2, pad_token_id=0)  # fmt: skip
    GPT2LMHeadModel(config).save_pretrained(path, safe_serialization=True)
    tokenizer.save_pretrained(path)
    return path


def make_cat(game_lm_dir: Path, **kwargs) -> gym.Env:
    return gym.make("TextCatGrid-v0", model=game_lm_dir, max_new_tokens=3, **kwargs)


def make_blackjack(game_lm_dir: Path, **kwargs) -> TextGameEnv:
    return TextGameEnv(gym.make("Blackjack-v1"), describe_blackjack, BLACKJACK_ACTIONS,
                       model=game_lm_dir, max_new_tokens=3, **kwargs)  # fmt: skip


def reply(env: gym.Env, text: str) -> np.ndarray:
    """The action that says ``text`` and ends with EOS (padded with more EOS)."""
    models = env.unwrapped.models
    ids = models.tokenizer(text, add_special_tokens=False)["input_ids"] + [models.eos_token_id]
    T = env.action_space.shape[0]
    return np.array((ids + [models.eos_token_id] * T)[:T], dtype=np.int64)


MAKERS = {
    "TextCatGrid-v0": make_cat,
    "LMText-v0-CatGrid-ansi": lambda d, **kw: gym.make(
        "LMText-v0", game="CatGrid-v0", model=d, max_new_tokens=3, **kw
    ),
    "Blackjack-v1": make_blackjack,
}


@pytest.mark.parametrize("make", MAKERS.values(), ids=MAKERS.keys())
def test_checkers_pass_without_warnings(game_lm_dir: Path, make) -> None:
    env = make(game_lm_dir)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        gym_check_env(env.unwrapped, skip_render_check=True)
        sb3_check_env(env.unwrapped, warn=True)
    assert env.observation_space.shape == (POSITIONS - 3,)
    assert env.action_space == spaces.MultiDiscrete([len(env.unwrapped.models.tokenizer)] * 3)


def test_checkers_pass_with_adaptive_beta_and_policy(game_lm_dir: Path) -> None:
    env = make_cat(game_lm_dir, kl_estimator="k3", kl_target=1.0, kl_horizon=100).unwrapped
    env.attach_policy(lm_logprobs(env.models.model, env.models))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        gym_check_env(env, skip_render_check=True)
        sb3_check_env(env, warn=True)


def test_cat_walks_to_the_meat_with_the_inner_rewards(game_lm_dir: Path) -> None:
    layout = ["C.M", "..."]
    env = make_cat(game_lm_dir, layout=layout, kl_coef=0.1)
    inner = gym.make("CatGrid-v0", layout=layout)
    obs, info = env.reset(seed=0)
    inner.reset(seed=0)
    assert info["text"] == "The cat is at (0 0). Meat: 2 right. Up: wall. Left: wall. Which way?"
    assert info["game_observation"] == 0
    for turn, word in enumerate(["down", "right", "up", "right"], start=1):
        action = reply(env, word)
        row = obs
        obs, reward, terminated, truncated, info = env.step(action)
        _, inner_reward, inner_terminated, _, _ = inner.step(
            ("up", "right", "down", "left").index(word)
        )
        assert info["parsed"] and info["turn"] == turn
        assert info["game_reward"] == inner_reward and terminated == inner_terminated
        assert reward == pytest.approx(inner_reward - 0.1 * info["kl"], abs=1e-6)
        # The KL term is the reply's cross-entropy under the reference (no policy attached).
        models = env.unwrapped.models
        logp = completion_logprobs(models.ref_model, torch.as_tensor(row[None]),
                                   torch.as_tensor(action[None]), pad_token_id=0,
                                   eos_token_id=2, full=False)  # fmt: skip
        assert info["kl"] == pytest.approx(-float(logp[0, :2].sum()), rel=1e-5)
        assert info["kl_form"] == "cross_entropy" and info["completion"] == word
    assert terminated and not truncated and info["game_reward"] == 100.0
    with pytest.raises(ResetNeeded):
        env.step(action)


def test_reward_is_the_game_reward_when_the_policy_is_the_reference(game_lm_dir: Path) -> None:
    env = make_cat(game_lm_dir, layout=["CM"], kl_coef=1.0)
    env.unwrapped.attach_policy(lm_logprobs(env.unwrapped.models.model, env.unwrapped.models))
    env.reset(seed=0)
    _, reward, terminated, _, info = env.step(reply(env, "right"))
    assert terminated and info["kl"] == pytest.approx(0.0, abs=1e-5)
    assert reward == pytest.approx(100.0, abs=1e-4) and info["kl_form"] == "policy"


def test_conversation_holds_the_replies_own_ids(game_lm_dir: Path) -> None:
    env = make_cat(game_lm_dir, layout=["C..M"])
    obs0, _ = env.reset(seed=0)
    action = reply(env, "right")
    obs1, *_ = env.step(action)
    n0 = int((obs0 != 0).sum())
    np.testing.assert_array_equal(obs1[:n0], obs0[:n0])
    np.testing.assert_array_equal(obs1[n0 : n0 + 2], action[:2])  # "right" and its EOS
    tok = env.unwrapped.models.tokenizer
    tail = tok.decode(obs1[n0 + 2 :][obs1[n0 + 2 :] != 0].tolist(), skip_special_tokens=True)
    assert tail == "the cat is at ( 0 1 ) . meat : 2 right . up : wall . down : wall . which way ?"


def test_recent_turns_keeps_the_opening_and_the_last_turns(game_lm_dir: Path) -> None:
    # The same moves with the whole conversation and with a window of one turn: the window is
    # the opening, then the last reply's own ids and the game's answer, ids for ids.
    full = make_cat(game_lm_dir, layout=["C...M"])
    window = make_cat(game_lm_dir, layout=["C...M"], recent_turns=1)
    opening, _ = full.reset(seed=0)
    window.reset(seed=0)
    n_open = int((opening != 0).sum())
    turn_starts = [n_open]
    for step in range(3):
        obs_full, _, _, _, info_full = full.step(reply(full, "right"))
        obs_win, _, _, _, info_win = window.step(reply(window, "right"))
        turn_starts.append(int((obs_full != 0).sum()))
        last_turn = obs_full[turn_starts[-2] : turn_starts[-1]]
        expected = np.concatenate([opening[:n_open], last_turn])
        np.testing.assert_array_equal(obs_win[: expected.size], expected, err_msg=str(step))
        assert not obs_win[expected.size :].any()
        assert info_win["context_tokens"] == expected.size
        assert (expected.size < info_full["context_tokens"]) == (step > 0)  # turn 1 left out
    assert window.unwrapped.render_text().count("assistant: right") == 3  # the messages stay whole


def test_recent_turns_with_a_chat_template_renders_the_window(game_lm_dir: Path) -> None:
    tok = word_tokenizer(GAME_TEXTS, model_max_length=POSITIONS)
    tok.chat_template = "{% for m in messages %}{{ m['content'] }} {% endfor %}"
    env = make_cat(game_lm_dir, layout=["C..M"], tokenizer=tok, recent_turns=1)
    env.reset(seed=0)
    env.step(reply(env, "right"))
    obs, *_ = env.step(reply(env, "right"))
    text = tok.decode(obs[obs != 0].tolist(), skip_special_tokens=True)
    # System text and first description, then the last reply and answer; turn 1 is left out.
    assert text == ("brooms : none . bathtubs : none . the cat is at ( 0 0 ) . meat : 3 right . "
                    "up : wall . down : wall . left : wall . which way ? right the cat is at "
                    "( 0 2 ) . meat : 1 right . up : wall . right : meat . down : wall . which "
                    "way ?")  # fmt: skip


@pytest.mark.parametrize("value", [0, -1, 1.5, "2", True])
def test_recent_turns_must_keep_a_turn(game_lm_dir: Path, value) -> None:
    error = ValueError if value in (0, -1) and not isinstance(value, bool) else TypeError
    with pytest.raises(error, match="recent_turns="):
        make_cat(game_lm_dir, recent_turns=value)


def test_unparsable_reply_pays_the_penalty_and_the_game_waits(game_lm_dir: Path) -> None:
    env = make_cat(game_lm_dir, layout=["C.M"], parse_penalty=-2.5, kl_coef=0.1)
    env.reset(seed=0)
    obs, reward, terminated, truncated, info = env.step(reply(env, "cat"))
    assert not (terminated or truncated)
    assert not info["parsed"] and info["game_action"] is None and info["game_reward"] == 0.0
    assert reward == pytest.approx(-2.5 - 0.1 * info["kl"], abs=1e-6)
    assert info["text"] == (
        'I did not understand "cat".\nThe cat is at (0 0). Meat: 2 right. Up: wall. Down: wall. '
        "Left: wall. Which way?"
    )
    assert info["game_observation"] == 0 and env.unwrapped.game.unwrapped.state == 0
    tok = env.unwrapped.models.tokenizer
    assert "did not understand" in tok.decode(obs[obs != 0].tolist(), skip_special_tokens=True)
    assert env.step(reply(env, "right"))[-1]["game_observation"] == 1  # the game goes on


def test_parse_returning_an_action_outside_the_space_names_reply_and_value(
    game_lm_dir: Path,
) -> None:
    def parse(text: str) -> int:
        return 7 if "up" in text else 1

    env = TextGameEnv(gym.make("CatGrid-v0", layout=["C.M"], render_mode="ansi"),
                      parse=parse, model=game_lm_dir, max_new_tokens=3)  # fmt: skip
    obs, _ = env.reset(seed=0)
    with pytest.raises(ValueError, match=r"parse\('up'\) returned 7.*Discrete\(4\)"):
        env.step(reply(env, "up"))
    assert env.step(reply(env, "right"))[-1]["turn"] == 1  # nothing changed before the error


def test_context_overflow_truncates_and_says_so(game_lm_dir: Path) -> None:
    # The opening takes 37 tokens and each unparsed turn 2 + 36: 113 after two turns, 151 after
    # three, and the block is 120 - 3 = 117 wide.
    env = make_cat(game_lm_dir, layout=["C..", "..M"], max_context_tokens=120)
    obs, _ = env.reset(seed=0)
    for turn in (1, 2):
        obs, _, terminated, truncated, info = env.step(reply(env, "cat"))
        assert not (terminated or truncated) and not info["context_overflow"], turn
    obs, _, terminated, truncated, info = env.step(reply(env, "cat"))
    assert truncated and not terminated and info["context_overflow"]
    assert info["context_tokens"] > env.observation_space.shape[0]
    tok = env.unwrapped.models.tokenizer
    assert tok.decode(obs[-5:].tolist()) == "wall . which way ?"  # the conversation's end is kept
    with pytest.raises(ResetNeeded):
        env.step(reply(env, "right"))


def test_blackjack_plays_with_only_describe_and_parse(game_lm_dir: Path) -> None:
    env = make_blackjack(game_lm_dir, kl_coef=0.0)
    inner = gym.make("Blackjack-v1")
    for seed in range(5):
        _, info = env.reset(seed=seed)
        inner_obs, _ = inner.reset(seed=seed)
        assert info["text"] == describe_blackjack(inner, inner_obs, {})
        _, reward, terminated, _, info = env.step(reply(env, "stick"))
        _, inner_reward, inner_terminated, _, _ = inner.step(0)
        assert terminated and inner_terminated and reward == inner_reward == info["game_reward"]


def test_same_seed_same_rollout_and_pickle_continues(game_lm_dir: Path) -> None:
    def rollout(env: gym.Env, seed: int) -> list:
        env.action_space.seed(seed)
        out = [env.reset(seed=seed)[0].tolist()]
        for _ in range(4):
            obs, reward, terminated, truncated, info = env.step(env.action_space.sample())
            out.append((obs.tolist(), reward, info["text"]))
            if terminated or truncated:
                out.append(env.reset()[0].tolist())
        return out

    env = make_blackjack(game_lm_dir)
    assert rollout(env, 3) == rollout(make_blackjack(game_lm_dir), 3)
    assert rollout(env, 3) != rollout(env, 4)

    cat = make_cat(game_lm_dir)
    cat.reset(seed=1)
    cat.step(reply(cat, "down"))
    clone = pickle.loads(pickle.dumps(cat))
    a, b = cat.step(reply(cat, "right")), clone.step(reply(clone, "right"))
    np.testing.assert_array_equal(a[0], b[0])
    assert a[1] == pytest.approx(b[1]) and a[-1]["text"] == b[-1]["text"]


def test_chat_template_renders_the_messages(game_lm_dir: Path) -> None:
    tok = word_tokenizer(GAME_TEXTS, model_max_length=POSITIONS)
    tok.chat_template = "{% for m in messages %}{{ m['content'] }} {% endfor %}"
    env = make_cat(game_lm_dir, layout=["C.M"], tokenizer=tok)
    assert env.unwrapped.codec.chat
    obs, _ = env.reset(seed=0)
    obs, *_ = env.step(reply(env, "right"))
    text = tok.decode(obs[obs != 0].tolist(), skip_special_tokens=True)
    assert text.endswith("which way ? right the cat is at ( 0 1 ) . meat : 1 right . up : wall "
                         ". right : meat . down : wall . which way ?")  # fmt: skip
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        gym_check_env(env.unwrapped, skip_render_check=True)


def test_ansi_render_shows_the_conversation_and_reward(game_lm_dir: Path) -> None:
    env = make_cat(game_lm_dir, layout=["C.M"], render_mode="ansi")
    env.reset(seed=0)
    env.step(reply(env, "right"))
    text = env.render()
    assert "user: The cat is at (0 0). Meat: 2 right." in text
    assert "assistant: right" in text and "parsed: True" in text


def test_lm_policy_plays_it_with_ppo(game_lm_dir: Path) -> None:
    env = make_cat(game_lm_dir, layout=["C.M"])
    model = PPO(LMActorCriticPolicy, env, n_steps=8, batch_size=8, n_epochs=1, seed=0,
                policy_kwargs=lm_policy_kwargs(env))  # fmt: skip
    model.policy.attach_to(env)
    model.learn(8)
    assert model.num_timesteps == 8
    assert model.rollout_buffer.rewards.shape == (8, 1)


class BoxActions(gym.Env):
    observation_space = spaces.Discrete(2)
    action_space = spaces.Box(-1.0, 1.0, (1,))


def text_of(game, obs, info):
    return "The cat is at (0 0)."


BAD = {
    "box_actions": (lambda: BoxActions(), {}, TypeError, "expected Discrete"),
    "not_an_env": (lambda: "CatGrid-v0", {}, TypeError, "is not a gymnasium.Env"),
    "no_ansi": (lambda: gym.make("CatGrid-v0"), {}, ValueError, "render_mode='ansi'"),
    "describe_non_string": (lambda: gym.make("CatGrid-v0"), {"describe": lambda g, o, i: 3},
                            TypeError, "describe returned 3 (type int)"),
    "parse_not_callable": (lambda: gym.make("CatGrid-v0"), {"describe": text_of, "parse": "up"},
                           TypeError, "parse='up' is not callable"),
    "names_count": (lambda: gym.make("CatGrid-v0", render_mode="ansi"),
                    {"action_names": ("up", "down")}, ValueError, "has 2 names"),
    "budget_below_a_turn": (lambda: gym.make("CatGrid-v0"), {"describe": text_of,
                            "max_context_tokens": 12}, ValueError, "smaller than one turn"),
    "budget_below_reply": (lambda: gym.make("CatGrid-v0"), {"describe": text_of,
                           "max_context_tokens": 3}, ValueError, "smaller than one turn"),
    "budget_over_model": (lambda: gym.make("CatGrid-v0"), {"describe": text_of,
                          "max_context_tokens": 500}, ValueError, "exceeds the model's 128"),
    "penalty_nan": (lambda: gym.make("CatGrid-v0"), {"describe": text_of,
                    "parse_penalty": float("nan")}, ValueError, "parse_penalty=nan"),
    "not_understood": (lambda: gym.make("CatGrid-v0"), {"describe": text_of,
                       "not_understood": "{what}"}, ValueError, "not_understood='{what}'"),
    "chat_without_template": (lambda: gym.make("CatGrid-v0"), {"describe": text_of,
                              "chat_template": True}, ValueError, "has no chat template"),
}  # fmt: skip


@pytest.mark.parametrize("case", BAD.values(), ids=BAD.keys())
def test_bad_arguments_raise_naming_them(game_lm_dir: Path, case) -> None:
    game, kwargs, error, fragment = case
    with pytest.raises(error, match=fragment.replace("(", r"\(").replace(")", r"\)")):
        TextGameEnv(game(), model=game_lm_dir, max_new_tokens=3, **kwargs)


def test_lm_text_refuses_an_unknown_game(game_lm_dir: Path) -> None:
    with pytest.raises(ValueError, match="game='Chess-v0' is not a registered env id"):
        gym.make("LMText-v0", game="Chess-v0", model=game_lm_dir)


def test_human_render_prints_what_ansi_returns(game_lm_dir: Path, capsys) -> None:
    shown = make_cat(game_lm_dir, render_mode="human")
    text = make_cat(game_lm_dir, render_mode="ansi")
    for env in (shown, text):
        env.reset(seed=0)
        env.step(reply(env, "right"))  # human mode shows each step's text as it happens
    assert capsys.readouterr().out == text.render() + "\n"
