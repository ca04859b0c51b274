"""Pre-trained checkpoints: Hugging Face, Google's TF1 release, native Orbax.

`load_pretrained(path, task=...)` reads any format; `convert(src, dst, ...)`
is what the `python -m bert_jax.convert` command line runs.

Formats:
- `hf`: a directory with config.json + model.safetensors (or
  pytorch_model.bin) [+ vocab.txt]; keys with or without the `bert.` prefix,
  with or without the `cls.*` pre-training heads. `is_decoder: true` means
  causal attention: an LTR model exports as `BertLMHeadModel`.
- `tf1`: Google's `bert_model.ckpt.{index,data-*}` + bert_config.json +
  vocab.txt (read and written with TensorFlow). TF1's 'gelu' is the tanh
  approximation, so imports get hidden_act='gelu_tanh', and a model with the
  exact (erf) GELU is exported only when told to approximate it. TF1 BERT
  has no causal attention: LTR models are refused.
- `bert_jax` (native): bert_config.json + vocab + `params/`, an Orbax
  checkpoint of the BertForPreTraining parameters as a plain nested dict.
- `workdir` (read only): a training run's directory: the bert_config.json
  and vocabulary the trainer writes at its start, and the params of the
  newest readable Orbax checkpoint in `checkpoints/<step>/state`; or one
  step's checkpoint, named by its directory `WORKDIR/checkpoints/<step>`.

Parameters travel as plain nested dicts of numpy arrays shaped like
`nnx.to_pure_dict(nnx.state(BertForPreTraining(...), nnx.Param))`; load them
with `nnx.replace_by_pure_dict`. task='pretraining' initialises the heads a
checkpoint lacks and the report names them, task='encoder' returns the
BertModel params alone. Conversions carry only what the checkpoint has: no
invented heads are written. Missing, unexpected or mis-shaped tensors raise
one error listing all of them.
"""

from __future__ import annotations

import dataclasses
import glob
import json
import os
import shutil
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
from absl import logging

from bert_jax import model as model_lib

BertConfig = model_lib.BertConfig
Params = dict[str, Any]

FORMATS = ("hf", "tf1", "bert_jax", "workdir")  # what load_pretrained reads
EXPORT_FORMATS = ("bert_jax", "hf", "tf1")  # what convert writes
_NATIVE_CONFIG = "bert_config.json"
_NATIVE_PARAMS = "params"
_WORKDIR_CHECKPOINTS = "checkpoints"  # the trainer's CheckpointManager
_TF1_CKPT = "bert_model.ckpt"


# -- the name table ----------------------------------------------------------
# One row per tensor: our path, the Hugging Face name, the TF1 name, and how
# the canonical matrix (TF1 layout: [in, out]) reshapes into ours. HF stores
# Linear weights as [out, in]; `hf_t` marks those.

@dataclasses.dataclass(frozen=True)
class _Row:
  ours: str
  hf: str
  tf1: str
  hf_t: bool = False  # HF holds the transpose of the canonical matrix
  tf1_t: bool = False  # TF1 holds the transpose of the canonical matrix
  shape: str = "plain"  # plain | heads_in | heads_bias | heads_out
  per_layer: bool = False
  head: str | None = None  # None: encoder; else the head's name


def _dense(ours, hf, tf1, **kw):
  return [_Row(f"{ours}/kernel", f"{hf}.weight", f"{tf1}/kernel", hf_t=True,
               **kw),
          _Row(f"{ours}/bias", f"{hf}.bias", f"{tf1}/bias",
               **{k: v for k, v in kw.items() if k != "shape"},
               shape="heads_bias" if kw.get("shape") == "heads_in"
               else "plain")]


def _ln(ours, hf, tf1, **kw):
  return [_Row(f"{ours}/scale", f"{hf}.weight", f"{tf1}/gamma", **kw),
          _Row(f"{ours}/bias", f"{hf}.bias", f"{tf1}/beta", **kw)]


_L = dict(per_layer=True)
_ROWS: list[_Row] = [
    _Row("bert/embeddings/word_embeddings/embedding",
         "bert.embeddings.word_embeddings.weight",
         "bert/embeddings/word_embeddings"),
    _Row("bert/embeddings/position_embeddings/embedding",
         "bert.embeddings.position_embeddings.weight",
         "bert/embeddings/position_embeddings"),
    _Row("bert/embeddings/token_type_embeddings/embedding",
         "bert.embeddings.token_type_embeddings.weight",
         "bert/embeddings/token_type_embeddings"),
    *_ln("bert/embeddings/layer_norm", "bert.embeddings.LayerNorm",
         "bert/embeddings/LayerNorm"),
    *[r for name in ("query", "key", "value") for r in _dense(
        f"bert/encoder/layers/attention/{name}",
        f"bert.encoder.layer.{{i}}.attention.self.{name}",
        f"bert/encoder/layer_{{i}}/attention/self/{name}",
        shape="heads_in", **_L)],
    _Row("bert/encoder/layers/attention/output/kernel",
         "bert.encoder.layer.{i}.attention.output.dense.weight",
         "bert/encoder/layer_{i}/attention/output/dense/kernel", hf_t=True,
         shape="heads_out", **_L),
    _Row("bert/encoder/layers/attention/output/bias",
         "bert.encoder.layer.{i}.attention.output.dense.bias",
         "bert/encoder/layer_{i}/attention/output/dense/bias", **_L),
    *_ln("bert/encoder/layers/attention_layer_norm",
         "bert.encoder.layer.{i}.attention.output.LayerNorm",
         "bert/encoder/layer_{i}/attention/output/LayerNorm", **_L),
    *_dense("bert/encoder/layers/intermediate",
            "bert.encoder.layer.{i}.intermediate.dense",
            "bert/encoder/layer_{i}/intermediate/dense", **_L),
    *_dense("bert/encoder/layers/output",
            "bert.encoder.layer.{i}.output.dense",
            "bert/encoder/layer_{i}/output/dense", **_L),
    *_ln("bert/encoder/layers/output_layer_norm",
         "bert.encoder.layer.{i}.output.LayerNorm",
         "bert/encoder/layer_{i}/output/LayerNorm", **_L),
    *_dense("bert/pooler", "bert.pooler.dense", "bert/pooler/dense"),
    # Pre-training heads.
    *_dense("mlm/transform", "cls.predictions.transform.dense",
            "cls/predictions/transform/dense", head="mlm"),
    *_ln("mlm/layer_norm", "cls.predictions.transform.LayerNorm",
         "cls/predictions/transform/LayerNorm", head="mlm"),
    _Row("mlm/output_bias", "cls.predictions.bias",
         "cls/predictions/output_bias", head="mlm"),
    _Row("nsp/kernel", "cls.seq_relationship.weight",
         "cls/seq_relationship/output_weights", hf_t=True, tf1_t=True,
         head="nsp"),
    _Row("nsp/bias", "cls.seq_relationship.bias",
         "cls/seq_relationship/output_bias", head="nsp"),
]

