"""Pre-training configs: `--config=configs/pretrain.py:VARIANT`.

Variants (each a small diff of `base`):
  demo              the embedded corpus, a small model, minutes on a CPU
  base, large       the paper's recipe (batch 256, 1M steps, 90% at seq 128
                    then 10% at 512, lr 1e-4, 10k warmup, linear decay)
  L3_H768_A12 ...   the six model sizes of the paper's Table 6
  no_nsp            masked LM only, single-segment inputs (Table 5)
  ltr               left-to-right LM, causal attention, no NSP (Table 5)
  mask_M_S_R        Table 8 masking: M% [MASK], S% same, R% random
                    (mask_80_10_10, mask_100_0_0, mask_80_0_20, mask_80_20_0,
                    mask_0_20_80, mask_0_0_100)
Or named arguments that compose (big_vision style), each a diff of `base`:
  configs/pretrain.py:size=large,objective=no_nsp
  configs/pretrain.py:size=L6_H768_A12,masking=mask_80_0_20
  configs/pretrain.py:recipe=demo,size=L2_H128_A2,objective=ltr
    recipe    paper (default: `base` above) | demo (the `demo` recipe)
    size      a model preset (tiny mini small medium base large, the Table 6
              names) or any L<layers>_H<hidden>_A<heads>
    objective mlm_nsp | no_nsp (masked LM only) | ltr
    masking   mask_M_S_R or M_S_R, percentages summing to 100
A named variant is the same as its arguments (`no_nsp` = `objective=no_nsp`,
`demo` = `recipe=demo`) and keeps its name as `config.variant`.
The top level speaks the original run_pretraining.py's language.
"""

import re

import ml_collections

TABLE6 = ("L3_H768_A12", "L6_H768_A3", "L6_H768_A12", "L12_H768_A12",
          "L12_H1024_A16", "L24_H1024_A16")
TABLE8 = ((80, 10, 10), (100, 0, 0), (80, 0, 20), (80, 20, 0), (0, 20, 80),
          (0, 0, 100))
VARIANTS = ("demo", "base", "large", "no_nsp", "ltr", *TABLE6,
            *(f"mask_{m}_{s}_{r}" for m, s, r in TABLE8))
RECIPES = ("paper", "demo")
OBJECTIVES = {"mlm_nsp": "mlm_nsp", "no_nsp": "mlm", "mlm": "mlm",
              "ltr": "ltr"}  # argument -> config.objective
# bert_jax.model.PRESETS' names (configs stay importable without jax);
# tests/test_configs.py checks the two lists agree.
PRESETS = ("tiny", "mini", "small", "medium", "base", "large", *TABLE6)
_ARGS = ("recipe", "size", "objective", "masking")
_SIZE = re.compile(r"^L([1-9]\d*)_H([1-9]\d*)_A([1-9]\d*)$")
_MASKING = re.compile(r"^(?:mask_)?(\d+)_(\d+)_(\d+)$")


def _variant_args(name: str) -> dict[str, str]:
  """A named variant as named arguments."""
  if name == "demo":
    return {"recipe": "demo"}
  if name in ("base", "large") or name in TABLE6:
    return {"size": name}
  if name in ("no_nsp", "ltr"):
    return {"objective": name}
  return {"masking": name}  # mask_M_S_R


def parse_arg(arg: str) -> dict[str, str]:
  """'no_nsp' or 'size=large,objective=no_nsp' -> named arguments.

  Unknown variants, keys and values raise ValueError naming them.
  """
  if "=" not in arg:
    if arg not in VARIANTS:
      raise ValueError(f"unknown pretrain variant {arg!r}; known: "
                       f"{', '.join(VARIANTS)}, or KEY=VALUE,... with KEY "
                       f"in {', '.join(_ARGS)}")
    return _variant_args(arg)
  out = {}
  for part in arg.split(","):
    key, sep, value = part.partition("=")
    if not sep or key not in _ARGS:
      raise ValueError(f"bad pretrain config argument {part!r}; expected "
                       f"KEY=VALUE with KEY in {', '.join(_ARGS)}")
    if key in out:
      raise ValueError(f"pretrain config argument {key!r} given twice")
    out[key] = value
  if out.get("recipe", "paper") not in RECIPES:
    raise ValueError(f"unknown pretrain recipe {out['recipe']!r}; known: "
                     f"{', '.join(RECIPES)}")
  if out.get("objective", "mlm_nsp") not in OBJECTIVES:
    raise ValueError(f"unknown pretrain objective {out['objective']!r}; "
                     f"known: {', '.join(OBJECTIVES)}")
  if "size" in out:
    size = out["size"]
    m = _SIZE.match(size)
    if size not in PRESETS and not m:
      raise ValueError(f"unknown model size {size!r}; known: "
                       f"{', '.join(PRESETS)}, or L<layers>_H<hidden>_A<heads>")
    if m and int(m.group(2)) % int(m.group(3)):
      raise ValueError(f"model size {size!r}: {m.group(3)} heads do not "
                       f"divide hidden size {m.group(2)}")
  if "masking" in out:
    m = _MASKING.match(out["masking"])
    if not m or sum(int(x) for x in m.groups()) != 100:
      raise ValueError(f"bad masking {out['masking']!r}; expected "
                       "mask_M_S_R (MASK, SAME, RND percentages summing to "
                       "100), e.g. mask_80_10_10")
  return out


