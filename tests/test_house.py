"""The house's rules, measured from the code (docs/design.md draws the layers).

- The library (trainkit/) never imports the application at the top level.
- No import circles between modules, nor between the library's rooms
  (its subpackages and top-level modules), counting imports inside
  functions: a circle held by a late import is still a circle.
- No function over 60 lines outside configs/ (trainkit/configs/ too) and tests/.
- Outside trainkit/tasks/ (and configs/, tests/, benchmarks/, which configure
  runs), no string literal names a task or a task's metric: a task declares
  everything about itself. 'loss' is every task's by the task interface, and
  is not counted.
"""

import ast
import pathlib

from trainkit import tasks
from trainkit.tasks import metric_catalogue as metrics_lib

ROOT = pathlib.Path(__file__).resolve().parent.parent
APPLICATION = {'main', 'train', 'models', 'input_pipeline', 'sweep', 'report', 'configs',
               'benchmarks', 'tests'}
MAX_LINES = 60
_BUILT = ('build', 'dist', 'trainkit.egg-info')  # What `pip install .` leaves in the clone.
# The library's rooms by floor (docs/design.md draws them): a room imports
# only rooms on lower floors. The package itself is on top.
FLOORS = {'trainkit.errors': 1, 'trainkit.extras': 2, 'trainkit.tasks': 2, 'trainkit.workdirs': 3,
          'trainkit.models': 3, 'trainkit.runtime': 4, 'trainkit.checkpoints': 4,
          'trainkit.tracking': 4, 'trainkit.data': 5, 'trainkit.training': 6,
          'trainkit.serving': 7, 'trainkit.search': 8, 'trainkit.configs': 9,
          'trainkit.cli': 10, 'trainkit.train_command': 11, 'trainkit.sweep_command': 11,
          'trainkit.api': 11, 'trainkit': 12}


def _python_files(*, outside=('configs', 'tests')):
  """The project's Python files, but those in `outside` (and hidden folders: venvs).

  The package's configs (trainkit/configs/) count as configs.
  """
  for top in sorted(ROOT.iterdir()):
    if top.name.startswith('.') or top.name in outside or top.name in _BUILT:
      continue
    if top.is_dir():
      yield from sorted(p for p in top.rglob('*.py')
                        if not any(part.startswith('.') for part in p.parts)
                        and not ('configs' in outside
                                 and p.is_relative_to(ROOT / 'trainkit' / 'configs')))
    elif top.suffix == '.py':
      yield top


def _module_name(path: pathlib.Path) -> str:
  parts = list(path.relative_to(ROOT).with_suffix('').parts)
  if parts[-1] == '__init__':
    parts.pop()
  return '.'.join(parts)


def _library() -> dict:
  """{module name: its parsed source} of every module of trainkit/."""
  return {_module_name(p): ast.parse(p.read_text(), str(p))
          for p in sorted((ROOT / 'trainkit').rglob('*.py'))}


def imports(tree, module: str, known) -> set:
  """The modules `tree` imports anywhere in it (functions too), resolved to `known` names."""
  found = set()
  for node in ast.walk(tree):
    if isinstance(node, ast.Import):
      found.update(alias.name for alias in node.names)
    elif isinstance(node, ast.ImportFrom):
      base = node.module or ''
      if node.level:
        package = module.split('.')[:-node.level] if node.level else []
        base = '.'.join(package + ([base] if base else []))
      for alias in node.names:
        name = f'{base}.{alias.name}'
        found.add(name if name in known else base)
  return found


def import_graph() -> dict:
  library = _library()
  return {module: {m for m in imports(tree, module, library) if m in library and m != module}
          for module, tree in library.items()}


def room(module: str) -> str:
  """The library's room a module is in: its subpackage, or itself at the top."""
  parts = module.split('.')
  return '.'.join(parts[:2])


