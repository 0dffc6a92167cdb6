"""``LMRLModule``: an RLlib RL module whose policy is a Hugging Face causal LM.

It acts on lmgym's two LM envs, whose observations are right-padded token ids in an int64
``Box`` (``obs != pad_token_id`` is the mask):

- ``LMBandit-v0`` (``MultiDiscrete([V] * T)``, a whole completion): exploration samples a
  completion token by token with lmgym's :func:`~lmgym.models.generation.generate` (KV cache,
  temperature 1, so the log-prob it returns is π_θ's own), inference decodes greedily, and
  ``forward_train`` scores the taken completion with one teacher-forced forward
  (:func:`~lmgym.models.scoring.score_completions`) for :class:`~lmgym.rllib.CompletionLogits`.
- ``LMToken-v0`` (``Discrete(V)``, the next token): the logits at the last real token, for
  RLlib's ``TorchCategorical``.

The value is a linear head on the LM's last hidden state at the last real observation token
(the prompt's, on the bandit), as in :class:`lmgym.agents.LMActorCriticPolicy`.

``model_config`` keys: ``model`` (a local directory or hub id; ``None``: the embedded default
``lmgym/models/default``) and ``tokenizer`` (default: the model's). Use the env's model, so
that token ids mean the same on both sides.
"""

from __future__ import annotations

from typing import Any

import torch
from gymnasium import spaces
from ray.rllib.core.columns import Columns
from ray.rllib.core.distribution.torch.torch_distribution import (
    TorchCategorical,
    TorchDistribution,
)
from ray.rllib.core.rl_module.apis import ValueFunctionAPI
from ray.rllib.core.rl_module.torch import TorchRLModule
from torch import nn
from transformers import PreTrainedModel

from lmgym.agents.lm_policy_setup import check_spaces, check_vocab, load_lm
from lmgym.agents.token_head import next_token_outputs
from lmgym.models.generation import DecodingConfig, generate
from lmgym.models.padding import completion_mask_from_ids
from lmgym.models.scoring import score_completions
from lmgym.rllib.distribution import CompletionLogits, completion_dist_inputs

__all__ = ["LMRLModule"]


