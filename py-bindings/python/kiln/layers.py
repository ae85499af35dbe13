"""Layer descriptions with PyTorch's names, argument order and defaults.

A layer here is a small description (its "spec"); the weights live in the Rust core once the layer
is part of a :class:`kiln.nn.Sequential`. Through the model, a layer shows its weights as numpy
arrays: ``model[0].weight``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Sequence, Tuple, Union

import numpy as np

from .errors import InvalidInputError

if TYPE_CHECKING:
    from .model import Module

IntOr2 = Union[int, Tuple[int, int], Sequence[int]]


def _pair(v: IntOr2, name: str) -> list[int]:
    if isinstance(v, int):
        return [v, v]
    vals = list(v)
    if len(vals) != 2 or not all(isinstance(i, int) for i in vals):
        raise InvalidInputError(f"{name} must be an int or a pair of ints, got {v!r}")
    return vals


class Layer:
    """Base class: a spec dict for the core plus PyTorch-style ``__repr__``."""

    _type: str = ""
    _stateless = False  # a layer with no spec of its own (Identity): traced through, never stored

    def __init__(self, **spec: Any) -> None:
        self._spec: dict[str, Any] = {"type": self._type or type(self).__name__, **spec}
        self._owner: Module | None = None
        self._prefix = ""
        if not self._stateless:
            import json

            from . import _kiln

            _kiln.check_layer(json.dumps(self._spec))  # the core's rules, now rather than at first use

    def spec(self) -> dict[str, Any]:
        """The layer's architecture as kiln's JSON-able dict."""
        return dict(self._spec)

    def extra_repr(self) -> str:
        return ""

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.extra_repr()})"

    def __call__(self, x: Any) -> Any:
        """Inside a traced ``forward``: this layer applied to ``x``."""
        return self._call([x])

    def _call(self, inputs: list[Any]) -> Any:
        """Record a call of this layer on ``inputs`` in the trace in progress."""
        from . import _trace

        tr = _trace.current()
        if tr is None:
            raise InvalidInputError(
                f"{type(self).__name__}: call a layer inside a module's forward (or call the model itself)")
        if self._owner is not tr.root:
            raise InvalidInputError(
                f"{type(self).__name__}: this layer is not part of {type(tr.root).__name__}: assign it in __init__")
        return tr.op({"op": "Call", "module": self._prefix[:-1]}, inputs)

    def _tensor(self, name: str) -> Any:
        from . import _trace

        tr = _trace.current()
        if tr is not None and self._owner is tr.root:
            return tr.param(self._prefix + name)
        if self._owner is None:
            raise InvalidInputError(
                f"{type(self).__name__}.{name}: the weights exist once the layer is part of a model (nn.Sequential or an nn.Module's first use)"
            )
        return self._owner.state_dict().get(self._prefix + name)

    @property
    def weight(self) -> Any:
        """The layer's weight as a numpy copy (None for layers without one)."""
        return self._tensor("weight")

    @property
    def bias(self) -> Any:
        """The layer's bias as a numpy copy (None when it has none)."""
        return self._tensor("bias")


class Identity(Layer):
    """Returns its input (a placeholder, as ``torch.nn.Identity``)."""

    _stateless = True

    def __call__(self, x: Any) -> Any:
        return x

    def spec(self) -> dict[str, Any]:
        raise InvalidInputError("Identity has no weights and no spec: use it inside an nn.Module")


class AdaptiveAvgPool2d(Layer):
    """Average pooling to a fixed output size; kiln takes sizes that divide the input (1 = global)."""

    _stateless = True

    def __init__(self, output_size: IntOr2) -> None:
        super().__init__(output_size=_pair(output_size, "output_size"))

    def __call__(self, x: Any) -> Any:
        from .nn.functional import adaptive_avg_pool2d

        return adaptive_avg_pool2d(x, self._spec["output_size"])

    def spec(self) -> dict[str, Any]:
        raise InvalidInputError("AdaptiveAvgPool2d has no weights and no spec: use it inside an nn.Module")

    def extra_repr(self) -> str:
        return f"output_size={tuple(self._spec['output_size'])}"


class Linear(Layer):
    """``y = x Wᵀ + b``. Input ``[N, in_features]``, output ``[N, out_features]``."""

    def __init__(self, in_features: int, out_features: int, bias: bool = True) -> None:
        super().__init__(in_features=in_features, out_features=out_features, bias=bias)

    def extra_repr(self) -> str:
        s = self._spec
        return f"in_features={s['in_features']}, out_features={s['out_features']}, bias={s['bias']}"


