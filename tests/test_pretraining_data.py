"""Pre-training data: the TF1 algorithm's statistics on the real corpus."""

import gzip
import itertools
import json
import os

import numpy as np
import pytest

from bert_jax import input_pipeline
from bert_jax import masking
from bert_jax import pretraining_data as pd
from bert_jax import records
from bert_jax import sources
from bert_jax import tokenization
from tests import tf1_reference

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
VOCAB = os.path.join(ROOT, "data/vocab/bert-base-uncased-vocab.txt")
KJV = os.path.join(ROOT, "data/corpus/kjv.txt.gz")
BOTCHAN = os.path.join(ROOT, "data/corpus/botchan.txt.gz")
WIKI = os.path.join(ROOT, "tests/testdata/pretraining/enwiki-fragment.xml.bz2")


@pytest.fixture(scope="module")
def tok():
  return tokenization.FullTokenizer(VOCAB)


@pytest.fixture(scope="module")
def vocab(tok):
  return pd.VocabInfo.from_tokenizer(tok)


@pytest.fixture(scope="module")
def kjv_docs(tok):
  stats = sources.SourceStats()
  docs = list(itertools.islice(sources.iter_documents(KJV, stats), 300))
  return pd.tokenize_documents(docs, tok)


def _instances(docs, vocab, **kw):
  opts = pd.DataOptions(**{"dupe_factor": 1, **kw})
  return pd.unbatch(pd.create_instances(docs, opts, vocab, seed=7))


def test_offset_algorithm_is_tf1_draw_for_draw(kjv_docs):
  import random  # pylint: disable=g-import-not-at-top
  docs = [[s.tolist() for s in d] for d in kjv_docs[:120]]
  tokens, bounds = pd.flatten_documents(kjv_docs[:120])
  for short in (0.1, 1.0):
    opts = pd.DataOptions(short_seq_prob=short)
    ref_rng, rng = random.Random(3), random.Random(3)
    for index in range(len(docs)):
      want = tf1_reference.create_instances_from_document(
          docs, index, 128, short, ref_rng)
      spans = pd.Spans()
      pd.nsp_spans(bounds, index, opts, rng, spans)
      a_start, a_len, b_start, b_len, label = spans.arrays()
      got = [(tokens[a:a + m].tolist(), tokens[b:b + n].tolist(), bool(r))
             for a, m, b, n, r in zip(a_start, a_len, b_start, b_len, label)]
      assert got == want, index


def test_truncation_closed_form_and_front_back_split():
  def tf1_loop(a, b, max_tokens):  # TF1's truncate_seq_pair, on lengths
    cut_a = cut_b = 0
    while a + b > max_tokens:
      if a > b:
        a, cut_a = a - 1, cut_a + 1
      else:
        b, cut_b = b - 1, cut_b + 1
    return cut_a, cut_b
  la, lb = np.meshgrid(np.arange(0, 160), np.arange(0, 160))
  cut_a, cut_b = pd.truncated_lengths(la.ravel(), lb.ravel(), 125)
  want = np.array([tf1_loop(a, b, 125) for a, b in zip(la.ravel(),
                                                       lb.ravel())])
  np.testing.assert_array_equal(np.stack([cut_a, cut_b], 1), want)
  # Built rows: A and B stay contiguous pieces of the stream; the tokens
  # cut from A's front follow Binomial(cut, 1/2), as TF1's coin per token.
  vocab = pd.VocabInfo(cls_id=-1, sep_id=-2, mask_id=-3, pad_id=0,
                       vocab_size=1000, continuation=np.zeros(1000, bool))
  stream = np.arange(1, 1001, dtype=np.int32)
  spans = pd.Spans()
  for _ in range(4000):
    spans.add(100, 200, 600, 10, 1)  # A 200, B 10 -> A loses 85
  rows = pd.build_instances(stream, spans, pd.DataOptions(objective="mlm_nsp"),
                            vocab, np.random.default_rng(0))
  ids = rows["input_ids"]
  assert (ids[:, 0] == -1).all() and (ids[:, 116] == -2).all()
  assert (ids[:, 127] == -2).all() and rows["input_mask"].all()
  np.testing.assert_array_equal(ids[:, 117:127], stream[600:610] + 0 * ids[
      :, 117:127])
  a = ids[:, 1:116]
  assert (np.diff(a, axis=1) == 1).all()
  front = a[:, 0] - stream[100]
  assert ((front >= 0) & (front <= 85)).all()
  assert abs(front.mean() - 42.5) < 5 * np.sqrt(85 / 4 / 4000)
  assert abs(front.var() - 85 / 4) < 0.1 * 85 / 4
  np.testing.assert_array_equal(rows["segment_ids"][0], [0] * 117 + [1] * 11)


