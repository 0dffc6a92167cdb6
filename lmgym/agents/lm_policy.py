"""An SB3 actor-critic policy whose actor is a Hugging Face causal LM.

``PPO(LMActorCriticPolicy, env)`` trains the language model itself on ``LMBandit-v0`` or
``LMToken-v0``, the way ``PPO("MlpPolicy", env)`` trains an MLP: no fork or patch of
stable-baselines3, only its extension points (a policy subclass and a
:class:`~stable_baselines3.common.distributions.Distribution`).

What depends on the action space is the policy's head, chosen once at construction as SB3's
``make_proba_distribution`` chooses a distribution (:mod:`lmgym.agents.heads`). The action of the
bandit env is a whole completion, so the action distribution is autoregressive,
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
from sb3_contrib.common.maskable.distributions import MaskableDistribution
from sb3_contrib.common.maskable.policies import MaskableActorCriticPolicy
from stable_baselines3.common.distributions import Distribution
from stable_baselines3.common.policies import ActorCriticPolicy
from stable_baselines3.common.type_aliases import PyTorchObs, Schedule
from torch import nn
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from lmgym.agents.attach import attach_logprobs
from lmgym.agents.heads import ActionMasks, LMHead, make_head
from lmgym.agents.lm_policy_setup import (
    LogProbCache,
    check_spaces,
    check_vocab,
    freeze_bottom,
    load_lm,
    parameter_version,
    resolve_decoding,
    transformer_blocks,
)
from lmgym.agents.lora import AdapterDisabledReference, apply_lora, causal_lm, is_lora, merged_copy
from lmgym.agents.token_head import trunk_last_hidden
from lmgym.envs.sequence_reward import PolicyLogProbFn
from lmgym.envs.token_batch import TokenPolicyLogProbFn
from lmgym.models.device import resolve_device, resolve_dtype
from lmgym.models.generation import DecodingConfig

__all__ = [
    "LMActorCriticPolicy",
    "LMPolicyMixin",
    "MaskableLMActorCriticPolicy",
    "ValueTrunk",
    "enable_activation_checkpointing",
]

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
    _maskable: ClassVar[bool] = False
    """Whether the next-token head masks its categorical (``MaskablePPO``)."""

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
        gradient_checkpointing: bool = False,
        dtype: str | torch.dtype | None = "float32",
        use_sde: bool = False,
        ortho_init: bool = False,
        **kwargs: Any,
    ) -> None:
        check_spaces(observation_space, action_space)
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
        if not isinstance(gradient_checkpointing, bool):
            raise TypeError(
                f"gradient_checkpointing={gradient_checkpointing!r} is not a bool; expected True "
                "(recompute activations in the backward: less memory, more compute) or False."
            )
        resolved = resolve_decoding(decoding, action_space)
        # The device is the algorithm's, not known yet: "auto" and the checks assume the
        # best one present (SB3 moves the policy there after building it).
        weights_dtype = resolve_dtype(dtype, resolve_device("auto"), parameter="dtype")

        lm, tok = load_lm(model, tokenizer, attn_implementation, trust_remote_code)
        # The LM's own weights in ``dtype``; log-prob sums, entropies, values and losses stay
        # in float32 (the logits are cast before every log-softmax).
        nn.Module.to(lm, dtype=weights_dtype)  # in place (transformers' own .to is untyped)
        if gradient_checkpointing:
            enable_activation_checkpointing(lm)
        pad, eos = pad_token_id, eos_token_id
        if tok is not None:
            pad = tok.pad_token_id if pad is None else pad
            eos = tok.eos_token_id if eos is None else eos
        if pad is None or eos is None:
            raise ValueError(
                f"pad_token_id={pad!r} / eos_token_id={eos!r}: {type(self).__name__} needs both, "
                "and they must match the env's. Pass tokenizer=env.unwrapped.models.tokenizer (see "
                "lm_policy_kwargs(env)) or pad_token_id=... and eos_token_id=... ."
            )
        check_vocab(lm, observation_space, action_space)
        n_layers = len(transformer_blocks(lm))
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
        self.head: LMHead = make_head(
            action_space,
            decoding=resolved,
            pad_token_id=self.pad_token_id,
            eos_token_id=self.eos_token_id,
            maskable=self._maskable,
        )
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
            gradient_checkpointing=gradient_checkpointing,
            dtype=dtype,
        )
        self._logprob_cache: LogProbCache | None = None
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
        self.action_dist = self.head.action_dist
        if self.value_trunk_kind == "separate":
            # "value" in the name: TRPO skips parameters so named when it takes the actor's.
            self.value_trunk: nn.Module | None = copy.deepcopy(self.trunk).requires_grad_(True)
        else:
            self.value_trunk = None
        self.value_net = nn.Linear(int(causal_lm(self.lm).config.hidden_size), 1)
        if self.freeze_layers > 0:
            freeze_bottom(causal_lm(self.lm), self.freeze_layers)
        trainable = [p for p in self.parameters() if p.requires_grad]
        self.optimizer = self.optimizer_class(  # type: ignore[call-arg]
            trainable, lr=lr_schedule(1), **self.optimizer_kwargs
        )

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
        return self._act(obs, deterministic, None)

    def _predict(  # type: ignore[override]
        self,
        observation: PyTorchObs,
        deterministic: bool = False,
        action_masks: ActionMasks = None,
    ) -> torch.Tensor:
        """Actions for ``predict()``: on the bandit, sampled with ``decoding`` (evaluation)."""
        assert isinstance(observation, torch.Tensor)
        return self.head.predict(self.lm, observation, deterministic, action_masks)

    def evaluate_actions(  # type: ignore[override]
        self, obs: PyTorchObs, actions: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """Values (B, 1), log-probs (B,) and entropies (B,) of given actions.

        One forward pass gives all three (with ``value_trunk="shared"`` or ``"detached"``);
        gradients flow into the LM.
        """
        assert isinstance(obs, torch.Tensor)
        return self._evaluate(obs, actions, None)

    def evaluate_actions_per_token(
        self, obs: PyTorchObs, actions: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """Values (B, 1), per-token log-probs (B, T), their mask (B, T) and entropies (B,).

        The same single forward as :meth:`evaluate_actions`, before the log-probs are summed:
        ``(token_log_probs * token_mask).sum(1)`` is its log-prob. On ``LMBandit-v0`` the mask
        counts each completion's tokens up to and including the EOS that ends it (also when
        the pad id is the EOS id) and nothing after; T is the completion length. On
        ``LMToken-v0`` T = 1. Per-token PPO ratios and clipping (:class:`lmgym.algorithms.LMPPO`
        with ``ratio="token"``) and GRPO's per-token loss are built on it.

        Example:
            >>> import gymnasium as gym, lmgym
            >>> from stable_baselines3 import PPO
            >>> env = gym.make("LMBandit-v0")
            >>> policy = PPO(LMActorCriticPolicy, env).policy
            >>> obs = torch.as_tensor(env.reset(seed=0)[0]).unsqueeze(0)
            >>> actions = policy(obs)[0]
            >>> _, token_log_probs, token_mask, _ = policy.evaluate_actions_per_token(obs, actions)
            >>> token_log_probs.shape == token_mask.shape == actions.shape
            True
        """
        assert isinstance(obs, torch.Tensor)
        evaluation = self.head.evaluate(self.lm, obs, actions, None)
        values = self._values(obs, evaluation.hidden)
        return values, evaluation.logprobs, evaluation.mask, evaluation.entropy

    def action_token_mask(self, actions: torch.Tensor) -> torch.Tensor:
        """The (B, T) mask :meth:`evaluate_actions_per_token` returns, from the actions alone.

        What an update needs to weigh tokens before any forward (e.g. the token count of a
        mini-batch that runs as several micro-batches).
        """
        return self.head.action_token_mask(actions)

    def get_distribution(self, obs: PyTorchObs) -> Distribution:  # type: ignore[override]
        """The action distribution conditioned on ``obs``."""
        assert isinstance(obs, torch.Tensor)
        return self.head.distribution(self.lm, obs)

    def predict_values(self, obs: PyTorchObs) -> torch.Tensor:
        """Values (B, 1) of the observations."""
        assert isinstance(obs, torch.Tensor)
        return self._values(obs, None)

    def _act(
        self, obs: torch.Tensor, deterministic: bool, action_masks: ActionMasks
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        rollout = self.head.act(self.lm, obs, deterministic, action_masks)
        self._logprob_cache = LogProbCache.build(
            rollout.kl_rows, rollout.kl_logprobs, self._lm_version()
        )
        return rollout.actions, self._values(obs, rollout.hidden), rollout.log_prob

    def _evaluate(
        self, obs: torch.Tensor, actions: torch.Tensor, action_masks: ActionMasks
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        evaluation = self.head.evaluate(self.lm, obs, actions, action_masks)
        return self._values(obs, evaluation.hidden), evaluation.log_prob, evaluation.entropy

    def _values(self, obs: torch.Tensor, hidden: torch.Tensor | None) -> torch.Tensor:
        # ``hidden``: the LM's feature if the head's forward already computed it (None: not).
        if self.value_trunk is not None:
            # Padding is obs == pad; every row's last real token is read, as the head reads it.
            hidden = trunk_last_hidden(self.value_trunk, obs, pad_token_id=self.pad_token_id)
        elif hidden is None:
            hidden = self.head.features(self.lm, obs)
        if self.value_trunk_kind == "detached":
            hidden = hidden.detach()
        return self.value_net(hidden.float())  # (B, 1)

    # ----------------------------------------------------------------------------- lmgym API

    def attach_to(
        self, env: Any, *, full_distribution: bool = False
    ) -> PolicyLogProbFn | TokenPolicyLogProbFn:
        """Use this policy as π_θ of ``env``'s KL penalty; returns the attached function.

        ``env`` may be a Gymnasium env, lmgym's vector env, or SB3's ``DummyVecEnv`` /
        :class:`~lmgym.agents.SB3VecEnv` around them. What the policy just acted on is served
        from a cache of the log-probs its forward pass computed, as long as the LM's parameters
        have not changed since; anything else gets one forward (see :meth:`kl_logprobs`).
        On ``LMBandit-v0``, ``full_distribution=True`` attaches :meth:`full_logprobs`, the
        (B, T, V) log-distributions that ``kl_estimator="full"`` needs (always a forward pass);
        on ``LMToken-v0`` the (B, V) next-token log-distribution is always returned, so every
        estimator works.

        Example:
            >>> import gymnasium as gym, lmgym
            >>> from stable_baselines3 import PPO
            >>> from lmgym.agents import lm_policy_kwargs
            >>> env = gym.make("LMBandit-v0")
            >>> model = PPO(LMActorCriticPolicy, env, policy_kwargs=lm_policy_kwargs(env))
            >>> _ = model.policy.attach_to(env)
        """
        fn = self.full_logprobs if full_distribution else self.kl_logprobs
        attach_logprobs(env, fn)
        return fn

    def kl_logprobs(
        self, observations: np.ndarray, actions: np.ndarray | None = None, *, full: bool = False
    ) -> torch.Tensor:
        """The log-probs of π_θ that the env's KL term asks for, without gradients.

        ``LMBandit-v0`` passes prompts (B, P) and completions (B, T) and gets (B, T) per-token
        log-probs, or with ``full=True`` (B, T, V) log-distributions. ``LMToken-v0`` passes
        observations (B, L) and gets the (B, V) next-token log-distribution: the LM's own, also
        under ``MaskablePPO`` (the KL penalty measures how far the LM itself moved from π_ref).
        Rows that :meth:`forward` just acted on come from its cache (counted in
        ``logprob_cache_hits``); others get one forward pass (``logprob_cache_misses``).
        """
        observations = np.asarray(observations)
        actions = None if actions is None else np.asarray(actions)
        rows = self.head.kl_rows(observations, actions, full=full)
        if rows is not None:
            cached = self._cached_logprobs(rows)
            if cached is not None:
                self.logprob_cache_hits += 1
                return cached
            self.logprob_cache_misses += 1
        obs = torch.as_tensor(observations, device=self.device)
        acts = None if actions is None else torch.as_tensor(actions, device=self.device)
        return self.head.kl_logprobs(self.lm, obs, acts, full=full)

    def full_logprobs(
        self, observations: np.ndarray, actions: np.ndarray | None = None
    ) -> torch.Tensor:
        """:meth:`kl_logprobs` with ``full=True``: what ``kl_estimator="full"`` needs."""
        return self.kl_logprobs(observations, actions, full=True)

    def _lm_version(self) -> tuple[int, ...]:
        # What the cached log-probs depend on: the LM's parameters (not the value head).
        return parameter_version(self.lm)

    def _cached_logprobs(self, rows: np.ndarray) -> torch.Tensor | None:
        if self._logprob_cache is None:
            return None
        return self._logprob_cache.lookup(rows, self._lm_version())

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


def enable_activation_checkpointing(lm: PreTrainedModel) -> None:
    """Recompute ``lm``'s block activations in the backward instead of keeping them.

    Non-reentrant checkpointing, which also works when the inputs need no gradient (LoRA,
    ``freeze_layers``). transformers checkpoints only in train mode, so rollouts and evaluation
    (SB3 puts the policy in eval mode for them) run exactly as without it.
    """
    kwargs = {"use_reentrant": False}
    # transformers 5.24 renamed gradient_checkpointing_enable (deprecated, removed in 6) to
    # activation_checkpointing_enable; earlier 5.x releases have only the old name.
    if hasattr(lm, "activation_checkpointing_enable"):
        lm.activation_checkpointing_enable(activation_checkpointing_kwargs=kwargs)
    else:
        lm.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)


class LMActorCriticPolicy(LMPolicyMixin, ActorCriticPolicy):
    """Actor-critic policy for ``LMBandit-v0`` and ``LMToken-v0`` built on a Hugging Face LM.

    The actor is the LM. On ``LMBandit-v0`` (``MultiDiscrete`` action) the whole completion is
    one action (:class:`~lmgym.agents.heads.CompletionHead`) and the critic is a linear head on
    the last hidden state at the last real prompt token. On ``LMToken-v0`` (``Discrete(V)``
    action) the action is the next token, drawn from SB3's ``CategoricalDistribution`` over the
    LM's logits at the observation's last real token, and the critic reads the hidden state
    there (:class:`~lmgym.agents.heads.NextTokenHead`). The head is chosen once, from the
    action space, and is the policy's ``head``. Use it as any SB3 policy::

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
        gradient_checkpointing: Recompute the LM's activations in the backward instead of
            keeping them (transformers' ``gradient_checkpointing_enable``, non-reentrant):
            less memory for the update, about one more forward of compute. Only the update
            (train mode) checkpoints; rollouts and evaluation run in eval mode without it.
        dtype: The LM's own weights: ``"float32"`` (default), ``"bfloat16"``, ``"float16"``
            (not on the CPU), or ``"auto"`` (bfloat16 on a GPU that has it, else float32);
            see :func:`lmgym.models.device.resolve_dtype`. Log-prob sums, entropies, the
            value head and the losses stay in float32.
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

    _maskable: ClassVar[bool] = True

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

    def forward(  # type: ignore[override]
        self,
        obs: torch.Tensor,
        deterministic: bool = False,
        action_masks: np.ndarray | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Sample next tokens (B,) among the allowed ones, with values (B, 1) and log-probs."""
        return self._act(obs, deterministic, action_masks)

    def evaluate_actions(  # type: ignore[override]
        self,
        obs: torch.Tensor,
        actions: torch.Tensor,
        action_masks: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """Values, log-probs and entropies of ``actions`` under the masked distribution."""
        return self._evaluate(obs, actions, action_masks)

    def get_distribution(  # type: ignore[override]
        self, obs: PyTorchObs, action_masks: np.ndarray | None = None
    ) -> MaskableDistribution:
        """The masked next-token distribution."""
        assert isinstance(obs, torch.Tensor)
        distribution = self.head.distribution(self.lm, obs, action_masks)
        assert isinstance(distribution, MaskableDistribution)
        return distribution
