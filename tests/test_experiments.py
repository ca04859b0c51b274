"""experiments/: definitions resolve, the runner's job graph, skip and resume
on real tiny runs, collect's arithmetic, the figures."""

import dataclasses
import json
import os
import shlex
import signal
import subprocess
import sys
import time

import pytest
from flax import nnx

from bench import real_data
from bert_jax import heads
from bert_jax import model as model_lib
from bert_jax import tasks
from configs import finetune as finetune_configs
from experiments import definitions as defs
from experiments import jobs
from experiments import results
from launch.tpu import cli as tpu_cli

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ALL = [(t, s) for t in defs.TABLES for s in defs.SCALES]


def _resolve_finetune(f: defs.Finetune):
  c = finetune_configs.get_config(f.task)
  c.update_from_flattened_dict(dict(f.overrides))
  # The grid and the runner set these on every point.
  c.update_from_flattened_dict({
      "init_checkpoint": "/ckpt", "data_dir": "/data",
      "learning_rate": float(f.grid.learning_rates[0]),
      "train_batch_size": int(f.grid.batch_sizes[0]),
      "num_train_epochs": float(f.grid.epochs[0]),
      "seed": int(f.grid.seeds[0])})
  return c


def _check_table_shape(table: defs.Table, paper: dict) -> None:
  spec = paper[table.key]
  for row in table.rows:
    assert row.name in spec["rows"], row.name
    for col, cell in row.cells.items():
      assert col in spec["columns"], (row.name, col)
      assert cell.source in ("pretrain", "mean", *row.finetunes), cell
  for what in table.missing:
    assert what in spec["columns"] or what in spec["rows"], what


@pytest.mark.parametrize("name, scale", ALL)
def test_definitions_resolve_to_valid_configs(name, scale):
  """Every pre-training config and every fine-tuning task resolves
  with its overrides (an unknown key raises KeyError, a bad type
  TypeError)."""
  table = defs.get(name, scale)
  _check_table_shape(table, results.load_paper())
  assert table.rows
  for row in table.rows:
    c = jobs.pretrain_config(row.pretrain)
    c.update_from_flattened_dict({"data.data_dir": "/d",
                                  "data.phase2_data_dir": "/d2",
                                  "data.input_file": "/c/*"})
    for step in row.pretrain.keep_steps:
      assert step % c.save_checkpoints_steps == 0 and (
          step <= c.num_train_steps)
    assert len(row.pretrain.keep_steps) <= c.keep_checkpoints
    for f in row.finetunes.values():
      _resolve_finetune(f)
  # The whole graph builds, for both launchers.
  for launcher in jobs.LAUNCHERS:
    assert jobs.build(table, "gs://b/experiments", launcher)


def test_small_large_pretrains_at_its_own_learning_rate():
  """The small sizes the demo's learning rate does not train get their
  own in the config they run with, every table alike; the others keep
  the recipe's, except Table 8's rows, all at one rate of their own; the
  paper scale keeps the paper's."""
  from configs import pretrain as pretrain_configs  # pylint: disable=g-import-not-at-top
  demo_lr = pretrain_configs.get_config("recipe=demo").learning_rate
  for scale in defs.SCALES:
    for name in defs.TABLES:
      for row in defs.get(name, scale).rows:
        c = jobs.pretrain_config(row.pretrain)
        if scale == "small" and name == "table8":
          want = defs.TABLE8_SMALL_LEARNING_RATE
        elif scale == "small":
          want = defs.SMALL_LEARNING_RATES.get(c.model.preset, demo_lr)
        else:  # no override: the paper recipe's own rate
          want = pretrain_configs.get_config(row.pretrain.arg).learning_rate
        assert c.learning_rate == want, (name, scale, row.name)
  large = {r.name: r.pretrain for r in defs.get("table3", "small").rows}
  assert jobs.pretrain_config(large["BERT-Large"]).learning_rate == 1e-3
  assert "learning_rate=0.001" in large["BERT-Large"].slug


