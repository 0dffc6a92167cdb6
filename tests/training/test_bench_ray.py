"""``lmgym bench --backend ray``: the same results as the local pool, retries, refusals.

A Ray runtime is started once for the module, on this machine only (``address="local"``: its
processes listen on loopback), and stopped after it.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import pytest

from lmgym.training.bench import BenchConfig, run_bench
from lmgym.training.ray_backend import (
    RayBackendError,
    _check_reachable,
    execute_on_ray,
)

pytestmark = pytest.mark.slow


def grid(out: Path, **kwargs) -> BenchConfig:
    base = dict(env="CatGrid-v0", algos=["a2c"], seeds=2, steps=256, n_envs=2, eval_episodes=2,
                out=out, progress=False, threshold=-1e3)  # fmt: skip
    return BenchConfig(**{**base, **kwargs})


@pytest.fixture(scope="module")
def ray_runtime():
    os.environ["RAY_AUTH_MODE"] = "disabled"  # else ray.init writes a token under $HOME
    import ray

    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()


def comparable(value, out: Path):
    """Metrics without their timings (which differ between any two runs), at any depth, and
    with the benchmark's directory, where paths name it, replaced by ``<out>``."""
    if isinstance(value, dict):
        timing = lambda k: k.endswith("_s") or "_wall_" in k  # noqa: E731
        return {k: comparable(v, out) for k, v in value.items() if not timing(k)}
    if isinstance(value, list):
        return [comparable(v, out) for v in value]
    return value.replace(str(out), "<out>") if isinstance(value, str) else value


def test_ray_grid_equals_the_local_pool(ray_runtime, tmp_path) -> None:
    local = run_bench(grid(tmp_path / "local", jobs=1))
    remote = run_bench(grid(tmp_path / "ray", backend="ray"))
    assert comparable(remote["runs"], tmp_path / "ray") == comparable(
        local["runs"], tmp_path / "local"
    )
    assert remote["algos"]["a2c"]["eval_reward_after"] == local["algos"]["a2c"]["eval_reward_after"]
    assert (remote["backend"], remote["retries"]) == ("ray", 0)
    assert "Ray tasks, 0 retried" in (tmp_path / "ray" / "results.md").read_text()
    assert (tmp_path / "ray" / "curves.png").stat().st_size > 10_000


def test_a_run_whose_worker_dies_is_retried_from_its_checkpoint(ray_runtime, tmp_path) -> None:
    config = grid(tmp_path / "bench", seeds=1)
    [run] = config.run_configs(existing=False)

    def dies_once(run_config):
        # The first attempt trains, leaves its checkpoint, then its worker process dies.
        from lmgym.training.train import run_train

        marker = run_config.out / "died-once"
        if not marker.exists():
            run_train(run_config)
            marker.write_text("1")
            os._exit(1)
        assert run_config.resume == run_config.out  # the retry continues the written run
        return run_train(run_config)

    run.out.mkdir(parents=True)
    results, failures, retries = execute_on_ray([run], {"CPU": 1.0}, False, dies_once)
    assert (failures, retries) == ([], 1)
    assert results[0]["seed"] == 0 and (run.out / "metrics.json").exists()


def test_resources_no_node_has_are_refused_before_any_run(ray_runtime, tmp_path) -> None:
    config = grid(tmp_path / "bench", backend="ray", resources_per_run='{"CPU": 1, "GPU": 1}')
    with pytest.raises(RayBackendError, match=r"no node of the cluster has that much.*CPU=2"):
        run_bench(config)
    assert not (tmp_path / "bench").exists()  # refused before the benchmark wrote anything


def test_an_unreachable_address_fails_fast() -> None:
    started = time.monotonic()
    with pytest.raises(RayBackendError, match=r"address='127.0.0.1:1': no Ray cluster answers"):
        _check_reachable("127.0.0.1:1")
    assert time.monotonic() - started < 30
    with pytest.raises(RayBackendError, match="is not a cluster address"):
        _check_reachable("nonsense")


@pytest.mark.parametrize(
    ("kwargs", "fragment"),
    [
        (dict(address="auto"), "address='auto' with backend='local'"),
        (dict(backend="ray", resources_per_run="{oops"), "resources_per_run='{oops' is not JSON"),
        (dict(backend="ray", resources_per_run='{"CPU": -1}'), "amount >= 0"),
        (dict(backend="spark"), "backend='spark' is unknown"),
    ],
    ids=["address_local", "bad_json", "negative", "unknown_backend"],
)
def test_bad_backend_options_raise(kwargs, fragment, tmp_path) -> None:
    with pytest.raises(ValueError, match=fragment.replace("{", r"\{")):
        grid(tmp_path, **kwargs)


def test_without_ray_installed_the_error_names_the_extra(monkeypatch, tmp_path) -> None:
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray now raises ImportError
    with pytest.raises(ImportError, match=r"pip install 'lmgym\[ray\]'"):
        grid(tmp_path, backend="ray")


class RecordingRay:
    """Stands in for the ``ray`` module: records whether the driver connected and disconnected."""

    def __init__(self, initialized: bool) -> None:
        self.initialized, self.calls = initialized, []

    def is_initialized(self) -> bool:
        return self.initialized

    def init(self, **kwargs) -> None:
        self.calls.append(("init", kwargs["address"]))

    def nodes(self) -> list[dict]:
        return [{"Alive": True, "Resources": {"CPU": 1.0}}]

    def shutdown(self) -> None:
        self.calls.append(("shutdown", None))


@pytest.mark.parametrize(
    ("initialized", "address", "calls"),
    [
        (False, "10.0.0.1:6379", [("init", "10.0.0.1:6379"), ("shutdown", None)]),
        (False, None, [("init", "local"), ("shutdown", None)]),
        (True, "10.0.0.1:6379", []),
    ],
    ids=["joined_cluster", "started_here", "caller_connected"],
)
def test_the_driver_disconnects_only_when_it_connected(
    monkeypatch, initialized, address, calls
) -> None:
    from lmgym.training import ray_backend

    fake = RecordingRay(initialized)
    monkeypatch.setattr(ray_backend, "import_ray", lambda: fake)
    monkeypatch.setattr(ray_backend, "_check_reachable", lambda address: None)
    with ray_backend.ray_cluster(address, {"CPU": 1.0}):
        pass
    assert fake.calls == calls
