"""What a person sees of a run: progress, TensorBoard, plots, summary, profile."""

import json
import logging
import os
import sys
import threading
import time
import types

import numpy as np
import pytest
from PIL import Image
from tensorboard.backend.event_processing import event_accumulator

from tests.conftest import NUM_EXAMPLES
from tests.helpers import tiny_config
from trainkit import errors
from trainkit.training import config_checks
from trainkit.tracking import metric_logs
from trainkit.tracking import plots
from trainkit.tracking import progress
import report
import train



from trainkit.training import cadence
pytestmark = pytest.mark.usefixtures('mock_mnist')


def _scalars(workdir):
  """{tag: {step: value}} as TensorBoard's own reader sees the event files."""
  reader = event_accumulator.EventAccumulator(
      str(workdir), size_guidance={event_accumulator.SCALARS: 0})
  reader.Reload()
  return reader, {tag: {e.step: e.value for e in reader.Scalars(tag)}
                  for tag in reader.Tags()['scalars']}


def _jsonl(workdir, split):
  with open(os.path.join(workdir, 'metrics.jsonl')) as f:
    return {r['step']: r['metrics'] for r in map(json.loads, f) if r['split'] == split}


def test_tensorboard_reader_finds_the_scalars_and_hparams(tmp_path):
  _, summary = train.train_and_evaluate(tiny_config(), str(tmp_path))
  reader, scalars = _scalars(tmp_path)
  for tag in ('train_loss', 'train_accuracy', 'eval_loss', 'eval_accuracy',
              'train_learning_rate', 'train_steps_per_s', 'epoch_steps_per_s'):
    assert tag in scalars, tag
  # The same numbers as metrics.jsonl, at the same steps (float32 in events).
  evals = _jsonl(tmp_path, 'eval')
  assert sorted(scalars['eval_accuracy']) == sorted(evals) == [6, 12]
  for step, metrics in evals.items():
    assert scalars['eval_accuracy'][step] == pytest.approx(metrics['accuracy'], rel=1e-6)
    assert scalars['eval_loss'][step] == pytest.approx(metrics['loss'], rel=1e-6)
  assert scalars['eval_accuracy'][12] == pytest.approx(summary['eval_accuracy'], rel=1e-6)
  train_lines = _jsonl(tmp_path, 'train')
  assert sorted(scalars['train_loss']) == sorted(train_lines)
  # The cosine schedule decays: the last logged rate is below the first.
  rates = scalars['train_learning_rate']
  assert rates[max(rates)] < rates[min(rates)]
  assert all(v > 0 for v in scalars['epoch_steps_per_s'].values())
  # The config as hparams, with the figures the tab shows beside it (none were named).
  from tensorboardX.proto import plugin_hparams_pb2  # pylint: disable=g-import-not-at-top,import-outside-toplevel
  experiment = plugin_hparams_pb2.HParamsPluginData.FromString(
      reader.PluginTagToContent('hparams')['_hparams_/experiment']).experiment
  assert {'eval_accuracy', 'eval_loss', 'train_loss'} <= {
      m.name.tag for m in experiment.metric_infos}
  assert 'learning_rate' in {h.name for h in experiment.hparam_infos}


def test_events_are_written_by_the_caller_and_flushed_by_one_thread(tmp_path, monkeypatch):
  """No thread wakes per event (tensorboardX's queue had two); one flushes on a timer."""
  monkeypatch.setattr(metric_logs, '_FLUSH_S', 0.05)
  before = set(threading.enumerate())
  logger = metric_logs.MetricLogger(str(tmp_path))
  for step in range(1, 41):
    logger.write(step, 'eval', {'loss': 1.0 / step})
  started = set(threading.enumerate()) - before
  names = [t.name for t in started]  # Others' threads may start meanwhile: only ours counted.
  assert names.count('event_file_flush') == 1 and 'QueueFeederThread' not in names, names
  started = [t for t in started if t.name == 'event_file_flush']
  # Flushed while the logger is open: a TensorBoard watching the run sees every step.
  for _ in range(100):
    if len(_scalars(tmp_path)[1].get('eval_loss', {})) == 40:
      break
    time.sleep(0.05)
  assert sorted(_scalars(tmp_path)[1]['eval_loss']) == list(range(1, 41))
  logger.write(41, 'eval', {'loss': 0.0})
  logger.close()
  logger.close()  # Again: nothing.
  assert not any(t.is_alive() for t in started)
  assert sorted(_scalars(tmp_path)[1]['eval_loss']) == list(range(1, 42))  # Written at close.


