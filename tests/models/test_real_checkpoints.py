"""The quirks of real checkpoints, on tiny models built from configs (Llama, Qwen2, GPT-2).

Each test builds what a hub checkpoint would bring: a BPE tokenizer trained here, no pad token
(so pad == EOS), a tokenizer that adds BOS, an embedding padded past the vocabulary, tied
embeddings, rotary positions that break if left padding is wrong, and a 50k vocabulary.
"""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import (
    GPT2Config,
    GPT2LMHeadModel,
    LlamaConfig,
    LlamaForCausalLM,
    PreTrainedModel,
    PreTrainedTokenizerFast,
    Qwen2Config,
    Qwen2ForCausalLM,
)

import lmgym  # noqa: F401  (registers the envs)
from lmgym.models.generation import DecodingConfig, generate
from lmgym.models.loading import load_model
from lmgym.models.scoring import score_completions

CORPUS = [
    "the food was great and the staff were friendly .",
    "the soup was awful but the service was good .",
    "i loved it , the pizza was very good .",
    "the staff were rude and the food was bad .",
] * 8
PROMPTS = ["the food was", "i thought the soup", "the staff were very"]


def train_bpe_tokenizer(vocab_size: int = 300) -> PreTrainedTokenizerFast:
    """A byte-level BPE like Llama's or Qwen's: adds <s> (BOS), ends with </s>, has no pad."""
    core = Tokenizer(models.BPE())
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    core.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=["<s>", "</s>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    core.train_from_iterator(CORPUS, trainer)
    core.post_processor = processors.TemplateProcessing(
        single="<s> $A", special_tokens=[("<s>", core.token_to_id("<s>"))]
    )
    return PreTrainedTokenizerFast(tokenizer_object=core, bos_token="<s>", eos_token="</s>")


TINY_DECODER = dict(  # the sizes every tiny Llama/Qwen2 here shares
    hidden_size=32,
    intermediate_size=64,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
    max_position_embeddings=64,
)


def llama(
    tokenizer: PreTrainedTokenizerFast, *, extra_rows: int = 0, tied: bool = False
) -> LlamaForCausalLM:
    """A tiny Llama with no pad token id (as Llama checkpoints ship)."""
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=len(tokenizer) + extra_rows,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=None,
        tie_word_embeddings=tied,
        **TINY_DECODER,
    )
    return LlamaForCausalLM(config)


def qwen2(tokenizer: PreTrainedTokenizerFast) -> Qwen2ForCausalLM:
    """A tiny Qwen2 with tied embeddings (as the small Qwen checkpoints ship)."""
    torch.manual_seed(0)
    config = Qwen2Config(
        vocab_size=len(tokenizer),
        eos_token_id=tokenizer.eos_token_id,
        tie_word_embeddings=True,
        **TINY_DECODER,
    )
    return Qwen2ForCausalLM(config)


def manual_logprobs(
    model: PreTrainedModel, prompt: list[int], completion: list[int]
) -> torch.Tensor:
    """log π(y_t | x, y_<t) of one unpadded sequence: the oracle, with no lmgym code."""
    ids = torch.tensor([prompt + completion])
    with torch.no_grad():
        logits = model(ids).logits[0, len(prompt) - 1 : -1].float()
    return torch.log_softmax(logits, -1).gather(1, torch.tensor(completion)[:, None])[:, 0]


