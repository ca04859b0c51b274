"""Fine-tuning configs: `--config=configs/finetune.py:TASK`.

TASK is a GLUE task (`cola sst2 mrpc stsb qqp mnli qnli rte wnli`),
`custom` (a labelled TSV set, see bert_jax/tasks/glue.py), `squad11` or
`squad20` (SQuAD, with run_squad.py's flags: see `squad`), `swag` (SWAG's
CSV files, see bert_jax/tasks/swag.py), `conll2003` (NER,
bert_jax/tasks/ner.py), or named arguments:
`configs/finetune.py:task=mnli,model=large,dtype=bfloat16` (`model` is the
preset used when no init_checkpoint is given; `dtype` the compute dtype).
The paper's ablations are named arguments too: `bilstm=true` (Table 5's
"+ BiLSTM": a randomly initialised BiLSTM between the encoder and the
classifier, for GLUE, SQuAD and NER) and, for conll2003, `features=F`
(Table 7's feature-based NER, F one of embeddings, second_to_last, last,
sum_last4, concat_last4, sum_all: the encoder frozen, a two-layer
768-unit BiLSTM on its features).

The top level keeps the original `run_classifier.py` flag names on
purpose, so BERT users find what they know: init_checkpoint, data_dir,
vocab_file (default: the checkpoint's), do_lower_case, max_seq_length,
train_batch_size, eval_batch_size, learning_rate, num_train_epochs,
warmup_proportion, seed. The paper's GLUE recipe: batch 32, 3 epochs, lr
the best of {5e-5, 4e-5, 3e-5, 2e-5} on dev (`python -m
bert_jax.finetune_grid`), dropout 0.1, warmup 10%.
"""

import ml_collections

GLUE = ("cola", "sst2", "mrpc", "stsb", "qqp", "mnli", "qnli", "rte", "wnli")
SQUAD = ("squad11", "squad20")
NER = ("conll2003",)
TASKS = (*GLUE, "custom", *SQUAD, "swag", *NER)
# Tasks whose head can sit on a BiLSTM (Table 5: GLUE and SQuAD; NER).
BILSTM_TASKS = (*GLUE, "custom", *NER, *SQUAD)
_ARGS = ("task", "model", "dtype", "bilstm", "features")


def parse_arg(arg: str) -> dict[str, str]:
  """'mnli' or 'task=mnli,model=large' -> {'task': 'mnli', ...}."""
  if "=" not in arg:
    return {"task": arg}
  out = {}
  for part in arg.split(","):
    key, sep, value = part.partition("=")
    if not sep or key not in _ARGS:
      raise ValueError(f"bad finetune config argument {part!r}; expected "
                       f"KEY=VALUE with KEY in {', '.join(_ARGS)}")
    out[key] = value
  return out


def base() -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.task = "mrpc"
  # The original's flags.
  c.init_checkpoint = ""  # bert_jax / HF / TF1 checkpoint or pre-training workdir
  c.data_dir = ""
  c.vocab_file = ""  # "": the checkpoint's vocab.txt
  c.do_lower_case = True
  c.max_seq_length = 128
  c.train_batch_size = 32
  c.eval_batch_size = 32
  c.learning_rate = 2e-5
  c.num_train_epochs = 3.0
  c.warmup_proportion = 0.1
  c.seed = 42
  # A custom set's labels, in id order; (): labels.txt or the train labels.
  c.labels = ()
  # Dynamic padding: each batch is cut to its longest row, rounded up.
  c.pad_to_multiple_of = 32
  # Length bucketing: batches drawn from windows of this many batches,
  # sorted by length (0: off, batches as TF1 draws them).
  c.length_bucketing_window = 0
  # Every task without a BiLSTM (GLUE, custom, SQuAD, SWAG, NER; not the
  # feature-based NER): pack several sequences into each row, attention
  # kept within each, so a batch costs about its real tokens
  # (finetune.FeatureBatches); span and tag heads read their example's
  # tokens gathered back. False: one sequence a row, as TF1.
  c.pack_sequences = True

  c.model = ml_collections.ConfigDict()
  c.model.preset = "base"  # only when init_checkpoint is empty
  c.model.hidden_act = ""  # "": the checkpoint's
  c.model.hidden_dropout_prob = 0.1
  c.model.attention_dropout_prob = 0.1
  # TF1 fine-tunes in float32; bfloat16 is faster on TPUs and GPUs.
  c.model.dtype = "float32"
  c.model.remat_policy = "none"
  c.model.scan_layers = False  # unrolled: faster on CPUs and GPUs
  c.model.attention_impl = ""

  c.optimizer = ml_collections.ConfigDict()
  c.optimizer.name = "adamw"  # adamw | adamw_tf1 | lamb
  c.optimizer.b1 = 0.9
  c.optimizer.b2 = 0.999
  c.optimizer.eps = 1e-6
  c.optimizer.weight_decay = 0.01
  c.optimizer.clip_norm = 1.0
  c.optimizer.grad_accum_steps = 1

  c.mesh = ml_collections.ConfigDict()
  c.mesh.ici_shape = (-1, 1, 1)  # (data, fsdp, tensor)
  c.mesh.dcn_shape = (1, 1, 1)
  c.mesh.rules = ()

  c.log_every_steps = 50
  c.eval_every_steps = 0  # 0: evaluate on dev at the end only
  c.save_checkpoints_steps = 1000
  c.keep_checkpoints = 2
  # Batches with a non-finite loss or gradient skipped (no update) before
  # the run stops; a stop names the first non-finite tensor, and with
  # trace_non_finite the operation (a slower, checked pass).
  c.max_bad_batches = 0
  c.trace_non_finite = False
  c.export = True  # the fine-tuned model for transformers at the end
  return c


