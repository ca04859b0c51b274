"""The PyTorch peer: Hugging Face BERT fine-tuned with the paper's recipe.

Reads a `custom` TSV set (train.tsv, dev.tsv, labels.txt; see
bench/real_data.py), fine-tunes `BertForSequenceClassification` from a
Hugging Face checkpoint directory and writes results.json:

    python bench/finetune_peer_hf.py --model_dir=DIR --data_dir=SET \
        --output=W/results.json --learning_rate=5e-5 --num_train_epochs=3 \
        --seed=0

The recipe (BERT paper, appendix A.3; TF1 run_classifier):
  AdamW (torch.optim.AdamW), betas (0.9, 0.999), eps 1e-6, weight decay 0.01
  except on LayerNorm weights and biases; linear warmup over the first
  int(0.1 * steps) steps, then linear decay to 0; gradients clipped to global
  norm 1.0; dropout 0.1 (the checkpoint's config); batch 32.
  Steps: int(n_train / batch * epochs), as TF1 (and bert_jax) count them,
  taken from one permutation of the train set per epoch, drawn from the
  seed; full batches only. max_seq_length 128, pairs truncated
  longest-first; each batch padded to its longest row (`--pad_to_multiple_of`
  rounds that up). torch.manual_seed(seed) fixes the new head's init and
  the dropout masks.

`--schedule=tf1 --head_init=truncated_normal` is TF1's recipe, as bert_jax
runs it. For a controlled comparison, three more flags take away the
run-to-run differences one by one: `--order_file` (another run's batches,
e.g. bert_jax's for the same seed), `--classifier_init` (another run's
starting classifier), `--dropout` (0: none). With these and
`--schedule=tf1` the peer follows bert_jax's run step for step.

Timed (results.json `train_seconds`, `eval_seconds`): the training loop
(batch collation, forward, backward, clipping, optimizer and scheduler
steps) and, separately, dev evaluation (batch 64, model.eval(), no
gradients). Not timed: imports, reading and tokenising the TSVs, loading the
checkpoint.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
import platform
import time

import numpy as np
import torch
import transformers


def read_tsv(path: str) -> list[dict[str, str]]:
  """Rows of a custom-set TSV as dicts keyed by its header (no quoting)."""
  with open(path, encoding="utf-8", newline="") as f:
    rows = list(csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE))
  if not rows:
    raise ValueError(f"{path}:1: empty file (expected a header row)")
  header = rows[0]
  for need in ("text_a", "label"):
    if need not in header:
      raise ValueError(f"{path}:1: header {header} has no {need!r} column")
  out = []
  for line, fields in enumerate(rows[1:], start=2):
    if len(fields) != len(header):
      raise ValueError(f"{path}:{line}: {len(fields)} columns, expected "
                       f"{len(header)} (as the header has)")
    out.append(dict(zip(header, fields)))
  return out


def read_labels(data_dir: str) -> list[str]:
  path = os.path.join(data_dir, "labels.txt")
  with open(path, encoding="utf-8") as f:
    labels = [l.strip() for l in f if l.strip()]
  if len(set(labels)) != len(labels) or not labels:
    raise ValueError(f"{path}: labels must be distinct and non-empty")
  return labels


def encode(tokenizer, rows, labels, max_seq_length, where):
  """Token ids, segment ids and label ids, unpadded."""
  label_ids = {l: i for i, l in enumerate(labels)}
  text_a = [r["text_a"] for r in rows]
  text_b = [r["text_b"] for r in rows] if "text_b" in rows[0] else None
  enc = tokenizer(text_a, text_b, truncation="longest_first",
                  max_length=max_seq_length, padding=False,
                  return_attention_mask=False)
  y = []
  for i, r in enumerate(rows):
    if r["label"] not in label_ids:
      raise ValueError(f"{where}:{i + 2}: label {r['label']!r} is not one of "
                       f"labels.txt's {labels}")
    y.append(label_ids[r["label"]])
  return {"input_ids": enc["input_ids"],
          "token_type_ids": enc["token_type_ids"],
          "labels": np.asarray(y, np.int64)}


def collate(data, idx, pad_to_multiple_of=1):
  """One batch of rows `idx`, padded to its longest row."""
  lengths = [len(data["input_ids"][i]) for i in idx]
  width = max(lengths)
  width = -(-width // pad_to_multiple_of) * pad_to_multiple_of
  ids = np.zeros((len(idx), width), np.int64)
  types = np.zeros((len(idx), width), np.int64)
  mask = np.zeros((len(idx), width), np.int64)
  for row, (i, n) in enumerate(zip(idx, lengths)):
    ids[row, :n] = data["input_ids"][i]
    types[row, :n] = data["token_type_ids"][i]
    mask[row, :n] = 1
  return {"input_ids": torch.from_numpy(ids),
          "token_type_ids": torch.from_numpy(types),
          "attention_mask": torch.from_numpy(mask),
          "labels": torch.from_numpy(data["labels"][np.asarray(idx)])}


def train_order(n, batch_size, epochs, seed, lengths=None, window=0):
  """Batches of row indices: a fresh permutation per epoch, TF1's count.

  With `window` K > 0 (length bucketing, the rule bert_jax's
  FeatureBatches applies): each run of K batches is sorted by length, cut
  into K batches and put in a shuffled order.
  """
  steps = int(n / batch_size * epochs)
  rng = np.random.default_rng(seed)
  order = np.concatenate([rng.permutation(n)
                          for _ in range(math.ceil(epochs) + 1)])
  batches = [order[s * batch_size:(s + 1) * batch_size] for s in range(steps)]
  if not window:
    return batches
  lengths = np.asarray(lengths)
  out = []
  for w in range(0, steps, window):
    idx = np.concatenate(batches[w:w + window])
    idx = idx[np.argsort(lengths[idx], kind="stable")]
    chunk = idx.reshape(-1, batch_size)
    out += list(chunk[rng.permutation(len(chunk))])
  return out


def tf1_head_init(layer, std: float) -> None:
  """TF1's (and bert_jax's) init of a new head's dense layer, in place:
  normal(0, std) cut at two standard deviations, not rescaled (std ~0.88
  std), drawn from torch's seed; zero bias. transformers draws
  normal(0, std) instead."""
  with torch.no_grad():
    torch.nn.init.trunc_normal_(layer.weight, std=std, a=-2 * std, b=2 * std)
    layer.bias.zero_()


def make_optimizer(model, learning_rate, weight_decay, num_steps,
                   warmup_proportion, schedule="linear"):
  decay, no_decay = [], []
  for name, p in model.named_parameters():
    (no_decay if name.endswith("bias") or "LayerNorm" in name
     else decay).append(p)
  opt = torch.optim.AdamW(
      [{"params": decay, "weight_decay": weight_decay},
       {"params": no_decay, "weight_decay": 0.0}],
      lr=learning_rate, betas=(0.9, 0.999), eps=1e-6)
  warmup = int(num_steps * warmup_proportion)
  if schedule == "tf1":
    # TF1 optimization.py (and bert_jax): warmup to the peak, then
    # peak * (1 - step / num_steps), as if decay had run from step 0.
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: s / warmup if s < warmup else 1.0 - s / num_steps)
  else:
    sched = transformers.get_linear_schedule_with_warmup(opt, warmup,
                                                         num_steps)
  return opt, sched, warmup


def evaluate(model, data, batch_size, pad_to_multiple_of):
  model.eval()
  n = len(data["labels"])
  correct, loss_sum = 0, 0.0
  with torch.inference_mode():
    for start in range(0, n, batch_size):
      batch = collate(data, list(range(start, min(n, start + batch_size))),
                      pad_to_multiple_of)
      out = model(**batch)
      loss_sum += float(out.loss) * len(batch["labels"])
      correct += int((out.logits.argmax(-1) == batch["labels"]).sum())
  return correct / n, loss_sum / n


def run(args) -> dict:
  torch.set_num_threads(args.threads)
  torch.manual_seed(args.seed)
  labels = read_labels(args.data_dir)
  tokenizer = transformers.BertTokenizerFast.from_pretrained(args.model_dir)
  data = {}
  for split in ("train", "dev"):
    path = os.path.join(args.data_dir, f"{split}.tsv")
    data[split] = encode(tokenizer, read_tsv(path), labels,
                         args.max_seq_length, path)
  overrides = {}
  if args.dropout is not None:
    overrides = {"hidden_dropout_prob": args.dropout,
                 "attention_probs_dropout_prob": args.dropout}
  model = transformers.BertForSequenceClassification.from_pretrained(
      args.model_dir, num_labels=len(labels), **overrides)
  if args.head_init == "truncated_normal":
    tf1_head_init(model.classifier, model.config.initializer_range)
  if args.classifier_init:
    # Another run's starting classifier (kernel [hidden, labels], bias), e.g.
    # bert_jax's for a seed: the same start, so what remains is the framework.
    init = np.load(args.classifier_init)
    with torch.no_grad():
      model.classifier.weight.copy_(torch.from_numpy(init["kernel"].T))
      model.classifier.bias.copy_(torch.from_numpy(init["bias"]))
  n = len(data["train"]["labels"])
  if args.order_file:
    # Another run's batches (lists of train.tsv row indices), e.g. the ones
    # bert_jax's FeatureBatches draws for a seed: same data order, so what
    # remains between the two runs is the framework.
    with open(args.order_file) as f:
      batches = [np.asarray(b, np.int64) for b in json.load(f)]
    if any(len(b) != args.train_batch_size or b.min() < 0 or b.max() >= n
           for b in batches):
      raise ValueError(f"{args.order_file}: every batch must hold "
                       f"{args.train_batch_size} row indices in [0, {n})")
  else:
    batches = train_order(n, args.train_batch_size, args.num_train_epochs,
                          args.seed,
                          [len(x) for x in data["train"]["input_ids"]],
                          args.length_bucketing_window)
  if not batches:
    raise ValueError(f"{n} training examples cannot fill one batch of "
                     f"{args.train_batch_size}")
  opt, sched, warmup = make_optimizer(model, args.learning_rate, 0.01,
                                      len(batches), args.warmup_proportion,
                                      args.schedule)
  print(f"hf: {n} train / {len(data['dev']['labels'])} dev, "
        f"{len(batches)} steps (warmup {warmup}), lr {args.learning_rate}, "
        f"seed {args.seed}, {torch.get_num_threads()} threads", flush=True)

  model.train()
  losses = []
  start = time.perf_counter()
  for step, idx in enumerate(batches, start=1):
    batch = collate(data["train"], idx, args.pad_to_multiple_of)
    loss = model(**batch).loss
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    opt.step()
    sched.step()
    opt.zero_grad(set_to_none=True)
    losses.append(float(loss))
    if step % args.log_every == 0 or step == len(batches):
      elapsed = time.perf_counter() - start
      rate = step * args.train_batch_size / elapsed
      eta = (len(batches) - step) * elapsed / step
      print(f"hf: step {step}/{len(batches)} loss "
            f"{np.mean(losses[-args.log_every:]):.4f} {rate:.1f} ex/s "
            f"eta {eta:.0f}s", flush=True)
  train_seconds = time.perf_counter() - start

  start = time.perf_counter()
  accuracy, eval_loss = evaluate(model, data["dev"], args.eval_batch_size,
                                 args.pad_to_multiple_of)
  eval_seconds = time.perf_counter() - start
  results = {
      "framework": "hf", "eval_accuracy": accuracy, "eval_loss": eval_loss,
      "train_seconds": train_seconds, "eval_seconds": eval_seconds,
      "train_loss_last_epoch": float(np.mean(
          losses[-max(1, int(n / args.train_batch_size)):])),
      "num_train_steps": len(batches), "warmup_steps": warmup,
      "schedule": args.schedule, "head_init": args.head_init,
      "dropout": args.dropout,
      "n_train": n, "n_dev": len(data["dev"]["labels"]),
      "seed": args.seed, "learning_rate": args.learning_rate,
      "num_train_epochs": args.num_train_epochs,
      "train_batch_size": args.train_batch_size,
      "max_seq_length": args.max_seq_length, "threads": args.threads,
      "length_bucketing_window": args.length_bucketing_window,
      "torch": torch.__version__, "transformers": transformers.__version__,
      "machine": f"{platform.machine()} {os.cpu_count()} cpus",
  }
  print(f"hf: dev accuracy {accuracy:.4f}, train {train_seconds:.1f}s, "
        f"eval {eval_seconds:.1f}s", flush=True)
  return results


def parse_args(argv=None):
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("--model_dir", required=True)
  p.add_argument("--data_dir", required=True)
  p.add_argument("--output", required=True, help="results.json to write")
  p.add_argument("--learning_rate", type=float, default=5e-5)
  p.add_argument("--num_train_epochs", type=float, default=3.0)
  p.add_argument("--train_batch_size", type=int, default=32)
  p.add_argument("--eval_batch_size", type=int, default=64)
  p.add_argument("--max_seq_length", type=int, default=128)
  p.add_argument("--warmup_proportion", type=float, default=0.1)
  p.add_argument("--order_file", default="",
                 help="JSON list of batches of train.tsv row indices to "
                 "train on instead of the seed's shuffle")
  p.add_argument("--head_init", choices=("normal", "truncated_normal"),
                 default="normal",
                 help="the new classifier's init: transformers' normal(0, "
                 "0.02), or TF1's truncated normal")
  p.add_argument("--classifier_init", default="",
                 help=".npz with the classifier's starting kernel "
                 "[hidden, labels] and bias (default: transformers' init)")
  p.add_argument("--dropout", type=float, default=None,
                 help="hidden and attention dropout (default: the "
                 "checkpoint's config)")
  p.add_argument("--schedule", choices=("linear", "tf1"), default="linear",
                 help="linear: transformers' warmup then linear decay from "
                 "the peak to 0; tf1: the original's (bert_jax's) decay "
                 "peak * (1 - step / steps) after the warmup")
  p.add_argument("--pad_to_multiple_of", type=int, default=1)
  p.add_argument("--seed", type=int, default=0)
  p.add_argument("--length_bucketing_window", type=int, default=0,
                 help="K > 0: batches from length-sorted runs of K batches")
  p.add_argument("--threads", type=int, default=2)
  p.add_argument("--log_every", type=int, default=25)
  return p.parse_args(argv)


def main(argv=None):
  args = parse_args(argv)
  results = run(args)
  os.makedirs(os.path.dirname(os.path.abspath(args.output)), exist_ok=True)
  tmp = args.output + ".tmp"
  with open(tmp, "w") as f:
    json.dump(results, f, indent=2)
  os.replace(tmp, args.output)


if __name__ == "__main__":
  main()
