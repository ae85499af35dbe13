"""Models the browser tests open through the demo's file picker, written to tests/out/picker/.

  iris.onnx     a valid model that is not a digits model: a softmax regression on scikit-learn's iris
                (input "features" [N, 4], output "probabilities" [N, 3], labels in kiln.labels), so
                the page must describe it instead of driving it from the drawing pad
  broken.onnx   the first half of iris.onnx: what a failed download looks like; the page must explain
  not-a-model.onnx   a text file with an .onnx name

  resnet.onnx   a ResNet kiln trained (an nn.Module with residual blocks): kiln's engine must run it

The first three are built with onnx.helper and numpy only; resnet.onnx needs the kiln package.
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
    resnet_accuracy = kiln_resnet(args.out / "resnet.onnx")
    print(f"wrote resnet.onnx (a kiln nn.Module with residual blocks, test accuracy {resnet_accuracy:.3f})")


def kiln_resnet(path):
    """resnet.onnx: a ResNet written as a kiln nn.Module (residual blocks with BatchNorm, global
    average pooling), trained on the digits and exported with labels and the input scale the pad
    needs: the page must run it on kiln's engine, without fetching tract."""
    import kiln
    import kiln.nn.functional as F
    from kiln import nn, optim
    from sklearn.datasets import load_digits

    class Block(nn.Module):
        def __init__(self, c):
            super().__init__()
            self.conv1, self.bn1 = nn.Conv2d(c, c, 3, padding=1), nn.BatchNorm2d(c)
            self.conv2, self.bn2 = nn.Conv2d(c, c, 3, padding=1), nn.BatchNorm2d(c)

        def forward(self, x):
            return F.relu(x + self.bn2(self.conv2(F.relu(self.bn1(self.conv1(x))))))

    class ResNet(nn.Module):
        def __init__(self):
            super().__init__()
            self.stem = nn.Conv2d(1, 16, 3, padding=1)
            self.blocks = nn.Sequential(Block(16), Block(16))
            self.head = nn.Linear(16, 10)

        def forward(self, x):
            return self.head(self.blocks(F.relu(self.stem(x))).mean(dim=(2, 3)))

    d = load_digits()
    X, y = (d.images / 16).astype(np.float32)[:, None], d.target
    kiln.manual_seed(0)
    m = ResNet()
    m.compile(optimizer=optim.Adam(lr=3e-3), loss="cross_entropy", metrics=["accuracy"])
    stop = kiln.callbacks.EarlyStopping(monitor="val_accuracy", patience=4, restore_best_weights=True)
    m.fit(X[:1500], y[:1500], epochs=15, validation_split=0.15, callbacks=[stop], verbose=0)
    m.export_onnx(str(path), labels=[str(i) for i in range(10)], input_scale=1 / 16)
    return m.evaluate(X[1500:], y[1500:])["accuracy"]


if __name__ == "__main__":
    main()
