"""GLUE readers on tiny files in the official layouts, and the submissions.

The files below are written the way `download_glue_data.py` lays GLUE out
(headers, column counts, CoLA's header-less train/dev, MRPC's byte-order
mark, MNLI's matched/mismatched files, AX under diagnostic/), with text
that has stray quotes. The TFDS test builds the datasets with TFDS's own
GLUE builder from the same files: an independent parser to agree with.
"""

import os
from unittest import mock

import numpy as np
import pytest
from sklearn import metrics as sk

from bert_jax.tasks import glue

E = glue.Example

MNLI_TRAIN_HEADER = ("index promptID pairID genre sentence1_binary_parse "
                     "sentence2_binary_parse sentence1_parse sentence2_parse "
                     "sentence1 sentence2 label1 gold_label").split()
MNLI_DEV_HEADER = MNLI_TRAIN_HEADER[:11] + [
    "label2", "label3", "label4", "label5", "gold_label"]
MNLI_TEST_HEADER = MNLI_TRAIN_HEADER[:10]
STSB_HEADER = ("index genre filename year old_index source1 source2 "
               "sentence1 sentence2 score").split()


def _mnli_row(i, s1, s2, labels):
  return [str(i), "31193", "31193n", "government", "( ( bin", "( bin",
          "(ROOT (S", "(ROOT", s1, s2, *labels]