_HEADS = ("mlm", "nsp")

# Tensors with a row per vocabulary entry: the model holds
# `cfg.padded_vocab_size` rows (model.VOCAB_PAD_MULTIPLE), every file only
# the true `cfg.vocab_size`. Imports pad (zero rows), exports strip.
_VOCAB_ROWS = ("bert/embeddings/word_embeddings/embedding", "mlm/output_bias")

# Present in real checkpoints, carrying nothing we need: HF's tied decoder
# and position-id buffer; TF1's optimizer slots and step counter.
_HF_IGNORED = ("bert.embeddings.position_ids", "cls.predictions.decoder.weight",
               "cls.predictions.decoder.bias")
_TF1_IGNORED_SUFFIXES = ("/adam_m", "/adam_v", "global_step",
                         "/Momentum", "/LAMB_m", "/LAMB_v")


def _to_ours(x: np.ndarray, row: _Row, cfg: BertConfig) -> np.ndarray:
  n, h = cfg.num_heads, cfg.head_dim
  if row.shape == "heads_in":
    return x.reshape(x.shape[0], n, h)
  if row.shape == "heads_bias":
    return x.reshape(n, h)
  if row.shape == "heads_out":
    return x.reshape(n, h, x.shape[-1])
  return x


def _from_ours(x: np.ndarray, row: _Row) -> np.ndarray:
  if row.shape == "heads_in":
    return x.reshape(x.shape[0], -1)
  if row.shape == "heads_bias":
    return x.reshape(-1)
  if row.shape == "heads_out":
    return x.reshape(-1, x.shape[-1])
  return x


def _get(tree: Mapping, path: str):
  for part in path.split("/"):
    tree = tree[part]
  return tree


def _set(tree: dict, path: str, value) -> None:
  parts = path.split("/")
  for part in parts[:-1]:
    tree = tree.setdefault(part, {})
  tree[parts[-1]] = value


def _flatten(tree: Mapping, prefix: str = "") -> dict[str, Any]:
  out = {}
  for k, v in tree.items():
    key = f"{prefix}/{k}" if prefix else str(k)
    if isinstance(v, Mapping):
      out.update(_flatten(v, key))
    else:
      out[key] = v
  return out


def _map_vocab_rows(params: Params, fn: Callable[[np.ndarray], Any]
                    ) -> Params:
  """`params` with `fn` applied to the vocab rows (new dicts, same leaves)."""
  def walk(node: Mapping, prefix: str) -> dict:
    out = {}
    for k, v in node.items():
      path = f"{prefix}/{k}" if prefix else str(k)
      out[k] = (walk(v, path) if isinstance(v, Mapping)
                else fn(v) if path in _VOCAB_ROWS else v)
    return out
  return walk(params, "")


def pad_vocab(cfg: BertConfig, params: Params) -> Params:
  """Pads tables of exactly `cfg.vocab_size` rows to the model's rows.

  Zero rows (never looked up; their logits are masked). Tables of any
  other size are left for `check_params` to report.
  """
  extra = cfg.padded_vocab_size - cfg.vocab_size

  def pad(x):
    if not extra or np.shape(x)[0] != cfg.vocab_size:
      return x
    x = np.asarray(x)
    return np.concatenate([x, np.zeros((extra, *x.shape[1:]), x.dtype)])
  return _map_vocab_rows(params, pad)


def strip_vocab(cfg: BertConfig, params: Params) -> Params:
  """The true vocabulary's rows only: what checkpoint files hold."""
  return _map_vocab_rows(params, lambda x: x[:cfg.vocab_size])


# -- import ------------------------------------------------------------------

@dataclasses.dataclass
class ImportReport:
  """What a load found: which pre-training heads were read, which are new."""
  source: str
  fmt: str
  fresh_heads: list[str]  # heads missing in the checkpoint, freshly built
  ignored: list[str]  # tensors present but deliberately unused
  stored_heads: list[str] = dataclasses.field(default_factory=list)

  def __str__(self) -> str:
    stored = ", ".join(self.stored_heads) or "none"
    fresh = ", ".join(self.fresh_heads) or "none"
    return (f"read {self.fmt} checkpoint {self.source}; heads read: "
            f"{stored}; freshly initialised heads: {fresh}; ignored "
            f"tensors: {len(self.ignored)}")


def init_params(cfg: BertConfig, seed: int = 0, nsp: bool = True) -> Params:
  """Fresh BertForPreTraining parameters as a plain nested dict."""
  from flax import nnx  # pylint: disable=g-import-not-at-top
  from bert_jax import heads  # pylint: disable=g-import-not-at-top
  module = heads.BertForPreTraining(cfg, nsp=nsp, rngs=nnx.Rngs(seed))
  return jax_to_numpy(nnx.to_pure_dict(nnx.state(module, nnx.Param)))


def param_shapes(cfg: BertConfig) -> dict[str, Any]:
  """The BertForPreTraining parameter shapes, without materialising them."""
  import jax  # pylint: disable=g-import-not-at-top
  from flax import nnx  # pylint: disable=g-import-not-at-top
  from bert_jax import heads  # pylint: disable=g-import-not-at-top
  module = nnx.eval_shape(
      lambda: heads.BertForPreTraining(cfg, rngs=nnx.Rngs(0)))
  return jax.tree.map(lambda x: tuple(x.shape),
                      nnx.to_pure_dict(nnx.state(module, nnx.Param)))


def jax_to_numpy(tree: Any) -> Any:
  if isinstance(tree, Mapping):
    return {str(k): jax_to_numpy(v) for k, v in tree.items()}
  return np.asarray(tree)


def _add_fresh_heads(cfg: BertConfig, params: Params, seed: int
                     ) -> list[str]:
  """Initialises the heads `params` lacks; returns their names."""
  missing = [h for h in _HEADS if h not in params]
  if missing:
    fresh = init_params(cfg, seed)
    for head in missing:
      params[head] = fresh[head]
  return missing


def _problems_error(source: str, fmt: str, missing: Sequence[str],
                    unexpected: Sequence[str], misshaped: Sequence[str]
                    ) -> ValueError | None:
  problems = ([f"missing: {m}" for m in missing]
              + [f"unexpected: {u}" for u in unexpected]
              + [f"mis-shaped: {s}" for s in misshaped])
  if not problems:
    return None
  return ValueError(f"{source}: the {fmt} checkpoint does not match the "
                    f"model config ({len(problems)} problems):\n  "
                    + "\n  ".join(problems))


