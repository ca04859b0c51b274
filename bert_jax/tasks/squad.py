"""SQuAD 1.1 and 2.0: the original `run_squad.py` on the one training loop.

The data, in the order the original handles it:

- Reading (`read_squad`): each context is split on whitespace into words
  (space, tab, CR, LF and U+202F, as the original), with every character's
  word index; an answer's character offset becomes a word span. Training
  keeps an answer only when its whitespace-cleaned text occurs in that word
  span; others are skipped and counted (`skipped` in results.json), as the
  original skips them. SQuAD 2.0's `is_impossible` questions train towards
  [CLS]; their `plausible_answers` are ignored, as by the original.
- Windows (`make_features`): the words are WordPiece-tokenized one by one,
  the answer's sub-token span is tightened to the tokenized answer text
  where it occurs inside it (the original's `_improve_answer_span`), and a
  context longer than `max_seq_length - len(question) - 3` tokens becomes
  overlapping windows `doc_stride` tokens apart, each `[CLS] question [SEP]
  window [SEP]`. A token's "max context" window is the one where
  min(left, right context) + 0.01 * window length is largest (first on
  ties). Training windows that do not hold the whole answer, and those of
  impossible questions, point start and end at [CLS] (position 0).
- Decoding (`decode`): per example, the `n_best_size` best start and end
  positions of each window form candidate spans, kept when both ends lie in
  the window's context, the start is at its max-context window, end >=
  start and the span has at most `max_answer_length` tokens; candidates are
  ranked by start + end logit, mapped back to the original words, and the
  WordPiece text is aligned with the original characters (the original's
  `get_final_text`: a failed alignment falls back to the whole words).
  SQuAD 2.0 adds the null answer, scored by the *smallest* start[0] +
  end[0] over the example's windows; `null_odds.json` holds null score -
  best non-null span score, and "" is predicted when it exceeds
  `null_score_diff_threshold`.
- Metrics: the official evaluate-v1.1 (`exact_match`, `f1`) and
  evaluate-v2.0 (`exact`, `f1`, HasAns/NoAns splits, and the best
  threshold searched over `null_odds`) scripts' arithmetic: answers
  normalised (lower case, punctuation and a/an/the removed, whitespace
  folded), the max over gold answers.

Where this differs from the original, deliberately:
- Batches are dynamically padded (`finetune.FeatureBatches`), so padding
  positions are left out of the loss's softmax and of the n-best ranking
  (TF1 ranked every one of max_seq_length positions, padding included;
  padding never survives its filters, but could take one of the n-best
  slots, by an amount that here would depend on how a batch was cut).
- Where the original crashes it predicts: a SQuAD 2.0 example with no
  valid span gets a nonce "empty" span of score 0 (as transformers' port
  does), and a context with no tokens has no windows and predicts "" (v1:
  "empty").
- A training question of a 1.1 set without exactly one answer is a
  one-line error naming the file and question (the original raises too).

The flags keep run_squad.py's names: doc_stride, max_query_length,
n_best_size, max_answer_length, version_2_with_negative,
null_score_diff_threshold, train_file, predict_file (default:
`data_dir/{train,dev}-v1.1.json`, or `-v2.0.json`). Steps are counted from
the training *examples*, not windows, as TF1 counts them.
"""

from __future__ import annotations

import collections
import dataclasses
import json
import math
import os
import re
import string
from collections.abc import Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from bert_jax import heads
from bert_jax import tokenization
from bert_jax.tasks import finetuning

TASK_NAMES = ("squad11", "squad20")
_NEG = np.float32(-1e9)  # a padding logit, out of every softmax and ranking


# -- reading -------------------------------------------------------------------

def _is_space(c: str) -> bool:
  """run_squad's whitespace: space, tab, CR, LF and the narrow NBSP."""
  return c in " \t\r\n" or c == "\u202f"


def split_words(text: str) -> tuple[list[str], list[int]]:
  """Whitespace words of `text` and each character's word index.

  A space belongs to the word before it (-1 before the first word).
  """
  words: list[str] = []
  char_to_word: list[int] = []
  after_space = True
  for c in text:
    if _is_space(c):
      after_space = True
    else:
      if after_space:
        words.append(c)
      else:
        words[-1] += c
      after_space = False
    char_to_word.append(len(words) - 1)
  return words, char_to_word


@dataclasses.dataclass
class SquadExample:
  """One question on one context (its words shared by the paragraph's)."""
  qas_id: str
  question_text: str
  doc_tokens: list[str]  # the context's whitespace words
  paragraph: int  # index of the context in the file (for shared work)
  answers: list[str]  # every gold answer text (the metrics' max is over them)
  is_impossible: bool = False
  # The first answer as a word span (training; dev's only for eval_loss);
  # None where there is none or it could not be recovered.
  answer_text: str | None = None
  start_word: int | None = None
  end_word: int | None = None


