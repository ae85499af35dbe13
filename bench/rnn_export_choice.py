#!/usr/bin/env python3
"""Why kiln exports nn.GRU as ONNX's GRU operator rather than decomposed into MatMul/Sigmoid/Tanh
nodes: both forms of one trained-shape char GRU (Embedding(30, 32) → GRU(32, 64, batch_first) → Linear),
the same weights, compared on file size, node count and latency in onnxruntime and tract (kiln's
InferenceSession, engine="tract"). The decomposed form unrolls the time steps, so it also fixes the
sequence length into the file.

    .venv/bin/python bench/rnn_export_choice.py
"""
from __future__ import annotations

import time

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

import kiln
from kiln import nn

VOCAB, STEPS, EMB, HIDDEN, CLASSES = 30, 24, 32, 64, 4


class CharGRU(nn.Module):
    def __init__(self):
        super().__init__()
        self.emb = nn.Embedding(VOCAB, EMB)
        self.gru = nn.GRU(EMB, HIDDEN, batch_first=True)
        self.head = nn.Linear(HIDDEN, CLASSES)

    def forward(self, ids):
        _, h = self.gru(self.emb(ids))
        return self.head(h[-1])


def decomposed(state: dict[str, np.ndarray]) -> bytes:
    """The same model with every step spelled out (PyTorch's gate order r, z, n)."""
    H = HIDDEN
    inits = {"emb_weight": state["emb.weight"], "head_bias": state["head.bias"]}
    w_ih, w_hh = state["gru.weight_ih_l0"], state["gru.weight_hh_l0"]
    b_ih, b_hh = state["gru.bias_ih_l0"], state["gru.bias_hh_l0"]
    inits.update({
        "wi_t": w_ih.T.copy(), "wh_rz_t": w_hh[:2 * H].T.copy(), "wh_n_t": w_hh[2 * H:].T.copy(),
        "b_rz": (b_ih[:2 * H] + b_hh[:2 * H]), "b_in": b_ih[2 * H:], "b_hn": b_hh[2 * H:],
        "head_wt": state["head.weight"].T.copy(), "one": np.array(1.0, np.float32),
    })
    nodes = [helper.make_node("Gather", ["emb_weight", "ids"], ["e"], axis=0),
             helper.make_node("MatMul", ["e", "wi_t"], ["xi"]),  # [B, T, 3H]: every step's input projection
             helper.make_node("Split", ["xi", "split3"], ["xrz", "xn"], axis=2)]
    inits["split3"] = np.array([2 * H, H], np.int64)
    h = None
    for t in range(STEPS):
        p = f"s{t}_"
        inits[p + "idx"] = np.array(t, np.int64)
        nodes += [helper.make_node("Gather", ["xrz", p + "idx"], [p + "xrz"], axis=1),
                  helper.make_node("Gather", ["xn", p + "idx"], [p + "xn"], axis=1)]
        if h is None:  # h0 = 0
            nodes += [helper.make_node("Add", [p + "xrz", "b_rz"], [p + "rz_pre"]),
                      helper.make_node("Sigmoid", [p + "rz_pre"], [p + "rz"]),
                      helper.make_node("Split", [p + "rz", "split2"], [p + "r", p + "z"], axis=1),
                      helper.make_node("Mul", [p + "r", "b_hn"], [p + "rhn"])]
        else:
            nodes += [helper.make_node("MatMul", [h, "wh_rz_t"], [p + "hrz"]),
                      helper.make_node("Add", [p + "xrz", p + "hrz"], [p + "rz_a"]),
                      helper.make_node("Add", [p + "rz_a", "b_rz"], [p + "rz_pre"]),
                      helper.make_node("Sigmoid", [p + "rz_pre"], [p + "rz"]),
                      helper.make_node("Split", [p + "rz", "split2"], [p + "r", p + "z"], axis=1),
                      helper.make_node("MatMul", [h, "wh_n_t"], [p + "hn_a"]),
                      helper.make_node("Add", [p + "hn_a", "b_hn"], [p + "hn"]),
                      helper.make_node("Mul", [p + "r", p + "hn"], [p + "rhn"])]
        nodes += [helper.make_node("Add", [p + "xn", "b_in"], [p + "n_a"]),
                  helper.make_node("Add", [p + "n_a", p + "rhn"], [p + "n_pre"]),
                  helper.make_node("Tanh", [p + "n_pre"], [p + "n"]),
                  helper.make_node("Sub", ["one", p + "z"], [p + "omz"]),
                  helper.make_node("Mul", [p + "omz", p + "n"], [p + "a"])]
        if h is None:
            nodes[-1].output[0] = p + "h"
        else:
            nodes += [helper.make_node("Mul", [p + "z", h], [p + "b"]),
                      helper.make_node("Add", [p + "a", p + "b"], [p + "h"])]
        h = p + "h"
    inits["split2"] = np.array([H, H], np.int64)
    nodes += [helper.make_node("MatMul", [h, "head_wt"], ["hw"]),
              helper.make_node("Add", ["hw", "head_bias"], ["output"])]
    graph = helper.make_graph(
        nodes, "decomposed_gru",
        [helper.make_tensor_value_info("ids", TensorProto.INT64, ["batch", STEPS])],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, ["batch", CLASSES])],
        [numpy_helper.from_array(np.asarray(v, np.float32 if v.dtype != np.int64 else np.int64), k)
         for k, v in inits.items()])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model, full_check=True)
    return model.SerializeToString()


def latency(run, x, repeats: int) -> float:
    run(x)
    start = time.perf_counter()
    for _ in range(repeats):
        run(x)
    return (time.perf_counter() - start) / repeats * 1e3


def main() -> None:
    kiln.manual_seed(0)
    model = CharGRU()
    rng = np.random.default_rng(0)
    model.predict(rng.integers(0, VOCAB, (2, STEPS)))
    files = {"ONNX GRU op (kiln's export)": model.export_onnx(), "decomposed, unrolled": decomposed(model.state_dict())}
    print(f"| form | bytes | nodes | ort b1 ms | ort b64 ms | tract b1 ms | tract b64 ms |\n| --- | ---: | ---: | ---: | ---: | ---: | ---: |")
    for name, data in files.items():
        ort_s = ort.InferenceSession(data, providers=["CPUExecutionProvider"])
        tract = kiln.InferenceSession(data, engine="tract")
        row = [name, str(len(data)), str(len(onnx.load_from_string(data).graph.node))]
        for sess in ("ort", "tract"):
            for batch in (1, 64):
                x = rng.integers(0, VOCAB, (batch, STEPS)).astype(np.int64)
                want = model.predict(x)
                run = (lambda v: ort_s.run(None, {"ids": v})[0]) if sess == "ort" else tract.run
                np.testing.assert_allclose(run(x), want, atol=1e-5)
                row.append(f"{latency(run, x, 200 if batch == 1 else 50):.3f}")
        print("| " + " | ".join(row) + " |")


if __name__ == "__main__":
    main()