def _assemble(cfg: BertConfig, lookup: Callable[[_Row, int | None], Any],
              available: set[str], names_of: Callable[[_Row, int | None], str],
              transposed: Callable[[_Row], bool], source: str, fmt: str,
              ignored: list[str], extra_problems: Sequence[str] = ()
              ) -> tuple[Params, ImportReport]:
  """Builds our params from a name->tensor source, checking everything.

  Heads the source lacks entirely are left out (the caller decides whether
  to initialise them); a head present only in part is an error.
  """
  shapes = param_shapes(cfg)
  params: Params = {}
  used: set[str] = set()
  missing, misshaped = [], list(extra_problems)
  heads_present = {
      head: any(names_of(r, 0 if r.per_layer else None) in available
                for r in _ROWS if r.head == head)
      for head in _HEADS}
  for row in _ROWS:
    if row.head and not heads_present[row.head]:
      continue
    want = _get(shapes, row.ours)
    if row.ours in _VOCAB_ROWS:  # files hold the true vocabulary
      want = (cfg.vocab_size, *want[1:])
    per_shape = want[1:] if row.per_layer else want
    layers = range(cfg.num_layers) if row.per_layer else [None]
    values = []
    for i in layers:
      name = names_of(row, i)
      if name not in available:
        missing.append(name)
        continue
      used.add(name)
      x = np.asarray(lookup(row, i), np.float32)
      if transposed(row):
        x = x.T
      try:
        x = _to_ours(x, row, cfg)
      except ValueError:
        pass  # reported as mis-shaped just below, with the others
      if x.shape != per_shape:
        misshaped.append(f"{name}: shape {x.shape} (as ours), expected "
                         f"{per_shape}")
      else:
        values.append(x)
    if len(values) == len(layers):
      _set(params, row.ours, np.stack(values) if row.per_layer else values[0])
  # More layers in the checkpoint than in its config shows up here too.
  unexpected = sorted(available - used - set(ignored))
  error = _problems_error(source, fmt, missing, unexpected, misshaped)
  if error:
    raise error
  return pad_vocab(cfg, params), ImportReport(
      source, fmt, [], sorted(ignored),
      [h for h in _HEADS if heads_present[h]])


def _read_json(path: str) -> dict:
  if not os.path.exists(path):
    raise FileNotFoundError(f"config file not found: {path}")
  with open(path) as f:
    try:
      return json.load(f)
    except json.JSONDecodeError as e:
      raise ValueError(f"{path}: not valid JSON ({e})") from e


# The numeric fields of a checkpoint config (JSON's true is no layer count).
_CONFIG_NUMBERS = {
    **dict.fromkeys(("vocab_size", "hidden_size", "num_hidden_layers",
                     "num_attention_heads", "intermediate_size",
                     "max_position_embeddings", "type_vocab_size"), (int,)),
    **dict.fromkeys(("hidden_dropout_prob", "attention_probs_dropout_prob",
                     "layer_norm_eps", "initializer_range"), (float, int)),
}


def _config_from_json(path: str, **kwargs: Any) -> BertConfig:
  """BertConfig.from_json_dict of a file; a missing or mistyped field is a
  ValueError naming the file."""
  d = _read_json(path)
  try:
    if not isinstance(d, dict):
      raise TypeError(f"a JSON {type(d).__name__}, not an object")
    for key, value in d.items():
      kind = _CONFIG_NUMBERS.get(key)
      if kind and (isinstance(value, bool) or not isinstance(value, kind)):
        raise TypeError(f"{key}={value!r} is not a number of type "
                        f"{kind[0].__name__}")
    return BertConfig.from_json_dict(d, **kwargs)
  except KeyError as e:
    raise ValueError(f"{path}: no {e} field") from e
  except TypeError as e:
    raise ValueError(f"{path}: {e}") from e


def _hf_weights_file(src: str) -> str:
  if os.path.isfile(src):
    return src
  for name in ("model.safetensors", "pytorch_model.bin"):
    if os.path.exists(os.path.join(src, name)):
      return os.path.join(src, name)
  raise FileNotFoundError(f"{src}: no model.safetensors or "
                          "pytorch_model.bin found")


# 'pretraining': BertForPreTraining params, heads the checkpoint lacks fresh;
# 'encoder': the BertModel params alone; 'as_stored': what the checkpoint
# holds, heads only if it has them (conversion, so that random heads are
# never written out as if they were trained).
TASKS = ("pretraining", "encoder", "as_stored")


def _check_task(task: str) -> None:
  if task not in TASKS:
    raise ValueError(f"task={task!r}: expected one of {TASKS}")


def _finish(cfg: BertConfig, params: Params, report: ImportReport,
            task: str, seed: int) -> tuple[BertConfig, Params, ImportReport]:
  """Adds fresh heads for pre-training, or keeps the encoder alone."""
  if task == "pretraining":
    report.fresh_heads = _add_fresh_heads(cfg, params, seed)
    return cfg, params, report
  if task == "encoder":
    return cfg, params["bert"], report
  _check_task(task)
  return cfg, params, report


def _untied_decoder(tensors: Mapping[str, np.ndarray]) -> list[str]:
  """BertForPreTraining ties the MLM decoder; an untied one cannot load."""
  problems = []
  for decoder, tied_to in (
      ("cls.predictions.decoder.weight",
       "bert.embeddings.word_embeddings.weight"),
      ("cls.predictions.decoder.bias", "cls.predictions.bias")):
    if (decoder in tensors and tied_to in tensors
        and not np.array_equal(tensors[decoder], tensors[tied_to])):
      problems.append(f"{decoder}: differs from {tied_to}, but the decoder "
                      "is tied to it here (an untied decoder is not "
                      "supported)")
  return problems


def import_hf(src: str, seed: int = 0, *, task: str = "pretraining",
              **config_overrides: Any
              ) -> tuple[BertConfig, Params, ImportReport]:
  """Reads a Hugging Face BERT directory (or a weights file beside its config).

  Args:
    src: a directory with config.json and model.safetensors or
      pytorch_model.bin, or one of those weights files.
    seed: initialises the pre-training heads the checkpoint lacks.
    task: 'pretraining' (BertForPreTraining params, missing heads fresh),
      'encoder' (the BertModel params alone) or 'as_stored' (heads only if
      the checkpoint has them).
    **config_overrides: BertConfig fields to change (e.g. dtype='bfloat16').

  Returns:
    (config, params as a nested dict of numpy arrays, report).
  """
  _check_task(task)
  weights = _hf_weights_file(src)
  directory = os.path.dirname(weights)
  cfg = _config_from_json(os.path.join(directory, "config.json"),
                          **config_overrides)
  if weights.endswith(".safetensors"):
    from safetensors.numpy import load_file  # pylint: disable=g-import-not-at-top
    try:
      tensors = load_file(weights)
    except Exception as e:  # pylint: disable=broad-except
      # safetensors' own error type: a truncated or garbled file.
      raise ValueError(f"{weights}: not a readable safetensors file "
                       f"({' '.join(str(e).split())[:200]})") from e
  else:
    try:
      import torch  # pylint: disable=g-import-not-at-top
    except ImportError as e:
      raise ImportError(f"{weights}: reading pytorch_model.bin needs torch; "
                        "convert it to safetensors or install torch") from e
    tensors = {k: v.float().numpy() for k, v in torch.load(
        weights, map_location="cpu", weights_only=True).items()}
  # Accept keys with or without the `bert.` prefix.
  has_prefix = any(k.startswith("bert.") for k in tensors)
  if not has_prefix:
    tensors = {(k if k.startswith("cls.") else f"bert.{k}"): v
               for k, v in tensors.items()}
  ignored = [k for k in tensors if k in _HF_IGNORED]
  names = lambda r, i: r.hf.format(i=i) if r.per_layer else r.hf
  params, report = _assemble(
      cfg, lambda r, i: tensors[names(r, i)], set(tensors), names,
      lambda r: r.hf_t, weights, "hf", ignored, _untied_decoder(tensors))
  return _finish(cfg, params, report, task, seed)


