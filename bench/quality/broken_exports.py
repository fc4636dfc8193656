"""Deliberately broken ONNX files: what the quality floors must catch.

Each function writes a copy of a good fp32 image tower export with one fault of a kind
met in practice when converting weights between frameworks or quantising them:

- `flip_kernels`: every convolution kernel mirrored in both spatial axes (convolution
  read as correlation: Theano-era weights, or an exporter that flips kernels);
- `transpose_kernels`: every square kernel transposed in its spatial axes (height and
  width swapped when moving between HWIO and OIHW layouts);
- `miscalibrated_int8`: static int8 whose activation ranges were measured on blank
  images (a calibration reader that feeds the wrong array), so real activations clip.

Used by tests/quality and `python -m bench.quality.mutations`; never by the server.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np


def _rewrite_conv_kernels(source: Path, target: Path, change: str) -> None:
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(source))
    kernels = {node.input[1] for node in model.graph.node if node.op_type == "Conv"}
    for index, tensor in enumerate(model.graph.initializer):
        if tensor.name not in kernels:
            continue
        kernel = numpy_helper.to_array(tensor)
        if kernel.shape[-1] == 1 and kernel.shape[-2] == 1:
            continue  # 1x1: nothing spatial to get wrong
        changed = kernel[..., ::-1, ::-1] if change == "flip" else np.swapaxes(kernel, -1, -2)
        model.graph.initializer[index].CopyFrom(numpy_helper.from_array(np.ascontiguousarray(changed), tensor.name))
    onnx.save(model, str(target))


def flip_kernels(source: Path, target: Path) -> None:
    _rewrite_conv_kernels(source, target, "flip")


def transpose_kernels(source: Path, target: Path) -> None:
    _rewrite_conv_kernels(source, target, "transpose")


def miscalibrated_int8(source: Path, target: Path, image_size: int) -> None:
    """Static int8 calibrated on all-zero pixels: every activation range is what a
    blank image reaches, far narrower than a photograph's."""
    from embed_server.runtimes import static_int8

    static_int8.quantize_image_tower(source, target, np.zeros((8, 3, image_size, image_size), np.float32))


def cut_one_block_early(source: Path, target: Path) -> None:
    """The outputs read from the block before the last (fire8 instead of fire9 in
    SqueezeNet): a network cut at the wrong node name. Same shapes, other features."""
    import onnx

    model = onnx.load(str(source))
    # A fire block's Concat joins two Relu outputs (other Concats build shapes).
    relu_outputs = {node.output[0] for node in model.graph.node if node.op_type == "Relu"}
    concats = [node for node in model.graph.node
               if node.op_type == "Concat" and node.input and all(name in relu_outputs for name in node.input)]
    if len(concats) < 2:
        raise ValueError(f"{source} has fewer than two Concat blocks to cut between")
    last, before = concats[-1].output[0], concats[-2].output[0]
    for node in model.graph.node:
        for position, name in enumerate(node.input):
            if name == last:
                node.input[position] = before
    # The last block now feeds nothing: drop its nodes so the file stays a valid graph.
    used = {name for node in model.graph.node for name in node.input} | {o.name for o in model.graph.output}
    while True:
        dead = [node for node in model.graph.node if not any(out in used for out in node.output)]
        if not dead:
            break
        for node in dead:
            model.graph.node.remove(node)
        used = {name for node in model.graph.node for name in node.input} | {o.name for o in model.graph.output}
    onnx.save(model, str(target))


def perturb_weights(source: Path, target: Path, relative: float = 1.0, seed: int = 0) -> None:
    """Gaussian noise of `relative` times each weight tensor's own standard deviation
    added to every initialiser: weights damaged in conversion or storage."""
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(source))
    rng = np.random.default_rng(seed)
    for index, tensor in enumerate(model.graph.initializer):
        values = numpy_helper.to_array(tensor)
        if values.dtype != np.float32 or values.size < 2:
            continue
        noisy = values + rng.normal(0.0, relative * float(values.std()), values.shape).astype(np.float32)
        model.graph.initializer[index].CopyFrom(numpy_helper.from_array(noisy, tensor.name))
    onnx.save(model, str(target))