class Conv1d(Layer):
    """1-D convolution. Input ``[N, C, L]``, output ``[N, out_channels, L']``."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int = 1, padding: int = 0,
                 dilation: int = 1, groups: int = 1, bias: bool = True) -> None:
        super().__init__(in_channels=in_channels, out_channels=out_channels, kernel_size=kernel_size, stride=stride,
                         padding=padding, dilation=dilation, groups=groups, bias=bias)

    def extra_repr(self) -> str:
        s = self._spec
        r = f"{s['in_channels']}, {s['out_channels']}, kernel_size=({s['kernel_size']},), stride=({s['stride']},)"
        if s["padding"]:
            r += f", padding=({s['padding']},)"
        if s["dilation"] != 1:
            r += f", dilation=({s['dilation']},)"
        if s["groups"] != 1:
            r += f", groups={s['groups']}"
        return r + ("" if s["bias"] else ", bias=False")


class Conv2d(Layer):
    """2-D convolution. Input ``[N, C, H, W]``, output ``[N, out_channels, H', W']``."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: IntOr2, stride: IntOr2 = 1,
                 padding: IntOr2 = 0, dilation: IntOr2 = 1, groups: int = 1, bias: bool = True) -> None:
        super().__init__(in_channels=in_channels, out_channels=out_channels, kernel_size=_pair(kernel_size, "kernel_size"),
                         stride=_pair(stride, "stride"), padding=_pair(padding, "padding"),
                         dilation=_pair(dilation, "dilation"), groups=groups, bias=bias)

    def extra_repr(self) -> str:
        s = self._spec
        t = lambda v: f"({v[0]}, {v[1]})"  # noqa: E731
        r = f"{s['in_channels']}, {s['out_channels']}, kernel_size={t(s['kernel_size'])}, stride={t(s['stride'])}"
        if any(s["padding"]):
            r += f", padding={t(s['padding'])}"
        if s["dilation"] != [1, 1]:
            r += f", dilation={t(s['dilation'])}"
        if s["groups"] != 1:
            r += f", groups={s['groups']}"
        return r + ("" if s["bias"] else ", bias=False")


class _Pool(Layer):
    def __init__(self, kernel_size: IntOr2, stride: IntOr2 | None = None, padding: IntOr2 = 0) -> None:
        k = _pair(kernel_size, "kernel_size")
        super().__init__(kernel_size=k, stride=k if stride is None else _pair(stride, "stride"),
                         padding=_pair(padding, "padding"))

    def extra_repr(self) -> str:
        s = self._spec
        one = lambda v: v[0] if v[0] == v[1] else tuple(v)  # noqa: E731
        return f"kernel_size={one(s['kernel_size'])}, stride={one(s['stride'])}, padding={one(s['padding'])}"


class MaxPool2d(_Pool):
    """2-D max pooling (stride defaults to the kernel size, as PyTorch)."""


class AvgPool2d(_Pool):
    """2-D average pooling; padding counts in the average (PyTorch's ``count_include_pad=True``)."""


class Flatten(Layer):
    """Merge dimensions ``start_dim..end_dim`` (by default all but the batch dimension)."""

    def __init__(self, start_dim: int = 1, end_dim: int = -1) -> None:
        super().__init__(start_dim=start_dim, end_dim=end_dim)

    def extra_repr(self) -> str:
        return f"start_dim={self._spec['start_dim']}, end_dim={self._spec['end_dim']}"


class ReLU(Layer):
    """``max(x, 0)``."""


class LeakyReLU(Layer):
    """``x`` where positive, ``negative_slope * x`` elsewhere."""

    def __init__(self, negative_slope: float = 0.01) -> None:
        super().__init__(negative_slope=float(negative_slope))

    def extra_repr(self) -> str:
        return f"negative_slope={self._spec['negative_slope']}"


class GELU(Layer):
    """Gaussian error linear unit; ``approximate="tanh"`` for the tanh form."""

    def __init__(self, approximate: str = "none") -> None:
        if approximate not in ("none", "tanh"):
            raise InvalidInputError(f"GELU: approximate must be 'none' or 'tanh', got {approximate!r}")
        super().__init__(approximate=approximate)

    def extra_repr(self) -> str:
        return f"approximate='{self._spec['approximate']}'"


class Sigmoid(Layer):
    """``1 / (1 + e^-x)``."""


class Tanh(Layer):
    """Hyperbolic tangent."""


class Softmax(Layer):
    """Softmax along ``dim``."""

    def __init__(self, dim: int = -1) -> None:
        super().__init__(dim=dim)

    def extra_repr(self) -> str:
        return f"dim={self._spec['dim']}"


