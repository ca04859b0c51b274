"""Pre-training instances from tokenised documents (TF1's algorithm).

Objectives:
- `mlm_nsp`: google-research/bert `create_instances_from_document`: a target
  length (max_seq_length - 3, or with probability short_seq_prob a random
  length in [2, max]); sentences accumulate into a chunk up to the target; a
  random split makes segment A; with probability 0.5, or always when the
  chunk has one sentence, segment B is drawn from a random other document
  and the unused sentences are put back; else B is the rest of the chunk.
  The pair is truncated from the front or the back (50/50) of the longer
  segment. Label 1 = B is random (TF1's convention).
- `mlm`: the paper's No-NSP ablation. One segment of contiguous text from one
  document, up to the target length, masked; next_sentence_labels is 0.
- `ltr`: the left-to-right ablation. Contiguous text, no masking; targets
  are the next tokens (the loss derives them from input_ids).

Streaming, bounded memory. TF1 holds every document in RAM and draws a
random-next document from all of them. Here documents arrive in groups
(`group_sentences` sentences, hundreds of documents); a group is processed
on its own, its random-next documents drawn from the group. Since B only
needs to come from *another* document, the statistics are unchanged (the
tests compare the NSP fraction and lengths with the all-in-RAM algorithm);
what differs is that B cannot come from a document in another group.
Documents and instances are shuffled within their group (TF1 shuffles both
over the whole corpus); the input pipeline shuffles globally at training
time. The group size, not the number of workers, is what the output depends
on: the same seed, inputs and `group_sentences` give the same records.
"""

from __future__ import annotations

import dataclasses
import random
from collections.abc import Sequence

import numpy as np

from bert_jax import masking

OBJECTIVES = ("mlm_nsp", "mlm", "ltr")


@dataclasses.dataclass(frozen=True)
class DataOptions:
  max_seq_length: int = 128
  max_predictions_per_seq: int = 20
  masked_lm_prob: float = 0.15
  short_seq_prob: float = 0.1
  dupe_factor: int = 10
  objective: str = "mlm_nsp"
  mask_ratios: tuple[float, float, float] = masking.DEFAULT_MASK_RATIOS
  whole_word_mask: bool = False
  dynamic_masking: bool = False

  def __post_init__(self):
    if self.objective not in OBJECTIVES:
      raise ValueError(f"--objective={self.objective!r}: expected one of "
                       f"{OBJECTIVES}")
    if self.max_seq_length < 5:
      raise ValueError(f"--max_seq_length={self.max_seq_length}: too short "
                       "(needs [CLS] A [SEP] B [SEP])")
    if not 0 < self.masked_lm_prob < 1:
      raise ValueError(f"--masked_lm_prob={self.masked_lm_prob}: must be in "
                       "(0, 1)")
    if not 0 <= self.short_seq_prob <= 1:
      raise ValueError(f"--short_seq_prob={self.short_seq_prob}: must be in "
                       "[0, 1]")
    if self.dupe_factor < 1:
      raise ValueError(f"--dupe_factor={self.dupe_factor}: must be >= 1")
    if self.max_predictions_per_seq < 1:
      raise ValueError("--max_predictions_per_seq must be >= 1")
    masking.check_mask_ratios(self.mask_ratios)

  @property
  def masked(self) -> bool:
    return self.objective != "ltr" and not self.dynamic_masking


@dataclasses.dataclass(frozen=True)
class VocabInfo:
  cls_id: int
  sep_id: int
  mask_id: int
  pad_id: int
  vocab_size: int
  continuation: np.ndarray  # bool [vocab_size]: piece continues a word

  @classmethod
  def from_tokenizer(cls, tok) -> "VocabInfo":
    inv = tok.inv_vocab
    size = max(inv) + 1
    cont = np.zeros(size, bool)
    for i, t in inv.items():
      cont[i] = tok.is_continuation(t)
    v = tok.vocab
    return cls(v["[CLS]"], v["[SEP]"], v["[MASK]"], v.get("[PAD]", 0), size,
               cont)

  @property
  def special_ids(self) -> tuple[int, int, int]:
    return (self.cls_id, self.sep_id, self.pad_id)


