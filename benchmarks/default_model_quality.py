"""Quality of the embedded default model: grammar, sentiment and perplexity, next to baselines.

    python benchmarks/default_model_quality.py --json bench-results/default_model_quality.json

Samples completions of the default train and test prompts at temperature 1.0 (pure sampling:
top_k=0, top_p=1), the way the RL environments do, and reports

* grammar pass rate of prompt + completion, a completion cut by the length limit counting as
  fine if it is a valid prefix (``parses(..., allow_incomplete=True)``);
* the grammar pass rate of the completions that ended with EOS, as whole texts
  (``allow_incomplete=False``);
* the mean lexicon sentiment of the completions: the reward the RL task starts from;
* held-out perplexity on a freshly generated corpus (a seed the model never saw);

and the same figures for baselines in the same run: the corpus itself (what the model imitates),
uniformly random tokens (shows the grammar check is not trivially passed) and a "reward hacker"
that repeats the most positive word (high sentiment, no grammar).
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch

from lmgym.models.corpus import fluency, generate_corpus, prompts
from lmgym.models.lexicon import sentiment
from lmgym.models.loading import load_default_model, load_model
from lmgym.models.pretrain import held_out_perplexity
from lmgym.seeding import set_seed


def sample_completions(model, tokenizer, prompt_texts, *, samples_per_prompt, max_new_tokens):
    """Sample completions per prompt; return (prompt, completion text, ended_with_eos) rows."""
    rows = []
    for prompt in prompt_texts:
        encoded = tokenizer(prompt, return_tensors="pt")  # <bos> prompt
        with torch.inference_mode():
            out = model.generate(
                **encoded,
                do_sample=True,
                temperature=1.0,
                top_k=0,
                top_p=1.0,
                max_new_tokens=max_new_tokens,
                num_return_sequences=samples_per_prompt,
                pad_token_id=tokenizer.pad_token_id,
                eos_token_id=tokenizer.eos_token_id,
            )
        for generated in out[:, encoded["input_ids"].shape[1] :].tolist():
            ended = tokenizer.eos_token_id in generated
            if ended:
                generated = generated[: generated.index(tokenizer.eos_token_id)]
            rows.append((prompt, tokenizer.decode(generated, skip_special_tokens=True), ended))
    return rows


def summarize(rows):
    texts = [f"{prompt} {completion}".strip() for prompt, completion, _ in rows]
    ended = [(t, e) for t, (_, _, e) in zip(texts, rows, strict=True)]
    complete = [t for t, e in ended if e]
    return {
        "n": len(rows),
        "grammar_pass": fluency(texts, allow_incomplete=True),
        "eos_rate": len(complete) / len(rows),
        "grammar_pass_eos_full": fluency(complete) if complete else None,
        "mean_sentiment": statistics.fmean(sentiment(c) for _, c, _ in rows),
        "mean_completion_words": statistics.fmean(len(c.split()) for _, c, _ in rows),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", type=Path, required=True, help="where to write the results")
    parser.add_argument("--model-dir", type=Path, default=None, help="default: the shipped model")
    parser.add_argument("--samples-per-prompt", type=int, default=8)
    parser.add_argument("--max-new-tokens", type=int, default=16)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--eval-docs", type=int, default=2000)
    parser.add_argument("--eval-seed", type=int, default=20240601, help="fresh held-out corpus")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    started = time.perf_counter()

    if args.model_dir is None:
        model, tokenizer = load_default_model()
    else:
        model, tokenizer = load_model(args.model_dir)
    set_seed(args.seed)

    results: dict[str, dict] = {}
    examples: dict[str, list[str]] = {}
    for split in ("train", "test"):
        rows = sample_completions(
            model,
            tokenizer,
            prompts(split),
            samples_per_prompt=args.samples_per_prompt,
            max_new_tokens=args.max_new_tokens,
        )
        results[f"model / {split} prompts"] = summarize(rows)
        examples[split] = [
            f"{p} | {c}{' <eos>' if e else ''}" for p, c, e in rows[:: max(1, len(rows) // 8)]
        ]

    corpus = generate_corpus(args.eval_docs, args.eval_seed)
    results["corpus (fresh seed)"] = {
        "n": len(corpus),
        "grammar_pass": fluency(corpus, allow_incomplete=True),
        "eos_rate": 1.0,
        "grammar_pass_eos_full": fluency(corpus),
        "mean_sentiment": statistics.fmean(sentiment(d) for d in corpus),
        "mean_completion_words": statistics.fmean(len(d.split()) for d in corpus),
    }
    generator = torch.Generator().manual_seed(args.seed)
    vocab_ids = [i for i in range(len(tokenizer)) if i not in tokenizer.all_special_ids]
    random_rows = []
    for prompt in prompts("train"):
        picks = torch.randint(len(vocab_ids), (args.max_new_tokens,), generator=generator)
        completion = tokenizer.decode([vocab_ids[i] for i in picks.tolist()])
        random_rows.append((prompt, completion, False))
    results["random tokens"] = summarize(random_rows)
    hacker = [(p, " ".join(["great"] * args.max_new_tokens), False) for p in prompts("train")]
    results["reward hacker (great x16)"] = summarize(hacker)

    perplexity = held_out_perplexity(model, tokenizer, corpus)
    report = {
        "model_dir": str(args.model_dir or "lmgym/models/default (shipped)"),
        "parameters": sum(p.numel() for p in model.parameters()),
        "held_out_perplexity": perplexity,
        "held_out_docs": args.eval_docs,
        "held_out_seed": args.eval_seed,
        "sampling": {
            "temperature": 1.0,
            "top_k": 0,
            "top_p": 1.0,
            "max_new_tokens": args.max_new_tokens,
            "samples_per_prompt": args.samples_per_prompt,
            "seed": args.seed,
        },
        "results": results,
        "examples": examples,
        "wall_time_s": round(time.perf_counter() - started, 1),
    }

    def fmt(value):
        return "-" if value is None else f"{value:.3f}" if isinstance(value, float) else str(value)

    header = ("", "n", "grammar (prefix ok)", "grammar (EOS, full)", "EOS rate", "mean sentiment")
    keys = ("n", "grammar_pass", "grammar_pass_eos_full", "eos_rate", "mean_sentiment")
    print(f"{header[0]:<28}" + "".join(f"{h:>21}" for h in header[1:]))
    for name, row in results.items():
        print(f"{name:<28}" + "".join(f"{fmt(row[k]):>21}" for k in keys))
    print(
        f"held-out perplexity ({args.eval_docs} fresh docs, seed {args.eval_seed}): "
        f"{perplexity:.3f}   parameters: {report['parameters']:,}"
    )
    for split, lines in examples.items():
        print(f"\nexample completions, {split} prompts (prompt | completion):")
        for line in lines:
            print(f"  {line}")
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