def test_bilstm_width_follows_the_encoder_at_each_scale():
  """The paper's BiLSTMs (Tables 5, 7, 8) are 768 units a direction, BERT-
  Base's width; a small table's are as wide as its small encoder."""
  from configs import pretrain as pretrain_configs  # pylint: disable=g-import-not-at-top
  seen = {scale: 0 for scale in defs.SCALES}
  for scale in defs.SCALES:
    for name in ("table5", "table7", "table8"):
      for row in defs.get(name, scale).rows:
        for f in row.finetunes.values():
          if f is None or not ("bilstm=true" in f.task
                               or "features=" in f.task):
            continue
          c = _resolve_finetune(f)
          if scale == "paper":
            assert c.lstm_units == 768, f
          else:
            encoder = model_lib.BertConfig.from_preset(
                pretrain_configs.get_config(row.pretrain.arg).model.preset)
            assert c.lstm_units == 0 and encoder.hidden_size == 128, f
            lstm = heads._bilstm(encoder, True, c.lstm_units, c.lstm_layers,
                                 nnx.Rngs(0))
            assert lstm.units == encoder.hidden_size
          seen[scale] += 1
  # Table 5's + BiLSTM row (paper: five tasks; small: the three with a
  # stand-in), Table 7's and Table 8's six feature-based rows.
  assert seen == {"paper": 5 + 6 + 6, "small": 3 + 6 + 6}


def test_each_stand_in_set_gets_its_own_grid():
  """MNLI's and SST-2's small-scale stand-ins are both read by the `custom`
  task: each gets its own grid and workdir, so a column never reads
  another column's set; and a graph refuses two jobs of one name."""
  table = defs.get("table1", "small")
  graph = jobs.build(table, "/exp")
  row = table.rows[0]
  dirs = {key: jobs.finetune_dir("/exp", row.pretrain, f)
          for key, f in row.finetunes.items() if f is not None}
  assert len(set(dirs.values())) == len(dirs) >= 2
  for key, f in row.finetunes.items():
    if f is None:
      continue
    job = next(j for j in graph if j.workdir == dirs[key])
    assert f"--config.data_dir=/exp/data/{f.data}" in job.argv
  f = next(f for f in row.finetunes.values() if f is not None)
  clash = dataclasses.replace(
      row, finetunes={"a": f, "b": dataclasses.replace(
          f, grid=dataclasses.replace(f.grid, seeds=(9,)))})
  with pytest.raises(ValueError, match="two different jobs are named"):
    jobs.build(dataclasses.replace(table, rows=(clash,)), "/exp")


def test_job_graph_shares_models_and_orders_dependencies():
  table = defs.get("table5", "paper")
  graph = jobs.build(table, "/exp")
  kinds = [j.kind for j in graph]
  # LTR & No NSP and + BiLSTM fine-tune one LTR model: 3 pre-trainings.
  assert kinds.count("pretrain") == 3 and kinds.count("finetune") == 20
  names = [j.name for j in graph]
  assert len(set(names)) == len(names)
  for i, j in enumerate(graph):
    assert all(names.index(d) < i for d in j.deps), j.name
  ltr = [j for j in graph if j.kind == "finetune" and
         j.deps == ("pretrain/size=base,objective=ltr",)]
  assert len(ltr) == 10
  # Small scale: the stand-in sets are jobs too, once each.
  small = jobs.build(defs.get("table6", "small"), "/r")
  data = [j for j in small if j.kind == "data"]
  assert sorted(j.name for j in data) == ["data/conll_entity",
                                          "data/conll_shared"]
  assert jobs.select(small, ["pretrain"]) == [
      j for j in small if j.kind == "pretrain"]
  # Figure 5 fine-tunes each kept step of one run.
  fig = jobs.build(defs.get("figure5", "small"), "/r")
  inits = sorted(a for j in fig for a in j.argv
                 if a.startswith("--config.init_checkpoint="))
  assert inits[0].endswith("/checkpoints/1000") and len(inits) == 10
  with pytest.raises(ValueError, match="unknown table 'table9'"):
    defs.get("table9", "small")