def test_nsp_fraction_lengths_and_segments(kjv_docs, vocab):
  insts = _instances(kjv_docs, vocab, dupe_factor=2)
  labels = np.array([i["next_sentence_labels"][0] for i in insts])
  # 50% random B, plus every one-sentence chunk: a little above 0.5.
  assert 0.5 < labels.mean() < 0.6, labels.mean()
  for inst in insts[:2000]:
    mask, seg = inst["input_mask"], inst["segment_ids"]
    n = int(mask.sum())
    assert n <= 128 and mask[:n].all() and not mask[n:].any()
    # [CLS] A [SEP] B [SEP]: segment 0 up to and including the first [SEP].
    assert seg[0] == 0 and seg[n - 1] == 1 and not seg[n:].any()
    first_b = int(np.argmax(seg))
    assert (seg[first_b:n] == 1).all() and (seg[:first_b] == 0).all()


def test_bounded_pool_keeps_statistics(kjv_docs, vocab):
  whole = _instances(kjv_docs, vocab)
  grouped = [i for k in range(0, len(kjv_docs), 60)
             for i in _instances(kjv_docs[k:k + 60], vocab)]
  for name, f in (("nsp", lambda i: i["next_sentence_labels"][0]),
                  ("length", lambda i: i["input_mask"].sum()),
                  ("len_a", lambda i: (i["segment_ids"] == 0).sum())):
    a = np.mean([f(i) for i in whole])
    b = np.mean([f(i) for i in grouped])
    assert abs(a - b) <= 0.05 * max(abs(a), 1), (name, a, b)
  assert abs(len(whole) - len(grouped)) < 0.05 * len(whole)


def test_short_sequence_fraction(kjv_docs, vocab):
  def short_fraction(p):
    insts = _instances(kjv_docs, vocab, short_seq_prob=p)
    return np.mean([i["input_mask"].sum() < 64 for i in insts])
  none, some, always = short_fraction(0.0), short_fraction(0.1), short_fraction(1.0)
  assert none < some < always
  # A document takes a short target (uniform in [2, 125]) with probability
  # 0.1; about half of those targets are under 64 tokens: an excess of
  # roughly 0.05 of instances (a little more: short targets make more).
  assert 0.025 < some - none < 0.2
  # With every target short, instance lengths follow the uniform target.
  lengths = [i["input_mask"].sum() for i in _instances(
      kjv_docs, vocab, short_seq_prob=1.0)]
  assert 45 < np.median(lengths) < 95


def test_masking_counts_ratios_and_specials(kjv_docs, vocab, tok):
  insts = _instances(kjv_docs, vocab, dupe_factor=3)
  masked = same = rnd = 0
  for inst in insts:
    n = int(inst["input_mask"].sum())
    w = inst["masked_lm_weights"]
    k = int(w.sum())
    assert k == min(20, max(1, int(round(n * 0.15))))  # TF1's count
    pos = inst["masked_lm_positions"][:k]
    assert (np.diff(pos) > 0).all()
    labels = inst["masked_lm_ids"][:k]
    assert not np.isin(labels, [vocab.cls_id, vocab.sep_id]).any()
    got = inst["input_ids"][pos]
    masked += int((got == vocab.mask_id).sum())
    same += int((got == labels).sum())
    rnd += int(((got != labels) & (got != vocab.mask_id)).sum())
    # Everything not predicted is untouched: [CLS] first, [SEP]s kept.
    assert inst["input_ids"][0] == vocab.cls_id
  total = masked + same + rnd
  assert total > 10000
  for observed, p in ((masked, 0.8), (same, 0.1), (rnd, 0.1)):
    sd = np.sqrt(p * (1 - p) / total)
    assert abs(observed / total - p) < 5 * sd + 1e-3, (observed / total, p)


