"""Data parallelism over every device of every process, with jax.sharding.

One mesh axis, 'data', spans all devices (of all processes). The train state
is replicated; each global batch is split along the mesh axis, so every device
computes its rows and XLA inserts the all-reduces: the loss, the gradients,
BatchNorm's statistics and the metrics are over the global batch, and results
differ across device counts only by the order of floating-point sums.

Several processes (hosts) join with `jax.distributed` before anything else
touches JAX; each then builds the same programs and feeds its own devices.
"""

from absl import logging
import jax
from jax.experimental import multihost_utils
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P
import numpy as np

DATA_AXIS = 'data'


def initialize(coordinator_address: str | None = None, num_processes: int | None = None,
               process_id: int | None = None) -> None:
  """Joins a multi-process run; call before any JAX computation.

  With no arguments, JAX's own detection finds SLURM, Open MPI and Cloud TPU
  slices; elsewhere the run is a single process. On CPU the processes talk
  through gloo (XLA's CPU backend has no cross-process collectives without it).
  """
  jax.config.update('jax_cpu_collectives_implementation', 'gloo')
  explicit = (coordinator_address, num_processes, process_id) != (None, None, None)
  try:
    jax.distributed.initialize(coordinator_address, num_processes, process_id)
  except ValueError as e:
    if explicit:
      raise
    # Nothing detected (JAX asks for a coordinator_address): one process.
    logging.info('Single process (no cluster detected: %s).', e)
    return
  logging.info('Process %d of %d; %d of %d devices are local.', jax.process_index(),
               jax.process_count(), jax.local_device_count(), jax.device_count())


def create_mesh(devices=None) -> jax.sharding.Mesh:
  """A 1-D mesh with axis 'data' over `devices` (default: all, all processes)."""
  devices = jax.devices() if devices is None else devices
  return jax.make_mesh((len(devices),), (DATA_AXIS,), devices=devices,
                       axis_types=(jax.sharding.AxisType.Auto,))


def replicated_sharding(mesh) -> NamedSharding:
  """Every device holds the whole array (the train state, resident data)."""
  return NamedSharding(mesh, P())


def row_sharding(mesh) -> NamedSharding:
  """Stacked batches [steps, batch, ...] split along the batch axis."""
  return NamedSharding(mesh, P(None, DATA_AXIS))


def replicate(tree, mesh):
  """Places host values, equal in every process, on every device of `mesh`."""
  sharding = replicated_sharding(mesh)

  def put(x):
    if jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key):
      return jax.random.wrap_key_data(put(jax.random.key_data(x)),
                                      impl=jax.random.key_impl(x))
    return jax.device_put(np.asarray(x), sharding)
  return jax.tree.map(put, tree)


def put_rows(tree, mesh):
  """Stacked batches the same in every process, split along the batch axis."""
  return jax.device_put(jax.tree.map(np.asarray, tree), row_sharding(mesh))


def global_rows(tree, mesh):
  """Stacked batches [steps, local batch, ...] of each process, as one global array.

  Each process passes its own rows; the global batch is their concatenation
  in process order.
  """
  return jax.tree.map(
      lambda x: jax.make_array_from_process_local_data(row_sharding(mesh), np.asarray(x)), tree)


def padded_batch_size(batch_size: int, mesh) -> int:
  """`batch_size` rounded up to a multiple of the mesh's devices."""
  return -(-batch_size // mesh.size) * mesh.size


def any_process(flag) -> bool:
  """Whether `flag` is true in any process; every process must ask together."""
  if jax.process_count() == 1:
    return bool(flag)
  return bool(np.any(multihost_utils.process_allgather(np.int32(bool(flag)))))


def barrier(name: str) -> None:
  """Waits until every process has reached the barrier called `name`."""
  if jax.process_count() > 1:
    multihost_utils.sync_global_devices(name)
