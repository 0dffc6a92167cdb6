"""Hub ids through transformers' cache (offline, from a cache laid out here), devices and dtypes."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from lmgym.error import ModelLoadError
from lmgym.models.device import resolve_device, resolve_dtype
from lmgym.models.loading import is_hub_id, load_model

REVISION = "0123456789abcdef0123456789abcdef01234567"


def lay_out_hub_cache(model_dir: Path, cache: Path, repo_id: str) -> Path:
    """Copy a saved model into ``cache`` the way huggingface_hub stores a download."""
    repo = cache / ("models--" + repo_id.replace("/", "--"))
    shutil.copytree(model_dir, repo / "snapshots" / REVISION)
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(REVISION)
    return repo


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("openai-community/gpt2", True),
        ("Qwen/Qwen2.5-0.5B-Instruct", True),
        ("gpt2", True),
        ("no/such/dir", False),  # two slashes: a path, never an id
        ("./model", False),
        ("../x/y", False),
        ("/abs/path", False),
        (Path("org/name"), False),  # a Path object is always local
    ],
)
def test_is_hub_id(source: str | Path, expected: bool) -> None:
    assert is_hub_id(source) is expected


def test_existing_directory_is_local_even_if_it_looks_like_an_id(
    tiny_lm_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    shutil.copytree(tiny_lm_dir, tmp_path / "org" / "name")
    monkeypatch.chdir(tmp_path)
    assert not is_hub_id("org/name")
    model, _ = load_model("org/name")
    assert model.config.model_type == "gpt2"


def test_hub_id_loads_offline_from_the_cache_and_an_uncached_id_says_how_to_fix(
    tiny_lm_dir: Path, tmp_path: Path
) -> None:
    """One process (env vars are read at import): a cached id loads into an env; another fails."""
    cache = tmp_path / "hub"
    lay_out_hub_cache(tiny_lm_dir, cache, "tiny-org/tiny-gpt2")
    script = textwrap.dedent(
        """
        import gymnasium as gym
        import lmgym
        from lmgym.error import ModelLoadError
        from lmgym.models.loading import load_model

        model, tok = load_model("tiny-org/tiny-gpt2")
        print("loaded", model.config.model_type, len(tok), model.training)
        env = gym.make("LMBandit-v0", model="tiny-org/tiny-gpt2", prompts=["the food was"],
                       max_new_tokens=4)
        env.reset(seed=0)
        _, reward, *_ = env.step(env.action_space.sample())
        print("reward", type(reward).__name__)
        try:
            load_model("tiny-org/not-cached")
        except ModelLoadError as err:
            print("error", err)
        """
    )
    env = {**os.environ, "HF_HUB_CACHE": str(cache), "HF_HUB_OFFLINE": "1"}
    done = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0] == f"loaded gpt2 {len(load_model(tiny_lm_dir)[1])} False"
    assert lines[1] == "reward float"
    error = lines[2]
    assert error.startswith("error model='tiny-org/not-cached' is not a local directory")
    assert "HF_HUB_OFFLINE=1" in error and "HF_HUB_OFFLINE=0" in error
    assert "local directory saved with save_pretrained" in error
    assert len(lines) == 3  # the message is one line


def test_resolve_device_cpu_and_auto_without_gpu(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    assert resolve_device(None) == torch.device("cpu")
    assert resolve_device("auto") == torch.device("cpu")
    assert resolve_device(torch.device("cpu")) == torch.device("cpu")


@pytest.mark.parametrize(
    ("device", "message"),
    [
        ("cuda", r"^device='cuda' but this machine has no CUDA GPU .* Use device='cpu'"),
        ("cuda:1", r"^device='cuda:1' but this machine has no CUDA GPU"),
        ("mps", r"^device='mps' but Apple MPS is not available here"),
        ("tpu", r"^device='tpu' is not a device; expected 'auto', 'cpu'"),
        ("meta", r"^device='meta' is not a device lmgym runs on"),
    ],
)
def test_resolve_device_refuses_what_is_not_here(
    device: str, message: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    with pytest.raises(ValueError, match=message):
        resolve_device(device)


def test_resolve_device_refuses_a_gpu_index_past_the_last(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert resolve_device("cuda:1") == torch.device("cuda:1")
    with pytest.raises(ValueError, match=r"has 2 CUDA device\(s\), numbered 0 to 1"):
        resolve_device("cuda:2")


def test_resolve_device_refuses_a_non_device_type() -> None:
    with pytest.raises(TypeError, match=r"^device=3 \(type int\) is not a device"):
        resolve_device(3)  # type: ignore[arg-type]


def test_resolve_dtype(monkeypatch: pytest.MonkeyPatch) -> None:
    cpu = torch.device("cpu")
    assert resolve_dtype("auto", cpu) == torch.float32
    assert resolve_dtype(None, cpu) == torch.float32
    assert resolve_dtype("bfloat16", cpu) == torch.bfloat16
    assert resolve_dtype(torch.float32, cpu) == torch.float32
    with pytest.raises(ValueError, match=r"^dtype='float16' cannot run on device 'cpu'"):
        resolve_dtype("float16", cpu)
    with pytest.raises(ValueError, match=r"^dtype='int8' is not a dtype .* 'auto' or one of"):
        resolve_dtype("int8", cpu)
    with pytest.raises(ValueError, match=r"is not a floating dtype"):
        resolve_dtype(torch.int64, cpu)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda: False)
    with pytest.raises(ValueError, match=r"does not support bfloat16 .* use dtype='float16'"):
        resolve_dtype("bfloat16", torch.device("cuda"))
    assert resolve_dtype("auto", torch.device("cuda")) == torch.float32


def test_load_model_in_bfloat16_scores_in_float32(tiny_lm_dir: Path) -> None:
    from lmgym.models.scoring import score_completions

    model, tok = load_model(tiny_lm_dir, dtype="bfloat16")
    assert next(model.parameters()).dtype == torch.bfloat16
    prompt = torch.tensor([tok.encode("the food was")])
    completion = torch.tensor([tok.encode("great .", add_special_tokens=False)])
    scores = score_completions(
        model,
        prompt,
        torch.ones_like(prompt),
        completion,
        torch.ones_like(completion),
        pad_token_id=tok.pad_token_id,
    )
    assert scores.logprobs.dtype == torch.float32
    reference, _ = load_model(tiny_lm_dir)
    exact = score_completions(
        reference,
        prompt,
        torch.ones_like(prompt),
        completion,
        torch.ones_like(completion),
        pad_token_id=tok.pad_token_id,
    )
    # bf16 weights keep ~3 significant digits: close to the float32 log-probs, not equal.
    torch.testing.assert_close(scores.logprobs, exact.logprobs, atol=0.1, rtol=0.05)


def test_load_model_refuses_a_bad_device_before_loading(
    tiny_lm_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    calls: list[object] = []
    import transformers

    monkeypatch.setattr(
        transformers.AutoModelForCausalLM, "from_pretrained", lambda *a, **k: calls.append(a)
    )
    with pytest.raises(ValueError, match=r"^device='cuda' but this machine has no CUDA GPU"):
        load_model(tiny_lm_dir, device="cuda")
    with pytest.raises(ValueError, match=r"^dtype='float16' cannot run on device 'cpu'"):
        load_model(tiny_lm_dir, dtype="float16")
    assert calls == []


def test_model_object_keeps_its_dtype_unless_asked(tiny_lm_dir: Path) -> None:
    model, tok = load_model(tiny_lm_dir)
    same, _ = load_model(model, tok)
    assert next(same.parameters()).dtype == torch.float32
    cast, _ = load_model(model, tok, dtype="bfloat16")
    assert next(cast.parameters()).dtype == torch.bfloat16


def test_uncached_hub_id_in_process_is_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(ModelLoadError) as caught:
        load_model("tiny-org/surely-not-in-any-cache")
    message = str(caught.value)
    assert "\n" not in message
    assert message.startswith("model='tiny-org/surely-not-in-any-cache' is not a local directory")
