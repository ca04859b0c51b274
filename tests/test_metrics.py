"""bert_jax.metrics against sklearn/scipy and hand-computed values."""

import math

import numpy as np
import pytest
from scipy import stats
from sklearn import metrics as sk

from bert_jax import metrics

PRED = np.array([1, 0, 1, 1, 0, 1, 0, 0, 1, 1])
GOLD = np.array([1, 0, 0, 1, 0, 1, 1, 0, 1, 0])
SCORES = np.array([0.1, 2.5, 3.9, 4.8, 1.2, 2.0, 3.3])
GOLD_SCORES = np.array([0.0, 3.0, 3.5, 5.0, 2.0, 1.8, 2.9])


def test_each_metric_matches_sklearn_and_scipy():
  assert metrics.accuracy(PRED, GOLD) == sk.accuracy_score(GOLD, PRED)
  assert metrics.f1(PRED, GOLD) == sk.f1_score(GOLD, PRED)
  assert metrics.matthews_corrcoef(PRED, GOLD) == sk.matthews_corrcoef(
      GOLD, PRED)
  assert metrics.pearson(SCORES, GOLD_SCORES) == pytest.approx(
      stats.pearsonr(SCORES, GOLD_SCORES)[0], abs=1e-12)
  assert metrics.spearman(SCORES, GOLD_SCORES) == pytest.approx(
      stats.spearmanr(SCORES, GOLD_SCORES)[0], abs=1e-12)


def test_hand_computed_values():
  # PRED vs GOLD: tp=4 (0,3,5,8), tn=3 (1,4,7), fp=2 (2,9), fn=1 (6).
  tp, tn, fp, fn = 4, 3, 2, 1
  assert metrics.accuracy(PRED, GOLD) == pytest.approx(7 / 10)
  precision, recall = tp / (tp + fp), tp / (tp + fn)
  assert metrics.f1(PRED, GOLD) == pytest.approx(
      2 * precision * recall / (precision + recall))
  mcc = (tp * tn - fp * fn) / math.sqrt(
      (tp + fp) * (tp + fn) * (tn + fp) * (tn + fn))
  assert metrics.matthews_corrcoef(PRED, GOLD) == pytest.approx(mcc)
  # Pearson by its definition; Spearman: a monotone map keeps ranks.
  x, y = SCORES - SCORES.mean(), GOLD_SCORES - GOLD_SCORES.mean()
  r = (x * y).sum() / math.sqrt((x * x).sum() * (y * y).sum())
  assert metrics.pearson(SCORES, GOLD_SCORES) == pytest.approx(r)
  assert metrics.spearman(SCORES, np.exp(SCORES)) == pytest.approx(1.0)
  assert metrics.spearman([1, 2, 3], [3, 2, 1]) == pytest.approx(-1.0)


def test_classification_metrics_names_and_kinds():
  m = metrics.classification_metrics("accuracy", PRED, GOLD)
  assert m == {"eval_accuracy": pytest.approx(0.7)}
  m = metrics.classification_metrics("accuracy_f1", PRED, GOLD)
  assert set(m) == {"eval_accuracy", "eval_f1"}
  m = metrics.classification_metrics("matthews", PRED, GOLD, prefix="")
  assert set(m) == {"matthews_corrcoef", "accuracy"}
  m = metrics.classification_metrics("pearson_spearman", SCORES, GOLD_SCORES)
  assert set(m) == {"eval_pearson", "eval_spearman",
                    "eval_pearson_spearman_corr"}
  assert m["eval_pearson_spearman_corr"] == pytest.approx(
      (m["eval_pearson"] + m["eval_spearman"]) / 2)
  assert all(isinstance(v, float) and not isinstance(v, np.floating)
             for v in m.values())
  with pytest.raises(ValueError, match="metric kind 'f2'"):
    metrics.classification_metrics("f2", PRED, GOLD)


def test_degenerate_input():
  with pytest.raises(ValueError, match="no examples"):
    metrics.accuracy([], [])
  with pytest.raises(ValueError, match="3 predictions for 2 labels"):
    metrics.matthews_corrcoef([0, 1, 1], [0, 1])
  with pytest.raises(ValueError, match="1-D"):
    metrics.accuracy(np.zeros((2, 3)), [0, 1])
  with pytest.raises(ValueError, match="at least 2"):
    metrics.pearson([1.0], [2.0])
  with pytest.raises(ValueError, match="class ids 0 and 1"):
    metrics.f1([0, 2], [0, 1])
  # A constant prediction: Matthews 0.0 (sklearn), correlations nan (scipy).
  assert metrics.matthews_corrcoef([1, 1, 1, 1], [0, 1, 0, 1]) == 0.0
  assert metrics.f1([0, 0], [0, 0]) == 0.0
  assert math.isnan(metrics.pearson([2.0, 2.0, 2.0], [1.0, 2.0, 3.0]))
  assert math.isnan(metrics.spearman([2.0, 2.0, 2.0], [1.0, 2.0, 3.0]))
  m = metrics.classification_metrics("pearson_spearman", [1.0, 1.0],
                                     [0.0, 5.0])
  assert math.isnan(m["eval_pearson_spearman_corr"])
