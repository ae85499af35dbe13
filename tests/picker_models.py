"""Models the browser tests open through the demo's file picker, written to tests/out/picker/.

  iris.onnx     a valid model that is not a digits model: a softmax regression on scikit-learn's iris
                (input "features" [N, 4], output "probabilities" [N, 3], labels in kiln.labels), so
                the page must describe it instead of driving it from the drawing pad
  broken.onnx   the first half of iris.onnx: what a failed download looks like; the page must explain
  not-a-model.onnx   a text file with an .onnx name

Built with onnx.helper and numpy only, so they exist even when the kiln package does not.
    python tests/picker_models.py [--out DIR]
"""
import argparse
import json
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper
from sklearn.datasets import load_iris

IRIS_LABELS = ["setosa", "versicolor", "virginica"]


def train_iris_softmax(steps=500, lr=0.1):
    """Multinomial logistic regression by plain gradient descent; accurate enough to be a real model."""
    X, y = load_iris(return_X_y=True)
    mean, std = X.mean(0), X.std(0)
    Z = (X - mean) / std
    W, b = np.zeros((4, 3)), np.zeros(3)
    Y = np.eye(3)[y]
    for _ in range(steps):
        logits = Z @ W + b
        p = np.exp(logits - logits.max(1, keepdims=True))
        p /= p.sum(1, keepdims=True)
        W -= lr * Z.T @ (p - Y) / len(Z)
        b -= lr * (p - Y).mean(0)
    accuracy = float(((Z @ W + b).argmax(1) == y).mean())
    # Fold the standardisation into the weights so the model takes raw centimetres.
    return (W / std[:, None]).astype(np.float32), (b - (mean / std) @ W).astype(np.float32), accuracy


def iris_model():
    W, b, accuracy = train_iris_softmax()
    graph = helper.make_graph(
        [helper.make_node("Gemm", ["features", "W", "b"], ["logits"]),
         helper.make_node("Softmax", ["logits"], ["probabilities"], axis=1)],
        "iris_softmax_regression",
        [helper.make_tensor_value_info("features", TensorProto.FLOAT, ["batch", 4])],
        [helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, ["batch", 3])],
        [numpy_helper.from_array(W, "W"), numpy_helper.from_array(b, "b")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], producer_name="kiln-tests")
    model.ir_version = 8  # readable by every runtime in the journey
    helper.set_model_props(model, {"kiln.labels": json.dumps(IRIS_LABELS), "trained_on": "scikit-learn iris"})
    onnx.checker.check_model(model, full_check=True)
    return model, accuracy


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "out" / "picker")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    model, accuracy = iris_model()
    data = model.SerializeToString()
    (args.out / "iris.onnx").write_bytes(data)
    (args.out / "broken.onnx").write_bytes(data[: len(data) // 2])
    (args.out / "not-a-model.onnx").write_text("This is a note, not an ONNX model.\n")
    print(f"wrote iris.onnx ({len(data)} bytes, training accuracy {accuracy:.3f}), broken.onnx, not-a-model.onnx to {args.out}")


if __name__ == "__main__":
    main()
