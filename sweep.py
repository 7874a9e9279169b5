"""Runs a config sweep or a search: every member in its own workdir, then a ranked summary.

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

The flags are the library's (trainkit/sweep_command.py): this file and the
installed `trainkit-sweep` command are the same program.
"""

from trainkit import sweep_command

if __name__ == '__main__':
  sweep_command.run()