Instance = dict[str, np.ndarray]
TokenDoc = list[np.ndarray]  # one int32 array of ids per sentence


def truncate_pair(a: list[int], b: list[int], max_tokens: int,
                  rng: random.Random) -> None:
  """TF1's pre-training truncation: drop from the front or the back."""
  while len(a) + len(b) > max_tokens:
    longer = a if len(a) > len(b) else b
    if rng.random() < 0.5:
      del longer[0]
    else:
      longer.pop()


def _target_length(max_tokens: int, opts: DataOptions,
                   rng: random.Random) -> int:
  if rng.random() < opts.short_seq_prob:
    return rng.randint(2, max_tokens)
  return max_tokens


def _finish(tokens: list[int], segment_ids: list[int], nsp_label: int,
            opts: DataOptions, vocab: VocabInfo,
            np_rng: np.random.Generator) -> Instance:
  length = opts.max_seq_length
  n = len(tokens)
  ids = np.zeros(length, np.int32)
  ids[:n] = tokens
  mask = np.zeros(length, np.int32)
  mask[:n] = 1
  seg = np.zeros(length, np.int32)
  seg[:n] = segment_ids
  inst: Instance = {"input_ids": ids, "input_mask": mask, "segment_ids": seg}
  if opts.objective == "ltr":
    return inst
  if opts.dynamic_masking:
    word_start = np.zeros(length, np.int32)
    word_start[:n] = ~vocab.continuation[ids[:n]]
    inst["word_start"] = word_start
  elif opts.whole_word_mask:
    masked, pos, labels, weights = masking.create_masked_lm_predictions(
        ids, np_rng, special_ids=vocab.special_ids,
        vocab_size=vocab.vocab_size, mask_id=vocab.mask_id,
        masked_lm_prob=opts.masked_lm_prob,
        max_predictions_per_seq=opts.max_predictions_per_seq,
        mask_ratios=opts.mask_ratios,
        word_start=~vocab.continuation[ids], num_tokens=n)
    inst.update(input_ids=masked, masked_lm_positions=pos,
                masked_lm_ids=labels, masked_lm_weights=weights)
  # Token-level static masking happens for all instances at once, in
  # `_mask_batch`.
  inst["next_sentence_labels"] = np.array([nsp_label], np.int32)
  return inst


def instances_from_document(docs: Sequence[TokenDoc], doc_index: int,
                            opts: DataOptions, vocab: VocabInfo,
                            rng: random.Random,
                            np_rng: np.random.Generator) -> list[Instance]:
  """The TF1 algorithm for one document; `docs` is the random-next pool.

  Static token-level masking is left to `create_instances` (batched);
  whole-word and dynamic masking are applied here.
  """
  document = docs[doc_index]
  max_tokens = opts.max_seq_length - 3
  target = _target_length(max_tokens, opts, rng)
  out = []
  chunk: list[np.ndarray] = []
  chunk_len = 0
  i = 0
  while i < len(document):
    chunk.append(document[i])
    chunk_len += len(document[i])
    if i == len(document) - 1 or chunk_len >= target:
      if chunk:
        a_end = rng.randint(1, len(chunk) - 1) if len(chunk) >= 2 else 1
        tokens_a = [t for s in chunk[:a_end] for t in s]
        tokens_b: list[int] = []
        if len(chunk) == 1 or rng.random() < 0.5:
          is_random = 1
          target_b = target - len(tokens_a)
          for _ in range(10):
            r = rng.randint(0, len(docs) - 1)
            if r != doc_index:
              break
          random_doc = docs[r]
          start = rng.randint(0, len(random_doc) - 1)
          for j in range(start, len(random_doc)):
            tokens_b.extend(random_doc[j])
            if len(tokens_b) >= target_b:
              break
          # Put the unused sentences back for the next chunk.
          i -= len(chunk) - a_end
        else:
          is_random = 0
          tokens_b = [t for s in chunk[a_end:] for t in s]
        truncate_pair(tokens_a, tokens_b, max_tokens, rng)
        if tokens_a and tokens_b:
          tokens = ([vocab.cls_id] + tokens_a + [vocab.sep_id] + tokens_b
                    + [vocab.sep_id])
          segment_ids = [0] * (len(tokens_a) + 2) + [1] * (len(tokens_b) + 1)
          out.append(_finish(tokens, segment_ids, is_random, opts, vocab,
                             np_rng))
      chunk = []
      chunk_len = 0
    i += 1
  return out


