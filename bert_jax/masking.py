"""Masked-LM predictions, as TF1 `create_masked_lm_predictions` makes them.

Used twice: by `create_pretraining_data` for static masking (each of the
dupe_factor passes draws new masks) and by the input pipeline for dynamic
masking (a new mask every time an example is read).

The rule: never [CLS]/[SEP]/[PAD]; num_to_predict = min(max_predictions,
max(1, round(num_tokens * masked_lm_prob))) with num_tokens counting
[CLS]/[SEP]; candidates (single tokens, or whole words: a word and its
continuation pieces) are taken in random order, skipping a word that would
overflow num_to_predict; each chosen token becomes [MASK], stays the same or
becomes a uniformly random vocabulary id with probabilities `mask_ratios`
(MASK, SAME, RND: the paper's Table 8 order; 0.8/0.1/0.1 by default).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np

DEFAULT_MASK_RATIOS = (0.8, 0.1, 0.1)


def check_mask_ratios(ratios: Iterable[float]) -> tuple[float, float, float]:
  """(MASK, SAME, RND) as floats; a ValueError unless a distribution."""
  ratios = tuple(float(r) for r in ratios)
  if len(ratios) != 3 or any(r < 0 for r in ratios) or abs(
      sum(ratios) - 1.0) > 1e-6:
    raise ValueError(f"mask_ratios={ratios}: expected three non-negative "
                     "probabilities (MASK, SAME, RND) summing to 1")
  return ratios  # type: ignore[return-value]


def num_to_predict(num_tokens: int, masked_lm_prob: float,
                   max_predictions_per_seq: int) -> int:
  """TF1's count; `num_tokens` includes [CLS] and the [SEP]s."""
  return min(max_predictions_per_seq,
             max(1, int(round(num_tokens * masked_lm_prob))))


