"""On-policy algorithms for LMs, as SB3 algorithms: LMPPO, GRPO and RLOO.

:class:`LMPPO` is SB3's PPO with a per-token ratio option and micro-batches. GRPO and RLOO
train an LM policy (``LMActorCriticPolicy``) on the grouped ``LMBandit-v0`` vector env
(``gym.make_vec("LMBandit-v0", num_envs=N, group_size=G)``, wrapped by
:class:`lmgym.agents.SB3VecEnv`) and take their baseline from the other completions of the same
prompt instead of a value head. See docs/algorithms.md.
"""

from __future__ import annotations

from lmgym.algorithms.group import GroupAlgorithm
from lmgym.algorithms.grpo import GRPO, grpo_advantages
from lmgym.algorithms.ppo import LMPPO
from lmgym.algorithms.rloo import RLOO, rloo_advantages

__all__ = ["GRPO", "LMPPO", "RLOO", "GroupAlgorithm", "grpo_advantages", "rloo_advantages"]
