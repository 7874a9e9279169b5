"""The `trainkit-sweep` command (and sweep.py): a sweep or a search, then a ranked summary.

  python sweep.py --config=configs/sweeps/lr_seed.py --workdir=/tmp/sweep \
      [--config.FIELD=VALUE ...]
  python sweep.py --config=configs/sweeps/search.py --workdir=/tmp/search \
      [--storage=postgresql://...] [--launcher=slurm --workers=8]

The sweep file has get_config() (the base) and either get_sweep() (one dict of
dotted overrides per member) or get_search() (a trainkit.search.space.Search:
an Optuna study with early pruning); --config overrides apply to every member.
Member i trains in DIR/<i>_<overrides>/ (a search's trial in DIR/trial_NNNN/)
exactly as main.py would there; a member that finished is skipped when the
sweep runs again, an unfinished one resumes from its checkpoints. Any number
of workers may run the same search command; they share its trials.
"""

import os
import sys
import time

from trainkit.runtime import collector

# What the modules below build lives to the end: no collection walks it
# (trainkit/runtime/collector.py).
with collector.paused_then_frozen():
  from absl import flags
  from ml_collections import config_flags

  from trainkit import cli
  from trainkit import extras
  from trainkit.search import space as search_space
  from trainkit.search import sweeps

FLAGS = flags.FLAGS
flags.DEFINE_string('workdir', None, 'Directory of the sweep (one folder per member).')
flags.DEFINE_enum('parallel', 'auto', sweeps.PARALLEL,
                  'vmap: members that differ only in learning rate, weight decay, '
                  'momentum, dropout rates or seed train together as one vmapped '
                  'program; sequential: one after another in this process; auto: '
                  'vmap on an accelerator, sequential on CPU (where it is faster).')
flags.DEFINE_bool('continue_with_changes', False,
                  'Resume members whose workdirs were trained with other values of '
                  'the continuable fields (more epochs, learning rate, ...), '
                  'recorded in each member\'s config_history.jsonl.')
flags.DEFINE_string('storage', None,
                    'A search\'s Optuna storage: an RDB URL (postgresql://, mysql://, '
                    'sqlite:///) shared by workers on many machines; default: the '
                    'journal file DIR/optuna_journal.log.')
flags.DEFINE_string('study', None, 'A search\'s study name in the storage; default: '
                    'the base name of --workdir.')
flags.DEFINE_enum('launcher', 'none', ('none', 'local', 'slurm'),
                  'A search\'s workers: none = this process is one; slurm = submit '
                  '--workers jobs (a job array, through submitit); local = run them '
                  'as processes here and wait.')
flags.DEFINE_integer('workers', 1, 'How many workers --launcher starts.')
flags.DEFINE_list('slurm', [], 'submitit executor parameters for --launcher=slurm, '
                  'e.g. slurm_partition=gpu,timeout_min=600,gpus_per_node=1.')
config_flags.DEFINE_config_file(
    'config', None, 'A sweep file: get_config(), and get_sweep() or get_search().',
    lock_config=True)
flags.mark_flags_as_required(['config', 'workdir'])


def _common_overrides(argv) -> list:
  """The --config.FIELD overrides given on the command line, each as one --config.X=VALUE."""
  return cli.config_overrides(argv)[0]


def _refuse_swept(fields, why: str) -> None:
  """A --config.FIELD the members set themselves would be overwritten in every one, unsaid."""
  for given in _common_overrides(sys.argv):
    name = given[len('--config.'):].split('=', 1)[0]
    for field in sorted(fields):
      if name == field or name.startswith(field + '.') or field.startswith(name + '.'):
        cli.refuse(f'{given}: {field} is what the members differ in ({why} for each); '
                   'change it in the sweep file')


