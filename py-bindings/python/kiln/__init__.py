"""kiln: train a neural network in a notebook on a Rust core, ship it to the browser.

    import kiln
    from kiln import nn, optim
    kiln.manual_seed(0)
    model = nn.Sequential(nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 10))
    model.compile(optimizer=optim.Adam(lr=1e-3), loss="cross_entropy", metrics=["accuracy"])
    model.fit(X, y, epochs=20)
    model.export_onnx("digits.onnx", labels=[str(d) for d in range(10)])
"""

from . import callbacks, drift, losses, nn, optim, optimize, text
from ._kiln import Tensor, __version__
from ._seed import manual_seed
from .errors import (
    CheckpointError,
    InvalidInputError,
    KilnError,
    KilnIOError,
    OnnxError,
    ShapeError,
    SlowLoadWarning,
    TracingError,
    TrainingError,
)
from .history import History
from .model import load, load_onnx
from .preprocess import Preprocess
from .session import InferenceSession, TensorInfo
from .summary import ModelSummary

__all__ = [
    "__version__", "Tensor", "nn", "optim", "losses", "callbacks", "optimize", "drift", "text", "manual_seed", "load", "load_onnx", "InferenceSession", "TensorInfo",
    "History", "KilnError", "ShapeError", "InvalidInputError", "CheckpointError", "OnnxError", "TrainingError", "TracingError",
    "KilnIOError", "SlowLoadWarning", "ModelSummary", "Preprocess",
]
