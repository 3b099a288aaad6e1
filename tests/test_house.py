"""The house plan: folders by concern on floors that import only downwards, no import
circle, a model that knows nothing of how the CPU computes it, and routing decided when a
program is lowered, so that a step traced on a CPU host holds no CPU kernels when lowered
for a GPU or TPU."""

import ast
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conftest import ROOT

PACKAGE = os.path.join(ROOT, "vgg_jax")
# Each folder's floor: a module imports only from its own floor and the ones below. The
# modules at the top of the package are the commands (and their two helpers, floor 0).
FLOORS = {"errors": 0, "cli": 0, "models": 1, "parallel": 1, "compute": 2, "data": 2,
          "store": 3, "training": 4, "inference": 5}
COMMAND_FLOOR = 6


def _modules() -> dict[str, str]:
    """{dotted name: path} of every module of the package."""
    found = {}
    for folder, _, files in os.walk(PACKAGE):
        for name in files:
            if name.endswith(".py"):
                path = os.path.join(folder, name)
                dotted = os.path.relpath(path, ROOT)[:-3].replace(os.sep, ".")
                found[dotted.removesuffix(".__init__")] = path
    return found


def _imports(path: str, module: str, modules: dict) -> set[str]:
    """The package's modules that ``module`` imports, at any depth (in functions too)."""
    package = module if path.endswith("__init__.py") else module.rsplit(".", 1)[0]
    out = set()
    for node in ast.walk(ast.parse(open(path).read())):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")[:len(package.split(".")) - node.level + 1]
                base = ".".join(parts + ([node.module] if node.module else []))
            out |= {f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base
                    for a in node.names}
    return {name for name in out if name in modules and name != module}


def _graph() -> dict[str, set[str]]:
    modules = _modules()
    return {m: _imports(path, m, modules) for m, path in modules.items()}


def _floor(module: str) -> int:
    parts = module.split(".")
    if len(parts) == 1:
        return -1  # the package itself: it only sets up the process (compute.process)
    return FLOORS.get(parts[1], COMMAND_FLOOR)


def test_the_package_has_no_import_circle():
    graph, state, path = _graph(), {}, []

    def visit(module):
        state[module] = "open"
        path.append(module)
        for target in sorted(graph[module]):
            if state.get(target) == "open":
                raise AssertionError("import circle: " + " -> ".join(
                    path[path.index(target):] + [target]))
            if target not in state:
                visit(target)
        path.pop()
        state[module] = "done"

    for module in sorted(graph):
        if module not in state:
            visit(module)
    assert len(graph) > 50


def test_each_folder_imports_only_from_its_floor_and_below():
    graph = _graph()
    upward = [f"{m} imports {t}" for m, targets in graph.items() if m != "vgg_jax"
              for t in targets if _floor(t) > max(_floor(m), 0) and t != "vgg_jax"]
    assert not upward, upward
    assert graph["vgg_jax"] == {"vgg_jax.compute.process"} and not graph["vgg_jax.compute.process"]


def test_the_model_knows_nothing_of_the_compute_wing():
    """The model and its layers import nothing from ``compute`` and speak none of its words."""
    graph = _graph()
    for module in [m for m in graph if m.startswith("vgg_jax.models")]:
        assert not {t for t in graph[module] if t.startswith("vgg_jax.compute")}, module
        path = _modules()[module]
        words = open(path).read().lower()
        for word in ("onednn", "winograd", "taps", "algorithm", "xla:cpu", "default_backend"):
            assert word not in words, f"{module} mentions {word!r}"


def _trainer_step(dtype: str = "bfloat16", size: int = 224, arch: str = "vgg16"):
    """The trainer's own train step (``steps.step_functions``, as ``pmap_steps`` maps it) on
    one device as ``jax.jit(jax.shard_map(...))``, with its state and a batch of 2 as shape
    structures (nothing allocated)."""
    from jax.sharding import PartitionSpec as P
    from vgg_jax.store.record import ModelRecord, module_options
    from vgg_jax.training import optim, schema, steps
    config = schema.defaults()
    config.update(arch=arch, dtype=dtype, image_size=size, batch_size=2, num_classes=1000)
    model = ModelRecord.from_config(config).build(**module_options(config),
                                                  bn_axis_name=steps.AXIS)
    schedule = optim.create_schedule(config, 100, 1000)
    tx = optim.create_optimizer(config, schedule, frozenset())
    train, _ = steps.step_functions(model, tx, schedule, config.mean_rgb, config.std_rgb)
    mesh = jax.make_mesh((1,), (steps.AXIS,), devices=jax.devices()[:1])
    step = jax.jit(jax.shard_map(lambda state, batch, rng: train(
        state, jax.tree.map(lambda x: x[0], batch), rng), mesh=mesh,
        in_specs=P(), out_specs=P(), check_vma=False),
        donate_argnums=(0,))
    batch = {"images": jax.ShapeDtypeStruct((1, 2, size, size, 3), jnp.uint8),
             "labels": jax.ShapeDtypeStruct((1, 2), jnp.int32)}
    rng = jax.eval_shape(lambda: jax.random.key(0))
    return step, steps.abstract_state(model, tx, size), batch, rng


@pytest.mark.parametrize("platform", ["cuda", "tpu"])
def test_the_trainers_step_lowered_for_accelerators_holds_no_cpu_kernels(platform):
    """The VGG-16 bfloat16 224 train step, traced here on a CPU host and lowered for a GPU
    or TPU: no custom calls, every convolution bfloat16 x bfloat16, and ``jax.export``
    accepts it. Lowered for the CPU, the same trace holds oneDNN's kernels (where built)."""
    from vgg_jax.compute import onednn
    step, state, batch, rng = _trainer_step()
    traced = step.trace(state, batch, rng)
    text = traced.lower(lowering_platforms=(platform,)).as_text()
    assert "custom_call" not in text
    convolutions = [line for line in text.splitlines() if "stablehlo.convolution" in line]
    assert len(convolutions) == 13 * 3 - 1  # forward, kernel and input gradients (not the images')
    operands = [line.rsplit(" : (", 1)[1].split(") -> ")[0] for line in convolutions]
    assert all(o.count("bf16>") == 2 for o in operands), operands[0]
    exported = jax.export.export(step, platforms=(platform,))(state, batch, rng)
    assert exported.platforms == (platform,)
    if onednn.available():
        assert "vgg_onednn" in traced.lower(lowering_platforms=("cpu",)).as_text()


def test_an_old_checkpoint_restores_and_predicts_identically():
    """A run written before the house plan (``tests/data/run_before_house_plan``: 3 steps of
    a narrow VGG-11-BN on vgg_shapes) restores with its parameter names and predicts what it
    predicted then (posteriors saved by the old code on the same images)."""
    from vgg_jax.inference import evaluate
    run = os.path.join(ROOT, "tests", "data", "run_before_house_plan")
    net = evaluate.Net.load(run)
    assert net.record.arch == "vgg11_bn"
    assert {"conv1_1", "bn1_1", "conv5_2", "bn5_2", "fc6", "fc7", "fc8"} <= set(
        net.variables["params"])
    images = np.random.default_rng(0).uniform(0, 255, (4, 32, 32, 3)).astype(np.float32)
    want = np.load(os.path.join(run, "posteriors.npy"))
    np.testing.assert_allclose(np.asarray(net.posteriors(images)), want, rtol=1e-5, atol=1e-6)


def test_every_module_imports():
    """Each module of the package imports on its own (the fast tier touches all of them)."""
    import importlib
    for module in sorted(_modules()):
        if not module.endswith("__main__"):
            importlib.import_module(module)