def test_table8_rows_differ_only_in_masking():
  """Table 8's 80/10/10 row is BERT's own masking (configs/pretrain.py's
  default). At the paper scale it fine-tunes the Base model Table 7 pre-
  trains (one job); at the small scale all six rows pre-train at one rate
  of their own, so the 80/10/10 row is its own run of Table 7's Base size
  and every row's config equals it but for the masking ratios."""
  from configs import pretrain as pretrain_configs  # pylint: disable=g-import-not-at-top
  default = pretrain_configs.get_config("size=L2_H128_A2").data.mask_ratios
  assert tuple(int(round(100 * x)) for x in default) == (80, 10, 10)
  for scale in defs.SCALES:
    by_name = {r.name: r.pretrain for r in defs.get("table8", scale).rows}
    base = {r.name: r.pretrain for r in defs.get("table7", scale).rows}[
        "BERT-Base fine-tuned"]
    if scale == "paper":
      assert by_name["mask_80_10_10"] == base
    else:
      assert by_name["mask_80_10_10"].slug != base.slug
      assert (jobs.pretrain_config(by_name["mask_80_10_10"]).model.preset
              == jobs.pretrain_config(base).model.preset == "L4_H128_A4")
      table6 = {r.name: r.pretrain for r in defs.get("table6", scale).rows}
      assert base == table6["L12_H768_A12"]
    others = [p for n, p in by_name.items() if n != "mask_80_10_10"]
    assert len({p.arg for p in others}) == 5

    def all_but_masking(c):
      d = c.to_dict()
      d["data"] = {k: v for k, v in d["data"].items() if k != "mask_ratios"}
      del d["variant"]  # the run's name
      return d

    reference = all_but_masking(
        jobs.pretrain_config(by_name["mask_80_10_10"]))
    for name, p in by_name.items():
      c = jobs.pretrain_config(p)
      ratios = c.data.mask_ratios
      assert "_".join(str(int(round(100 * x))) for x in ratios) == name[5:]
      assert all_but_masking(c) == reference, (scale, name)


def test_feature_rows_have_the_layers_they_read():
  """Every feature-based row's encoder has the layers its features read
  (Table 7's "last four" needs four; the task refuses fewer)."""
  seen = 0
  for scale in defs.SCALES:
    for name in defs.TABLES:
      for row in defs.get(name, scale).rows:
        layers = model_lib.BertConfig.from_preset(
            jobs.pretrain_config(row.pretrain).model.preset).num_layers
        for f in row.finetunes.values():
          c = _resolve_finetune(f)
          if c.get("features"):
            heads.feature_layers(c.features, layers)  # raises if too few
            seen += 1
  assert seen == 2 * (6 + 6)  # Tables 7 and 8, both scales


def test_paper_dry_run_is_what_the_launcher_runs(capsys):
  """The TPU dry run's commands, given to launch.tpu, start bert_jax.main
  with the row's config on the recipe's slice."""
  out = subprocess.run(
      [sys.executable, "-m", "experiments.run", "table5", "--scale=paper",
       "--launcher=tpu", "--dry-run", "--root=gs://b/experiments",
       "--tpu_bucket=gs://b"], cwd=ROOT, capture_output=True, text=True,
      check=True).stdout
  lines = [l for l in out.splitlines() if not l.startswith("#")]
  assert len(lines) == 23
  launch = [shlex.split(l) for l in lines if "launch.tpu" in l]
  assert len(launch) == 3
  for argv in launch:
    assert argv[:4] == ["python", "-m", "launch.tpu", "resume"]
    i = argv.index("--")
    rc = tpu_cli.main([*argv[3:i], "--dry-run", "--state=MISSING",
                       "--repo=https://x/bert_jax.git", "--commit=abc",
                       *argv[i:]])
    assert rc == 0
    printed = capsys.readouterr().out
    config = next(a for a in argv if a.startswith("--config="))
    assert f"bert_jax.main --jax_distributed {config} " in printed
    assert "--config.data.input_file=gs://b/data/corpus/*" in printed
    assert "--workdir=gs://b/experiments/pretrain/" in printed
  grids = [l for l in lines if "finetune_grid" in l]
  assert len(grids) == 20 and all(l.startswith("gcloud compute tpus tpu-vm "
                                              "ssh bert-exp-ft ") for l in grids)
  assert any("--config=configs/finetune.py:task=mnli,bilstm=true" in l
             for l in grids)


