"""Every ```python block of README.md and docs/*.md runs.

A page's blocks run in order in one namespace (a page may build on its earlier blocks, never on
another page), in a temporary working directory, with matplotlib's Agg backend. A block that cannot
run in a test (a SLURM submission, a file the reader has to supply) is fenced as
```` ```python no-run ````: GitHub and the docs site render it as Python, this test leaves it out,
and ``test_no_run_blocks_are_few`` keeps their number small.

README blocks that a test of their own already runs verbatim, checking the values they show
(``RUN_ELSEWHERE``), are not run a second time here (suite time); ``test_run_elsewhere_is_true``
checks that those tests still take the block by its heading.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
FENCE = re.compile(r"^```python([^\n]*)\n(.*?)^```[ \t]*$", re.S | re.M)
NO_RUN = "no-run"
MAX_NO_RUN = 6  # blocks left out across all pages; each needs a reason in the text around it

# (README heading, index of the block under it) -> the test file that runs it verbatim
RUN_ELSEWHERE = {
    ("scikit-learn estimators", 0): "tests/api/test_estimator.py",
    ("scanpy / AnnData tools", 0): "tests/api/test_tl.py",
    ("scanpy / AnnData tools", 1): "tests/api/test_tl_graph.py",
    ("Plots", 0): "tests/api/test_plot.py",
    ("Results that travel", 0): "tests/api/test_nmf_result_io.py",
    ("Consensus NMF and divisive clustering", 0): "tests/api/test_consensus.py",
    ("Count-data losses", 0): "tests/api/test_losses.py",
}


def blocks(page: Path, *, all_blocks: bool = False) -> list[tuple[int, str, bool]]:
    """(line number, source, runs here) of every python block of ``page``, in order.

    ``runs`` is False for ``no-run`` blocks and, unless ``all_blocks``, for README blocks in
    ``RUN_ELSEWHERE``.
    """
    text = page.read_text(encoding="utf-8")
    out, seen = [], {}
    for match in FENCE.finditer(text):
        options = match.group(1).split()
        unknown = set(options) - {NO_RUN}
        if unknown:
            raise ValueError(f"{page.name}: unknown python fence option(s) {sorted(unknown)}")
        line = text.count("\n", 0, match.start()) + 1
        headings = re.findall(r"^## (.+)$", text[:match.start()], re.M)
        heading = headings[-1] if headings else ""
        index = seen[heading] = seen.get(heading, -1) + 1
        elsewhere = page.name == "README.md" and (heading, index) in RUN_ELSEWHERE
        runs = NO_RUN not in options and (all_blocks or not elsewhere)
        out.append((line, match.group(2), runs))
    return out


def test_fences_are_found():
    """The pattern finds the blocks (a page edit that breaks it would silently test nothing)."""
    sample = "text\n```python\nx = 1\n```\n\n```python no-run\ny = 2\n```\n"
    page = ROOT / "README.md"
    assert len(blocks(page)) >= 10
    found = [(m.group(1).split(), m.group(2)) for m in FENCE.finditer(sample)]
    assert found == [([], "x = 1\n"), (["no-run"], "y = 2\n")]


def test_no_run_blocks_are_few():
    skipped = [(p.name, line) for p in PAGES for line, _, runs in blocks(p, all_blocks=True)
               if not runs]
    assert len(skipped) <= MAX_NO_RUN, skipped


@pytest.mark.parametrize(("heading", "index"), sorted(RUN_ELSEWHERE))
def test_run_elsewhere_is_true(heading, index):
    """The test named in RUN_ELSEWHERE takes that README block by its heading and runs it."""
    import sys

    sys.path.insert(0, str(ROOT / "tests" / "api"))
    from readme_blocks import readme_block

    assert readme_block(heading, index)  # the heading still has that block
    source = (ROOT / RUN_ELSEWHERE[heading, index]).read_text(encoding="utf-8")
    call = f'readme_block("{heading}"' + (f", {index})" if index else ")")
    assert call in source and "exec(" in source, (RUN_ELSEWHERE[heading, index], call)


@pytest.mark.parametrize("page", [p for p in PAGES if any(r for _, _, r in blocks(p))],
                         ids=lambda p: p.name)
def test_page_runs(page: Path, tmp_path, monkeypatch):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    monkeypatch.chdir(tmp_path)
    namespace: dict = {"__name__": f"snippets_{page.stem}"}
    try:
        for line, source, runs in blocks(page):
            if not runs:
                continue
            code = compile(source, f"{page.name}:{line + 1}", "exec")
            try:
                exec(code, namespace)
            except Exception as exc:  # name the page and the block's first line
                raise AssertionError(f"{page.name}, block at line {line}: {exc!r}") from exc
    finally:
        plt.close("all")
