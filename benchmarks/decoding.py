r"""Decoding a prepared TFDS split whole: PIL against OpenCV, one reading thread against more.

  python -m benchmarks.decoding [--examples=60000] [--repeats=3] [--json=out.json]

What a dataset that was not prepared from source arrays (any TFDS image
dataset downloaded online) costs the first time its split is read whole
(trainkit/data/sources/tfds_source.read_all; the decoded-array cache keeps the
result for later runs). The dataset is generated: MNIST-shaped IDX files of
random digits-like images (a few strokes on black), prepared once through
TFDS; then the train split is decoded by TFDS's own decoder, PIL or OpenCV
(TFDS takes OpenCV when it is installed), with 1 and with 2 Grain reading
threads. Medians of `--repeats` alternated runs; every variant's arrays are
checked equal.
"""

import json
import statistics
import tempfile
import time

from absl import app
from absl import flags
import numpy as np

FLAGS = flags.FLAGS
flags.DEFINE_integer('examples', 60000, 'Training examples generated.')
flags.DEFINE_integer('repeats', 3, 'Runs of each variant, alternated.')
flags.DEFINE_string('json', None, 'Write the results here as JSON.')


def _generate(directory: str, n: int) -> None:
  """MNIST-shaped IDX files: a few random bright strokes per image."""
  from trainkit.data.sources import tfds_prepare as offline_data  # pylint: disable=g-import-not-at-top
  rng = np.random.default_rng(0)
  for split, count in (('train', n), ('test', max(1, n // 6))):
    images = np.zeros((count, 28, 28), np.uint8)
    rows = rng.integers(4, 24, (count, 3))
    for stroke in range(3):
      for i in range(count):  # A short horizontal stroke, as a pen's.
        images[i, rows[i, stroke], 6:22] = 255
    labels = rng.integers(0, 10, count, dtype=np.uint8)
    image_file, label_file = offline_data.IDX_FILES[split]
    offline_data.write_idx(f'{directory}/{image_file}', images)
    offline_data.write_idx(f'{directory}/{label_file}', labels)


def main(argv):
  del argv
  import grain  # pylint: disable=g-import-not-at-top
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  from tensorflow_datasets.core.features import image_feature  # pylint: disable=g-import-not-at-top
  from trainkit.data.sources import tfds_prepare as offline_data  # pylint: disable=g-import-not-at-top
  from trainkit.data.sources import tfds_source  # pylint: disable=g-import-not-at-top

  work = tempfile.mkdtemp(prefix='bench_decoding_')
  _generate(work, FLAGS.examples)
  offline_data.prepare('mnist', f'{work}/tfds', work)
  records = tfds_source.records(tfds.builder('mnist', data_dir=f'{work}/tfds'), 'train')
  opencv = image_feature.cv2

  def decode(decoder, threads):
    image_feature.cv2 = opencv if decoder == 'opencv' else None
    start = time.perf_counter()  # Worker processes: their start-up counts.
    chunks = grain.MapDataset.range(len(records)).batch(4096).map(records.read)
    if threads == 'processes':  # Two worker processes, one reading thread each.
      chunks = chunks.to_iter_dataset(grain.ReadOptions(num_threads=1)).mp_prefetch(
          grain.MultiprocessingOptions(num_workers=2))
    else:
      chunks = chunks.to_iter_dataset(grain.ReadOptions(num_threads=threads,
                                                        prefetch_buffer_size=4))
    it = iter(chunks)
    parts = list(it)
    seconds = time.perf_counter() - start
    return seconds, np.concatenate([p['x'] for p in parts])

  # Worker processes import the decoder anew: OpenCV (TFDS's choice) only.
  variants = [(d, t) for d in ('pil', 'opencv') for t in (1, 2)] + [('opencv', 'processes')]
  times = {v: [] for v in variants}
  reference = None
  for _ in range(FLAGS.repeats):
    for variant in variants:
      seconds, images = decode(*variant)
      reference = images if reference is None else reference
      np.testing.assert_array_equal(images, reference)
      times[variant].append(seconds)
  image_feature.cv2 = opencv
  name = lambda d, t: f'{d}_{t}_threads' if isinstance(t, int) else f'{d}_{t}'
  median = {name(d, t): statistics.median(times[(d, t)]) for d, t in variants}
  for variant, seconds in median.items():
    print(f'{variant:18s} {seconds:6.2f} s  {FLAGS.examples / seconds:8,.0f} examples/s')
  if FLAGS.json:
    with open(FLAGS.json, 'w') as f:
      json.dump({'examples': FLAGS.examples, 'median_s': median,
                 'runs_s': {name(d, t): times[(d, t)] for d, t in variants}}, f,
                indent=2)


if __name__ == '__main__':
  app.run(main)