FILES = {
    # CoLA train/dev: no header; source, label, original mark, sentence.
    "CoLA/train.tsv": [
        ["gj04", "1", "", "Our friends won't buy this analysis."],
        ["gj04", "0", "*", '"One more pseudo generalization and I give up.'],
        ["gj04", "1", "", "The sailors rode the breeze clear of the rocks."],
    ],
    "CoLA/dev.tsv": [["bc01", "0", "*", 'He said "hi.'],
                     ["bc01", "1", "", "The book fell."]],
    "CoLA/test.tsv": [["index", "sentence"], ["0", "Bill whistled."],
                      ["1", 'The car "honked.']],
    "SST-2/train.tsv": [["sentence", "label"],
                        ["hide new secretions from the parental units ", "0"],
                        ['the " greatest musicians " ', "1"]],
    "SST-2/dev.tsv": [["sentence", "label"], ["it 's a charming journey .",
                                              "1"]],
    "SST-2/test.tsv": [["index", "sentence"], ["0", "uneasy mishmash ."]],
    # MRPC train keeps the BOM of Microsoft's file in its header.
    "MRPC/train.tsv": [
        ["\ufeffQuality", "#1 ID", "#2 ID", "#1 String", "#2 String"],
        ["1", "702876", "702977", 'Amrozi called him "the witness", lying.',
         'Referring to him as "the witness", Amrozi lied.'],
        ["0", "2108705", "2108831", "Yucaipa owned Dominick 's.",
         "Yucaipa bought Dominick 's in 1995."]],
    "MRPC/dev.tsv": [
        ["Quality", "#1 ID", "#2 ID", "#1 String", "#2 String"],
        ["1", "1355540", "1355592", "He is 67.", "He was 67."]],
    "MRPC/test.tsv": [
        ["index", "#1 ID", "#2 ID", "#1 String", "#2 String"],
        ["0", "1089874", "1089925", "PCCW 's chief.", "The chief of PCCW."],
        ["1", "3019446", "3019327", "The world 's two.", "Two of them."]],
    "STS-B/train.tsv": [
        STSB_HEADER,
        ["0", "main-captions", "MSRvid", "2012test", "0001", "none", "none",
         "A plane is taking off.", "An air plane is taking off.", "5.000"],
        ["1", "main-news", "headlines", "2013", "0004", "none", "none",
         'A "man plays.', "A man is playing a flute.", "3.800"]],
    "STS-B/dev.tsv": [
        STSB_HEADER,
        ["0", "main-captions", "MSRvid", "2012test", "0000", "none", "none",
         "A man is dancing.", "A man wearing a hat is dancing.", "0.250"]],
    "STS-B/test.tsv": [
        STSB_HEADER[:9],
        ["0", "main-captions", "MSRvid", "2012test", "0024", "none", "none",
         "A girl is styling her hair.", "A girl is brushing her hair."]],
    # QQP: a question with a line break splits a row in two short rows,
    # which HF's processor skips.
    "QQP/train.tsv": [
        ["id", "qid1", "qid2", "question1", "question2", "is_duplicate"],
        ["133273", "213221", "213222", "How is the life of a math student?",
         'What is "prepration?', "0"],
        ["363362", "3", "4", "Why is this question"],
        ["split?", "Is it?", "1"],
        ["402555", "536040", "536041", "How do I control anger?",
         "How do you control your anger?", "1"]],
    "QQP/dev.tsv": [
        ["id", "qid1", "qid2", "question1", "question2", "is_duplicate"],
        ["40", "81", "82", "Why?", "Why not?", "0"]],
    "QQP/test.tsv": [["id", "question1", "question2"],
                     ["0", "Why do rockets look white?", "Why are they?"]],
    "MNLI/train.tsv": [
        MNLI_TRAIN_HEADER,
        _mnli_row(0, "Conceptually cream skimming has two dimensions.",
                  'Product and "geography are what make it work.',
                  ["neutral", "neutral"]),
        _mnli_row(1, "You know during the season.", "You lose the things.",
                  ["entailment", "entailment"])],
    "MNLI/dev_matched.tsv": [
        MNLI_DEV_HEADER,
        _mnli_row(0, "The new rights are nice.", "Everyone loves them.",
                  ["neutral", "entailment", "neutral", "neutral", "neutral",
                   "neutral"])],
    "MNLI/dev_mismatched.tsv": [
        MNLI_DEV_HEADER,
        _mnli_row(0, "Your contribution helped.", "It did not help.",
                  ["contradiction"] * 6)],
    "MNLI/test_matched.tsv": [
        MNLI_TEST_HEADER, _mnli_row(0, "Hierbas, ans seco.", "A drink.", [])],
    "MNLI/test_mismatched.tsv": [
        MNLI_TEST_HEADER, _mnli_row(0, "What we have.", "We have it.", []),
        _mnli_row(1, "Mind the gap.", "Gap.", [])],
    "QNLI/train.tsv": [
        ["index", "question", "sentence", "label"],
        ["0", "When did it start?", 'It began in "1990.', "not_entailment"]],
    "QNLI/dev.tsv": [["index", "question", "sentence", "label"],
                     ["0", "What?", "That.", "entailment"]],
    "QNLI/test.tsv": [["index", "question", "sentence"],
                      ["0", "Who?", "Him."]],
    "RTE/train.tsv": [
        ["index", "sentence1", "sentence2", "label"],
        ["0", 'No "Weapons of Mass Destruction Found.', "Weapons found.",
         "not_entailment"],
        ["1", "A place of sorrow.", "Pope Benedict XVI is the new pope.",
         "entailment"]],
    "RTE/dev.tsv": [["index", "sentence1", "sentence2", "label"],
                    ["0", "Dana Reeve died.", "Reeve is dead.", "entailment"]],
    "RTE/test.tsv": [["index", "sentence1", "sentence2"],
                     ["0", "Mangla was an Indian.", "Mangla was Indian."],
                     ["1", "Bush left.", "Bush stayed."]],
    "WNLI/train.tsv": [["index", "sentence1", "sentence2", "label"],
                       ["0", "I stuck a pin.", "The pin had a hole.", "1"]],
    "WNLI/dev.tsv": [["index", "sentence1", "sentence2", "label"],
                     ["0", "The drain is clogged.", "The hair is.", "0"]],
    "WNLI/test.tsv": [["index", "sentence1", "sentence2"],
                      ["0", "Maude and Dora.", "Maude was."]],
    "diagnostic/diagnostic.tsv": [
        ["index", "sentence1", "sentence2"],
        ["0", "The cat sat on the mat.", 'The "cat did not sit.'],
        ["1", "A man.", "A person."]],
}

