"""Offline RL on logged text episodes: ILQL (Snell et al. 2022) and filtered BC.

Record episodes of a policy once (the only reward-model calls), save or load them as JSONL or
Parquet, train ILQL on them, and sample from the result through
``lmgym.models.generation.generate``, which the ILQL model's logits processor re-weights by
β·(Q − V). See docs/offline-rl.md.

* :mod:`lmgym.offline.dataset`: :class:`~lmgym.offline.dataset.EpisodeDataset`, the logged
  episodes, their JSONL and Parquet formats and their checks;
* :mod:`lmgym.offline.record`: :func:`~lmgym.offline.record.record_episodes` of a policy on
  the ``LMBandit-v0`` vector env;
* :mod:`lmgym.offline.config`, :mod:`lmgym.offline.losses`, :mod:`lmgym.offline.model`,
  :mod:`lmgym.offline.ilql`: the ILQL config, its loss terms, the LM with its Q/V heads, and
  the trainers (:func:`~lmgym.offline.ilql.train_ilql`,
  :func:`~lmgym.offline.ilql.train_filtered_bc`);
* :mod:`lmgym.offline.decoding`: the β·(Q − V) logits processor;
* :mod:`lmgym.offline.evaluate` and :mod:`lmgym.offline.command`: held-out evaluation with the
  env's reward, and ``lmgym ilql``.

The package imports nothing heavy itself, so ``lmgym ilql --help`` answers at once; import the
modules directly, e.g. ``from lmgym.offline.ilql import train_ilql``.
"""

from __future__ import annotations

__all__: list[str] = []
