from __future__ import annotations

import importlib.util
import json
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest

from lmgym.envs.catgrid import ACTION_NAMES, CatGridEnv
from lmgym.envs.catgrid_planning import value_iteration
from tests.helpers import run_example

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "examples" / "lm_plays_cat.py"
ROWS = ("optimum", "tabular PPO (trained on each layout)", "SFT LM", "SFT + PPO LM")


@pytest.fixture(scope="module")
def example() -> Iterator[ModuleType]:
    """The script as a module (registered, so its dataclass resolves its own annotations)."""
    spec = importlib.util.spec_from_file_location("lm_plays_cat", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["lm_plays_cat"] = module
    spec.loader.exec_module(module)
    yield module
    del sys.modules["lm_plays_cat"]


def test_smoke_run_prints_and_writes_the_table(tmp_path: Path) -> None:
    # The one run in a fresh interpreter: the script as a user starts it.
    proc = run_example("lm_plays_cat.py", "--output-dir", str(tmp_path), env={"LMGYM_SMOKE": "1"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "smoke=True" in proc.stdout
    for row in ROWS:
        assert row in proc.stdout
    results = json.loads((tmp_path / "results.json").read_text())
    assert tuple(results["results"]) == ROWS
    assert results["results"]["optimum"]["meat_rate"] == 1.0
    for row in ("SFT LM", "SFT + PPO LM"):
        assert 0.0 <= results["results"][row]["meat_rate"] <= 1.0
        assert 0.0 <= results["results"][row]["unread_replies"] <= 1.0
    assert results["n_demonstrations"] >= results["args"]["train_layouts"]
    assert (tmp_path / "sft" / "model.safetensors").is_file()


def test_arguments_parse_in_process(example: ModuleType, monkeypatch) -> None:
    monkeypatch.delenv("LMGYM_SMOKE", raising=False)
    args = example.parse_args(["--ppo-lr", "0.001", "--size", "5"])
    assert (args.ppo_lr, args.size, args.smoke) == (0.001, 5, False)
    assert example.parse_args([]).train_layouts == example.Args().train_layouts
    smoke = example.parse_args(["--smoke"])
    assert smoke.smoke and smoke.train_layouts < example.Args().train_layouts


def test_layouts_are_distinct_and_demonstrations_replay_the_optimum(example: ModuleType) -> None:
    args = example.Args()
    layouts = example.random_layouts(6, 4, np.random.default_rng(0))
    assert len(set(layouts)) == 6
    tokenizer, model = example.game_lm(args)
    env = example.text_game(layouts, model, args, tokenizer=tokenizer)
    pairs = example.demonstrations(env, len(layouts))
    expected = []
    for layout in layouts:
        game = CatGridEnv(layout=layout)
        plan, cell, done = value_iteration(game, gamma=0.99), game.reset(seed=0)[0], False
        while not done:
            move = int(plan.policy[cell])
            expected.append(ACTION_NAMES[move])
            cell, _, done, _, _ = game.step(move)
    assert [move for _, move in pairs] == expected
    # Each prompt is the whole conversation so far, opening with its layout's obstacles.
    assert pairs[0][0].startswith("brooms :") and pairs[0][0].endswith("which way ?")
    assert pairs[1][0].startswith(pairs[0][0] + " " + pairs[0][1])