EXPECTED = {
    ("cola", "train"): [
        E("train-0", "Our friends won't buy this analysis.", None, "1"),
        E("train-1", '"One more pseudo generalization and I give up.', None,
          "0"),
        E("train-2", "The sailors rode the breeze clear of the rocks.", None,
          "1")],
    ("cola", "dev"): [E("dev-0", 'He said "hi.', None, "0"),
                      E("dev-1", "The book fell.", None, "1")],
    ("cola", "test"): [E("0", "Bill whistled.", None, None),
                       E("1", 'The car "honked.', None, None)],
    ("sst2", "train"): [
        E("train-0", "hide new secretions from the parental units ", None,
          "0"),
        E("train-1", 'the " greatest musicians " ', None, "1")],
    ("sst2", "dev"): [E("dev-0", "it 's a charming journey .", None, "1")],
    ("sst2", "test"): [E("0", "uneasy mishmash .", None, None)],
    ("mrpc", "train"): [
        E("train-0", 'Amrozi called him "the witness", lying.',
          'Referring to him as "the witness", Amrozi lied.', "1"),
        E("train-1", "Yucaipa owned Dominick 's.",
          "Yucaipa bought Dominick 's in 1995.", "0")],
    ("mrpc", "dev"): [E("dev-0", "He is 67.", "He was 67.", "1")],
    ("mrpc", "test"): [E("0", "PCCW 's chief.", "The chief of PCCW.", None),
                       E("1", "The world 's two.", "Two of them.", None)],
    ("stsb", "train"): [
        E("train-0", "A plane is taking off.", "An air plane is taking off.",
          5.0),
        E("train-1", 'A "man plays.', "A man is playing a flute.", 3.8)],
    ("stsb", "dev"): [E("dev-0", "A man is dancing.",
                        "A man wearing a hat is dancing.", 0.25)],
    ("stsb", "test"): [E("0", "A girl is styling her hair.",
                         "A girl is brushing her hair.", None)],
    ("qqp", "train"): [
        E("train-133273", "How is the life of a math student?",
          'What is "prepration?', "0"),
        E("train-402555", "How do I control anger?",
          "How do you control your anger?", "1")],
    ("qqp", "dev"): [E("dev-40", "Why?", "Why not?", "0")],
    ("qqp", "test"): [E("0", "Why do rockets look white?", "Why are they?",
                        None)],
    ("mnli", "train"): [
        E("train-0", "Conceptually cream skimming has two dimensions.",
          'Product and "geography are what make it work.', "neutral"),
        E("train-1", "You know during the season.", "You lose the things.",
          "entailment")],
    ("mnli", "dev_matched"): [E("dev_matched-0", "The new rights are nice.",
                                "Everyone loves them.", "neutral")],
    ("mnli", "dev_mismatched"): [
        E("dev_mismatched-0", "Your contribution helped.", "It did not help.",
          "contradiction")],
    ("mnli", "test_matched"): [E("0", "Hierbas, ans seco.", "A drink.", None)],
    ("mnli", "test_mismatched"): [E("0", "What we have.", "We have it.", None),
                                  E("1", "Mind the gap.", "Gap.", None)],
    ("qnli", "train"): [E("train-0", "When did it start?",
                          'It began in "1990.', "not_entailment")],
    ("qnli", "dev"): [E("dev-0", "What?", "That.", "entailment")],
    ("qnli", "test"): [E("0", "Who?", "Him.", None)],
    ("rte", "train"): [
        E("train-0", 'No "Weapons of Mass Destruction Found.',
          "Weapons found.", "not_entailment"),
        E("train-1", "A place of sorrow.",
          "Pope Benedict XVI is the new pope.", "entailment")],
    ("rte", "dev"): [E("dev-0", "Dana Reeve died.", "Reeve is dead.",
                       "entailment")],
    ("rte", "test"): [E("0", "Mangla was an Indian.", "Mangla was Indian.",
                        None),
                      E("1", "Bush left.", "Bush stayed.", None)],
    ("wnli", "train"): [E("train-0", "I stuck a pin.", "The pin had a hole.",
                          "1")],
    ("wnli", "dev"): [E("dev-0", "The drain is clogged.", "The hair is.",
                        "0")],
    ("wnli", "test"): [E("0", "Maude and Dora.", "Maude was.", None)],
    ("ax", "test"): [E("0", "The cat sat on the mat.",
                       'The "cat did not sit.', None),
                     E("1", "A man.", "A person.", None)],
}
EXPECTED[("mnli", "ax")] = EXPECTED[("ax", "test")]