def test_no_pad_token_becomes_eos_and_the_ending_eos_still_counts() -> None:
    tokenizer = train_bpe_tokenizer()
    assert tokenizer.pad_token is None
    model, tokenizer = load_model(llama(tokenizer), tokenizer)
    eos = tokenizer.eos_token_id
    assert tokenizer.pad_token_id == eos  # pad == EOS, as on GPT-2 and Llama checkpoints
    env = gym.make(
        "LMBandit-v0",
        model=model,
        tokenizer=tokenizer,
        prompts=["the food was"],
        max_new_tokens=6,
        kl_coef=0.1,
        reward_fn=lambda completion: 1.0,
    )
    obs, _ = env.reset(seed=0)
    words = tokenizer.encode(" great and", add_special_tokens=False)
    action = np.array([*words, eos] + [eos] * (6 - len(words) - 1))
    _, reward, terminated, _, info = env.step(action)
    prompt = tokenizer.encode("the food was")
    oracle = manual_logprobs(model, prompt, [*words, eos])
    # No policy attached: the env pays −log π_ref(y) summed up to and including the EOS.
    assert info["completion_length"] == len(words) + 1 and info["eos"] and terminated
    assert info["kl"] == pytest.approx(float(-oracle.sum()), abs=1e-4)
    assert reward == pytest.approx(1.0 - 0.1 * info["kl"], abs=1e-5)
    # What follows the EOS is padding: other tokens there change nothing.
    env.reset(seed=0)
    other = action.copy()
    other[len(words) + 1 :] = words[0]
    _, reward_other, *_, info_other = env.step(other)
    assert info_other["kl"] == pytest.approx(info["kl"], abs=1e-6)
    assert reward_other == pytest.approx(reward, abs=1e-6)
    assert obs[0] == tokenizer.bos_token_id  # the tokenizer adds BOS and the env keeps it


def test_generation_logprobs_include_the_eos_when_pad_is_eos() -> None:
    tokenizer = train_bpe_tokenizer()
    model, tokenizer = load_model(llama(tokenizer), tokenizer)
    eos = tokenizer.eos_token_id
    prompt = torch.tensor([tokenizer.encode("the food was")])
    torch.manual_seed(0)
    # A bias on EOS makes the sample end early, so positions after it are padding (== EOS).
    with torch.no_grad():
        model.lm_head.weight[eos] += 3.0 * model.model.norm.weight
    out = generate(
        model,
        prompt,
        torch.ones_like(prompt),
        DecodingConfig(max_new_tokens=8),
        eos_token_id=eos,
        pad_token_id=tokenizer.pad_token_id,
    )
    length = int(out.mask.sum())
    assert length < 8 and out.completion_ids[0, length - 1] == eos
    sampled = out.completion_ids[0, :length].tolist()
    oracle = manual_logprobs(model, prompt[0].tolist(), sampled)
    torch.testing.assert_close(out.logprobs[0, :length], oracle, atol=1e-4, rtol=0)
    assert out.logprobs[0, length - 1] != 0  # the EOS log-prob is kept, not zeroed
    assert torch.all(out.logprobs[0, length:] == 0)


@pytest.mark.parametrize("build", [llama, qwen2], ids=["llama", "qwen2"])
def test_left_padded_batch_generation_equals_one_at_a_time(build) -> None:
    tokenizer = train_bpe_tokenizer()
    model, tokenizer = load_model(build(tokenizer), tokenizer)
    eos, pad = tokenizer.eos_token_id, tokenizer.pad_token_id
    encoded = [tokenizer.encode(p) for p in PROMPTS]
    width = max(map(len, encoded))
    # Right-padded, as the env's observations are; generate() moves them to the left.
    ids = torch.tensor([e + [pad] * (width - len(e)) for e in encoded])
    mask = torch.tensor([[1] * len(e) + [0] * (width - len(e)) for e in encoded])
    greedy = DecodingConfig(max_new_tokens=6, do_sample=False)
    batch = generate(model, ids, mask, greedy, eos_token_id=eos, pad_token_id=pad)
    for row, prompt in enumerate(encoded):
        alone = generate(
            model,
            torch.tensor([prompt]),
            torch.ones(1, len(prompt), dtype=torch.long),
            greedy,
            eos_token_id=eos,
            pad_token_id=pad,
        )
        assert batch.completion_ids[row].tolist() == alone.completion_ids[0].tolist()
        torch.testing.assert_close(batch.logprobs[row], alone.logprobs[0], atol=1e-4, rtol=0)
        # Teacher-forced scoring of the batch agrees with sampling's log-probs.
    scored = score_completions(model, ids, mask, batch.completion_ids, batch.mask, pad_token_id=pad)
    torch.testing.assert_close(scored.logprobs, batch.logprobs, atol=1e-4, rtol=0)


