"""BERT's optimizers and schedule against hand-written references."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from bert_jax import optimizer as optimizer_lib
from bert_jax import pretrained
from bert_jax.tasks import pretraining
from tests import test_train


def test_schedule_equals_tf1_formula():
  peak, warmup, total = 1e-4, 100, 1000
  schedule = optimizer_lib.learning_rate_schedule(peak, warmup, total)
  for step in (0, 1, 50, 99, 100, 101, 500, 999, 1000):
    # run_pretraining.py: polynomial_decay(power=1) of the global step,
    # replaced by step / warmup * peak while step < warmup.
    expected = (peak * step / warmup if step < warmup
                else peak * (1 - step / total))
    np.testing.assert_allclose(schedule(step), expected, rtol=1e-5,
                               atol=1e-12)


def test_schedule_without_warmup_and_bad_values():
  schedule = optimizer_lib.learning_rate_schedule(1.0, 0, 10)
  np.testing.assert_allclose([schedule(s) for s in (0, 5, 10)],
                             [1.0, 0.5, 0.0], atol=1e-7)
  with pytest.raises(ValueError, match="num_warmup_steps=20"):
    optimizer_lib.learning_rate_schedule(1.0, 20, 10)


def test_decay_mask_covers_exactly_kernels_and_embeddings():
  cfg = pretraining.model_config(test_train.tiny_config())
  params = pretrained.init_params(cfg)
  flat = pretrained._flatten(params)
  flat_mask = pretrained._flatten(optimizer_lib.decay_mask(params))
  assert flat.keys() == flat_mask.keys()
  for path in flat:
    parts = path.split("/")
    # TF1: exclude_from_weight_decay=["LayerNorm", "layer_norm", "bias"].
    no_decay = ("bias" in parts[-1]
                or any("layer_norm" in p.lower() for p in parts))
    assert flat_mask[path] == (not no_decay), path
  # Every LayerNorm scale and every bias is there to be excluded.
  assert any(p.endswith("scale") for p in flat)
  assert any(p.endswith("output_bias") for p in flat)


def _hand_adam(p, g, m, v, t, *, lr, b1, b2, eps, wd, decay, correct):
  m = b1 * m + (1 - b1) * g
  v = b2 * v + (1 - b2) * g ** 2
  mh, vh = (m / (1 - b1 ** t), v / (1 - b2 ** t)) if correct else (m, v)
  update = mh / (np.sqrt(vh) + eps)
  if decay:
    update = update + wd * p
  return p - lr * update, m, v, update


@pytest.mark.parametrize("name", ["adamw", "adamw_tf1", "lamb"])
def test_optimizer_matches_hand_written(name):
  lr, b1, b2, eps, wd, clip = 0.1, 0.9, 0.999, 1e-6, 0.01, 1.0
  tx = optimizer_lib.create_optimizer(
      name, lambda _: lr, b1=b1, b2=b2, eps=eps, weight_decay=wd,
      clip_norm=clip)
  params = {"kernel": jnp.array([1.0, -2.0, 0.5]),
            "layer_norm": {"scale": jnp.array([1.0, 0.9])},
            "bias": jnp.array([0.5])}
  state = tx.init(params)
  flat = lambda t: {"kernel": t["kernel"], "scale": t["layer_norm"]["scale"],
                    "bias": t["bias"]}
  p = {k: np.array(x, np.float64) for k, x in flat(params).items()}
  m = {k: np.zeros_like(x) for k, x in p.items()}
  v = {k: np.zeros_like(x) for k, x in p.items()}
  rng = np.random.default_rng(0)
  for t in range(1, 4):
    g = {k: rng.normal(size=x.shape) * 3 for k, x in p.items()}
    # Global-norm clipping first, as tf.clip_by_global_norm in the original.
    norm = np.sqrt(sum(np.sum(x ** 2) for x in g.values()))
    g = {k: x * min(1.0, clip / norm) for k, x in g.items()}
    grads = {"kernel": g["kernel"], "layer_norm": {"scale": g["scale"]},
             "bias": g["bias"]}
    updates, state = tx.update(
        jax.tree.map(lambda x: jnp.asarray(x, jnp.float32), grads), state,
        params)
    params = optax.apply_updates(params, updates)
    for k in p:
      new, m[k], v[k], u = _hand_adam(
          p[k], g[k], m[k], v[k], t, lr=lr, b1=b1, b2=b2, eps=eps, wd=wd,
          decay=k == "kernel", correct=name != "adamw_tf1")
      if name == "lamb":  # layer-wise trust ratio ||p|| / ||update||
        pn, un = np.linalg.norm(p[k]), np.linalg.norm(u)
        ratio = pn / un if pn > 0 and un > 0 else 1.0
        new = p[k] - lr * ratio * u
      p[k] = new
  for k, x in flat(params).items():
    np.testing.assert_allclose(x, p[k], rtol=2e-5, err_msg=f"{name} {k}")


def test_unknown_optimizer():
  with pytest.raises(ValueError, match="optimizer.name='sgd'"):
    optimizer_lib.create_optimizer("sgd", lambda _: 0.1)
