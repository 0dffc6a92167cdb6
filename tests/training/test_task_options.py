"""Your own task from the CLI: --model, --reward, --prompts, --eval-prompts, --device, --dtype.

Each option runs end to end once, in-process through ``lmgym.cli.main`` on the tiny model (the
hub id needs its env vars read at import: one subprocess); every bad input is one line and
status 2, before any work.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from lmgym.cli import main
from lmgym.training.task_options import HELD_OUT_FRACTION, split_prompts
from lmgym.training.train import TrainConfig
from tests.conftest import PROMPTS, build_tiny_model, build_tiny_tokenizer
from tests.models.test_hub_and_device import lay_out_hub_cache

MORE_PROMPTS = [*PROMPTS, "the staff were", "i loved the food and it was", "the service is"]
"""Seven distinct prompts of the tiny vocabulary: one is held out (20%, rounded)."""


def run_out(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int | None, str, str]:
    """Exit status of ``lmgym ARGV`` in-process (None: it raised), its stdout and stderr."""
    capsys.readouterr()
    try:
        status = main(argv)
    except SystemExit as exit_info:
        status = int(exit_info.code or 0)
    except BaseException as err:  # a traceback is a failure here
        return None, "", f"raised {type(err).__name__}: {err}"
    shown = capsys.readouterr()
    return status, shown.out, shown.err


def run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int | None, str]:
    """Exit status of ``lmgym ARGV`` in-process (None: it raised) and its stderr."""
    status, _, err = run_out(argv, capsys)
    return status, err


def train(out: Path, model: Path, *extra: str) -> list[str]:
    return ["train", "--env", "LMBandit-v0", "--model", str(model), "--steps", "16", "--n-envs",
            "2", "--eval-episodes", "2", "--out", str(out), "--no-progress", *extra]  # fmt: skip


def metrics_of(out: Path) -> dict:
    return json.loads((out / "metrics.json").read_text())


@pytest.fixture
def reward_module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """An importable module ``task_rewards_<n>`` on sys.path: score() pays 3, LIMIT is no fn."""
    name = f"task_rewards_{tmp_path.name.replace('-', '_')}"
    code = (
        "LIMIT = 3.0\n\ndef score(prompts, completions):\n    return [LIMIT] * len(completions)\n"
    )
    (tmp_path / f"{name}.py").write_text(code)
    monkeypatch.syspath_prepend(str(tmp_path))
    return name


@pytest.fixture(scope="module")
def chat_lm_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny model with a chat template (a chat renders to its messages' words)."""
    path = tmp_path_factory.mktemp("tiny_chat_lm")
    tokenizer = build_tiny_tokenizer()
    tokenizer.chat_template = "{% for m in messages %}{{ m['content'] }} {% endfor %}"
    build_tiny_model(len(tokenizer)).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


# --- each option end to end ------------------------------------------------------------------


def test_reward_module_func_and_resume_refuses_another(
    tmp_path, tiny_lm_dir, reward_module, capsys
) -> None:
    out = tmp_path / "run"
    status, err = run(train(out, tiny_lm_dir, "--reward", f"{reward_module}:score"), capsys)
    assert status == 0, err
    metrics = metrics_of(out)
    assert metrics["eval_reward_model_before"] == pytest.approx(3.0)  # the user's function
    assert metrics["config"]["reward"] == f"{reward_module}:score"
    assert json.loads((out / "run.json").read_text())["identity"]["reward"] == (
        f"{reward_module}:score"
    )
    status, err = run(["train", "--resume", str(out), "--reward", "lmgym.rewards:ends_sentence"],
                      capsys)  # fmt: skip
    assert status == 2 and "reward: " in err and f"{reward_module}:score" in err, err
    status, err = run(["train", "--resume", str(out), "--dtype", "float32"], capsys)
    assert status == 2 and "dtype: None in the run, 'float32' now" in err, err
    # Resuming re-imports the module by the name the run was given.
    done = metrics["steps"]
    status, err = run(["train", "--resume", str(out), "--steps", str(done + 1), "--no-progress"],
                      capsys)  # fmt: skip
    assert status == 0, err
    assert metrics_of(out)["steps"] > done and metrics_of(out)["resumed_at"] == [done]


