"""Re-runs the notebooks in place, top to bottom in their full mode, so that the committed
notebooks show their outputs and figures (the tests run copies in small mode instead).

    python notebooks/execute.py [NAME ...]   # default: every notebook in this folder

Run it from a checkout with the test extra installed (``pip install -e ".[test]"``); it
prints each notebook's running time. Papermill's bookkeeping (per-cell timings) is left out
of the saved files, so that a re-run only changes what the cells print and draw.
"""

from __future__ import annotations

import glob
import json
import os
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)


def strip_bookkeeping(path: str) -> None:
    """Removes papermill's metadata and the kernel's timestamps from a saved notebook."""
    with open(path) as f:
        nb = json.load(f)
    nb["metadata"].pop("papermill", None)
    for cell in nb["cells"]:
        for key in ("papermill", "execution"):
            cell.get("metadata", {}).pop(key, None)
    with open(path, "w") as f:
        json.dump(nb, f, indent=1, ensure_ascii=False)
        f.write("\n")


def execute(name: str) -> float:
    """Runs notebooks/<name>.ipynb in place in its full mode; returns the seconds it took."""
    import papermill
    path = os.path.join(HERE, f"{name}.ipynb")
    start = time.time()
    papermill.execute_notebook(path, path, cwd=ROOT, kernel_name="python3",
                               progress_bar=False)
    strip_bookkeeping(path)
    return time.time() - start


def main(names: list[str]) -> int:
    names = names or sorted(os.path.basename(p)[:-6] for p in glob.glob(os.path.join(HERE, "*.ipynb")))
    missing = [n for n in names if not os.path.exists(os.path.join(HERE, f"{n}.ipynb"))]
    if missing:
        print(f"error: no notebook {', '.join(missing)} in notebooks/.", file=sys.stderr)
        return 2
    for name in names:
        print(f"{name}: {execute(name):.0f} s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
