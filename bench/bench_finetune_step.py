"""Fine-tuning step throughput: bert_jax against Hugging Face PyTorch.

Both sides run, in the same script on the same device, one step of
sequence classification as the fine-tuning job runs it: the encoder and the
classifier on the pooled [CLS] with dropout, cross-entropy, the backward
pass, global-norm clipping at 1.0 and an AdamW update, at the size of the
real-data bench's model (all-MiniLM-L6-v2: 6 layers, 384 wide, 12 heads of
32) unless `--preset` names another. Prints sequences/s per variant and
padded length, the ratio to the peer, and each variant's compile time.

    python bench/bench_finetune_step.py                 # 2-core CPU, f32
    python bench/bench_finetune_step.py --lengths=128 --variants=bert_jax

On CPU measure in float32 (XLA's CPU backend gets nothing from bf16).
"""

from __future__ import annotations

import argparse
import json
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from bert_jax import heads
from bert_jax import model as model_lib

# all-MiniLM-L6-v2's shape (its config.json), bert-base-uncased vocabulary.
MINILM = dict(vocab_size=30522, hidden_size=384, num_layers=6, num_heads=12,
              intermediate_size=1536, max_position_embeddings=512)


def model_config(preset: str) -> model_lib.BertConfig:
  if preset == "minilm":
    return model_lib.BertConfig(**MINILM, scan_layers=False)
  return model_lib.BertConfig.from_preset(preset).replace(scan_layers=False)


def make_batch(batch: int, seq: int, vocab: int, labels: int, seed=0):
  rng = np.random.default_rng(seed)
  lengths = rng.integers(seq // 2, seq + 1, batch)
  mask = (np.arange(seq)[None] < lengths[:, None]).astype(np.int32)
  return {"input_ids": rng.integers(1000, vocab, (batch, seq)) * mask,
          "segment_ids": np.zeros((batch, seq), np.int32),
          "input_mask": mask,
          "label_ids": rng.integers(0, labels, batch)}


def _tx():
  return optax.chain(optax.clip_by_global_norm(1.0),
                     optax.adamw(5e-5, b1=0.9, b2=0.999, eps=1e-6,
                                 weight_decay=0.01))


def bench_jax(cfg, batch, steps, warmup, labels, prng):
  model = heads.BertForSequenceClassification(cfg, labels, rngs=nnx.Rngs(0))
  graphdef, params = nnx.split(model)
  tx = _tx()
  opt_state = tx.init(params)
  data = {k: jnp.asarray(v, jnp.int32) for k, v in batch.items()}

  def step(params, opt_state, rng):
    def loss_fn(p):
      logits = nnx.merge(graphdef, p)(
          data["input_ids"], data["segment_ids"], data["input_mask"], rng=rng)
      return optax.softmax_cross_entropy_with_integer_labels(
          logits, data["label_ids"]).mean()
    loss, grads = jax.value_and_grad(loss_fn)(params)
    updates, opt_state = tx.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state, loss

  key = jax.random.key(0, impl=prng)
  t0 = time.perf_counter()
  step = jax.jit(step, donate_argnums=(0, 1)).lower(
      params, opt_state, key).compile()
  compile_s = time.perf_counter() - t0
  for i in range(warmup):
    params, opt_state, loss = step(params, opt_state,
                                   jax.random.fold_in(key, i))
  loss.block_until_ready()
  t0 = time.perf_counter()
  for i in range(steps):
    params, opt_state, loss = step(params, opt_state,
                                   jax.random.fold_in(key, i))
  loss.block_until_ready()
  return (time.perf_counter() - t0) / steps, compile_s


def bench_torch(cfg, batch, steps, warmup, labels):
  import torch  # pylint: disable=g-import-not-at-top
  import transformers  # pylint: disable=g-import-not-at-top
  hf_cfg = transformers.BertConfig(**cfg.to_json_dict(), num_labels=labels)
  model = transformers.BertForSequenceClassification(hf_cfg).train()
  opt = torch.optim.AdamW(model.parameters(), lr=5e-5, betas=(0.9, 0.999),
                          eps=1e-6, weight_decay=0.01)
  t = {k: torch.from_numpy(np.asarray(v, np.int64)) for k, v in batch.items()}

  def step():
    out = model(input_ids=t["input_ids"], token_type_ids=t["segment_ids"],
                attention_mask=t["input_mask"], labels=t["label_ids"])
    out.loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    opt.step()
    opt.zero_grad(set_to_none=True)

  for _ in range(warmup):
    step()
  t0 = time.perf_counter()
  for _ in range(steps):
    step()
  return (time.perf_counter() - t0) / steps


def main():
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("--preset", default="minilm")
  p.add_argument("--batch", type=int, default=32)
  p.add_argument("--lengths", default="32,64,128")
  p.add_argument("--labels", type=int, default=4)
  p.add_argument("--steps", type=int, default=10)
  p.add_argument("--warmup", type=int, default=2)
  p.add_argument("--no_peer", action="store_true")
  p.add_argument("--variants", default="",
                 help="Comma-separated bert_jax variants (default: all).")
  args = p.parse_args()

  cfg = model_config(args.preset)
  # name -> (config, PRNG implementation of the dropout keys).
  variants = {"bert_jax": (cfg, "threefry2x32"),
              "bert_jax_rbg": (cfg, "rbg"),
              "bert_jax_no_attn_dropout": (cfg.replace(
                  attention_dropout_prob=0.0), "threefry2x32"),
              "bert_jax_no_dropout": (cfg.replace(
                  attention_dropout_prob=0.0, hidden_dropout_prob=0.0),
                                      "threefry2x32")}
  if args.variants:
    variants = {k: v for k, v in variants.items()
                if k in args.variants.split(",")}
  results = {"device": jax.devices()[0].device_kind, "preset": args.preset,
             "batch": args.batch}
  for seq in map(int, args.lengths.split(",")):
    batch = make_batch(args.batch, seq, cfg.vocab_size, args.labels)
    row = results[f"seq{seq}"] = {}
    for name, (c, prng) in variants.items():
      sec, compile_s = bench_jax(c, batch, args.steps, args.warmup,
                                 args.labels, prng)
      row[name] = {"seq_per_s": args.batch / sec, "compile_s": compile_s}
      print(f"seq {seq:4d} {name:26s} {args.batch / sec:8.1f} seq/s "
            f"(compile {compile_s:.1f} s)", flush=True)
    if not args.no_peer:
      sec = bench_torch(cfg, batch, args.steps, args.warmup, args.labels)
      row["pytorch_hf"] = {"seq_per_s": args.batch / sec}
      print(f"seq {seq:4d} {'pytorch_hf (peer)':26s} {args.batch / sec:8.1f}"
            " seq/s", flush=True)
      for name in variants:
        ratio = row[name]["seq_per_s"] / row["pytorch_hf"]["seq_per_s"]
        row[f"ratio_{name}_vs_pytorch"] = ratio
        print(f"seq {seq:4d} ratio {name} / pytorch_hf: {ratio:.2f}x")
  print(json.dumps(results))


if __name__ == "__main__":
  main()
