"""``lmgym bench`` on LMBandit-v0: eval points, reward at matched KL, best-of-n, frontier.png."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from lmgym.cli import main
from lmgym.models.corpus import prompts as corpus_prompts
from lmgym.training.bench import BenchConfig
from lmgym.training.best_of_n import kl_bound
from lmgym.training.report import format_matched


@pytest.fixture(scope="module")
def bench(tmp_path_factory, tiny_lm_dir) -> tuple[Path, dict]:
    # Through the command line, in-process (jobs=1): the LM bench's one end-to-end run here.
    out = tmp_path_factory.mktemp("bench") / "frontier"
    args = ["bench", "--env", "LMBandit-v0", "--algos", "ppo", "grpo", "--seeds", "2",
            "--steps", "128", "--n-envs", "4", "--eval-episodes", "4", "--eval-every", "64",
            "--best-of-n", "4", "--jobs", "1", "--model", str(tiny_lm_dir), "--out", str(out),
            "--no-progress"]  # fmt: skip
    assert main(args) == 0
    return out, json.loads((out / "results.json").read_text())


def test_frontier_png_and_the_points_of_every_run(bench) -> None:
    out, results = bench
    assert (out / "frontier.png").stat().st_size > 10_000
    assert (out / "curves.png").stat().st_size > 10_000
    assert results["eval_every"] == 64
    for run in results["runs"]:
        points = run["eval_points"]
        assert [p["steps"] for p in points] == [0, 64, 128]  # rollouts of 4 envs x 16 steps
        assert points[0]["kl"] == pytest.approx(0.0, abs=1e-5)  # π_θ = π_ref before training
        assert points[-1]["reward_model"] == run["eval_reward_model_after"]
        assert points[-1]["kl"] == run["eval_kl_after"]


def test_the_lm_policy_trains_and_is_evaluated_on_held_out_prompts(bench) -> None:
    out, results = bench
    assert sorted((r["algo"], r["seed"]) for r in results["runs"]) == [
        ("grpo", 0), ("grpo", 1), ("ppo", 0), ("ppo", 1)]  # fmt: skip
    assert results["policy"] == "lm" and results["eval_prompts"] == "test"
    assert "Evaluated on the held-out test prompts" in (out / "results.md").read_text()
    held_out = set(corpus_prompts("test"))
    for run in results["runs"]:
        assert set(run["eval"]["after"]["prompts"]) <= held_out
        assert run["hyperparameters"]["policy"] == "LMActorCriticPolicy"
        assert run["kl_form"] == "policy" and run["eval_kl_after"] is not None


def test_the_table_shows_the_reward_at_matched_kl_from_the_json(bench) -> None:
    out, results = bench
    markdown = (out / "results.md").read_text()
    assert "| r_φ after | r_φ at KL 1 | r_φ at KL 2 | r_φ at KL 4 |" in markdown
    for algo, agg in results["algos"].items():
        assert list(agg["matched_kl"]) == ["1", "2", "4"]
        row = next(line for line in markdown.splitlines() if line.startswith(f"| {algo} |"))
        cells = [c.strip() for c in row.strip("|").split("|")]
        assert cells[5:8] == [format_matched(agg["matched_kl"][k]) for k in ("1", "2", "4")]
        for entry in agg["matched_kl"].values():
            assert entry["runs"] == 2 and entry["reached"] == sum(
                v is not None for v in entry["per_run"])  # fmt: skip


def test_best_of_n_baseline_in_the_results(bench) -> None:
    out, results = bench
    bon = results["best_of_n"]
    assert bon["n"] == [1, 2, 4] and bon["samples"] == 4 and bon["prompts"] == 36
    assert bon["kl_bound"] == pytest.approx([kl_bound(n) for n in (1, 2, 4)])
    assert bon["reward"] == sorted(bon["reward"])  # the best of more is never worse
    assert "## Best-of-n of the initial policy" in (out / "results.md").read_text()
    # best-of-1 is the initial policy: about its evaluation before training (other samples)
    before = results["algos"]["ppo"]["eval_reward_before"]["mean"]
    assert abs(bon["reward"][0] - before) < 0.5


@pytest.mark.parametrize(
    ("kwargs", "fragment"),
    [(dict(best_of_n=3), "best_of_n=3 must be 0 (no baseline) or a power of 2"),
     (dict(env="CatGrid-v0", best_of_n=8), "best_of_n=8 with env='CatGrid-v0'"),
     (dict(eval_every=0), "eval_every=0 must be an int > 0"),
     (dict(matched_kls=[]), "matched_kls=[] must be a non-empty list of KLs > 0"),
     (dict(matched_kls=[1.0, -2.0]), "matched_kls=[1.0, -2.0] must be a non-empty list")],
    ids=["not_power_of_2", "catgrid", "eval_every0", "no_kls", "negative_kl"],
)  # fmt: skip
def test_bad_frontier_options_raise(kwargs, fragment, tmp_path) -> None:
    with pytest.raises(ValueError, match=re.escape(fragment)):
        BenchConfig(out=tmp_path / "b", **kwargs)


def test_defaults() -> None:
    assert (BenchConfig().eval_every, BenchConfig().best_of_n) == (512, 64)
    assert BenchConfig(quick=True).best_of_n == 8
    assert BenchConfig(env="CatGrid-v0").best_of_n == 0
    assert BenchConfig().matched_kls == [1.0, 2.0, 4.0]
    assert BenchConfig(matched_kls=[2, 0.5, 2]).matched_kls == [0.5, 2.0]  # sorted, no repeats
