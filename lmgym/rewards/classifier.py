"""A Hugging Face sequence classifier as a reward: sentiment models, learned reward models.

Any local ``AutoModelForSequenceClassification`` checkpoint works: a BERT-style sentiment
classifier (score the positive label's logit, as in the sentiment-tuning examples of Ziegler et
al. 2019 and TRL) or a single-logit reward model trained on preferences (its logit is the
reward). Nothing is downloaded: models come from local directories or memory.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import numpy as np
import torch
from transformers import (
    AutoModelForSequenceClassification,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)

from lmgym.error import short_repr
from lmgym.models.device import resolve_device, resolve_dtype
from lmgym.models.loading import (
    load_tokenizer,
    require_bool_trust_remote_code,
    require_model_dir,
)

__all__ = ["SequenceClassifierReward"]

ClassifierOutput = Literal["logit", "prob", "logprob"]
ClassifierText = Literal["concat", "pair", "completion"]


def _concat(prompt: str, completion: str) -> str:
    """``prompt`` then ``completion``, with one space between unless either side brings one.

    The envs decode completions without a leading space, so a bare ``prompt + completion``
    would glue the last prompt word to the first completion word.
    """
    if not prompt or not completion or prompt[-1].isspace() or completion[0].isspace():
        return prompt + completion
    return f"{prompt} {completion}"


class SequenceClassifierReward:
    """Reward = one label's score from a sequence-classification model.

    The text scored is chosen by ``text``: ``"concat"`` scores prompt and completion as one
    string, joined by a space unless one side already has one at the boundary (what a
    sentiment classifier expects: the completion continues the prompt);
    ``"pair"`` passes ``(prompt, completion)`` as a text pair (what reward models trained on
    question/answer pairs expect; the prompt is truncated first); ``"completion"`` scores the
    completion alone. Texts are scored in batches of ``batch_size`` under
    ``torch.inference_mode()``.

    The model is put in eval mode. If it has no ``config.pad_token_id`` it gets the tokenizer's
    pad token (the EOS token when the tokenizer has none, as for GPT-2), without which
    decoder-style classifiers cannot find each row's last token in a padded batch.

    Args:
        model: A local directory written by ``save_pretrained``, or a model object.
        tokenizer: A local directory or tokenizer object; ``None`` loads it from ``model``'s
            directory (required when ``model`` is an object).
        label: Which label's score is the reward: an index, or a name from the config's
            ``label2id`` / ``id2label``. ``None`` is allowed only for single-logit models.
        output: ``"logit"`` (raw score), ``"prob"`` or ``"logprob"`` (softmax over labels, or
            the sigmoid for ``problem_type="multi_label_classification"``). A single-logit
            model (``num_labels=1``) supports only ``"logit"``: its logit is the reward.
        text: ``"concat"``, ``"pair"`` or ``"completion"``, see above.
        batch_size: Texts per forward pass.
        device: Where to run the model: ``"auto"``, ``"cpu"``, ``"cuda"``, ``"cuda:N"``,
            ``"mps"`` or a ``torch.device`` (:mod:`lmgym.models.device`); ``None`` keeps a model
            object where it is and loads a directory on the CPU. The tokenized inputs go there;
            the scores come back on the CPU.
        dtype: Precision of the weights: ``"auto"``, ``"float32"``, ``"bfloat16"``,
            ``"float16"`` or a ``torch.dtype``; ``None`` keeps the model's. The label scores
            (softmax, sigmoid, log) are computed in float32 whatever it is.
        max_length: Longest input in tokens; longer inputs are truncated on the tokenizer's
            ``truncation_side`` (set ``tokenizer.truncation_side = "left"`` to keep the end of a
            ``"concat"`` text, where the completion is). Must not exceed the model's positions.
        trust_remote_code: Run modelling code shipped in the checkpoint. Off by default.

    Raises:
        ModelLoadError: A directory does not exist or holds no checkpoint.
        ValueError: Unknown ``label`` (the message lists the valid ones), ``label=None`` with
            several labels, an ``output`` / ``text`` outside its choices, ``output != "logit"``
            with a single-logit model, a non-positive ``batch_size`` / ``max_length``, a
            ``device`` this machine does not have, or a ``dtype`` it cannot run there (both
            checked before anything loads).

    Example:
        >>> from tokenizers import Tokenizer, models, pre_tokenizers
        >>> from transformers import BertConfig, BertForSequenceClassification
        >>> from transformers import PreTrainedTokenizerFast
        >>> words = ["[PAD]", "[UNK]", "the", "food", "was", "great"]
        >>> backend = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, "[UNK]"))
        >>> backend.pre_tokenizer = pre_tokenizers.Whitespace()
        >>> tokenizer = PreTrainedTokenizerFast(
        ...     tokenizer_object=backend, pad_token="[PAD]", unk_token="[UNK]")
        >>> config = BertConfig(vocab_size=6, hidden_size=8, num_hidden_layers=1,
        ...     num_attention_heads=2, intermediate_size=16, id2label={0: "NEG", 1: "POS"})
        >>> reward = SequenceClassifierReward(BertForSequenceClassification(config), tokenizer,
        ...     label="POS", output="prob")
        >>> scores = reward(["the food was", "the food"], [" great", " was"])
        >>> scores.shape, bool(((0 < scores) & (scores < 1)).all())
        ((2,), True)
    """

    def __init__(
        self,
        model: str | Path | PreTrainedModel,
        tokenizer: str | Path | PreTrainedTokenizerBase | None = None,
        *,
        label: int | str | None = None,
        output: ClassifierOutput = "logit",
        text: ClassifierText = "concat",
        batch_size: int = 32,
        device: str | torch.device | None = None,
        max_length: int = 512,
        trust_remote_code: bool = False,
        dtype: str | torch.dtype | None = None,
    ) -> None:
        require_bool_trust_remote_code(trust_remote_code)  # "no" is truthy: never guess
        if output not in ("logit", "prob", "logprob"):
            raise ValueError(f"output={output!r}; expected 'logit', 'prob' or 'logprob'.")
        if text not in ("concat", "pair", "completion"):
            raise ValueError(f"text={text!r}; expected 'concat', 'pair' or 'completion'.")
        if batch_size < 1:
            raise ValueError(f"batch_size={batch_size!r}; expected a positive int.")
        if max_length < 1:
            raise ValueError(f"max_length={max_length!r}; expected a positive int.")
        # Device and dtype before loading: a GPU that is not there fails before any work.
        target = None if device is None else resolve_device(device)
        where = target or (model.device if isinstance(model, PreTrainedModel) else None)
        precision = None if dtype is None else resolve_dtype(dtype, where or torch.device("cpu"))

        loaded: PreTrainedModel
        if isinstance(model, (str, Path)):
            model_dir = Path(model)
            require_model_dir(model_dir, "model")
            loaded = AutoModelForSequenceClassification.from_pretrained(
                model_dir,
                trust_remote_code=trust_remote_code,
                local_files_only=True,
                **({} if precision is None else {"dtype": precision}),
            )
            if tokenizer is None:
                tokenizer = model_dir
        elif not isinstance(model, PreTrainedModel):
            raise TypeError(
                f"model={short_repr(model)} (type {type(model).__name__}) is not supported; "
                "expected a local directory or a transformers PreTrainedModel for sequence "
                "classification."
            )
        elif tokenizer is None:
            raise ValueError(
                "tokenizer=None with a model object; expected the classifier's tokenizer (an "
                "object or a local directory). Pass tokenizer=..., or pass the model's directory."
            )
        else:
            loaded = model
        tokenizer = load_tokenizer(tokenizer, trust_remote_code=trust_remote_code)
        if loaded.config.pad_token_id is None:
            loaded.config.pad_token_id = tokenizer.pad_token_id
        loaded.eval()
        if target is not None or precision is not None:
            # transformers types `to` through a decorator that mypy misreads.
            loaded.to(device=target, dtype=precision)  # type: ignore[call-arg]

        self.model = loaded
        self.tokenizer = tokenizer
        self.label_index = self._resolve_label(label, output)
        self.output: ClassifierOutput = output
        self.text: ClassifierText = text
        self.batch_size = batch_size
        self.max_length = max_length

    def _resolve_label(self, label: int | str | None, output: ClassifierOutput) -> int:
        config = self.model.config
        num_labels = int(config.num_labels or 0)
        id2label = {int(i): str(name) for i, name in (config.id2label or {}).items()}
        # transformers 5 leaves label2id None when a config names only id2label: use both.
        names = {name: i for i, name in id2label.items()}
        names.update({str(name): int(i) for name, i in (config.label2id or {}).items()})
        valid = f"{id2label} (pass an index or a name)"
        if num_labels == 1 and output != "logit":
            raise ValueError(
                f"output={output!r} with a single-logit model (num_labels=1); expected "
                "output='logit': a single-logit model's score is its logit. Pass "
                "output='logit'."
            )
        if label is None:
            if num_labels == 1:
                return 0
            raise ValueError(
                f"label=None but the model has {num_labels} labels {valid}; expected the label "
                "whose score is the reward, e.g. label='POSITIVE' for a sentiment classifier."
            )
        if isinstance(label, str):
            if label not in names:
                raise ValueError(
                    f"label={label!r} is not a label of this model; expected one of {valid}."
                )
            return int(names[label])
        if isinstance(label, bool) or not isinstance(label, int) or not 0 <= label < num_labels:
            raise ValueError(
                f"label={label!r} is out of range for a model with {num_labels} label(s); "
                f"expected one of {valid}."
            )
        return label

    def __call__(self, prompts: list[str], completions: list[str]) -> np.ndarray:
        """Score each ``(prompt, completion)`` pair; returns a float64 array (B,)."""
        device = self.model.device
        scores = []
        with torch.inference_mode():
            for start in range(0, len(completions), self.batch_size):
                batch_prompts = prompts[start : start + self.batch_size]
                batch_completions = completions[start : start + self.batch_size]
                if self.text == "pair":
                    encoded = self.tokenizer(
                        batch_prompts,
                        batch_completions,
                        padding=True,
                        truncation="only_first",
                        max_length=self.max_length,
                        return_tensors="pt",
                    )
                else:
                    texts = (
                        batch_completions
                        if self.text == "completion"
                        else [
                            _concat(p, c)
                            for p, c in zip(batch_prompts, batch_completions, strict=True)
                        ]
                    )
                    encoded = self.tokenizer(
                        texts,
                        padding=True,
                        truncation=True,
                        max_length=self.max_length,
                        return_tensors="pt",
                    )
                logits = self.model(**encoded.to(device)).logits.float()  # (b, num_labels)
                scores.append(self._label_scores(logits).cpu())
        if not scores:
            return np.zeros(0, dtype=np.float64)
        return torch.cat(scores).double().numpy()

    def _label_scores(self, logits: torch.Tensor) -> torch.Tensor:
        if self.output == "logit":
            return logits[:, self.label_index]
        if self.model.config.problem_type == "multi_label_classification":
            log_probs = torch.nn.functional.logsigmoid(logits)
        else:
            log_probs = torch.log_softmax(logits, dim=-1)
        chosen = log_probs[:, self.label_index]
        return chosen if self.output == "logprob" else chosen.exp()

    def __repr__(self) -> str:
        return (
            f"SequenceClassifierReward({type(self.model).__name__}, label={self.label_index}, "
            f"output={self.output!r}, text={self.text!r})"
        )
