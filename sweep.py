"""Runs a config sweep or a search: the `trainkit-sweep` command, as a script.

  python sweep.py --config=configs/sweeps/lr_seed.py --workdir=/tmp/sweep
  python sweep.py --config=configs/sweeps/search.py --workdir=/tmp/search

The flags, and what a sweep file holds, are the library's
(trainkit/sweep_command.py): this file and the installed `trainkit-sweep`
command are the same program.
"""

from trainkit import sweep_command

if __name__ == '__main__':
  sweep_command.run()
