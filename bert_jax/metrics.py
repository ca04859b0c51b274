"""Evaluation metrics for sentence (pair) classification and regression.

Thin wrappers over scikit-learn and scipy, so the numbers are the ones every
other BERT implementation reports (TF1 `run_classifier.py` computes accuracy
with `tf.metrics.accuracy`; GLUE's own scorer and HF's `glue` metric use
these very sklearn/scipy functions for F1, Matthews and the correlations).

Conventions for degenerate input, chosen to match sklearn/scipy rather than
to invent a value:
- empty or mismatched arrays raise ValueError (a metric of nothing is a bug
  upstream, not a score);
- Matthews correlation of a constant prediction (or constant labels) is 0.0,
  as `sklearn.metrics.matthews_corrcoef` returns;
- F1 with no predicted and no true positives is 0.0 (`zero_division=0.0`);
- Pearson and Spearman of a constant input are nan (the correlation is
  undefined; scipy returns nan), and so is their mean. The warning scipy
  raises for it is silenced: the nan says it.
"""

from __future__ import annotations

import warnings

import numpy as np
from scipy import stats
from sklearn import metrics as sk_metrics

# The metric families of the GLUE tasks (see `classification_metrics`).
KINDS = ("accuracy", "accuracy_f1", "matthews", "pearson_spearman")


def _pair(predictions, labels, name: str) -> tuple[np.ndarray, np.ndarray]:
  """Both arrays as 1-D numpy, or a ValueError naming what is wrong."""
  p = np.asarray(predictions)
  y = np.asarray(labels)
  if p.ndim != 1 or y.ndim != 1:
    raise ValueError(f"{name}: predictions and labels must be 1-D, got "
                     f"shapes {p.shape} and {y.shape} (pass class ids, not "
                     "logits)")
  if p.shape != y.shape:
    raise ValueError(f"{name}: {p.shape[0]} predictions for {y.shape[0]} "
                     "labels")
  if p.shape[0] == 0:
    raise ValueError(f"{name}: no examples (empty predictions and labels)")
  return p, y


def accuracy(predictions, labels) -> float:
  """Fraction of predictions equal to the label."""
  p, y = _pair(predictions, labels, "accuracy")
  return float(sk_metrics.accuracy_score(y, p))


def f1(predictions, labels) -> float:
  """Binary F1 of class 1 (MRPC 'equivalent', QQP 'duplicate')."""
  p, y = _pair(predictions, labels, "f1")
  extra = sorted(set(np.unique(p).tolist()) | set(np.unique(y).tolist()))
  if not set(extra) <= {0, 1}:
    raise ValueError(f"f1: binary F1 needs class ids 0 and 1, got {extra}")
  return float(sk_metrics.f1_score(y, p, pos_label=1, average="binary",
                                   zero_division=0.0))


def matthews_corrcoef(predictions, labels) -> float:
  """Matthews correlation (CoLA); 0.0 when either side is constant."""
  p, y = _pair(predictions, labels, "matthews_corrcoef")
  return float(sk_metrics.matthews_corrcoef(y, p))


def _correlation(fn, predictions, labels, name: str) -> float:
  p, y = _pair(predictions, labels, name)
  if p.shape[0] < 2:
    raise ValueError(f"{name}: a correlation needs at least 2 examples, got "
                     f"{p.shape[0]}")
  with warnings.catch_warnings():
    # Constant input: scipy warns and returns nan, which is the answer.
    warnings.simplefilter("ignore", stats.ConstantInputWarning)
    return float(fn(p.astype(np.float64), y.astype(np.float64)).statistic)


def pearson(predictions, labels) -> float:
  """Pearson correlation (STS-B); nan for a constant input."""
  return _correlation(stats.pearsonr, predictions, labels, "pearson")


def spearman(predictions, labels) -> float:
  """Spearman rank correlation (STS-B); nan for a constant input."""
  return _correlation(stats.spearmanr, predictions, labels, "spearman")


def classification_metrics(kind: str, predictions, labels,
                           prefix: str = "eval_") -> dict[str, float]:
  """The metrics of one GLUE metric family, under TF1's `eval_*` names.

  Args:
    kind: 'accuracy' (SST-2, MNLI, QNLI, RTE, WNLI); 'accuracy_f1' (MRPC,
      QQP); 'matthews' (CoLA: Matthews correlation, and accuracy too);
      'pearson_spearman' (STS-B regression: Pearson, Spearman and their mean
      `pearson_spearman_corr`, as HF's GLUE metric reports it).
    predictions: 1-D class ids (or scores for 'pearson_spearman').
    labels: 1-D gold class ids (or scores), same length.
    prefix: put before every name (TF1's estimator writes `eval_accuracy`).

  Returns:
    Python floats keyed `{prefix}accuracy`, `{prefix}f1`,
    `{prefix}matthews_corrcoef`, `{prefix}pearson`, `{prefix}spearman`,
    `{prefix}pearson_spearman_corr`, whichever the kind has.
  """
  if kind == "accuracy":
    out = {"accuracy": accuracy(predictions, labels)}
  elif kind == "accuracy_f1":
    out = {"accuracy": accuracy(predictions, labels),
           "f1": f1(predictions, labels)}
  elif kind == "matthews":
    out = {"matthews_corrcoef": matthews_corrcoef(predictions, labels),
           "accuracy": accuracy(predictions, labels)}
  elif kind == "pearson_spearman":
    p, s = pearson(predictions, labels), spearman(predictions, labels)
    out = {"pearson": p, "spearman": s, "pearson_spearman_corr": (p + s) / 2}
  else:
    raise ValueError(f"metric kind {kind!r} is not one of {', '.join(KINDS)}")
  return {prefix + k: float(v) for k, v in out.items()}
