"""The over-optimisation sweep end to end on the embedded model, at smoke-test sizes."""

import json
import warnings

import numpy as np
import pytest

from lmgym.models.loading import DEFAULT_MODEL_DIR
from lmgym.rlhf.labelers import BradleyTerryLabeler
from lmgym.rlhf.overoptimisation import (
    OveroptimisationConfig,
    format_overoptimisation,
    plot_overoptimisation,
    run_overoptimisation,
)


def test_a_tiny_sweep_records_both_curves_fits_them_and_reports(tmp_path):
    config = OveroptimisationConfig(
        rm_sizes=[6, 12], rm_k=2, rm_epochs=1, ppo_steps=384, bon_samples=4, progress=False
    )
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # β = 0 is deliberate: no warning may escape
        results = run_overoptimisation(config, DEFAULT_MODEL_DIR, BradleyTerryLabeler(), tmp_path)
    json.dumps(results)  # JSON-ready
    assert [run["rankings"] for run in results["runs"]] == [6, 12]
    for run in results["runs"]:
        assert [p["n"] for p in run["best_of_n"]] == [1, 2, 4]
        proxies = [p["proxy"] for p in run["best_of_n"]]
        assert proxies == sorted(proxies)  # picking by the proxy raises the proxy
        assert run["ppo"]["timesteps"] == [128, 256, 384]
        assert run["ppo"]["kl"][0] == pytest.approx(0.0, abs=1e-5)  # rollout 1 is the SFT model
        assert run["fits"]["bon"]["d_max"] == pytest.approx(np.sqrt(np.log(4) - 0.75))
        assert run["fits"]["rl"] is not None
        assert (tmp_path / f"rm_{run['rankings']}").is_dir()
        assert (tmp_path / f"ppo_{run['rankings']}").is_dir()
    # Both RMs rank the same best-of-n samples: n = 1 is the same draw, so the same gold score.
    first = [run["best_of_n"][0]["gold"] for run in results["runs"]]
    assert first[0] == pytest.approx(first[1])
    table = format_overoptimisation(results)
    assert table.count("\n") == 3 and "| 6 |" in table and "| 12 |" in table
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
