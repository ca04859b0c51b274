"""SWAG: the CSV reader, [B, 4, L] batches, the task end to end, parity
with transformers' BertForMultipleChoice, bad input."""

import csv
import os
import random

import numpy as np
import pytest

from bert_jax import finetune
from bert_jax import model as model_lib
from bert_jax import pretrained
from bert_jax import train
from bert_jax.tasks import base
from bert_jax.tasks import swag
from configs import finetune as finetune_configs

# swagaf's regular split, as distributed (test.csv: the same without label).
HEADER = ["", "video-id", "fold-ind", "startphrase", "sent1", "sent2",
          "gold-source", "ending0", "ending1", "ending2", "ending3", "label"]
POSITIVE = ("good", "happy", "love", "great", "kind")
NEGATIVE = ("bad", "sad", "hate", "evil", "cruel")
FILLER = ("the", "a", "of", "and", "man", "house", "day", "night", "said",
          "went", "she", "he", "door", "opens")
WORDS = (*POSITIVE, *NEGATIVE, *FILLER)


def write_swag(directory, n_train=160, n_val=40, n_test=12, seed=0):
  """train/val/test.csv in swagaf's layout, written by the csv module (so
  fields with commas or quotes are quoted, as in the real files), with a
  signal a small model learns in seconds: the right ending holds a
  positive word, the three others a negative one. Returns the directory
  and, per split, the rows written (lists of field strings)."""
  rng = random.Random(seed)
  os.makedirs(directory, exist_ok=True)
  written = {}

  def words(k_lo, k_hi):
    return " ".join(rng.choice(FILLER) for _ in range(rng.randint(k_lo,
                                                                  k_hi)))

  def ending(good):
    w = [rng.choice(FILLER) for _ in range(rng.randint(1, 5))]
    w.insert(rng.randrange(len(w) + 1),
             rng.choice(POSITIVE if good else NEGATIVE))
    return " ".join(w) + rng.choice([".", ", the day.", ""])

  for split, n in (("train", n_train), ("val", n_val), ("test", n_test)):
    header = HEADER if split != "test" else HEADER[:-1]
    written[split] = []
    with open(os.path.join(directory, f"{split}.csv"), "w",
              newline="") as f:
      w = csv.writer(f)
      w.writerow(header)
      for i in range(n):
        label = rng.randrange(4)
        sent1 = f'{words(2, 5)}, "{words(1, 1)}" {words(0, 2)}.'
        sent2 = rng.choice(["He", "She", "The man", ""])
        endings = [ending(j == label) for j in range(4)]
        row = [str(i), f"anetv_{i:05d}", str(1000 + i),
               f"{sent1} {sent2}".strip(), sent1, sent2, "gold", *endings]
        row += [str(label)] if split != "test" else []
        w.writerow(row)
        written[split].append(dict(zip(header, row)))
  return str(directory), written


@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory):
  """A freshly initialised 2-layer, 32-wide bert_jax export with a vocab of
  the test's words (no pre-training needed: the signal is lexical)."""
  d = tmp_path_factory.mktemp("swag_ckpt")
  vocab = d / "vocab.txt"
  vocab.write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]",
                              ",", ".", '"', *WORDS]) + "\n")
  cfg = model_lib.BertConfig(vocab_size=8 + len(WORDS), hidden_size=32,
                             num_layers=2, num_heads=2, intermediate_size=64,
                             max_position_embeddings=64)
  return pretrained.save_bert_jax(cfg, pretrained.init_params(cfg, seed=1),
                                  str(vocab), str(d / "bert_jax"))


def swag_config(init_checkpoint, data_dir, **overrides):
  c = finetune_configs.get_config("swag")
  c.unlock()
  c.init_checkpoint = init_checkpoint
  c.data_dir = data_dir
  c.max_seq_length = 32
  c.pad_to_multiple_of = 16
  c.train_batch_size = 16
  c.eval_batch_size = 16
  c.learning_rate = 3e-3
  c.num_train_epochs = 4.0
  c.log_every_steps = 10
  c.save_checkpoints_steps = 100
  c.model.hidden_dropout_prob = 0.0
  c.model.attention_dropout_prob = 0.0
  c.update_from_flattened_dict(overrides)
  c.lock()
  return c


