"""Python's cyclic garbage collector while a command module imports.

Loading jax, flax, optax and orbax builds about 240,000 objects that live as
long as the process. While they load, the collector ran about 380 times (two
or three of them full collections over every object), and each full
collection after, to the process's end, walked them all again: 0.14-0.21 s
of each command, measured (docs/benchmarks.md). So a command module imports
with the collector paused, then freezes what is alive (gc.freeze: left out
of every later collection; modules are never garbage anyway).

The freeze comes at once: with the collector paused, everything the imports
built is still in its youngest generation, and the first collection after
would walk it all (70-100 ms, measured). So a process that imports a command
module (main.py, trainkit.train_command) has its objects of that moment
frozen, not only the command's; `import trainkit` and the Python API leave
the collector alone.
"""

import contextlib
import gc


@contextlib.contextmanager
def paused_then_frozen():
  """The collector off inside the block, what is alive frozen after it; then as it was.

  A block that raises freezes nothing.
  """
  running = gc.isenabled()
  gc.disable()
  try:
    yield
    gc.freeze()
  finally:
    if running:
      gc.enable()
