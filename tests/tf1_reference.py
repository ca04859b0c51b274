"""TF1's `create_pretraining_data.py` algorithm, ported literally: an oracle.

google-research/bert's `create_instances_from_document`,
`truncate_seq_pair` and `create_masked_lm_predictions` in behaviour, line for
line: token lists, Python `random`, the draws in the original's order. Used
by tests/test_pretraining_data.py (bert_jax's offset algorithm must make the
same instances, draw for draw) and by bench/bench_pretraining_data.py (the
single-process TF1 peer it times, which truncates and masks inside the loop
as the original does: `finish=truncate_and_mask(...)`).
"""

from __future__ import annotations

import collections

MaskedLm = collections.namedtuple("MaskedLm", ["index", "label"])


def create_instances_from_document(all_docs, doc_index, max_seq_length,
                                   short_seq_prob, rng, finish=None):
  """The instances of document `doc_index`; all_docs: lists of token lists.

  `finish(tokens_a, tokens_b, is_random_next)` makes each instance at the
  point where the original truncates and masks (so its draws interleave
  with the loop's as there); by default the loop stops before truncation
  and an instance is (tokens_a, tokens_b, is_random_next).
  """
  if finish is None:
    finish = lambda a, b, is_random: (a, b, is_random)
  document = all_docs[doc_index]
  max_num_tokens = max_seq_length - 3
  target_seq_length = max_num_tokens
  if rng.random() < short_seq_prob:
    target_seq_length = rng.randint(2, max_num_tokens)
  instances, current_chunk, current_length, i = [], [], 0, 0
  while i < len(document):
    segment = document[i]
    current_chunk.append(segment)
    current_length += len(segment)
    if i == len(document) - 1 or current_length >= target_seq_length:
      if current_chunk:
        a_end = 1
        if len(current_chunk) >= 2:
          a_end = rng.randint(1, len(current_chunk) - 1)
        tokens_a = [t for s in current_chunk[:a_end] for t in s]
        tokens_b = []
        if len(current_chunk) == 1 or rng.random() < 0.5:
          is_random_next = True
          target_b_length = target_seq_length - len(tokens_a)
          for _ in range(10):
            random_document_index = rng.randint(0, len(all_docs) - 1)
            if random_document_index != doc_index:
              break
          random_document = all_docs[random_document_index]
          random_start = rng.randint(0, len(random_document) - 1)
          for j in range(random_start, len(random_document)):
            tokens_b.extend(random_document[j])
            if len(tokens_b) >= target_b_length:
              break
          num_unused_segments = len(current_chunk) - a_end
          i -= num_unused_segments
        else:
          is_random_next = False
          for j in range(a_end, len(current_chunk)):
            tokens_b.extend(current_chunk[j])
        instances.append(finish(tokens_a, tokens_b, is_random_next))
      current_chunk, current_length = [], 0
    i += 1
  return instances


def truncate_seq_pair(tokens_a, tokens_b, max_num_tokens, rng):
  """Drops a token at a time from the longer list, front or back (50/50)."""
  while len(tokens_a) + len(tokens_b) > max_num_tokens:
    trunc = tokens_a if len(tokens_a) > len(tokens_b) else tokens_b
    if rng.random() < 0.5:
      del trunc[0]
    else:
      trunc.pop()


def create_masked_lm_predictions(tokens, masked_lm_prob, max_predictions,
                                 vocab_words, rng):
  """(output tokens, masked positions, their labels), token-level masking."""
  cand = [[i] for i, t in enumerate(tokens) if t not in ("[CLS]", "[SEP]")]
  rng.shuffle(cand)
  output = list(tokens)
  num_to_predict = min(max_predictions,
                       max(1, int(round(len(tokens) * masked_lm_prob))))
  masked, covered = [], set()
  for index_set in cand:
    if len(masked) >= num_to_predict:
      break
    if len(masked) + len(index_set) > num_to_predict:
      continue
    for index in index_set:
      covered.add(index)
      if rng.random() < 0.8:
        new = "[MASK]"
      elif rng.random() < 0.5:
        new = tokens[index]
      else:
        new = vocab_words[rng.randint(0, len(vocab_words) - 1)]
      output[index] = new
      masked.append(MaskedLm(index, tokens[index]))
  masked.sort(key=lambda x: x.index)
  return output, [m.index for m in masked], [m.label for m in masked]


def truncate_and_mask(max_seq_length, masked_lm_prob, max_predictions,
                      vocab_words, rng):
  """The rest of the original's loop body, as a `finish` for
  `create_instances_from_document`: truncate, add [CLS]/[SEP], mask.

  Each instance is (tokens, segment_ids, is_random_next, masked positions,
  masked labels).
  """
  def finish(tokens_a, tokens_b, is_random_next):
    truncate_seq_pair(tokens_a, tokens_b, max_seq_length - 3, rng)
    tokens = ["[CLS]"] + tokens_a + ["[SEP]"] + tokens_b + ["[SEP]"]
    segment_ids = [0] * (len(tokens_a) + 2) + [1] * (len(tokens_b) + 1)
    tokens, positions, labels = create_masked_lm_predictions(
        tokens, masked_lm_prob, max_predictions, vocab_words, rng)
    return tokens, segment_ids, is_random_next, positions, labels
  return finish