@dataclasses.dataclass
class SquadFile:
  """A SQuAD json file read: its examples, the gold answers, what was
  skipped."""
  path: str
  examples: list[SquadExample]
  gold: list[tuple[str, list[str]]]  # (id, answer texts) of every question
  skipped: dict[str, int]


def _get(obj: Any, key: str, where: str, kind: type | tuple[type, ...]):
  if not isinstance(obj, dict) or key not in obj:
    raise ValueError(f"{where}: no {key!r} key")
  value = obj[key]
  if not isinstance(value, kind) or isinstance(value, bool):
    want = (kind.__name__ if isinstance(kind, type)
            else " or ".join(k.__name__ for k in kind))
    raise ValueError(f"{where}: {key!r} is a {type(value).__name__}, "
                     f"expected {want}")
  return value


def _answer_span(answer: dict, context: str, char_to_word: list[int],
                 words: list[str], where: str
                 ) -> tuple[str, int, int] | None:
  """(text, first word, last word) of an answer, or None if its
  whitespace-cleaned text is not in those words (the original's check).
  An offset outside the context, or an empty text, raises ValueError."""
  text = _get(answer, "text", where, str)
  offset = _get(answer, "answer_start", where, int)
  if not text:
    raise ValueError(f"{where}: the answer text is empty")
  if offset < 0 or offset + len(text) > len(context):
    raise ValueError(f"{where}: answer_start {offset} + {len(text)} "
                     f"characters is outside its context ({len(context)} "
                     "characters)")
  start = char_to_word[offset]
  end = char_to_word[offset + len(text) - 1]
  # (start is -1 for an answer starting in leading whitespace; the slice
  # then behaves as the original's does.)
  if " ".join(words[start:end + 1]).find(" ".join(text.split())) == -1:
    return None
  return text, start, end


def read_squad(path: str, *, is_training: bool,
               version_2_with_negative: bool) -> SquadFile:
  """The examples of a SQuAD json file (official layout, v1.1 or v2.0).

  Errors (ValueError / FileNotFoundError) name the file and the
  question id or JSON path. Training skips, and counts, answers whose text
  is not in the words their offset points at.
  """
  if not os.path.isfile(path):
    raise FileNotFoundError(f"{path}: no such SQuAD file")
  with open(path, encoding="utf-8") as f:
    try:
      data = json.load(f)
    except json.JSONDecodeError as e:
      raise ValueError(f"{path}: not valid JSON ({e})") from e
  articles = _get(data, "data", f"{path}: the top level", list)
  examples: list[SquadExample] = []
  gold: list[tuple[str, list[str]]] = []
  skipped = collections.Counter()
  if is_training:
    skipped["answer_not_found"] = 0  # reported even when nothing is
  paragraph_index = 0
  for i, article in enumerate(articles):
    for j, paragraph in enumerate(_get(article, "paragraphs",
                                       f"{path}: data[{i}]", list)):
      where_p = f"{path}: data[{i}].paragraphs[{j}]"
      context = _get(paragraph, "context", where_p, str)
      words, char_to_word = split_words(context)
      for k, qa in enumerate(_get(paragraph, "qas", where_p, list)):
        qid = str(_get(qa, "id", f"{where_p}.qas[{k}]", (str, int)))
        where = f"{path}: question {qid!r}"
        question = _get(qa, "question", where, str)
        answers = _get(qa, "answers", where, list)
        texts = [_get(a, "text", where, str) for a in answers]
        gold.append((qid, texts))
        impossible = bool(qa.get("is_impossible", not answers)
                          if version_2_with_negative else False)
        example = SquadExample(qid, question, words, paragraph_index, texts,
                               impossible)
        if is_training and not impossible and len(answers) != 1:
          raise ValueError(
              f"{where}: {len(answers)} answers; a training question needs "
              "exactly 1" + ("" if version_2_with_negative else
                             " (a SQuAD 2.0 file? use "
                             "configs/finetune.py:squad20)"))
        if not impossible and answers:
          try:
            span = _answer_span(answers[0], context, char_to_word, words,
                                where)
          except ValueError:
            if is_training:
              raise
            span = None  # dev answers only label eval_loss's windows
          if span is None and is_training:
            skipped["answer_not_found"] += 1
            continue
          if span is not None:
            example.answer_text, example.start_word, example.end_word = span
        if not words:
          skipped["context_without_words"] += 1
        examples.append(example)
      paragraph_index += 1
  return SquadFile(path, examples, gold, dict(skipped))