def _write(path, rows):
  os.makedirs(os.path.dirname(path), exist_ok=True)
  with open(path, "w", encoding="utf-8", newline="") as f:
    f.write("".join("\t".join(r) + "\n" for r in rows))


@pytest.fixture(scope="module")
def glue_root(tmp_path_factory):
  root = str(tmp_path_factory.mktemp("glue_data"))
  for name, rows in FILES.items():
    _write(os.path.join(root, name), rows)
  return root


def test_specs():
  assert set(glue.TASKS) == {"cola", "sst2", "mrpc", "stsb", "qqp", "mnli",
                             "qnli", "rte", "wnli", "ax"}
  assert "ax" not in glue.GLUE_NAMES
  assert glue.TASKS["stsb"].labels is None
  assert glue.TASKS["mnli"].eval_splits == ("dev_matched", "dev_mismatched")
  assert glue.TASKS["ax"].labels == glue.TASKS["mnli"].labels
  assert glue.TASKS["ax"].splits == ("test",)
  files = {t.submission_file(s) for t in glue.TASKS.values()
           for s in t.test_splits}
  assert files == {"CoLA.tsv", "SST-2.tsv", "MRPC.tsv", "STS-B.tsv",
                   "QQP.tsv", "MNLI-m.tsv", "MNLI-mm.tsv", "QNLI.tsv",
                   "RTE.tsv", "WNLI.tsv", "AX.tsv"}
  # Every split of every task is covered by the files and expectations.
  assert {(t.name, s) for t in glue.TASKS.values()
          for s in t.splits} == set(EXPECTED)


@pytest.mark.parametrize("task,split", sorted(EXPECTED))
def test_read_every_split(glue_root, task, split):
  examples, stats = glue.read_examples(task, glue_root, split)
  assert examples == EXPECTED[(task, split)]
  skipped = 2 if (task, split) == ("qqp", "train") else 0
  assert stats.rows == len(examples) + skipped
  assert stats.num_skipped == skipped
  # The task's own directory reads the same.
  if task != "ax" and split != "ax":
    task_dir = os.path.join(glue_root, glue.TASKS[task].glue_dir)
    assert glue.read_examples(task, task_dir, split)[0] == examples


def test_qqp_short_rows_are_skipped_and_counted(glue_root):
  _, stats = glue.read_examples("qqp", glue_root, "train")
  assert stats.skipped == {"fewer than 6 columns": 2}
  assert stats.skipped_lines == [3, 4]


def test_ax_from_the_mnli_directory(glue_root):
  mnli_dir = os.path.join(glue_root, "MNLI")
  assert glue.has_split("mnli", mnli_dir, "ax")
  assert glue.read_examples("mnli", mnli_dir, "ax")[0] == EXPECTED[
      ("ax", "test")]
  diag = os.path.join(glue_root, "diagnostic")
  assert glue.read_examples("ax", diag, "test")[0] == EXPECTED[("ax", "test")]


def _bad(tmp_path, name, rows):
  path = str(tmp_path / name)
  _write(path, rows)
  return path


@pytest.mark.parametrize("task,rows,line,match", [
    ("rte", [["index", "sentence1", "sentence2", "label"],
             ["0", "a", "b", "entailment"], ["1", "a", "entailment"]],
     3, "3 columns, expected 4"),
    ("rte", [["index", "sentence1", "sentence2", "label"],
             ["0", "a", "b", "maybe"]], 2, "label 'maybe' is not one of"),
    ("stsb", [STSB_HEADER, ["0", "g", "f", "y", "o", "s", "s", "a", "b",
                            "high"]], 2, "score 'high' is not a number"),
    ("cola", [["gj04", "1", "", "ok"], ["gj04", "1", "only three"]],
     2, "3 columns, expected 4"),
    ("cola", [["index", "sentence"], ["0", "x"]], 1, "2 columns, expected 4"),
    ("qqp", [["id", "qid1", "qid2", "question1", "question2", "is_duplicate"],
             ["1", "2", "3", "a", "b", "0", "extra"]], 2,
     "7 columns, expected 6"),
    ("sst2", [["index", "sentence"], ["0", "x"]], 1,
     "not a GLUE SST-2 train header"),
])
def test_bad_rows_name_file_and_line(tmp_path, task, rows, line, match):
  path = _bad(tmp_path, "train.tsv", rows)
  with pytest.raises(ValueError, match=match) as e:
    glue.read_examples(task, str(tmp_path), "train")
  assert str(e.value).startswith(f"{path}:{line}: ")
  assert "\n" not in str(e.value)


