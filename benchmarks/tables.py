"""The benchmark's table and its checks against the speed targets, from one run's results."""


def _ratio(a, b):
  return None if a is None or b is None or not b else a / b


def _step_rows(results, steps_per_epoch):
  """The rows of the step and epoch measures, against the minimal loop and the roofline."""
  get = lambda k: results.get(k) or {}
  steps, minimal, trainer = (get(k) for k in ('steps', 'minimal_loop', 'trainer'))
  samples = steps_per_epoch * 128
  rows = []
  if steps:
    rows += [
        ('trainer step, per call (samples/s)', 128 / steps['trainer_step_s'],
         'minimal Flax step', 128 / steps['minimal_step_s'],
         steps['minimal_step_s'] / steps['trainer_step_s']),
        ('trainer steps, one scan per epoch (samples/s)',
         samples / steps['trainer_epoch_s'], 'minimal scan epoch',
         samples / steps['minimal_epoch_s'],
         steps['minimal_epoch_s'] / steps['trainer_epoch_s']),
        ('trainer steps, bfloat16 (samples/s)', samples / steps['trainer_bf16_epoch_s'],
         'trainer float32', samples / steps['trainer_epoch_s'],
         steps['trainer_epoch_s'] / steps['trainer_bf16_epoch_s']),
        ('matmul roofline: one epoch of the products alone (s)', steps['matmul_epoch_s'],
         'trainer steps only, one epoch (s)', steps['trainer_epoch_s'],
         steps['matmul_epoch_s'] / steps['trainer_epoch_s']),
    ]
  if trainer and steps:
    rows += [
        ('trainer full epoch, median (s)', trainer['steady_epoch_s'],
         'its steps only (s)', steps['trainer_epoch_s'],
         _ratio(trainer['steady_epoch_s'], steps['trainer_epoch_s'])),
        ('matmul roofline epoch (s)', steps['matmul_epoch_s'],
         'trainer full epoch (s)', trainer['steady_epoch_s'],
         _ratio(steps['matmul_epoch_s'], trainer['steady_epoch_s'])),
    ]
  if trainer and minimal:
    rows += [
        ('trainer full epoch (s)', trainer['steady_epoch_s'],
         'minimal in-memory scan loop epoch (s)', minimal['steady_epoch_s'],
         _ratio(trainer['steady_epoch_s'], minimal['steady_epoch_s'])),
        ('trainer: start to 98 % (s)', trainer['to_98_s'],
         'minimal loop: start to 98 % (s)', minimal['to_98_s'],
         _ratio(trainer['to_98_s'], minimal['to_98_s'])),
        ('trainer peak RSS (MB)', trainer['peak_rss_mb'], 'minimal loop peak RSS (MB)',
         minimal['peak_rss_mb'], _ratio(trainer['peak_rss_mb'], minimal['peak_rss_mb'])),
    ]
  return rows


def _rows(results, steps_per_epoch):
  """(measure, value, compared with, value, ratio) rows for what was run."""
  get = lambda k: results.get(k) or {}
  trainer, torch = get('trainer'), get('torch')
  rows = _step_rows(results, steps_per_epoch)
  for suffix, what in (('_1', '1 epoch'), ('', '15 epochs')):
    mine = get('trainer' + suffix)
    for peer in ('keras', 'lightning', 'minimal_loop'):
      other = get(peer + suffix)
      if mine and other:
        name = other.get('framework', 'minimal Flax loop')
        # Not like with like, and said so: the trainer's data is prepared and
        # its caches warm (the cold figures are the 'first' rows); a peer reads
        # the IDX files and compiles again in every run.
        rows.append((f'trainer whole command, {what}, data prepared, caches warm (s)',
                     mine['wall_s'], f'{name}, reads IDX and compiles each run (s)',
                     other['wall_s'], _ratio(other['wall_s'], mine['wall_s'])))
  if get('trainer_cold') and get('trainer_1'):
    rows.append(('trainer whole command, 1 epoch, empty caches (s)',
                 results['trainer_cold']['wall_s'], 'warm caches (s)',
                 results['trainer_1']['wall_s'],
                 _ratio(results['trainer_cold']['wall_s'], results['trainer_1']['wall_s'])))
  first = get('first').get('median_wall_s', {})
  for peer, name in (('keras', 'Keras 3 fit'), ('lightning', 'Lightning')):
    if 'trainer' in first and peer in first:
      rows.append(('trainer first command, 1 epoch, empty home (s)', first['trainer'],
                   f'{name}, first run, empty home (s)', first[peer],
                   _ratio(first[peer], first['trainer'])))
  if 'search' in first:
    rows.append(("a search's first command, empty home (s)", first['search'],
                 'the same again, in the home it filled (s)', first['search_again'],
                 _ratio(first['search'], first['search_again'])))
  for name in ('trainer', 'keras', 'lightning'):
    if 'eval_accuracy' in get(name):
      rows.append((f'{get(name).get("framework", "trainer")}: test accuracy, 15 epochs',
                   get(name)['eval_accuracy'], 'steady epoch (s)',
                   get(name).get('steady_epoch_s'), None))
  for key, label in (('rerun_s', 'finished re-run (s)'), ('eval_s', '--mode=eval (s)'),
                     ('predict_s', '--mode=predict, one image (s)')):
    if key in get('latency'):
      rows.append((label, results['latency'][key], '', None, None))
  if trainer and 'step_ms' in torch:
    torch_epoch = steps_per_epoch * torch['step_ms'] / 1000
    rows.append(('trainer full epoch (s)', trainer['steady_epoch_s'],
                 f'PyTorch {torch["version"]} bare steps, one epoch (s)', torch_epoch,
                 _ratio(trainer['steady_epoch_s'], torch_epoch)))
  return rows


