"""configs/pretrain.py: the paper's recipe, its variants as small diffs."""

import os
import re

import jax
import ml_collections
import pytest

from bert_jax import train
from bert_jax.tasks import pretraining
from configs import pretrain

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _flat(c: ml_collections.ConfigDict) -> dict[str, object]:
  out = {}
  def walk(d, prefix):
    for k, v in d.items():
      if isinstance(v, dict):
        walk(v, prefix + k + ".")
      else:
        out[prefix + k] = tuple(v) if isinstance(v, list) else v
  walk(c.to_dict(), "")
  return out


def _diff(variant: str) -> set[str]:
  base, other = _flat(pretrain.get_config("base")), _flat(
      pretrain.get_config(variant))
  assert base.keys() == other.keys()
  return {k for k in base if base[k] != other[k]} - {"variant"}


def test_base_is_the_papers_recipe():
  c = pretrain.get_config("base")
  # Appendix A.2: batch 256, 1M steps, 90% at 128 then 10% at 512,
  # Adam lr 1e-4, b1 0.9, b2 0.999, eps 1e-6, decay 0.01, 10k warmup.
  assert (c.train_batch_size, c.num_train_steps) == (256, 1_000_000)
  assert (c.max_seq_length, c.phase2_max_seq_length) == (128, 512)
  assert c.phase2_start_step == 900_000
  assert c.max_predictions_per_seq == 20
  assert (c.learning_rate, c.num_warmup_steps) == (1e-4, 10_000)
  o = c.optimizer
  assert (o.name, o.b1, o.b2, o.eps) == ("adamw", 0.9, 0.999, 1e-6)
  assert (o.weight_decay, o.clip_norm) == (0.01, 1.0)
  assert c.model.hidden_dropout_prob == c.model.attention_dropout_prob == 0.1
  assert c.objective == "mlm_nsp" and c.seed == 12345
  assert tuple(c.data.mask_ratios) == (0.8, 0.1, 0.1)
  m = pretraining.model_config(c)
  assert (m.num_layers, m.hidden_size, m.num_heads) == (12, 768, 12)
  assert m.vocab_size == 30522 and m.hidden_act == "gelu"


def test_original_flag_names_at_top_level():
  c = pretrain.get_config("base")
  for key in ("train_batch_size", "max_seq_length", "max_predictions_per_seq",
              "num_train_steps", "num_warmup_steps", "learning_rate",
              "save_checkpoints_steps", "seed"):
    assert key in c


@pytest.mark.parametrize("name", pretrain.TABLE6)
def test_table6_sizes(name):
  layers, hidden, heads = map(int, re.match(r"L(\d+)_H(\d+)_A(\d+)",
                                            name).groups())
  m = pretraining.model_config(pretrain.get_config(name))
  assert (m.num_layers, m.hidden_size, m.num_heads) == (layers, hidden, heads)
  assert m.intermediate_size == 4 * hidden
  assert _diff(name) <= {"model.preset"}


@pytest.mark.parametrize("name", [v for v in pretrain.VARIANTS
                                  if v.startswith("mask_")])
def test_table8_masking(name):
  expected = tuple(int(x) / 100 for x in name.split("_")[1:])
  ratios = tuple(pretrain.get_config(name).data.mask_ratios)
  assert ratios == expected and abs(sum(ratios) - 1) < 1e-9
  assert _diff(name) <= {"data.mask_ratios"}


def test_ablations_are_small_diffs():
  assert _diff("no_nsp") == {"objective"}
  assert _diff("ltr") == {"objective"}
  assert pretraining.model_config(pretrain.get_config("ltr")).attention == "causal"
  assert _diff("large") == {"model.preset"}
  assert _diff("mask_80_10_10") == set()


def test_configs_are_locked_and_unknown_variant_fails():
  c = pretrain.get_config("base")
  with pytest.raises(AttributeError):
    c.not_a_key = 1
  with pytest.raises(ValueError, match="unknown pretrain variant 'nope'"):
    pretrain.get_config("nope")


@pytest.mark.parametrize("name", pretrain.VARIANTS)
def test_every_variant_validates(name, tmp_path, monkeypatch):
  monkeypatch.chdir(ROOT)  # the default data paths are repo-relative
  c = pretrain.get_config(name)
  train.validate(c, str(tmp_path), train.make_mesh(c))
  # One global batch is a multiple of the 8 test devices' data axis.
  assert c.train_batch_size % jax.device_count() == 0


# -- named arguments that compose ---------------------------------------------

def _flat_of(arg: str) -> dict[str, object]:
  flat = _flat(pretrain.get_config(arg))
  flat.pop("variant")
  return flat


@pytest.mark.parametrize("name", pretrain.VARIANTS)
def test_named_variant_is_its_arguments(name):
  # The named variants keep their configs: each equals the composition
  # of the arguments it stands for, and only that diff from base/demo.
  args = {"demo": "recipe=demo", "base": "size=base", "large": "size=large",
          "no_nsp": "objective=no_nsp", "ltr": "objective=ltr"}.get(name)
  if args is None:
    args = (f"size={name}" if name in pretrain.TABLE6
            else f"masking={name}")
  assert _flat_of(name) == _flat_of(args)
  assert pretrain.get_config(name).variant == name


def test_arguments_compose():
  base, demo = _flat_of("base"), _flat_of("demo")
  c = _flat_of("size=large,objective=no_nsp")
  assert {k for k in base if base[k] != c[k]} == {"model.preset",
                                                   "objective"}
  assert (c["model.preset"], c["objective"]) == ("large", "mlm")
  c = _flat_of("size=L6_H768_A12,masking=mask_80_0_20")
  assert {k for k in base if base[k] != c[k]} == {"model.preset",
                                                   "data.mask_ratios"}
  assert c["data.mask_ratios"] == (0.8, 0.0, 0.2)
  assert _flat_of("masking=80_0_20") == _flat_of("mask_80_0_20")
  c = _flat_of("recipe=demo,size=L2_H64_A2,objective=ltr")
  assert {k for k in demo if demo[k] != c[k]} == {"model.preset",
                                                   "objective"}
  m = pretraining.model_config(pretrain.get_config(
      "recipe=demo,size=L2_H64_A2,objective=ltr"))
  assert (m.num_layers, m.hidden_size, m.num_heads) == (2, 64, 2)
  assert m.intermediate_size == 256 and m.attention == "causal"


def test_config_presets_are_the_models():
  from bert_jax import model  # pylint: disable=g-import-not-at-top
  assert set(pretrain.PRESETS) == set(model.PRESETS)


@pytest.mark.parametrize("arg, message", [
    ("size=large,objectiv=no_nsp", "'objectiv=no_nsp'; expected KEY=VALUE"),
    ("size=huge", "unknown model size 'huge'"),
    ("size=L2_H130_A3", "3 heads do not divide hidden size 130"),
    ("objective=nsp", "unknown pretrain objective 'nsp'"),
    ("masking=mask_80_10_20", "bad masking 'mask_80_10_20'"),
    ("recipe=fast", "unknown pretrain recipe 'fast'"),
    ("size=base,size=large", "'size' given twice"),
    ("size", "unknown pretrain variant 'size'"),
])
def test_bad_arguments_name_themselves(arg, message):
  with pytest.raises(ValueError, match=re.escape(message)):
    pretrain.get_config(arg)


def test_composed_config_validates(tmp_path, monkeypatch):
  monkeypatch.chdir(ROOT)
  c = pretrain.get_config("recipe=demo,size=L2_H64_A2,masking=mask_0_0_100")
  train.validate(c, str(tmp_path), train.make_mesh(c))