def test_empty_file(tmp_path):
  _write(str(tmp_path / "train.tsv"), [])
  with pytest.raises(ValueError, match="train.tsv:1: empty file"):
    glue.read_examples("rte", str(tmp_path), "train")


def test_missing_file_lists_the_directory(tmp_path):
  _write(str(tmp_path / "RTE" / "train.tsv"), FILES["RTE/train.tsv"])
  with pytest.raises(FileNotFoundError) as e:
    glue.read_examples("rte", str(tmp_path), "dev")
  msg = str(e.value)
  assert os.path.join(str(tmp_path), "RTE", "dev.tsv") in msg
  assert "expected dev.tsv" in msg and "has: train.tsv" in msg
  assert not glue.has_split("rte", str(tmp_path), "test")
  with pytest.raises(ValueError, match="no split 'dev'"):
    glue.read_examples("mnli", str(tmp_path), "dev")


def test_labels(glue_root):
  examples, _ = glue.read_examples("mnli", glue_root, "train")
  np.testing.assert_array_equal(glue.label_array("mnli", examples), [2, 1])
  assert glue.label_array("mnli", examples).dtype == np.int32
  assert glue.label_to_id("rte", "not_entailment") == 1
  stsb, _ = glue.read_examples("stsb", glue_root, "train")
  arr = glue.label_array(glue.TASKS["stsb"], stsb)
  assert arr.dtype == np.float32 and arr.tolist() == pytest.approx([5.0, 3.8])
  test, _ = glue.read_examples("rte", glue_root, "test")
  with pytest.raises(ValueError, match="no label"):
    glue.label_array("rte", test)
  with pytest.raises(ValueError, match="'maybe' is not one of"):
    glue.label_to_id("rte", "maybe")
  with pytest.raises(ValueError, match="labels are fixed"):
    glue.task_spec("rte", labels=("yes", "no"))


def test_compute_metrics_per_task():
  pred, gold = np.array([1, 0, 1, 1]), np.array([1, 0, 0, 1])
  m = glue.compute_metrics("cola", pred, gold)
  assert m == {"eval_matthews_corrcoef": pytest.approx(
      sk.matthews_corrcoef(gold, pred)), "eval_accuracy": 0.75}
  assert set(glue.compute_metrics("mrpc", pred, gold)) == {"eval_accuracy",
                                                           "eval_f1"}
  assert set(glue.compute_metrics("rte", pred, gold)) == {"eval_accuracy"}
  assert "eval_spearman" in glue.compute_metrics("stsb", [0.1, 2, 3],
                                                 [0.0, 2.5, 2.9])


def _read(path):
  with open(path, encoding="utf-8") as f:
    return f.read()


