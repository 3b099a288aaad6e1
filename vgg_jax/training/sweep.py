"""Ablation sweeps as ordinary training runs: load a study file (``load_sweep``), name and
configure each run, ``execute`` them resumably, and collect the results (``summarize``,
``write_results``, ``plot``). The command is ``python -m vgg_jax.sweep``
(``vgg_jax/sweep.py``, where the study files are described)."""

from __future__ import annotations

import csv
import importlib.util
import json
import math
import os
import time
from typing import Optional, Sequence

import ml_collections
from absl import logging

from vgg_jax.errors import NonFiniteError, UserError
from vgg_jax.training import schema

RESULT_FILE = "result.json"
FIELDS = ("label", "run", "seed", "status", "eval_top1", "eval_top5", "eval_loss",
          "eval_ema_top1", "step", "minutes", "overrides")


def load_sweep(config_path: str) -> tuple[list[dict], str]:
    """The study's ``get_sweep()`` (run dicts: a ``label`` and config overrides) and title.

    The title is the first line of the study file's docstring.
    """
    spec = importlib.util.spec_from_file_location("_vgg_jax_study", config_path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    if not hasattr(module, "get_sweep"):
        raise UserError(f"{config_path} has no get_sweep(): a study file defines get_config() "
                        "and get_sweep() (see configs/ablations/).")
    runs = list(module.get_sweep())
    for run in runs:
        if "label" not in run:
            raise UserError(f"Every run of {config_path}'s get_sweep() needs a 'label'; "
                            f"got {run}.")
    title = (module.__doc__ or os.path.basename(config_path)).strip().splitlines()[0]
    return runs, title


META_KEYS = ("label", "name")  # run dict keys that are not config overrides


def run_name(run: dict) -> str:
    """The run's folder name: its ``name`` (else its label), ``-seed<k>`` when it sets one."""
    name = "".join(c if c.isalnum() or c in "-_." else "_"
                   for c in str(run.get("name", run["label"])))
    return f"{name}-seed{run['seed']}" if "seed" in run else name


def run_config(base: ml_collections.ConfigDict, run: dict,
               workdir: str = "") -> ml_collections.ConfigDict:
    """``base`` with the run's overrides; an unknown field is a one-line error.

    ``{workdir}`` in a string override becomes the sweep's folder, so a run can start from
    an earlier run's checkpoints (``"init_from": "{workdir}/A-seed0"``).
    """
    config = base.copy_and_resolve_references()
    for key, value in run.items():
        if key in META_KEYS:
            continue
        if isinstance(value, str):
            value = value.replace("{workdir}", workdir)
        if key not in config:
            raise UserError(f"Sweep run {run['label']!r} sets unknown config field {key!r}: "
                            "the fields are listed in configs/default.py.")
        config[key] = tuple(value) if isinstance(value, list) else value
    return config


def check(base: ml_collections.ConfigDict, runs: Sequence[dict]) -> None:
    """Validates every run's overrides, values (``vgg_jax.training.schema``) and names before
    anything trains."""
    names = [run_name(r) for r in runs]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise UserError(f"Sweep runs share the folder names {duplicates}: give them distinct "
                        "labels or seeds.")
    schema.check(base)
    for run in runs:
        try:
            schema.check(run_config(base, run))
        except schema.ConfigError as e:
            raise schema.ConfigError([f"sweep run {run['label']!r}: {p}"
                                      for p in e.problems]) from None


def execute(base: ml_collections.ConfigDict, runs: Sequence[dict], workdir: str) -> list[dict]:
    """Trains every unfinished run in order and returns all runs' result rows."""
    from vgg_jax.training import train  # after flag parsing: JAX starts here

    check(base, runs)
    rows = []
    for i, run in enumerate(runs):
        name = run_name(run)
        rundir = os.path.join(workdir, name)
        done = os.path.join(rundir, RESULT_FILE)
        if os.path.exists(done):
            rows.append(_read_result(done))
            logging.info("Sweep run %d/%d %s: finished before, skipped.", i + 1, len(runs), name)
            continue
        overrides = {k: v for k, v in run.items() if k not in META_KEYS}
        logging.info("Sweep run %d/%d %s: %s", i + 1, len(runs), name, overrides)
        os.makedirs(rundir, exist_ok=True)
        elapsed_file = os.path.join(rundir, "elapsed_s")
        before = float(open(elapsed_file).read()) if os.path.exists(elapsed_file) else 0.0
        start = time.time()
        row = {"label": run["label"], "run": name, "seed": run.get("seed", ""),
               "overrides": json.dumps(overrides)}
        try:
            metrics = train.train_and_evaluate(run_config(base, run, workdir), rundir)
            row.update(status="done", **{k: metrics[k] for k in
                                         ("eval_top1", "eval_top5", "eval_loss", "step")})
            if "eval_ema_top1" in metrics:
                row["eval_ema_top1"] = metrics["eval_ema_top1"]
        except NonFiniteError as e:
            logging.warning("Sweep run %s diverged: %s", name, e)
            row.update(status="diverged", eval_top1=math.nan, eval_top5=math.nan,
                       eval_loss=math.nan, step="")
        finally:
            with open(elapsed_file, "w") as f:
                f.write(str(before + time.time() - start))
        row["minutes"] = round((before + time.time() - start) / 60, 2)
        with open(done, "w") as f:
            json.dump(row, f, indent=1)
        rows.append(row)
    return rows


def _read_result(path: str) -> dict:
    with open(path) as f:
        return json.load(f)


def finished_rows(runs: Sequence[dict], workdir: str) -> list[dict]:
    """Result rows of the sweep's finished runs in ``workdir``, in sweep order."""
    rows = []
    for run in runs:
        path = os.path.join(workdir, run_name(run), RESULT_FILE)
        if os.path.exists(path):
            rows.append(_read_result(path))
    return rows


def _mean_std(values: list[float]) -> tuple[float, float]:
    finite = [v for v in values if not math.isnan(v)]
    if not finite:
        return math.nan, math.nan
    mean = sum(finite) / len(finite)
    var = sum((v - mean) ** 2 for v in finite) / max(1, len(finite) - 1)
    return mean, math.sqrt(var)


def summarize(rows: Sequence[dict]) -> list[dict]:
    """Per label, in sweep order: seeds, top-1/top-5 error (%) mean and std, minutes."""
    groups: dict[str, list[dict]] = {}
    for r in rows:
        groups.setdefault(r["label"], []).append(r)
    out = []
    for label, group in groups.items():
        top1 = _mean_std([100 * (1 - float(r["eval_top1"])) for r in group])
        top5 = _mean_std([100 * (1 - float(r["eval_top5"])) for r in group])
        ema = _mean_std([100 * (1 - float(r["eval_ema_top1"])) for r in group
                         if r.get("eval_ema_top1", "") != ""])
        overrides = json.loads(group[0]["overrides"])
        overrides.pop("seed", None)
        out.append({"label": label, "runs": len(group),
                    "diverged": sum(r["status"] == "diverged" for r in group),
                    "top1_err": top1[0], "top1_std": top1[1], "top5_err": top5[0],
                    "top5_std": top5[1], "ema_top1_err": ema[0], "ema_top1_std": ema[1],
                    "minutes": sum(float(r["minutes"]) for r in group),
                    "overrides": overrides})
    return out


def write_results(rows: Sequence[dict], workdir: str, title: str = "") -> dict[str, str]:
    """Writes results.csv, results.md and results.png to ``workdir``; returns their paths."""
    paths = {ext: os.path.join(workdir, f"results.{ext}") for ext in ("csv", "md", "png")}
    with open(paths["csv"], "w", newline="") as f:
        writer = csv.DictWriter(f, FIELDS)
        writer.writeheader()
        writer.writerows({k: r.get(k, "") for k in FIELDS} for r in rows)
    summary = summarize(rows)

    def pm(mean, std, runs):
        return "diverged" if math.isnan(mean) else (
            f"{mean:.2f} ± {std:.2f}" if runs > 1 else f"{mean:.2f}")

    with_ema = any(not math.isnan(s["ema_top1_err"]) for s in summary)
    ema_head = (" EMA top-1 error % |", "---|") if with_ema else ("", "")
    lines = [f"# {title}\n" if title else "",
             f"| setting | overrides | runs | top-1 error % | top-5 error % |{ema_head[0]} "
             f"minutes |", f"|---|---|---|---|---|{ema_head[1]}---|"]
    for s in summary:
        overrides = ", ".join(f"{k}={v}" for k, v in s["overrides"].items())
        runs = f"{s['runs']}" + (f" ({s['diverged']} diverged)" if s["diverged"] else "")
        ema = ""
        if with_ema:
            ema = " – |" if math.isnan(s["ema_top1_err"]) else \
                f" {pm(s['ema_top1_err'], s['ema_top1_std'], s['runs'])} |"
        lines.append(f"| {s['label']} | {overrides} | {runs} | "
                     f"{pm(s['top1_err'], s['top1_std'], s['runs'])} | "
                     f"{pm(s['top5_err'], s['top5_std'], s['runs'])} |{ema} "
                     f"{s['minutes']:.1f} |")
    with open(paths["md"], "w") as f:
        f.write("\n".join(lines).lstrip("\n") + "\n")
    plot(summary, paths["png"], title, loss_curves(rows, workdir))
    return paths


def plot(summary: Sequence[dict], path: str, title: str = "",
         curves: Optional[Sequence[tuple[str, list[int], list[float]]]] = None) -> None:
    """Top-1 error per setting (seeds' spread as error bars) and, given ``curves`` ((label,
    steps, training losses) per run), the training loss of every run against the step."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    width = max(4, 1.1 * len(summary) + 1)
    fig, axes = plt.subplots(1, 2 if curves else 1, squeeze=False,
                             figsize=(width + (5.5 if curves else 0), 3.5))
    ax = axes[0, 0]
    x = range(len(summary))
    means = [s["top1_err"] for s in summary]
    stds = [0 if math.isnan(s["top1_std"]) else s["top1_std"] for s in summary]
    ax.errorbar(x, means, yerr=stds, fmt="o", capsize=4)
    ax.set_xticks(list(x), [s["label"] for s in summary], rotation=20, ha="right", fontsize=8)
    ax.set_ylabel("test top-1 error (%)")
    ax.grid(alpha=0.3)
    if curves:
        ax = axes[0, 1]
        colours = {s["label"]: f"C{i % 10}" for i, s in enumerate(summary)}
        in_legend = set()  # one legend entry per setting, not per seed
        for label, steps, losses in curves:
            ax.plot(steps, losses, color=colours.get(label, "k"), lw=1, alpha=0.8,
                    label=None if label in in_legend else label)
            in_legend.add(label)
        ax.set_xlabel("step")
        ax.set_ylabel("training loss")
        ax.legend(fontsize=7)
        ax.grid(alpha=0.3)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def loss_curves(rows: Sequence[dict], workdir: str) -> list[tuple[str, list[int], list[float]]]:
    """(label, steps, training losses) of every run in ``rows`` that logged any."""
    from vgg_jax.training import events

    out = []
    for r in rows:
        losses = events.read_scalars(os.path.join(workdir, r["run"])).get("train_loss")
        if losses:
            out.append((r["label"], *events.curve(losses)))
    return out
