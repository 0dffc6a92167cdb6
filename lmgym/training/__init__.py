"""Training and benchmarking: ``lmgym train`` (one agent) and ``lmgym bench`` (algos × seeds).

- :mod:`~lmgym.training.algorithms`: CLI names → SB3 classes, what fits which env, defaults
  (prompt splits, the adaptive β's horizon);
- :mod:`~lmgym.training.task_options`: the user's task (``--model``, ``--reward``,
  ``--prompts``, ``--device``), shared by ``train``, ``bench`` and ``demo``;
- :mod:`~lmgym.training.build`: the envs and the model of one run;
- :mod:`~lmgym.training.evaluation`: a fixed set of seeded evaluation episodes;
- :mod:`~lmgym.training.checkpoint`: atomic checkpoints (model + run state);
- :mod:`~lmgym.training.rundir`: one run per output directory (resume / overwrite);
- :mod:`~lmgym.training.train`: :class:`TrainConfig` and :func:`run_train`;
- :mod:`~lmgym.training.trainer`: the run itself (callbacks, checkpointed state, metrics);
- :mod:`~lmgym.training.stats`: means with Student-t intervals, curves, thresholds;
- :mod:`~lmgym.training.report`: ``results.md`` and ``curves.png`` of a benchmark;
- :mod:`~lmgym.training.bench`: :class:`BenchConfig` and :func:`run_bench`.

Importing the package, the configs and the run functions loads no torch or SB3: they are
imported when a run starts.
"""

from __future__ import annotations

from lmgym.training.bench import BenchConfig, run_bench
from lmgym.training.stats import mean_ci
from lmgym.training.train import TrainConfig, run_train

__all__ = ["BenchConfig", "TrainConfig", "mean_ci", "run_bench", "run_train"]