def _tf1_prefix(src: str) -> str:
  """The checkpoint prefix (`.../bert_model.ckpt`) for a path or directory."""
  if os.path.isdir(src):
    found = sorted(glob.glob(os.path.join(src, "*.ckpt*.index")))
    if not found:
      raise FileNotFoundError(f"{src}: no TF1 checkpoint (*.ckpt.index)")
    if len(found) == 1:
      return found[0][:-len(".index")]
    if os.path.exists(os.path.join(src, "bert_model.ckpt.index")):
      return os.path.join(src, "bert_model.ckpt")
    # A training directory: TF's `checkpoint` file names the newest.
    if os.path.exists(os.path.join(src, "checkpoint")):
      import tensorflow as tf  # pylint: disable=g-import-not-at-top
      latest = tf.train.latest_checkpoint(src)
      if latest:
        return latest
    raise ValueError(f"{src}: several TF1 checkpoints "
                     f"({', '.join(os.path.basename(f) for f in found)}); "
                     "pass the one to use, e.g. DIR/model.ckpt-1000")
  if src.endswith(".index"):
    return src[:-len(".index")]
  if not os.path.exists(src + ".index"):
    raise FileNotFoundError(f"{src}: no TF1 checkpoint ({src}.index)")
  return src


def import_tf1(src: str, seed: int = 0, *, task: str = "pretraining",
               **config_overrides: Any
               ) -> tuple[BertConfig, Params, ImportReport]:
  """Reads Google's TF1 checkpoint (needs tensorflow).

  `src` is the prefix (`DIR/bert_model.ckpt`), its `.index` file or `DIR`;
  bert_config.json must be beside it. TF1's 'gelu' is the tanh form, so the
  config gets hidden_act='gelu_tanh' (override with hidden_act=...). Other
  arguments as for `import_hf`.
  """
  _check_task(task)
  prefix = _tf1_prefix(src)
  cfg = _config_from_json(
      os.path.join(os.path.dirname(prefix), "bert_config.json"),
      tf1_gelu=True, **config_overrides)
  try:
    import tensorflow as tf  # pylint: disable=g-import-not-at-top
  except ImportError as e:
    raise ImportError("reading TF1 checkpoints needs tensorflow "
                      "(pip install tensorflow-cpu)") from e
  reader = tf.train.load_checkpoint(prefix)
  available = set(reader.get_variable_to_shape_map())
  ignored = [n for n in available if n.endswith(_TF1_IGNORED_SUFFIXES)]
  names = lambda r, i: r.tf1.format(i=i) if r.per_layer else r.tf1
  params, report = _assemble(
      cfg, lambda r, i: reader.get_tensor(names(r, i)), available, names,
      lambda r: r.tf1_t, prefix, "tf1", ignored)
  return _finish(cfg, params, report, task, seed)


# -- native format (Orbax) ---------------------------------------------------

def _this_process_only() -> dict[str, Any]:
  """Orbax options for a checkpoint this process handles alone.

  Model files are written by one process (in a multi-host job, process 0
  after gathering); Orbax must not wait at a barrier for the others.
  """
  import jax  # pylint: disable=g-import-not-at-top
  import orbax.checkpoint as ocp  # pylint: disable=g-import-not-at-top
  if jax.process_count() == 1:
    return {}
  me = jax.process_index()
  return {"multiprocessing_options": ocp.options.MultiprocessingOptions(
      primary_host=me, active_processes={me},
      barrier_sync_key_prefix=f"export_{me}")}


def check_params(cfg: BertConfig, params: Params, source: str,
                 fmt: str = "bert_jax") -> Params:
  """Checks a BertForPreTraining (or bare BertModel) params dict.

  Returns it in the BertForPreTraining layout ({'bert': ..., heads}), the
  vocabulary padded to the model's rows (`pad_vocab`; either size is
  accepted). Heads may be absent as a whole; anything else missing,
  unexpected or mis-shaped raises one error listing it all.
  """
  if "bert" not in params and "embeddings" in params:
    params = {"bert": params}
  params = pad_vocab(cfg, params)
  want = _flatten(param_shapes(cfg))
  have = _flatten(params)
  heads_present = {h for h in _HEADS if h in params}
  missing = sorted(k for k in want if k not in have
                   and k.split("/")[0] not in set(_HEADS) - heads_present)
  unexpected = sorted(k for k in have if k not in want)
  misshaped = sorted(f"{k}: shape {np.shape(have[k])}, expected {want[k]}"
                     for k in want if k in have
                     and tuple(np.shape(have[k])) != want[k])
  error = _problems_error(source, fmt, missing, unexpected, misshaped)
  if error:
    raise error
  return params


def copy_vocab(vocab_file: str | None, out_dir: str) -> None:
  """Copies a vocabulary into a model directory (unless it is already it).

  A WordPiece one becomes vocab.txt (what Google's and HF's directories,
  BertTokenizer and `find_vocab` expect); a SentencePiece model keeps its
  name (transformers' BERT tokenizers cannot read it).
  """
  if vocab_file:
    name = ("vocab.txt" if vocab_file.endswith(".txt")
            else os.path.basename(vocab_file))
    dst = os.path.join(out_dir, name)
    if os.path.abspath(vocab_file) != os.path.abspath(dst):
      shutil.copy(vocab_file, dst)