def test_embedding_padded_past_the_vocabulary() -> None:
    tokenizer = train_bpe_tokenizer()
    model, tokenizer = load_model(llama(tokenizer, extra_rows=13), tokenizer)
    assert model.get_input_embeddings().weight.shape[0] == len(tokenizer) + 13
    env = gym.make(
        "LMBandit-v0", model=model, tokenizer=tokenizer, prompts=PROMPTS, max_new_tokens=4
    )
    # Actions are tokens, not embedding rows: the padded rows are never a legal action.
    assert env.action_space.nvec.tolist() == [len(tokenizer)] * 4
    env.reset(seed=0)
    with pytest.raises(ValueError, match="action"):
        env.step(np.full(4, len(tokenizer) + 1))
    _, reward, *_, info = env.step(env.action_space.sample())
    assert np.isfinite(reward) and np.isfinite(info["kl"])


def test_tied_embeddings_stay_tied_and_the_reference_does_not_move() -> None:
    tokenizer = train_bpe_tokenizer()
    model, tokenizer = load_model(llama(tokenizer, tied=True), tokenizer)
    assert model.get_output_embeddings().weight is model.get_input_embeddings().weight
    env = gym.make(
        "LMBandit-v0", model=model, tokenizer=tokenizer, prompts=["the food was"], max_new_tokens=4
    )
    action = np.array(tokenizer.encode(" great and the", add_special_tokens=False)[:4])
    action = np.pad(action, (0, 4 - len(action)), constant_values=tokenizer.eos_token_id)
    env.reset(seed=0)
    kl_before = env.step(action)[-1]["kl"]
    with torch.no_grad():  # training the policy's (tied) embedding must not move the reference
        model.get_input_embeddings().weight.mul_(0.5)
    env.reset(seed=0)
    assert env.step(action)[-1]["kl"] == pytest.approx(kl_before, abs=1e-6)


def test_a_50k_vocabulary() -> None:
    words = [f"w{i}" for i in range(50_253)]
    vocab = {tok: i for i, tok in enumerate(["<pad>", "<bos>", "<eos>", "<unk>", *words])}
    core = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    core.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=core, pad_token="<pad>", bos_token="<bos>", eos_token="<eos>",
        unk_token="<unk>",
    )  # fmt: skip
    assert len(tokenizer) == 50_257
    torch.manual_seed(0)
    gpt2 = GPT2LMHeadModel(
        GPT2Config(
            vocab_size=50_257,
            n_positions=32,
            n_embd=16,
            n_layer=1,
            n_head=2,
            eos_token_id=2,
            pad_token_id=0,
            bos_token_id=1,
        )  # fmt: skip
    )
    model, tokenizer = load_model(gpt2, tokenizer)
    env = gym.make(
        "LMBandit-v0", model=model, tokenizer=tokenizer, prompts=["w1 w2 w3"], max_new_tokens=5
    )
    obs, _ = env.reset(seed=0)
    assert env.action_space.nvec.tolist() == [50_257] * 5
    action = np.array([49_000, 50_256, 7, 2, 0])
    _, reward, *_, info = env.step(action)
    oracle = manual_logprobs(model, tokenizer.encode("w1 w2 w3"), [49_000, 50_256, 7, 2])
    assert info["completion_length"] == 4
    assert info["kl"] == pytest.approx(float(-oracle.sum()), abs=1e-3)