def squad(c: ml_collections.ConfigDict, version_2: bool) -> None:
  """SQuAD 1.1 / 2.0 (run_squad.py's flags and the paper's recipe).

  data_dir holds the official train-v1.1.json / dev-v1.1.json (v2:
  train-v2.0.json / dev-v2.0.json); `train_file` / `predict_file` name
  other files (relative to data_dir). The paper: 1.1 for 3 epochs at lr
  5e-5, batch 32; 2.0 for 2 epochs at lr 5e-5, batch 48; max_seq_length
  384, doc_stride 128, max_query_length 64, n-best 20, answers of at most
  30 tokens.
  """
  c.max_seq_length = 384
  c.learning_rate = 5e-5
  c.train_batch_size = 48 if version_2 else 32
  c.num_train_epochs = 2.0 if version_2 else 3.0
  c.train_file = ""
  c.predict_file = ""
  c.doc_stride = 128
  c.max_query_length = 64
  c.n_best_size = 20
  c.max_answer_length = 30
  c.version_2_with_negative = version_2
  # Predict "" when null score - best span score exceeds it; the best
  # value on dev is results.json's eval_best_f1_thresh.
  c.null_score_diff_threshold = 0.0


def get_config(arg: str = "mrpc") -> ml_collections.ConfigDict:
  args = parse_arg(arg or "mrpc")
  task = args.get("task", "mrpc")
  if task not in TASKS:
    raise ValueError(f"unknown fine-tuning task {task!r}; known: "
                     f"{', '.join(TASKS)}")
  c = base()
  c.task = task
  if task in SQUAD:
    squad(c, version_2=task == "squad20")
  if "model" in args:
    c.model.preset = args["model"]
  if "dtype" in args:
    c.model.dtype = args["dtype"]
  if task == "swag":
    # The paper's SWAG recipe (3 epochs, lr 2e-5, batch 16); sequences of
    # 80 as Hugging Face's run_swag.py README trains them.
    c.train_batch_size = 16
    c.learning_rate = 2e-5
    c.num_train_epochs = 3.0
    c.max_seq_length = 80
  bilstm = args.get("bilstm", "false").lower()
  if bilstm not in ("true", "false"):
    raise ValueError(f"bilstm={args['bilstm']!r}: expected true or false")
  features = args.get("features", "")
  if features and task not in NER:
    raise ValueError(f"features={features!r}: feature-based training is "
                     f"built for {', '.join(NER)} only")
  if bilstm == "true" and task not in BILSTM_TASKS:
    raise ValueError(f"bilstm=true is not built for task {task!r}")
  if task in BILSTM_TASKS:
    c.bilstm = bilstm == "true"
    # The paper's Table 7 BiLSTM: 768 units a direction; two layers for
    # the feature-based runs, one on top of a fine-tuned encoder (Table 5
    # gives no size: ours).
    c.lstm_units = 768
    c.lstm_layers = 2 if features else 1
  if task in NER:
    # CoNLL-2003 NER (bert_jax/tasks/ner.py): data_dir holds train.txt,
    # valid.txt, test.txt. The paper's grid (lr {5e-5, 3e-5, 2e-5}, batch
    # {16, 32}, epochs {2, 3, 4}); 5e-5, 32, 3 here.
    # labels () are CoNLL-2003's 9 tags (bert_jax.tasks.ner); another
    # CoNLL-format set names its own.
    c.learning_rate = 5e-5
    # Table 7's input (bert_jax.heads.FEATURES; checked with the config).
    c.features = features
    # The paper's "maximal document context": fill each window with the
    # sentence's neighbours in its document (scored: the sentence only).
    c.document_context = False
    if features:
      # A BiLSTM trained from scratch on frozen features: a recurrent
      # tagger's learning rate (ours; the paper gives none).
      c.learning_rate = 1e-3
  c.lock()
  return c