def circles(graph: dict) -> list:
  """The strongly connected groups of more than one node (Tarjan's algorithm)."""
  index, low, stack, on_stack, found = {}, {}, [], set(), []

  def visit(node):
    index[node] = low[node] = len(index)
    stack.append(node)
    on_stack.add(node)
    for nxt in sorted(graph.get(node, ())):
      if nxt not in index:
        visit(nxt)
        low[node] = min(low[node], low[nxt])
      elif nxt in on_stack:
        low[node] = min(low[node], index[nxt])
    if low[node] == index[node]:
      group = []
      while True:
        member = stack.pop()
        on_stack.discard(member)
        group.append(member)
        if member == node:
          break
      if len(group) > 1:
        found.append(sorted(group))

  for node in sorted(graph):
    if node not in index:
      visit(node)
  return found


def room_graph(graph: dict) -> dict:
  rooms = {}
  for module, targets in graph.items():
    rooms.setdefault(room(module), set()).update(
        room(t) for t in targets if room(t) != room(module))
  return rooms


def library_to_application() -> list:
  library = _library()
  return sorted((module, name) for module, tree in library.items()
                for name in imports(tree, module, library)
                if name.split('.')[0] in APPLICATION)


def long_functions() -> list:
  found = []
  for path in _python_files():
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
      if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
        length = node.end_lineno - node.lineno + 1
        if length > MAX_LINES:
          found.append(f'{path.relative_to(ROOT)}:{node.lineno} {node.name} ({length} lines)')
  return found


def task_and_metric_names() -> set:
  return (set(tasks.TASKS) | set(metrics_lib.CATALOGUE)) - {'loss'}


def _docstrings(tree) -> set:
  found = set()
  for node in ast.walk(tree):
    if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
      body = node.body
      if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
        found.add(id(body[0].value))
  return found


def named_in_literals() -> list:
  """(file:line, literal) of string literals outside tasks/ that name a task or metric."""
  names = task_and_metric_names()
  found = []
  for path in _python_files(outside=('configs', 'tests', 'benchmarks')):
    if path.is_relative_to(ROOT / 'trainkit' / 'tasks'):
      continue
    tree = ast.parse(path.read_text(), str(path))
    skip = _docstrings(tree)
    for node in ast.walk(tree):
      if (isinstance(node, ast.Constant) and isinstance(node.value, str)
          and id(node) not in skip):
        words = ''.join(c if c.isalnum() or c == '_' else ' ' for c in node.value).split()
        if any(w in names or any(w.endswith('_' + n) for n in names) for w in words):
          found.append(f'{path.relative_to(ROOT)}:{node.lineno} {node.value!r}')
  return found


def test_the_library_never_imports_the_application():
  assert library_to_application() == []


def test_no_import_circles_between_modules_or_rooms():
  graph = import_graph()
  assert circles(graph) == []
  assert circles(room_graph(graph)) == []


def test_every_room_imports_only_rooms_below_it():
  rooms = room_graph(import_graph())
  assert set(rooms) <= set(FLOORS), set(rooms) - set(FLOORS)  # A new room gets a floor.
  climbs = [(room_, other) for room_, others in rooms.items() for other in others
            if FLOORS[other] >= FLOORS[room_]]
  assert climbs == []


def test_the_checks_see_a_circle_and_a_climb():
  # The measures themselves can fail: a made-up circle and an application import.
  assert circles({'a': {'b'}, 'b': {'c'}, 'c': {'a'}, 'd': {'a'}}) == [['a', 'b', 'c']]
  tree = ast.parse('def f():\n  import train\n  from trainkit.data import pipeline\n')
  assert imports(tree, 'trainkit.x', {'trainkit.data.pipeline'}) == {
      'train', 'trainkit.data.pipeline'}


def test_no_function_is_over_sixty_lines():
  assert long_functions() == []


def test_no_task_or_metric_is_named_outside_the_tasks():
  assert {'classification', 'accuracy', 'rmse', 'roc_auc', 'nll'} <= task_and_metric_names()
  assert named_in_literals() == []


if __name__ == '__main__':
  print('library -> application:', *library_to_application(), sep='\n  ')
  print('circles:', *circles(import_graph()), sep='\n  ')
  print('room circles:', *circles(room_graph(import_graph())), sep='\n  ')
  print('rooms:', *(f'{r} -> {sorted(o)}' for r, o in sorted(room_graph(import_graph()).items())),
        sep='\n  ')
  print('long functions:', *long_functions(), sep='\n  ')
  print('task and metric names:', *named_in_literals(), sep='\n  ')