def test_lm_policy_never_samples_a_padded_embedding_row() -> None:
    from lmgym.agents import LMActorCriticPolicy, lm_policy_kwargs

    tokenizer = train_bpe_tokenizer()
    model, tokenizer = load_model(llama(tokenizer, extra_rows=13), tokenizer)
    with torch.no_grad():  # make the 13 padded rows the most likely "tokens" by far
        model.lm_head.weight[len(tokenizer) :] = 5.0 * model.model.norm.weight
    env = gym.make(
        "LMBandit-v0", model=model, tokenizer=tokenizer, prompts=PROMPTS, max_new_tokens=4
    )
    policy = LMActorCriticPolicy(
        env.observation_space, env.action_space, lambda _: 1e-3, **lm_policy_kwargs(env)
    )
    obs, _ = env.reset(seed=0)
    torch.manual_seed(0)
    batch = torch.as_tensor(np.repeat(obs[None], 8, axis=0))
    actions, _, logprob = policy(batch)
    assert int(actions.max()) < len(tokenizer)  # a real token, so the env takes it
    # The log-probs are over the real tokens, as the env's are: the sum recomputed by scoring
    # with the vocabulary cut agrees with the one from sampling.
    _, again, _ = policy.evaluate_actions(batch, actions)
    torch.testing.assert_close(again, logprob, atol=1e-4, rtol=0)
    _, reward, *_ = env.step(actions[0].numpy())
    assert np.isfinite(reward)


CHAT_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


LLAMA2_CHAT_TEMPLATE = (
    "{{ bos_token }}{% for m in messages %}{% if m['role'] == 'user' %}[INST] {{ m['content'] }}"
    " [/INST]{% elif m['role'] == 'system' %}<<SYS>> {{ m['content'] }} <</SYS>> {% endif %}"
    "{% endfor %}"
)


def chat_tokenizer() -> PreTrainedTokenizerFast:
    """A Qwen-style chat tokenizer: EOS is the end-of-turn token, and a pad token of its own."""
    tokenizer = train_bpe_tokenizer()
    specials = ["<|im_start|>", "<|im_end|>", "<|endoftext|>"]
    tokenizer.add_special_tokens({"additional_special_tokens": specials})
    tokenizer.eos_token = "<|im_end|>"
    tokenizer.pad_token = "<|endoftext|>"
    tokenizer.chat_template = CHAT_TEMPLATE
    return tokenizer


def llama2_chat_tokenizer() -> PreTrainedTokenizerFast:
    """A Llama-2-style chat tokenizer: no pad token (so pad == EOS), EOS ends the turn."""
    tokenizer = train_bpe_tokenizer()
    tokenizer.add_special_tokens({"additional_special_tokens": ["[INST]", "[/INST]"]})
    tokenizer.chat_template = LLAMA2_CHAT_TEMPLATE
    return tokenizer


def chat(text: str) -> list[dict[str, str]]:
    return [{"role": "system", "content": "be kind"}, {"role": "user", "content": text}]


def test_chat_prompts_use_the_template_and_report_the_users_text() -> None:
    tokenizer = chat_tokenizer()
    model, tokenizer = load_model(llama(tokenizer), tokenizer)
    seen: list[list[str]] = []

    def reward(prompts: list[str], completions: list[str]) -> list[float]:
        seen.append(list(prompts))
        return [0.0] * len(prompts)

    env = gym.make(
        "LMBandit-v0",
        model=model,
        tokenizer=tokenizer,
        prompts=[chat("the food was")],
        reward_fn=reward,
        max_prompt_tokens=48,
        max_new_tokens=4,
    )
    obs, info = env.reset(seed=0)
    rendered = tokenizer.apply_chat_template(
        chat("the food was"), add_generation_prompt=True, tokenize=False
    )
    assert rendered.endswith("<|im_start|>assistant\n")
    expected = tokenizer(rendered, add_special_tokens=False)["input_ids"]
    assert obs[: len(expected)].tolist() == expected  # the template, with its generation prompt
    assert info["prompt"] == "the food was"  # the user's text, no markup
    end_of_turn = tokenizer.convert_tokens_to_ids("<|im_end|>")
    _, _, _, _, info = env.step(np.array([5, end_of_turn, 6, 7]))
    assert info["completion_length"] == 2 and info["eos"]  # the end-of-turn token ends it
    assert seen == [["the food was"]]
    # A forced chat prompt works the same way.
    _, info = env.reset(options={"prompt": chat("the staff were")})
    assert info["prompt"] == "the staff were"


