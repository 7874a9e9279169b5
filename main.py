"""Trains from a config file, or uses a trained workdir: the `trainkit` command.

  python main.py --config=configs/default.py --workdir=/tmp/mnist \
      [--config.FIELD=VALUE ...]
  python main.py ... --config.num_epochs=30 --continue_with_changes  # train on
  python main.py ... --mode=eval [--checkpoint=latest|best|STEP] [--split=SPLIT]
  python main.py ... --mode=predict --input=digit.png [more.png ...]
  python main.py ... --mode=predict --input=rows.csv  # .npy/.npz too; any task.
  python main.py ... --mode=export [--format=savedmodel|jax|onnx] [--checkpoint=...]
  python main.py ... --mode=summary   # The model as a table; no data is loaded.

The flags and what each mode does are the library's (trainkit/train_command.py):
this file and the installed `trainkit` command are the same program.
"""

from trainkit import train_command

FLAGS = train_command.FLAGS

if __name__ == '__main__':
  train_command.run()