class LMRLModule(TorchRLModule, ValueFunctionAPI):
    """RLlib's new-API-stack module around a causal LM, for ``LMBandit-v0`` and ``LMToken-v0``.

    Build it through :func:`lmgym.rllib.ppo_config` (or an ``RLModuleSpec`` with
    ``module_class=LMRLModule`` and ``model_config={"model": ...}``); see the module docstring.
    """

    lm: PreTrainedModel
    value_head: nn.Linear

    def setup(self) -> None:
        """Load the LM (float32, dropout off) and a zero-initialised value head."""
        config = self.model_config if isinstance(self.model_config, dict) else {}
        assert self.observation_space is not None and self.action_space is not None
        check_spaces(self.observation_space, self.action_space)
        lm, tokenizer = load_lm(config.get("model"), config.get("tokenizer"), None, False)
        if tokenizer is None:
            raise ValueError(
                "model_config['model'] is a model object but model_config['tokenizer'] is "
                "None; expected the tokenizer too (the module needs its EOS and pad ids), or "
                "a directory / hub id that holds both."
            )
        check_vocab(lm, self.observation_space, self.action_space)
        self.lm = lm
        self.eos_token_id = int(tokenizer.eos_token_id)
        self.pad_token_id = int(tokenizer.pad_token_id)
        self.completion = isinstance(self.action_space, spaces.MultiDiscrete)
        if self.completion:
            assert isinstance(self.action_space, spaces.MultiDiscrete)
            self.vocab_size = int(self.action_space.nvec.max())
            self.max_new_tokens = int(self.action_space.nvec.shape[0])
        else:
            assert isinstance(self.action_space, spaces.Discrete)
            self.vocab_size = int(self.action_space.n)
        self.value_head = nn.Linear(int(lm.config.hidden_size), 1)
        nn.init.zeros_(self.value_head.weight)
        nn.init.zeros_(self.value_head.bias)

    # ------------------------------------------------------------------ distributions

    def get_train_action_dist_cls(self) -> type[TorchDistribution]:
        """Completion log-probs from teacher-forced logits, or a next-token categorical."""
        return CompletionLogits if self.completion else TorchCategorical

    def get_exploration_action_dist_cls(self) -> type[TorchDistribution]:
        """As for training (exploration's own completions come from ``forward_exploration``)."""
        return self.get_train_action_dist_cls()

    def get_inference_action_dist_cls(self) -> type[TorchDistribution]:
        """As for training."""
        return self.get_train_action_dist_cls()

    # ------------------------------------------------------------------ forwards

    def _ids(self, batch: dict[str, Any]) -> tuple[torch.Tensor, torch.Tensor]:
        ids = batch[Columns.OBS].long().reshape(batch[Columns.OBS].shape[0], -1)
        return ids, (ids != self.pad_token_id).long()

    def _next_token(self, batch: dict[str, Any]) -> tuple[torch.Tensor, torch.Tensor]:
        out = next_token_outputs(
            self.lm, batch[Columns.OBS], pad_token_id=self.pad_token_id, n_actions=self.vocab_size
        )
        return out.logits, out.hidden

    def _sample(self, batch: dict[str, Any], *, greedy: bool) -> dict[str, Any]:
        if not self.completion:
            logits, hidden = self._next_token(batch)
            return {Columns.ACTION_DIST_INPUTS: logits, Columns.EMBEDDINGS: hidden}
        ids, mask = self._ids(batch)
        decoding = DecodingConfig(max_new_tokens=self.max_new_tokens, do_sample=not greedy)
        generation = generate(
            self.lm, ids, mask, decoding, eos_token_id=self.eos_token_id,
            pad_token_id=self.pad_token_id, vocab_size=self.vocab_size,
        )  # fmt: skip
        return {
            Columns.ACTIONS: generation.completion_ids,
            Columns.ACTION_LOGP: generation.logprobs.sum(-1),
            # No logits are kept while sampling: a (B, 1) placeholder (see CompletionLogits).
            Columns.ACTION_DIST_INPUTS: torch.zeros(ids.shape[0], 1, device=ids.device),
        }

    def _forward_exploration(self, batch: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
        """A completion sampled from π_θ and its log-prob (bandit), or next-token logits."""
        return self._sample(batch, greedy=False)

    def _forward_inference(self, batch: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
        """The greedy completion (bandit), or next-token logits (RLlib takes their argmax)."""
        return self._sample(batch, greedy=True)

    def _forward_train(self, batch: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
        """Distribution inputs of the taken actions, with gradients, and the value features."""
        if not self.completion:
            logits, hidden = self._next_token(batch)
            return {Columns.ACTION_DIST_INPUTS: logits, Columns.EMBEDDINGS: hidden}
        ids, mask = self._ids(batch)
        actions = batch[Columns.ACTIONS].long().reshape(ids.shape[0], self.max_new_tokens)
        scores = score_completions(
            self.lm, ids, mask, actions, completion_mask_from_ids(actions, self.eos_token_id),
            pad_token_id=self.pad_token_id, keep_logits=True, keep_hidden=True,
            vocab_size=self.vocab_size,
        )  # fmt: skip
        assert scores.logits is not None and scores.hidden is not None  # kept, as asked
        return {
            Columns.ACTION_DIST_INPUTS: completion_dist_inputs(scores.logits, scores.mask),
            # Completion position 0 is read at the last real prompt token: the value feature,
            # from the same forward (no second pass over the prompt).
            Columns.EMBEDDINGS: scores.hidden[:, 0],
        }

    def compute_values(
        self, batch: dict[str, Any], embeddings: torch.Tensor | None = None
    ) -> torch.Tensor:
        """V(s) (B,): the value head on the last hidden state at the last real token."""
        if embeddings is None:
            embeddings = self._next_token(batch)[1]
        return self.value_head(embeddings.float()).squeeze(-1)