def checks(results):
  """The speed issue's targets, as (text, passed) from this run."""
  get = lambda k: results.get(k) or {}
  out = []

  def check(text, value, ok):
    if value is not None:
      out.append((text.format(value), ok(value)))
  if get('trainer_1') and get('keras_1'):
    check('Keras / trainer, 1-epoch whole command = {:.2f}x (>= 1.4x)',
          _ratio(get('keras_1')['wall_s'], get('trainer_1')['wall_s']), lambda r: r >= 1.4)
  if get('trainer') and get('keras'):
    check('Keras / trainer, 15-epoch whole command = {:.2f}x (>= 1.25x)',
          _ratio(get('keras')['wall_s'], get('trainer')['wall_s']), lambda r: r >= 1.25)
  if get('trainer'):
    check('default test accuracy {:.4f} (>= 0.985)', get('trainer')['eval_accuracy'],
          lambda a: a >= 0.985)
    check('trainer steady epoch {:.3f} s (<= 1.5 s)', get('trainer')['steady_epoch_s'],
          lambda t: t <= 1.5)
    check('peak RSS of the default run {:.0f} MB (<= 2048)', get('trainer')['peak_rss_mb'],
          lambda m: m <= 2048)
  if get('trainer') and get('steps'):
    check('matmul roofline / trainer steady epoch = {:.2f} (>= 0.8)',
          _ratio(get('steps')['matmul_epoch_s'], get('trainer')['steady_epoch_s']),
          lambda r: r >= 0.8)
  if get('trainer') and get('minimal_loop'):
    check('trainer / minimal loop steady epoch = {:.3f} (<= 1.15)',
          _ratio(get('trainer')['steady_epoch_s'], get('minimal_loop')['steady_epoch_s']),
          lambda r: r <= 1.15)
  first = get('first').get('median_wall_s', {})
  if 'trainer' in first:
    check('first command from an empty home {:.1f} s (<= 20 s)', first['trainer'],
          lambda t: t <= 20)
    if 'keras' in first:
      check('first command / Keras first run = {:.2f}x (<= 2x)',
            _ratio(first['trainer'], first['keras']), lambda r: r <= 2)
  for key, limit in (('rerun_s', 3.0), ('eval_s', 3.5), ('predict_s', 2.5)):
    if key in get('latency'):
      check(f'{key[:-2]} {{:.2f}} s (<= {limit} s)', results['latency'][key],
            lambda t, limit=limit: t <= limit)
  return out


def table(results, steps_per_epoch):
  """The Markdown table, a note on ratios and the checks; stores the checks in `results`."""
  fmt = lambda v: '-' if v is None else f'{v:,.3f}' if v < 100 else f'{v:,.0f}'
  lines = ['| measure | value | compared with | value | ratio |', '|---|---|---|---|---|']
  lines += [f'| {a} | {fmt(b)} | {c} | {fmt(d)} | {fmt(e)} |'
            for a, b, c, d, e in _rows(results, steps_per_epoch)]
  lines.append('\nratio = value / compared value, except the whole-command rows, where it '
               'is peer / trainer (> 1: the trainer is faster).')
  results['checks'] = checks(results)
  lines += [f'{"PASS" if ok else "FAIL"}: {text}' for text, ok in results['checks']]
  return '\n'.join(lines)