def test_every_small_scale_task_has_a_stand_in_set():
  """Every paper task a small-scale table fine-tunes reads a set that
  prepare_data knows, and each SQuAD / SWAG table fills its dev columns."""
  for name in defs.TABLES:
    table = defs.get(name, "small")
    for row in table.rows:
      for f in row.finetunes.values():
        assert f.data in defs.SMALL_DATA, (name, row.name, f.data)
  for name, task, columns in (("table2", "squad11", ("dev EM", "dev F1")),
                              ("table3", "squad20", ("dev EM", "dev F1")),
                              ("table4", "swag", ("dev",))):
    table = defs.get(name, "small")
    for row in table.rows:
      assert row.finetunes[task].task == task
      assert all(row.cells[c].source == task for c in columns), row.name
    assert not set(columns) & set(table.missing), table.missing


_WHEEL = os.path.join(real_data.NER_DEFAULT_CACHE_DIR,
                      real_data.NER_WHEEL_FILE)


@pytest.mark.skipif(not os.path.isfile(_WHEEL),
                    reason=f"{_WHEEL} not cached (never downloaded here)")
def test_stand_in_data_jobs_write_what_their_tasks_read(tmp_path):
  """The SQuAD 1.1 / 2.0 and SWAG tables' data jobs, run as the runner
  runs them, leave their done file and the files the fine-tuning task
  checks for in the job's data_dir."""
  root = str(tmp_path)
  for name in ("table2", "table3", "table4"):
    table = defs.get(name, "small")
    graph = jobs.build(table, root)
    for job in (j for j in graph if j.kind == "data"):
      res = subprocess.run([sys.executable, *job.argv[1:]], cwd=ROOT,
                           capture_output=True, text=True, timeout=60)
      assert res.returncode == 0, res.stderr
      assert job.done(), job.name
    for row in table.rows:
      for f in row.finetunes.values():
        c = _resolve_finetune(f)
        c.data_dir = jobs.data_dir(root, "", "small", f)
        assert any(a == f"--config.data_dir={c.data_dir}"
                   for j in graph for a in j.argv)
        problems = []
        tasks.from_config(c).validate_data(
            lambda ok, msg: ok or problems.append(msg))
        assert not problems, (name, f.task, problems)


# -- the runner on real tiny runs ---------------------------------------------

_TINY_PRETRAIN = (
    "recipe=demo,size=L1_H32_A2", (
        ("num_train_steps", 6), ("num_warmup_steps", 1),
        ("train_batch_size", 8), ("eval_batch_size", 8),
        ("max_seq_length", 32), ("max_predictions_per_seq", 5),
        ("log_every_steps", 3), ("save_checkpoints_steps", 3),
        ("num_eval_steps", 1), ("export", False),
        ("data.input_file", os.path.join(ROOT, "data/corpus/botchan.txt.gz")),
        ("data.dupe_factor", 1), ("data.eval_fraction", 0.2),
        ("data.num_workers", 1), ("data.num_shards", 2)))
_TINY_FINETUNE = ("custom", "tiny", ((1e-3,), (8,), (1.0,), (0, 1)),
                  "eval_accuracy", (("max_seq_length", 32),
                                    ("eval_batch_size", 8),
                                    ("export", False)))
# A two-job table (plus its data set, already there) run by the runner in
# its own process, so that the test can kill it.
_TINY_RUNNER = """
import sys
sys.path.insert(0, {root!r})
from experiments import definitions as defs, jobs
task, data, grid, metric, overrides = {finetune!r}
ft = defs.Finetune(task, data, defs.Grid(*grid), metric, overrides)
row = defs.Row("r", defs.Pretrain(*{pretrain!r}), {{"tiny": ft}},
               {{"acc": defs.Cell("tiny", "eval_accuracy")}})
table = defs.Table("tiny", "small", (row,), {{}})
sys.exit(jobs.Runner(jobs.build(table, {out!r}), "small",
                     poll_seconds=0.2).run())
"""


