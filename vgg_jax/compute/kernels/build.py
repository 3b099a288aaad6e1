"""Compiles ``onednn_ffi.cc`` (oneDNN's calls) and ``winograd.cc`` (Winograd's tile
transforms) into the one shared library ``vgg_jax.compute.onednn`` loads.

Standard library only: ``setup.py`` runs it while pip installs vgg_jax (in pip's build
environment, where neither vgg_jax's dependencies nor vgg_jax itself can be imported), and
``vgg_jax.compute.onednn`` runs it on first use when the install could not (no compiler then, a
different jaxlib now, an edited source).
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import importlib.util
import os
import platform
import shutil
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
SOURCES = tuple(os.path.join(HERE, name) for name in ("onednn_ffi.cc", "winograd.cc"))


class BuildError(RuntimeError):
    """The kernels could not be compiled here (the message says what is missing)."""


def library_name() -> str:
    """The library's file name: one per source text and jaxlib version (whose FFI it uses)."""
    source = b""
    for path in SOURCES:
        with open(path, "rb") as f:
            source += f.read()
    version = importlib.metadata.version("jaxlib").encode()
    return f"onednn_ffi-{hashlib.sha256(source + version).hexdigest()[:16]}.so"


def jax_include_dir() -> str:
    """XLA's FFI headers, as ``jax.ffi.include_dir()`` gives them (without importing jax)."""
    spec = importlib.util.find_spec("jaxlib")
    if spec is None or not spec.origin:
        raise BuildError("jaxlib not installed (it provides XLA's FFI headers)")
    return os.path.join(os.path.dirname(spec.origin), "include")


def _installed(distribution: str, name: str, folder: str = "lib") -> str | None:
    """Where pip put a package's file ``folder/name`` (in whichever prefix: pip's build
    environment is not ``sys.prefix``)."""
    try:
        files = importlib.metadata.distribution(distribution).files or []
    except importlib.metadata.PackageNotFoundError:
        return None
    for f in files:
        if f.name == name:
            path = os.path.normpath(str(f.locate()))
            if os.path.basename(os.path.dirname(path)) == folder and os.path.exists(path):
                return path
    return None


def onednn_prefix() -> str:
    """The prefix whose include/ and lib/ hold oneDNN (pip's packages, else the system's)."""
    header = _installed("onednn-devel-cpu-gomp", "dnnl.hpp", "include")
    library = _installed("onednn-cpu-gomp", "libdnnl.so")
    if header and library:
        prefix = os.path.dirname(os.path.dirname(header))
        if os.path.dirname(os.path.dirname(library)) == prefix:
            return prefix
    for p in dict.fromkeys((sys.prefix, sys.base_prefix, "/usr/local", "/usr")):
        if (os.path.exists(os.path.join(p, "include", "dnnl.hpp"))
                and os.path.exists(os.path.join(p, "lib", "libdnnl.so"))):
            return p
    raise BuildError("oneDNN headers or library not found (pip install onednn-cpu-gomp "
                     "onednn-devel-cpu-gomp, which vgg_jax lists)")


def onednn_runtime() -> str | None:
    """oneDNN's shared library in this environment (a library built in pip's temporary build
    environment must be pointed at it: its run path is gone)."""
    return _installed("onednn-cpu-gomp", "libdnnl.so.3")


def compile_library(path: str) -> str:
    """Compiles the kernels into ``path`` (atomically: a reader never sees half a file)."""
    if platform.machine() not in ("x86_64", "AMD64"):
        raise BuildError(f"the kernels are for x86-64, not {platform.machine()}")
    compiler = shutil.which(os.environ.get("CXX") or "g++") or shutil.which("c++")
    if not compiler or (os.environ.get("CXX") and not shutil.which(os.environ["CXX"])):
        raise BuildError(f"no C++ compiler ({os.environ.get('CXX') or 'g++'} not found; "
                         f"install g++ or set $CXX)")
    include, prefix = jax_include_dir(), onednn_prefix()
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fd, partial = tempfile.mkstemp(suffix=".so", dir=os.path.dirname(os.path.abspath(path)))
    os.close(fd)
    lib = os.path.join(prefix, "lib")
    # -O3: GCC vectorises the transforms' channel loops only there; -fopenmp: they run on
    # all cores, in the OpenMP runtime oneDNN's threads use too (GNU's).
    command = [compiler, "-O3", "-std=c++17", "-shared", "-fPIC", "-fopenmp", "-w", *SOURCES,
               "-o", partial,
               f"-I{include}", f"-I{os.path.join(prefix, 'include')}", f"-L{lib}", "-ldnnl",
               f"-Wl,-rpath,{os.path.join(prefix, 'lib')}"]
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode != 0:
        os.unlink(partial)
        first = next((ln for ln in result.stderr.splitlines() if "error" in ln), result.stderr)
        raise BuildError(f"compiling the kernels failed: {first.strip()[:300]}")
    os.replace(partial, path)
    return path
