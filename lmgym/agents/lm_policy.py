"""An SB3 actor-critic policy whose actor is a Hugging Face causal LM.

``PPO(LMActorCriticPolicy, env)`` trains the language model itself on ``LMBandit-v0`` or
``LMToken-v0``, the way ``PPO("MlpPolicy", env)`` trains an MLP: no fork or patch of
stable-baselines3, only its extension points (a policy subclass and a
:class:`~stable_baselines3.common.distributions.Distribution`).

The action of the bandit env is a whole completion, so the action distribution is autoregressive,
``π_θ(y | x) = Π_t π_θ(y_t | x, y_<t)``: it samples with a KV cache (the shared
:func:`~lmgym.models.generation.generate`) and scores completions with one teacher-forced forward
(:func:`~lmgym.models.scoring.score_completions`). SB3's PPO ratio and A2C gradient are then
exact for the sequence. The critic is a linear value head on the LM's last hidden state at the
last real prompt token. The action of the token env is one token: SB3's categorical distribution
over the LM's next-token logits at the observation's last real token
(:mod:`lmgym.agents.token_head`), with the critic reading the hidden state at that token.
:class:`MaskableLMActorCriticPolicy` is the same policy for sb3-contrib's ``MaskablePPO``.

Pitfalls handled here: attributes are set before ``super().__init__`` (which
calls ``_build``) and ``_build`` is replaced; observations are read as ``.long()`` token ids,
bypassing SB3's ``preprocess_obs`` (which would cast them to float) and the features extractor;
every dropout is 0, because SB3 switches to train mode for updates; ``ortho_init`` is off so the
pretrained weights survive; the constructor arguments go to ``_get_constructor_parameters`` so
``PPO.load`` rebuilds the policy.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Literal, get_args

import numpy as np
import torch
from gymnasium import spaces
from sb3_contrib.common.maskable.distributions import (
    MaskableCategoricalDistribution,
    MaskableDistribution,
)
from sb3_contrib.common.maskable.policies import MaskableActorCriticPolicy
from stable_baselines3.common.distributions import CategoricalDistribution, Distribution
from stable_baselines3.common.policies import ActorCriticPolicy
from stable_baselines3.common.type_aliases import PyTorchObs, Schedule
from torch import nn
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from lmgym.agents.attach import _attach
from lmgym.agents.completion_distribution import CompletionDistribution
from lmgym.agents.lm_policy_setup import (
    _check_spaces,
    _check_vocab,
    _freeze_bottom,
    _load_lm,
    _LogProbCache,
    _resolve_decoding,
    _transformer_blocks,
    parameter_version,
)
from lmgym.agents.lora import (
    AdapterDisabledReference,
    apply_lora,
    causal_lm,
    is_lora,
    merged_copy,
)
from lmgym.agents.token_head import (
    NextTokenOutputs,
    next_token_outputs,
    trunk_last_hidden,
)
from lmgym.envs.sequence_reward import PolicyLogProbFn
from lmgym.envs.token_batch import TokenPolicyLogProbFn
from lmgym.models.generation import DecodingConfig
from lmgym.models.scoring import completion_logprobs

ValueTrunk = Literal["shared", "detached", "separate"]
"""Where the value head reads its features: see :class:`LMActorCriticPolicy`."""


if TYPE_CHECKING:
    _PolicyBase = ActorCriticPolicy
else:
    _PolicyBase = object


class LMPolicyMixin(_PolicyBase):
    """The LM actor-critic shared by :class:`LMActorCriticPolicy` and its maskable twin.

    SB3's ``ActorCriticPolicy`` and sb3-contrib's ``MaskableActorCriticPolicy`` are separate
    classes (``MaskablePPO`` insists on the latter), so the LM policy is this mixin on either
    base. See :class:`LMActorCriticPolicy` for the arguments.
    """

    _base_kwargs: ClassVar[dict[str, Any]] = {}
    """Extra arguments of the SB3 base class's ``__init__`` (``use_sde`` exists on one only)."""

    def __init__(
        self,
        observation_space: spaces.Space,
        action_space: spaces.Space,
        lr_schedule: Schedule,
        model: str | Path | PreTrainedModel | None = None,
        tokenizer: str | Path | PreTrainedTokenizerBase | None = None,
        *,
        pad_token_id: int | None = None,
        eos_token_id: int | None = None,
        decoding: DecodingConfig | dict[str, Any] | None = None,
        value_trunk: ValueTrunk = "shared",
        freeze_layers: int = 0,
        lora: dict[str, Any] | None = None,
        attn_implementation: str | None = None,
        trust_remote_code: bool = False,
        use_sde: bool = False,
        ortho_init: bool = False,
        **kwargs: Any,
    ) -> None:
        _check_spaces(observation_space, action_space)
        if use_sde:
            raise ValueError(
                f"use_sde=True is not supported by {type(self).__name__}: actions are ids."
            )
        if ortho_init:
            raise ValueError(
                "ortho_init=True would overwrite the pretrained LM's weights; "
                f"{type(self).__name__} needs ortho_init=False (the default)."
            )
        if value_trunk not in get_args(ValueTrunk):
            raise ValueError(
                f"value_trunk={value_trunk!r} is unknown; expected one of "
                f"{list(get_args(ValueTrunk))}."
            )
        if isinstance(freeze_layers, bool) or not isinstance(freeze_layers, int):
            raise TypeError(f"freeze_layers={freeze_layers!r} is not an int; expected e.g. 1.")
        if lora is not None and freeze_layers:
            raise ValueError(
                f"freeze_layers={freeze_layers} with lora={lora!r}: LoRA already freezes every "
                "base weight; expected one of the two (freeze_layers=0 with lora)."
            )
        token_level = isinstance(action_space, spaces.Discrete)
        if token_level:
            if decoding is not None:
                raise ValueError(
                    f"decoding={decoding!r} with a Discrete action space: on LMToken-v0 SB3 "
                    "samples each token from the policy itself; expected decoding=None."
                )
            resolved: DecodingConfig | None = None
        else:
            resolved = _resolve_decoding(decoding, action_space)

        lm, tok = _load_lm(model, tokenizer, attn_implementation, trust_remote_code)
        pad, eos = pad_token_id, eos_token_id
        if tok is not None:
            pad = tok.pad_token_id if pad is None else pad
            eos = tok.eos_token_id if eos is None else eos
        if pad is None or eos is None:
            raise ValueError(
                f"pad_token_id={pad!r} / eos_token_id={eos!r}: {type(self).__name__} needs both, "
                "and they must match the env's. Pass tokenizer=env.unwrapped.lm.tokenizer (see "
                "lm_policy_kwargs(env)) or pad_token_id=... and eos_token_id=... ."
            )
        _check_vocab(lm, observation_space, action_space)
        n_layers = len(_transformer_blocks(lm))
        if not 0 <= freeze_layers <= n_layers:
            raise ValueError(
                f"freeze_layers={freeze_layers} is out of range; expected 0 <= freeze_layers <= "
                f"{n_layers} (the model's number of transformer blocks)."
            )
        wrapped = lm if lora is None else apply_lora(lm, lora)

        # Everything _build needs must exist before super().__init__ calls it. The model and the
        # constructor arguments live in a tuple / dict so nn.Module does not register the
        # caller's model object as a sub-module (it would be trained and saved twice).
        self._pending_lm: tuple[nn.Module] | None = (wrapped,)
        self.tokenizer = tok
        self.pad_token_id = int(pad)
        self.eos_token_id = int(eos)
        self.decoding = resolved
        self.token_level = token_level
        self.value_trunk_kind: ValueTrunk = value_trunk
        self.freeze_layers = freeze_layers
        self._lm_kwargs: dict[str, Any] = dict(
            model=model,
            tokenizer=tokenizer,
            pad_token_id=pad_token_id,
            eos_token_id=eos_token_id,
            decoding=resolved,
            value_trunk=value_trunk,
            freeze_layers=freeze_layers,
            lora=lora,
            attn_implementation=attn_implementation,
            trust_remote_code=trust_remote_code,
        )
        self._logprob_cache: _LogProbCache | None = None
        self.logprob_cache_hits = 0
        self.logprob_cache_misses = 0
        super().__init__(
            observation_space,
            action_space,
            lr_schedule,
            ortho_init=False,
            **self._base_kwargs,
            **kwargs,
        )

    # ----------------------------------------------------------------------------- building

    def _build(self, lr_schedule: Schedule) -> None:
        """Install the LM, the value head and the optimizer (replaces the MLP build)."""
        assert self._pending_lm is not None, "_build runs once, from __init__"
        (self.lm,) = self._pending_lm
        self._pending_lm = None
        if self.token_level:
            assert isinstance(self.action_space, spaces.Discrete)
            self.action_dist = self._token_distribution(int(self.action_space.n))
        else:
            assert self.decoding is not None
            self.action_dist = CompletionDistribution(
                self.decoding.max_new_tokens,
                eos_token_id=self.eos_token_id,
                pad_token_id=self.pad_token_id,
            )
        if self.value_trunk_kind == "separate":
            # "value" in the name: TRPO skips parameters so named when it takes the actor's.
            self.value_trunk: nn.Module | None = copy.deepcopy(self.trunk).requires_grad_(True)
        else:
            self.value_trunk = None
        self.value_net = nn.Linear(int(causal_lm(self.lm).config.hidden_size), 1)
        if self.freeze_layers > 0:
            _freeze_bottom(causal_lm(self.lm), self.freeze_layers)
        trainable = [p for p in self.parameters() if p.requires_grad]
        self.optimizer = self.optimizer_class(  # type: ignore[call-arg]
            trainable, lr=lr_schedule(1), **self.optimizer_kwargs
        )

    def _token_distribution(self, n: int) -> Distribution:
        return CategoricalDistribution(n)

    def _get_constructor_parameters(self) -> dict[str, Any]:
        data = super()._get_constructor_parameters()
        data.update(self._lm_kwargs)
        return data

    @property
    def trunk(self) -> nn.Module:
        """The LM's transformer body (no LM head): what ``value_trunk="separate"`` copies."""
        return causal_lm(self.lm).base_model

    # ----------------------------------------------------------------------------- SB3 API

    def forward(  # type: ignore[override]
        self, obs: torch.Tensor, deterministic: bool = False
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Sample actions: ``(actions, values (B, 1), log_prob (B,))``.

        What SB3 calls to collect rollouts. Bandit: whole completions (B, T), drawn from π_θ
        itself whatever ``decoding`` says (see :class:`LMActorCriticPolicy`). Token env: next
        tokens (B,). The log-probs are remembered for the env's KL term (see :meth:`attach_to`).
        """
        if self.token_level:
            return self._token_forward(obs, deterministic, None)
        prompt_ids, prompt_mask = self._prompts(obs)
        distribution = self._distribution(prompt_ids, prompt_mask)
        actions = distribution.get_actions(deterministic=deterministic)
        generation = distribution.distribution.generation
        assert generation is not None, "get_actions() generates"
        values = self._prompt_values(prompt_ids)
        self._logprob_cache = _LogProbCache.build(
            torch.cat([prompt_ids, actions.long()], dim=1), generation.logprobs, self._lm_version()
        )
        return actions, values, generation.logprobs.sum(-1)

    def _predict(  # type: ignore[override]
        self, observation: PyTorchObs, deterministic: bool = False, **kwargs: Any
    ) -> torch.Tensor:
        """Actions for ``predict()``: on the bandit, sampled with ``decoding`` (evaluation)."""
        if self.token_level:
            return super()._predict(observation, deterministic, **kwargs)
        assert isinstance(observation, torch.Tensor)
        assert self.decoding is not None
        distribution = self._distribution(*self._prompts(observation))
        if deterministic:
            return distribution.mode()
        return distribution.distribution.decode(self.decoding)

    def evaluate_actions(  # type: ignore[override]
        self, obs: PyTorchObs, actions: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """Values (B, 1), log-probs (B,) and entropies (B,) of given actions.

        One forward pass gives all three (with ``value_trunk="shared"`` or ``"detached"``);
        gradients flow into the LM.
        """
        assert isinstance(obs, torch.Tensor)
        if self.token_level:
            return self._token_evaluate(obs, actions, None)
        prompt_ids, prompt_mask = self._prompts(obs)
        distribution = self._distribution(prompt_ids, prompt_mask)
        log_prob = distribution.log_prob(actions)
        entropy = distribution.entropy()
        if self.value_trunk is None:
            hidden = distribution.distribution.score(actions).hidden
            assert hidden is not None
            # Completion position 0 is read at the last real prompt token (left padding):
            # exactly the feature _prompt_values uses during rollouts.
            values = self._value_from_hidden(hidden[:, 0])
        else:
            values = self._prompt_values(prompt_ids)
        return values, log_prob, entropy

    def get_distribution(self, obs: PyTorchObs) -> Distribution:  # type: ignore[override]
        """The action distribution conditioned on ``obs``."""
        assert isinstance(obs, torch.Tensor)
        if self.token_level:
            return self._token_dist(self._next_token(obs).logits, None)
        return self._distribution(*self._prompts(obs))

    def predict_values(self, obs: PyTorchObs) -> torch.Tensor:
        """Values (B, 1) of the observations."""
        assert isinstance(obs, torch.Tensor)
        if self.token_level:
            if self.value_trunk is not None:
                return self._value_from_hidden(self._separate_hidden(obs))
            return self._value_from_hidden(self._next_token(obs).hidden)
        return self._prompt_values(self._prompts(obs)[0])

    # ----------------------------------------------------------------------------- lmgym API

    def attach_to(
        self, env: Any, *, full_distribution: bool = False
    ) -> PolicyLogProbFn | TokenPolicyLogProbFn:
        """Use this policy as π_θ of ``env``'s KL penalty; returns the attached function.

        ``env`` may be a Gymnasium env, lmgym's vector env, or SB3's ``DummyVecEnv`` /
        :class:`~lmgym.agents.SB3VecEnv` around them. What the policy just acted on is served
        from a cache of the log-probs its forward pass computed, as long as the LM's parameters
        have not changed since; anything else gets one forward.
        On ``LMBandit-v0``, ``full_distribution=True`` returns the (B, T, V) log-distributions
        that ``kl_estimator="full"`` needs (always a forward pass); on ``LMToken-v0`` the (B, V)
        next-token log-distribution is always returned, so every estimator works.

        Example:
            >>> import gymnasium as gym, lmgym
            >>> from stable_baselines3 import PPO
            >>> from lmgym.agents import lm_policy_kwargs
            >>> env = gym.make("LMBandit-v0")
            >>> model = PPO(LMActorCriticPolicy, env, policy_kwargs=lm_policy_kwargs(env))
            >>> _ = model.policy.attach_to(env)
        """
        fn: PolicyLogProbFn | TokenPolicyLogProbFn
        if self.token_level:
            fn = self.next_token_logprobs
        else:
            fn = self.full_logprobs if full_distribution else self.token_logprobs
        _attach(env, fn)
        return fn

    def next_token_logprobs(self, observations: np.ndarray) -> torch.Tensor:
        """``log π_θ(· | observation)`` (B, n) on ``LMToken-v0`` (its policy protocol).

        Observations that :meth:`forward` just acted on come from its cache; otherwise one
        forward pass (no gradients). These are the LM's own (unmasked) log-probs, also under
        ``MaskablePPO``: the KL penalty measures how far the LM itself moved from π_ref.
        """
        observations = np.asarray(observations)
        cached = self._cached_logprobs(observations)
        if cached is not None:
            self.logprob_cache_hits += 1
            return cached
        self.logprob_cache_misses += 1
        obs = torch.as_tensor(observations, device=self.device)
        with torch.inference_mode():
            logits = self._next_token(obs.reshape(-1, obs.shape[-1])).logits
        return torch.log_softmax(logits.float(), dim=-1).cpu()

    def token_logprobs(self, observations: np.ndarray, actions: np.ndarray) -> torch.Tensor:
        """``log π_θ(y_t | x, y_<t)`` (B, T) of completions ``actions`` after ``observations``.

        For ``LMBandit-v0``. Rows that :meth:`forward` just sampled come from its cache;
        otherwise one teacher-forced forward pass (no gradients).
        """
        obs, acts = np.asarray(observations), np.asarray(actions)
        rows = np.concatenate(
            [obs.reshape(-1, obs.shape[-1]), acts.reshape(-1, acts.shape[-1])], axis=1
        )  # (B, P + T): how forward() keyed them
        cached = self._cached_logprobs(rows)
        if cached is not None:
            self.logprob_cache_hits += 1
            return cached
        self.logprob_cache_misses += 1
        return self._score_numpy(obs, acts, full=False)

    def _lm_version(self) -> tuple[int, ...]:
        # What the cached log-probs depend on: the LM's parameters (not the value head).
        return parameter_version(self.lm)

    def _cached_logprobs(self, rows: np.ndarray) -> torch.Tensor | None:
        if self._logprob_cache is None:
            return None
        return self._logprob_cache.lookup(rows, self._lm_version())

    def full_logprobs(self, observations: np.ndarray, actions: np.ndarray) -> torch.Tensor:
        """Full next-token log-distributions (B, T, V) along the completions (a forward pass)."""
        return self._score_numpy(observations, actions, full=True)

    def reference_model(self) -> AdapterDisabledReference:
        """π_ref as this policy's base model with its LoRA adapters off (no copy of the weights).

        Pass it as the env's reference: ``gym.make(..., ref_model=policy.reference_model())``.
        Exact while the base weights stay frozen, which LoRA guarantees.

        Example:
            >>> import gymnasium as gym, lmgym
            >>> from stable_baselines3 import PPO
            >>> from lmgym.agents import lm_policy_kwargs
            >>> env = gym.make("LMToken-v0")
            >>> model = PPO(LMActorCriticPolicy, env, policy_kwargs=dict(lora=dict(r=4)))
            >>> env = gym.make("LMToken-v0", ref_model=model.policy.reference_model())
            >>> model.set_env(env)
        """
        if not is_lora(self.lm):
            raise ValueError(
                "reference_model() needs LoRA adapters (the base must stay frozen to serve as "
                "π_ref); build the policy with policy_kwargs=dict(lora=dict(r=8))."
            )
        return AdapterDisabledReference(self.lm)

    def save_pretrained(self, path: str | Path) -> None:
        """Export the fine-tuned LM and its tokenizer so ``lmgym.load_model(path)`` loads them.

        LoRA adapters are merged into a copy of the model first, so the directory holds a plain
        transformers model.

        Example:
            >>> import tempfile, gymnasium as gym, lmgym
            >>> from stable_baselines3 import PPO
            >>> from lmgym.agents import lm_policy_kwargs
            >>> model = PPO(LMActorCriticPolicy, gym.make("LMBandit-v0"))
            >>> model.policy.save_pretrained(tempfile.mkdtemp())
        """
        if self.tokenizer is None:
            raise ValueError(
                "save_pretrained needs the tokenizer, but the policy was built from a model "
                "object without one; build it with tokenizer=... (e.g. lm_policy_kwargs(env))."
            )
        merged_copy(self.lm).save_pretrained(path, safe_serialization=True)
        self.tokenizer.save_pretrained(path)

    # ----------------------------------------------------------------------------- token env

    def _next_token(self, obs: torch.Tensor) -> NextTokenOutputs:
        assert isinstance(self.action_space, spaces.Discrete)
        return next_token_outputs(
            self.lm, obs, pad_token_id=self.pad_token_id, n_actions=int(self.action_space.n)
        )

    def _separate_hidden(self, obs: torch.Tensor) -> torch.Tensor:
        assert self.value_trunk is not None
        return trunk_last_hidden(self.value_trunk, obs, pad_token_id=self.pad_token_id)

    def _token_dist(self, logits: torch.Tensor, action_masks: Any) -> Distribution:
        distribution = self.action_dist.proba_distribution(action_logits=logits)
        if action_masks is not None:
            distribution.apply_masking(action_masks)  # type: ignore[attr-defined]
        return distribution

    def _token_values(self, obs: torch.Tensor, out: NextTokenOutputs) -> torch.Tensor:
        if self.value_trunk is not None:
            return self._value_from_hidden(self._separate_hidden(obs))
        return self._value_from_hidden(out.hidden)

    def _token_forward(
        self, obs: torch.Tensor, deterministic: bool, action_masks: Any
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        out = self._next_token(obs)
        self._logprob_cache = _LogProbCache.build(
            obs.long().reshape(obs.shape[0], -1),
            torch.log_softmax(out.logits.float(), -1),
            self._lm_version(),
        )
        distribution = self._token_dist(out.logits, action_masks)
        actions = distribution.get_actions(deterministic=deterministic)
        return actions, self._token_values(obs, out), distribution.log_prob(actions)

    def _token_evaluate(
        self, obs: torch.Tensor, actions: torch.Tensor, action_masks: Any
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        out = self._next_token(obs)
        distribution = self._token_dist(out.logits, action_masks)
        log_prob = distribution.log_prob(actions.long().reshape(-1))
        return self._token_values(obs, out), log_prob, distribution.entropy()

    # ----------------------------------------------------------------------------- bandit env

    def _prompts(self, obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        # Token ids, not features: no preprocess_obs (which casts Box observations to float).
        prompt_ids = obs.long().reshape(obs.shape[0], -1)  # (B, P)
        return prompt_ids, (prompt_ids != self.pad_token_id).long()

    def _distribution(
        self, prompt_ids: torch.Tensor, prompt_mask: torch.Tensor
    ) -> CompletionDistribution:
        assert isinstance(self.action_dist, CompletionDistribution)
        # self.lm may be a peft model, which is called (and generates) like the LM it wraps.
        lm: Any = self.lm
        return self.action_dist.proba_distribution(lm, prompt_ids, prompt_mask)

    def _prompt_values(self, prompt_ids: torch.Tensor) -> torch.Tensor:
        # Padding is prompt_ids == pad (as in _prompts); left padding puts every row's last real
        # prompt token in the last column, where trunk_last_hidden reads it.
        trunk = self.value_trunk if self.value_trunk is not None else self.trunk
        hidden = trunk_last_hidden(trunk, prompt_ids, pad_token_id=self.pad_token_id)
        return self._value_from_hidden(hidden)  # (B, 1)

    def _value_from_hidden(self, hidden: torch.Tensor) -> torch.Tensor:
        if self.value_trunk_kind == "detached":
            hidden = hidden.detach()
        return self.value_net(hidden.float())  # (B, 1)

    def _score_numpy(
        self, observations: np.ndarray, actions: np.ndarray, full: bool
    ) -> torch.Tensor:
        prompt_ids = torch.as_tensor(np.asarray(observations), device=self.device).long()
        prompt_ids = prompt_ids.reshape(-1, prompt_ids.shape[-1])
        completion_ids = torch.as_tensor(np.asarray(actions), device=self.device).long()
        completion_ids = completion_ids.reshape(prompt_ids.shape[0], -1)
        lm: Any = self.lm  # possibly a peft model, called like the LM it wraps
        return completion_logprobs(
            lm,
            prompt_ids,
            completion_ids,
            pad_token_id=self.pad_token_id,
            eos_token_id=self.eos_token_id,
            full=full,
        ).cpu()  # (B, T, V) if full else (B, T)


class LMActorCriticPolicy(LMPolicyMixin, ActorCriticPolicy):
    """Actor-critic policy for ``LMBandit-v0`` and ``LMToken-v0`` built on a Hugging Face LM.

    The actor is the LM. On ``LMBandit-v0`` (``MultiDiscrete`` action) the whole completion is
    one action (see :class:`CompletionDistribution`) and the critic is a linear head on the last
    hidden state at the last real prompt token. On ``LMToken-v0`` (``Discrete(V)`` action) the
    action is the next token, drawn from SB3's ``CategoricalDistribution`` over the LM's logits
    at the observation's last real token, and the critic reads the hidden state there. Use it as
    any SB3 policy::

        PPO(LMActorCriticPolicy, env)                                   # embedded default LM
        PPO(LMActorCriticPolicy, env, policy_kwargs=lm_policy_kwargs(env))  # the env's own LM
        PPO(LMActorCriticPolicy, env, policy_kwargs=dict(model="path/to/dir"))
        PPO(LMActorCriticPolicy, env, policy_kwargs=dict(lora=dict(r=8)))   # LoRA adapters

    For sb3-contrib's ``MaskablePPO`` use :class:`MaskableLMActorCriticPolicy`.

    SB3 builds a policy from the spaces alone, so the policy cannot see the env's model:
    ``model=None`` means the embedded default model (what ``gym.make("LMBandit-v0")`` uses), and
    :func:`lm_policy_kwargs` hands over the env's model and tokenizer explicitly. A model object
    is deep-copied, so the env's reference to it is never trained. The pad and EOS ids must be
    the env's: they come from ``tokenizer`` (or the model directory), and explicit
    ``pad_token_id`` / ``eos_token_id`` override them.

    Attach the policy as π_θ of the env's KL penalty with :meth:`attach_to`; the log-probs of
    the actions it just took are then served from a cache (no second forward pass), which any
    write to the LM's parameters invalidates.

    Args:
        observation_space: 1-D integer ``Box`` of token ids: padded prompt ids (P,) as
            ``LMBandit-v0`` has, or prompt + completion so far (P + T,) as ``LMToken-v0`` has.
        action_space: ``MultiDiscrete([V] * T)`` (a completion) or ``Discrete(V)`` (a token).
        lr_schedule: Learning-rate schedule (given by the algorithm).
        model: A local directory written by ``save_pretrained``, a model object, or ``None``
            for the embedded default.
        tokenizer: A local directory or tokenizer object; ``None`` loads it from ``model``'s
            directory. Needed by :meth:`save_pretrained`.
        pad_token_id: Padding id of the observations; ``None``: the tokenizer's.
        eos_token_id: Ends a completion; ``None``: the tokenizer's.
        decoding: Bandit only. How ``predict(obs, deterministic=False)`` samples completions
            (temperature / top-k / top-p), for evaluation; ``max_new_tokens`` is always taken
            from the action space. Rollouts (:meth:`forward`, what ``learn`` calls) ignore it
            and sample from π_θ itself at temperature 1: PPO's ratio, A2C's gradient, TRPO's
            KL and the env's KL penalty all score a completion under π_θ, so it must be drawn
            from π_θ. Scoring rollouts under the tempered distribution instead would have to
            be repeated, identically, in every one of those places (and top-k / top-p make its
            support depend on θ). An audit measured the tempered and the raw log-probs of a
            completion up to 4.1 nats apart (issue 13).
        value_trunk: ``"shared"`` (default): the value head reads the policy LM's hidden state
            and its loss also trains the LM (one forward pass serves both). ``"detached"``: same
            features, but no value gradient reaches the LM. ``"separate"``: a deep copy of the
            LM's trunk feeds the value head (twice the parameters). Use ``"detached"`` or
            ``"separate"`` with TRPO, whose value step would otherwise move the actor's weights
            outside its trust region.
        freeze_layers: Freeze the embeddings and the bottom N transformer blocks (0 freezes
            nothing). With tied embeddings (GPT-2) the output projection is frozen with them.
            Not usable with TRPO, which differentiates every non-value parameter.
        lora: ``peft.LoraConfig`` fields (e.g. ``dict(r=8)``): wrap the LM in LoRA adapters so
            only they and the value head train (see :mod:`lmgym.agents.lora`; needs ``peft``).
            :meth:`reference_model` then gives the env a π_ref that shares the base weights.
            Not usable with TRPO, which differentiates every non-value parameter.
        attn_implementation: Attention kernel to load the LM with; TRPO's double backward needs
            ``"eager"`` on CPU (SDPA has no double backward there).
        trust_remote_code: Passed to ``from_pretrained``; off unless you trust the checkpoint.
        use_sde: Must be False (no gSDE for token ids); accepted because SB3 passes it.
        ortho_init: Must be False: orthogonal re-initialisation would erase pretrained weights.
        **kwargs: Other :class:`~stable_baselines3.common.policies.ActorCriticPolicy`
            arguments (``optimizer_class``, ``optimizer_kwargs``, ...).

    Example:
        >>> import gymnasium as gym, lmgym
        >>> from stable_baselines3 import PPO
        >>> from lmgym.agents import lm_policy_kwargs
        >>> env = gym.make("LMBandit-v0")
        >>> model = PPO(LMActorCriticPolicy, env, n_steps=8, batch_size=8,
        ...             policy_kwargs=lm_policy_kwargs(env))
        >>> _ = model.policy.attach_to(env)
        >>> _ = model.learn(8)
    """

    _base_kwargs: ClassVar[dict[str, Any]] = {"use_sde": False}


class MaskableLMActorCriticPolicy(LMPolicyMixin, MaskableActorCriticPolicy):  # type: ignore[misc]
    """:class:`LMActorCriticPolicy` for sb3-contrib's ``MaskablePPO`` on ``LMToken-v0``.

    ``MaskablePPO`` requires a ``MaskableActorCriticPolicy``; this is the same LM policy on that
    base. The env's ``action_masks()`` are applied to the next-token distribution, so masked
    tokens are never sampled. Takes the arguments of :class:`LMActorCriticPolicy`; the action
    space must be ``Discrete(V)``.

    Example:
        >>> import gymnasium as gym, lmgym
        >>> from sb3_contrib import MaskablePPO
        >>> from lmgym.agents import lm_policy_kwargs
        >>> env = gym.make("LMToken-v0")
        >>> model = MaskablePPO(MaskableLMActorCriticPolicy, env, n_steps=8, batch_size=8,
        ...                     policy_kwargs=lm_policy_kwargs(env))
        >>> _ = model.policy.attach_to(env)
        >>> _ = model.learn(8)
    """

    def __init__(
        self,
        observation_space: spaces.Space,
        action_space: spaces.Space,
        lr_schedule: Schedule,
        *args: Any,
        **kwargs: Any,
    ) -> None:
        if not isinstance(action_space, spaces.Discrete):
            raise TypeError(
                f"action_space={action_space} is not supported by MaskableLMActorCriticPolicy; "
                "expected Discrete(V) (LMToken-v0). Use LMActorCriticPolicy on LMBandit-v0."
            )
        super().__init__(observation_space, action_space, lr_schedule, *args, **kwargs)

    def _token_distribution(self, n: int) -> Distribution:
        return MaskableCategoricalDistribution(n)

    def forward(  # type: ignore[override]
        self,
        obs: torch.Tensor,
        deterministic: bool = False,
        action_masks: np.ndarray | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Sample next tokens (B,) among the allowed ones, with values (B, 1) and log-probs."""
        return self._token_forward(obs, deterministic, action_masks)

    def evaluate_actions(  # type: ignore[override]
        self,
        obs: torch.Tensor,
        actions: torch.Tensor,
        action_masks: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """Values, log-probs and entropies of ``actions`` under the masked distribution."""
        return self._token_evaluate(obs, actions, action_masks)

    def get_distribution(  # type: ignore[override]
        self, obs: PyTorchObs, action_masks: np.ndarray | None = None
    ) -> MaskableDistribution:
        """The masked next-token distribution."""
        assert isinstance(obs, torch.Tensor)
        distribution = self._token_dist(self._next_token(obs).logits, action_masks)
        assert isinstance(distribution, MaskableDistribution)
        return distribution
