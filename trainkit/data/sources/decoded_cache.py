"""Decoded splits kept on disk as .npy files, memory-mapped at start-up.

Decoding a split example by example (PNG, in TFDS) costs seconds on every
command; the decoded arrays cost one read. A split is decoded once per machine
(or read from its source files, trainkit/data/sources/tfds_prepare.py) and kept in
`CACHE_DIR/decoded/<dataset>-<version>-<split>-<key>/`, where the key is a hash
of the prepared dataset's metadata (`dataset_info.json`) and of the name,
size and modification time of every file of the split (for a split read
from its source files, `<dataset>-<version>-<split>-files-<key>`, a hash of
those files' names, sizes and times): a dataset prepared
again, or changed in any way TFDS or the file system records, gets a new key,
so a stale copy is never read. Copies are written to a temporary folder and
renamed into place, so a crash or a concurrent process never leaves a partial
one behind; a copy damaged afterwards (cut short, emptied, overwritten, a
folder in a file's place) does not read back as its key says and is decoded
and written again, replacing it.
"""

import glob
import hashlib
from importlib import metadata
import json
import os
import shutil
import tempfile

from absl import logging
import numpy as np

from trainkit.workdirs import layout as workdir_lib

# Bump when the layout of the cached arrays changes.
_FORMAT = 3
_KEY_FILE = 'key.json'
_ARRAYS = ('x', 'y')


def cache_key(builder, split: str) -> dict | None:
  """What identifies `split` as prepared on disk; None if it has no files (mocked)."""
  data_dir = os.fspath(builder.data_dir)
  info = os.path.join(data_dir, 'dataset_info.json')
  files = sorted(glob.glob(os.path.join(data_dir, f'{builder.name}-{split}.*')))
  if not files or not os.path.isfile(info):
    return None
  with open(info, 'rb') as f:
    info_sha = hashlib.sha256(f.read()).hexdigest()
  return {'format': _FORMAT, 'dataset': builder.name, 'version': str(builder.version),
          'split': split, 'dataset_info_sha256': info_sha, 'files': _stats(files)}


def files_key(dataset: str, version: str, split: str, paths: list) -> dict:
  """What identifies `split` read from source files `paths` (their names, sizes and times)."""
  return {'format': _FORMAT, 'dataset': dataset, 'version': version, 'split': split,
          'source': 'files', 'files': _stats(paths)}


def _stats(paths: list) -> list:
  """(name, size, modification time) of each file: what a change to it changes."""
  return [(os.path.basename(p), os.stat(p).st_size, os.stat(p).st_mtime_ns) for p in paths]


def _folder(cache_dir: str, key: dict) -> str:
  digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]
  # Copies from the source files and from the prepared dataset never displace each other.
  source = '-files' if key.get('source') == 'files' else ''
  name = f'{key["dataset"]}-{key["version"]}-{key["split"]}{source}-{digest}'
  return os.path.join(os.path.expanduser(cache_dir), 'decoded', name)


def _read(folder: str, key: dict) -> dict | None:
  """The cached arrays, memory-mapped, if they are whole and are what `key` names."""
  try:
    with open(os.path.join(folder, _KEY_FILE)) as f:
      stored = json.load(f)
    if stored['key'] != json.loads(json.dumps(key)):
      return None
    arrays = {k: np.load(os.path.join(folder, f'{k}.npy'), mmap_mode='r') for k in _ARRAYS}
  except (OSError, ValueError, EOFError, TypeError, KeyError):  # Damaged: decoded again.
    return None
  shapes = {k: list(v.shape) for k, v in arrays.items()}
  dtypes = {k: v.dtype.str for k, v in arrays.items()}
  if shapes != stored.get('shapes') or dtypes != stored.get('dtypes'):
    return None
  return arrays


def _write(folder: str, key: dict, arrays: dict) -> None:
  parent = os.path.dirname(folder)
  try:
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(dir=parent, prefix='.incomplete-')
  except OSError:  # Not a folder, or not writable: no cache.
    return
  try:
    for k in _ARRAYS:
      np.save(os.path.join(tmp, f'{k}.npy'), arrays[k])
    with open(os.path.join(tmp, _KEY_FILE), 'w') as f:
      json.dump({'key': key, 'shapes': {k: list(arrays[k].shape) for k in _ARRAYS},
                 'dtypes': {k: arrays[k].dtype.str for k in _ARRAYS}}, f)
    if os.path.lexists(folder):  # A damaged copy: set aside first (rename needs room).
      aside = tempfile.mkdtemp(dir=parent, prefix='.damaged-')
      os.rename(folder, os.path.join(aside, 'copy'))
      shutil.rmtree(aside, ignore_errors=True)
    os.rename(tmp, folder)
  except OSError:  # Another process put it there first, or no space: no cache.
    shutil.rmtree(tmp, ignore_errors=True)
    return
  # Copies of earlier preparations of this split are stale for good.
  stem = os.path.basename(folder).rsplit('-', 1)[0]
  for old in glob.glob(os.path.join(parent, f'{stem}-*')):
    if old != folder:
      shutil.rmtree(old, ignore_errors=True)


def load(builder, split: str, cache_dir: str, decode) -> dict:
  """{'x', 'y'} of `split`: memory-mapped from the cache, or `decode()`d and cached.

  Args:
    builder: the prepared TFDS builder.
    split: the split's name.
    cache_dir: the cache root ('' turns the cache off).
    decode: () -> the decoded arrays, called on a miss.
  """
  return load_keyed(cache_key(builder, split) if cache_dir else None, cache_dir, decode)


def load_keyed(key: dict | None, cache_dir: str, decode) -> dict:
  """{'x', 'y'} under `key` (`cache_key` or `files_key`): from the cache, or `decode()`d."""
  if key is None or not cache_dir:
    return decode()
  folder = _folder(cache_dir, key)
  arrays = _read(folder, key)
  if arrays is not None:
    return arrays
  logging.info('Caching %s %s, decoded, in %s.', key['dataset'], key['split'], folder)
  arrays = decode()
  _write(folder, key, arrays)
  return arrays


def registered_facts(cache_dir: str, dataset: str, read) -> dict:
  """What TFDS registers of `dataset` (`read()`, a dict of JSON values), kept in the cache.

  Asking TFDS means importing it (half a second); its answer changes only
  with the installed TFDS, whose version keys the copy. '' (no cache): `read()`.
  """
  if not cache_dir:
    return read()
  version = metadata.version('tensorflow-datasets')
  path = os.path.join(os.path.expanduser(cache_dir), 'tfds_registered',
                      f'{dataset}-tfds-{version}.json')
  try:
    with open(path) as f:
      stored = json.load(f)
    if stored.get('format') == _FORMAT and stored.get('dataset') == dataset:
      return stored['facts']
  except (OSError, ValueError, AttributeError, KeyError):  # None yet, or damaged: asked again.
    pass
  facts = read()
  try:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    workdir_lib.write_json(path, {'format': _FORMAT, 'dataset': dataset, 'facts': facts})
  except OSError:  # Not writable, or no space: asked again next time.
    pass
  return facts
