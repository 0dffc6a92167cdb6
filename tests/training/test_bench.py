"""``run_bench``: aggregates match the runs, the table matches the JSON, resume reuses runs."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
from scipy import stats

from lmgym.training.bench import BenchConfig, run_bench


def bench_config(out: Path, **kwargs) -> BenchConfig:
    base = dict(env="CatGrid-v0", algos=["ppo", "a2c"], seeds=3, steps=512, n_envs=2,
                eval_episodes=4, jobs=1, out=out, progress=False, threshold=-1e3)  # fmt: skip
    return BenchConfig(**{**base, **kwargs})


@pytest.fixture(scope="module")
def bench(tmp_path_factory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("bench")
    return out, run_bench(bench_config(out))


def cells(markdown: str, algo: str) -> list[str]:
    row = next(line for line in markdown.splitlines() if line.startswith(f"| {algo} |"))
    return [c.strip() for c in row.strip("|").split("|")]


def numbers(cell: str) -> list[float]:
    return [float(x) for x in re.findall(r"-?\d+(?:\.\d+)?", cell)]


def test_outputs_and_aggregates_match_the_runs(bench) -> None:
    out, results = bench
    assert sorted(p.name for p in out.iterdir()) == [
        ".lmgym.lock", "curves.png", "results.json", "results.md", "run.json", "runs"]  # fmt: skip
    assert json.loads((out / "results.json").read_text()) == json.loads(json.dumps(results))
    assert (out / "curves.png").stat().st_size > 10_000
    assert len(results["runs"]) == 6 and results["seeds"] == [0, 1, 2]
    for algo in ("ppo", "a2c"):
        runs = [r for r in results["runs"] if r["algo"] == algo]
        assert sorted(r["seed"] for r in runs) == [0, 1, 2]
        values = np.array([r["eval_reward_after"] for r in runs])
        half = stats.t.ppf(0.975, 2) * values.std(ddof=1) / np.sqrt(3)
        agg = results["algos"][algo]
        assert agg["eval_reward_after"]["mean"] == pytest.approx(values.mean())
        assert agg["eval_reward_after"]["ci95"] == pytest.approx(half)
        assert agg["steps_to_threshold"]["reached"] == 3  # threshold -1000: the first curve point
        assert (out / "runs" / algo / "seed2" / "metrics.json").exists()


def test_table_numbers_match_the_json(bench) -> None:
    out, results = bench
    markdown = (out / "results.md").read_text()
    assert f"{results['wall_s']:.0f} s" in markdown
    assert results["eval_prompts"] is None and "Evaluated on no prompts" in markdown
    for algo, agg in results["algos"].items():
        row = cells(markdown, algo)
        assert row[0] == algo and int(row[1]) == agg["runs"]
        for cell, key in ((row[2], "eval_reward_before"), (row[3], "eval_reward_after")):
            mean, half = numbers(cell)
            assert mean == pytest.approx(agg[key]["mean"], abs=5e-4)
            assert half == pytest.approx(agg[key]["ci95"], abs=5e-4)
        steps, reached, runs = numbers(row[4])
        assert steps == pytest.approx(agg["steps_to_threshold"]["mean"], abs=0.5)
        assert (reached, runs) == (3, 3)
        assert row[5] == "n/a"  # no KL on CatGrid-v0
        assert numbers(row[6])[0] == pytest.approx(agg["wall_s"]["mean"], abs=0.05)


def test_resume_reuses_finished_runs_and_adds_new_ones(bench, tmp_path) -> None:
    out, results = bench
    metrics = out / "runs" / "ppo" / "seed0" / "metrics.json"
    mtime = metrics.stat().st_mtime_ns
    with pytest.raises(ValueError, match="already holds a bench run"):
        run_bench(bench_config(out))
    again = run_bench(bench_config(out, seeds=4, resume=True))
    assert metrics.stat().st_mtime_ns == mtime  # reused, not retrained
    assert again["runs"][0] == results["runs"][0]
    assert len(again["runs"]) == 8 and again["algos"]["ppo"]["runs"] == 4
    with pytest.raises(ValueError, match="steps: 512 in the run, 1024 now"):
        run_bench(bench_config(out, steps=1024, resume=True))


@pytest.mark.parametrize(
    ("kwargs", "fragment"),
    [
        (dict(seeds=0), "seeds=0 must be an int >= 1"),
        (dict(algos=["ppo", "sac"]), "algo='sac' is unknown"),
        (dict(algos=[]), "non-empty list"),
        (dict(env="LMBandit-v0", policy="mlp", algos=["dqn"]), "Valid algos for LMBandit-v0"),
        (dict(env="Nope-v0"), "env='Nope-v0' is unknown"),
        (dict(jobs=0), "jobs=0"),
        (dict(steps=0), "steps=0"),
        (dict(resume=True, overwrite=True), "one of the two"),
    ],
    ids=["seeds0", "unknown_algo", "no_algos", "dqn_bandit", "unknown_env", "jobs0", "steps0",
         "resume_overwrite"],
)  # fmt: skip
def test_bad_config_raises(kwargs, fragment, tmp_path) -> None:
    with pytest.raises(ValueError, match=re.escape(fragment)):
        bench_config(tmp_path, **kwargs)


def test_runs_get_the_adaptive_beta_horizon() -> None:
    default = BenchConfig(kl_target=6.0, seeds=1)
    assert {c.kl_horizon for c in default.run_configs(existing=False)} == {4096 // 16}
    given = BenchConfig(kl_target=6.0, kl_horizon=300, seeds=1)
    assert {c.kl_horizon for c in given.run_configs(existing=False)} == {300}
    assert given.identity()["kl_horizon"] == 300


def test_quick_defaults() -> None:
    quick = BenchConfig(env="CatGrid-v0", quick=True)
    assert (quick.seeds, quick.steps, quick.eval_episodes) == (2, 2048, 16)
    plain = BenchConfig()
    assert (plain.env, plain.policy, plain.algos, plain.seeds) == (
        "LMBandit-v0", "lm", ["ppo", "a2c"], 5)  # fmt: skip
    assert BenchConfig(seeds=3, seed_start=10).seed_list == [10, 11, 12]
