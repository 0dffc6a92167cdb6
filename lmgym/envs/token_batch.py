"""The batched core of ``LMToken-v0``: token-by-token episodes of B envs, stepped together.

The single env (:class:`~lmgym.envs.token.LMTokenEnv`) is one row of a :class:`TokenBatch` and
the vector env (:class:`~lmgym.envs.token_vector.LMTokenVectorEnv`) N rows, so both compute the
same numbers by construction. A step runs the attached policy's log-prob function once, the
reference model once (:mod:`lmgym.envs.ref_cache`) and the reward function once over the rows
whose episode ended.

An episode ends when its text ends (EOS, or the pad id, which is no text token) or at the length
limit ``max_new_tokens``. Both are ``terminated``: at the limit the completion is scored and
nothing follows, so no value may be bootstrapped past it (a next value of 0, as in TRL); the
step's ``length_limited`` says which ending it was. ``truncated`` is left for cuts outside the
task (a wrapper's time limit).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from lmgym.envs.lm_env_parts import LMEnvParts
from lmgym.envs.ref_cache import ReferenceState
from lmgym.envs.sequence_reward import (
    check_finite_kl,
    combine_reward,
    policy_kl_per_token,
    policy_output_tensor,
)
from lmgym.envs.step_info import KLForm, StepRecord
from lmgym.rewards.kl import vocab_log_softmax

__all__ = ["TokenBatch", "TokenPolicyLogProbFn", "TokenStepBatch"]

TokenPolicyLogProbFn = Callable[[np.ndarray], torch.Tensor]
"""``f(observations) -> log π_θ(· | observation)`` for a batch: observations are (B, L) token-env
observations (the state each action was taken in), and the result is (B, V) next-token
log-probabilities over the tokenizer's tokens (wider outputs, from an embedding padded past the
tokenizer, are cut to those V columns and renormalised). Attach one with
``env.unwrapped.attach_policy(f)`` or :func:`lmgym.agents.attach_sb3`."""


@dataclass
class TokenStepBatch(StepRecord):
    """What one step of a :class:`TokenBatch` produced; see :class:`StepRecord` (arrays (B,)).

    ``kl`` is this step's k_t, ``reward_model`` is r_φ(x, y) for the rows whose episode ended
    at this step (0 elsewhere), ``eos`` says whether this step's token is EOS.

    Attributes:
        obs: (B, L) observations after the step's tokens were appended (for an ended episode,
            its final observation).
        episode_kl: Σ k_t over the episode so far (this step included).
        terminated: The episode ended: the token ended the text (EOS, or the pad id, which is
            not a text token), or ``max_new_tokens`` tokens were written.
        truncated: Always False here (the length limit is part of the task); kept for the
            Gymnasium step API.
    """

    obs: np.ndarray
    episode_kl: np.ndarray
    terminated: np.ndarray
    truncated: np.ndarray

    @property
    def done(self) -> np.ndarray:
        """Rows whose episode ended at this step."""
        return self.terminated | self.truncated

    @property
    def scored(self) -> np.ndarray:
        """Rows whose completion the reward function scored: the ended episodes."""
        return self.done

    def columns(self) -> dict[str, np.ndarray]:
        """The ``info`` keys as (B,) arrays, with ``episode_kl`` besides the shared ones."""
        return {**super().columns(), "episode_kl": self.episode_kl.copy()}

    def _kl_note(self, index: int) -> str:
        return f"; episode kl so far {self.episode_kl[index]:.4f}"


class TokenBatch:
    """The token-by-token episodes of ``num_rows`` envs, stepped together.

    Holds the observations, the reference model's incremental state
    (:class:`~lmgym.envs.ref_cache.ReferenceState`) and the per-episode KL sums. A step runs the
    attached policy (if any) once, the reference model once (one incremental forward over all
    rows) and the reward function once over the rows whose episode ended.

    Args:
        parts: The env's parts: its models (the reference LM, the tokenizer), its rewarder
            (reward function, KL estimator and β controller), the prompt block width P of the
            observation and the episode length limit T.
        num_rows: Number of envs.
        reference_cache: Keep the reference model's KV cache across steps (``False`` re-encodes
            the prefix every step: same results, quadratic cost).

    Example:
        >>> import gymnasium as gym, lmgym
        >>> env = gym.make("LMToken-v0").unwrapped  # its parts, and a batch of 2 rows
        >>> batch = TokenBatch(env.parts, num_rows=2)
        >>> text, ids = env.prompt_source.draw(np.random.default_rng(0))
        >>> prompt = env.prompt_source.pad(ids, env.models.pad_token_id)
        >>> batch.start(np.arange(2), [text, text], np.stack([prompt, prompt]))
        >>> result = batch.step(np.array([env.models.eos_token_id, 5]))
        >>> result.terminated.tolist(), result.reward.shape
        ([True, False], (2,))
    """

    def __init__(
        self,
        parts: LMEnvParts,
        *,
        num_rows: int,
        reference_cache: bool = True,
    ) -> None:
        models = self.models = parts.models
        self.rewarder = parts.rewarder
        max_prompt_tokens = self.max_prompt_tokens = parts.max_prompt_tokens
        max_new_tokens = self.max_new_tokens = parts.max_new_tokens
        self.num_rows = num_rows
        self.policy: TokenPolicyLogProbFn | None = None
        length = max_prompt_tokens + max_new_tokens
        self.obs = np.full((num_rows, length), models.pad_token_id, dtype=np.int64)  # (B, L)
        self.prompts = [""] * num_rows
        self.lengths = np.zeros(num_rows, dtype=np.int64)  # tokens generated per row
        self.episode_kl = np.zeros(num_rows, dtype=np.float64)
        self.reference = ReferenceState(
            models.ref_model,
            num_rows,
            max_prompt_tokens,
            max_new_tokens,
            pad_token_id=models.pad_token_id,
            use_cache=reference_cache,
            minibatch_size=parts.minibatch_size,
        )

    def start(self, rows: np.ndarray, texts: list[str], prompt_ids: np.ndarray) -> None:
        """Start new episodes in ``rows`` (R,) from prompts (R texts, (R, P) right-padded ids).

        The reference model encodes the prompts first; the rows change only once it has.
        """
        ids = torch.from_numpy(np.ascontiguousarray(prompt_ids, dtype=np.int64))
        self.reference.prefill(
            torch.from_numpy(np.asarray(rows, dtype=np.int64)),
            ids,
            (ids != self.models.pad_token_id).long(),
        )
        self.obs[rows] = self.models.pad_token_id
        self.obs[rows, : self.max_prompt_tokens] = prompt_ids
        for row, text in zip(rows.tolist(), texts, strict=True):
            self.prompts[row] = text
        self.lengths[rows] = 0
        self.episode_kl[rows] = 0.0

    def ends(self, actions: np.ndarray) -> np.ndarray:
        """Which rows ``actions`` (B,) would end: known before the step runs, (B,) bool.

        The text ends at EOS or at the pad id (no text token). The length limit ends the
        episode too: the completion is scored there and nothing follows, so it is terminated,
        not truncated (bootstrapping V(s_T) on top of r_φ would pay a cut completion twice).
        """
        return self._text_ends(actions) | (self.lengths + 1 >= self.max_new_tokens)

    def _text_ends(self, actions: np.ndarray) -> np.ndarray:
        return (actions == self.models.eos_token_id) | (actions == self.models.pad_token_id)

    def step(self, actions: np.ndarray) -> TokenStepBatch:
        """Append ``actions`` (B,) valid token ids to every row and score them.

        Rows whose episode ends are left as they are: call :meth:`start` on them next.
        """
        models, n_prompt = self.models, self.max_prompt_tokens
        kl_form: KLForm = "cross_entropy" if self.policy is None else "policy"
        self.rewarder.check_kl_form(kl_form)  # before anything changes
        rows = np.arange(self.num_rows)
        assert self.reference.next_logits is not None, "start() every row before step()"
        tokens = torch.from_numpy(actions).to(self.reference.next_logits.device)
        # One support for π_ref and π_θ: the tokenizer's tokens, even when the model's embedding
        # has more rows (they are no tokens, and the policy can never pick them).
        ref_logits = self.reference.next_logits[:, : models.vocab_size]  # (B, V)
        ref_logp = vocab_log_softmax(ref_logits, models.vocab_size).gather(1, tokens[:, None])
        if self.policy is None:
            per_token = -ref_logp[:, 0]  # a cross-entropy (see KLForm)
        else:
            per_token = self._policy_kl(tokens, ref_logp, ref_logits)
        kl = per_token.detach().double().cpu().numpy()
        check_finite_kl(kl, actions)

        # Compute first, commit last: nothing changes until the reward function, the reward's
        # own check and the reference's next forward have run, so a step that raises can be
        # retried with the env as it was.
        obs = self.obs.copy()
        obs[rows, n_prompt + self.lengths] = actions
        lengths = self.lengths + 1
        episode_kl = self.episode_kl + kl
        eos = actions == models.eos_token_id
        terminated = self.ends(actions)
        length_limited = terminated & ~self._text_ends(actions)
        truncated = np.zeros_like(terminated)

        completion_ids = [
            row[n_prompt : n_prompt + n].tolist()
            for row, n in zip(obs, lengths.tolist(), strict=True)
        ]
        completions = models.tokenizer.batch_decode(completion_ids, skip_special_tokens=True)
        reward_model = np.zeros(self.num_rows, dtype=np.float64)
        parts: dict[str, np.ndarray] = {}
        finished = np.flatnonzero(terminated)
        if finished.size:
            prompt_blocks = obs[finished, :n_prompt]
            _, scores, done_parts = self.rewarder.score_texts(
                [self.prompts[i] for i in finished],
                [block[block != models.pad_token_id].tolist() for block in prompt_blocks],
                [completion_ids[i] for i in finished],
            )
            reward_model[finished] = scores
            for name, values in done_parts.items():
                parts[name] = np.full(self.num_rows, np.nan)
                parts[name][finished] = values
        kl_coef = float(self.rewarder.controller.value)
        reward = combine_reward(reward_model, kl, kl_coef)
        if finished.size < self.num_rows:  # the rows that go on need their next logits
            self.reference.advance(tokens.cpu())
        self.obs, self.lengths, self.episode_kl = obs, lengths, episode_kl
        result = TokenStepBatch(
            obs=obs.copy(),
            reward=reward,
            reward_model=reward_model,
            kl=kl,
            kl_coef=kl_coef,
            kl_form=kl_form,
            episode_kl=episode_kl.copy(),
            prompts=list(self.prompts),
            completions=completions,
            completion_lengths=lengths.copy(),
            eos=eos,
            terminated=terminated,
            truncated=truncated,
            length_limited=length_limited,
            reward_parts=parts,
        )
        # Ziegler et al.'s controller targets the KL summed over a sequence; the rewarder
        # updates it once per batch of finished episodes, from their mean.
        self.rewarder.record_episode_kls(self.episode_kl[finished])
        return result

    def _policy_kl(
        self, tokens: torch.Tensor, ref_logp: torch.Tensor, ref_logits: torch.Tensor
    ) -> torch.Tensor:
        assert self.policy is not None
        observations = self.obs.copy()  # the states the actions were taken in
        policy_out = policy_output_tensor(
            self.policy(observations),
            expected="(B, V) next-token log-probs, one row per observation",
            protocol="lmgym.envs.token_batch.TokenPolicyLogProbFn",
        )
        expected = (self.num_rows, self.models.vocab_size)
        if (
            policy_out.ndim != 2
            or policy_out.shape[0] != expected[0]
            or (policy_out.shape[1] < expected[1])
        ):
            raise ValueError(
                f"the attached policy returned shape {tuple(policy_out.shape)}; expected "
                f"{expected}: next-token log-probs over the tokenizer's tokens for each "
                "observation (see lmgym.envs.token_batch.TokenPolicyLogProbFn)."
            )
        return policy_kl_per_token(
            self.rewarder.kl_estimator,
            policy_out.to(ref_logp.device)[:, None, :],
            ref_logp,
            ref_logits[:, None, :],
            tokens[:, None],
            vocab_size=self.models.vocab_size,
            what="(batch, 1)",
        )[:, 0]
