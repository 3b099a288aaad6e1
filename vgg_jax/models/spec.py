"""Table 1 of the paper as data: each configuration's blocks of (channels, kernel)
convolutions, and the one walk over them that names every layer as the paper does
(``conv3_2`` is the second convolution of block 3, ``bn3_2`` its BatchNorm, ``pool3`` the
pooling after block 3)."""

from __future__ import annotations

import dataclasses
from typing import Optional


@dataclasses.dataclass(frozen=True)
class Layer:
    """One step of the feature extractor: a convolution (``kind`` "conv", with its paper
    ``channels`` and ``kernel`` side), the LRN of A-LRN ("lrn") or a 2x2 max-pool ("pool")."""

    kind: str
    name: str
    block: int
    channels: int = 0
    kernel: int = 0

    @property
    def norm(self) -> Optional[str]:
        """The name of a convolution's BatchNorm in the BN variants (``bn3_2``)."""
        return self.name.replace("conv", "bn", 1) if self.kind == "conv" else None


@dataclasses.dataclass(frozen=True)
class Spec:
    """One row of Table 1: per block, the (channels, kernel) of each convolution."""

    blocks: tuple[tuple[tuple[int, int], ...], ...]
    lrn: bool = False
    batch_norm: bool = False
    letter: str = ""

    def layers(self) -> list[Layer]:
        """The feature extractor in order: each block's convolutions, LRN after block 1 of
        A-LRN, then the block's 2x2 max-pool. Every walk over the net starts here (the
        model, its ONNX graph, weight conversion, receptive fields), so that the layer names
        are spelled in this one place."""
        out = []
        for b, block in enumerate(self.blocks, start=1):
            out += [Layer("conv", f"conv{b}_{i}", b, channels, kernel)
                    for i, (channels, kernel) in enumerate(block, start=1)]
            out += [Layer("lrn", "lrn1", b)] if self.lrn and b == 1 else []
            out.append(Layer("pool", f"pool{b}", b))
        return out

    def convs(self) -> list[Layer]:
        """The convolutions alone, in order."""
        return [layer for layer in self.layers() if layer.kind == "conv"]


def _block(channels: int, n3: int, n1: int = 0, kernel: int = 3) -> tuple[tuple[int, int], ...]:
    return ((channels, kernel),) * n3 + ((channels, 1),) * n1


_A = (_block(64, 1), _block(128, 1), _block(256, 2), _block(512, 2), _block(512, 2))
_B = (_block(64, 2), _block(128, 2), _block(256, 2), _block(512, 2), _block(512, 2))
_C = (_block(64, 2), _block(128, 2), _block(256, 2, 1), _block(512, 2, 1), _block(512, 2, 1))
_D = (_block(64, 2), _block(128, 2), _block(256, 3), _block(512, 3), _block(512, 3))
_E = (_block(64, 2), _block(128, 2), _block(256, 4), _block(512, 4), _block(512, 4))
# Section 2.3's claim tested (section 4.1): each stack of 3x3 convolutions replaced by one
# convolution of the same receptive field, 5x5 for a pair and 7x7 for three.
_B5 = tuple(_block(c, 1, kernel=5) for c in (64, 128, 256, 512, 512))
_D7 = tuple(_block(c, 1, kernel=k) for c, k in ((64, 5), (128, 5), (256, 7), (512, 7), (512, 7)))
# The control: B-5x5 with a 1x1 convolution + ReLU after each 5x5, so that it has B's
# number of non-linearities (and nearly B-5x5's weights).
_B5R = tuple(_block(c, 1, 1, kernel=5) for c in (64, 128, 256, 512, 512))

SPECS: dict[str, Spec] = {
    "vgg11": Spec(_A, letter="A"),
    "vgg11_lrn": Spec(_A, lrn=True, letter="A-LRN"),
    "vgg13": Spec(_B, letter="B"),
    "vgg16_conv1": Spec(_C, letter="C"),
    "vgg16": Spec(_D, letter="D"),
    "vgg19": Spec(_E, letter="E"),
    "vgg11_bn": Spec(_A, batch_norm=True),
    "vgg13_bn": Spec(_B, batch_norm=True),
    "vgg16_bn": Spec(_D, batch_norm=True),
    "vgg19_bn": Spec(_E, batch_norm=True),
    "vgg13_5x5": Spec(_B5, letter="B-5x5"),
    "vgg13_5x5_bn": Spec(_B5, batch_norm=True),
    "vgg13_5x5_relu": Spec(_B5R, letter="B-5x5-ReLU"),
    "vgg13_5x5_relu_bn": Spec(_B5R, batch_norm=True),
    "vgg16_7x7": Spec(_D7, letter="D-7x7"),
    "vgg16_7x7_bn": Spec(_D7, batch_norm=True),
}
ALIASES = {spec.letter: name for name, spec in SPECS.items() if spec.letter}
_ALIASES_UPPER = {letter.upper(): name for letter, name in ALIASES.items()}
# The nets of the paper's Table 1 (and their BatchNorm variants), which released weights
# exist for; the large-kernel twins are this codebase's.
TABLE1 = ("vgg11", "vgg11_lrn", "vgg13", "vgg16_conv1", "vgg16", "vgg19",
          "vgg11_bn", "vgg13_bn", "vgg16_bn", "vgg19_bn")


def canonical_name(arch: str) -> str:
    """Maps an architecture name or letter (``"D"``, ``"A-LRN"``, ``"B-5x5"``) to its name."""
    if arch in SPECS:
        return arch
    if arch.upper() in _ALIASES_UPPER:
        return _ALIASES_UPPER[arch.upper()]
    valid = ", ".join(list(SPECS) + list(ALIASES))
    raise ValueError(f"Unknown architecture {arch!r}; valid names: {valid}.")


def get_spec(arch: str) -> Spec:
    """The Table 1 specification of ``arch`` (a name or a letter)."""
    return SPECS[canonical_name(arch)]


def layer_names(arch: str) -> list[str]:
    """Convolution names of ``arch`` in order: ``conv1_1``, ``conv1_2``, ..."""
    return [layer.name for layer in get_spec(arch).convs()]


def feature_names(arch: str, include_top: bool = True) -> list[str]:
    """Names of the recorded activations in network order: conv1_1, ..., pool1, ..., fc7."""
    names = [layer.name for layer in get_spec(arch).layers()]
    return names + (["fc6", "fc7"] if include_top else [])
