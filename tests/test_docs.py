"""The documentation runs: every ```python block of README.md and docs/*.md is executed
(the blocks of one page in order, in one namespace, from the repository root), and the
configuration reference is the one the schema declarations generate."""
import glob
import os
import re
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PAGES = [os.path.join(ROOT, "README.md")] + sorted(glob.glob(os.path.join(ROOT, "docs", "*.md")))


def python_blocks(path):
    return re.findall(r"```python\n(.*?)```", open(path).read(), flags=re.S)


SLOW_PAGES = ("paper-002-deen.md", "paper-004-short-run.md")     # trained networks: the full suite only


@pytest.mark.parametrize("page", [pytest.param(p, marks=pytest.mark.slow) if os.path.basename(p) in SLOW_PAGES else p
                                  for p in PAGES if python_blocks(p)], ids=os.path.basename)
def test_python_examples_run(page):
    code = "\n".join(python_blocks(page))
    r = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, f"{os.path.basename(page)}:\n{r.stderr[-3000:]}"


def test_every_page_is_linked_from_the_readme():
    readme = open(os.path.join(ROOT, "README.md")).read()
    for page in glob.glob(os.path.join(ROOT, "docs", "*.md")):
        assert f"docs/{os.path.basename(page)}" in readme, os.path.basename(page)


def test_config_reference_is_current():
    from particleflow.experiments.reference import markdown
    with open(os.path.join(ROOT, "docs", "configs.md")) as f:
        assert f.read() == markdown(), "regenerate: python -m particleflow.experiments.reference > docs/configs.md"


def test_pages_point_at_nothing_outside_the_repository():
    """Every relative link (from its page) and every `../` path a page names (from the
    repository root, where commands run) stays inside the clone."""
    outside = []
    for page in PAGES:
        text = open(page).read()
        targets = [(os.path.dirname(page), t) for t in re.findall(r"\]\(([^)#\s]+)", text)] + \
                  [(ROOT, t) for t in re.findall(r"`(\.\./[^`\s]+)`", text)]
        for base, t in targets:
            if re.match(r"[a-z]+://", t):
                continue
            path = os.path.normpath(os.path.join(base, t))
            if not path.startswith(ROOT + os.sep):
                outside.append(f"{os.path.relpath(page, ROOT)}: {t}")
    assert not outside, outside
