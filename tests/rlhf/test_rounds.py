"""Iterated online RLHF (``lmgym rlhf --rounds N``): config, data per round, PPO's start, table."""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any

import pytest
import torch

from lmgym.cli import build_parser
from lmgym.config_cli import dataclass_from_args
from lmgym.rlhf import pipeline, rounds
from lmgym.rlhf.config import PPOStageConfig, StageResult
from lmgym.rlhf.pipeline import RLHFConfig, command_line
from lmgym.rlhf.rankings import Ranking


@pytest.mark.parametrize(
    ("kwargs", "fragment"),
    [
        ({"rounds": 0}, "rounds=0 is not an int >= 1"),
        ({"rounds": 2.0}, "rounds=2.0 is not an int"),
        ({"rm_data": "all"}, "rm_data='all' is unknown; expected 'accumulate' or 'latest'"),
    ],
    ids=["rounds0", "rounds_float", "rm_data"],
)
def test_config_rejects_bad_rounds_and_rm_data(kwargs, fragment) -> None:
    with pytest.raises(ValueError, match=fragment):
        RLHFConfig(**kwargs)


def test_config_cli_and_stages_of_rounds() -> None:
    args = build_parser("rlhf").parse_args(["rlhf", "--rounds", "3", "--rm-data", "latest"])
    config = dataclass_from_args(RLHFConfig, args)
    assert (config.rounds, config.rm_data) == (3, "latest")
    assert command_line(config) == "lmgym rlhf --rounds 3 --rm-data latest"
    assert RLHFConfig().rounds == 1 and RLHFConfig().rm_data == "accumulate"
    names = [name for name, _ in pipeline.stages(RLHFConfig(rounds=3, kl_sweep=[]))]
    assert names == ["SFT", "reward model", "PPO β=0.1", "PPO-ptx", "round 2", "round 3", "DPO",
                     "evaluation", "Elo", "round table", "report"]  # fmt: skip
    assert "round table" not in [name for name, _ in pipeline.stages(RLHFConfig())]
    with pytest.warns(UserWarning, match="rm_data='latest' has no effect with rounds=1"):
        RLHFConfig(rm_data="latest")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        RLHFConfig(rounds=2, rm_data="latest")


class Recorder:
    """Stands in for the heavy stage functions; records what each round passed them."""

    def __init__(self) -> None:
        self.rm_data: list[list[Ranking]] = []
        self.rm_start: list[Any] = []
        self.sampled_from: list[Any] = []
        self.ppo: list[dict[str, Any]] = []

    def collect_rankings(self, model, prompts, k, labeler, seed):
        self.sampled_from.append(model)
        return [Ranking(p, [f"{model} {seed} a", f"{model} {seed} b"], [0, 1]) for p in prompts]

    def train_reward_model(self, config, rankings, out, *, model, heldout):
        self.rm_data.append(list(rankings))
        self.rm_start.append(model)
        return StageResult(out, {"n_train_rankings": len(rankings), "heldout_accuracy": 0.6}, {})

    def run_ppo_stage(self, config, reward, out, *, model, reference, desc):
        self.ppo.append({"model": model, "reference": reference, "reward": reward})
        return StageResult(out, {"kl_coef": config.kl_coef, "ptx_coef": 0.0}, {})


class FakeNormalizedReward:
    @classmethod
    def fit(cls, reward_fn, prompts, completions):
        return ("standardised", reward_fn, len(completions))


@pytest.fixture
def recorder(monkeypatch) -> Recorder:
    from lmgym.rlhf import learned_reward, ppo_stage, rankings, reward_model

    rec = Recorder()
    monkeypatch.setattr(rankings, "collect_rankings", rec.collect_rankings)
    monkeypatch.setattr(reward_model, "train_reward_model", rec.train_reward_model)
    monkeypatch.setattr(ppo_stage, "run_ppo_stage", rec.run_ppo_stage)
    monkeypatch.setattr(ppo_stage, "NormalizedReward", FakeNormalizedReward)
    monkeypatch.setattr(learned_reward, "LearnedRewardModel", lambda path, **kwargs: path)
    return rec


def round_one_state(tmp_path: Path) -> dict[str, Any]:
    """The state the pipeline's reward-model and main PPO stages leave: round 1."""
    first = [Ranking(p, ["sft a", "sft b"], [1, 0]) for p in ["p1", "p2", "p3"]]
    return {
        "models": tmp_path,
        "labeler": object(),
        "SFT": Path("sft"),
        "rankings": first,
        "rm": StageResult(Path("rm1"), {}, {}),
        "reward": "reward 1",
        "ppo": {"PPO": StageResult(Path("ppo1"), {}, {})},
    }


@pytest.mark.parametrize("rm_data", ["accumulate", "latest"])
def test_each_round_ranks_the_last_policy_and_trains_its_rm_on_the_chosen_rankings(
    recorder: Recorder, tmp_path: Path, rm_data: str
) -> None:
    config = RLHFConfig(quick=True, rounds=3, rm_data=rm_data, progress=False)
    state = round_one_state(tmp_path)
    for number in (2, 3):
        rounds.train_round(config, state, number=number)
    first, second, third = (r.rankings for r in state["rounds"])
    # Rankings (train, held-out) of round 2 come from round 1's policy, of round 3 from round 2's.
    round2_ppo = tmp_path / "round2" / "ppo"
    assert recorder.sampled_from == [Path("ppo1")] * 2 + [round2_ppo] * 2
    assert [r.prompt for r in second] == [r.prompt for r in first]  # as many as round 1
    assert all("ppo1" in c for r in second for c in r.completions)
    if rm_data == "accumulate":
        assert recorder.rm_data == [first + second, first + second + third]
    else:
        assert recorder.rm_data == [second, third]
    assert recorder.rm_start == [Path("sft"), Path("sft")]  # every RM starts from SFT
    # The RM is standardised on the SFT model's samples, round 1's rankings: 3 × 2 texts.
    assert [run["reward"] for run in recorder.ppo] == [
        ("standardised", tmp_path / f"round{n}" / "reward_model", 6) for n in (2, 3)
    ]
    assert state["ppo"]["PPO round 3"].metrics["round"] == 3
    assert list(state["ppo"]) == ["PPO", "PPO round 2", "PPO round 3"]