class Dropout(Layer):
    """Zero each element with probability ``p`` while training (scaling the rest); identity in eval."""

    def __init__(self, p: float = 0.5) -> None:
        if not 0.0 <= p < 1.0:
            raise InvalidInputError(f"Dropout: p must be in [0, 1), got {p}")
        super().__init__(p=float(p))

    def extra_repr(self) -> str:
        return f"p={self._spec['p']}, inplace=False"


class _BatchNorm(Layer):
    def __init__(self, num_features: int, eps: float = 1e-5, momentum: float = 0.1) -> None:
        super().__init__(num_features=num_features, eps=float(eps), momentum=float(momentum))

    def extra_repr(self) -> str:
        s = self._spec
        return f"{s['num_features']}, eps={s['eps']}, momentum={s['momentum']}, affine=True, track_running_stats=True"

    @property
    def running_mean(self) -> np.ndarray | None:
        """Running mean (a buffer)."""
        return self._tensor("running_mean")

    @property
    def running_var(self) -> np.ndarray | None:
        """Running variance (a buffer)."""
        return self._tensor("running_var")


class BatchNorm1d(_BatchNorm):
    """Batch normalisation of ``[N, C]`` or ``[N, C, L]`` inputs."""


class BatchNorm2d(_BatchNorm):
    """Batch normalisation of ``[N, C, H, W]`` inputs."""


class LayerNorm(Layer):
    """Layer normalisation over the trailing ``normalized_shape`` dimensions."""

    def __init__(self, normalized_shape: int | Sequence[int], eps: float = 1e-5) -> None:
        shape = [normalized_shape] if isinstance(normalized_shape, int) else list(normalized_shape)
        super().__init__(normalized_shape=shape, eps=float(eps))

    def extra_repr(self) -> str:
        s = self._spec
        return f"{tuple(s['normalized_shape'])}, eps={s['eps']}, elementwise_affine=True"


class Embedding(Layer):
    """A lookup table from integer ids to vectors: ``[...]`` → ``[..., embedding_dim]``."""

    def __init__(self, num_embeddings: int, embedding_dim: int) -> None:
        super().__init__(num_embeddings=num_embeddings, embedding_dim=embedding_dim)

    def extra_repr(self) -> str:
        return f"{self._spec['num_embeddings']}, {self._spec['embedding_dim']}"


class _Recurrent(Layer):
    """GRU and LSTM: PyTorch's arguments, parameter names (``weight_ih_l0``, ``bias_hh_l1_reverse``, …),
    initialisation (U(-1/√hidden_size, 1/√hidden_size)) and return values."""

    def __init__(self, input_size: int, hidden_size: int, num_layers: int = 1, bias: bool = True,
                 batch_first: bool = False, dropout: float = 0.0, bidirectional: bool = False) -> None:
        for name, v in (("bias", bias), ("batch_first", batch_first), ("bidirectional", bidirectional)):
            if not isinstance(v, bool):
                raise InvalidInputError(f"{type(self).__name__}: {name} must be True or False, got {v!r}")
        super().__init__(input_size=input_size, hidden_size=hidden_size, num_layers=num_layers, bias=bias,
                         batch_first=batch_first, dropout=float(dropout), bidirectional=bidirectional)

    def _run(self, input: Any, states: list[Any]) -> list[Any]:
        from . import _trace

        node = self._call([input, *states])
        tr = _trace.current()
        assert tr is not None  # _call checked
        n = 3 if isinstance(self, LSTM) else 2
        return [tr.op({"op": "Item", "index": i}, [node]) for i in range(n)]

    def __getattr__(self, name: str) -> Any:
        if name.startswith(("weight_ih_l", "weight_hh_l", "bias_ih_l", "bias_hh_l")):
            return self._tensor(name)
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")

    def extra_repr(self) -> str:
        s = self._spec
        r = f"{s['input_size']}, {s['hidden_size']}"
        if s["num_layers"] != 1:
            r += f", num_layers={s['num_layers']}"
        if not s["bias"]:
            r += ", bias=False"
        if s["batch_first"]:
            r += ", batch_first=True"
        if s["dropout"]:
            r += f", dropout={s['dropout']}"
        if s["bidirectional"]:
            r += ", bidirectional=True"
        return r


