"""The RLHF recipe around the envs: labelers, SFT, reward model, PPO(-ptx), DPO, Elo.

Each stage has one shape (Ouyang et al. 2022, "Training language models to follow instructions
with human feedback"; Rafailov et al. 2023 for DPO): a frozen config dataclass in
:mod:`lmgym.rlhf.config`, validated when it is built, and a function
``run(config, inputs, out) -> StageResult(path, metrics, history)`` in the stage's module:

* :mod:`lmgym.rlhf.labelers`: simulated labelers with a hidden true preference and noise, so
  the pipeline runs offline and is measured against a ground truth the reward model never sees;
* :mod:`lmgym.rlhf.sft`: supervised fine-tuning on demonstrations;
* :mod:`lmgym.rlhf.rankings` and :mod:`lmgym.rlhf.reward_model`: rankings of K completions per
  prompt, and a reward model trained from them (usable as an env's ``reward_fn``);
* :mod:`lmgym.rlhf.dpo`: direct preference optimisation on the same preference pairs;
* :mod:`lmgym.rlhf.elo`, :mod:`lmgym.rlhf.ppo_stage`, :mod:`lmgym.rlhf.ptx`: Elo ratings, PPO
  against the learned reward model, and PPO-ptx; :mod:`lmgym.rlhf.pipeline` runs the chain
  (``lmgym rlhf``).

:mod:`lmgym.rlhf.fit` is the one AdamW loop of SFT, the reward model and DPO (and of
pre-training); :class:`lmgym.evaluation.PolicyEvaluator` the one held-out evaluation;
:mod:`lmgym.rlhf.commands` the ``lmgym sft | reward-model | ppo-rm | dpo`` commands.

The package imports nothing heavy itself (``import lmgym`` does not import it at all); import
the stage modules directly, e.g. ``from lmgym.rlhf.labelers import BradleyTerryLabeler``.
"""

from __future__ import annotations

__all__: list[str] = []
