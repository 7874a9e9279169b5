"""What the peer scripts share: the IDX reader, the schedule and the JSON result line.

No import of the trainer or of any framework: the peers run in their own venv
(benchmarks/requirements-peers.txt).
"""

import argparse
import gzip
import json
import math
import os
import struct

import numpy as np

BATCH = 128
HIDDEN = (512, 512)
DROPOUT = (0.3, 0.4)
PEAK_LR = 1e-3


def read_idx(path):
  """A gzipped IDX file of unsigned bytes as a numpy array."""
  with gzip.open(path, 'rb') as f:
    raw = f.read()
  ndim = raw[3]
  shape = struct.unpack(f'>{ndim}I', raw[4:4 + 4 * ndim])
  return np.frombuffer(raw, np.uint8, offset=4 + 4 * ndim).reshape(shape)


def load_mnist(idx_dir):
  """(train images [N, 28, 28] uint8, train labels, test images, test labels)."""
  names = ('train-images-idx3-ubyte.gz', 'train-labels-idx1-ubyte.gz',
           't10k-images-idx3-ubyte.gz', 't10k-labels-idx1-ubyte.gz')
  return tuple(read_idx(os.path.join(idx_dir, n)) for n in names)


def warmup_cosine(step, steps_per_epoch, epochs):
  """The trainer's default schedule: linear warmup for half an epoch, then cosine to 0."""
  warmup, total = steps_per_epoch // 2, steps_per_epoch * epochs
  if step < warmup:
    return PEAK_LR * step / warmup
  progress = min(1.0, (step - warmup) / max(1, total - warmup))
  return PEAK_LR * 0.5 * (1 + math.cos(math.pi * progress))


def parse_args():
  parser = argparse.ArgumentParser()
  parser.add_argument('--idx_dir', required=True)
  parser.add_argument('--epochs', type=int, default=15)
  parser.add_argument('--workdir', required=True)
  return parser.parse_args()


def report(**result):
  """The one line the benchmark reads."""
  print('RESULT ' + json.dumps(result), flush=True)
