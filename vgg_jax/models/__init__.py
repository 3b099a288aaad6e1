"""The VGG family of Table 1 as Flax modules: the spec table (``spec``), the network
(``vgg``), its layers (``layers``) and receptive fields (``receptive``).

``python -m vgg_jax.models --arch vgg16`` prints a per-layer table.
"""

from vgg_jax.models.layers import Conv, local_response_norm, max_pool_2x2  # noqa: F401
from vgg_jax.models.spec import (ALIASES, SPECS, TABLE1, Layer, Spec,  # noqa: F401
                                 canonical_name, feature_names, get_spec, layer_names)
from vgg_jax.models.vgg import (VGG, abstract_variables, count_params,  # noqa: F401
                                create_model, extract_features, fc6_window, format_summary,
                                summary)
