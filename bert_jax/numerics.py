"""Where a computation first went non-finite.

`first_non_finite(loss_fn, args)` names the first non-finite tensor of a
loss and its gradient: an input leaf (a parameter, a batch feature), the
loss, or a gradient leaf. With `trace_ops` (or `trace(fn, args)` alone) it
also names the operation: one compiled pass evaluates the program
operation by operation, with a finiteness check on every intermediate
value, and reports the first operation whose output holds a NaN or an
infinity, with its place in bert_jax's source and, inside a scanned layer
stack, the layer. The training loop calls it once, after a non-finite
loss, on the batch that caused it and the last good state.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax._src import source_info_util
from jax.extend import core as jex_core

# Primitives that hold a sub-computation to walk into.
_CALLS = {"pjit": "jaxpr", "closed_call": "call_jaxpr",
          "core_call": "call_jaxpr", "remat": "jaxpr", "checkpoint": "jaxpr",
          "custom_jvp_call": "call_jaxpr", "custom_vjp_call": "call_jaxpr",
          "custom_vjp_call_jaxpr": "fun_jaxpr"}


def _bad(x) -> bool:
  dtype = getattr(x, "dtype", None)
  if dtype is None or not jnp.issubdtype(dtype, jnp.inexact):
    return False
  return not bool(jnp.all(jnp.isfinite(x)))


def _where(eqn) -> str:
  """'prim at file:line (fn)', preferring bert_jax's own frame."""
  frames = [f for f in source_info_util.user_frames(
      eqn.source_info.traceback) if f.file_name != __file__]
  ours = [f for f in frames if "bert_jax" in f.file_name] or frames
  place = (f"{ours[0].file_name.split('site-packages/')[-1]}:"
           f"{ours[0].start_line} ({ours[0].function_name})" if ours else "?")
  stack = str(eqn.source_info.name_stack)
  backward = "transpose" in stack
  return (f"{eqn.primitive.name} at {place}"
          + (" in the backward pass" if backward else ""))


def _finite(x):
  """A traced boolean: x holds no NaN or infinity (ints: always true)."""
  dtype = getattr(x, "dtype", None)
  if dtype is None or not jnp.issubdtype(dtype, jnp.inexact):
    return None
  return jnp.all(jnp.isfinite(x))


class _Checks:
  """What each checked operation was, and its traced 'finite' flag."""

  def __init__(self):
    self.where: list[str] = []
    self.flags: list[Any] = []

  def add(self, eqn, outs, context: str) -> None:
    flags = [f for f in map(_finite, outs) if f is not None]
    if flags:
      self.where.append(_where(eqn) + context)
      self.flags.append(jnp.all(jnp.stack(flags)))


def _run(jaxpr, consts, args, checks: _Checks, context: str):
  """Evaluates a jaxpr equation by equation (under jit: traced)."""
  env: dict[Any, Any] = {}

  def read(v):
    return v.val if isinstance(v, jex_core.Literal) else env[v]

  for v, x in zip(jaxpr.constvars, consts):
    env[v] = x
  for v, x in zip(jaxpr.invars, args):
    env[v] = x
  for eqn in jaxpr.eqns:
    invals = [read(v) for v in eqn.invars]
    name = eqn.primitive.name
    if name in _CALLS and _CALLS[name] in eqn.params:
      sub = eqn.params[_CALLS[name]]
      if hasattr(sub, "jaxpr"):  # a ClosedJaxpr
        outs = _run(sub.jaxpr, sub.consts, invals, checks, context)
      else:
        outs = _run(sub, (), invals, checks, context)
    elif name == "scan":
      outs = _scan(eqn, invals, checks, context)
    else:
      outs = eqn.primitive.bind(*invals, **eqn.params)
      if not eqn.primitive.multiple_results:
        outs = [outs]
      checks.add(eqn, outs, context)
    for v, x in zip(eqn.outvars, outs):
      env[v] = x
  return [read(v) for v in jaxpr.outvars]


def _scan(eqn, invals, checks: _Checks, context: str):
  """A scan (the layer stack) unrolled, so that a layer can be named."""
  p = eqn.params
  n_consts, n_carry = p["num_consts"], p["num_carry"]
  consts, carry = invals[:n_consts], invals[n_consts:n_consts + n_carry]
  xs = invals[n_consts + n_carry:]
  body = p["jaxpr"]
  ys = []
  order = range(p["length"] - 1, -1, -1) if p["reverse"] else range(
      p["length"])
  for i in order:
    outs = _run(body.jaxpr, body.consts,
                [*consts, *carry, *(x[i] for x in xs)], checks,
                f"{context}, step {i} of a scan (layer {i} of a scanned "
                "stack)")
    carry, y = outs[:n_carry], outs[n_carry:]
    ys.append(y)
  if p["reverse"]:
    ys.reverse()
  stacked = [jnp.stack([y[j] for y in ys])
             for j in range(len(eqn.outvars) - n_carry)]
  return [*carry, *stacked]


def _first_bad_leaf(name: str, tree) -> str | None:
  for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]:
    if _bad(leaf):
      return f"{name}/{jax.tree_util.keystr(path, simple=True, separator='/')}"
  return None


def trace(fn: Callable[..., Any], args: Mapping[str, Any]) -> str | None:
  """The first operation of fn(**args) whose output is not finite, or None.

  Costs about ten compilations of `fn`: every intermediate value gets its
  own check.
  """
  closed = jax.make_jaxpr(lambda kw: fn(**kw))(dict(args))
  checks = _Checks()

  def checked(flat):
    _run(closed.jaxpr, closed.consts, flat, checks, "")
    return jnp.stack(checks.flags)

  # One compiled pass that returns a flag per operation, in program order.
  finite = np.asarray(jax.jit(checked)(jax.tree.leaves(dict(args))))
  bad = np.flatnonzero(~finite)
  return checks.where[bad[0]] if len(bad) else None


def first_non_finite(loss_fn: Callable[..., Any], args: Mapping[str, Any],
                     params: str = "params", trace_ops: bool = False
                     ) -> str | None:
  """Names the first non-finite tensor of a loss and its gradient.

  `loss_fn(**args)` is a scalar loss; `args[params]` the tree it is
  differentiated by. In order: an input leaf (a parameter, a batch
  feature); the loss (with `trace_ops`, the forward operation that first
  made a NaN or an infinity); a gradient leaf (with `trace_ops`, the
  operation of the backward pass). None if everything is finite.
  """
  for name, tree in args.items():
    leaf = _first_bad_leaf(name, tree)
    if leaf:
      return f"the input {leaf} is not finite"

  def with_grads(**kw):
    rest = {k: v for k, v in kw.items() if k != params}
    return jax.value_and_grad(lambda p: loss_fn(**{params: p}, **rest))(
        kw[params])

  loss, grads = jax.jit(lambda kw: with_grads(**kw))(dict(args))
  if _bad(loss):
    if trace_ops:
      op = trace(loss_fn, args)
      if op:
        return f"the loss; first non-finite value: {op}"
    return "the loss is not finite (its inputs are)"
  leaf = _first_bad_leaf("the gradient of " + params, grads)
  if leaf is None:
    return None
  if trace_ops:
    op = trace(with_grads, args)
    if op:
      return f"{leaf} (the loss is finite); first non-finite value: {op}"
  return f"{leaf} is not finite (the loss is)"