def test_submissions(tmp_path):
  out = str(tmp_path / "submission")
  path = glue.write_submission("mnli", "test_matched", ["0", "1", "2"],
                               [0, 1, 2], out)
  assert os.path.basename(path) == "MNLI-m.tsv"
  assert _read(path) == ("index\tprediction\n0\tcontradiction\n"
                         "1\tentailment\n2\tneutral\n")
  path = glue.write_submission("mnli", "test_mismatched", ["0"],
                               ["neutral"], out)
  assert os.path.basename(path) == "MNLI-mm.tsv"
  assert _read(path) == "index\tprediction\n0\tneutral\n"
  for task, split in (("mnli", "ax"), ("ax", "test")):
    path = glue.write_submission(task, split, ["0"], [1], out)
    assert os.path.basename(path) == "AX.tsv"
    assert _read(path) == "index\tprediction\n0\tentailment\n"
  path = glue.write_submission("stsb", "test", ["0", "1", "2"],
                               np.array([-0.3, 2.71828, 5.6]), out)
  assert os.path.basename(path) == "STS-B.tsv"
  assert _read(path) == "index\tprediction\n0\t0.000\n1\t2.718\n2\t5.000\n"
  path = glue.write_submission("qnli", "test", ["7"], [np.int64(1)], out)
  assert _read(path) == "index\tprediction\n7\tnot_entailment\n"
  for task, name in (("cola", "CoLA.tsv"), ("sst2", "SST-2.tsv"),
                     ("mrpc", "MRPC.tsv"), ("qqp", "QQP.tsv"),
                     ("rte", "RTE.tsv"), ("wnli", "WNLI.tsv")):
    labels = glue.TASKS[task].labels
    path = glue.write_submission(task, "test", ["0", "1"], [0, labels[1]],
                                 out)
    assert os.path.basename(path) == name
    assert _read(path) == (f"index\tprediction\n0\t{labels[0]}\n"
                           f"1\t{labels[1]}\n")
  assert sorted(os.listdir(out)) == sorted(
      ["MNLI-m.tsv", "MNLI-mm.tsv", "AX.tsv", "STS-B.tsv", "QNLI.tsv",
       "CoLA.tsv", "SST-2.tsv", "MRPC.tsv", "QQP.tsv", "RTE.tsv", "WNLI.tsv"])
  with pytest.raises(ValueError, match="not a class id"):
    glue.write_submission("rte", "test", ["0"], [2], out)
  with pytest.raises(ValueError, match="2 predictions for 1 examples"):
    glue.write_submission("rte", "test", ["0"], [0, 1], out)
  with pytest.raises(ValueError, match="not a test split"):
    glue.write_submission("mnli", "dev_matched", ["0"], [0], out)


def test_read_then_submit_round_trip(glue_root, tmp_path):
  examples, _ = glue.read_examples("mrpc", glue_root, "test")
  path = glue.write_submission("mrpc", "test", [e.guid for e in examples],
                               [1, 0], str(tmp_path))
  assert _read(path) == "index\tprediction\n0\t1\n1\t0\n"


# -- custom sets --------------------------------------------------------------


def _custom(tmp_path, labels_txt=None):
  d = tmp_path / "custom"
  _write(str(d / "train.tsv"), [["text_a", "text_b", "label"],
                                ["good film", "a", "pos"],
                                ['a "bad one', "b", "neg"],
                                ["fine", "c", "mid"]])
  _write(str(d / "dev.tsv"), [["guid", "label", "text_a", "text_b"],
                              ["d7", "neg", "meh", "x"]])
  _write(str(d / "test.tsv"), [["sentence", "text_b"], ["new", "y"]])
  if labels_txt is not None:
    (d / "labels.txt").write_text(labels_txt)
  return str(d)


def test_custom_set(tmp_path):
  d = _custom(tmp_path)
  spec = glue.task_spec("custom", d)
  assert spec.labels == ("mid", "neg", "pos")  # sorted train labels
  train, stats = glue.read_examples(spec, d, "train")
  assert train == [E("train-0", "good film", "a", "pos"),
                   E("train-1", 'a "bad one', "b", "neg"),
                   E("train-2", "fine", "c", "mid")]
  assert stats.rows == 3
  np.testing.assert_array_equal(glue.label_array(spec, train), [2, 1, 0])
  assert glue.read_examples("custom", d, "dev", labels=spec.labels)[0] == [
      E("d7", "meh", "x", "neg")]
  test, _ = glue.read_examples(spec, d, "test")
  assert test == [E("0", "new", "y", None)]
  path = glue.write_submission(spec, "test", ["0"], [1], str(tmp_path))
  assert _read(path) == "index\tprediction\n0\tneg\n"
  # Given labels and labels.txt take precedence over the train set.
  assert glue.task_spec("custom", d, ("pos", "neg", "mid")).labels == (
      "pos", "neg", "mid")
  d2 = _custom(tmp_path / "two", labels_txt="pos\nneg\nmid\n\n")
  assert glue.task_spec("custom", d2).labels == ("pos", "neg", "mid")


