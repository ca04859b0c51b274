"""BERT's optimizers and learning-rate schedule, from optax pieces.

- `adamw`: Adam with decoupled weight decay (Loshchilov & Hutter), bias
  corrected, epsilon 1e-6 as in BERT.
- `adamw_tf1`: the TF1 `AdamWeightDecayOptimizer` exactly: the same update
  without Adam's bias correction (the original's authors call its absence an
  oversight; offered for faithful reproductions).
- `lamb`: optax's LAMB (You et al., 2019), for large batches.

All three: global-norm clipping first (1.0), weight decay only on kernels
and embeddings (never LayerNorm scales/biases or any bias: TF1's
`exclude_from_weight_decay=["LayerNorm", "layer_norm", "bias"]`), and TF1's
schedule: linear warmup to the peak, then `peak * (1 - step / total)`.

`freeze(tx, keys)` keeps the optimizer off whole top-level parameter
sub-trees (Table 7's frozen encoder): zero updates, no decay, no state.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

OPTIMIZERS = ("adamw", "adamw_tf1", "lamb")


def learning_rate_schedule(peak: float, warmup_steps: int,
                           total_steps: int) -> optax.Schedule:
  """TF1: step/warmup * peak while warming up, then peak * (1 - step/total)."""
  if total_steps <= 0:
    raise ValueError(f"num_train_steps={total_steps} must be > 0")
  if not 0 <= warmup_steps <= total_steps:
    raise ValueError(f"num_warmup_steps={warmup_steps} must be in "
                     f"[0, num_train_steps={total_steps}]")
  decay = optax.linear_schedule(
      init_value=peak * (1.0 - warmup_steps / total_steps), end_value=0.0,
      transition_steps=total_steps - warmup_steps)
  if warmup_steps == 0:
    return decay
  warmup = optax.linear_schedule(0.0, peak, warmup_steps)
  return optax.join_schedules([warmup, decay], [warmup_steps])


def decay_mask(params: Any) -> Any:
  """True for the leaves weight decay applies to: kernels and embeddings."""
  def keep(path, _):
    name = str(getattr(path[-1], "key", path[-1]))
    return name in ("kernel", "embedding")
  return jax.tree_util.tree_map_with_path(keep, params)


class ScaleByAdamNoBiasCorrectionState(NamedTuple):
  mu: Any
  nu: Any


def scale_by_adam_no_bias_correction(
    b1: float = 0.9, b2: float = 0.999, eps: float = 1e-6
) -> optax.GradientTransformation:
  """m / (sqrt(v) + eps) with raw moment estimates (TF1 BERT's Adam)."""

  def init(params):
    zeros = lambda p: jnp.zeros_like(p, jnp.float32)
    return ScaleByAdamNoBiasCorrectionState(jax.tree.map(zeros, params),
                                            jax.tree.map(zeros, params))

  def update(updates, state, params=None):
    del params
    mu = optax.tree.update_moment(updates, state.mu, b1, 1)
    nu = optax.tree.update_moment_per_elem_norm(updates, state.nu, b2, 2)
    out = jax.tree.map(lambda m, v: m / (jnp.sqrt(v) + eps), mu, nu)
    return out, ScaleByAdamNoBiasCorrectionState(mu, nu)

  return optax.GradientTransformation(init, update)


def create_optimizer(name: str, schedule: optax.Schedule, *, b1: float = 0.9,
                     b2: float = 0.999, eps: float = 1e-6,
                     weight_decay: float = 0.01, clip_norm: float = 1.0
                     ) -> optax.GradientTransformation:
  if name not in OPTIMIZERS:
    raise ValueError(f"optimizer.name={name!r}: expected one of "
                     f"{OPTIMIZERS}")
  clip = (optax.clip_by_global_norm(clip_norm) if clip_norm > 0
          else optax.identity())
  if name == "lamb":
    return optax.chain(clip, optax.lamb(
        schedule, b1=b1, b2=b2, eps=eps, weight_decay=weight_decay,
        mask=decay_mask))
  scale = (optax.scale_by_adam(b1=b1, b2=b2, eps=eps) if name == "adamw"
           else scale_by_adam_no_bias_correction(b1, b2, eps))
  return optax.chain(
      clip, scale, optax.add_decayed_weights(weight_decay, mask=decay_mask),
      optax.scale_by_learning_rate(schedule))


def trained_part(tree: Any, frozen: Sequence[str]) -> Any:
  """`tree` without its top-level sub-trees named `frozen`."""
  if not isinstance(tree, dict):  # optax.tree_map_params's placeholder
    return tree
  return {k: v for k, v in tree.items() if k not in frozen}


def freeze(tx: optax.GradientTransformation, frozen: Sequence[str]
           ) -> optax.GradientTransformation:
  """`tx` on every parameter but the top-level sub-trees named `frozen`.

  Those get a zero update (no weight decay, no moments kept), so they stay
  what they were; clipping and the rest of `tx` see only the trained
  parameters, and the optimizer state is `tx`'s state of the trained part
  (`trained_part`), so `optax.tree_map_params` maps it against the trained
  part of the parameters. (optax.multi_transform does the same, but its
  masked state cannot be mapped by tree_map_params, which the trainer uses
  to shard the optimizer state.)
  """
  frozen = tuple(frozen)
  if not frozen:
    return tx

  def init(params):
    return tx.init(trained_part(params, frozen))

  def update(updates, state, params=None):
    new, state = tx.update(trained_part(updates, frozen), state,
                           None if params is None
                           else trained_part(params, frozen))
    return {k: (jax.tree.map(jnp.zeros_like, v) if k in frozen else new[k])
            for k, v in updates.items()}, state

  return optax.GradientTransformation(init, update)