def test_reader_reads_the_official_layout(tmp_path):
  d = tmp_path / "swag"
  d.mkdir()
  # Two rows as swagaf ships them (quoted endings with commas and quotes),
  # the second spanning two lines inside a quoted field.
  (d / "val.csv").write_text(
      ",video-id,fold-ind,startphrase,sent1,sent2,gold-source,ending0,"
      "ending1,ending2,ending3,label\n"
      "0,lsmdc3001_21_JUMP_STREET-422,11783,Students lower their eyes "
      "nervously. She,Students lower their eyes nervously.,She,gold,"
      '"pats her shoulder, then saunters toward someone.",turns with two '
      'students.,walks slowly towards someone.,"wheels around as her dog '
      'says ""hi"".",2\n'
      '1,anetv_x,5,"A man, outside. The",A man outside.,The,gen,"line\n'
      'break",b,c,d,0\n', encoding="utf-8")
  examples = swag.read_examples(str(d), "val")
  assert len(examples) == 2
  e = examples[0]
  assert (e.guid, e.fold_ind, e.label, e.line) == ("val-0", "11783", 2, 2)
  assert e.sent1 == "Students lower their eyes nervously."
  assert e.endings == ("pats her shoulder, then saunters toward someone.",
                       "turns with two students.",
                       "walks slowly towards someone.",
                       'wheels around as her dog says "hi".')
  # Sentence A = sent1, sentence B = sent2 + " " + ending (HF run_swag).
  assert e.pairs()[0] == ("Students lower their eyes nervously.",
                          "She pats her shoulder, then saunters toward "
                          "someone.")
  assert examples[1].endings[0] == "line\nbreak"
  assert examples[1].line == 3  # where the record starts

  # A generated set (quoted fields, empty sent2s): the rows as written.
  data, written = write_swag(tmp_path / "gen", n_train=20, n_val=7,
                             n_test=5)
  for split in ("train", "test"):
    ours = swag.read_examples(data, split)
    assert len(ours) == len(written[split])
    for e, r in zip(ours, written[split]):
      assert (e.guid, e.sent1, e.sent2, e.fold_ind) == (
          f"{split}-{r['']}", r["sent1"], r["sent2"], r["fold-ind"])
      assert e.endings == tuple(r[f"ending{i}"] for i in range(4))
      assert e.label == (None if split == "test" else int(r["label"]))


def test_feature_batches_pad_four_choices_and_cover_eval_once():
  """[N, 4, L] features: a batch is cut to the longest of any choice of any
  row in it; evaluation sees every example once."""
  n, c, length = 21, 4, 40
  rng = np.random.default_rng(0)
  lengths = rng.integers(3, length + 1, (n, c))
  mask = (np.arange(length) < lengths[..., None]).astype(np.int32)
  features = {"input_ids": mask * 5, "input_mask": mask,
              "segment_ids": 0 * mask, "labels": np.arange(n, dtype=np.int32)}
  seen = []
  for p in range(2):
    ds = finetune.FeatureBatches(features, global_batch_size=8, seed=0,
                                 train=False, pad_to_multiple_of=8,
                                 process_index=p, process_count=2)
    assert len(ds) == 3  # ceil(21 / 8)
    for s in range(len(ds)):
      b = ds[s]
      real = b["example_index"] >= 0
      idx = b["example_index"][real]
      seen += list(idx)
      assert b["input_ids"].shape[:2] == (4, 4)  # this host's 4 rows
      assert b["input_ids"].shape[2] % 8 == 0
      assert b["input_ids"].shape[2] >= lengths[idx].max()
      np.testing.assert_array_equal(b["labels"][real], idx)
      np.testing.assert_array_equal(b["input_mask"][real],
                                    mask[idx][..., :b["input_ids"].shape[2]])
      assert not b["input_mask"][~real].any()
  assert sorted(seen) == list(range(n))
  # Whole global batches share one length across hosts, so every host
  # cuts alike (the same global batch index on both processes).
  widths = [finetune.FeatureBatches(features, global_batch_size=8, seed=0,
                                    train=True, num_epochs=2,
                                    pad_to_multiple_of=8, process_index=p,
                                    process_count=2)[1]["input_ids"].shape
            for p in range(2)]
  assert widths[0] == widths[1]