# -- windows -------------------------------------------------------------------

@dataclasses.dataclass
class Features:
  """Windows of a list of examples, as arrays (one row per window)."""
  arrays: dict[str, np.ndarray]  # input_ids, input_mask, segment_ids, ...
  example_of: np.ndarray  # [F] the example each window belongs to
  tokens: list[list[str]]  # each window's tokens, unpadded
  token_to_word: np.ndarray  # [F, L] context word of each position, or -1
  max_context: np.ndarray  # [F, L] bool: the token's max-context window
  labelled: np.ndarray  # [F] bool: start/end_positions hold a label

  @property
  def num_features(self) -> int:
    return len(self.example_of)


def tighten_span(doc_tokens: Sequence[str], start: int, end: int,
                 answer_tokens: Sequence[str]) -> tuple[int, int]:
  """The first sub-span of [start, end] whose tokens are the answer's.

  The character annotation only gives whole words ("(1895-1943)." for the
  answer 1895); after WordPiece the answer's own tokens may be found inside
  them. Else the span stays as it is.
  """
  n = len(answer_tokens)
  if n:
    for s in range(start, end - n + 2):
      if list(doc_tokens[s:s + n]) == list(answer_tokens):
        return s, s + n - 1
  return start, end


def doc_windows(num_tokens: int, max_tokens: int, doc_stride: int
                ) -> list[tuple[int, int]]:
  """(start, length) of the sliding windows over a context's tokens."""
  windows = []
  start = 0
  while start < num_tokens:
    length = min(num_tokens - start, max_tokens)
    windows.append((start, length))
    if start + length == num_tokens:
      break
    start += min(length, doc_stride)
  return windows


def max_context_window(windows: Sequence[tuple[int, int]]) -> np.ndarray:
  """For each context token, the window where it has the most context.

  The score is min(tokens to the left, tokens to the right) + 0.01 * the
  window's length; the first window wins a tie.
  """
  num_tokens = windows[-1][0] + windows[-1][1] if windows else 0
  best = np.full(num_tokens, -1)
  best_score = np.full(num_tokens, -np.inf)
  for w, (start, length) in enumerate(windows):
    pos = np.arange(start, start + length)
    score = (np.minimum(pos - start, start + length - 1 - pos)
             + 0.01 * length)
    better = score > best_score[pos]
    best[pos[better]] = w
    best_score[pos[better]] = score[better]
  return best


