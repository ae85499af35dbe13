"""``kiln.nn.functional``: operations for ``forward``, with PyTorch's names and arguments.

They record into the graph while ``forward`` is traced; the core runs them (with their gradients)
when the model trains, predicts or is exported.
"""

from __future__ import annotations

from typing import Any, Sequence

from .. import _trace
from ..errors import TracingError
from ..layers import _pair

__all__ = [
    "relu", "leaky_relu", "gelu", "sigmoid", "tanh", "softmax", "log_softmax", "dropout", "flatten",
    "max_pool2d", "avg_pool2d", "adaptive_avg_pool2d", "cat", "layer_norm", "embedding", "linear", "conv2d",
]


def _t(x: Any, fn: str) -> _trace.SymbolicTensor:
    if not isinstance(x, _trace.SymbolicTensor):
        raise TracingError(
            f"{_trace.user_line()}: F.{fn} works inside a module's forward (on the tensors forward receives), "
            f"got {type(x).__name__}")
    return x


def _op(fn: str, op: dict[str, Any], *xs: Any) -> _trace.SymbolicTensor:
    ts = [_t(x, fn) for x in xs]
    return ts[0]._trace.op(op, ts)


def relu(x: Any) -> Any:
    return _op("relu", {"op": "Relu"}, x)


def leaky_relu(x: Any, negative_slope: float = 0.01) -> Any:
    return _op("leaky_relu", {"op": "LeakyRelu", "negative_slope": float(negative_slope)}, x)


def gelu(x: Any, approximate: str = "none") -> Any:
    if approximate not in ("none", "tanh"):
        raise TracingError(f"F.gelu: approximate must be 'none' or 'tanh', got {approximate!r}")
    return _op("gelu", {"op": "Gelu", "approximate": approximate}, x)


def sigmoid(x: Any) -> Any:
    return _op("sigmoid", {"op": "Sigmoid"}, x)


def tanh(x: Any) -> Any:
    return _op("tanh", {"op": "Tanh"}, x)


def softmax(x: Any, dim: int = -1) -> Any:
    return _op("softmax", {"op": "Softmax", "dim": int(dim)}, x)


def log_softmax(x: Any, dim: int = -1) -> Any:
    return _op("log_softmax", {"op": "LogSoftmax", "dim": int(dim)}, x)


def dropout(x: Any, p: float = 0.5, training: bool = True) -> Any:
    """Dropout while the model trains (``training`` follows the model: fit trains, predict does not)."""
    if not 0.0 <= p < 1.0:
        raise TracingError(f"F.dropout: p must be in [0, 1), got {p}")
    return _op("dropout", {"op": "Dropout", "p": float(p)}, x) if training else x


def flatten(x: Any, start_dim: int = 0, end_dim: int = -1) -> Any:
    return _op("flatten", {"op": "Flatten", "start_dim": int(start_dim), "end_dim": int(end_dim)}, x)


def max_pool2d(x: Any, kernel_size: Any, stride: Any = None, padding: Any = 0) -> Any:
    k = _pair(kernel_size, "kernel_size")
    s = k if stride is None else _pair(stride, "stride")
    return _op("max_pool2d", {"op": "MaxPool2d", "kernel_size": k, "stride": s, "padding": _pair(padding, "padding")}, x)


def avg_pool2d(x: Any, kernel_size: Any, stride: Any = None, padding: Any = 0) -> Any:
    k = _pair(kernel_size, "kernel_size")
    s = k if stride is None else _pair(stride, "stride")
    return _op("avg_pool2d", {"op": "AvgPool2d", "kernel_size": k, "stride": s, "padding": _pair(padding, "padding")}, x)


def adaptive_avg_pool2d(x: Any, output_size: Any) -> Any:
    """Average pooling to ``output_size``; 1 is global average pooling. Sizes must divide the input."""
    t = _t(x, "adaptive_avg_pool2d")
    out = _pair(output_size, "output_size")
    if t.ndim != 4:
        raise TracingError(f"{_trace.user_line()}: adaptive_avg_pool2d expects [N, C, H, W], got {t}")
    h, w = int(t.shape[2]), int(t.shape[3])
    if out == [1, 1]:
        return t.mean(dim=(2, 3), keepdim=True)
    if h % out[0] or w % out[1]:
        raise TracingError(
            f"{_trace.user_line()}: adaptive_avg_pool2d to {tuple(out)} from {h}x{w}: kiln takes output sizes that "
            "divide the input (the windows are then all equal)")
    k = [h // out[0], w // out[1]]
    return avg_pool2d(t, k, k)


def cat(tensors: Sequence[Any], dim: int = 0) -> Any:
    ts = list(tensors)
    if not ts:
        raise TracingError("F.cat needs at least one tensor")
    return _op("cat", {"op": "Concat", "dim": int(dim)}, *ts)


concat = cat


def layer_norm(x: Any, normalized_shape: Any, weight: Any = None, bias: Any = None, eps: float = 1e-5) -> Any:
    """Layer normalisation over the trailing dims; kiln needs ``weight`` and ``bias`` (as nn.LayerNorm has)."""
    if weight is None or bias is None:
        raise TracingError(f"{_trace.user_line()}: F.layer_norm needs weight and bias (nn.Parameter), or use nn.LayerNorm")
    return _op("layer_norm", {"op": "LayerNorm", "eps": float(eps)}, x, weight, bias)


def embedding(ids: Any, weight: Any) -> Any:
    return _op("embedding", {"op": "Embedding"}, ids, weight)


def linear(x: Any, weight: Any, bias: Any = None) -> Any:
    xs = [x, weight] + ([] if bias is None else [bias])
    return _op("linear", {"op": "Linear"}, *xs)


def conv2d(x: Any, weight: Any, bias: Any = None, stride: Any = 1, padding: Any = 0, dilation: Any = 1,
           groups: int = 1) -> Any:
    xs = [x, weight] + ([] if bias is None else [bias])
    return _op("conv2d", {"op": "Conv2d", "stride": _pair(stride, "stride"), "padding": _pair(padding, "padding"),
                          "dilation": _pair(dilation, "dilation"), "groups": int(groups)}, *xs)
