"""The over-optimisation sweep end to end on the embedded model, at smoke-test sizes."""

import functools
import json
import warnings

# Imported before the no-warning block below: on the floor's matplotlib 3.7 its first import
# warns about pyparsing, which is not the sweep's warning.
import matplotlib.pyplot  # noqa: F401
import numpy as np
import pytest

from lmgym.models.loading import DEFAULT_MODEL_DIR
from lmgym.rlhf import config as rlhf_config
from lmgym.rlhf.labelers import BradleyTerryLabeler
from lmgym.rlhf.overoptimisation import (
    OveroptimisationConfig,
    format_overoptimisation,
    plot_overoptimisation,
    run_overoptimisation,
)


def test_a_tiny_sweep_records_both_curves_fits_them_and_reports(tmp_path, monkeypatch):
    # The smallest PPO that still gives 3 rollouts (an RL fit needs 2 KL points past the SFT
    # model's): 16 envs × 2 steps, one minibatch. The sweep's own rollout (16 × 8) would take
    # 4 times as long, and the suite has no time to spare.
    monkeypatch.setattr(
        rlhf_config,
        "PPOStageConfig",
        functools.partial(rlhf_config.PPOStageConfig, n_steps=2, batch_size=32),
    )
    config = OveroptimisationConfig(
        rm_sizes=[4, 8], rm_k=2, rm_epochs=1, ppo_steps=96, bon_samples=4, progress=False
    )
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # β = 0 is deliberate: no warning may escape
        results = run_overoptimisation(config, DEFAULT_MODEL_DIR, BradleyTerryLabeler(), tmp_path)
    json.dumps(results)  # JSON-ready
    assert [run["rankings"] for run in results["runs"]] == [4, 8]
    for run in results["runs"]:
        assert [p["n"] for p in run["best_of_n"]] == [1, 2, 4]
        proxies = [p["proxy"] for p in run["best_of_n"]]
        assert proxies == sorted(proxies)  # picking by the proxy raises the proxy
        assert run["ppo"]["timesteps"] == [32, 64, 96]
        assert run["ppo"]["kl"][0] == pytest.approx(0.0, abs=1e-5)  # rollout 1 is the SFT model
        assert run["fits"]["bon"]["d_max"] == pytest.approx(np.sqrt(np.log(4) - 0.75))
        assert run["fits"]["rl"] is not None
        assert (tmp_path / f"rm_{run['rankings']}").is_dir()
        assert (tmp_path / f"ppo_{run['rankings']}").is_dir()
    # Both RMs pick among the same samples: n = 1 takes each once, so the same gold score.
    first = [run["best_of_n"][0]["gold"] for run in results["runs"]]
    assert first[0] == pytest.approx(first[1])
    table = format_overoptimisation(results)
    assert table.count("\n") == 3 and "| 4 |" in table and "| 8 |" in table
    assert plot_overoptimisation(results, tmp_path / "o.png").stat().st_size > 10_000


def test_rm_sizes_must_be_ascending_ints():
    for bad in ([], [400, 100], [100, 100], [1], [2.5]):
        with pytest.raises(ValueError, match="rm_sizes="):
            OveroptimisationConfig(rm_sizes=bad)
    assert OveroptimisationConfig(rm_sizes=[2, 8], bon_samples=64).bon_ns == [
        1,
        2,
        4,
        8,
        16,
        32,
        64,
    ]


def test_lmgym_rlhf_runs_the_sweep_only_when_asked_and_checks_it_up_front():
    from lmgym.rlhf.pipeline import RLHFConfig, command_line, stages

    assert "over-optimisation" not in [name for name, _ in stages(RLHFConfig())]
    config = RLHFConfig(quick=True, overoptimisation=[100, 400])
    names = [name for name, _ in stages(config)]
    assert names[-2:] == ["over-optimisation", "report"]
    sweep = config.overoptimisation_config()
    assert (sweep.rm_sizes, sweep.ppo_steps, sweep.bon_samples) == ([100, 400], 384, 4)
    assert "--overoptimisation 100 400" in command_line(config)
    with pytest.raises(ValueError, match="rm_sizes="):
        RLHFConfig(overoptimisation=[400, 100])


def test_results_md_gets_the_over_optimisation_section_when_the_sweep_ran():
    from lmgym.rlhf.report import _overoptimisation_lines

    fit = {"alpha": 0.2, "beta": 0.1, "d_max": 2.0, "peak_d": 1.0, "peak_kl": 1.0,
           "peak_observed": True}  # fmt: skip
    run = {
        "rankings": 100,
        "rm_heldout_accuracy": 0.61,
        "ppo": {"kl": [0.0, 4.0], "reward_model": [0.0, 1.5], "true_score": [1.0, 0.9]},
        "best_of_n": [
            {"n": 1, "kl_bound": 0.0, "gold": 1.0},
            {"n": 2, "kl_bound": 0.19, "gold": 1.2},
        ],  # fmt: skip
        "fits": {"bon": None, "rl": fit},
    }
    sweep = {"config": {"rm_k": 4, "rm_epochs": 2, "bon_samples": 64, "ppo_steps": 4096},
             "runs": [run]}  # fmt: skip
    assert _overoptimisation_lines({}) == []
    text = "\n".join(_overoptimisation_lines({"overoptimisation": sweep}))
    assert "## Over-optimisation" in text
    row = (
        "| 100 | 0.610 | 4.00 | +1.50 | 0.900 (1.000) | 1.000 at KL 0.00 | KL ≈ 1.00 "
        "| 1.200 at KL 0.19 (the last point) | too few points to fit |"
    )
    assert row in text