def create_masked_lm_predictions(
    input_ids: np.ndarray,
    rng: np.random.Generator,
    *,
    special_ids: Iterable[int],
    vocab_size: int,
    mask_id: int,
    masked_lm_prob: float,
    max_predictions_per_seq: int,
    mask_ratios: Sequence[float] = DEFAULT_MASK_RATIOS,
    word_start: np.ndarray | None = None,
    num_tokens: int | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
  """Masks one sequence (`create_masked_lm_predictions_batch` on one row).

  Args:
    input_ids: int [L]; positions >= num_tokens are padding.
    rng: the randomness (a seeded numpy Generator).
    special_ids: ids never masked ([CLS], [SEP], [PAD]).
    vocab_size: random replacements are drawn from [0, vocab_size).
    mask_id: the [MASK] id.
    masked_lm_prob: fraction of tokens to predict.
    max_predictions_per_seq: cap, and the padded length of the outputs.
    mask_ratios: (MASK, SAME, RND) probabilities.
    word_start: bool [L], True where a token starts a word; with it, whole
      words are masked. None: every token is its own word.
    num_tokens: real tokens (default: the count of non-special-padding up to
      the last non-zero id).

  Returns:
    (masked_input_ids [L], masked_lm_positions [P], masked_lm_ids [P],
     masked_lm_weights [P]) with P = max_predictions_per_seq, int32/float32,
    positions ascending and zero-padded.
  """
  ids = np.asarray(input_ids, np.int32)
  if num_tokens is None:
    nonzero = np.flatnonzero(ids)
    num_tokens = int(nonzero[-1]) + 1 if nonzero.size else 0
  masked, positions, labels, weights = create_masked_lm_predictions_batch(
      ids[None], np.array([num_tokens]), rng, special_ids=special_ids,
      vocab_size=vocab_size, mask_id=mask_id, masked_lm_prob=masked_lm_prob,
      max_predictions_per_seq=max_predictions_per_seq,
      mask_ratios=mask_ratios,
      word_start=(None if word_start is None
                  else np.asarray(word_start, bool)[None]))
  return masked[0], positions[0], labels[0], weights[0]


_GOLDEN = np.uint64(0x9E3779B97F4A7C15)


def _mix64(x: np.ndarray) -> np.ndarray:
  """SplitMix64's finaliser: a bijection of uint64 with full avalanche."""
  x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
  x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
  return x ^ (x >> np.uint64(31))


def row_keys(seed: int, stream: int, positions: np.ndarray) -> np.ndarray:
  """A uint64 key per row from (seed, stream, the row's position)."""
  with np.errstate(over="ignore"):
    base = _mix64(np.uint64(seed % (1 << 64)) * _GOLDEN
                  + np.uint64(stream % (1 << 64)))
    return _mix64(base + (np.asarray(positions).astype(np.uint64)
                          + np.uint64(1)) * _GOLDEN)


class RowRandom:
  """Random numbers for a batch in which row r depends only on `keys[r]`.

  Counter-based: SplitMix64 over (key, draw number, column), so a row gets
  the same numbers whichever batch, host or process draws it, and the batch
  is drawn with array operations (one `Generator` a row costs ~20 us).
  Offers the `random` and `integers` calls the batch masking makes.
  """

  def __init__(self, keys: np.ndarray):
    self._keys = np.asarray(keys, np.uint64)[:, None]
    self._draws = 0

  def _bits(self, shape: tuple[int, int]) -> np.ndarray:
    if shape[0] != len(self._keys):
      raise ValueError(f"shape {shape}: expected {len(self._keys)} rows")
    self._draws += 1
    counter = (np.uint64(self._draws) << np.uint64(32)) + np.arange(
        1, shape[1] + 1, dtype=np.uint64)
    with np.errstate(over="ignore"):
      return _mix64(self._keys + counter * _GOLDEN)

  def random(self, shape: tuple[int, int]) -> np.ndarray:
    """Uniform float64 in [0, 1), 53 bits."""
    return (self._bits(shape) >> np.uint64(11)) * (1.0 / (1 << 53))

  def integers(self, low: int, high: int, shape: tuple[int, int],
               dtype=np.int64) -> np.ndarray:
    """Uniform in [low, high) (modulo bias below 2**-40 for vocabularies)."""
    span = np.uint64(high - low)
    return (low + (self._bits(shape) % span).astype(np.int64)).astype(dtype)


def create_masked_lm_predictions_batch(
    input_ids: np.ndarray,
    num_tokens: np.ndarray,
    rng: np.random.Generator | RowRandom,
    *,
    special_ids: Iterable[int],
    vocab_size: int,
    mask_id: int,
    masked_lm_prob: float,
    max_predictions_per_seq: int,
    mask_ratios: Sequence[float] = DEFAULT_MASK_RATIOS,
    word_start: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
  """Masks a batch of sequences, by TF1's rule (see the module docstring).

  Drawn with whole-batch array operations (TF1's per-token Python costs
  ~50 us a row): a uniformly random k-subset of each row's candidates, or
  with `word_start` whole words taken in a random order, skipping a word
  that would overflow k.

  Args:
    input_ids: int [N, L].
    num_tokens: int [N], real tokens of each row (the rest is padding).
    rng: a numpy Generator, or a `RowRandom` to make each row's masks a
      function of its own key.
    special_ids, ...: as in `create_masked_lm_predictions`.
    word_start: bool [N, L], True where a token starts a word; None: every
      token is its own word.

  Returns:
    (masked_input_ids [N, L], masked_lm_positions [N, P],
     masked_lm_ids [N, P], masked_lm_weights [N, P]).
  """
  p_mask, p_same, _ = mask_ratios
  ids = np.asarray(input_ids, np.int32)
  n_rows, length = ids.shape
  num_tokens = np.asarray(num_tokens)
  pos_L = np.arange(length)
  cand = pos_L < num_tokens[:, None]
  for sid in special_ids:
    cand &= ids != sid
  k = np.minimum(max_predictions_per_seq,
                 np.maximum(1, np.rint(num_tokens * masked_lm_prob)))
  k = np.minimum(k, cand.sum(1)).astype(np.int64)
  pred = max_predictions_per_seq
  rows = np.arange(n_rows)[:, None]
  if word_start is None:
    # Random keys, non-candidates last: the first k of each row's order are
    # a uniformly random k-subset of its candidates.
    keys = np.where(cand, rng.random((n_rows, length)), 2.0)
    if pred < length:
      top = np.argpartition(keys, pred - 1, axis=1)[:, :pred]
      top = np.take_along_axis(
          top, np.argsort(np.take_along_axis(keys, top, 1), axis=1), 1)
    else:
      top = np.argsort(keys, axis=1)
      top = np.pad(top, ((0, 0), (0, pred - length)))
    valid = np.arange(pred) < k[:, None]
    positions = np.sort(np.where(valid, top, length), axis=1)
  else:
    # A word: a candidate that starts one (or a row's first candidate) and
    # the continuation candidates after it, as TF1 groups them.
    first = cand & (np.cumsum(cand, axis=1) == 1)
    starts = cand & (np.asarray(word_start, bool) | first)
    word_of = np.maximum.accumulate(np.where(starts, pos_L, -1), axis=1)
    size_at = np.zeros((n_rows, length + 1), np.int64)
    np.add.at(size_at, (np.broadcast_to(rows, cand.shape)[cand],
                        word_of[cand]), 1)
    # Words in a random order (each keyed at its first token); greedy
    # take-or-skip along that order for every row at once.
    order = np.argsort(np.where(starts, rng.random((n_rows, length)), 2.0),
                       axis=1)
    num_words = starts.sum(1)
    taken_at = np.zeros((n_rows, length + 1), bool)
    total = np.zeros(n_rows, np.int64)
    for r in range(int(num_words.max(initial=0))):
      word = order[:, r]
      size = size_at[rows[:, 0], word]
      take = (r < num_words) & (total + size <= k)
      taken_at[rows[:, 0], word] = take
      total += np.where(take, size, 0)
    chosen = cand & taken_at[rows, np.maximum(word_of, 0)]
    positions = np.sort(np.where(chosen, pos_L, length), axis=1)
    if pred < length:
      positions = positions[:, :pred]
    else:
      positions = np.pad(positions, ((0, 0), (0, pred - length)),
                         constant_values=length)
  valid = positions < length  # the chosen, left-aligned
  positions = np.where(valid, positions, 0).astype(np.int32)
  labels = np.where(valid, ids[rows, positions], 0).astype(np.int32)
  u = rng.random((n_rows, pred))
  random_ids = rng.integers(0, vocab_size, (n_rows, pred), dtype=np.int32)
  replacement = np.where(u < p_mask, mask_id,
                         np.where(u < p_mask + p_same, labels, random_ids))
  masked = ids.copy()
  r, c = np.nonzero(valid)
  masked[r, positions[r, c]] = replacement[r, c]
  return masked, positions, labels, valid.astype(np.float32)
