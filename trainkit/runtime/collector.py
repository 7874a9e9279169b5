"""Python's cyclic garbage collector while a command loads its modules.

Loading jax, flax, optax and orbax builds about 240,000 objects that live as
long as the process. The collector walks them again and again while they
load, and again at every full collection after: about a tenth of a second of
each command, measured (docs/benchmarks.md). A command pauses it while it
imports, then freezes what the imports built (gc.freeze: kept out of every
later collection; modules are never garbage anyway).

Only the command modules do this, before their imports: `import trainkit` and
the Python API leave the collector as the caller set it.
"""

import gc


def pause() -> bool:
  """Stops the collector; returns whether it was running."""
  running = gc.isenabled()
  gc.disable()
  return running


def freeze_and_resume(running: bool) -> None:
  """Keeps every object alive now out of later collections; restarts the collector if it ran."""
  gc.freeze()
  if running:
    gc.enable()
