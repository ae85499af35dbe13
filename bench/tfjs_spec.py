"""Kiln's exported ONNX models as TensorFlow.js layer graphs, for the TF.js peer of the inference
benchmark (bench/infer/tfjs.mjs builds them with tfjs-layers): the same architecture and kiln's
trained weights, in TF.js's NHWC layout, so both engines compute the same function and their outputs
can be compared.

Only the operators kiln's benchmark models use are translated (Conv, BatchNormalization, Relu,
MaxPool, Add, GlobalAveragePool, Flatten, Gemm); anything else is an error, not an approximation.
Layout: Conv weights OIHW → HWIO, Gemm weights transposed to [in, out], and a Gemm after a Flatten
of a spatial map has its rows reordered from (c, h, w) to (h, w, c), NHWC's flatten order. A
PyTorch-style symmetric padding that TF's "same" would place differently (stride 2) becomes an
explicit zeroPadding2d, as a Keras user matching PyTorch would write it.
"""
from __future__ import annotations

import base64

import numpy as np
import onnx
from onnx import numpy_helper, shape_inference


def _attrs(node) -> dict:
    return {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}


def _b64(a: np.ndarray) -> dict:
    a = np.ascontiguousarray(a, dtype="<f4")
    return {"shape": list(a.shape), "data": base64.b64encode(a.tobytes()).decode()}


def spec(path) -> dict:
    model = shape_inference.infer_shapes(onnx.load(str(path)))
    g = model.graph
    init = {t.name: numpy_helper.to_array(t) for t in g.initializer}
    shapes = {v.name: [d.dim_value for d in v.type.tensor_type.shape.dim]
              for v in [*g.input, *g.value_info, *g.output]}
    (inp,) = [i for i in g.input if i.name not in init]
    in_shape = shapes[inp.name][1:]
    layers, flat_of = [], {}  # flat_of: Flatten output -> its input's NCHW shape
    for n in g.node:
        a, op = _attrs(n), n.op_type
        x = [i for i in n.input if i and i not in init]
        layer = {"op": op, "inputs": x, "output": n.output[0], "name": n.name or n.output[0]}
        if op == "Conv":
            w = init[n.input[1]]
            k, s = list(a.get("kernel_shape", w.shape[2:])), list(a.get("strides", [1, 1]))
            pads = list(a.get("pads", [0, 0, 0, 0]))
            if a.get("group", 1) != 1 or a.get("dilations", [1, 1]) != [1, 1] or pads[:2] != pads[2:]:
                raise ValueError(f"{path}: Conv {n.name}: only plain symmetric convolutions are translated")
            same = s == [1, 1] and all(p == (kk - 1) // 2 and kk % 2 for p, kk in zip(pads[:2], k))
            layer.update(filters=int(w.shape[0]), kernel=k, strides=s,
                         padding="same" if same else "valid", pad=[0, 0] if same else pads[:2],
                         weights=[_b64(w.transpose(2, 3, 1, 0))]
                         + ([_b64(init[n.input[2]])] if len(n.input) > 2 and n.input[2] else []))
        elif op == "BatchNormalization":
            layer.update(epsilon=float(a.get("epsilon", 1e-5)),
                         weights=[_b64(init[n.input[i]]) for i in (1, 2, 3, 4)])
        elif op == "MaxPool":
            if any(a.get("pads", [0])):
                raise ValueError(f"{path}: MaxPool {n.name} with padding is not translated")
            layer.update(pool=list(a["kernel_shape"]), strides=list(a.get("strides", a["kernel_shape"])))
        elif op == "Flatten":
            flat_of[n.output[0]] = shapes[n.input[0]][1:]
        elif op == "Gemm":
            if a.get("transB", 0) != 1 or a.get("transA", 0) or a.get("alpha", 1.0) != 1.0:
                raise ValueError(f"{path}: Gemm {n.name}: only x·Wᵀ + b is translated")
            w = init[n.input[1]].T  # [in, out], rows in (c, h, w) order when after a Flatten
            chw = flat_of.get(x[0])
            if chw and len(chw) == 3 and chw[1] * chw[2] > 1:
                c, h, ww = chw
                w = w.reshape(c, h, ww, -1).transpose(1, 2, 0, 3).reshape(c * h * ww, -1)
            layer.update(units=int(w.shape[1]), weights=[_b64(w), _b64(init[n.input[2]])])
        elif op not in ("Relu", "Add", "GlobalAveragePool"):
            raise ValueError(f"{path}: operator {op} is not translated to TF.js")
        layers.append(layer)
    c, *hw = in_shape
    return {"input": inp.name, "input_nhwc": [*hw, c] if hw else [c], "layers": layers,
            "output": g.output[0].name}
