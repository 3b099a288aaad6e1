"""README.md is written for users: at most about 300 lines, and every Python snippet in it
runs as written (each in a fresh interpreter from the repository root, as a reader would
paste it; the data a snippet builds goes to a temporary TFDS directory)."""

import os
import re
import subprocess
import sys

import pytest

from conftest import ROOT

README = os.path.join(ROOT, "README.md")


def _snippets() -> list[str]:
    with open(README) as f:
        return re.findall(r"```python\n(.*?)```", f.read(), flags=re.S)


def test_readme_is_short():
    with open(README) as f:
        assert len(f.read().splitlines()) <= 300


def test_readme_has_python_snippets():
    assert len(_snippets()) >= 3


@pytest.mark.slow
@pytest.mark.parametrize("index", range(len(_snippets())))
def test_readme_snippet_runs(index, tmp_path):
    code = _snippets()[index]
    env = dict(os.environ, TFDS_DATA_DIR=str(tmp_path / "tfds"),
               PYTHONPATH=os.pathsep.join([ROOT, os.environ.get("PYTHONPATH", "")]))
    code = code.replace("/tmp/vgg_jax_readme_run", str(tmp_path / "run"))
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, f"snippet {index}:\n{code}\n{proc.stderr[-3000:]}"