def test_swag_learns_exports_and_matches_transformers(tiny_checkpoint,
                                                       tmp_path):
  import torch  # pylint: disable=g-import-not-at-top
  import transformers  # pylint: disable=g-import-not-at-top
  from sklearn import metrics as sk_metrics  # pylint: disable=g-import-not-at-top
  data, written = write_swag(tmp_path / "swag")
  workdir = str(tmp_path / "ft")
  config = swag_config(tiny_checkpoint, data)
  results = train.train_and_evaluate(config, workdir)
  assert results["steps"] == 40  # 160 examples x 4 epochs / 16
  assert results["task"] == "swag"
  assert "multiple-choice scorer" in results["init"]
  assert results["eval_accuracy"] > 0.8, results  # chance: 0.25

  # Predictions: every val example once, in file order, with its logits.
  with open(results["predictions"]["val"], newline="") as f:
    rows = list(csv.DictReader(f))
  assert [r["guid"] for r in rows] == [f"val-{i}" for i in range(40)]
  ours = np.array([[float(r[f"logit{i}"]) for i in range(4)] for r in rows])
  with open(results["predictions"]["test"], newline="") as f:
    test_rows = list(csv.DictReader(f))
  assert [r["fold-ind"] for r in test_rows] == [str(1000 + i)
                                               for i in range(12)]
  assert all(r["label"] == "" for r in test_rows)

  # transformers' BertForMultipleChoice on the export, fed by its own
  # tokenizer (sentence A = sent1, B = sent2 + ending), every row padded to
  # max_seq_length: the logits our eval wrote, batch-cut and length-sorted.
  hf_dir = results["checkpoints"]["hf"]
  hf = transformers.BertForMultipleChoice.from_pretrained(hf_dir).eval()
  tok = transformers.BertTokenizerFast(os.path.join(hf_dir, "vocab.txt"),
                                       do_lower_case=True)
  examples = swag.read_examples(data, "val")
  pairs = [p for e in examples for p in e.pairs()]
  enc = tok([a for a, _ in pairs], [b for _, b in pairs],
            padding="max_length", max_length=config.max_seq_length,
            return_tensors="pt")
  assert int(enc["attention_mask"].sum(-1).max()) < config.max_seq_length
  with torch.no_grad():
    theirs = hf(**{k: v.reshape(40, 4, -1) for k, v in enc.items()}
                ).logits.numpy()
  np.testing.assert_allclose(ours, theirs, atol=5e-5)

  # Accuracy and loss from transformers' logits and the labels written.
  labels = np.array([int(r["label"]) for r in written["val"]])
  np.testing.assert_allclose(
      results["eval_accuracy"],
      sk_metrics.accuracy_score(labels, theirs.argmax(-1)))
  loss = torch.nn.functional.cross_entropy(torch.tensor(theirs),
                                           torch.tensor(labels)).item()
  np.testing.assert_allclose(results["eval_loss"], loss, rtol=1e-4)


def test_bad_swag_input_is_one_line(tiny_checkpoint, tmp_path):
  data, _ = write_swag(tmp_path / "swag", n_train=20, n_val=5, n_test=0)
  os.remove(os.path.join(data, "test.csv"))
  good = open(os.path.join(data, "val.csv"), encoding="utf-8").read()

  def expect(text, split, match):
    with open(os.path.join(data, f"{split}.csv"), "w", encoding="utf-8",
              newline="") as f:
      f.write(text)
    with pytest.raises(ValueError, match=match) as e:
      swag.read_examples(data, split)
    assert "\n" not in str(e.value)

  header = ",".join(HEADER) + "\n"
  # A missing ending (one field short) and an empty one.
  expect(header + '7,v,9,A b,A b.,He,gold,"x, y",z,w,v,1\n'
         + '8,v,9,A,A.,He,gold,x,y,z,0\n', "val",
         r"val\.csv:3: 11 fields, expected 12")
  expect(header + '8,v,9,A,A.,He,gold,x,,z,w,1\n', "val",
         r"val\.csv:2: ending1 is empty")
  # A label outside 0-3, after a record spanning two lines.
  expect(header + '1,v,9,"A\nB",A.,He,gold,x,y,z,w,0\n'
         + '2,v,9,A,A.,He,gold,x,y,z,w,4\n', "val",
         r"val\.csv:4: label '4' is not one of 0, 1, 2, 3")
  expect(",video-id,sent1,sent2\n", "val", r"val\.csv:1: not a SWAG header")
  with open(os.path.join(data, "val.csv"), "w", encoding="utf-8") as f:
    f.write(good)

  # Through the job: a ConfigError naming file and line, before any step.
  with open(os.path.join(data, "train.csv"), "a", encoding="utf-8") as f:
    f.write('99,v,9,A,A.,He,gold,x,y,z,w,7\n')
  workdir = str(tmp_path / "w")
  with pytest.raises(base.ConfigError, match=r"train\.csv:22: label '7'"):
    train.train_and_evaluate(swag_config(tiny_checkpoint, data), workdir)
  assert not os.path.exists(os.path.join(workdir, "checkpoints"))
  with pytest.raises(base.ConfigError, match=r"config\.data_dir.*val\.csv"):
    os.remove(os.path.join(data, "val.csv"))
    train.train_and_evaluate(swag_config(tiny_checkpoint, data), workdir)


def test_swag_config_is_the_paper_recipe():
  c = finetune_configs.get_config("swag")
  assert (c.task, c.train_batch_size, c.learning_rate,
          c.num_train_epochs) == ("swag", 16, 2e-5, 3.0)