def test_table8_ratios_and_whole_words(kjv_docs, vocab, tok):
  rng = np.random.default_rng(0)
  ids = np.array(tok.convert_tokens_to_ids(
      ["[CLS]"] + tok.tokenize("unaffable reconsideration " * 12) + ["[SEP]"]),
      np.int32)
  word_start = ~np.array([tok.is_continuation(t)
                          for t in tok.convert_ids_to_tokens(ids)])
  for _ in range(50):
    out, pos, labels, w = masking.create_masked_lm_predictions(
        ids, rng, special_ids=vocab.special_ids, vocab_size=vocab.vocab_size,
        mask_id=vocab.mask_id, masked_lm_prob=0.15,
        max_predictions_per_seq=20, mask_ratios=(1.0, 0.0, 0.0),
        word_start=word_start)
    chosen = set(pos[w > 0].tolist())
    assert (out[list(chosen)] == vocab.mask_id).all()  # 100% [MASK]
    # Whole words: a chosen piece's whole word is chosen.
    starts = np.flatnonzero(word_start)
    for p in chosen:
      s = starts[starts <= p].max()
      e = starts[starts > p].min() if (starts > p).any() else len(ids)
      assert set(range(s, e)) <= chosen
  with pytest.raises(ValueError, match="MASK, SAME, RND"):
    masking.check_mask_ratios((0.8, 0.1))


def test_mlm_and_ltr_objectives(kjv_docs, vocab):
  mlm = _instances(kjv_docs[:50], vocab, objective="mlm")
  assert all((i["segment_ids"] == 0).all() for i in mlm)
  assert all(i["next_sentence_labels"][0] == 0 for i in mlm)
  assert all(i["masked_lm_weights"].sum() > 0 for i in mlm)
  ltr = _instances(kjv_docs[:50], vocab, objective="ltr")
  assert all("masked_lm_ids" not in i for i in ltr)
  # Contiguous text: consecutive instances of a document continue each
  # other (no masking to undo).
  doc = np.concatenate(kjv_docs[0])
  opts = pd.DataOptions(objective="ltr", short_seq_prob=0.0)
  import random  # pylint: disable=g-import-not-at-top
  tokens, bounds = pd.flatten_documents(kjv_docs[:1])
  spans = pd.Spans()
  pd.contiguous_spans(bounds[0], opts, random.Random(0), spans)
  pieces = pd.unbatch(pd.build_instances(tokens, spans, opts, vocab,
                                         np.random.default_rng(0)))
  joined = np.concatenate([p["input_ids"][1:p["input_mask"].sum() - 1]
                           for p in pieces])
  np.testing.assert_array_equal(joined, doc)
  assert all(p["input_ids"][p["input_mask"].sum() - 1] == vocab.sep_id
             for p in pieces)


def _make(tmp_path, name, inputs, **kw):
  opts = pd.DataOptions(max_seq_length=64, max_predictions_per_seq=10,
                        dupe_factor=1, **kw.pop("opts", {}))
  out = str(tmp_path / name)
  return out, pd.create_pretraining_data(inputs, out, VOCAB, opts=opts,
                                         num_shards=2, **kw)


def test_determinism_formats_and_tf_parsing(tmp_path):
  tf = pytest.importorskip("tensorflow")
  a, ma = _make(tmp_path, "a", BOTCHAN, num_workers=1, fmt="tfrecord")
  b, mb = _make(tmp_path, "b", BOTCHAN, num_workers=2, fmt="tfrecord")
  for sa, sb in zip(ma["train"]["shards"], mb["train"]["shards"]):
    assert sa["sha256"] == sb["sha256"]  # same bytes, any worker count
  assert os.path.basename(
      ma["train"]["shards"][0]["file"]) == "train-00000-of-00002.tfrecord"
  # TensorFlow reads them with the original run_pretraining.py spec.
  spec = {
      "input_ids": tf.io.FixedLenFeature([64], tf.int64),
      "input_mask": tf.io.FixedLenFeature([64], tf.int64),
      "segment_ids": tf.io.FixedLenFeature([64], tf.int64),
      "masked_lm_positions": tf.io.FixedLenFeature([10], tf.int64),
      "masked_lm_ids": tf.io.FixedLenFeature([10], tf.int64),
      "masked_lm_weights": tf.io.FixedLenFeature([10], tf.float32),
      "next_sentence_labels": tf.io.FixedLenFeature([1], tf.int64),
  }
  ds = tf.data.TFRecordDataset(os.path.join(a, ma["train"]["shards"][0][
      "file"]))
  n = 0
  for rec in ds.take(50):
    ex = tf.io.parse_single_example(rec, spec)
    assert int(tf.reduce_sum(ex["input_mask"])) > 0
    n += 1
  assert n == 50
  # ArrayRecord: same instances for the same seed.
  c, mc = _make(tmp_path, "c", BOTCHAN, num_workers=1, fmt="array_record")
  ta = [records.parse_example(r) for r in records.read_records(
      os.path.join(a, ma["train"]["shards"][0]["file"]))]
  tc = [records.parse_example(r) for r in records.read_records(
      os.path.join(c, mc["train"]["shards"][0]["file"]))]
  assert len(ta) == len(tc)
  for x, y in zip(ta[:20], tc[:20]):
    np.testing.assert_array_equal(x["input_ids"], y["input_ids"])
  m = json.load(open(os.path.join(c, "manifest.json")))
  assert m["options"]["dupe_factor"] == 1 and m["vocab"]["size"] == 30522
  assert sum(s["records"] for s in m["train"]["shards"]) == m["train"][
      "instances"]


