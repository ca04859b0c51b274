"""Named-entity recognition on CoNLL-2003 (the paper's section 5.3, Table 7).

Data: the CoNLL-2003 column files as distributed, one token a line, `WORD
POS CHUNK NER` (only the first and the last column are read, so 2-column
files work too), a blank line between sentences and a `-DOCSTART- -X- -X-
O` line between documents: `train.txt`, `valid.txt` (or `dev.txt`), `test.txt`
(or the original `eng.train`, `eng.testa`, `eng.testb`). The tags are taken
as they are: CoNLL-2003 as distributed is IOB1 (`I-X` opens an entity; `B-X`
only where two entities of one type touch), and IOB2 copies (`B-X` opens
every entity) read alike. A tag outside the task's labels (`config.labels`,
by default the 9 CoNLL-2003 tags) is an error naming the file and line.

Features (the paper: "we use the representation of the first sub-token as
the input to the token-level classifier over the NER label set"): each word
is cut into WordPiece pieces on its own (a word with no piece becomes
[UNK]); only its first piece carries the word's label (`label_weights` 1);
the other pieces, [CLS], [SEP] and padding weigh 0 in the loss and are not
predicted. A sentence longer than `max_seq_length - 2` pieces is cut at word
boundaries into several windows, so every word is scored exactly once (a
single word of more pieces keeps its first ones). With `document_context`
(the paper: "we include the maximal document context provided by the
data") each window is filled with the pieces around its words in the same
document, as evenly on both sides as the document allows; the context is
read but not scored. Without it the context is the rest of the sentence
only.

Metrics: entity-level precision, recall and F1 as `conlleval` computes
them, through seqeval in its default (conlleval-compatible) mode: a chunk
opens at `B-X`, at `I-X` after `O` or after another type, and closes at
the sentence end, so IOB1 and IOB2 tags are scored the same way and no tag
sequence is rejected (seqeval's strict mode would need IOB2); `eval_accuracy`
is conlleval's word accuracy. Dev (`eval_*`) and, when the test file is
there, test (`eval_test_*`) are scored; `predictions/<split>.txt` holds
`WORD GOLD PREDICTED` lines, conlleval's input format.

Models: `config.features` empty fine-tunes `heads.BertForTokenClassification`
(plus a BiLSTM with `config.bilstm`), exported for transformers'
`BertForTokenClassification`; `config.features=F` is Table 7's
feature-based approach: the encoder frozen (`frozen_params`), features F,
a BiLSTM of `lstm_layers` x `lstm_units` and a classifier.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

from bert_jax import heads
from bert_jax import pretrained
from bert_jax.tasks import finetuning

TASK_NAMES = ("conll2003",)
# CoNLL-2003's tags in both IOB1 and IOB2 spellings (B-PER occurs in IOB2
# copies; the IOB1 files use B- only between touching entities).
CONLL2003_LABELS = ("O", "B-PER", "I-PER", "B-ORG", "I-ORG", "B-LOC",
                    "I-LOC", "B-MISC", "I-MISC")
DOCSTART = "-DOCSTART-"
# split -> the file names it may have, the first found is read.
SPLIT_FILES = {"train": ("train.txt", "eng.train"),
               "dev": ("valid.txt", "dev.txt", "eng.testa"),
               "test": ("test.txt", "eng.testb")}


@dataclasses.dataclass
class Sentence:
  """One sentence of a CoNLL file."""
  guid: str  # "<split>-<index>"
  words: list[str]
  tags: list[str]
  document: int  # index of its document in the file (0 before any DOCSTART)
  line: int  # 1-based line of its first word


# -- reading -----------------------------------------------------------------

def read_conll(path: str, labels: Sequence[str], split: str = "train"
               ) -> list[Sentence]:
  """The sentences of a CoNLL column file, in file order.

  Raises ValueError naming the file and line for a line without a tag
  column, a tag outside `labels`, or bytes that are not UTF-8.
  """
  allowed = set(labels)
  out: list[Sentence] = []
  words: list[str] = []
  tags: list[str] = []
  document, first_line = 0, 0

  def close():
    if words:
      out.append(Sentence(f"{split}-{len(out)}", list(words), list(tags),
                          document, first_line))
      words.clear()
      tags.clear()

  with open(path, "rb") as f:
    for n, raw in enumerate(f, 1):
      try:
        line = raw.decode("utf-8")
      except UnicodeDecodeError as e:
        raise ValueError(f"{path}:{n}: not UTF-8 text ({e.reason})") from None
      fields = line.split()
      if not fields:
        close()
        continue
      if fields[0] == DOCSTART:
        close()
        if out or document:
          document += 1
        continue
      if len(fields) < 2:
        raise ValueError(f"{path}:{n}: expected 'WORD ... TAG' columns, got "
                         f"{line.strip()!r}")
      tag = fields[-1]
      if tag not in allowed:
        raise ValueError(f"{path}:{n}: label {tag!r} is not one of the "
                         f"task's labels ({', '.join(labels)})")
      if not words:
        first_line = n
      words.append(fields[0])
      tags.append(tag)
  close()
  return out


def find_split_file(data_dir: str, split: str) -> str | None:
  for name in SPLIT_FILES[split]:
    path = os.path.join(data_dir, name)
    if os.path.exists(path):
      return path
  return None


# -- features ----------------------------------------------------------------

def word_pieces(tokenizer, sentences: Sequence[Sentence]
                ) -> list[list[list[int]]]:
  """Piece ids of every word of every sentence, each word cut on its own
  (a word with no piece, e.g. only control characters, becomes [UNK])."""
  vocab = sorted({w for s in sentences for w in s.words})
  ids = dict(zip(vocab, tokenizer.encode_batch(vocab)))
  unk = tokenizer.vocab["[UNK]"]
  return [[ids[w] or [unk] for w in s.words] for s in sentences]


@dataclasses.dataclass
class Window:
  """One feature row: its pieces and the words it scores."""
  sentence: int  # index into the split's sentences
  piece_ids: list[int]  # without [CLS] / [SEP]
  words: list[int]  # the scored words (indices into the sentence)
  positions: list[int]  # their first pieces' positions in the row ([CLS]=0)


def _chunks(lengths: Sequence[int], budget: int) -> list[tuple[int, int]]:
  """Consecutive word ranges of at most `budget` pieces each."""
  out, start, used = [], 0, 0
  for i, n in enumerate(lengths):
    if used + n > budget and i > start:
      out.append((start, i))
      start, used = i, 0
    used += n
  out.append((start, len(lengths)))
  return out


def make_windows(pieces: Sequence[list[list[int]]],
                 sentences: Sequence[Sentence], max_seq_length: int,
                 document_context: bool) -> list[Window]:
  """The windows that score every word of `sentences` exactly once.

  `pieces[s][w]`: piece ids of word w of sentence s. Each sentence is cut
  into word ranges of at most max_seq_length - 2 pieces; each range gets
  context from its sentence (or, with `document_context`, from its
  document) on both sides: half the room left over on each side, the
  rest of it on the side that has more.
  """
  budget = max_seq_length - 2
  if budget < 1:
    raise ValueError(f"max_seq_length={max_seq_length} leaves no room for "
                     "a word between [CLS] and [SEP]")
  windows: list[Window] = []
  i = 0
  while i < len(sentences):  # one document at a time
    j = i
    while j < len(sentences) and (sentences[j].document
                                  == sentences[i].document):
      j += 1
    # The document's pieces in one stream; a word keeps at most `budget`.
    stream: list[int] = []
    starts: list[list[int]] = []
    bounds: list[tuple[int, int]] = []
    for s in range(i, j):
      first = len(stream)
      starts.append([])
      for word in pieces[s]:
        starts[-1].append(len(stream))
        stream += word[:budget]
      bounds.append((first, len(stream)))
    for s in range(i, j):
      lo, hi = (0, len(stream)) if document_context else bounds[s - i]
      word_starts = starts[s - i] + [bounds[s - i][1]]
      lengths = np.diff(word_starts)
      for w0, w1 in _chunks(lengths, budget):
        a, b = word_starts[w0], word_starts[w1]
        room = budget - (b - a)
        left_avail, right_avail = a - lo, hi - b
        left = min(left_avail, max(room // 2, room - right_avail))
        right = min(right_avail, room - left)
        begin = a - left
        windows.append(Window(
            s, stream[begin:b + right], list(range(w0, w1)),
            [1 + word_starts[w] - begin for w in range(w0, w1)]))
    i = j
  return windows


def window_features(windows: Sequence[Window], sentences: Sequence[Sentence],
                    label_ids: dict[str, int], max_seq_length: int,
                    cls_id: int, sep_id: int) -> dict[str, np.ndarray]:
  """[CLS] pieces [SEP], zero-padded; labels at the scored first pieces."""
  n, length = len(windows), max_seq_length
  out = {k: np.zeros((n, length), np.int32)
         for k in ("input_ids", "input_mask", "segment_ids", "label_ids")}
  out["label_weights"] = np.zeros((n, length), np.float32)
  for r, win in enumerate(windows):
    ids = [cls_id, *win.piece_ids, sep_id]
    out["input_ids"][r, :len(ids)] = ids
    out["input_mask"][r, :len(ids)] = 1
    tags = sentences[win.sentence].tags
    for w, p in zip(win.words, win.positions):
      out["label_ids"][r, p] = label_ids[tags[w]]
      out["label_weights"][r, p] = 1.0
  return out


def word_predictions(windows: Sequence[Window],
                     sentences: Sequence[Sentence], predicted_BxL: np.ndarray,
                     labels: Sequence[str]) -> list[list[str]]:
  """Each word's predicted tag, read at its first piece."""
  out: list[list[str | None]] = [[None] * len(s.words) for s in sentences]
  for win, row in zip(windows, predicted_BxL):
    for w, p in zip(win.words, win.positions):
      out[win.sentence][w] = labels[int(row[p])]
  missing = sum(t is None for s in out for t in s)
  if missing:
    raise RuntimeError(f"{missing} words were not scored by any window")
  return out  # pytype: disable=bad-return-type


