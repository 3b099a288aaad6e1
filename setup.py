"""vgg_jax's build: setup.cfg holds the metadata; this adds the oneDNN kernels' compile."""

import importlib.util
import os

from setuptools import setup
from setuptools.command.build_py import build_py

HERE = os.path.dirname(os.path.abspath(__file__))


class BuildWithKernels(build_py):
    """build_py that also compiles vgg_jax's oneDNN CPU kernels (``vgg_jax/compute/kernels``).

    A failed compile only warns: vgg_jax then compiles them on first use, or runs XLA's
    convolutions, so the install never fails for want of a compiler.
    """

    def run(self):
        super().run()
        if os.environ.get("VGG_JAX_NO_ONEDNN") == "1":
            return
        spec = importlib.util.spec_from_file_location(
            "vgg_jax_kernels_build", os.path.join(HERE, "vgg_jax", "compute", "kernels", "build.py"))
        kernels = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(kernels)
        out = (kernels.HERE if self.editable_mode
               else os.path.join(self.build_lib, "vgg_jax", "compute", "kernels"))
        try:
            name = kernels.library_name()
            for old in os.listdir(out):  # earlier sources' builds (an editable checkout)
                if old.startswith("onednn_ffi-") and old.endswith(".so") and old != name:
                    os.unlink(os.path.join(out, old))
            path = kernels.compile_library(os.path.join(out, name))
            print(f"vgg_jax: built oneDNN kernels {path}")
        except Exception as e:  # noqa: BLE001 -- any failure leaves the first-use build
            print(f"vgg_jax: oneDNN kernels not built at install ({e}); "
                  f"they will be compiled on first use, or XLA's convolutions run")


setup(cmdclass={"build_py": BuildWithKernels})