def test_bad_input_summary_and_errors(tmp_path):
  bad = tmp_path / "bad.txt"
  with open(bad, "wb") as f:
    f.write(b"A good sentence here.\nAnother one, broken \xff\xfe bytes.\n\n")
    f.write(b"\n\n")  # empty documents
    f.write(b"One-sentence document.\n\n")
    f.write(b"x" * (10 * 1024 * 1024) + b"\n")  # a 10 MB line
    f.write(b"Last document sentence one.\nAnd two.\n")
  binary = tmp_path / "blob.bin"
  binary.write_bytes(bytes(range(256)) * 100)
  out, m = _make(tmp_path, "out", f"{bad},{binary}")
  s = m["source_stats"]
  assert s["repaired_lines"] == 1 and s["skipped_binary_files"] == 1
  assert s["skipped_long_lines"] == 1 and s["documents"] == 3
  assert m["train"]["instances"] > 0
  # Nothing usable: a clear error and no shard that looks complete.
  empty = tmp_path / "empty.txt"
  empty.write_text("\n\n\n")
  with pytest.raises(ValueError, match="no usable text"):
    _make(tmp_path, "none", str(empty))
  assert not [f for f in os.listdir(tmp_path / "none")
              if f.endswith(".array_record")]
  with pytest.raises(FileNotFoundError, match="vocab file not found"):
    pd.create_pretraining_data(str(bad), str(tmp_path / "x"),
                               str(tmp_path / "missing_vocab.txt"),
                               opts=pd.DataOptions())
  with pytest.raises(FileNotFoundError, match="no file matches"):
    _make(tmp_path, "y", str(tmp_path / "nothing*.txt"))
  with pytest.raises(FileExistsError, match="already holds manifest.json"):
    _make(tmp_path, "out", str(bad))


def test_wiki_dump_and_raw_sources(tmp_path):
  stats = sources.SourceStats()
  docs = list(itertools.islice(sources.iter_documents(WIKI, stats), 2))
  text = " ".join(docs[0])
  assert docs[0][0].startswith("Anarchism is a political philosophy")
  for markup in ("{{", "}}", "[[", "]]", "<ref", "|}", "Category:"):
    assert markup not in text
  raw = tmp_path / "raw.txt"
  raw.write_text("First sentence. Second sentence! Third?\n\nOther doc. "
                 "Mr. Smith went to Washington.\n")
  docs = list(sources.iter_documents(str(raw), stats, "raw"))
  assert docs == [["First sentence.", "Second sentence!", "Third?"],
                  ["Other doc.", "Mr. Smith went to Washington."]]


def test_tfds_source(tmp_path):
  tfds = pytest.importorskip("tensorflow_datasets")

  class TinyWiki(tfds.core.GeneratorBasedBuilder):
    VERSION = tfds.core.Version("1.0.0")

    def _info(self):
      return tfds.core.DatasetInfo(
          builder=self, features=tfds.features.FeaturesDict(
              {"title": tfds.features.Text(), "text": tfds.features.Text()}))

    def _split_generators(self, dl_manager):
      del dl_manager
      return {"train": self._generate_examples()}

    def _generate_examples(self):
      with gzip.open(BOTCHAN, "rt") as f:
        chapters = f.read().split("\n\n")[:4]
      for i, chapter in enumerate(chapters):
        yield i, {"title": f"chapter {i}", "text": " ".join(
            chapter.split("\n"))}

  data_dir = str(tmp_path / "tfds")
  TinyWiki(data_dir=data_dir).download_and_prepare()
  stats = sources.SourceStats()
  docs = list(sources.iter_documents("tfds:tiny_wiki", stats,
                                     tfds_data_dir=data_dir))
  assert len(docs) == 4 and stats.documents == 4
  assert all(len(d) > 3 for d in docs)