def save_bert_jax(cfg: BertConfig, params: Params, vocab_file: str | None,
                  out_dir: str) -> str:
  """Writes bert_config.json, the vocab and an Orbax checkpoint of params.

  `params`: BertForPreTraining params (heads optional) or a bare BertModel's,
  as nested dicts of arrays. The Orbax directory is written last (and
  atomically), so its presence marks a complete model directory.
  """
  import orbax.checkpoint as ocp  # pylint: disable=g-import-not-at-top
  out_dir = os.path.abspath(out_dir)
  params_dir = os.path.join(out_dir, _NATIVE_PARAMS)
  if os.path.exists(params_dir):
    raise FileExistsError(f"{params_dir} exists; refusing to overwrite")
  params = strip_vocab(cfg, check_params(cfg, jax_to_numpy(params), out_dir))
  os.makedirs(out_dir, exist_ok=True)
  config = cfg.to_json_dict() | {"bert_jax": dataclasses.asdict(cfg)}
  with open(os.path.join(out_dir, _NATIVE_CONFIG), "w") as f:
    json.dump(config, f, indent=2)
  copy_vocab(vocab_file, out_dir)
  checkpointer = ocp.StandardCheckpointer(**_this_process_only())
  checkpointer.save(params_dir, params)
  checkpointer.wait_until_finished()
  return out_dir


def _native_config(src: str, what: str, overrides: Mapping[str, Any]
                   ) -> BertConfig:
  """The BertConfig of `src`/bert_config.json's 'bert_jax' section."""
  config_file = os.path.join(src, _NATIVE_CONFIG)
  config = _read_json(config_file)
  if "bert_jax" not in config:
    raise ValueError(f"{config_file}: not a {what} (no 'bert_jax' section)")
  fields = {f.name for f in dataclasses.fields(BertConfig)}
  unknown = sorted(set(config["bert_jax"]) - fields)
  if unknown:
    raise ValueError(f"{config_file}: unknown BertConfig fields {unknown} "
                     "(written by a newer bert_jax?)")
  try:
    return BertConfig(**{**config["bert_jax"], **overrides})
  except (TypeError, ValueError) as e:
    raise ValueError(f"{config_file}: {e}") from e


def load_bert_jax(src: str, seed: int = 0, *, task: str = "pretraining",
                  **config_overrides: Any
                  ) -> tuple[BertConfig, Params, ImportReport]:
  """Reads a model directory written by `save_bert_jax`.

  Arguments as for `import_hf`; the params come back bit for bit.
  """
  _check_task(task)
  import orbax.checkpoint as ocp  # pylint: disable=g-import-not-at-top
  cfg = _native_config(src, "bert_jax model directory", config_overrides)
  params_dir = os.path.abspath(os.path.join(src, _NATIVE_PARAMS))
  if not os.path.isdir(params_dir):
    raise FileNotFoundError(f"{src}: no Orbax checkpoint at {params_dir}")
  params = jax_to_numpy(
      ocp.StandardCheckpointer(**_this_process_only()).restore(params_dir))
  params = check_params(cfg, params, src)
  report = ImportReport(src, "bert_jax", [], [],
                        [h for h in _HEADS if h in params])
  return _finish(cfg, params, report, task,
                 seed)


# -- a training run's workdir -------------------------------------------------

def workdir_step(path: str) -> tuple[str, int] | None:
  """(workdir, step) when `path` is a training run's `checkpoints/<step>`."""
  parent, step = os.path.split(os.path.normpath(path))
  workdir, name = os.path.split(parent)
  if (step.isdigit() and name == _WORKDIR_CHECKPOINTS
      and os.path.isfile(os.path.join(workdir, _NATIVE_CONFIG))):
    return workdir, int(step)
  return None


def _restore_newest_params(ckpt_dir: str, encoder_only: bool,
                           only_step: int | None = None
                           ) -> tuple[int, Params]:
  """(step, params) of the newest checkpoint whose `state` item restores.

  With `only_step`, that step's checkpoint or an error naming it.

  Only the params are read (an Orbax partial restore, as numpy on the
  host): neither the optimizer state nor its structure is needed.
  """
  import jax  # pylint: disable=g-import-not-at-top
  import orbax.checkpoint as ocp  # pylint: disable=g-import-not-at-top
  from bert_jax import checkpoints  # pylint: disable=g-import-not-at-top
  process = _this_process_only()
  manager = ocp.CheckpointManager(
      ckpt_dir,
      options=ocp.CheckpointManagerOptions(read_only=True, create=False,
                                           save_interval_steps=0,
                                           **process),
      # The trainer's other items are named so that Orbax does not warn it
      # cannot restore them; they are not read.
      item_handlers={"state": ocp.PyTreeCheckpointHandler(**process),
                     **{name: ocp.JsonCheckpointHandler(**process)
                        for name in checkpoints.JSON_ITEMS}})
  errors = []
  steps = sorted(manager.all_steps(), reverse=True)
  if only_step is not None:
    if only_step not in steps:
      manager.close()
      raise FileNotFoundError(
          f"{ckpt_dir}: no checkpoint at step {only_step} (steps kept: "
          f"{sorted(steps) or 'none'})")
    steps = [only_step]
  try:
    for step in steps:
      try:
        metadata = manager.item_metadata(step)["state"]
        wanted = getattr(metadata, "tree", metadata)["params"]
        if encoder_only:
          wanted = {"bert": wanted["bert"]}
        as_numpy = jax.tree.map(
            lambda _: ocp.RestoreArgs(restore_type=np.ndarray), wanted)
        restored = manager.restore(step, args=ocp.args.Composite(
            state=ocp.args.PyTreeRestore(
                item={"params": wanted}, restore_args={"params": as_numpy},
                partial_restore=True)))
      except Exception as e:  # pylint: disable=broad-except
        # A checkpoint cut short or corrupted: the one before may be fine.
        logging.warning("%s: checkpoint at step %d is unreadable (%s: %s); "
                        "trying the one before", ckpt_dir, step,
                        type(e).__name__, str(e)[:300])
        errors.append(f"step {step}: {type(e).__name__}: {str(e)[:300]}")
        continue
      return step, jax_to_numpy(restored["state"]["params"])
  finally:
    manager.close()
  if only_step is not None:
    raise ValueError(f"{ckpt_dir}: the checkpoint at step {only_step} does "
                     f"not restore: {errors[0]}")
  if not errors:
    raise FileNotFoundError(f"{ckpt_dir}: no checkpoint yet (the training "
                            "run has not saved one)")
  raise ValueError(f"{ckpt_dir}: no checkpoint restores:\n  "
                   + "\n  ".join(errors))


def load_workdir(src: str, seed: int = 0, *, task: str = "pretraining",
                 **config_overrides: Any
                 ) -> tuple[BertConfig, Params, ImportReport]:
  """The model of a training run's workdir, at its newest checkpoint.

  The trainer writes `src`/bert_config.json (as `save_bert_jax` does) and
  the vocabulary at the start of a run, and Orbax checkpoints with a
  `state` item {'step', 'params', 'opt_state', 'bad'} under
  `src`/checkpoints/<step>/; the params of the newest step that restores
  are returned (an older one if the newest is unreadable); `src` =
  WORKDIR/checkpoints/<step> reads that step. Arguments as for `import_hf`.
  """
  _check_task(task)
  at = workdir_step(src)
  only_step = None
  if at is not None:
    src, only_step = at
  cfg = _native_config(src, "bert_jax training workdir", config_overrides)
  ckpt_dir = os.path.abspath(os.path.join(src, _WORKDIR_CHECKPOINTS))
  if not os.path.isdir(ckpt_dir):
    raise FileNotFoundError(f"{src}: a training workdir with no checkpoint "
                            f"yet ({ckpt_dir} does not exist)")
  step, params = _restore_newest_params(ckpt_dir, task == "encoder",
                                        only_step)
  source = f"{src} (step {step})"
  params = check_params(cfg, params, source, "workdir")
  report = ImportReport(source, "workdir", [], [],
                        [h for h in _HEADS if h in params])
  return _finish(cfg, params, report, task, seed)


