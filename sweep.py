"""Runs a config sweep: every member in its own workdir, then a ranked summary.

  python sweep.py --config=configs/sweeps/lr_seed.py --workdir=/tmp/sweep \
      [--config.FIELD=VALUE ...]

The sweep file has get_config() (the base) and get_sweep() (one dict of
dotted overrides per member); --config overrides apply to every member.
Member i trains in DIR/<i>_<overrides>/ exactly as main.py would there; a
member that finished is skipped when the sweep runs again, an unfinished one
resumes from its checkpoints.
"""

import os
import sys
import time

from absl import app
from absl import flags
from ml_collections import config_flags

from trainkit import cli
from trainkit import full_disk
from trainkit import preemption
from trainkit import sweeps
from trainkit import workdir_lock

FLAGS = flags.FLAGS
flags.DEFINE_string('workdir', None, 'Directory of the sweep (one folder per member).')
flags.DEFINE_enum('parallel', 'vmap', sweeps.PARALLEL,
                  'vmap: members that differ only in learning rate, weight decay, '
                  'momentum or seed train together as one vmapped program; '
                  'sequential: one after another in this process.')
flags.DEFINE_bool('continue_with_changes', False,
                  'Resume members whose workdirs were trained with other values of '
                  'the continuable fields (more epochs, learning rate, ...), '
                  'recorded in each member\'s config_history.jsonl.')
config_flags.DEFINE_config_file(
    'config', None, 'A sweep file: get_config() and get_sweep().', lock_config=True)
flags.mark_flags_as_required(['config', 'workdir'])


def _common_overrides(argv) -> list:
  """The --config.FIELD=VALUE flags given on the command line."""
  return [a for a in argv if a.startswith('--config.')]


def main(argv):
  """Runs the sweep, then prints the ranking and the best member's command."""
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {" ".join(argv[1:])}')
  cli.setup_logging()
  cli.use_compilation_cache(FLAGS.config.cache_dir)
  sweep_path = config_flags.get_config_filename(FLAGS['config'])
  start = time.perf_counter()
  try:
    overrides = sweeps.load_sweep(sweep_path)
    ranked = sweeps.run_sweep(FLAGS.config, overrides, FLAGS.workdir, FLAGS.parallel,
                              FLAGS.continue_with_changes)
  except cli.INPUT_ERRORS as e:
    cli.refuse(e)
  except workdir_lock.WorkdirBusy as e:
    cli.refuse(e, cli.EXIT_WORKDIR_BUSY)
  except full_disk.DiskFull as e:
    cli.refuse(e, cli.EXIT_DISK_FULL)
  except preemption.Interrupted as e:
    print(f'interrupted: {e}; run the same command to go on', file=sys.stderr)
    sys.exit(e.exit_status)
  best = ranked[0]
  print(f'Sweep of {len(ranked)} members done in {time.perf_counter() - start:.1f} s; '
        f'summary in {os.path.join(FLAGS.workdir, sweeps.SUMMARY_MD)}')
  with open(os.path.join(FLAGS.workdir, sweeps.SUMMARY_MD)) as f:
    print(f.read())
  print(f'Best: {best["name"]} ({best["best_eval_accuracy"]:.2%}). Train it alone with:')
  print(sweeps.command_line(sweep_path, os.path.join(FLAGS.workdir, 'best'),
                            _common_overrides(sys.argv), best['overrides']))


if __name__ == '__main__':
  cli.run(main)