def base() -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.variant = "base"
  # The original's flags.
  c.train_batch_size = 256
  c.eval_batch_size = 256
  c.max_seq_length = 128
  c.max_predictions_per_seq = 20
  c.num_train_steps = 1_000_000
  c.num_warmup_steps = 10_000
  c.learning_rate = 1e-4
  c.save_checkpoints_steps = 10_000
  c.seed = 12345
  # 90% of the steps at 128, the last 10% at 512 (appendix A.2).
  c.phase2_start_step = 900_000  # 0: a single phase
  c.phase2_max_seq_length = 512
  c.phase2_max_predictions_per_seq = 80
  c.phase2_train_batch_size = 256

  c.objective = "mlm_nsp"  # mlm_nsp | mlm (No NSP) | ltr

  c.model = ml_collections.ConfigDict()
  c.model.preset = "base"
  c.model.hidden_act = "gelu"
  c.model.hidden_dropout_prob = 0.1
  c.model.attention_dropout_prob = 0.1
  c.model.dtype = "bfloat16"  # compute; params stay float32
  c.model.remat_policy = "none"
  # A scan over stacked layers: fast compiles and the TPU plans in the
  # README. On GPUs unrolled layers run 1.4-1.7x faster (launch/gpu_local.sh
  # sets scan_layers=False).
  c.model.scan_layers = True
  c.model.attention_impl = ""  # "" = let JAX choose

  c.optimizer = ml_collections.ConfigDict()
  c.optimizer.name = "adamw"  # adamw | adamw_tf1 | lamb
  c.optimizer.b1 = 0.9
  c.optimizer.b2 = 0.999
  c.optimizer.eps = 1e-6
  c.optimizer.weight_decay = 0.01
  c.optimizer.clip_norm = 1.0
  c.optimizer.grad_accum_steps = 1

  c.data = ml_collections.ConfigDict()
  c.data.data_dir = ""  # "": WORKDIR/data, made from input_file if missing
  c.data.phase2_data_dir = ""  # "": WORKDIR/data_512
  c.data.input_file = "data/corpus/*.txt.gz"
  c.data.vocab_file = "data/vocab/bert-base-uncased-vocab.txt"
  c.data.do_lower_case = True
  c.data.dupe_factor = 10
  c.data.masked_lm_prob = 0.15
  c.data.short_seq_prob = 0.1
  c.data.mask_ratios = (0.8, 0.1, 0.1)  # MASK, SAME, RND
  c.data.whole_word_mask = False
  c.data.dynamic_masking = False
  c.data.eval_fraction = 0.02
  c.data.num_workers = 2
  c.data.num_shards = 8

  c.mesh = ml_collections.ConfigDict()
  c.mesh.ici_shape = (-1, 1, 1)  # (data, fsdp, tensor); -1 = the rest
  c.mesh.dcn_shape = (1, 1, 1)
  c.mesh.rules = ()  # () = bert_jax.sharding.DEFAULT_RULES

  c.log_every_steps = 100
  c.eval_every_steps = 10_000
  c.num_eval_steps = 100
  c.keep_checkpoints = 3
  # Batches with a non-finite loss or gradient skipped (no update) before
  # the run stops; a stop names the first non-finite tensor, and with
  # trace_non_finite the operation (a slower, checked pass).
  c.max_bad_batches = 0
  c.trace_non_finite = False
  c.export = True
  return c


def demo(c: ml_collections.ConfigDict) -> None:
  """The embedded corpus, a small model, minutes on a CPU."""
  c.train_batch_size = 64
  c.eval_batch_size = 64
  c.phase2_train_batch_size = 64
  c.max_seq_length = 64
  c.max_predictions_per_seq = 10
  c.num_train_steps = 1000
  c.num_warmup_steps = 100
  c.learning_rate = 2e-3
  c.save_checkpoints_steps = 500
  c.phase2_start_step = 0
  c.model.preset = "tiny"
  c.model.dtype = "float32"  # bf16 buys nothing on a CPU
  # Two unrolled layers run ~25% faster than a scanned stack on a CPU.
  c.model.scan_layers = False
  # A model this small underfits in minutes: dropout would only slow it.
  c.model.hidden_dropout_prob = 0.0
  c.model.attention_dropout_prob = 0.0
  # The 8k WordPiece vocab build_vocab made from the corpus itself.
  c.data.vocab_file = "data/vocab/corpus-wordpiece-8k.txt"
  c.data.dupe_factor = 3
  c.data.eval_fraction = 0.05
  c.log_every_steps = 100
  c.eval_every_steps = 500
  c.num_eval_steps = 14


def get_config(arg: str = "demo") -> ml_collections.ConfigDict:
  arg = arg or "demo"
  args = parse_arg(arg)
  c = base()
  c.variant = arg
  if args.get("recipe") == "demo":
    demo(c)
  if "size" in args:
    c.model.preset = args["size"]
  if "objective" in args:
    c.objective = OBJECTIVES[args["objective"]]
  if "masking" in args:
    m, s, r = (int(x) / 100 for x in
               _MASKING.match(args["masking"]).groups())
    c.data.mask_ratios = (m, s, r)
  c.lock()
  return c