class GRU(_Recurrent):
    """A multi-layer gated recurrent unit over whole sequences, as ``torch.nn.GRU``.

    ``out, h_n = gru(x)`` or ``gru(x, h0)`` inside an ``nn.Module``'s ``forward``. ``x`` is
    ``[batch, seq, input_size]`` with ``batch_first=True``, else ``[seq, batch, input_size]``; ``out`` is
    the last layer's hidden state at every step (``[..., D * hidden_size]``, D = 2 when bidirectional,
    forward direction first), ``h_n`` every layer's and direction's final state,
    ``[num_layers * D, batch, hidden_size]`` (as is ``h0``; zeros when omitted). Gates r, z, n with
    ``n = tanh(W_in x + b_in + r * (W_hn h + b_hn))``; ``dropout`` applies to every layer's output but the
    last, in training only. Parameters ``weight_ih_l{k}`` ``[3 * hidden_size, in]``, ``weight_hh_l{k}``,
    ``bias_ih_l{k}``, ``bias_hh_l{k}`` (``_reverse`` for the second direction): a PyTorch state dict loads
    as it is.
    """

    def __call__(self, input: Any, hx: Any = None) -> Any:  # type: ignore[override]
        out, h = self._run(input, [] if hx is None else [hx])
        return out, h


class LSTM(_Recurrent):
    """A multi-layer long short-term memory over whole sequences, as ``torch.nn.LSTM``.

    ``out, (h_n, c_n) = lstm(x)`` or ``lstm(x, (h0, c0))`` inside an ``nn.Module``'s ``forward``; shapes
    as :class:`GRU`, with the cell states ``c0`` / ``c_n`` shaped like ``h0`` / ``h_n``. Gates i, f, g, o:
    ``c' = f * c + i * g``, ``h' = o * tanh(c')``. Parameters ``weight_ih_l{k}`` ``[4 * hidden_size, in]``
    and the rest as :class:`GRU`. ``proj_size`` is not supported.
    """

    def __init__(self, input_size: int, hidden_size: int, num_layers: int = 1, bias: bool = True,
                 batch_first: bool = False, dropout: float = 0.0, bidirectional: bool = False,
                 proj_size: int = 0) -> None:
        if proj_size:
            raise InvalidInputError("LSTM: proj_size is not supported by kiln (leave it 0)")
        super().__init__(input_size, hidden_size, num_layers, bias, batch_first, dropout, bidirectional)

    def __call__(self, input: Any, hx: Any = None) -> Any:  # type: ignore[override]
        if hx is None:
            states: list[Any] = []
        elif isinstance(hx, (tuple, list)) and len(hx) == 2:
            states = list(hx)
        else:
            raise InvalidInputError("LSTM: the initial state is a pair (h0, c0)")
        out, h, c = self._run(input, states)
        return out, (h, c)


def _mask_kind(mask: Any) -> str:
    """How the core reads a mask: ``"bool"`` (True = masked) for a graph input fed a bool array, else
    ``"float"`` (added to the scores), as PyTorch reads a bool or a float tensor."""
    if mask is None:
        return "none"
    return "bool" if getattr(mask, "_bool", False) else "float"


class _Projection:
    """``mha.out_proj``: its ``weight`` and ``bias`` by PyTorch's names."""

    def __init__(self, layer: "MultiheadAttention") -> None:
        self._layer = layer

    @property
    def weight(self) -> Any:
        return self._layer._tensor("out_proj.weight")

    @property
    def bias(self) -> Any:
        return self._layer._tensor("out_proj.bias") if self._layer._spec["bias"] else None


