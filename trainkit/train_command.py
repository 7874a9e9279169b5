"""The `trainkit` command (and main.py): train from a config, or use a trained workdir.

  trainkit --config=default --workdir=/tmp/mnist [--config.FIELD=VALUE ...]
  trainkit ... --config.num_epochs=30 --continue_with_changes  # train on
  trainkit --workdir=/tmp/mnist --mode=eval [--checkpoint=latest|best|STEP] [--split=SPLIT]
  trainkit --workdir=/tmp/mnist --mode=predict --input=digit.png [more.png ...]
  trainkit --workdir=/tmp/mnist --mode=predict --input=rows.csv  # .npy/.npz too; any task.
  trainkit --workdir=/tmp/mnist --mode=export [--format=savedmodel|jax|onnx]
  trainkit --workdir=/tmp/mnist --mode=summary   # The model as a table; no data is loaded.

`--config` is a config file, or the name of one shipped in the package
(`default`, `table`, `mixture_density`, ... : trainkit/configs/). Every mode
but train may leave it out: the workdir's own config is used, with the
command's --config.FIELD=VALUE overrides (--config.eval_batch_size=100).
"""

import ast

from trainkit.runtime import collector

# What the modules below build lives to the end: no collection walks it
# (trainkit/runtime/collector.py).
with collector.paused_then_frozen():
  from absl import flags
  from absl import logging
  from ml_collections import config_flags

  from trainkit import cli
  from trainkit import configs
  from trainkit import errors
  from trainkit.runtime import parallel
  from trainkit.training import config_checks
  from trainkit.workdirs import config_history

FLAGS = flags.FLAGS
flags.DEFINE_string('workdir', None, 'Directory for checkpoints, logs and summaries.')
flags.DEFINE_enum('mode', 'train', ['train', 'eval', 'predict', 'export', 'summary'],
                  'train; eval: a checkpoint on the test split (writes eval.json); '
                  'predict: --input images (classify), or rows of features in a '
                  '.npy/.npz/.csv file (any task), or a table (.csv/.parquet) for a model '
                  'trained on one; export: a model to serve (--format); '
                  'summary: print the model as a table (no data loaded).')
flags.DEFINE_bool('continue_with_changes', False,
                  'train: resume a trained workdir with a config that changes its '
                  'continuable fields (more epochs, learning rate, schedule, ...), '
                  'recorded in WORKDIR/config_history.jsonl.')
flags.DEFINE_string('checkpoint', 'latest',
                    'eval/predict/export: latest, best (by the validation best_metric) or a '
                    'step.')
flags.DEFINE_string('split', '', 'eval: the split to evaluate, in TFDS split syntax '
                    "(e.g. 'train[55000:]'); default: the config's test_split.")
flags.DEFINE_multi_string('input', [], 'predict: image files (any format Pillow reads) or folders, '
                          'further paths may follow as arguments (shell globs); or one '
                          '.npy/.npz/.csv file of feature rows.')
flags.DEFINE_enum('format', 'savedmodel', ['savedmodel', 'jax', 'onnx'],
                  'export: savedmodel (TensorFlow, jax2tf), jax (a jax.export artifact '
                  'that runs with jax and numpy alone), or onnx (an ONNX model that '
                  'onnxruntime runs).')
flags.DEFINE_string('output', '', 'predict: the CSV of predictions of a file of rows '
                    '(default: <input>_predictions.csv beside it).')
flags.DEFINE_enum('header', 'auto', ['auto', 'yes', 'no'],
                  'predict, text rows for a model trained on arrays: whether the first line '
                  'is a header (auto: when it holds anything but numbers).')
flags.DEFINE_string('jax_coordinator_address', None,
                    'Multi-process: HOST:PORT of process 0 (the same in every process).')
flags.DEFINE_integer('jax_num_processes', None, 'Multi-process: how many processes.')
flags.DEFINE_integer('jax_process_id', None, 'Multi-process: this process, 0 to N-1.')
config_flags.DEFINE_config_file(
    'config', None, 'A config file with get_config(), or the name of one shipped in the '
    'package (default, table, ...); eval/predict/export/summary: default, the workdir\'s own.',
    lock_config=True)
flags.mark_flags_as_required(['workdir'])

