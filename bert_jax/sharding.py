"""Device meshes and the logical-to-mesh axis rules.

The mesh has three axes (MaxText / big_vision convention):
  data    pure data parallelism (parameters replicated);
  fsdp    data parallelism with parameters and optimizer state sharded;
  tensor  Megatron-style tensor parallelism over heads / MLP / vocab.
Model code only names logical axes ('embed', 'mlp', 'heads', 'kv', 'vocab',
'layers' for parameters; 'activation_*' for activations). One rules table,
kept in the job config, maps them to mesh axes.
"""

from __future__ import annotations

import contextlib
import functools
import math
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import flax.linen as nn
import jax
import numpy as np
from flax import nnx
from jax.experimental import mesh_utils
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

MESH_AXES = ("data", "fsdp", "tensor")
BATCH_AXES = ("data", "fsdp")

Rules = Sequence[tuple[str, str | tuple[str, ...] | None]]

DEFAULT_RULES: tuple[tuple[str, Any], ...] = (
    # Parameters.
    ("embed", "fsdp"),
    ("mlp", "tensor"),
    ("heads", "tensor"),
    ("kv", None),
    ("vocab", "tensor"),
    ("layers", None),
    # Activations: the batch over every data-parallel axis; features
    # replicated across 'tensor' at block boundaries, split inside blocks.
    ("activation_batch", BATCH_AXES),
    ("activation_length", None),
    ("activation_embed", None),
    ("activation_heads", "tensor"),
    ("activation_mlp", "tensor"),
)


def resolve_shape(shape: Sequence[int], num_devices: int,
                  what: str = "mesh") -> tuple[int, ...]:
  """Replaces one -1 in `shape` by what makes the product `num_devices`."""
  shape = tuple(int(s) for s in shape)
  if len(shape) != len(MESH_AXES):
    raise ValueError(f"{what} shape {shape} must have {len(MESH_AXES)} "
                     f"entries, one per axis {MESH_AXES}")
  if shape.count(-1) > 1 or any(s == 0 or s < -1 for s in shape):
    raise ValueError(f"{what} shape {shape}: entries must be positive, with "
                     "at most one -1")
  known = math.prod(s for s in shape if s != -1)
  if -1 in shape:
    if num_devices % known:
      raise ValueError(f"{what} shape {shape}: {num_devices} devices are not "
                       f"divisible by {known}")
    shape = tuple(num_devices // known if s == -1 else s for s in shape)
  if math.prod(shape) != num_devices:
    raise ValueError(f"{what} shape {shape} has {math.prod(shape)} devices, "
                     f"but {num_devices} are available")
  return shape


def create_mesh(ici_shape: Sequence[int] = (-1, 1, 1),
                dcn_shape: Sequence[int] = (1, 1, 1),
                devices: Sequence[jax.Device] | None = None) -> Mesh:
  """A ('data', 'fsdp', 'tensor') mesh over `devices` (default: all).

  `ici_shape` is the mesh within a slice (fast interconnect), `dcn_shape`
  the mesh across slices (data-center network); their product per axis is
  the global mesh. Multi-slice meshes need devices with `slice_index`.
  """
  devices = list(jax.devices() if devices is None else devices)
  dcn = tuple(int(s) for s in dcn_shape)
  if len(dcn) != len(MESH_AXES) or any(s < 1 for s in dcn):
    raise ValueError(f"dcn shape {dcn} must have {len(MESH_AXES)} positive "
                     "entries (no -1)")
  num_slices = math.prod(dcn)
  per_slice, rest = divmod(len(devices), num_slices)
  if rest:
    raise ValueError(f"dcn shape {dcn}: {len(devices)} devices do not split "
                     f"into {num_slices} slices")
  ici = resolve_shape(ici_shape, per_slice, "ici")
  if num_slices > 1:
    device_array = mesh_utils.create_hybrid_device_mesh(
        ici, dcn, devices=devices, allow_split_physical_axes=True)
  else:
    try:
      device_array = mesh_utils.create_device_mesh(
          ici, devices=devices, allow_split_physical_axes=True)
    except (AssertionError, NotImplementedError, ValueError):
      # Topologies mesh_utils cannot map physically (e.g. odd CPU counts).
      device_array = np.asarray(devices).reshape(ici)
  return Mesh(device_array, MESH_AXES,
              axis_types=(jax.sharding.AxisType.Auto,) * len(MESH_AXES))


def data_parallel_size(mesh: Mesh) -> int:
  return math.prod(mesh.shape[a] for a in BATCH_AXES)


def batch_sharding(mesh: Mesh) -> NamedSharding:
  """Leading (batch) dimension split over every data-parallel axis."""
  return NamedSharding(mesh, P(BATCH_AXES))


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P())


def logical_to_mesh_sharding(logical_specs: Any, mesh: Mesh,
                             rules: Rules) -> Any:
  """Maps a pytree of logical PartitionSpecs to NamedShardings."""
  return nn.logical_to_mesh_sharding(logical_specs, mesh, list(rules))


def state_shardings(abstract_state: Any, mesh: Mesh, rules: Rules) -> Any:
  """NamedShardings for an (abstract) nnx.State, from its logical names."""
  specs = nnx.get_partition_spec(abstract_state)
  return logical_to_mesh_sharding(specs, mesh, rules)


@contextlib.contextmanager
def activation_rules(mesh: Mesh, rules: Rules) -> Iterator[None]:
  """Context in which the model's logical activation constraints apply.

  Enter it around tracing (`jit(...).lower`, or the first call).
  """
  with jax.set_mesh(mesh), nn.logical_axis_rules(list(rules)):
    yield


def create_sharded_state(
    make_module: Callable[[], nnx.Module], mesh: Mesh, rules: Rules
) -> tuple[nnx.GraphDef, nnx.State, Any]:
  """Builds a module's state born sharded: eval_shape -> shardings -> jit.

  Returns (graphdef, state, state_shardings). No parameter is ever
  materialised unsharded on one device.
  """
  graphdef, abstract_state = nnx.split(nnx.eval_shape(make_module))
  shardings = state_shardings(abstract_state, mesh, rules)

  @functools.partial(jax.jit, out_shardings=shardings)
  def init():
    return nnx.split(make_module())[1]

  with activation_rules(mesh, rules):
    state = init()
  return graphdef, state, shardings


def to_global(tree: Any, shardings: Any) -> Any:
  """Host arrays that every process holds in full -> global jax.Arrays.

  Each device gets its slice of the host copy, so this works on any number
  of processes (jit refuses host numpy arrays with non-trivial shardings
  when several processes take part).
  """
  def put(x, s):
    x = np.asarray(x)
    return jax.make_array_from_callback(x.shape, s, lambda index: x[index])
  return jax.tree.map(put, tree, shardings)
