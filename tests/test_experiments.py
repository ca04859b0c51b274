"""The table renderer puts each run's results.json value beside the paper's."""

import json

import pytest

from experiments import tables


def test_render_puts_ours_beside_paper(tmp_path):
  with open(tables._PAPER.default) as f:
    paper = json.load(f)
  table = paper["table6_model_size"]
  path = tmp_path / "results.json"
  path.write_text(json.dumps({"masked_lm_perplexity": 6.125}))
  runs = tables.load_runs([f"L3_H768_A12={path}"])
  text = tables.render(table, runs)
  row = next(l for l in text.splitlines() if l.startswith("| L3_H768_A12"))
  cells = [c.strip() for c in row.strip("|").split("|")]
  assert cells[1:3] == ["5.84", "6.12"]  # paper's LM ppl, then ours
  assert cells[3:5] == ["77.9", "-"]  # MNLI-m not measured by this run


def test_bad_run_specs_name_the_problem(tmp_path):
  with pytest.raises(ValueError, match="expected ROW=PATH"):
    tables.load_runs(["no-equals-sign"])
  with pytest.raises(FileNotFoundError, match="missing.json does not exist"):
    tables.load_runs([f"x={tmp_path}/missing.json"])
  bad = tmp_path / "bad.json"
  bad.write_text("{not json")
  with pytest.raises(ValueError, match="not valid JSON"):
    tables.load_runs([f"x={bad}"])
  with open(tables._PAPER.default) as f:
    table = json.load(f)["table6_model_size"]
  with pytest.raises(ValueError, match="not rows of this table"):
    tables.render(table, {"L99": {}})