# -- export to Hugging Face --------------------------------------------------

def _named_tensors(cfg: BertConfig, params: Params, fmt: str
                   ) -> dict[str, np.ndarray]:
  """Our params under the names and layouts of `fmt` ('hf' or 'tf1')."""
  params = strip_vocab(cfg, params)
  out = {}
  for row in _ROWS:
    if row.head and row.head not in params:
      continue
    template, transpose = ((row.hf, row.hf_t) if fmt == "hf"
                           else (row.tf1, row.tf1_t))
    value = np.asarray(_get(params, row.ours), np.float32)
    for i in (range(cfg.num_layers) if row.per_layer else [None]):
      x = _from_ours(value[i] if row.per_layer else value, row)
      name = template.format(i=i) if row.per_layer else template
      out[name] = np.ascontiguousarray(x.T if transpose else x)
  return out


def to_hf_tensors(cfg: BertConfig, params: Params) -> dict[str, np.ndarray]:
  return _named_tensors(cfg, params, "hf")


def _hf_architecture(cfg: BertConfig, has_mlm: bool, has_nsp: bool,
                     out_dir: str) -> str:
  """The transformers class that computes what this model computes."""
  if cfg.attention == "causal":
    # HF's BertLMHeadModel: causal self-attention (is_decoder) and the
    # MLM head's cls.predictions.* at every position, our BertForLTR.
    if has_nsp:
      raise ValueError(f"{out_dir}: a causal (LTR) model with an NSP head "
                       "has no transformers architecture; export it without "
                       "the 'nsp' params")
    return "BertLMHeadModel" if has_mlm else "BertModel"
  return ("BertForPreTraining" if has_mlm and has_nsp
          else "BertForMaskedLM" if has_mlm
          else "BertForNextSentencePrediction" if has_nsp
          else "BertModel")


def export_hf(cfg: BertConfig, params: Params, vocab_file: str | None,
              out_dir: str) -> str:
  """config.json + model.safetensors (+ vocab.txt) for transformers.

  With both heads, `transformers.BertForPreTraining.from_pretrained` loads
  it with no missing or unexpected keys; without heads, `BertModel` does.
  A causal (LTR) model is written with `is_decoder: true` for
  `BertLMHeadModel` (whose encoder has no pooler: transformers reports the
  stored, unused `bert.pooler.*` as unexpected; `BertModel` and the
  fine-tuning classes use it). Existing files of those names in `out_dir`
  are replaced.
  """
  params = check_params(cfg, jax_to_numpy(params), out_dir, "hf")
  tensors = to_hf_tensors(cfg, params)
  has_mlm = "cls.predictions.bias" in tensors
  has_nsp = "cls.seq_relationship.bias" in tensors
  architecture = _hf_architecture(cfg, has_mlm, has_nsp, out_dir)
  if has_mlm:
    # transformers ties these to the embedding and the output bias; writing
    # them keeps loaders that do not tie happy too.
    tensors["cls.predictions.decoder.weight"] = tensors[
        "bert.embeddings.word_embeddings.weight"]
    tensors["cls.predictions.decoder.bias"] = tensors["cls.predictions.bias"]
  return _write_hf(cfg, tensors, vocab_file, out_dir,
                   {"architectures": [architecture]})


def _write_hf(cfg: BertConfig, tensors: dict[str, np.ndarray],
              vocab_file: str | None, out_dir: str, extra: dict) -> str:
  """model.safetensors, config.json (cfg's keys + `extra`) and vocab."""
  from safetensors.numpy import save_file  # pylint: disable=g-import-not-at-top
  os.makedirs(out_dir, exist_ok=True)
  save_file(tensors, os.path.join(out_dir, "model.safetensors"),
            metadata={"format": "pt"})
  config = cfg.to_json_dict() | {
      "model_type": "bert",
      "pad_token_id": 0,
      "position_embedding_type": "absolute",
  } | extra
  with open(os.path.join(out_dir, "config.json"), "w") as f:
    json.dump(config, f, indent=2)
  copy_vocab(vocab_file, out_dir)
  return out_dir


def export_hf_classifier(cfg: BertConfig, params: Params,
                         vocab_file: str | None, out_dir: str, *,
                         labels: Sequence[str] | None) -> str:
  """A fine-tuned sequence classifier for transformers.

  `params` = {'bert': encoder, 'classifier': {'kernel', 'bias'}} (the
  layout of `heads.BertForSequenceClassification`); `labels` in id order,
  or None for a regression model (one output, STS-B).
  `BertForSequenceClassification.from_pretrained(out_dir)` loads it with no
  missing or unexpected keys.
  """
  if cfg.attention == "causal":
    raise ValueError(
        f"{out_dir}: a causal (LTR) classifier pools its last real token; "
        "transformers' BertForSequenceClassification pools position 0, so "
        "it would compute something else; keep the bert_jax checkpoint")
  params = jax_to_numpy(params)
  encoder = check_params(cfg, {"bert": params["bert"]}, out_dir, "hf")
  tensors = to_hf_tensors(cfg, encoder)
  kernel = np.asarray(params["classifier"]["kernel"], np.float32)
  tensors["classifier.weight"] = np.ascontiguousarray(kernel.T)
  tensors["classifier.bias"] = np.asarray(params["classifier"]["bias"],
                                          np.float32)
  num_labels = kernel.shape[1]
  names = list(labels) if labels is not None else ["score"]
  if len(names) != num_labels:
    raise ValueError(f"{out_dir}: {len(names)} labels for a classifier with "
                     f"{num_labels} outputs")
  return _write_hf(cfg, tensors, vocab_file, out_dir, {
      "architectures": ["BertForSequenceClassification"],
      "num_labels": num_labels,
      "id2label": {str(i): n for i, n in enumerate(names)},
      "label2id": {n: i for i, n in enumerate(names)},
      "problem_type": ("regression" if labels is None
                       else "single_label_classification"),
  })


