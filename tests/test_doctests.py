"""The examples in the public modules' docstrings run and print what they say.

One case per public module of ``dask_factor`` (found on disk, so a module that fails to import
fails its own case instead of hiding its submodules). A docstring whose examples import an optional
extra that is not installed is left out (the whole module when importing the module needs one).
Examples that cannot run here (files that are not shipped, a cluster) carry ``# doctest: +SKIP``
in the docstring itself.
"""

from __future__ import annotations

import ast
import doctest
import importlib
import importlib.util
import pkgutil
from pathlib import Path

import pytest

import dask_factor

FLAGS = doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE

# top-level packages of the optional extras (pyproject's anndata, plot, bench, cluster)
OPTIONAL = {"anndata", "h5py", "matplotlib", "sklearn", "dask_jobqueue", "dask_kubernetes"}

# Known failures in modules that are being rewritten: module -> reason. Temporary, keep it empty.
XFAIL: dict[str, str] = {}


def _walk(path: Path, prefix: str):
    """(module name, source file) of the public modules under ``path``, without importing them."""
    for info in pkgutil.iter_modules([str(path)]):
        if info.name.startswith("_"):  # private modules, __main__
            continue
        name = prefix + info.name
        if info.ispkg:
            yield name, path / info.name / "__init__.py"
            yield from _walk(path / info.name, name + ".")
        else:
            yield name, path / f"{info.name}.py"


_ROOT = Path(dask_factor.__file__).parent
MODULES = sorted(name for name, file in [("dask_factor", _ROOT / "__init__.py"),
                                         *_walk(_ROOT, "dask_factor.")]
                 if file.is_file() and ">>>" in file.read_text(encoding="utf-8"))


def _missing_extras(test: doctest.DocTest) -> list[str]:
    """The optional packages a docstring's examples import that are not installed."""
    names = set()
    for example in test.examples:
        try:
            tree = ast.parse(example.source)
        except SyntaxError:
            continue
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                names.update(alias.name.split(".")[0] for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                names.add(node.module.split(".")[0])
    return sorted(p for p in names & OPTIONAL if importlib.util.find_spec(p) is None)


# the examples stop fits early on purpose (maxit=5, 20, …): not worth a warning each
@pytest.mark.filterwarnings("ignore:.*stopped at maxit:UserWarning")
@pytest.mark.parametrize(
    "name",
    [pytest.param(m, marks=pytest.mark.xfail(strict=False, reason=XFAIL[m])) if m in XFAIL else m
     for m in MODULES],
)
def test_docstring_examples(name, tmp_path, monkeypatch):
    try:
        module = importlib.import_module(name)
    except ModuleNotFoundError as e:
        if e.name and e.name.split(".")[0] in OPTIONAL:
            pytest.skip(f"{name} needs the optional package {e.name}")
        raise
    tests, skipped = [], []
    for test in doctest.DocTestFinder(exclude_empty=True).find(module, name):
        if missing := _missing_extras(test):
            skipped.append(f"{test.name} (needs {', '.join(missing)})")
        elif test.examples:
            tests.append(test)
    if skipped:
        print("skipped, optional packages not installed:", *skipped, sep="\n  ")
    if not tests:
        pytest.skip(f"{name}: every example needs an optional package: {'; '.join(skipped)}")

    monkeypatch.chdir(tmp_path)  # an example that writes a relative path writes it here
    runner = doctest.DocTestRunner(optionflags=FLAGS)
    report: list[str] = []
    failed = attempted = 0
    for test in sorted(tests, key=lambda t: t.name):
        result = runner.run(test, out=report.append)
        failed += result.failed
        attempted += result.attempted
    print("".join(report))  # doctest's report of every failed example
    assert failed == 0, f"{failed} of {attempted} docstring examples failed in {name}"
