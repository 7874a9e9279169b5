"""Redraws the plots of finished runs and overlays their learning curves.

  python report.py --workdir W1 [W2 ...] [--output compare.png]

Each workdir's `plots/` is drawn anew from its metrics.jsonl and saved test
predictions (no JAX, no dataset needed). With more than one workdir, their
train and test curves also go into one figure, `--output`.
"""

import argparse
import os
import sys

from trainkit.tracking import plots
from trainkit.workdirs import layout as workdir_lib


def main(argv=None) -> int:
  """Redraws and overlays; returns the exit status (2: not a workdir)."""
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--workdir', nargs='+', required=True, help='Run workdirs.')
  parser.add_argument('--output', default='compare_runs.png',
                      help='The overlay figure (with two or more workdirs).')
  args = parser.parse_args(argv)
  for workdir in args.workdir:
    if not os.path.exists(os.path.join(workdir, workdir_lib.METRICS)):
      members = sorted(d for d in (os.listdir(workdir) if os.path.isdir(workdir) else ())
                       if os.path.exists(os.path.join(workdir, d, workdir_lib.METRICS)))
      hint = (f'; a sweep\'s: give its members, e.g. --workdir {workdir}/{members[0]} ...'
              if members else '')
      print(f'error: --workdir={workdir!r} has no {workdir_lib.METRICS} (not a run\'s '
            f'workdir){hint}', file=sys.stderr)
      return 2
  runs = {}
  for workdir in args.workdir:
    for path in plots.draw(workdir):
      print(path)
    label = os.path.basename(os.path.abspath(workdir))
    while label in runs:  # Same folder name under different parents.
      label += "'"
    runs[label] = plots.read_metrics(workdir)
  if len(runs) > 1:
    plots.learning_curves(runs, args.output)
    print(args.output)
  return 0


if __name__ == '__main__':
  sys.exit(main())