class MultiheadAttention(Layer):
    """Multi-head attention, as ``torch.nn.MultiheadAttention``.

    ``out, weights = mha(query, key, value)`` inside an ``nn.Module``'s ``forward``. With
    ``batch_first=True`` query is ``[batch, L, embed_dim]``, key and value ``[batch, S, embed_dim]``
    (else ``[L, batch, embed_dim]``, ``[S, batch, embed_dim]``); ``out`` is shaped like query;
    ``weights`` is ``[batch, L, S]`` averaged over the heads (``average_attn_weights=False``:
    ``[batch, num_heads, L, S]``), None with ``need_weights=False``. ``key_padding_mask`` is ``[batch, S]``,
    ``attn_mask`` ``[L, S]`` or ``[batch * num_heads, L, S]``; a mask given as a bool array (a model input
    fed ``np.bool_``) marks with True the positions that may not be attended, any other mask is added to
    the scores (``-inf`` masks), as in PyTorch. ``is_causal=True`` without an ``attn_mask`` masks every key
    after the query's position (with one, PyTorch's hint: the mask is used as given). Parameters
    ``in_proj_weight`` ``[3 * embed_dim, embed_dim]`` (Xavier-uniform), ``in_proj_bias``, ``out_proj.weight``,
    ``out_proj.bias`` (zero biases): a PyTorch state dict loads as it is. ``kdim``/``vdim`` other than
    ``embed_dim``, ``add_bias_kv`` and ``add_zero_attn`` are not supported.
    """

    def __init__(self, embed_dim: int, num_heads: int, dropout: float = 0.0, bias: bool = True,
                 add_bias_kv: bool = False, add_zero_attn: bool = False, kdim: int | None = None,
                 vdim: int | None = None, batch_first: bool = False) -> None:
        for name, v in (("bias", bias), ("batch_first", batch_first)):
            if not isinstance(v, bool):
                raise InvalidInputError(f"MultiheadAttention: {name} must be True or False, got {v!r}")
        if add_bias_kv or add_zero_attn:
            raise InvalidInputError("MultiheadAttention: add_bias_kv and add_zero_attn are not supported by kiln")
        if kdim not in (None, embed_dim) or vdim not in (None, embed_dim):
            raise InvalidInputError(
                f"MultiheadAttention: kdim and vdim must equal embed_dim ({embed_dim}) in kiln, got {kdim}, {vdim}")
        super().__init__(embed_dim=embed_dim, num_heads=num_heads, dropout=float(dropout), bias=bias,
                         batch_first=batch_first)

    def __call__(self, query: Any, key: Any, value: Any, key_padding_mask: Any = None,  # type: ignore[override]
                 need_weights: bool = True, attn_mask: Any = None, average_attn_weights: bool = True,
                 is_causal: bool = False) -> Any:
        from . import _trace

        tr = _trace.current()
        if tr is None or self._owner is not tr.root:
            return self._call([query])  # the same errors as any layer called outside its model
        s = self._spec
        names = ["in_proj_weight", "in_proj_bias", "out_proj.weight", "out_proj.bias"] if s["bias"] \
            else ["in_proj_weight", "out_proj.weight"]
        masks = [m for m in (key_padding_mask, attn_mask) if m is not None]
        op = {"op": "MultiheadAttention", "num_heads": s["num_heads"], "dropout": s["dropout"],
              "batch_first": s["batch_first"], "bias": s["bias"], "need_weights": bool(need_weights),
              "average_attn_weights": bool(average_attn_weights), "is_causal": bool(is_causal),
              "key_padding_mask": _mask_kind(key_padding_mask),
              "attn_mask": _mask_kind(attn_mask)}
        node = tr.op(op, [query, key, value, *[tr.param(self._prefix + n) for n in names], *masks])
        if not need_weights:
            return node, None
        return tr.op({"op": "Item", "index": 0}, [node]), tr.op({"op": "Item", "index": 1}, [node])

    @property
    def in_proj_weight(self) -> Any:
        """``[3 * embed_dim, embed_dim]``: the query, key and value projections stacked."""
        return self._tensor("in_proj_weight")

    @property
    def in_proj_bias(self) -> Any:
        return self._tensor("in_proj_bias") if self._spec["bias"] else None

    @property
    def out_proj(self) -> _Projection:
        return _Projection(self)

    @property
    def weight(self) -> Any:
        raise AttributeError("MultiheadAttention has in_proj_weight and out_proj.weight, not weight")

    @property
    def bias(self) -> Any:
        raise AttributeError("MultiheadAttention has in_proj_bias and out_proj.bias, not bias")

    def extra_repr(self) -> str:
        s = self._spec
        return f"embed_dim={s['embed_dim']}, num_heads={s['num_heads']}" + \
            (f", dropout={s['dropout']}" if s["dropout"] else "") + ("" if s["bias"] else ", bias=False") + \
            (", batch_first=True" if s["batch_first"] else "")


_CLASSES = {c.__name__: c for c in (Linear, Conv1d, Conv2d, MaxPool2d, AvgPool2d, Flatten, ReLU, LeakyReLU, GELU,
                                     Sigmoid, Tanh, Softmax, Dropout, BatchNorm1d, BatchNorm2d, LayerNorm, Embedding,
                                     GRU, LSTM, MultiheadAttention)}


def from_spec(spec: dict[str, Any]) -> Layer:
    """Rebuild a layer object from its spec (as stored in a checkpoint)."""
    cls = _CLASSES.get(spec.get("type", ""))
    if cls is None:
        raise InvalidInputError(f"unknown layer {spec.get('type')!r}")
    layer = cls.__new__(cls)
    Layer.__init__(layer, **{k: v for k, v in spec.items() if k != "type"})
    return layer