def export_hf_question_answering(cfg: BertConfig, params: Params,
                                 vocab_file: str | None, out_dir: str) -> str:
  """A fine-tuned SQuAD model for transformers' BertForQuestionAnswering.

  `params` = {'bert': encoder, 'qa_outputs': {'kernel' [H, 2], 'bias'}}
  (the layout of `heads.BertForQuestionAnswering`); output 0 is the start
  logit, 1 the end logit, as in transformers. Its encoder has no pooler, so
  the pooler is not written: `from_pretrained(out_dir)` reports no missing
  or unexpected keys.
  """
  params = jax_to_numpy(params)
  encoder = check_params(cfg, {"bert": params["bert"]}, out_dir, "hf")
  tensors = {k: v for k, v in to_hf_tensors(cfg, encoder).items()
             if not k.startswith("bert.pooler.")}
  kernel = np.asarray(params["qa_outputs"]["kernel"], np.float32)
  if kernel.shape != (cfg.hidden_size, 2):
    raise ValueError(f"{out_dir}: qa_outputs kernel of shape {kernel.shape}, "
                     f"expected ({cfg.hidden_size}, 2)")
  tensors["qa_outputs.weight"] = np.ascontiguousarray(kernel.T)
  tensors["qa_outputs.bias"] = np.asarray(params["qa_outputs"]["bias"],
                                          np.float32)
  return _write_hf(cfg, tensors, vocab_file, out_dir,
                   {"architectures": ["BertForQuestionAnswering"]})


def export_hf_multiple_choice(cfg: BertConfig, params: Params,
                              vocab_file: str | None, out_dir: str) -> str:
  """A fine-tuned multiple-choice model (SWAG) for transformers.

  `params` = {'bert': encoder, 'classifier': {'kernel' [H, 1], 'bias'
  [1]}} (the layout of `heads.BertForMultipleChoice`: one score per choice
  from the pooled [CLS]). `BertForMultipleChoice.from_pretrained(out_dir)`
  loads it with no missing or unexpected keys.
  """
  if cfg.attention == "causal":
    raise ValueError(
        f"{out_dir}: a causal (LTR) model pools its last real token; "
        "transformers' BertForMultipleChoice pools position 0, so it would "
        "compute something else; keep the bert_jax checkpoint")
  params = jax_to_numpy(params)
  encoder = check_params(cfg, {"bert": params["bert"]}, out_dir, "hf")
  tensors = to_hf_tensors(cfg, encoder)
  kernel = np.asarray(params["classifier"]["kernel"], np.float32)
  if kernel.shape != (cfg.hidden_size, 1):
    raise ValueError(f"{out_dir}: a multiple-choice scorer has a "
                     f"[{cfg.hidden_size}, 1] kernel, got {kernel.shape}")
  tensors["classifier.weight"] = np.ascontiguousarray(kernel.T)
  tensors["classifier.bias"] = np.asarray(params["classifier"]["bias"],
                                          np.float32).reshape(1)
  return _write_hf(cfg, tensors, vocab_file, out_dir,
                   {"architectures": ["BertForMultipleChoice"]})


def export_hf_token_classifier(cfg: BertConfig, params: Params,
                               vocab_file: str | None, out_dir: str, *,
                               labels: Sequence[str]) -> str:
  """A fine-tuned token classifier (NER) for transformers.

  `params` = {'bert': encoder, 'classifier': {'kernel', 'bias'}} (the
  layout of `heads.BertForTokenClassification` without a BiLSTM);
  `labels` in id order. transformers' `BertForTokenClassification` has no
  pooler, so the pooler is left out:
  `BertForTokenClassification.from_pretrained(out_dir)` loads it with no
  missing or unexpected keys.
  """
  if cfg.attention == "causal":
    raise ValueError(f"{out_dir}: a causal (LTR) token classifier; "
                     "transformers' BertForTokenClassification attends both "
                     "ways, so it would compute something else")
  params = jax_to_numpy(params)
  extra = sorted(set(params) - {"bert", "classifier"})
  if extra:
    raise ValueError(f"{out_dir}: parts {extra} (a BiLSTM or feature "
                     "weights) have no place in transformers' "
                     "BertForTokenClassification")
  encoder = check_params(cfg, {"bert": params["bert"]}, out_dir, "hf")
  tensors = {k: v for k, v in to_hf_tensors(cfg, encoder).items()
             if not k.startswith("bert.pooler.")}
  kernel = np.asarray(params["classifier"]["kernel"], np.float32)
  tensors["classifier.weight"] = np.ascontiguousarray(kernel.T)
  tensors["classifier.bias"] = np.asarray(params["classifier"]["bias"],
                                          np.float32)
  names = list(labels)
  if len(names) != kernel.shape[1]:
    raise ValueError(f"{out_dir}: {len(names)} labels for a classifier with "
                     f"{kernel.shape[1]} outputs")
  return _write_hf(cfg, tensors, vocab_file, out_dir, {
      "architectures": ["BertForTokenClassification"],
      "num_labels": len(names),
      "id2label": {str(i): n for i, n in enumerate(names)},
      "label2id": {n: i for i, n in enumerate(names)},
  })


# -- export to Google's TF1 format --------------------------------------------

def export_tf1_names(cfg: BertConfig, params: Params) -> dict[str, np.ndarray]:
  """Our params under Google's TF1 variable names (for writing with TF)."""
  return _named_tensors(cfg, params, "tf1")


# TF1 modeling.py's layer_norm (tf.contrib.layers.layer_norm) has this
# epsilon built in; bert_config.json cannot change it.
_TF1_LAYER_NORM_EPS = 1e-12
# What TF1's BertConfig reads (the keys of Google's bert_config.json).
_TF1_CONFIG_KEYS = (
    "attention_probs_dropout_prob", "hidden_act", "hidden_dropout_prob",
    "hidden_size", "initializer_range", "intermediate_size",
    "max_position_embeddings", "num_attention_heads", "num_hidden_layers",
    "type_vocab_size", "vocab_size")


def tf1_config(cfg: BertConfig, approximate_gelu: bool = False
               ) -> dict[str, Any]:
  """Google's bert_config.json for `cfg`; raises if TF1 cannot express it.

  TF1's modeling.py knows 'gelu' (the tanh form), 'relu', 'tanh' and
  'linear'. A model with the exact (erf) GELU has no TF1 equivalent: it is
  refused unless `approximate_gelu`, which writes 'gelu' knowingly (TF1 will
  run it with the tanh form, a small but real change of its outputs).
  """
  problems = []
  if cfg.attention == "causal":
    problems.append(
        "attention='causal' (the LTR model): Google's TF1 BERT has no causal "
        "attention and would run it bidirectionally; export it to hf "
        "(BertLMHeadModel) or bert_jax instead")
  if cfg.hidden_act == "gelu" and not approximate_gelu:
    problems.append(
        "hidden_act='gelu' (exact erf): TF1's 'gelu' is the tanh "
        "approximation, so no TF1 config means this model; pass "
        "approximate_gelu=True (--approximate_gelu) to write 'gelu' and "
        "accept the tanh form")
  if cfg.layer_norm_eps != _TF1_LAYER_NORM_EPS:
    problems.append(f"layer_norm_eps={cfg.layer_norm_eps}: TF1 BERT's "
                    f"LayerNorm epsilon is fixed at {_TF1_LAYER_NORM_EPS}")
  if problems:
    raise ValueError("cannot export to TF1: " + "; ".join(problems))
  act = {"gelu": "gelu", "gelu_tanh": "gelu", "relu": "relu"}[cfg.hidden_act]
  return {k: v for k, v in cfg.to_json_dict().items()
          if k in _TF1_CONFIG_KEYS} | {"hidden_act": act}