def test_round_k_ppo_continues_from_round_k_minus_1_with_the_kl_to_sft(
    recorder: Recorder, tmp_path: Path
) -> None:
    config = RLHFConfig(quick=True, rounds=3, progress=False)
    state = round_one_state(tmp_path)
    for number in (2, 3):
        rounds.train_round(config, state, number=number)
    assert recorder.ppo[0]["model"] == Path("ppo1")
    assert recorder.ppo[1]["model"] == tmp_path / "round2" / "ppo"
    assert [run["reference"] for run in recorder.ppo] == [Path("sft"), Path("sft")]


def count_great(prompts, completions):
    return [float(c.split().count("great")) for c in completions]


def test_ppo_with_a_reference_starts_from_model_and_pays_kl_to_the_reference(
    tiny_lm_dir: Path, tmp_path: Path
) -> None:
    from lmgym.models.loading import load_model
    from lmgym.rlhf.ppo_stage import run_ppo_stage

    start = tmp_path / "previous_round"  # the tiny LM, moved: a later round's starting policy
    model, tokenizer = load_model(tiny_lm_dir)
    torch.manual_seed(0)
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.add_(0.3 * torch.randn_like(parameter))
    model.save_pretrained(start)
    tokenizer.save_pretrained(start)
    config = PPOStageConfig(steps=16, n_envs=4, n_steps=4, batch_size=16, n_epochs=1,
                            max_new_tokens=5, progress=False)  # fmt: skip
    prompts = ["the food was", "i thought the staff"]
    kwargs = dict(model=start, prompts=prompts, true_score_fn=count_great)
    alone = run_ppo_stage(config, count_great, tmp_path / "a", **kwargs)
    kept = run_ppo_stage(config, count_great, tmp_path / "b", reference=tiny_lm_dir, **kwargs)
    # The first rollout samples the policy before any update: KL 0 to itself as the reference,
    # clearly more to the other model; the same samples either way (the policy is `start`).
    assert alone.history["kl"][0] == pytest.approx(0.0, abs=1e-4)
    assert kept.history["kl"][0] > 0.1
    assert kept.history["true_score"] == alone.history["true_score"]


@pytest.mark.slow
def test_two_quick_rounds_end_to_end_write_the_round_table_and_plot(tmp_path: Path) -> None:
    """The pipeline's own stages at --quick sizes, but for SFT (the base model stands in),
    PPO-ptx and DPO; the evaluation scores only the policies the round table reads."""
    from lmgym.evaluation import PolicyEvaluator
    from lmgym.models.corpus import prompts as corpus_prompts
    from lmgym.models.loading import DEFAULT_MODEL_DIR
    from lmgym.rlhf.labelers import BradleyTerryLabeler
    from lmgym.rlhf.report import _rounds_lines

    config = RLHFConfig(quick=True, rounds=2, rm_k=2, kl_sweep=[], out=tmp_path, progress=False)
    state: dict[str, Any] = {
        "models": tmp_path / "models",
        "labeler": BradleyTerryLabeler(temperature=config.labeler_temperature),
        "ppo": {},
        "SFT": DEFAULT_MODEL_DIR,
    }
    stages = dict(pipeline.stages(config))
    for name in ("reward model", "PPO β=0.1", "round 2"):
        stages[name](config, state)
    # As the pipeline's evaluation stage (its seed), without the pre-training loss.
    evaluator = PolicyEvaluator(DEFAULT_MODEL_DIR, state["reward"], corpus_prompts("test"),
                                seed=config.seed + 2, corpus_docs=0)  # fmt: skip
    paths = {"SFT": DEFAULT_MODEL_DIR, **{name: r.path for name, r in state["ppo"].items()}}
    state["evaluator"] = evaluator
    state["policies"] = {name: evaluator(path) for name, path in paths.items()}
    for name in ("Elo", "round table", "report"):
        stages[name](config, state)
    table = state["round_table"]
    json.dumps(table)  # JSON-ready
    assert table["rm_data"] == "accumulate"
    sft, one, two = table["rows"]
    assert [r["policy"] for r in table["rows"]] == ["SFT", "PPO", "PPO round 2"]
    assert sft["kl"] == pytest.approx(0.0, abs=1e-5) and sft["rm_rankings"] is None
    assert two["rm_rankings"] == 2 * one["rm_rankings"] == 2 * 45  # accumulated: both rounds
    assert one["rm_score"] == pytest.approx(state["policies"]["PPO"]["rm_score"])
    assert one["rm_score"] == pytest.approx(one["first_rm_score"])  # round 1's RM, both ways
    assert two["kl"] > 0 and 0 <= two["rm_heldout_accuracy"] <= 1
    assert {row.player for row in state["elo"]} >= {"SFT", "PPO", "PPO round 2"}
    assert (tmp_path / "rounds.png").stat().st_size > 10_000
    assert state["plots"]["rounds"] == tmp_path / "rounds.png"
    text = "\n".join(_rounds_lines({"rounds": table}))
    assert "## Rounds" in text and "| 2 | PPO round 2 | 90 (" in text


def test_results_md_has_no_round_section_for_one_round() -> None:
    from lmgym.rlhf.report import _rounds_lines

    assert _rounds_lines({}) == []
