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
The top level speaks the original run_pretraining.py's language.
"""

import ml_collections

TABLE6 = ("L3_H768_A12", "L6_H768_A3", "L6_H768_A12", "L12_H768_A12",
          "L12_H1024_A16", "L24_H1024_A16")
TABLE8 = ((80, 10, 10), (100, 0, 0), (80, 0, 20), (80, 20, 0), (0, 20, 80),
          (0, 0, 100))
VARIANTS = ("demo", "base", "large", "no_nsp", "ltr", *TABLE6,
            *(f"mask_{m}_{s}_{r}" for m, s, r in TABLE8))


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


def get_config(arg: str = "demo") -> ml_collections.ConfigDict:
  arg = arg or "demo"
  if arg not in VARIANTS:
    raise ValueError(f"unknown pretrain variant {arg!r}; known: "
                     f"{', '.join(VARIANTS)}")
  c = base()
  c.variant = arg
  if arg == "demo":
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
  elif arg == "large":
    c.model.preset = "large"
  elif arg in TABLE6:
    c.model.preset = arg
  elif arg == "no_nsp":
    c.objective = "mlm"
  elif arg == "ltr":
    c.objective = "ltr"
  elif arg.startswith("mask_"):
    m, s, r = (int(x) / 100 for x in arg.split("_")[1:])
    c.data.mask_ratios = (m, s, r)
  c.lock()
  return c
