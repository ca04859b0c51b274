"""Pre-training step throughput: bert_jax against Hugging Face PyTorch BERT.

Both sides run the same thing in the same script on the same device: the
BertForPreTraining forward (masked LM at the masked positions + NSP), the
backward pass and an AdamW update, at the same size, batch and dropout.
Prints sequences/s for each and their ratio.

    python bench/bench_train_step.py --preset=base --batch=32 --seq=128
    python bench/bench_train_step.py --dtype=bfloat16   # on a GPU

On CPU measure in float32 (XLA's CPU backend gets nothing from bf16); on a
GPU in bfloat16 (PyTorch under autocast, bert_jax with bf16 compute and
float32 parameters).
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


def make_batch(cfg, batch, seq, preds, seed=0):
  rng = np.random.default_rng(seed)
  return {
      "input_ids": rng.integers(1000, cfg.vocab_size, (batch, seq),
                                dtype=np.int64),
      "segment_ids": (np.arange(seq)[None] >= seq // 2).repeat(batch, 0)
                     .astype(np.int64),
      "input_mask": np.ones((batch, seq), np.int64),
      "masked_lm_positions": np.sort(
          rng.choice(np.arange(1, seq), (batch, preds)), axis=1),
      "masked_lm_ids": rng.integers(1000, cfg.vocab_size, (batch, preds)),
      "masked_lm_weights": np.ones((batch, preds), np.float32),
      "next_sentence_labels": rng.integers(0, 2, (batch, 1)),
  }


def bench_jax(cfg, batch, steps, warmup, prng="threefry2x32"):
  graphdef, state = nnx.split(heads.BertForPreTraining(cfg, rngs=nnx.Rngs(0)))
  params = state
  tx = optax.adamw(1e-4, b1=0.9, b2=0.999, eps=1e-6, weight_decay=0.01)
  opt_state = tx.init(params)
  data = {k: jnp.asarray(v, jnp.float32 if v.dtype == np.float32
                         else jnp.int32) for k, v in batch.items()}

  @jax.jit
  def step(params, opt_state, rng):
    def loss_fn(p):
      out = nnx.merge(graphdef, p)(
          data["input_ids"], data["segment_ids"], data["input_mask"],
          data["masked_lm_positions"], rng=rng)
      return heads.pretraining_loss(out, data)[0]
    loss, grads = jax.value_and_grad(loss_fn)(params)
    updates, opt_state = tx.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state, loss

  step = jax.jit(step, donate_argnums=(0, 1))
  key = jax.random.key(0, impl=prng)
  for i in range(warmup):
    params, opt_state, loss = step(params, opt_state, jax.random.fold_in(key, i))
  loss.block_until_ready()
  t0 = time.perf_counter()
  for i in range(steps):
    params, opt_state, loss = step(params, opt_state, jax.random.fold_in(key, i))
  loss.block_until_ready()
  return (time.perf_counter() - t0) / steps, float(loss)


def bench_torch(cfg, batch, steps, warmup, dtype):
  import torch  # pylint: disable=g-import-not-at-top
  import transformers  # pylint: disable=g-import-not-at-top
  device = "cuda" if torch.cuda.is_available() else "cpu"
  hf_cfg = transformers.BertConfig(**cfg.to_json_dict())
  model = transformers.BertForPreTraining(hf_cfg).to(device).train()
  opt = torch.optim.AdamW(model.parameters(), lr=1e-4, betas=(0.9, 0.999),
                          eps=1e-6, weight_decay=0.01)
  t = {k: torch.from_numpy(np.asarray(v)).to(device) for k, v in batch.items()}
  autocast = (torch.autocast(device, dtype=torch.bfloat16)
              if dtype == "bfloat16" else torch.autocast(device, enabled=False))

  def step():
    with autocast:
      # HF computes the MLM head at every position; labels -100 elsewhere
      # keep the loss identical to masked-position-only.
      labels = torch.full_like(t["input_ids"], -100)
      labels.scatter_(1, t["masked_lm_positions"], t["masked_lm_ids"])
      out = model(input_ids=t["input_ids"], token_type_ids=t["segment_ids"],
                  attention_mask=t["input_mask"], labels=labels,
                  next_sentence_label=t["next_sentence_labels"][:, 0])
    out.loss.backward()
    opt.step()
    opt.zero_grad(set_to_none=True)
    return out.loss.detach()

  sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
  for _ in range(warmup):
    step()
  sync()
  t0 = time.perf_counter()
  for _ in range(steps):
    loss = step()
  sync()
  return (time.perf_counter() - t0) / steps, float(loss)


def main():
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("--preset", default="base")
  p.add_argument("--batch", type=int, default=32)
  p.add_argument("--seq", type=int, default=128)
  p.add_argument("--preds", type=int, default=20)
  p.add_argument("--dtype", default="float32",
                 choices=["float32", "bfloat16"])
  p.add_argument("--steps", type=int, default=10)
  p.add_argument("--warmup", type=int, default=3)
  p.add_argument("--no_peer", action="store_true")
  p.add_argument("--variants", default="",
                 help="Comma-separated bert_jax variants (default: all).")
  args = p.parse_args()

  cfg = model_lib.BertConfig.from_preset(args.preset, dtype=args.dtype)
  batch = make_batch(cfg, args.batch, args.seq, args.preds)
  results = {"device": jax.devices()[0].device_kind, "preset": args.preset,
             "batch": args.batch, "seq": args.seq, "dtype": args.dtype}
  # name -> (config, PRNG implementation of the dropout keys).
  variants = {"bert_jax": (cfg, "threefry2x32"),
              # Dropout masks from the hardware generator instead of
              # Threefry's counter arithmetic.
              "bert_jax_rbg": (cfg, "rbg"),
              "bert_jax_unsafe_rbg": (cfg, "unsafe_rbg"),
              # Attention dropout needs the probabilities; without it the
              # fused attention kernel can run (cuDNN on GPUs).
              "bert_jax_no_attn_dropout": (cfg.replace(
                  attention_dropout_prob=0.0), "threefry2x32"),
              # Layers unrolled instead of a scan over stacked weights.
              "bert_jax_unrolled": (cfg.replace(scan_layers=False),
                                    "threefry2x32"),
              "bert_jax_unrolled_rbg": (cfg.replace(scan_layers=False), "rbg"),
              # Diagnostics: no dropout at all; bf16 parameters.
              "bert_jax_no_dropout": (cfg.replace(
                  attention_dropout_prob=0.0, hidden_dropout_prob=0.0),
                                      "threefry2x32"),
              "bert_jax_bf16_params": (cfg.replace(param_dtype="bfloat16"),
                                       "rbg")}
  if args.variants:
    variants = {k: v for k, v in variants.items()
                if k in args.variants.split(",")}
  for name, (c, prng) in variants.items():
    sec, loss = bench_jax(c, batch, args.steps, args.warmup, prng)
    results[name] = {"seq_per_s": args.batch / sec, "loss": loss}
    print(f"{name:28s} {args.batch / sec:9.1f} seq/s  loss {loss:.3f}",
          flush=True)
  if not args.no_peer:
    sec, loss = bench_torch(cfg, batch, args.steps, args.warmup, args.dtype)
    results["pytorch_hf"] = {"seq_per_s": args.batch / sec, "loss": loss}
    print(f"{'pytorch_hf (peer)':28s} {args.batch / sec:9.1f} seq/s  "
          f"loss {loss:.3f}")
    for name in variants:
      ratio = results[name]["seq_per_s"] / results["pytorch_hf"]["seq_per_s"]
      results[f"ratio_{name}_vs_pytorch"] = ratio
      print(f"ratio {name} / pytorch_hf: {ratio:.2f}x")
  print(json.dumps(results))


if __name__ == "__main__":
  main()
