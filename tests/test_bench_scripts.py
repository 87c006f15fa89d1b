"""The benchmark scripts in bench/ are not run by the suite (they time
things), so a rename in the library can leave them calling a name that
is gone: bench/solver_curves.py called evaluation.zsem_decoding_report
after it had moved to zsem_probe (before evaluation re-exported it), and
failed only after minutes of work.
Here every ``module.name`` a bench script uses, and every ``from module
import name``, is checked against the module: project modules are
imported, the other bench scripts are read with ``ast`` (importing them
is not needed)."""
import ast
import importlib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
BENCH = sorted((ROOT / 'bench').glob('*.py'))
PROJECT = ({p.stem for p in ROOT.glob('*.py')} |
           {'model', 'diffusion'})


def top_level_names(path: Path) -> set:
    """The names a bench script defines at module level."""
    names = set()
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, (ast.FunctionDef, ast.ClassDef,
                             ast.AsyncFunctionDef)):
            names.add(node.name)
        elif isinstance(node, ast.Assign):
            names |= {t.id for t in node.targets if isinstance(t, ast.Name)}
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            names |= {(a.asname or a.name).split('.')[0] for a in node.names}
    return names


def lookup(module: str):
    """(names of ``module``, or None when it is not a project or bench
    module)."""
    local = ROOT / 'bench' / f'{module}.py'
    if local.exists():
        return top_level_names(local)
    if module.split('.')[0] in PROJECT:
        return set(dir(importlib.import_module(module)))
    return None


def used_names(path: Path):
    """(line, module, name) of every ``alias.name`` and ``from module
    import name`` in a script, for the modules it imports."""
    tree = ast.parse(path.read_text())
    aliases = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for a in node.names:
                aliases[a.asname or a.name] = a.name
        elif isinstance(node, ast.ImportFrom) and node.level == 0:
            for a in node.names:
                yield node.lineno, node.module, a.name
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and isinstance(
                node.value, ast.Name) and node.value.id in aliases:
            yield node.lineno, aliases[node.value.id], node.attr


@pytest.mark.parametrize('path', BENCH, ids=[p.name for p in BENCH])
def test_bench_script_uses_only_names_that_exist(path):
    missing = []
    for line, module, name in used_names(path):
        names = lookup(module)
        if names is not None and name not in names:
            missing.append(f'{path.name}:{line}: {module}.{name}')
    assert not missing, 'names that no longer exist: ' + ', '.join(missing)


def test_the_check_sees_a_missing_name(tmp_path):
    script = tmp_path / 'stale.py'
    script.write_text('import evaluation\nfrom zsem_probe import linear_probe'
                      ', no_such_probe\nevaluation.no_such_report()\n'
                      'evaluation.evaluate_fid\n')
    found = sorted((m, n) for _, m, n in used_names(script)
                   if n not in lookup(m))
    assert found == [('evaluation', 'no_such_report'),
                     ('zsem_probe', 'no_such_probe')]