def test_reward_from_a_file_and_prompts_from_a_text_file(
    tmp_path, tiny_lm_dir, monkeypatch, capsys
) -> None:
    (tmp_path / "rewards.py").write_text(
        "def half(prompts, completions):\n    return [0.5 for _ in completions]\n"
    )
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("\n".join(MORE_PROMPTS[:3]) + "\n\n" + "\n".join(MORE_PROMPTS[3:]) + "\n")
    out = tmp_path / "run"
    monkeypatch.chdir(tmp_path)  # a relative file: the run keeps its absolute path
    status, err = run(
        train(out, tiny_lm_dir, "--reward", "rewards.py:half", "--prompts", str(prompts)), capsys
    )
    assert status == 0, err
    metrics = metrics_of(out)
    assert metrics["eval_reward_model_before"] == pytest.approx(0.5)
    assert metrics["config"]["reward"] == f"{tmp_path.resolve() / 'rewards.py'}:half"
    held_out = split_prompts(prompts.resolve(), None)
    assert len(held_out.eval) == max(1, round(len(MORE_PROMPTS) * HELD_OUT_FRACTION)) == 1
    assert set(held_out.eval).isdisjoint(held_out.train)
    assert metrics["eval"]["before"]["prompts"] == held_out.eval  # evaluated on held-out only
    assert (
        "never trained on" in metrics["eval_prompts"] and "prompts.txt" in metrics["eval_prompts"]
    )
    assert "never trained on" in metrics["eval"]["method"]
    assert metrics["train_prompts"].startswith("the other 6 prompts of")


def test_jsonl_chat_prompts_with_eval_prompts_on_cpu(tmp_path, chat_lm_dir, capsys) -> None:
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text(
        '"the food was"\n'
        '{"prompt": "the soup is"}\n'
        '{"prompt": [{"role": "user", "content": "the service was very"}]}\n'
    )
    evaluation = tmp_path / "eval.jsonl"
    evaluation.write_text('{"prompt": [{"role": "user", "content": "the staff were"}]}\n')
    out = tmp_path / "run"
    status, err = run(train(out, chat_lm_dir, "--prompts", str(prompts), "--eval-prompts",
                            str(evaluation), "--device", "cpu", "--dtype", "float32"),
                      capsys)  # fmt: skip
    assert status == 0, err
    metrics = metrics_of(out)
    assert metrics["eval"]["before"]["prompts"] == ["the staff were"]  # a chat's user text
    assert metrics["eval_prompts"].startswith(f"the 1 prompts of {evaluation}")
    assert metrics["config"]["device"] == "cpu" and metrics["config"]["dtype"] == "float32"
    identity = json.loads((out / "run.json").read_text())["identity"]
    assert identity["dtype"] == "float32" and identity["eval_prompts_file"] == str(evaluation)
    assert "device" not in identity  # at its default: a run begun before --device resumes


def test_a_classifier_directory_as_the_reward_in_bench(tmp_path, tiny_lm_dir, capsys) -> None:
    from transformers import GPT2Config, GPT2ForSequenceClassification

    tokenizer = build_tiny_tokenizer()
    config = GPT2Config(vocab_size=len(tokenizer), n_positions=64, n_embd=16, n_layer=1,
                        n_head=2, id2label={0: "NEG", 1: "POS"}, pad_token_id=0)  # fmt: skip
    classifier = tmp_path / "classifier"
    GPT2ForSequenceClassification(config).save_pretrained(classifier)
    tokenizer.save_pretrained(classifier)
    # Two labels and none named: one line, and the run directory is given back.
    status, err = run(train(tmp_path / "run", tiny_lm_dir, "--reward", str(classifier)), capsys)
    assert status == 2 and len(err.strip().splitlines()) == 1, err
    assert f"reward={str(classifier)!r}: label=None but the model has 2 labels" in err
    out = tmp_path / "bench"
    status, err = run(["bench", "--env", "LMBandit-v0", "--algos", "ppo", "--seeds", "1",
                       "--steps", "16", "--n-envs", "2", "--eval-episodes", "2", "--jobs", "1",
                       "--model", str(tiny_lm_dir), "--reward", f"{classifier}:POS", "--out",
                       str(out), "--no-progress"], capsys)  # fmt: skip
    assert status == 0, err
    results = json.loads((out / "results.json").read_text())
    run_metrics = results["runs"][0]
    assert run_metrics["config"]["reward"] == f"{classifier}:POS"
    assert run_metrics["eval_reward_model_before"] != 0.0  # the classifier's POS logit
    assert results["eval_prompts"] == "test"


