"""One process of a multi-process test run (see test_distributed.py).

    python distributed_worker.py train|evaluate CONFIG_JSON WORKDIR OUT_NPZ

Joins the run through ``vgg_jax.parallel.distributed`` (the config holds the coordinator), then trains
(``train_and_evaluate``) or evaluates the workdir's checkpoint, and writes what it ended with
(final parameters as this process holds them, or the evaluation rows) to OUT_NPZ. Stopped
by SIGTERM (``Preempted``), it writes the step it stopped at and exits with 75.
"""

import json
import sys

import vgg_jax  # noqa: F401
import jax
import ml_collections
import numpy as np

from vgg_jax import cli
from vgg_jax.parallel import distributed
from vgg_jax.inference import evaluate
from vgg_jax.training import train
from vgg_jax.errors import PREEMPTED_EXIT_CODE, Preempted


def main(mode: str, config_path: str, workdir: str, out: str) -> None:
    with open(config_path) as f:
        config = ml_collections.ConfigDict(json.load(f))
    cli.setup_logging()  # the log says when training starts (test_distributed waits for it)
    distributed.initialize(config)
    result = {"process_index": jax.process_index(), "process_count": jax.process_count(),
              "devices": jax.device_count()}
    if mode == "train":
        try:
            metrics, state = train.train_and_evaluate(config, workdir, return_state=True)
        except Preempted as e:
            np.savez(out, preempted_step=e.step, **result)
            sys.exit(PREEMPTED_EXIT_CODE)
        leaves = jax.tree_util.tree_leaves_with_path(jax.device_get(state.params))
        result.update({f"param{jax.tree_util.keystr(p)}": np.asarray(v) for p, v in leaves})
        result.update({f"metric_{k}": v for k, v in metrics.items()})
    else:
        rows = evaluate.evaluate(config, [workdir], scales=[36, 44],
                                 protocols=["single", "dense"], batch_size=4)
        for row in rows:
            result.update({f"{row['protocol']}_{k}": row[k]
                           for k in ("top1_error", "top5_error", "images")})
    np.savez(out, **result)


if __name__ == "__main__":
    main(*sys.argv[1:])