def export_tf1(cfg: BertConfig, params: Params, vocab_file: str | None,
               out_dir: str, *, approximate_gelu: bool = False) -> str:
  """bert_model.ckpt.{index,data-00000-of-00001} + bert_config.json + vocab.

  The layout of Google's releases: variables under Google's names and
  shapes (kernels [in, out]), float32, heads only if `params` has them.
  Written with TensorFlow's SaveV2 op (what a TF1 Saver runs), so the
  checkpoint holds exactly those variables: no global_step, no optimizer
  slots, no graph (.meta). Refuses what TF1 cannot express (see
  `tf1_config`) and an existing checkpoint, before writing anything.
  """
  config = tf1_config(cfg, approximate_gelu)
  params = check_params(cfg, jax_to_numpy(params), out_dir, "tf1")
  prefix = os.path.join(out_dir, _TF1_CKPT)
  if os.path.exists(prefix + ".index"):
    raise FileExistsError(f"{prefix}.index exists; refusing to overwrite")
  try:
    import tensorflow as tf  # pylint: disable=g-import-not-at-top
  except ImportError as e:
    raise ImportError("writing TF1 checkpoints needs tensorflow "
                      "(pip install tensorflow-cpu)") from e
  tensors = export_tf1_names(cfg, params)
  os.makedirs(out_dir, exist_ok=True)
  with open(os.path.join(out_dir, "bert_config.json"), "w") as f:
    json.dump(config, f, indent=2, sort_keys=True)
  copy_vocab(vocab_file, out_dir)
  tmp = os.path.join(out_dir, f".{_TF1_CKPT}.tmp")
  with tf.device("/cpu:0"):
    tf.raw_ops.SaveV2(prefix=tmp, tensor_names=list(tensors),
                      shape_and_slices=[""] * len(tensors),
                      tensors=[tf.constant(v) for v in tensors.values()])
  # The index names no file, so the pair can be renamed; the index goes
  # last, as its presence is what marks a checkpoint complete.
  data = ".data-00000-of-00001"
  os.replace(tmp + data, prefix + data)
  os.replace(tmp + ".index", prefix + ".index")
  return out_dir


# -- detection and the one entry point ---------------------------------------

def detect_format(path: str) -> str:
  """'bert_jax', 'workdir', 'hf' or 'tf1', from what is on disk."""
  if not os.path.exists(path) and not os.path.exists(path + ".index"):
    raise FileNotFoundError(f"checkpoint not found: {path}")
  if workdir_step(path) is not None:
    return "workdir"
  if os.path.isdir(path):
    has = lambda name: os.path.exists(os.path.join(path, name))
    if os.path.isdir(os.path.join(path, _NATIVE_PARAMS)):
      return "bert_jax"
    if has(_NATIVE_CONFIG) and has(_WORKDIR_CHECKPOINTS):
      return "workdir"
    if has("model.safetensors") or has("pytorch_model.bin"):
      return "hf"
    if glob.glob(os.path.join(path, "*.ckpt*.index")):
      return "tf1"
    if has(_NATIVE_CONFIG) and "bert_jax" in _read_json(
        os.path.join(path, _NATIVE_CONFIG)):
      return "workdir"  # a run that has not checkpointed yet: say so
  elif path.endswith((".safetensors", ".bin")):
    return "hf"
  elif path.endswith(".index") or os.path.exists(path + ".index"):
    return "tf1"
  raise ValueError(f"{path}: not a recognised checkpoint (expected a "
                   "bert_jax model directory or training workdir, a Hugging "
                   "Face directory with model.safetensors/pytorch_model.bin, "
                   "or a TF1 bert_model.ckpt)")


def find_vocab(path: str) -> str | None:
  """The vocab.txt (or SentencePiece model) beside a checkpoint, if any."""
  directory = path if os.path.isdir(path) else os.path.dirname(path)
  at = workdir_step(path)
  if at is not None:
    directory = at[0]
  for name in ("vocab.txt", "spm.model", "sentencepiece.model"):
    candidate = os.path.join(directory, name)
    if os.path.exists(candidate):
      return candidate
  models = glob.glob(os.path.join(directory, "*.model"))
  return models[0] if len(models) == 1 else None


def load_pretrained(path: str, fmt: str | None = None, seed: int = 0, *,
                    task: str = "pretraining", **config_overrides: Any
                    ) -> tuple[BertConfig, Params, ImportReport]:
  """Any of the formats -> (config, params, report).

  Args:
    path: a bert_jax model directory, a training run's workdir, a Hugging
      Face directory (or weights file) or a TF1 checkpoint (prefix, .index
      file or directory).
    fmt: one of FORMATS; detected from the files when None.
    seed: initialises the pre-training heads the checkpoint lacks.
    task: one of TASKS: 'pretraining' gives BertForPreTraining params (the
      report names the freshly initialised heads), 'encoder' BertModel's.
    **config_overrides: BertConfig fields to change (e.g. dtype='bfloat16').
  """
  _check_task(task)
  fmt = fmt or detect_format(path)
  loaders = {"hf": import_hf, "tf1": import_tf1, "bert_jax": load_bert_jax,
             "workdir": load_workdir}
  if fmt not in loaders:
    raise ValueError(f"unknown checkpoint format {fmt!r}; expected one of "
                     f"{FORMATS}")
  return loaders[fmt](path, seed, task=task, **config_overrides)


def convert(src: str, dst: str, from_fmt: str, to_fmt: str, *,
            approximate_gelu: bool = False) -> ImportReport:
  """Converts a checkpoint; heads it lacks stay absent (none are invented).

  `approximate_gelu`: for to_fmt='tf1', see `tf1_config`.
  """
  if to_fmt not in EXPORT_FORMATS:
    raise ValueError(f"--to={to_fmt!r}: expected one of {EXPORT_FORMATS}")
  cfg, params, report = load_pretrained(src, from_fmt, task="as_stored")
  vocab = find_vocab(src if from_fmt != "tf1" else _tf1_prefix(src))
  if to_fmt == "bert_jax":
    save_bert_jax(cfg, params, vocab, dst)
  elif to_fmt == "hf":
    export_hf(cfg, params, vocab, dst)
  else:
    export_tf1(cfg, params, vocab, dst, approximate_gelu=approximate_gelu)
  return report