def make_features(examples: Sequence[SquadExample], tokenizer, *,
                  max_seq_length: int, doc_stride: int,
                  max_query_length: int, is_training: bool) -> Features:
  """run_squad's windows of every example, with labels where known.

  `start_positions` / `end_positions` are the answer's positions in the
  window, or 0 ([CLS]) for an impossible question or a window without the
  whole answer; in a dev set (not `is_training`) windows of examples whose
  answer could not be recovered are not `labelled` (they count in no loss).
  """
  questions = tokenizer.tokenize_batch([e.question_text for e in examples])
  # Contexts are shared by their questions: tokenize each once, word by
  # word (what the original does per question).
  paragraph_tokens: dict[int, tuple[list[str], list[int], list[int]]] = {}
  answer_tokens = tokenizer.tokenize_batch(
      [e.answer_text or "" for e in examples])
  rows = collections.defaultdict(list)
  tokens_out: list[list[str]] = []
  to_word_rows, max_ctx_rows = [], []
  for index, example in enumerate(examples):
    if example.paragraph not in paragraph_tokens:
      pieces = tokenizer.tokenize_batch(example.doc_tokens)
      tok_to_word, word_to_tok, flat = [], [], []
      for w, word_pieces in enumerate(pieces):
        word_to_tok.append(len(flat))
        flat.extend(word_pieces)
        tok_to_word.extend([w] * len(word_pieces))
      paragraph_tokens[example.paragraph] = (flat, tok_to_word, word_to_tok)
    doc, tok_to_word, word_to_tok = paragraph_tokens[example.paragraph]
    query = questions[index][:max_query_length]

    tok_start = tok_end = None
    if example.start_word is not None:
      tok_start = word_to_tok[example.start_word]
      tok_end = (word_to_tok[example.end_word + 1] - 1
                 if example.end_word + 1 < len(word_to_tok)
                 else len(doc) - 1)
      tok_start, tok_end = tighten_span(doc, tok_start, tok_end,
                                        answer_tokens[index])
    labelled = example.is_impossible or tok_start is not None

    max_tokens = max_seq_length - len(query) - 3
    windows = doc_windows(len(doc), max_tokens, doc_stride)
    best = max_context_window(windows)
    offset = len(query) + 2
    for w, (start, length) in enumerate(windows):
      tokens = ["[CLS]", *query, "[SEP]", *doc[start:start + length], "[SEP]"]
      n = len(tokens)
      ids = np.zeros(max_seq_length, np.int32)
      ids[:n] = tokenizer.convert_tokens_to_ids(tokens)
      mask = np.zeros(max_seq_length, np.int32)
      mask[:n] = 1
      segments = np.zeros(max_seq_length, np.int32)
      segments[offset:n] = 1
      to_word = np.full(max_seq_length, -1, np.int32)
      to_word[offset:offset + length] = tok_to_word[start:start + length]
      max_ctx = np.zeros(max_seq_length, bool)
      max_ctx[offset:offset + length] = best[start:start + length] == w
      s = e = 0
      if (tok_start is not None and not example.is_impossible
          and start <= tok_start and tok_end <= start + length - 1):
        s, e = tok_start - start + offset, tok_end - start + offset
      rows["input_ids"].append(ids)
      rows["input_mask"].append(mask)
      rows["segment_ids"].append(segments)
      rows["start_positions"].append(s)
      rows["end_positions"].append(e)
      rows["example_of"].append(index)
      rows["labelled"].append(labelled)
      tokens_out.append(tokens)
      to_word_rows.append(to_word)
      max_ctx_rows.append(max_ctx)

  def stack(key, dtype, width=None):
    if rows[key]:
      return np.asarray(rows[key], dtype)
    return np.zeros((0,) if width is None else (0, width), dtype)

  arrays = {k: stack(k, np.int32, max_seq_length)
            for k in ("input_ids", "input_mask", "segment_ids")}
  arrays["start_positions"] = stack("start_positions", np.int32)
  arrays["end_positions"] = stack("end_positions", np.int32)
  return Features(
      arrays=arrays, example_of=stack("example_of", np.int64),
      tokens=tokens_out,
      token_to_word=(np.stack(to_word_rows) if to_word_rows
                     else np.zeros((0, max_seq_length), np.int32)),
      max_context=(np.stack(max_ctx_rows) if max_ctx_rows
                   else np.zeros((0, max_seq_length), bool)),
      labelled=stack("labelled", bool))


# -- decoding ------------------------------------------------------------------

def _strip_spaces(text: str) -> tuple[str, list[int]]:
  """`text` without spaces, and where each remaining character was."""
  kept = [(i, c) for i, c in enumerate(text) if c != " "]
  return "".join(c for _, c in kept), [i for i, _ in kept]


def final_text(pred_text: str, orig_text: str, do_lower_case: bool) -> str:
  """The original characters of a predicted (WordPiece) span.

  `pred_text` is the de-tokenized prediction ("steve smith"), `orig_text`
  the whole original words it came from ("Steve Smith's"). The words go
  through the basic tokenizer; if, spaces removed, they have as many
  characters as the original words, characters are taken as aligned one to
  one and the prediction's span is cut out of the original ("Steve
  Smith"). When any step fails, the whole words are returned.
  """
  tok_text = " ".join(
      tokenization.BasicTokenizer(do_lower_case).tokenize(orig_text))
  start = tok_text.find(pred_text)
  if start == -1:
    return orig_text
  end = start + len(pred_text) - 1
  orig_ns, orig_pos = _strip_spaces(orig_text)
  tok_ns, tok_pos = _strip_spaces(tok_text)
  if len(orig_ns) != len(tok_ns):
    return orig_text
  tok_to_ns = {p: i for i, p in enumerate(tok_pos)}
  if start not in tok_to_ns or end not in tok_to_ns:
    return orig_text
  return orig_text[orig_pos[tok_to_ns[start]]:orig_pos[tok_to_ns[end]] + 1]


def _softmax(scores: Sequence[float]) -> list[float]:
  top = max(scores)
  exp = [math.exp(s - top) for s in scores]
  total = sum(exp)
  return [x / total for x in exp]


def _top(logits: np.ndarray, length: int, n: int) -> np.ndarray:
  """Indices of the n largest of logits[:length], ties by position."""
  return np.argsort(-logits[:length], kind="stable")[:n]


@dataclasses.dataclass
class Decoded:
  """What run_squad writes: predictions, n-best lists, null odds (v2)."""
  predictions: dict[str, str]
  nbest: dict[str, list[dict[str, Any]]]
  null_odds: dict[str, float]