def test_plots_are_written_and_redrawn_by_report(tmp_path, capsys):
  first, second = tmp_path / 'adam', tmp_path / 'sgd'
  train.train_and_evaluate(tiny_config(plots=True), str(first))
  train.train_and_evaluate(tiny_config(optimizer='sgd', learning_rate=0.1), str(second))
  names = {'learning_curves.png', 'confusion_matrix.png', 'worst_errors.png',
           plots.PREDICTIONS}
  assert set(os.listdir(first / 'plots')) == names
  for name in names - {plots.PREDICTIONS}:
    with Image.open(first / 'plots' / name) as image:
      assert image.size[0] > 400 and image.size[1] > 300
  with np.load(first / 'plots' / plots.PREDICTIONS) as saved:
    assert saved['probs'].shape == (NUM_EXAMPLES, 10)
    np.testing.assert_allclose(saved['probs'].sum(-1), 1.0, rtol=1e-5)
    # The saved predictions give the accuracy of the final evaluation.
    accuracy = (saved['probs'].argmax(-1) == saved['label']).mean()
  with open(first / 'summary.json') as f:
    assert accuracy == pytest.approx(json.load(f)['eval_accuracy'])
  assert not (second / 'plots').exists()  # tiny_config: plots off.

  os.remove(first / 'plots' / 'confusion_matrix.png')
  output = tmp_path / 'compare.png'
  assert report.main(['--workdir', str(first), str(second), '--output', str(output)]) == 0
  assert (first / 'plots' / 'confusion_matrix.png').exists()
  assert (second / 'plots' / 'learning_curves.png').exists()
  assert output.exists() and str(output) in capsys.readouterr().out
  assert report.main(['--workdir', str(tmp_path / 'nothing')]) == 2
  # A folder of runs (a sweep's) points at them.
  assert report.main(['--workdir', str(tmp_path)]) == 2
  assert f"a sweep's: give its members, e.g. --workdir {tmp_path}/adam" in capsys.readouterr().err


def test_worst_errors_and_confusion_counts():
  labels = np.array([0, 1, 2, 2])
  probs = np.array([[0.9, 0.1, 0.0],   # right
                    [0.6, 0.4, 0.0],   # wrong, 0.6
                    [0.05, 0.95, 0.0],  # wrong, 0.95
                    [0.0, 0.0, 1.0]])  # right
  assert list(plots.select_worst(labels, probs)) == [2, 1]
  counts = plots.confusion_counts(labels, probs.argmax(-1), 3)
  np.testing.assert_array_equal(counts, [[1, 0, 0], [1, 0, 0], [0, 1, 1]])


def test_worst_errors_draw_float_images_as_uint8_ones(tmp_path):
  # Floats in [0, 1] were drawn on a 0-255 scale: every cell white.
  images = np.zeros((2, 12, 12, 1), np.float32)
  images[:, 3:9, 3:9] = 1.0
  labels, probs = np.array([0, 1]), np.array([[0.2, 0.8], [0.9, 0.1]])
  drawn = {}
  for name, pixels in (('float', images), ('uint8', (images * 255).astype(np.uint8))):
    plots.worst_errors(pixels, labels, probs, np.arange(2), str(tmp_path / f'{name}.png'))
    with Image.open(tmp_path / f'{name}.png') as image:
      drawn[name] = np.asarray(image.convert('L'), np.float64)
  assert drawn['uint8'].min() < 50  # The squares are dark.
  np.testing.assert_array_equal(drawn['float'], drawn['uint8'])


def test_read_metrics_keeps_the_latest_eval_of_a_step(tmp_path):
  lines = [{'step': 6, 'split': 'eval', 'metrics': {'loss': 1.0, 'accuracy': 0.5}},
           {'step': 6, 'split': 'train', 'metrics': {'loss': 2.0, 'accuracy': 0.4}},
           {'step': 6, 'split': 'eval', 'metrics': {'loss': 0.9, 'accuracy': 0.6}}]
  with open(tmp_path / 'metrics.jsonl', 'w') as f:
    f.writelines(json.dumps(line) + '\n' for line in lines)
  curves = plots.read_metrics(str(tmp_path))
  assert curves['eval'] == {'step': [6], 'loss': [0.9], 'accuracy': [0.6]}
  assert curves['train']['loss'] == [2.0]


def _feed(show, epochs=2, steps=6, per_call=3):
  metrics = {'loss': np.full(per_call, 0.5), 'accuracy': np.full(per_call, 0.75)}
  step = 0
  for epoch in range(epochs):
    show.start_epoch(epoch, step)
    for _ in range(steps // per_call):
      step += per_call
      show.update(step, per_call, metrics)
    show.end_epoch(step, {'loss': 0.25, 'accuracy': 0.875})
  show.close()


def test_log_style_writes_progress_lines_with_the_figures(caplog):
  show = progress.Progress(style='log', num_epochs=2, steps_per_epoch=6,
                           batch_size=8, every_s=1e-9)
  with caplog.at_level(logging.INFO, logger='absl'):
    _feed(show)
  lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith('Epoch')]
  assert lines[0].startswith('Epoch 1/2 3/6 steps (50%)')
  assert 'loss=0.5000' in lines[0] and 'acc=75.00%' in lines[0]
  assert 'ex/s' in lines[0] and 'step/s' in lines[0] and 'run ETA' in lines[0]
  # Each epoch ends with its evaluation on one line.
  finals = [line for line in lines if '6/6' in line]
  assert len(finals) == 2 and all('eval_acc=87.50%' in line for line in finals)
  assert lines[-1].startswith('Epoch 2/2')


