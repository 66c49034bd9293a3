"""The newcomer's path, pasted line by line: the README quick start's run, every command
of getting-started's command-line block and the first commands of a paper page, run in a
fresh copy of runs/ with the installed package (the venv and pip lines need the network,
which the test suite does not have; CI installs from a clean clone)."""
import os
import re
import shlex
import shutil
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def bash_lines(page, block=None, first=None):
    """The `particleflow ...` command lines of a page's ```bash blocks (comments dropped)."""
    blocks = re.findall(r"```bash\n(.*?)```", open(os.path.join(ROOT, page)).read(), flags=re.S)
    chosen = blocks if block is None else [blocks[block]]
    lines = []
    for b in chosen:
        for line in b.splitlines():
            for part in line.split("&&"):
                cmd = part.split("#")[0].strip()
                if cmd.startswith((".venv/bin/particleflow ", "particleflow ")):
                    lines.append(cmd)
    return lines if first is None else lines[:first]


@pytest.mark.slow
def test_the_newcomer_path_runs_as_written(tmp_path):
    shutil.copytree(os.path.join(ROOT, "runs"), tmp_path / "runs", ignore=shutil.ignore_patterns("out"))
    commands = [c for c in bash_lines("README.md", block=0) if " run " in c] + \
        bash_lines("docs/getting-started.md") + bash_lines("docs/paper-000-mrmap.md", first=2)
    assert len(commands) >= 6, commands
    env = dict(os.environ, MPLBACKEND="Agg")
    for cmd in commands:
        argv = shlex.split(cmd)
        r = subprocess.run([sys.executable, "-m", "particleflow.cli"] + argv[1:], cwd=tmp_path, env=env,
                           capture_output=True, text=True, timeout=600)
        assert r.returncode == 0, f"{cmd}\n{r.stdout}\n{r.stderr}"
    assert (tmp_path / "runs" / "out" / "demo.h5").exists()