def test_dynamic_masking_in_the_pipeline(tmp_path):
  out, m = _make(tmp_path, "dyn", BOTCHAN, opts={"dynamic_masking": True})
  assert m["options"]["masking"] == "dynamic"
  spec = input_pipeline.MaskingSpec(vocab_size=30522, mask_id=103,
                                    special_ids=(101, 102, 0),
                                    max_predictions_per_seq=10)
  paths = input_pipeline.find_shards(out)
  ds = input_pipeline.make_dataset(paths, global_batch_size=8, seed=1,
                                   max_seq_length=64, dynamic_masking=spec,
                                   process_index=0, process_count=1)
  a, b = ds[3], ds[3]
  np.testing.assert_array_equal(a["input_ids"], b["input_ids"])  # (seed, step)
  n_records = sum(s["records"] for s in m["train"]["shards"])
  later = ds[3 + n_records // 8]  # the same records, next epoch
  assert a["masked_lm_weights"].sum() > 0
  assert not np.array_equal(a["masked_lm_positions"],
                            later["masked_lm_positions"])


def _eval_batches(config, data_dir):
  from bert_jax.tasks import pretraining  # pylint: disable=g-import-not-at-top
  it = pretraining.eval_iterator(config, data_dir, 64, 10, None)
  try:
    return {k: np.concatenate([b[k] for b in batches])
            for batches in [list(it)] for k in batches[0]}
  finally:
    it.close()


def _replacement_shares(batch, mask_id):
  w = batch["masked_lm_weights"] > 0
  got = np.take_along_axis(batch["input_ids"], batch["masked_lm_positions"],
                           1)[w]
  labels = batch["masked_lm_ids"][w]
  return got.size, ((got == mask_id).mean(), (got == labels).mean(),
                    ((got != labels) & (got != mask_id)).mean())


def _variant(name):
  from configs import pretrain  # pylint: disable=g-import-not-at-top
  c = pretrain.get_config(name)
  c.unlock()
  c.eval_batch_size = 32
  c.max_seq_length, c.max_predictions_per_seq = 64, 10
  c.lock()
  return c


@pytest.mark.parametrize("dynamic", [False, True])
def test_table8_variants_evaluate_on_the_same_standard_masks(tmp_path,
                                                             dynamic):
  """Issue #10: held-out MLM figures compare across Table 8 rows.

  Two opposite variants (100% [MASK]; 100% random) get the same held-out
  batches, masked 80/10/10 (binomial bounds), while their training data
  keeps the variant's own ratios.
  """
  from bert_jax.tasks import pretraining  # pylint: disable=g-import-not-at-top
  variants = ("mask_100_0_0", "mask_0_0_100")
  configs = [_variant(v) for v in variants]
  dirs = []
  for c in configs:
    if dynamic and dirs:  # one dynamic data directory serves both
      dirs.append(dirs[0])
      continue
    out, m = _make(tmp_path, c.variant, BOTCHAN, eval_fraction=0.25,
                   random_seed=c.seed, opts={
                       "dynamic_masking": dynamic,
                       "mask_ratios": tuple(c.data.mask_ratios)})
    assert m["options"]["eval_mask_ratios"] == [0.8, 0.1, 0.1]
    dirs.append(out)
  a, b = (_eval_batches(c, d) for c, d in zip(configs, dirs))
  assert a.keys() == b.keys()
  for k in a:
    np.testing.assert_array_equal(a[k], b[k], err_msg=k)
  total, shares = _replacement_shares(a, 103)
  assert total > 3000
  for observed, p in zip(shares, (0.8, 0.1, 0.1)):
    assert abs(observed - p) < 5 * np.sqrt(p * (1 - p) / total) + 1e-3, (
        shares)
  # Training data keeps the variant's ratios: all [MASK] for mask_100_0_0.
  it = pretraining.make_iterator(configs[0], dirs[0], "train", 32, 64, 10,
                                 None)
  try:
    _, shares = _replacement_shares(next(it), 103)
  finally:
    it.close()
  assert shares[0] == 1.0
  # results.json says how the held-out split was masked.
  for c, d in zip(configs, dirs):
    got = pretraining.eval_masking(c, json.load(
        open(os.path.join(d, "manifest.json"))))
    assert got["mask_ratios"] == [0.8, 0.1, 0.1]
    assert got["same_for_every_mask_variant"] is True
    assert got["masking"] == ("dynamic" if dynamic else "static")
  # Static data made before the fix masked its held-out split with the
  # variant's ratios: reported as such, not as comparable.
  old = {"options": {"masking": "static", "mask_ratios": [1.0, 0.0, 0.0],
                     "random_seed": 1}}
  got = pretraining.eval_masking(configs[0], old)
  assert got["mask_ratios"] == [1.0, 0.0, 0.0]
  assert got["same_for_every_mask_variant"] is False