def test_custom_set_errors(tmp_path):
  d = _custom(tmp_path)
  spec = glue.task_spec("custom", d, ("pos", "neg"))
  with pytest.raises(ValueError, match="label 'mid' is not one of") as e:
    glue.read_examples(spec, d, "train")
  assert str(e.value).startswith(os.path.join(d, "train.tsv") + ":4: ")
  _write(os.path.join(d, "dev.tsv"), [["text", "label"], ["x", "pos"]])
  with pytest.raises(ValueError, match="dev.tsv:1: .*unknown: \\['text'\\]"):
    glue.read_examples(spec, d, "dev")
  _write(os.path.join(d, "dev.tsv"), [["text_a"], ["x"]])
  with pytest.raises(ValueError, match="dev.tsv:1: .*needs a label column"):
    glue.read_examples(spec, d, "dev")
  with pytest.raises(ValueError, match="pass task_spec"):
    glue.label_array("custom", [])


# -- TFDS ---------------------------------------------------------------------


def _prepare_tfds(glue_root, tfds_dir, config, file_format):
  """Builds glue/<config> with TFDS's own GLUE builder from our files."""
  tfds = pytest.importorskip("tensorflow_datasets")
  builder = tfds.builder(f"glue/{config}", data_dir=tfds_dir)
  dm = tfds.download.DownloadManager
  with mock.patch.object(dm, "download_and_extract", return_value=glue_root), \
      mock.patch.object(dm, "download", return_value=os.path.join(
          glue_root, "diagnostic", "diagnostic.tsv")):
    builder.download_and_prepare(
        file_format=file_format,
        download_config=tfds.download.DownloadConfig(try_download_gcs=False))


@pytest.fixture(scope="module")
def tfds_dir(glue_root, tmp_path_factory):
  d = str(tmp_path_factory.mktemp("tfds"))
  for config in ("cola", "stsb", "qqp", "mnli", "rte", "ax"):
    _prepare_tfds(glue_root, d, config, "array_record")
  return d


@pytest.mark.parametrize("task", ["cola", "stsb", "qqp", "mnli", "rte", "ax"])
def test_tfds_reads_what_the_tsv_reader_reads(glue_root, tfds_dir, task):
  spec = glue.TASKS[task]
  for split in spec.splits:
    got, stats = glue.read_examples(task, "tfds:" + tfds_dir, split)
    want, _ = glue.read_examples(task, glue_root, split)
    if task == "qqp" and split != "test":
      # TFDS's guid is the row number (idx, skipped rows counted); the
      # TSV's is QQP's id column.
      assert [e.guid for e in got] == (["train-0", "train-3"]
                                       if split == "train" else ["dev-0"])
      got, want = [_fields(e) for e in got], [_fields(e) for e in want]
    assert got == want, (task, split)
    assert stats.rows == len(want)
  assert glue.has_split(task, "tfds:" + tfds_dir, spec.splits[-1])


def _fields(e):
  return e.text_a, e.text_b, e.label


def test_tfds_errors(tfds_dir, tmp_path):
  with pytest.raises(FileNotFoundError, match="no prepared TFDS dataset "
                     "glue/sst2"):
    glue.read_examples("sst2", "tfds:" + tfds_dir, "train")
  assert not glue.has_split("sst2", "tfds:" + tfds_dir, "train")
  assert glue.has_split("mnli", "tfds:" + tfds_dir, "ax")
  with pytest.raises(FileNotFoundError):
    glue.read_examples("rte", "tfds:" + str(tmp_path), "train")


@pytest.mark.slow
def test_tfds_tfrecord_files(glue_root, tmp_path):
  """The default TFDS format (TFRecord), read through tf.data."""
  d = str(tmp_path / "tfds")
  _prepare_tfds(glue_root, d, "rte", "tfrecord")
  for split in ("train", "dev", "test"):
    assert glue.read_examples("rte", "tfds:" + d, split)[0] == EXPECTED[
        ("rte", split)]