# The modes each flag is for: given to another, it would be ignored.
_FLAG_MODES = {'continue_with_changes': ('train',), 'checkpoint': ('eval', 'predict', 'export'),
               'split': ('eval',), 'format': ('export',), 'input': ('predict',),
               'output': ('predict',), 'header': ('predict',)}


def main(argv):
  """Trains, or evaluates / predicts / exports with a trained workdir (--mode)."""
  inputs = FLAGS.input + argv[1:]
  if argv[1:] and FLAGS.mode != 'predict':
    cli.refuse(f'unexpected arguments {" ".join(argv[1:])!r}: only --mode=predict takes input '
               'files')
  for name, modes in _FLAG_MODES.items():
    if FLAGS[name].present and FLAGS.mode not in modes:
      cli.refuse(f'--{name} is for --mode={"/".join(modes)}, not --mode={FLAGS.mode}')
  if FLAGS.mode == 'predict' and not inputs:
    cli.refuse('--mode=predict needs --input=PATH (image files or folders)')
  if FLAGS.mode == 'predict':
    cli.check_predict_inputs(inputs, FLAGS.output, FLAGS['header'].present)
  config = FLAGS.config
  if config is None and FLAGS.mode == 'train':
    cli.refuse('--config is required to train (a config file, or a shipped one: '
               f'{", ".join(configs.names())})')
  if config is None:  # The workdir's own, as it was trained, with the overrides given.
    with cli.exits():
      config = _overridden(config_history.workdir_config(FLAGS.workdir,
                                                         configs.load('default')))
  cli.setup_logging()
  cli.use_compilation_cache(config.cache_dir)
  # Before anything touches JAX. With no flags, SLURM / TPU / MPI are detected.
  try:
    parallel.initialize(FLAGS.jax_coordinator_address, FLAGS.jax_num_processes,
                        FLAGS.jax_process_id)
  except (ValueError, RuntimeError) as e:
    cli.refuse(f'--jax_coordinator_address={FLAGS.jax_coordinator_address} '
               f'--jax_num_processes={FLAGS.jax_num_processes} '
               f'--jax_process_id={FLAGS.jax_process_id}: {str(e).splitlines()[0]}')
  if FLAGS.mode == 'train':
    with cli.exits():  # A refused field is the command's one line, not after the whole config.
      config_checks.validate(config)
    logging.info('Config:\n%s', config)
  with cli.exits():
    cli.run_mode(FLAGS.mode, config, FLAGS.workdir, inputs,
                 continue_with_changes=FLAGS.continue_with_changes,
                 checkpoint=FLAGS.checkpoint, split=FLAGS.split, output=FLAGS.output,
                 header=FLAGS.header, export_format=FLAGS.format)


# --config.FIELD=VALUE given without --config: (field, text) for the workdir's own config.
_WORKDIR_OVERRIDES = []


def _parse_flags(argv):
  """cli.parse_flags; without --config, its overrides are kept for the workdir's config.

  ml_collections defines --config.FIELD flags only for a --config it loads.
  """
  cli.print_help_if_asked(argv, __doc__, __name__)
  if not any(a == '--config' or a.startswith('--config=') for a in argv[1:]):
    overrides, argv = cli.config_overrides(argv)
    _WORKDIR_OVERRIDES[:] = [a[len('--config.'):].split('=', 1) for a in overrides]
  return cli.parse_flags(argv)


def _overridden(config):
  """`config` with the command's --config.FIELD=VALUE, typed as the fields are."""
  if not _WORKDIR_OVERRIDES:
    return config
  return config_checks.overridden(
      config, {field: _typed(field, errors.field_or_none(config, field), text)
               for field, text in _WORKDIR_OVERRIDES})


def _typed(field: str, current, text: str):
  """`text` as a value of `current`'s type: a string field takes it as written."""
  if current is None or isinstance(current, str):
    return text
  if isinstance(current, bool):
    if text.lower() not in ('true', 'false', '1', '0'):
      cli.refuse(f'--config.{field}={text}: give true or false')
    return text.lower() in ('true', '1')
  try:
    return ast.literal_eval(text)
  except (ValueError, SyntaxError):
    return text  # Refused by the field's type, naming it.


def run() -> None:
  """The console script's entry point (and main.py's)."""
  cli.run(main, _parse_flags)