HUB_RUN = """
import sys
from lmgym.cli import main
sys.exit(main(sys.argv[1:]))
"""


def test_a_hub_id_from_the_cache(tmp_path, tiny_lm_dir) -> None:
    """One subprocess: huggingface_hub reads HF_HUB_CACHE / HF_HUB_OFFLINE at import."""
    cache = tmp_path / "hub"
    lay_out_hub_cache(tiny_lm_dir, cache, "tiny-org/tiny-gpt2")
    out = tmp_path / "run"
    env = {**os.environ, "HF_HUB_CACHE": str(cache), "HF_HUB_OFFLINE": "1"}
    done = subprocess.run(
        [sys.executable, "-c", HUB_RUN, *train(out, Path("tiny-org/tiny-gpt2"))],
        env=env, capture_output=True, text=True, timeout=600, check=False, cwd=tmp_path,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    assert metrics_of(out)["config"]["model"] == "tiny-org/tiny-gpt2"
    assert "eval reward" in done.stdout


# --- bad input: one line, status 2, before any work --------------------------------------------


def bad_inputs(tmp: Path, module: str) -> dict[str, tuple[list[str], str]]:
    files = {
        "empty.txt": "\n \n",
        "one.txt": "the food was\nthe food was\n",
        "not_json.jsonl": '"the food was"\n{"prompt": \n',
        "no_field.jsonl": '"the food was"\n{"text": "the soup is"}\n',
        "number.jsonl": '{"prompt": 7}\n',
        "bad_chat.jsonl": '{"prompt": [{"role": "user"}]}\n',
        "no_user.jsonl": '{"prompt": [{"role": "system", "content": "be nice"}]}\n',
    }
    for name, text in files.items():
        (tmp / name).write_text(text)
    p = lambda name: ["--prompts", str(tmp / name)]  # noqa: E731
    return {
        "model_missing": (["--model", str(tmp / "nope")], "model='" + str(tmp / "nope")),
        "module_missing": (["--reward", "no_such_module_xyz:score"],
                           "cannot import module 'no_such_module_xyz'"),
        "attr_missing": (["--reward", f"{module}:scor"],
                         f"module '{module}' has no attribute 'scor'"),
        "not_callable": (["--reward", f"{module}:LIMIT"], "is a float, which is not callable"),
        "no_colon": (["--reward", "score"], "reward='score' is not a reward; expected MODULE:FUNC"),
        "file_missing": (["--reward", str(tmp / "gone.py") + ":f"], "gone.py' does not exist"),
        "prompts_missing": (p("absent.txt"), "absent.txt' does not exist"),
        "prompts_empty": (p("empty.txt"), "holds no prompt"),
        "prompts_one": (p("one.txt"), "leaves no prompt to train on"),
        "not_json": (p("not_json.jsonl"), "line 2 is not JSON"),
        "no_field": (p("no_field.jsonl"), "line 2 has no \"prompt\" field (its fields: 'text')"),
        "number": (p("number.jsonl"), 'line 1, field "prompt" is a number'),
        "bad_chat": (p("bad_chat.jsonl"), 'line 1, field "prompt"[0] has no text "content"'),
        "no_user": (p("no_user.jsonl"), 'has no message with "role": "user"'),
        "eval_missing": (["--eval-prompts", str(tmp / "absent.jsonl")],
                         "eval_prompts='" + str(tmp / "absent.jsonl")),
        "device": (["--device", "tpu"], "device='tpu' is not a device"),
        "dtype": (["--dtype", "float16"], "dtype='float16' cannot run on device 'cpu'"),
    }  # fmt: skip


BAD_IDS = ["model_missing", "module_missing", "attr_missing", "not_callable", "no_colon",
           "file_missing", "prompts_missing", "prompts_empty", "prompts_one", "not_json",
           "no_field", "number", "bad_chat", "no_user", "eval_missing", "device",
           "dtype"]  # fmt: skip


@pytest.mark.parametrize("command", ["train", "bench", "demo"])
@pytest.mark.parametrize("case", BAD_IDS)
def test_bad_input_is_one_line_and_status_2(
    tmp_path, tiny_lm_dir, reward_module, monkeypatch, capsys, command, case
) -> None:
    from tests.test_cli import no_work

    started = no_work(monkeypatch)
    args, fragment = bad_inputs(tmp_path, reward_module)[case]
    status, err = run([command, *args, "--out", str(tmp_path / "out")], capsys)
    assert started == [] and status == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"lmgym: error: {command}: "), err
    assert fragment in lines[0], lines[0]
    assert not (tmp_path / "out").exists()


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU")
def test_a_gpu_that_is_not_here_is_refused_before_the_run_directory(tmp_path, capsys) -> None:
    status, err = run(["train", "--device", "cuda", "--out", str(tmp_path / "o")], capsys)
    assert status == 2 and "device='cuda' but this machine has no CUDA GPU" in err
    assert not (tmp_path / "o").exists()


