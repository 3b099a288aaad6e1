"""Appends a row to a markdown results table in benchmarks/results/, writing its header once."""

import datetime
import os
import platform
import shlex
import sys

RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")


def append_row(name: str, title: str, intro: str, columns: list[str], values: list) -> str:
    """Writes ``results/<name>.md`` (title, intro, header) if absent, then one row.

    The row starts with the date and the exact command line and ends with the machine.
    """
    path = os.path.join(RESULTS, f"{name}.md")
    os.makedirs(RESULTS, exist_ok=True)
    columns = ["date", "command", *columns, "machine"]
    if not os.path.exists(path):
        with open(path, "w") as f:
            f.write(f"# {title}\n\n{intro}\n\n| {' | '.join(columns)} |\n"
                    f"|{'---|' * len(columns)}\n")
    command = " ".join(["python", os.path.relpath(sys.argv[0], os.path.dirname(RESULTS) + "/..")]
                       + [shlex.quote(a) for a in sys.argv[1:]])
    machine = f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores"
    row = f"| {datetime.date.today()} | `{command}` | " + \
        " | ".join(str(v) for v in values) + f" | {machine} |\n"
    with open(path, "a") as f:
        f.write(row)
    return row