def contiguous_instances(document: TokenDoc, opts: DataOptions,
                         vocab: VocabInfo, rng: random.Random,
                         np_rng: np.random.Generator) -> list[Instance]:
  """`mlm` / `ltr`: [CLS] contiguous text of one document [SEP]."""
  max_tokens = opts.max_seq_length - 2
  stream = np.concatenate(document) if document else np.zeros(0, np.int32)
  out = []
  start = 0
  while start < len(stream):
    target = _target_length(max_tokens, opts, rng)
    piece = stream[start:start + target].tolist()
    start += target
    if len(piece) < 2 and out:
      break  # a lone trailing token makes no example
    tokens = [vocab.cls_id] + piece + [vocab.sep_id]
    out.append(_finish(tokens, [0] * len(tokens), 0, opts, vocab, np_rng))
  return out


def create_instances(docs: Sequence[TokenDoc], opts: DataOptions,
                     vocab: VocabInfo, seed: int,
                     dupe_factor: int | None = None) -> list[Instance]:
  """All instances of a group of documents, over dupe_factor passes."""
  rng = random.Random(seed)
  np_rng = np.random.default_rng(seed)
  docs = [d for d in docs if d]
  rng.shuffle(docs)  # as TF1 does before its passes
  out: list[Instance] = []
  for _ in range(opts.dupe_factor if dupe_factor is None else dupe_factor):
    for index in range(len(docs)):
      if opts.objective == "mlm_nsp":
        out.extend(instances_from_document(docs, index, opts, vocab, rng,
                                           np_rng))
      else:
        out.extend(contiguous_instances(docs[index], opts, vocab, rng,
                                        np_rng))
  rng.shuffle(out)
  if opts.masked and not opts.whole_word_mask:
    _mask_batch(out, opts, vocab, np_rng)
  return out


def _mask_batch(instances: list[Instance], opts: DataOptions,
                vocab: VocabInfo, np_rng: np.random.Generator) -> None:
  """Static token-level masking of a group's instances, in place."""
  if not instances:
    return
  ids = np.stack([i["input_ids"] for i in instances])
  num_tokens = np.stack([i["input_mask"] for i in instances]).sum(1)
  masked, pos, labels, weights = masking.create_masked_lm_predictions_batch(
      ids, num_tokens, np_rng, special_ids=vocab.special_ids,
      vocab_size=vocab.vocab_size, mask_id=vocab.mask_id,
      masked_lm_prob=opts.masked_lm_prob,
      max_predictions_per_seq=opts.max_predictions_per_seq,
      mask_ratios=opts.mask_ratios)
  for k, inst in enumerate(instances):
    inst.update(input_ids=masked[k], masked_lm_positions=pos[k],
                masked_lm_ids=labels[k], masked_lm_weights=weights[k])


def tokenize_documents(docs: Sequence[Sequence[str]], tokenizer
                       ) -> list[TokenDoc]:
  """Token ids of every sentence, through the tokenizer's batch path."""
  flat = [s for d in docs for s in d]
  ids = tokenizer.encode_batch(flat)
  out: list[TokenDoc] = []
  k = 0
  for d in docs:
    sentences = [np.asarray(x, np.int32) for x in ids[k:k + len(d)]]
    k += len(d)
    # A sentence with no tokens (e.g. only control characters) is no
    # sentence; a document left empty is dropped later.
    out.append([s for s in sentences if s.size])
  return out