def _write_tiny_set(path):
  os.makedirs(path)
  words = ["good", "great", "fine", "bad", "awful", "poor"]
  for split, n in (("train", 32), ("dev", 16)):
    with open(os.path.join(path, f"{split}.tsv"), "w") as f:
      f.write("guid\ttext_a\tlabel\n")
      for i in range(n):
        w = words[i % 6]
        f.write(f"{split}-{i}\tthe film was {w}\t{'pos' if i % 6 < 3 else 'neg'}\n")
  with open(os.path.join(path, "meta.json"), "w") as f:
    json.dump({"name": "tiny"}, f)


def _mtimes(d):
  return {os.path.join(p, n): os.stat(os.path.join(p, n)).st_mtime_ns
          for p, _, names in os.walk(d) for n in names}


@pytest.mark.slow
def test_killed_runner_continues_and_recomputes_nothing(tmp_path):
  out = str(tmp_path / "root")
  _write_tiny_set(os.path.join(out, "data", "tiny"))
  script = tmp_path / "tiny_runner.py"
  script.write_text(_TINY_RUNNER.format(
      root=ROOT, out=out, pretrain=_TINY_PRETRAIN, finetune=_TINY_FINETUNE))
  ft_root = os.path.join(out, "finetune")
  log = open(tmp_path / "runner1.txt", "w")
  # The jobs run on one CPU device (not the 8 the test process forces):
  # what the runner does is under test here, not sharding.
  env = dict(os.environ, XLA_FLAGS="")
  proc = subprocess.Popen([sys.executable, str(script)], cwd=ROOT,
                          stdout=log, stderr=subprocess.STDOUT,
                          start_new_session=True, env=env)
  seed0 = None
  deadline = time.time() + 300
  while time.time() < deadline and proc.poll() is None:
    found = [os.path.join(p, "results.json") for p, _, n in os.walk(ft_root)
             if "results.json" in n and p.endswith("seed=0")]
    if found:
      seed0 = found[0]
      break
    time.sleep(0.05)
  # Killed mid-table: the pre-training finished, the grid's first point too.
  os.killpg(proc.pid, signal.SIGKILL)
  proc.wait()
  log.close()
  assert seed0, open(tmp_path / "runner1.txt").read()
  pre_results = [p for p in _mtimes(out) if p.endswith("results.json")
                 and "/pretrain/" in p]
  assert len(pre_results) == 1
  before = _mtimes(os.path.dirname(pre_results[0]))
  seed0_mtime = os.stat(seed0).st_mtime_ns
  seed1 = seed0.replace("seed=0", "seed=1")
  killed_mid_point = not os.path.exists(seed1)

  second = subprocess.run([sys.executable, str(script)], cwd=ROOT,
                          capture_output=True, text=True, timeout=300,
                          env=env)
  assert second.returncode == 0, second.stdout + second.stderr
  assert "done before: pretrain/" in second.stdout
  assert "starting finetune/" in second.stdout
  assert "[2/3 jobs done" in second.stdout  # the data set and the model
  # Nothing of the finished pre-training was touched; the grid's finished
  # point was not run again.
  after = _mtimes(os.path.dirname(pre_results[0]))
  assert {p: t for p, t in after.items() if p in before} == before
  assert os.stat(seed0).st_mtime_ns == seed0_mtime
  grid_dir = os.path.dirname(os.path.dirname(seed0))
  grid_log = open(os.path.join(grid_dir, jobs.LOG)).read()
  assert "grid point 1/2 (done before)" in grid_log
  if killed_mid_point:
    assert "grid point 2/2 (ran)" in grid_log
  with open(os.path.join(grid_dir, "grid.json")) as f:
    grid = json.load(f)
  assert jobs.grid_complete(grid, defs.Grid((1e-3,), (8,), (1.0,), (0, 1)))

  # A third run finds everything finished and starts nothing.
  third = subprocess.run([sys.executable, str(script)], cwd=ROOT,
                         capture_output=True, text=True, timeout=120,
                         env=env)
  assert third.returncode == 0 and "starting" not in third.stdout
  assert "3/3 jobs done" in third.stdout

  # collect reads the grid's seeds: mean and std of their results.json.
  accs = []
  for seed in (0, 1):
    with open(seed0.replace("seed=0", f"seed={seed}")) as f:
      accs.append(100 * json.load(f)["eval_accuracy"])
  task, data, grid, metric, overrides = _TINY_FINETUNE
  row = defs.Row("r", defs.Pretrain(*_TINY_PRETRAIN), {"t": defs.Finetune(
      task, data, defs.Grid(*grid), metric, overrides)},
                 {"acc": defs.Cell("t", "eval_accuracy")})
  values, why = results.cell_values(out, row, row.cells["acc"])
  assert why == "" and values == pytest.approx(accs)