# -- the metric --------------------------------------------------------------

def entity_scores(gold: Sequence[Sequence[str]],
                  predicted: Sequence[Sequence[str]]) -> dict[str, float]:
  """conlleval's entity precision / recall / F1 and word accuracy (seqeval,
  default mode: conlleval's chunking, for IOB1 and IOB2 alike).

  Scores are fractions (conlleval prints percentages); a set with no
  predicted (or no gold) entity scores 0 where the ratio is undefined.
  """
  from seqeval import metrics as seqeval_metrics  # pylint: disable=g-import-not-at-top
  y_true = [list(s) for s in gold]
  y_pred = [list(s) for s in predicted]
  return {
      "eval_precision": float(seqeval_metrics.precision_score(
          y_true, y_pred, zero_division=0)),
      "eval_recall": float(seqeval_metrics.recall_score(
          y_true, y_pred, zero_division=0)),
      "eval_f1": float(seqeval_metrics.f1_score(y_true, y_pred,
                                                zero_division=0)),
      "eval_accuracy": float(seqeval_metrics.accuracy_score(y_true, y_pred)),
  }


# -- the task ----------------------------------------------------------------

class NerTask(finetuning.FinetuneTask):
  """CoNLL-2003 NER: fine-tuned, + BiLSTM, or feature-based (Table 7)."""

  objective = "token_classification"
  can_pack = True
  token_level = True

  def __init__(self, config):
    super().__init__(config)
    self._last_eval: dict[str, list[list[str]]] = {}

  @property
  def labels(self) -> tuple[str, ...]:
    return tuple(self.config.labels) or CONLL2003_LABELS

  @property
  def features(self) -> str:
    return self.config.features

  @property
  def uses_bilstm(self) -> bool:
    return bool(self.config.bilstm or self.features)

  # -- checks and data ---------------------------------------------------

  def validate_data(self, check) -> None:
    c = self.config
    check(find_split_file(c.data_dir, "train") is not None,
          f"config.data_dir={c.data_dir!r} has none of "
          f"{', '.join(SPLIT_FILES['train'])}")
    check(find_split_file(c.data_dir, "dev") is not None,
          f"config.data_dir={c.data_dir!r} has none of "
          f"{', '.join(SPLIT_FILES['dev'])}")
    check(not c.features or c.features in heads.FEATURES,
          f"config.features={c.features!r} not in {heads.FEATURES}")
    check(len(set(self.labels)) == len(self.labels) and "O" in self.labels,
          f"config.labels={self.labels}: distinct tags including 'O'")
    check(c.lstm_units >= 0 and c.lstm_layers > 0,
          f"config.lstm_units={c.lstm_units} must be >= 0 (0: the "
          f"encoder's width) and config.lstm_layers={c.lstm_layers} "
          "positive")

  def validate(self, check) -> None:
    super().validate(check)
    if self.features:
      try:
        heads.feature_layers(self.features, self.model_config().num_layers)
      except ValueError as e:
        check(False, f"config.features: {e}")

  def read_data(self, tokenizer) -> None:
    c = self.config
    label_ids = {t: i for i, t in enumerate(self.labels)}
    special = [tokenizer.vocab.get(t) for t in ("[CLS]", "[SEP]", "[UNK]")]
    if None in special:
      raise ValueError(f"{tokenizer.vocab_file}: the vocab needs [CLS], "
                       "[SEP] and [UNK]")

    def load(split):
      path = find_split_file(c.data_dir, split)
      sentences = read_conll(path, self.labels, split)
      if not sentences:
        raise ValueError(f"{path}: no sentences")
      windows = make_windows(word_pieces(tokenizer, sentences), sentences,
                             c.max_seq_length, c.document_context)
      features = window_features(windows, sentences, label_ids,
                                 c.max_seq_length, special[0], special[1])
      return finetuning.Split(split, sentences, features,
                              [s.tags for s in sentences],
                              {"windows": windows, "path": path})

    self.train = load("train")
    self.evals = [load("dev")]
    if find_split_file(c.data_dir, "test") is not None:
      self.evals.append(load("test"))

  def head_description(self) -> str:
    return f"token classifier ({len(self.labels)} labels)"

  @property
  def init_report(self) -> str:
    report = super().init_report
    if self.features:
      report += (f"; feature-based: encoder frozen, features "
                 f"{self.features}")
    return report

  # -- the model and objective -------------------------------------------

  def build_model(self, cfg, rngs):
    c = self.config
    return heads.BertForTokenClassification(
        cfg, len(self.labels), bilstm=c.bilstm, features=c.features,
        lstm_units=c.lstm_units, lstm_layers=c.lstm_layers, rngs=rngs)

  def frozen_params(self):
    return ("bert",) if self.features else ()

  def _logits(self, model, batch, rng):
    return model(batch["input_ids"], batch["segment_ids"],
                 batch["input_mask"], rng=rng,
                 packed=self.packed_inputs(batch))

  def denominators(self, batch):
    return (jnp.sum(batch["label_weights"]),)

  def loss(self, model, batch, rng, denominators=None):
    logits = self._logits(model, batch, rng)
    weights = batch["label_weights"]
    nll = optax.softmax_cross_entropy_with_integer_labels(
        logits, batch["label_ids"]) * weights
    total = (denominators[0] if denominators is not None
             else jnp.sum(weights))
    correct = (jnp.argmax(logits, -1) == batch["label_ids"]) * weights
    sums = {"loss_sum": jnp.sum(nll), "accuracy_correct": jnp.sum(correct),
            "accuracy_weight": jnp.sum(weights),
            "example_count": jnp.float32(logits.shape[0])}
    return jnp.sum(nll) / jnp.maximum(total, 1.0), sums

  def summarize_train(self, sums):
    words = max(sums["accuracy_weight"], 1e-9)
    return {"loss": sums["loss_sum"] / words,
            "accuracy": sums["accuracy_correct"] / words}

  def batch_spec(self, batch_size, seq_len=None):
    seq_len = seq_len or self.config.max_seq_length
    spec = (self.packed_spec(batch_size, seq_len) if self.packs else
            {k: ((batch_size, seq_len), jnp.int32)
             for k in ("input_ids", "input_mask", "segment_ids")})
    spec["label_ids"] = ((batch_size, seq_len), jnp.int32)
    spec["label_weights"] = ((batch_size, seq_len), jnp.float32)
    spec["example_index"] = ((batch_size,), jnp.int32)
    return spec

  # -- evaluation --------------------------------------------------------

  def eval_outputs(self, model, batch):
    logits = self._logits(model, batch, None)
    weights = batch["label_weights"]
    nll = optax.softmax_cross_entropy_with_integer_labels(
        logits, batch["label_ids"]) * weights
    predicted = jnp.argmax(logits, -1).astype(jnp.int32)
    # Batches are cut to their longest row; one width for every batch so
    # that the host can stack them.
    pad = self.config.max_seq_length - predicted.shape[1]
    return {"predicted": jnp.pad(predicted, ((0, 0), (0, pad))),
            "nll_sum": jnp.sum(nll, -1), "weight": jnp.sum(weights, -1),
            "example_index": batch["example_index"]}

  def evaluate(self, run_eval, step):
    del step
    metrics: dict[str, Any] = {}
    for i, split in enumerate(self.evals):
      out = self.split_outputs(run_eval, split,
                               ("predicted", "nll_sum", "weight"))
      predicted = word_predictions(split.extra["windows"], split.examples,
                                   out["predicted"], self.labels)
      self._last_eval[split.name] = predicted
      m = entity_scores(split.labels, predicted)
      m["eval_loss"] = float(np.sum(out["nll_sum"])
                             / max(np.sum(out["weight"]), 1.0))
      tag = "" if i == 0 else f"{split.name}_"
      metrics.update({k.replace("eval_", f"eval_{tag}", 1): v
                      for k, v in m.items()})
    return metrics

  # -- the end -----------------------------------------------------------

  def write_outputs(self, params, workdir, run_eval):
    del run_eval
    out: dict[str, Any] = {}
    files = {}
    if jax.process_index() == 0:
      for split in self.evals:
        files[split.name] = write_conll_predictions(
            os.path.join(workdir, "predictions", f"{split.name}.txt"),
            split.examples, self._last_eval[split.name])
    out["predictions"] = files
    out.update(self.export_hf(params, workdir,
                              pretrained.export_hf_token_classifier,
                              labels=list(self.labels)))
    return out


def write_conll_predictions(path: str, sentences: Sequence[Sentence],
                            predicted: Sequence[Sequence[str]]) -> str:
  """`WORD GOLD PREDICTED` lines, a blank line after each sentence: the
  input `conlleval` reads."""
  os.makedirs(os.path.dirname(path), exist_ok=True)
  tmp = path + ".tmp"
  with open(tmp, "w", encoding="utf-8") as f:
    for s, tags in zip(sentences, predicted):
      for word, gold, guess in zip(s.words, s.tags, tags):
        f.write(f"{word} {gold} {guess}\n")
      f.write("\n")
  os.replace(tmp, path)
  return path
