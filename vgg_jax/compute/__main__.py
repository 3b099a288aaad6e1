"""``python -m vgg_jax.compute``: builds the CPU kernels and prints how VGG-16's layers run
on this machine (oneDNN's kernel per operation, and the algorithm each layer trains by), and
whether huge pages are on."""

import sys

import jax.numpy as jnp

from vgg_jax import cli
from vgg_jax.compute import conv, hugepages, onednn


def main() -> None:
    cli.setup_logging()
    try:
        print(f"built: {onednn.build()}")
    except onednn.BuildError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(1)
    for dtype in (jnp.float32, jnp.bfloat16):
        for (h, c, o) in ((224, 64, 64), (56, 256, 256), (14, 512, 512)):
            impl = ", ".join(
                f"{op} {onednn.implementation((8, h, h, c), (3, 3, c, o), dtype, op, True)}"
                for op in onednn.OPS)
            if not onednn.has_kernels(dtype):
                impl = "no kernels on this CPU: XLA's"
            route = conv.choose((8, h, h, c), (3, 3, c, o), training=True, dtype=dtype)
            print(f"{jnp.dtype(dtype).name:>8} 8x{h}x{h}x{c} -> {o}: {impl}; trains by {route}")
    print(f"huge pages: {'on' if hugepages.active() else 'off'} (THP mode "
          f"{hugepages.thp_mode() or 'unknown'}; commands started from the shell restart "
          f"with them where they help)")


if __name__ == "__main__":
    main()
