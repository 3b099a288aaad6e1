"""Ablation sweeps: a grid of config overrides, each an ordinary training run.

    python -m vgg_jax.sweep --config=configs/ablations/depth.py --workdir=DIR \
        [--config.num_epochs=2] [--only=A,B]

A study file defines ``get_config()`` (the training config every run starts from; override
it with ``--config.x=y`` as for ``vgg_jax.main``) and ``get_sweep()``: a list of runs, each a
dict of config overrides with a ``label`` naming the setting (runs that differ only by
``seed`` share a label and are averaged) and optionally a folder ``name`` (default: the
label). Every run trains in ``DIR/<name>[-seed<k>]`` like
``vgg_jax.main`` would, so an interrupted sweep resumes where it stopped when rerun:
finished runs (``result.json``) are skipped, unfinished ones resume from their checkpoints.
Results are collected into ``DIR/results.csv`` (one row per run), ``DIR/results.md``
(mean and standard deviation over seeds per setting) and ``DIR/results.png`` (error per
setting, and every run's training loss).

A run whose loss becomes NaN or infinite is recorded as diverged and the sweep goes on.
Exit status as ``vgg_jax.main``: 0, 2 after ``error:``, 75 when stopped by SIGTERM.
"""

from __future__ import annotations

if __name__ == "__main__":  # first, before anything heavy loads (vgg_jax.compute.hugepages)
    from vgg_jax.compute import hugepages
    hugepages.restart("vgg_jax.sweep")

from typing import Sequence

from absl import flags

import vgg_jax  # noqa: F401  (first: sets XLA and TensorFlow flags before they load)
from vgg_jax import cli
from vgg_jax.errors import UserError
from vgg_jax.training.sweep import (
    check,
    execute,
    finished_rows,
    load_sweep,
    run_name,
    write_results,
)

FLAGS = flags.FLAGS


def define_flags() -> None:
    from ml_collections import config_flags
    flags.DEFINE_string("workdir", None, "Directory of the sweep: one sub-folder per run.")
    flags.DEFINE_list("only", [], "Run only these labels (or run folder names); the results "
                      "still list every finished run.")
    config_flags.DEFINE_config_file("config", None, "Study file (configs/ablations/*.py).",
                                    lock_config=True)
    flags.mark_flags_as_required(["config", "workdir"])


def main(argv: Sequence[str]) -> None:
    from ml_collections import config_flags

    from vgg_jax.parallel import distributed

    cli.no_arguments(argv)
    base = cli.resolve_config(FLAGS.config)
    path = config_flags.get_config_filename(FLAGS["config"])
    all_runs, title = load_sweep(path)
    runs = all_runs
    if FLAGS.only:
        unknown = set(FLAGS.only) - {r["label"] for r in runs} - {run_name(r) for r in runs}
        if unknown:
            raise UserError(f"--only names {sorted(unknown)}, not in the sweep; its labels "
                            f"are {sorted({r['label'] for r in runs})}.")
        runs = [r for r in runs if r["label"] in FLAGS.only or run_name(r) in FLAGS.only]
    check(base, runs)
    distributed.initialize(base)
    execute(base, runs, FLAGS.workdir)
    paths = write_results(finished_rows(all_runs, FLAGS.workdir), FLAGS.workdir, title)
    print(open(paths["md"]).read())


if __name__ == "__main__":
    cli.run(main, define_flags)
