"""The logged-episode dataset: recording, the JSONL round trip and every refused input."""

from __future__ import annotations

import json
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest

from lmgym.models.loading import DEFAULT_MODEL_DIR, load_tokenizer
from lmgym.offline.dataset import Episode, EpisodeDataset, tokenizer_fingerprint
from lmgym.offline.record import record_episodes
from tests.conftest import PROMPTS, build_tiny_tokenizer
from tests.offline.conftest import tiny_env_kwargs


def test_recorded_episodes_carry_the_env_reward_at_the_last_token(tiny_episodes) -> None:
    assert len(tiny_episodes) == 64
    for episode in tiny_episodes:
        assert episode.prompt in PROMPTS
        assert episode.prompt_ids[0] == 1  # the tokenizer's <bos>
        assert episode.dones == [0] * (len(episode.completion_ids) - 1) + [1]
        assert all(r == 0 for r in episode.rewards[:-1])
        # count_great on the decoded completion is the whole (KL-free) reward
        words = build_tiny_tokenizer().decode(episode.completion_ids, skip_special_tokens=True)
        assert episode.rewards[-1] == words.split().count("great")


def test_recording_is_seeded_and_batched(tiny_lm_dir) -> None:
    env = gym.make_vec("LMBandit-v0", num_envs=8, **tiny_env_kwargs(tiny_lm_dir))
    first = record_episodes(env, 20, seed=3)
    again = record_episodes(env, 20, seed=3)
    assert len(first) == 20  # 3 steps of 8, cut to 20
    assert first == again
    assert env.rewarder.policy is None  # the policy attached while recording is taken off


def test_record_refuses_a_single_env_and_a_bad_n(tiny_lm_dir) -> None:
    single = gym.make("LMBandit-v0", **tiny_env_kwargs(tiny_lm_dir)).unwrapped
    with pytest.raises(TypeError, match="not an LMBandit-v0 vector env"):
        record_episodes(single, 4)  # type: ignore[arg-type]
    vector = gym.make_vec("LMBandit-v0", num_envs=2, **tiny_env_kwargs(tiny_lm_dir))
    with pytest.raises(ValueError, match="n=0 is not an int >= 1"):
        record_episodes(vector, 0)


def test_jsonl_round_trip(tiny_episodes, tmp_path: Path) -> None:
    path = tiny_episodes.save_jsonl(tmp_path / "sub" / "episodes.jsonl")
    loaded = EpisodeDataset.load_jsonl(path, tokenizer=build_tiny_tokenizer())
    assert loaded == tiny_episodes
    assert loaded.mean_return() == pytest.approx(tiny_episodes.mean_return())
    assert len(path.read_text().splitlines()) == 64


def test_one_final_reward_is_paid_at_the_last_token(tmp_path: Path) -> None:
    record = {"prompt": "p", "prompt_ids": [1], "completion_ids": [5, 6, 2], "reward": 0.5,
              "tokenizer": "abc"}  # fmt: skip
    path = tmp_path / "e.jsonl"
    path.write_text(json.dumps(record) + "\n\n")
    episode = EpisodeDataset.load_jsonl(path).episodes[0]
    assert episode.rewards == [0.0, 0.0, 0.5] and episode.dones == [0, 0, 1]


def test_top_fraction_keeps_the_best_returns() -> None:
    episodes = [Episode("p", [1], [5], [float(r)]) for r in (0, 3, 1, 2)]
    top = EpisodeDataset(episodes, "abc").top_fraction(0.5)
    assert top.returns() == [3.0, 2.0]  # in dataset order
    with pytest.raises(ValueError, match="fraction=0 must lie in"):
        EpisodeDataset(episodes, "abc").top_fraction(0)


GOOD = {"prompt": "p", "prompt_ids": [1, 4], "completion_ids": [5, 2], "rewards": [0.0, 1.0],
        "tokenizer": "abc"}  # fmt: skip


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"prompt": 3}, "row 2: field 'prompt' is a int, expected a str"),
        ({"prompt_ids": None}, "row 2: field 'prompt_ids' is a NoneType"),
        ({"completion_ids": [5, "x"]}, "row 2: field 'completion_ids' holds 'x'"),
        ({"completion_ids": []}, "row 2: field 'completion_ids' is empty"),
        ({"prompt_ids": []}, "row 2: field 'prompt_ids' is empty"),
        ({"rewards": [1.0]}, "row 2: field 'rewards' has 1 value\\(s\\) for 2 completion"),
        ({"rewards": [0.0, float("nan")]}, "row 2: field 'rewards' holds nan"),
        ({"rewards": None, "reward": None}, "both 'reward' and 'rewards'"),
        ({"dones": [1, 1]}, "row 2: field 'dones' is \\[1, 1\\]"),
        ({"dones": [0]}, "row 2: field 'dones' has 1 flag"),
        ({"tokenizer": "other"}, "row 2: field 'tokenizer' is 'other' but earlier rows"),
    ],
    ids=["prompt", "prompt_ids", "ids", "empty", "empty-prompt", "reward-length", "nan",
         "both", "dones", "dones-length", "mixed-tokenizers"],
)  # fmt: skip
def test_bad_rows_name_the_file_row_and_field(change, message, tmp_path: Path) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_text(json.dumps(GOOD) + "\n" + json.dumps({**GOOD, **change}) + "\n")
    with pytest.raises(ValueError, match=message) as error:
        EpisodeDataset.load_jsonl(path)
    assert str(path) in str(error.value)


def test_missing_fields_and_files(tmp_path: Path) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_text(json.dumps({k: v for k, v in GOOD.items() if k != "rewards"}) + "\n")
    with pytest.raises(ValueError, match="row 1: field 'rewards' is missing"):
        EpisodeDataset.load_jsonl(path)
    path.write_text("{not json\n")
    with pytest.raises(ValueError, match="row 1: invalid JSON"):
        EpisodeDataset.load_jsonl(path)
    path.write_text("\n")
    with pytest.raises(ValueError, match="holds no episodes"):
        EpisodeDataset.load_jsonl(path)
    with pytest.raises(ValueError, match="does not exist"):
        EpisodeDataset.load_jsonl(tmp_path / "none.jsonl")


def test_another_tokenizer_or_ids_outside_the_vocabulary_are_refused(
    tiny_episodes, tmp_path: Path
) -> None:
    path = tiny_episodes.save_jsonl(tmp_path / "episodes.jsonl")
    default = load_tokenizer(DEFAULT_MODEL_DIR)
    with pytest.raises(ValueError, match="recorded with another tokenizer"):
        EpisodeDataset.load_jsonl(path, tokenizer=default)
    tiny = build_tiny_tokenizer()
    record = {**GOOD, "completion_ids": [5, 999], "tokenizer": tokenizer_fingerprint(tiny)}
    path.write_text(json.dumps(record) + "\n")
    with pytest.raises(ValueError, match="row 1: field 'completion_ids' holds id 999 outside"):
        EpisodeDataset.load_jsonl(path, tokenizer=tiny)


def test_fingerprints_tell_tokenizers_apart() -> None:
    tiny, default = build_tiny_tokenizer(), load_tokenizer(DEFAULT_MODEL_DIR)
    assert tokenizer_fingerprint(tiny) == tokenizer_fingerprint(build_tiny_tokenizer())
    assert tokenizer_fingerprint(tiny) != tokenizer_fingerprint(default)


def test_an_empty_dataset_is_refused() -> None:
    with pytest.raises(ValueError, match="no episodes"):
        EpisodeDataset([], "abc")
    assert np.isclose(EpisodeDataset([Episode("p", [1], [5], [2.0])], "a").mean_return(), 2.0)