def decode(examples: Sequence[SquadExample], features: Features,
           start_logits: np.ndarray, end_logits: np.ndarray, *,
           n_best_size: int, max_answer_length: int, do_lower_case: bool,
           version_2_with_negative: bool,
           null_score_diff_threshold: float = 0.0) -> Decoded:
  """Answers from every window's start/end logits (run_squad's decoding).

  `start_logits`, `end_logits`: [num_features, >= window length]; positions
  past a window's tokens are ignored.
  """
  by_example = collections.defaultdict(list)
  for f, e in enumerate(features.example_of):
    by_example[int(e)].append(f)
  lengths = features.arrays["input_mask"].sum(-1)
  out = Decoded({}, {}, {})
  for index, example in enumerate(examples):
    feats = by_example.get(index, [])
    prelim = []  # (score, window, start, end, start logit, end logit)
    # The null answer: the smallest start[0] + end[0] over the windows
    # (score, start logit, end logit, window); the original's initial value.
    null = (1e6, 0.0, 0.0, 0)
    for k, f in enumerate(feats):
      start = start_logits[f].astype(np.float64)
      end = end_logits[f].astype(np.float64)
      if version_2_with_negative and start[0] + end[0] < null[0]:
        null = (start[0] + end[0], float(start[0]), float(end[0]), k)
      to_word = features.token_to_word[f]
      is_max = features.max_context[f]
      for s in _top(start, lengths[f], n_best_size):
        if to_word[s] < 0 or not is_max[s]:
          continue
        for e in _top(end, lengths[f], n_best_size):
          if to_word[e] < 0 or e < s or e - s + 1 > max_answer_length:
            continue
          prelim.append((start[s] + end[e], k, int(s), int(e),
                         float(start[s]), float(end[e])))
    if version_2_with_negative and feats:
      prelim.append((null[1] + null[2], null[3], 0, 0, null[1], null[2]))
    prelim.sort(key=lambda p: -p[0])  # stable: earlier candidates first

    nbest: list[tuple[str, float, float]] = []
    seen = set()
    for _, k, s, e, s_logit, e_logit in prelim:
      if len(nbest) >= n_best_size:
        break
      if s > 0:
        f = feats[k]
        pieces = " ".join(features.tokens[f][s:e + 1])
        pieces = " ".join(pieces.replace(" ##", "").replace("##", "")
                          .strip().split())
        words = example.doc_tokens[features.token_to_word[f][s]:
                                   features.token_to_word[f][e] + 1]
        text = final_text(pieces, " ".join(words), do_lower_case)
        if text in seen:
          continue
      else:
        text = ""
      seen.add(text)
      nbest.append((text, s_logit, e_logit))
    if version_2_with_negative and "" not in seen:
      nbest.append(("", null[1], null[2]))
    if not nbest:
      nbest.append(("empty", 0.0, 0.0))
    if version_2_with_negative and not any(t for t, _, _ in nbest):
      # Only the null answer: the original would crash here.
      nbest.insert(0, ("empty", 0.0, 0.0))

    probs = _softmax([s + e for _, s, e in nbest])
    out.nbest[example.qas_id] = [
        {"text": t, "probability": p, "start_logit": s, "end_logit": e}
        for (t, s, e), p in zip(nbest, probs)]
    if not version_2_with_negative:
      out.predictions[example.qas_id] = nbest[0][0]
    else:
      text, s, e = next(x for x in nbest if x[0])
      diff = null[0] - s - e
      out.null_odds[example.qas_id] = diff
      out.predictions[example.qas_id] = (
          "" if diff > null_score_diff_threshold else text)
  return out


def write_json(path: str, value: Any) -> str:
  os.makedirs(os.path.dirname(path), exist_ok=True)
  tmp = path + ".tmp"
  with open(tmp, "w", encoding="utf-8") as f:
    f.write(json.dumps(value, indent=4) + "\n")
  os.replace(tmp, path)
  return path


# -- the official metrics ------------------------------------------------------

_ARTICLES = re.compile(r"\b(a|an|the)\b", re.UNICODE)
_PUNCTUATION = frozenset(string.punctuation)


def normalize_answer(s: str) -> str:
  """Lower case, no ASCII punctuation, no a/an/the, whitespace folded."""
  s = "".join(c for c in s.lower() if c not in _PUNCTUATION)
  return " ".join(_ARTICLES.sub(" ", s).split())


def _token_f1(gold: list[str], pred: list[str]) -> float:
  same = sum((collections.Counter(gold) & collections.Counter(pred)).values())
  if same == 0:
    return 0.0
  precision, recall = same / len(pred), same / len(gold)
  return 2 * precision * recall / (precision + recall)


