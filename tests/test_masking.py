"""masking.create_masked_lm_predictions against TF1's rule, stated directly."""

import random

import numpy as np
import pytest

from bert_jax import masking

CLS, SEP, PAD, MASK = 101, 102, 0, 103
VOCAB_SIZE = 30522


def _sequence(rng, n_a, n_b, length):
  ids = np.zeros(length, np.int32)
  body = rng.integers(1000, VOCAB_SIZE, n_a + n_b)
  ids[:n_a + n_b + 3] = np.concatenate(
      [[CLS], body[:n_a], [SEP], body[n_a:], [SEP]])
  return ids, n_a + n_b + 3


def _mask(ids, rng, **kw):
  args = dict(special_ids={CLS, SEP, PAD}, vocab_size=VOCAB_SIZE,
              mask_id=MASK, masked_lm_prob=0.15, max_predictions_per_seq=20)
  args.update(kw)
  return masking.create_masked_lm_predictions(ids, rng, **args)


def test_counts_positions_padding_and_specials():
  rng = np.random.default_rng(0)
  for _ in range(300):
    n_a, n_b = rng.integers(1, 70, 2)
    ids, n = _sequence(rng, int(n_a), int(n_b), 160)
    out, pos, labels, w = _mask(ids, rng)
    assert out.dtype == pos.dtype == labels.dtype == np.int32
    assert w.dtype == np.float32 and pos.shape == (20,)
    k = int(w.sum())
    # TF1: len(tokens) counts [CLS] and the [SEP]s; padding does not count.
    assert k == min(20, max(1, int(round(n * 0.15))))
    assert (w[:k] == 1).all() and not w[k:].any()
    assert not pos[k:].any() and not labels[k:].any()
    assert (np.diff(pos[:k]) > 0).all()
    assert not np.isin(ids[pos[:k]], [CLS, SEP, PAD]).any()
    np.testing.assert_array_equal(labels[:k], ids[pos[:k]])
    untouched = np.ones(len(ids), bool)
    untouched[pos[:k]] = False
    np.testing.assert_array_equal(out[untouched], ids[untouched])


def test_special_ids_as_set_tuple_or_array_agree():
  ids, _ = _sequence(np.random.default_rng(1), 30, 30, 128)
  results = [_mask(ids, np.random.default_rng(5), special_ids=s)
             for s in ({CLS, SEP, PAD}, (CLS, SEP, PAD),
                       np.array([CLS, SEP, PAD]))]
  for r in results[1:]:
    for a, b in zip(results[0], r):
      np.testing.assert_array_equal(a, b)
  # And the same seed gives the same masks; another seed other masks.
  again = _mask(ids, np.random.default_rng(5))
  np.testing.assert_array_equal(again[1], results[0][1])
  other = _mask(ids, np.random.default_rng(6))
  assert not np.array_equal(other[1], results[0][1])


@pytest.mark.parametrize("ratios", [(0.0, 1.0, 0.0), (0.0, 0.0, 1.0)])
def test_same_and_random_replacements(ratios):
  rng = np.random.default_rng(2)
  vocab_size = 10  # small, to see the uniform draw over the whole vocab
  counts = np.zeros(vocab_size)
  for _ in range(400):
    ids = np.array([CLS % 10] + [5] * 40 + [SEP % 10], np.int32)
    out, pos, labels, w = masking.create_masked_lm_predictions(
        ids, rng, special_ids=(1, 2), vocab_size=vocab_size, mask_id=3,
        masked_lm_prob=0.15, max_predictions_per_seq=20, mask_ratios=ratios)
    k = int(w.sum())
    if ratios[1] == 1.0:
      np.testing.assert_array_equal(out, ids)
    else:
      np.add.at(counts, out[pos[:k]], 1)
  if ratios[2] == 1.0:
    # Uniform over [0, vocab_size), the specials included, as in TF1.
    expected = counts.sum() / vocab_size
    assert (np.abs(counts - expected) < 5 * np.sqrt(expected)).all(), counts


