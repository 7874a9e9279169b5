"""The built wheel, installed alone in a fresh venv: the core install a user gets.

`pip install trainkit` with no extra: its size, its console scripts run from
another folder (train, then every other mode from the workdir alone), and a
feature whose extra is missing refused in one line that names the extra. The
dependencies come from the package index (or pip's cache).
"""

import fcntl
import glob
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

from tests.helpers import ENV, ROOT, digest, error_lines, session_root

pytestmark = pytest.mark.slow  # A venv and a few hundred MB of installs.

# The core's site-packages at most (the issue's ~1.2 GB).
_CORE_BYTES = 1.2e9


@pytest.fixture(scope='session')
def venv(tmp_path_factory):
  """(the venv's bin folder, a scratch folder outside the project) with the wheel installed.

  Built once per session: the xdist workers share it, the first building it
  under a lock while the other waits. (xdist's loadgroup, which would keep
  these tests on one worker, does not group them under pytest 9.2: it
  renames items through an attribute pytest no longer reads.)
  """
  root = session_root(tmp_path_factory) / 'wheel'
  with open(f'{root}.lock', 'a') as lock:
    fcntl.lockf(lock, fcntl.LOCK_EX)
    if not (root / 'done').exists():
      shutil.rmtree(root, ignore_errors=True)
      _build(root)
      (root / 'done').touch()
  return root / 'venv', root / 'elsewhere'


def _build(root) -> None:
  """The wheel built from a copy of the package and installed into a fresh venv under `root`."""
  source = root / 'source'  # A copy: building writes build/ and egg-info beside the code.
  shutil.copytree(os.path.join(ROOT, 'trainkit'), source / 'trainkit',
                  ignore=shutil.ignore_patterns('__pycache__'))
  for name in ('pyproject.toml', 'README.md'):
    shutil.copy(os.path.join(ROOT, name), source)
  run = lambda *args: subprocess.run(args, capture_output=True, text=True, timeout=900,
                                     env=ENV, cwd=root)
  built = run(sys.executable, '-m', 'pip', 'wheel', '--no-deps', '-q', '-w', str(root / 'dist'),
              str(source))
  assert built.returncode == 0, built.stderr[-3000:]
  (wheel,) = glob.glob(str(root / 'dist' / 'trainkit-*.whl'))
  assert run(sys.executable, '-m', 'venv', str(root / 'venv')).returncode == 0
  installed = run(str(root / 'venv' / 'bin' / 'python'), '-m', 'pip', 'install', '-q', wheel)
  assert installed.returncode == 0, installed.stderr[-3000:]
  (root / 'elsewhere').mkdir()


def _run(venv, command, *args):
  folder, scratch = venv
  return subprocess.run([str(folder / 'bin' / command), *args], cwd=scratch,
                        capture_output=True, text=True, timeout=600,
                        env={**ENV, 'HOME': str(scratch / 'home')})


def test_the_core_install_is_lean_and_has_no_extra(venv):
  folder, _ = venv
  (site,) = glob.glob(str(folder / 'lib' / 'python*' / 'site-packages'))
  size = sum(os.path.getsize(os.path.join(d, f)) for d, _, files in os.walk(site)
             for f in files if not os.path.islink(os.path.join(d, f)))
  assert size <= _CORE_BYTES, f'{size / 1e9:.2f} GB'
  for module in ('tensorflow', 'mlflow', 'optuna', 'jax2onnx', 'sklearn'):
    assert not glob.glob(os.path.join(site, module)), module


@pytest.fixture(scope='module')
def trained(venv, tmp_path_factory):
  """A workdir the console script trained, from another folder, with a shipped config."""
  workdir = str(tmp_path_factory.mktemp('console') / 'run')
  result = _run(venv, 'trainkit', '--config=mixture_density', f'--workdir={workdir}',
                '--config.num_epochs=2', '--config.synthetic_examples=(512, 256, 256)',
                '--config.cache_dir=', '--config.plots=False')
  assert result.returncode == 0, result.stderr[-3000:]
  return workdir


def test_the_console_script_trains_then_uses_the_workdir_alone(venv, trained, tmp_path):
  np.save(tmp_path / 'rows.npy', np.linspace(0, 1, 7, dtype=np.float32)[:, None])
  for args, expected in ((['--mode=eval'], 'checkpoint 16'), (['--mode=summary'], 'Total'),
                         (['--mode=predict', f'--input={tmp_path}/rows.npy'], '7 rows'),
                         (['--mode=export', '--format=jax'], 'export')):
    result = _run(venv, 'trainkit', f'--workdir={trained}', *args)
    assert result.returncode == 0, (args, result.stderr[-3000:])
    assert expected in result.stdout, (args, result.stdout[-2000:])


@pytest.mark.parametrize('command, args, extra', [
    ('trainkit', ['--config=default', '--config.trackers=mlflow'], 'tracking'),
    ('trainkit', ['--mode=export', '--format=onnx'], 'onnx'),
    ('trainkit', ['--mode=export', '--format=savedmodel'], 'tfds'),
    ('trainkit-sweep', ['--config=sweeps/search'], 'search'),
])
def test_a_missing_extra_is_named_in_one_line_before_any_work(venv, trained, tmp_path,
                                                              command, args, extra):
  # Exports need a trained workdir; the others would start a new one.
  workdir = trained if '--mode=export' in args else str(tmp_path / 'w')
  before = digest(workdir) if os.path.exists(workdir) else None
  result = _run(venv, command, f'--workdir={workdir}', *args)
  lines = error_lines(result.stderr)
  assert result.returncode == 2, result.stderr[-3000:]
  assert len(lines) == 1 and f"pip install 'trainkit[{extra}]'" in lines[0], lines
  assert (digest(workdir) == before) if before else not os.path.exists(workdir)