@pytest.mark.parametrize('style', ['log', 'off'])
def test_a_runs_log_shows_each_epochs_evaluation_once(tmp_path, caplog, style):
  """One line per epoch with its evaluation; the train windows' scalars a line each."""
  with caplog.at_level(logging.INFO, logger='absl'):
    train.train_and_evaluate(tiny_config(progress=style, num_epochs=3), str(tmp_path))
  lines = [r.getMessage() for r in caplog.records]
  epochs = [line for line in lines if line.startswith('Epoch') and 'eval' in line]
  assert [line.split()[1].strip(':') for line in epochs] == ['1/3', '2/3', '3/3'], epochs
  scalars = [line for line in lines if line.startswith('[')]
  assert not [line for line in scalars if 'eval_' in line or 'epoch_' in line]
  # 6 steps an epoch, a train window every 2 steps: 9 windows.
  assert len([line for line in scalars if 'train_loss=' in line]) == 9


def test_bar_style_draws_a_bar_per_epoch(capsys):
  show = progress.Progress(style='bar', num_epochs=2, steps_per_epoch=6, batch_size=8)
  _feed(show)
  err = capsys.readouterr().err
  assert 'Epoch 1/2 100%|' in err and 'Epoch 2/2 100%|' in err
  assert 'eval_acc=87.50%' in err


def test_auto_style_is_log_when_not_a_terminal():
  assert progress.resolve_style('auto') == 'log'  # pytest captures stderr.


def test_auto_style_is_a_bar_in_a_notebook(monkeypatch):
  # A Jupyter kernel's output cell redraws tqdm's line as a terminal does.
  monkeypatch.setitem(sys.modules, 'ipykernel', types.ModuleType('ipykernel'))
  assert progress.resolve_style('auto') == 'bar'


def test_run_summary_names_results_and_places(tmp_path, caplog):
  with caplog.at_level(logging.INFO, logger='absl'):
    _, summary = train.train_and_evaluate(tiny_config(), str(tmp_path))
  text = progress.run_summary(summary, str(tmp_path), summary['best_step'])
  assert f'test accuracy  {summary["eval_accuracy"]:.2%}' in text
  assert 'no validation split' in text
  _, summary = train.train_and_evaluate(
      tiny_config(train_split='train[:40]', validation_split='train[40:]'),
      str(tmp_path / 'validated'))
  validated = progress.run_summary(summary, str(tmp_path), summary['best_step'])
  assert f'validation     accuracy {summary["eval_accuracy"]:.2%}' in validated
  assert f'at step {summary["best_step"]}' in validated
  assert f'test           accuracy {summary["test_accuracy"]:.2%}' in validated
  assert f'tensorboard --logdir {tmp_path}' in text
  assert os.path.join(str(tmp_path), 'checkpoints') in text
  assert summary['best_step'] in (5, 10)
  assert any('tensorboard --logdir' in r.getMessage() for r in caplog.records)


def test_profile_steps_trace_into_the_workdir(tmp_path):
  train.train_and_evaluate(tiny_config(profile_steps=(3, 4)), str(tmp_path))
  traces = [f for root, _, files in os.walk(tmp_path / 'profile') for f in files
            if f.endswith('.xplane.pb')]
  assert len(traces) == 1


def test_calls_end_at_the_profiled_range():
  # Epoch of 10 steps starting at global step 10; trace global steps 13-15.
  assert cadence.call_spans(0, 10, 10, 0, 0, extra_ends=(12, 15)) == [
      (0, 2), (2, 5), (5, 10)]


@pytest.mark.parametrize('field,value', [
    ('profile_steps', (5,)), ('profile_steps', (4, 2)), ('profile_steps', (0, 3)),
    ('progress', 'fancy'), ('progress_every_s', 0)])
def test_bad_visibility_fields_are_refused(field, value):
  with pytest.raises(errors.ConfigError, match=field):
    config_checks.validate(tiny_config(**{field: value}))


def test_tensorboard_shows_a_resumed_runs_history_once_and_whole(tmp_path):
  """Points past the checkpoint were shown twice once redone, and those a kill caught in
  memory were missing: TensorBoard now shows the history the checkpoint covers, then the
  resumed run's."""
  first = metric_logs.MetricLogger(str(tmp_path))
  for step in range(1, 11):
    first.write(step, 'eval', {'loss': float(step)})
  first.close()
  time.sleep(0.1)  # The resume's time is not the kept points'.
  resumed = metric_logs.MetricLogger(str(tmp_path), resume_step=5)  # Checkpoint at step 5.
  for step in range(6, 9):
    resumed.write(step, 'eval', {'loss': 100.0 + step})
  resumed.close()
  reader, scalars = _scalars(tmp_path)
  assert scalars['eval_loss'] == {**{s: float(s) for s in range(1, 6)},
                                  **{s: 100.0 + s for s in range(6, 9)}}
  # The kept points at the times they were logged, not the resume's.
  logged = {r['step']: r['time'] for r in map(json.loads, open(tmp_path / 'metrics.jsonl'))}
  assert {e.step: e.wall_time for e in reader.Scalars('eval_loss')} == pytest.approx(
      logged, abs=0.01)