# -- collect ------------------------------------------------------------------

def _grid_json(values, key="eval_accuracy", extra=None, grid=None):
  """grid.json as finetune_grid writes it: every point of `grid` (default
  one point), the first the best; seeds numbered from 0 or grid's."""
  grid = grid or defs.Grid((3e-5,), (32,), (3,), tuple(range(len(values))))
  points = []
  for lr in grid.learning_rates:
    for b in grid.batch_sizes:
      for e in grid.epochs:
        runs = [{"seed": s, "workdir": f"lr={lr:g},bs={b},ep={e:g},seed={s}",
                 "results": {key: v, **(extra or {})}}
                for s, v in zip(grid.seeds, values)]
        points.append({"learning_rate": lr, "train_batch_size": b,
                       "num_train_epochs": float(e), "seeds": len(runs),
                       "runs": runs})
  return {"metric": key, "best": points[0], "points": points}


def test_collect_arithmetic_against_hand_computed_values(tmp_path):
  root = str(tmp_path)
  grid = defs.Grid((3e-5,), (32,), (3,), (0, 1, 2))
  pre = defs.Pretrain("recipe=demo,size=L1_H128_A4")
  mnli = defs.Finetune("custom", "conll_shared", grid, "eval_accuracy")
  sst = defs.Finetune("sst2", "conll_entity", grid, "eval_accuracy")
  row = defs.Row("L3_H768_A12", pre, {"mnli": mnli, "sst2": sst}, {
      "LM ppl": defs.Cell("pretrain", "masked_lm_perplexity", False),
      "MNLI-m": defs.Cell("mnli", "eval_accuracy"),
      "SST-2": defs.Cell("sst2", "eval_accuracy")})
  table = defs.Table("table6_model_size", "small", (row,),
                     {"MRPC": "no stand-in"})
  os.makedirs(jobs.pretrain_dir(root, pre))
  with open(os.path.join(jobs.pretrain_dir(root, pre), "results.json"),
            "w") as f:
    json.dump({"steps": 1000, "masked_lm_perplexity": 6.125}, f)
  for f_, values in ((mnli, [0.80, 0.90, 0.70]), (sst, [0.5, 0.5])):
    d = jobs.finetune_dir(root, pre, f_)
    os.makedirs(d)
    with open(os.path.join(d, "grid.json"), "w") as f:
      json.dump(_grid_json(values), f)
  cells = {(c.row, c.column): c for c in results.collect(table, root)}
  ppl = cells[("L3_H768_A12", "LM ppl")]
  assert ppl.values == (6.125,) and ppl.std is None
  assert ppl.paper == 5.84 and ppl.delta == pytest.approx(0.285)
  mnli_cell = cells[("L3_H768_A12", "MNLI-m")]
  # 80, 90, 70: mean 80, sample std sqrt((0 + 100 + 100) / 2) = 10.
  assert mnli_cell.mean == pytest.approx(80.0)
  assert mnli_cell.std == pytest.approx(10.0)
  assert mnli_cell.delta == pytest.approx(80.0 - 77.9)
  # The SST-2 grid ran 2 of its 3 seeds: not finished, no number.
  sst_cell = cells[("L3_H768_A12", "SST-2")]
  assert sst_cell.mean is None and sst_cell.why_missing == "grid not finished"
  assert cells[("L3_H768_A12", "MRPC")].why_missing == "no stand-in"
  assert cells[("L6_H768_A3", "LM ppl")].why_missing == "not defined"
  text = results.markdown(table, list(cells.values()))
  assert "| L3_H768_A12 | 6.12 vs 5.84 (+0.29) | 80.0 ± 10.0 vs 77.9 (+2.1)" \
      " | - vs 79.8 | - vs 88.4 |" in text
  results.write_csv(str(tmp_path / "t.csv"), table, list(cells.values()))
  import csv  # pylint: disable=g-import-not-at-top
  rows = list(csv.DictReader(open(tmp_path / "t.csv")))
  mnli_row = next(r for r in rows if r["row"] == "L3_H768_A12"
                  and r["column"] == "MNLI-m")
  assert (float(mnli_row["ours_mean"]), float(mnli_row["ours_std"]),
          int(mnli_row["n"]), float(mnli_row["paper"])) == (80, 10, 3, 77.9)
  assert float(mnli_row["delta"]) == pytest.approx(2.1)
  assert mnli_row["values"] == "80;90;70"