def test_whole_words_never_overflow_the_count():
  # Words of three pieces each: 41 tokens -> 6 predictions; a second
  # three-piece word fits (6), a third would overflow and is skipped.
  word = np.array([True, False, False])
  ids = np.concatenate([[CLS], np.arange(2000, 2039), [SEP]]).astype(np.int32)
  starts = np.concatenate([[True], np.tile(word, 13), [True]])
  rng = np.random.default_rng(3)
  for _ in range(50):
    _, pos, _, w = _mask(ids, rng, word_start=starts)
    chosen = pos[w > 0]
    assert len(chosen) == 6
    words = set((chosen - 1) // 3)
    assert len(words) == 2 and set(chosen) == {
        1 + 3 * g + j for g in words for j in range(3)}


def test_only_specials_predicts_nothing():
  ids = np.array([CLS, SEP, SEP, 0, 0], np.int32)
  out, pos, labels, w = _mask(ids, np.random.default_rng(0))
  np.testing.assert_array_equal(out, ids)
  assert not w.any() and not pos.any() and not labels.any()


def test_bad_ratios():
  for bad in ((0.8, 0.1), (0.8, 0.3, 0.1), (1.1, -0.1, 0.0)):
    with pytest.raises(ValueError, match="MASK, SAME, RND"):
      masking.check_mask_ratios(bad)


def test_batch_version_follows_the_same_rule():
  rng = np.random.default_rng(4)
  rows = [_sequence(rng, int(a), int(b), 128)
          for a, b in rng.integers(1, 62, (2000, 2))]
  ids = np.stack([r[0] for r in rows])
  n = np.array([r[1] for r in rows])
  out, pos, labels, w = masking.create_masked_lm_predictions_batch(
      ids, n, rng, special_ids=(CLS, SEP, PAD), vocab_size=VOCAB_SIZE,
      mask_id=MASK, masked_lm_prob=0.15, max_predictions_per_seq=20)
  k = w.sum(1).astype(int)
  np.testing.assert_array_equal(
      k, np.minimum(20, np.maximum(1, np.rint(n * 0.15))))
  for i in range(len(ids)):
    p = pos[i, :k[i]]
    assert (np.diff(p) > 0).all() and not pos[i, k[i]:].any()
    assert not np.isin(ids[i, p], [CLS, SEP, PAD]).any()
    np.testing.assert_array_equal(labels[i, :k[i]], ids[i, p])
    keep = np.ones(128, bool)
    keep[p] = False
    np.testing.assert_array_equal(out[i, keep], ids[i, keep])
  got = np.take_along_axis(out, pos, 1)[w > 0]
  total = got.size
  for observed, p in (((got == MASK).sum(), 0.8),
                      ((got == labels[w > 0]).sum(), 0.1)):
    assert abs(observed / total - p) < 5 * np.sqrt(p * (1 - p) / total)


def test_batch_whole_words_follow_the_greedy_rule():
  # Random word structure; TF1's rule: words in a random order, each taken
  # unless it would overflow k. Hence the chosen set is a union of whole
  # words, at most k tokens, and every word left out is larger than the
  # room left (it was too large when its turn came, and the room only
  # shrinks). The first word's inclusion rate matches TF1's loop's.
  rng = np.random.default_rng(7)
  rows = [_sequence(rng, int(a), int(b), 64)
          for a, b in rng.integers(1, 30, (3000, 2))]
  ids = np.stack([r[0] for r in rows])
  n = np.array([r[1] for r in rows])
  word_start = rng.random(ids.shape) < 0.6
  args = dict(special_ids=(CLS, SEP, PAD), vocab_size=VOCAB_SIZE,
              mask_id=MASK, masked_lm_prob=0.15, max_predictions_per_seq=20)
  out, pos, labels, w = masking.create_masked_lm_predictions_batch(
      ids, n, rng, word_start=word_start, **args)
  first_in = [[], []]
  tf1_rng = random.Random(8)
  for i in range(len(ids)):
    cand = [p for p in range(n[i]) if ids[i, p] not in (CLS, SEP, PAD)]
    words = []
    for p in cand:  # TF1's grouping: a continuation joins the last word
      if words and not word_start[i, p]:
        words[-1].append(p)
      else:
        words.append([p])
    k = min(20, max(1, int(round(n[i] * 0.15))))
    chosen = set(pos[i, w[i] > 0].tolist())
    taken = [wd for wd in words if set(wd) <= chosen]
    assert chosen == {p for wd in taken for p in wd}
    assert len(chosen) <= k
    assert all(len(wd) > k - len(chosen) for wd in words if wd not in taken)
    np.testing.assert_array_equal(labels[i, w[i] > 0], ids[i, sorted(chosen)])
    first_in[0].append(set(words[0]) <= chosen)
    # TF1's loop, literally: shuffle the words, take each that fits.
    order = list(range(len(words)))
    tf1_rng.shuffle(order)
    tf1_chosen = set()
    for g in order:
      if len(tf1_chosen) >= k:
        break
      if len(tf1_chosen) + len(words[g]) > k:
        continue
      tf1_chosen |= set(words[g])
    first_in[1].append(set(words[0]) <= tf1_chosen)
  a, b = np.mean(first_in[0]), np.mean(first_in[1])
  assert abs(a - b) < 5 * np.sqrt(a * (1 - a) * 2 / len(ids)), (a, b)


def test_row_random_is_uniform_and_keyed_by_row():
  keys = masking.row_keys(5, 77, np.arange(4000))
  assert len(set(keys.tolist())) == 4000
  rng = masking.RowRandom(keys)
  u = rng.random((4000, 128))
  n = u.size
  assert (u >= 0).all() and (u < 1).all()
  # Moments and a 100-bin chi-square against the uniform distribution.
  assert abs(u.mean() - 0.5) < 5 * np.sqrt(1 / 12 / n)
  assert abs(u.var() - 1 / 12) < 0.002
  counts = np.histogram(u, bins=100, range=(0, 1))[0]
  chi2 = ((counts - n / 100) ** 2 / (n / 100)).sum()
  assert chi2 < 99 + 5 * np.sqrt(2 * 99)  # mean 99, sd sqrt(198)
  # No correlation between neighbouring columns, rows, or draws.
  for a, b in ((u[:, 1:], u[:, :-1]), (u[1:], u[:-1]),
               (u, rng.random((4000, 128)))):
    assert abs(np.corrcoef(a.ravel(), b.ravel())[0, 1]) < 5 / np.sqrt(n)
  ints = rng.integers(0, 7, (4000, 128), dtype=np.int32)
  assert ints.dtype == np.int32 and set(np.unique(ints)) == set(range(7))
  assert (np.abs(np.bincount(ints.ravel()) - n / 7)
          < 5 * np.sqrt(n / 7)).all()
  # A row's numbers depend on its key alone, not on the batch around it.
  whole = masking.RowRandom(keys[:10])
  alone = masking.RowRandom(keys[7:8])
  np.testing.assert_array_equal(whole.random((10, 16))[7],
                                alone.random((1, 16))[0])
  np.testing.assert_array_equal(whole.integers(0, 30522, (10, 5))[7],
                                alone.integers(0, 30522, (1, 5))[0])