def test_chat_prompts_need_a_chat_template_and_well_formed_messages() -> None:
    tokenizer = train_bpe_tokenizer()
    model, tokenizer = load_model(llama(tokenizer), tokenizer)
    with pytest.raises(ValueError, match=r"prompts\[0\] is a chat, but the tokenizer .* no chat "):
        gym.make("LMBandit-v0", model=model, tokenizer=tokenizer, prompts=[chat("hi")])
    tokenizer = chat_tokenizer()
    model, tokenizer = load_model(llama(tokenizer), tokenizer)
    bad = [[{"role": "user", "text": "hi"}]]
    with pytest.raises(ValueError, match=r"prompts\[0\]\[0\]=.* is not a chat message"):
        gym.make("LMBandit-v0", model=model, tokenizer=tokenizer, prompts=bad)
    with pytest.raises(ValueError, match=r"has no user message"):
        gym.make(
            "LMBandit-v0",
            model=model,
            tokenizer=tokenizer,
            prompts=[[{"role": "system", "content": "x"}]],
        )
    with pytest.raises(TypeError, match=r"is one chat, not a list of prompts"):
        gym.make("LMBandit-v0", model=model, tokenizer=tokenizer, prompts=chat("hi"))
    # pad == EOS == the end-of-turn token the template writes: refused, with the fix.
    tokenizer.pad_token = tokenizer.eos_token
    with pytest.raises(ValueError, match=r"renders with the chat template .* Fix: give the "):
        gym.make(
            "LMBandit-v0",
            model=model,
            tokenizer=tokenizer,
            prompts=[chat("hi")],
            max_prompt_tokens=48,
        )


@pytest.mark.slow
def test_ppo_learns_on_a_llama_chat_model_with_pad_equal_to_eos() -> None:
    """PPO with the LM policy raises a reward on a Llama with pad == EOS and a chat template."""
    from stable_baselines3 import PPO

    from lmgym.agents import LMActorCriticPolicy, lm_policy_kwargs
    from lmgym.seeding import set_seed

    tokenizer = llama2_chat_tokenizer()
    model, tokenizer = load_model(llama(tokenizer), tokenizer)
    assert tokenizer.pad_token_id == tokenizer.eos_token_id  # no pad token of its own
    low = len(tokenizer) // 3  # a random LM writes these a third of the time: a dense signal

    def reward(prompts, completions, completion_ids):
        return [sum(i < low for i in ids) / 4 for ids in completion_ids]

    set_seed(0)
    env = gym.make_vec(
        "LMBandit-v0",
        16,
        model=model,
        tokenizer=tokenizer,
        prompts=[chat(p) for p in PROMPTS],
        reward_fn=reward,
        kl_coef=0.01,
        max_prompt_tokens=48,
        max_new_tokens=4,
    )
    from lmgym.agents import SB3VecEnv

    vec = SB3VecEnv(env)
    agent = PPO(
        LMActorCriticPolicy,
        vec,
        n_steps=4,
        batch_size=32,
        n_epochs=2,
        learning_rate=3e-3,
        seed=0,
        policy_kwargs=lm_policy_kwargs(env),
    )

    def mean_reward() -> float:
        obs = vec.reset()
        total = 0.0
        for _ in range(4):
            actions, _ = agent.predict(obs, deterministic=False)
            obs, rewards, _, infos = vec.step(actions)
            total += float(np.mean([info["reward_model"] for info in infos]))
        return total / 4

    before = mean_reward()
    agent.learn(total_timesteps=16 * 4 * 12)
    after = mean_reward()
    assert after > before + 0.15, (before, after)