def test_glue_average_is_the_mean_of_the_row(tmp_path):
  table = defs.get("table1", "paper")
  row = next(r for r in table.rows if r.name == "BERT-Base")
  keys = {}
  for col, cell in row.cells.items():
    if cell.source != "mean":
      keys.setdefault(cell.source, {})[cell.key] = None
  # The mismatched accuracy is a second metric of the MNLI grid's point.
  for i, (task, metrics) in enumerate(sorted(keys.items())):
    d = jobs.finetune_dir(str(tmp_path), row.pretrain, row.finetunes[task])
    os.makedirs(d)
    first, *rest = metrics
    with open(os.path.join(d, "grid.json"), "w") as f:
      json.dump(_grid_json([0.5 + i / 100] * 3, first,
                           {k: 0.4 for k in rest},
                           row.finetunes[task].grid), f)
  cells = [c for c in results.collect(table, str(tmp_path))
           if c.row == "BERT-Base"]
  by_col = {c.column: c for c in cells}
  assert by_col["MNLI-mm"].mean == pytest.approx(40.0)
  others = [c.mean for c in cells if c.column != "avg"]
  assert by_col["avg"].mean == pytest.approx(sum(others) / 9)


def test_figures_are_written(tmp_path):
  fig5 = defs.get("figure5", "small")
  cells = [results.CellResult(r, c, (60.0 + i, 61.0 + i), None, True)
           for r in ("MLM", "LTR") for i, c in enumerate(
               ["0.2", "0.4", "0.6", "0.8", "1.0"])]
  path = results.plot_figure5(fig5, cells, str(tmp_path / "f5.png"))
  with open(path, "rb") as f:
    assert f.read(8) == b"\x89PNG\r\n\x1a\n"
  assert os.path.getsize(path) > 5000
  t6 = defs.get("table6", "small")
  row = t6.rows[0]
  d = jobs.pretrain_dir(str(tmp_path), row.pretrain)
  os.makedirs(d)
  with open(os.path.join(d, "bert_config.json"), "w") as f:
    json.dump({"bert_jax": {"num_layers": 1, "hidden_size": 128,
                            "intermediate_size": 512, "vocab_size": 8000}}, f)
  cells = [results.CellResult(row.name, "LM ppl", (250.0,), 5.84, False)]
  path = results.plot_table6(t6, cells, str(tmp_path), str(tmp_path / "t6.png"))
  assert os.path.getsize(path) > 5000


def test_encoder_params_is_bert_base():
  # BERT-Base's encoder with its pooler: 109,482,240 parameters (the
  # "110M" of the paper; transformers' BertModel counts the same).
  assert results.encoder_params(12, 768, 3072, 30522) == 109_482_240


def test_cli_errors_are_one_line():
  for module in ("experiments.run", "experiments.collect"):
    res = subprocess.run([sys.executable, "-m", module, "table9"], cwd=ROOT,
                         capture_output=True, text=True)
    assert res.returncode != 0
    assert res.stderr.strip().splitlines()[-1] == (
        "error: unknown table 'table9'; known: " + ", ".join(defs.TABLES))


