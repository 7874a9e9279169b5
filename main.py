"""Trains the MLP classifier from a config file, or uses a trained workdir.

  python main.py --config=configs/default.py --workdir=/tmp/mnist \
      [--config.FIELD=VALUE ...]
  python main.py ... --mode=eval [--checkpoint=latest|best|STEP]
  python main.py ... --mode=predict --input=digit.png [more.png ...]
  python main.py ... --mode=export [--checkpoint=...]
"""

import logging as std_logging
import re
import sys

from absl import app
from absl import flags
from absl import logging
from ml_collections import config_flags
import tensorflow as tf

import checkpointing
import config_checks
import divergence
import inference
import offline_data
import preemption
import train

FLAGS = flags.FLAGS
flags.DEFINE_string('workdir', None, 'Directory for checkpoints, logs and summaries.')
flags.DEFINE_enum('mode', 'train', ['train', 'eval', 'predict', 'export'],
                  'train; eval: a checkpoint on the test split (writes eval.json); '
                  'predict: classify --input images; export: a TF SavedModel.')
flags.DEFINE_string('checkpoint', 'latest',
                    'eval/predict/export: latest, best (by eval accuracy) or a step.')
flags.DEFINE_multi_string('input', [], 'predict: image files (PNG/JPEG) or folders; '
                          'further paths may follow as arguments (shell globs).')
config_flags.DEFINE_config_file(
    'config', None, 'Path to a config file with get_config().', lock_config=True)
flags.mark_flags_as_required(['config', 'workdir'])

# Exit statuses (documented in the README).
EXIT_BAD_INPUT = 2
EXIT_DIVERGED = 3
# Stopped by SIGTERM / Ctrl-C after a checkpoint: 128 + signal (143 / 130).

_INPUT_ERRORS = (config_checks.ConfigError, offline_data.DataError,
                 checkpointing.CheckpointMismatchError,
                 checkpointing.BrokenCheckpointError)


def _quiet_orbax(record) -> bool:
  # Orbax narrates every save at INFO; keep its warnings and errors only.
  return record.levelno >= std_logging.WARNING or '/orbax/' not in record.pathname


def _parse_flags(argv):
  """absl's parsing, but bad flags or config fields are one line and status 2."""
  try:
    return FLAGS(argv)
  except flags.Error as e:
    _refuse(str(e).splitlines()[0])
  except AttributeError as e:  # ml_collections: a field the config lacks.
    message = str(e).replace('\\n', ' ').replace('\\', '')
    field = re.search(r"'(\w+)'", message)
    if not field:
      raise
    hint = re.search(r'Did you mean "(\w+)"', message)
    _refuse(f'unknown config field {field.group(1)!r} in the --config overrides'
            + (f' (did you mean {hint.group(1)!r}?)' if hint else ''))


def _refuse(message):
  print(f'error: {message}', file=sys.stderr)
  sys.exit(EXIT_BAD_INPUT)


def _run(config, workdir, inputs):
  """Does what --mode says; prints what a person asked for."""
  if FLAGS.mode == 'train':
    train.train_and_evaluate(config, workdir)
  elif FLAGS.mode == 'eval':
    result = inference.evaluate_checkpoint(config, workdir, FLAGS.checkpoint)
    print(f'checkpoint {result["step"]}: eval_accuracy {result["eval_accuracy"]:.4%}'
          f' eval_loss {result["eval_loss"]:.6f} on {result["num_examples"]} test '
          f'images (written to {workdir}/{inference.EVAL_FILE})')
  elif FLAGS.mode == 'predict':
    for path, label, probability, _ in inference.predict_files(
        config, workdir, inputs, FLAGS.checkpoint):
      print(f'{path}: {label} ({probability:.1%})')
  else:
    print(inference.export_saved_model(config, workdir, FLAGS.checkpoint))


def main(argv):
  inputs = FLAGS.input + argv[1:]
  if inputs and FLAGS.mode != 'predict':
    raise app.UsageError(f'Unexpected arguments: {" ".join(inputs)} '
                         '(only --mode=predict takes input files)')
  if FLAGS.mode == 'predict' and not inputs:
    _refuse('--mode=predict needs --input=PATH (image files or folders)')
  # tf.data only runs on the host: keep TensorFlow off any accelerator, which
  # JAX needs for itself.
  tf.config.set_visible_devices([], 'GPU')
  tf.config.set_visible_devices([], 'TPU')
  logging.get_absl_handler().addFilter(_quiet_orbax)
  if FLAGS.mode == 'train':
    logging.info('Config:\n%s', FLAGS.config)
  try:
    _run(FLAGS.config, FLAGS.workdir, inputs)
  except _INPUT_ERRORS as e:
    _refuse(e)
  except divergence.Diverged as e:
    print(f'error: {e}', file=sys.stderr)
    sys.exit(EXIT_DIVERGED)
  except preemption.Interrupted as e:
    print(f'interrupted: {e}', file=sys.stderr)
    sys.exit(e.exit_status)


if __name__ == '__main__':
  app.run(main, flags_parser=_parse_flags)
