"""lmgym's torch thread default for the embedded model, and how a user overrides it."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch

from lmgym import torch_threads
from lmgym.models.loading import load_default_model


@pytest.fixture(autouse=True)
def restore_threads(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    before = torch.get_num_threads()
    monkeypatch.setattr(torch_threads, "_chosen", False)
    monkeypatch.delenv(torch_threads.THREADS_ENV_VAR, raising=False)
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    yield
    torch.set_num_threads(before)


def test_embedded_model_runs_on_one_thread_by_default() -> None:
    torch.set_num_threads(2)
    load_default_model()
    assert torch.get_num_threads() == torch_threads.EMBEDDED_MODEL_THREADS == 1


def test_environment_variable_overrides_the_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(torch_threads.THREADS_ENV_VAR, "2")
    load_default_model()
    assert torch.get_num_threads() == 2


def test_an_explicit_choice_is_kept() -> None:
    torch_threads.set_torch_threads(2)
    load_default_model()
    assert torch.get_num_threads() == 2


def test_omp_num_threads_is_respected(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OMP_NUM_THREADS", "2")
    torch.set_num_threads(2)
    load_default_model()
    assert torch.get_num_threads() == 2


@pytest.mark.parametrize("value", ["two", "0", "-1"])
def test_bad_environment_variable_is_a_clear_error(
    monkeypatch: pytest.MonkeyPatch, value: str
) -> None:
    monkeypatch.setenv(torch_threads.THREADS_ENV_VAR, value)
    with pytest.raises(ValueError, match=rf"LMGYM_TORCH_THREADS='{value}'; expected an int >= 1"):
        load_default_model()


def test_set_torch_threads_validates() -> None:
    with pytest.raises(ValueError, match=r"num_threads=0; expected an int >= 1"):
        torch_threads.set_torch_threads(0)
