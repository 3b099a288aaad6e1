"""The VGG family of Table 1 as Flax modules: the spec table, the network, its layers and
receptive fields. ``python -m vgg_jax.models --arch vgg16`` prints a per-layer table."""

from vgg_jax.models.vgg import (ALIASES, SPECS, TABLE1, VGG, Spec, abstract_variables,  # noqa: F401
                                canonical_name, count_params, create_model,
                                extract_features, fc6_window, feature_names, format_summary,
                                get_spec, layer_names, summary)
from vgg_jax.models.layers import local_response_norm, max_pool_2x2  # noqa: F401
