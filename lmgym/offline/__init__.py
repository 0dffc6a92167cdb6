"""Offline RL on logged text episodes: ILQL (Snell et al. 2022) and filtered BC.

Record episodes of a policy once (:func:`record_episodes`, the only reward-model calls), save
or load them as JSONL (:class:`EpisodeDataset`), train ILQL on them (:func:`train_ilql`), and
sample from the result through ``lmgym.models.generation.generate``, which the ILQL model's
logits processor re-weights by β·(Q − V). See docs/offline-rl.md.
"""

from lmgym.offline.config import ILQLConfig
from lmgym.offline.dataset import Episode, EpisodeDataset, tokenizer_fingerprint
from lmgym.offline.decoding import ILQLLogitsProcessor, ilql_logprobs
from lmgym.offline.ilql import train_filtered_bc, train_ilql
from lmgym.offline.model import ILQLHeads, ILQLModel, load_ilql_model
from lmgym.offline.record import record_episodes

__all__ = [
    "Episode",
    "EpisodeDataset",
    "ILQLConfig",
    "ILQLHeads",
    "ILQLLogitsProcessor",
    "ILQLModel",
    "ilql_logprobs",
    "load_ilql_model",
    "record_episodes",
    "tokenizer_fingerprint",
    "train_filtered_bc",
    "train_ilql",
]