def squad_v1_metrics(gold: Sequence[tuple[str, Sequence[str]]],
                     predictions: Mapping[str, str]) -> dict[str, float]:
  """evaluate-v1.1: `exact_match` and `f1` in percent.

  Every question counts; one without a prediction scores 0. Each score is
  the max over the question's gold answers.
  """
  if not gold:
    raise ValueError("squad_v1_metrics: no questions")
  exact = f1 = 0.0
  for qid, answers in gold:
    if qid not in predictions:
      continue
    pred = normalize_answer(predictions[qid])
    golds = [normalize_answer(a) for a in answers]
    exact += max(pred == g for g in golds)
    f1 += max(_token_f1(g.split(), pred.split()) for g in golds)
  return {"exact_match": 100.0 * exact / len(gold),
          "f1": 100.0 * f1 / len(gold)}


def _v2_scores(answers: Sequence[str], pred: str) -> tuple[int, float]:
  """(exact, f1) of one prediction, max over gold answers; an empty gold
  list means the only right answer is ""."""
  golds = [a for a in answers if normalize_answer(a)] or [""]
  pred_tokens = normalize_answer(pred).split() if pred else []
  exact, f1 = 0, 0.0
  for a in golds:
    gold_tokens = normalize_answer(a).split() if a else []
    exact = max(exact, int(normalize_answer(a) == normalize_answer(pred)))
    if not gold_tokens or not pred_tokens:
      f1 = max(f1, float(gold_tokens == pred_tokens))
    else:
      f1 = max(f1, _token_f1(gold_tokens, pred_tokens))
  return exact, f1


def _best_threshold(predictions, scores, na_probs, has_ans
                    ) -> tuple[float, float]:
  """The score (percent) and threshold of the best null-odds cut-off.

  Questions are visited in increasing null odds: below the threshold the
  prediction stands, above it "" (right for NoAns questions).
  """
  score = best = float(sum(1 for v in has_ans.values() if not v))
  threshold = 0.0
  for qid in sorted(na_probs, key=lambda k: na_probs[k]):
    if qid not in scores:
      continue
    if has_ans[qid]:
      score += scores[qid]
    elif predictions[qid]:
      score -= 1
    if score > best:
      best, threshold = score, na_probs[qid]
  return 100.0 * best / len(scores), threshold


def squad_v2_metrics(gold: Sequence[tuple[str, Sequence[str]]],
                     predictions: Mapping[str, str],
                     na_probs: Mapping[str, float] | None = None,
                     na_prob_thresh: float = 1.0) -> dict[str, float]:
  """evaluate-v2.0: `exact`, `f1`, `total`, HasAns_* / NoAns_*, and with
  `na_probs` (null_odds.json) `best_exact`, `best_f1` and their
  thresholds.

  Questions without a prediction are left out. A question whose null odds
  exceed `na_prob_thresh` counts as answered "".
  """
  has_ans = {qid: bool(answers) for qid, answers in gold}
  exact_raw, f1_raw = {}, {}
  for qid, answers in gold:
    if qid in predictions:
      exact_raw[qid], f1_raw[qid] = _v2_scores(answers, predictions[qid])
  if not exact_raw:
    raise ValueError("squad_v2_metrics: no question has a prediction")
  probs = na_probs if na_probs is not None else {k: 0.0 for k in predictions}

  def thresholded(raw):
    return {qid: (float(not has_ans[qid]) if probs[qid] > na_prob_thresh
                  else s) for qid, s in raw.items()}

  exact, f1 = thresholded(exact_raw), thresholded(f1_raw)
  out = {"exact": 100.0 * sum(exact.values()) / len(exact),
         "f1": 100.0 * sum(f1.values()) / len(f1), "total": len(exact)}
  for name, want in (("HasAns", True), ("NoAns", False)):
    # (the official script crashes on a question without a prediction
    # here; it is left out, as from the totals above)
    qids = [q for q, v in has_ans.items() if v == want and q in exact]
    if qids:
      out[f"{name}_exact"] = 100.0 * sum(exact[q] for q in qids) / len(qids)
      out[f"{name}_f1"] = 100.0 * sum(f1[q] for q in qids) / len(qids)
      out[f"{name}_total"] = len(qids)
  if na_probs is not None:
    out["best_exact"], out["best_exact_thresh"] = _best_threshold(
        predictions, exact_raw, na_probs, has_ans)
    out["best_f1"], out["best_f1_thresh"] = _best_threshold(
        predictions, f1_raw, na_probs, has_ans)
  return out


# -- the task ------------------------------------------------------------------

def _masked(logits_BxL, mask_BxL):
  return jnp.where(mask_BxL > 0, logits_BxL, _NEG)