def main(argv):
  """Runs the sweep, then prints the ranking and the best member's command."""
  if len(argv) > 1:
    cli.refuse(f'unexpected arguments {" ".join(argv[1:])!r}: give every setting as a flag '
               '(--config=SWEEP_FILE, --config.FIELD=VALUE, --workdir=DIR)')
  cli.setup_logging()
  cli.use_compilation_cache(FLAGS.config.cache_dir)
  sweep_path = config_flags.get_config_filename(FLAGS['config'])
  start = time.perf_counter()
  with cli.exits('; run the same command to go on'):
    module = sweeps.load_sweep_file(sweep_path)
    spec = search_space.load_search(sweep_path, module)
    if spec is not None:
      _refuse_swept(spec.space, 'the search draws it')
      _search(spec, sweep_path, start)
      return
    given = [name for name in ('storage', 'study', 'launcher', 'workers', 'slurm')
             if FLAGS[name].present]
    if given:  # A sweep runs here, member by member: they would be ignored.
      cli.refuse(f'--{given[0]} is for a search (a sweep file with get_search()); '
                 f'{sweep_path} has get_sweep()')
    overrides = sweeps.load_sweep(sweep_path, module)
    # A field some members leave alone takes the flag there: refused only where every one sets it.
    _refuse_swept(set.intersection(*(set(member) for member in overrides)), 'the sweep sets it')
    ranked = sweeps.run_sweep(FLAGS.config, overrides, FLAGS.workdir, FLAGS.parallel,
                              FLAGS.continue_with_changes)
  best = ranked[0]
  print(f'Sweep of {len(ranked)} members done in {time.perf_counter() - start:.1f} s; '
        f'summary in {os.path.join(FLAGS.workdir, sweeps.SUMMARY_MD)}')
  with open(os.path.join(FLAGS.workdir, sweeps.SUMMARY_MD)) as f:
    print(f.read())
  if best['status'] != 'finished':  # Diverged members rank last: none finished.
    print(f'error: every member diverged (nan_policy={FLAGS.config.nan_policy!r}); none is '
          'best', file=sys.stderr)
    sys.exit(cli.EXIT_DIVERGED)
  # The split its epochs were evaluated on (a member may set its own).
  best_config = sweeps.member_config(FLAGS.config, best['overrides'])
  ranked_on = 'validation' if best_config.validation_split else 'test'
  print(f'Best: {best["name"]} ({ranked_on} {best["best_metric"]} {best["objective"]:.4f}). '
        'Train it alone with:')
  print(sweeps.command_line(sweep_path, os.path.join(FLAGS.workdir, 'best'),
                            _common_overrides(sys.argv), best['overrides']))


def _search(spec, sweep_path: str, start: float) -> None:
  """Works on the search's trials with the other workers, then prints the ranking."""
  extras.require("a sweep file's get_search()", 'optuna')
  # Imported here: Optuna and its storages cost a second that list sweeps skip.
  from trainkit.search import optuna_search as search  # pylint: disable=g-import-not-at-top
  from trainkit.search import results as search_results  # pylint: disable=g-import-not-at-top
  directory = FLAGS.workdir
  if FLAGS.launcher != 'none':  # Bad launcher flags are refused before the study is written.
    from trainkit.search import launch  # pylint: disable=g-import-not-at-top
    launch.check(FLAGS.launcher, FLAGS.workers, FLAGS.slurm)
  study, storage = search.prepare(spec, FLAGS.config, directory, FLAGS.storage,
                                  FLAGS.study, sweep_path)
  ran = 0
  if FLAGS.launcher == 'none':
    ran = search.run_worker(study, storage, spec, FLAGS.config, directory)
  else:
    jobs = launch.launch(FLAGS.launcher, FLAGS.workers, FLAGS.slurm, directory, sys.argv)
    print(f'Submitted {len(jobs)} workers ({FLAGS.launcher}): jobs '
          f'{", ".join(job.job_id for job in jobs)}; their logs in '
          f'{os.path.join(directory, "launch")}.')
    if FLAGS.launcher == 'slurm':
      storage_url = FLAGS.storage or os.path.join(directory, search.JOURNAL)
      print(f'Follow the study with: optuna-dashboard {storage_url}')
      return
    for job in jobs:
      job.result()  # Raises what a worker raised.
  metrics = sweeps.summary_metrics(FLAGS.config)
  ranked = search_results.rows(study, directory, metrics)
  search_results.write(study, directory, ranked, metrics)
  search_results.plot(study, directory)
  who = (f'this worker ran {ran}' if FLAGS.launcher == 'none'
         else f'{FLAGS.workers} {FLAGS.launcher} workers')
  print(f'Search of {len(ranked)} trials done in {time.perf_counter() - start:.1f} s '
        f'({who}); summary in '
        f'{os.path.join(directory, sweeps.SUMMARY_MD)}')
  with open(os.path.join(directory, sweeps.SUMMARY_MD)) as f:
    print(f.read())
  command = search_results.best_command(study, FLAGS.config, sweep_path, directory,
                                        _common_overrides(sys.argv))
  if command:
    print(f'Best: {study.best_trial.user_attrs.get("workdir")} '
          f'({study.best_value:.4f}). Train it alone with:')
    print(command)


def run() -> None:
  """The console script's entry point (and sweep.py's)."""
  cli.run(main, _parse_flags)


def _parse_flags(argv):
  cli.print_help_if_asked(argv, __doc__, __name__)
  return cli.parse_flags(argv)
