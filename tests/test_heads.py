"""The pre-training losses, checked against their formulas written out."""

import jax.numpy as jnp
import numpy as np

from bert_jax import heads


def _nll(logits, label):
  logits = np.asarray(logits, np.float64)
  return np.log(np.exp(logits).sum()) - logits[label]


def test_pretraining_loss_matches_formula():
  rng = np.random.default_rng(0)
  logits = rng.normal(size=(2, 3, 7)).astype(np.float32)
  nsp = rng.normal(size=(2, 2)).astype(np.float32)
  labels = rng.integers(0, 7, (2, 3))
  weights = np.array([[1, 1, 0], [1, 0, 0]], np.float32)
  nsp_labels = np.array([[0], [1]])
  out = heads.PretrainingOutput(jnp.asarray(logits), jnp.asarray(nsp))
  loss, metrics = heads.pretraining_loss(out, {
      "masked_lm_ids": labels, "masked_lm_weights": weights,
      "next_sentence_labels": nsp_labels})
  mlm = sum(weights[b, p] * _nll(logits[b, p], labels[b, p])
            for b in range(2) for p in range(3)) / (weights.sum() + 1e-5)
  nsp_mean = np.mean([_nll(nsp[b], nsp_labels[b, 0]) for b in range(2)])
  np.testing.assert_allclose(loss, mlm + nsp_mean, rtol=1e-5)
  assert metrics["mlm_weight"] == 3


def _ltr_formula(logits, ids, mask, shift=1):
  """Mean NLL of position t on token t + shift, as TF1-style loops would.

  Counted: the positions t whose token t+1 is real (with right padding, t
  is then real too; the last position has no next token).
  """
  terms, correct = [], 0
  for b in range(ids.shape[0]):
    for t in range(ids.shape[1] - 1):
      if mask[b, t + 1]:
        label = ids[b, t + shift]
        terms.append(_nll(logits[b, t], label))
        correct += int(np.argmax(logits[b, t]) == label)
  return sum(terms) / (len(terms) + 1e-5), len(terms), correct


def test_ltr_loss_scores_each_position_on_the_next_token():
  rng = np.random.default_rng(0)
  vocab, length = 11, 6
  ids = rng.integers(1, vocab, (3, length))
  mask = np.array([[1] * 6, [1] * 4 + [0] * 2, [1] * 2 + [0] * 4])
  ids = ids * mask
  logits = 3.0 * rng.normal(size=(3, length, vocab)).astype(np.float32)
  # Make some predictions right, so lm_correct is checked on both sides.
  for b, t in ((0, 0), (0, 3), (1, 2)):
    logits[b, t, ids[b, t + 1]] += 20.0
  out = heads.PretrainingOutput(jnp.asarray(logits), None)
  batch = {"input_ids": jnp.asarray(ids), "input_mask": jnp.asarray(mask)}
  loss, metrics = heads.ltr_loss(out, batch)
  want, count, correct = _ltr_formula(logits, ids, mask)
  assert count == 5 + 3 + 1 and correct >= 3
  np.testing.assert_allclose(loss, want, rtol=1e-5)
  assert metrics["lm_weight"] == count
  assert metrics["lm_correct"] == correct
  np.testing.assert_allclose(metrics["lm_loss_sum"], want * (count + 1e-5),
                             rtol=1e-5)
  # A shifted-label bug (position t scored on token t) is far outside the
  # tolerance above; counting the last real position (whose next token is
  # padding) or padding would change lm_weight.
  shifted, _, _ = _ltr_formula(logits, ids, mask, shift=0)
  assert abs(shifted - want) > 0.1 * want
  # A micro-batch's share of a larger batch's denominator.
  part, _ = heads.ltr_loss(out, batch, (jnp.float32(2 * count), None))
  np.testing.assert_allclose(part, want * (count + 1e-5) / (2 * count + 1e-5),
                             rtol=1e-5)