class SquadTask(finetuning.FinetuneTask):
  """SQuAD 1.1 (`squad11`) or 2.0 (`squad20`) for the fine-tuning job."""

  objective = "squad"
  can_pack = True
  token_level = True

  def __init__(self, config):
    super().__init__(config)
    self.v2 = bool(config.version_2_with_negative)
    self._dev: SquadFile | None = None
    self._dev_features: Features | None = None
    self._decoded: Decoded | None = None

  # -- set-up ------------------------------------------------------------

  def _path(self, kind: str) -> str:
    key = "train_file" if kind == "train" else "predict_file"
    name = self.config[key] or (
        f"{kind}-v{'2.0' if self.v2 else '1.1'}.json")
    return os.path.join(self.config.data_dir, name)

  def validate_data(self, check) -> None:
    c = self.config
    for kind, key in (("train", "train_file"), ("dev", "predict_file")):
      path = self._path(kind)
      check(os.path.isfile(path),
            f"{path}: no such file (config.data_dir={c.data_dir!r}, "
            f"config.{key}={c[key]!r})")
    for key in ("doc_stride", "max_query_length", "n_best_size",
                "max_answer_length"):
      check(c[key] >= 1, f"config.{key}={c[key]} must be >= 1")
    check(c.max_seq_length > c.max_query_length + 3,
          f"config.max_seq_length={c.max_seq_length} must be greater than "
          f"config.max_query_length={c.max_query_length} + 3")

  def read_data(self, tokenizer) -> None:
    c = self.config
    windows = dict(max_seq_length=c.max_seq_length, doc_stride=c.doc_stride,
                   max_query_length=c.max_query_length)
    train = read_squad(self._path("train"), is_training=True,
                       version_2_with_negative=self.v2)
    if not train.examples:
      raise ValueError(f"{train.path}: no training question has an answer "
                       "found in its context")
    feats = make_features(train.examples, tokenizer, is_training=True,
                          **windows)
    self.train = finetuning.Split("train", train.examples, feats.arrays)
    dev = read_squad(self._path("dev"), is_training=False,
                     version_2_with_negative=self.v2)
    if not dev.examples:
      raise ValueError(f"{dev.path}: no questions")
    if not self.v2:
      unanswered = [qid for qid, answers in dev.gold if not answers]
      if unanswered:
        raise ValueError(
            f"{dev.path}: question {unanswered[0]!r} has no answers "
            f"({len(unanswered)} such); SQuAD 1.1 scores need one (a SQuAD "
            "2.0 file? use configs/finetune.py:squad20)")
    dev_feats = make_features(dev.examples, tokenizer, is_training=False,
                              **windows)
    if not dev_feats.num_features:
      raise ValueError(f"{dev.path}: no context has any words")
    self._dev, self._dev_features = dev, dev_feats
    self.evals = [finetuning.Split(
        "dev", dev.examples,
        {k: dev_feats.arrays[k] for k in ("input_ids", "input_mask",
                                          "segment_ids")})]
    for name, f in (("train", train), ("dev", dev)):
      if f.skipped:
        self.skipped[name] = f.skipped
    self.windows = {"train": self.train.num_features,
                    "dev": dev_feats.num_features}

  def prepare(self, workdir: str) -> None:
    super().prepare(workdir)
    if jax.process_index() == 0:
      skipped = "; ".join(f"{k}: {', '.join(f'{n} {v}' for n, v in s.items())}"
                          for k, s in self.skipped.items()) or "none"
      print(f"{self.name}: {self.windows['train']} train and "
            f"{self.windows['dev']} dev windows (doc_stride "
            f"{self.config.doc_stride}); skipped: {skipped}", flush=True)

  def head_description(self) -> str:
    return "span start/end layer (2 outputs)"

  # -- the model and objective -------------------------------------------

  def build_model(self, cfg, rngs):
    c = self.config
    if not self.uses_bilstm:
      return heads.BertForQuestionAnswering(cfg, rngs=rngs)
    return heads.BertForQuestionAnswering(
        cfg, bilstm=True, lstm_units=c.lstm_units, lstm_layers=c.lstm_layers,
        rngs=rngs)

  def _logits(self, model, batch, rng):
    start, end = model(batch["input_ids"], batch["segment_ids"],
                       batch["input_mask"], rng=rng,
                       packed=self.packed_inputs(batch))
    return start, end

  def loss(self, model, batch, rng, denominators=None):
    start, end = self._logits(model, batch, rng)
    mask = self.example_mask(batch)
    n = (denominators[0] if denominators is not None
         else jnp.float32(start.shape[0]))
    start, end = _masked(start, mask), _masked(end, mask)
    nll = lambda logits, pos: -jnp.take_along_axis(
        jax.nn.log_softmax(logits, -1), pos[:, None], -1)[:, 0]
    per_example = (nll(start, batch["start_positions"])
                   + nll(end, batch["end_positions"])) / 2
    correct = ((jnp.argmax(start, -1) == batch["start_positions"])
               & (jnp.argmax(end, -1) == batch["end_positions"]))
    sums = {"loss_sum": jnp.sum(per_example),
            "example_count": jnp.float32(start.shape[0]),
            "accuracy_correct": jnp.sum(correct.astype(jnp.float32))}
    return jnp.sum(per_example) / n, sums

  def batch_spec(self, batch_size, seq_len=None):
    seq_len = seq_len or self.config.max_seq_length
    spec = (self.packed_spec(batch_size, seq_len) if self.packs else
            {k: ((batch_size, seq_len), jnp.int32)
             for k in ("input_ids", "input_mask", "segment_ids")})
    spec.update({k: ((batch_size,), jnp.int32)
                 for k in ("start_positions", "end_positions",
                           "example_index")})
    return spec

  # -- evaluation --------------------------------------------------------

  def eval_outputs(self, model, batch):
    start, end = self._logits(model, batch, None)
    # Batches are cut to different lengths: pad back to max_seq_length so
    # every window's logits stack (the padding is never read).
    pad = ((0, 0), (0, self.config.max_seq_length - start.shape[1]))
    return {"start_logits": jnp.pad(start, pad),
            "end_logits": jnp.pad(end, pad),
            "example_index": batch["example_index"]}

  def _eval_loss(self, start: np.ndarray, end: np.ndarray) -> float:
    """Dev loss of the windows with a known answer (the first gold one)."""
    f = self._dev_features
    mask = f.arrays["input_mask"] > 0
    keep = f.labelled
    if not keep.any():
      return float("nan")

    def nll(logits, pos):
      x = np.where(mask, logits.astype(np.float64), -np.inf)[keep]
      top = x.max(-1, keepdims=True)
      lse = top[:, 0] + np.log(np.exp(x - top).sum(-1))
      return lse - x[np.arange(len(x)), pos[keep]]

    return float(np.mean((nll(start, f.arrays["start_positions"])
                          + nll(end, f.arrays["end_positions"])) / 2))

  def metrics(self, decoded: Decoded) -> dict[str, float]:
    """The official script's numbers, as results.json names them."""
    gold = self._dev.gold
    if not self.v2:
      m = squad_v1_metrics(gold, decoded.predictions)
      return {"eval_exact_match": m["exact_match"], "eval_f1": m["f1"]}
    # As `evaluate-v2.0.py dev.json predictions.json --na-prob-file
    # null_odds.json --na-prob-thresh <the threshold used>` reports it.
    m = squad_v2_metrics(gold, decoded.predictions, decoded.null_odds,
                         self.config.null_score_diff_threshold)
    out = {"eval_exact_match": m.pop("exact"), "eval_f1": m.pop("f1")}
    out.update({f"eval_{k}": v for k, v in m.items()})
    return out

  def evaluate(self, run_eval, step):
    del step
    c = self.config
    split = self.evals[0]
    logits = self.split_outputs(run_eval, split,
                                ("start_logits", "end_logits"))
    start, end = logits["start_logits"], logits["end_logits"]
    self._decoded = decode(
        self._dev.examples, self._dev_features, start, end,
        n_best_size=c.n_best_size, max_answer_length=c.max_answer_length,
        do_lower_case=c.do_lower_case, version_2_with_negative=self.v2,
        null_score_diff_threshold=c.null_score_diff_threshold)
    metrics = self.metrics(self._decoded)
    metrics["eval_loss"] = self._eval_loss(start, end)
    return metrics

  def write_outputs(self, params, workdir, run_eval):
    del run_eval
    out: dict[str, Any] = {"windows": dict(self.windows)}
    d = self._decoded
    if jax.process_index() == 0 and d is not None:
      files = {
          "predictions": write_json(
              os.path.join(workdir, "predictions.json"), d.predictions),
          "nbest": write_json(
              os.path.join(workdir, "nbest_predictions.json"), d.nbest)}
      if self.v2:
        files["null_odds"] = write_json(
            os.path.join(workdir, "null_odds.json"), d.null_odds)
      out["predictions"] = files
    from bert_jax import pretrained  # pylint: disable=g-import-not-at-top
    out.update(self.export_hf(params, workdir,
                              pretrained.export_hf_question_answering))
    return out
