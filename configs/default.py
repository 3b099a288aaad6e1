"""The paper's training recipe (section 3.1); every other config starts from this one.

Any field can be overridden on the command line: ``--config.batch_size=128``. Durations are
given in epochs, or in steps where ``num_train_steps`` > 0. The fields, their defaults and
what each accepts are listed once, in ``vgg_jax/training/schema.py`` (``FIELDS``);
``python -c "from vgg_jax.training import schema; print(schema.describe())"`` prints them.
"""

import ml_collections

from vgg_jax.training import schema


def get_config() -> ml_collections.ConfigDict:
    return schema.defaults()