def test_task_options_need_an_lm_env(tmp_path) -> None:
    with pytest.raises(ValueError, match=r"prompts=.* with env='CatGrid-v0', which has no lang"):
        TrainConfig(env="CatGrid-v0", prompts=tmp_path / "p.txt", out=tmp_path / "o")


def test_a_reward_file_inside_the_run_directory_is_refused(tmp_path) -> None:
    out = tmp_path / "run"
    out.mkdir()
    (out / "evil.py").write_text("def score(p, c):\n    return [0.0] * len(c)\n")
    with pytest.raises(ValueError, match="is inside out=.*lmgym never runs code"):
        TrainConfig(reward=f"{out / 'evil.py'}:score", out=out)


def test_the_held_out_split_is_deterministic_and_order_free(tmp_path) -> None:
    forward, backward = tmp_path / "a.txt", tmp_path / "b.txt"
    forward.write_text("\n".join(MORE_PROMPTS))
    backward.write_text("\n".join(reversed(MORE_PROMPTS)))
    a, b = split_prompts(forward, None), split_prompts(backward, None)
    assert a.eval == b.eval and sorted(a.train) == sorted(b.train)
    assert len(a.eval) + len(a.train) == len(MORE_PROMPTS)


def test_eval_prompts_also_in_the_training_file_are_not_trained_on(tmp_path) -> None:
    train, evaluation = tmp_path / "t.txt", tmp_path / "e.txt"
    train.write_text("\n".join(PROMPTS))
    evaluation.write_text(PROMPTS[0])
    with pytest.warns(UserWarning, match="1 of the 4 training prompts are also in eval_prompts"):
        split = split_prompts(train, evaluation)
    assert split.eval == [PROMPTS[0]] and split.train == PROMPTS[1:]


def test_demo_on_the_users_model_reward_and_chat_prompts(
    tmp_path, chat_lm_dir, reward_module, capsys
) -> None:
    prompts = tmp_path / "prompts.jsonl"
    lines = [json.dumps({"prompt": [{"role": "user", "content": p}]}) for p in MORE_PROMPTS]
    prompts.write_text("\n".join(lines) + "\n")
    out = tmp_path / "demo"
    argv = ["demo", "--model", str(chat_lm_dir), "--reward", f"{reward_module}:score",
            "--prompts", str(prompts), "--device", "cpu", "--steps", "32", "--n-envs", "2",
            "--eval-samples", "1", "--out", str(out), "--no-progress"]  # fmt: skip
    status, shown, err = run_out(argv, capsys)
    assert status == 0, err
    results = json.loads((out / "results.json").read_text())
    held_out = split_prompts(prompts, None).eval
    assert [p for p, _ in results["after"]["examples"]] == [m[0]["content"] for m in held_out]
    assert results["after"]["reward_model"] == pytest.approx(3.0)  # the user's reward
    assert "never trained on" in results["eval_prompts"]
    assert (
        f"Your task ({chat_lm_dir}, reward {reward_module}:score), on 1 prompts held out" in shown
    )