def test_a_failed_job_blocks_only_what_needs_it(tmp_path):
  import io  # pylint: disable=g-import-not-at-top
  d = str(tmp_path)
  ok = os.path.join(d, "c", "meta.json")
  graph = [
      jobs.Job("data/a", "data", ["python", "-c", "import sys; sys.exit(3)"],
               os.path.join(d, "a"), os.path.join(d, "a", "meta.json")),
      jobs.Job("data/c", "data", ["python", "-c",
                                  f"open({ok!r}, 'w').write('{{}}')"],
               os.path.join(d, "c"), ok),
      jobs.Job("pretrain/b", "pretrain", ["python", "-c", "pass"],
               os.path.join(d, "b"), os.path.join(d, "b", "results.json"),
               deps=("data/a",)),
  ]
  out = io.StringIO()
  assert jobs.Runner(graph, "small", out=out).run() == 1
  text = out.getvalue()
  assert "data/a: FAILED (exit status 3)" in text
  assert "skipped (a dependency failed): pretrain/b" in text
  assert os.path.exists(ok) and "1 failed: data/a" in text
  assert not os.path.exists(os.path.join(d, "a", jobs.LOCK))


def test_runner_with_a_gcs_root(gcs, tmp_path, monkeypatch):
  """--launcher=tpu's layout on the emulator: the jobs' results on gs://
  tell what is done; each job's lock and log stay on this machine."""
  import io  # pylint: disable=g-import-not-at-top
  from bert_jax import storage  # pylint: disable=g-import-not-at-top
  monkeypatch.setenv("BERT_JAX_CACHE_DIR", str(tmp_path / "cache"))
  root = f"gs://{gcs.bucket}/exp"
  work = f"{root}/pretrain/x"
  done_file = f"{work}/results.json"
  write = (f"from bert_jax import storage; "
           f"storage.write_text({done_file!r}, '{{\"steps\": 3}}')")
  job = jobs.Job("pretrain/x", "pretrain", ["python", "-c", write], work,
                 done_file)
  assert not job.done()
  out = io.StringIO()
  runner = jobs.Runner([job], "small", out=out,
                       env=dict(os.environ, **gcs.env))
  assert runner.run() == 0, out.getvalue()
  storage.filesystem().invalidate_cache()
  assert job.done()
  here = jobs.state_dir(job)
  assert here == str(tmp_path / "cache" / "experiments" / gcs.bucket / "exp"
                     / "pretrain" / "x")
  assert job.command() in open(os.path.join(here, jobs.LOG)).read()
  assert not os.path.exists(os.path.join(here, jobs.LOCK))
  again = io.StringIO()
  assert jobs.Runner([job], "small", out=again).run() == 0
  assert "done before: pretrain/x" in again.getvalue()
  # A TPU graph refuses local paths: the slices could not reach them.
  table = defs.get("table6", "paper")
  with pytest.raises(ValueError, match="--root=/tmp/x is not a gs:// URL"):
    jobs.build(table, "/tmp/x", "tpu", tpu=jobs.Tpu(bucket="gs://b"))
  graph = jobs.build(table, "gs://b/exp", "tpu", tpu=jobs.Tpu(bucket="gs://b"))
  assert all(j.workdir.startswith("gs://b/exp/") for j in graph)
  assert any("--config.data_dir=gs://b/data/glue_data/MNLI" in " ".join(
      j.argv) for j in graph if j.kind == "finetune")


@pytest.mark.parametrize("scale", ["small", "paper"])
def test_squad_cells_are_already_percentages(tmp_path, scale):
  """SQuAD's results.json holds EM/F1 in percent (the official scripts'),
  GLUE's and SWAG's accuracies as fractions: collect scales only the
  latter."""
  table = defs.get("table2", scale)
  row = next(r for r in table.rows if "dev F1" in r.cells)
  cell = row.cells["dev F1"]
  assert not cell.fraction
  d = jobs.finetune_dir(str(tmp_path), row.pretrain,
                        row.finetunes[cell.source])
  os.makedirs(d)
  f = row.finetunes[cell.source]
  with open(os.path.join(d, "grid.json"), "w") as out:
    json.dump(_grid_json([81.0, 83.0, 85.0][:len(f.grid.seeds)], "eval_f1",
                         {"eval_exact_match": 70.0}, f.grid), out)
  values, why = results.cell_values(str(tmp_path), row, cell)
  assert why == "" and values == pytest.approx(
      tuple([81.0, 83.0, 85.0][:len(f.grid.seeds)]))
  swag = defs.get("table4", scale)
  swag_row = next(r for r in swag.rows if r.cells)
  assert all(c.fraction for c in swag_row.cells.values())
