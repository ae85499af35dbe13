"""``nn.TransformerEncoderLayer`` and ``nn.TransformerEncoder``: PyTorch's structure, arguments and
state-dict names, made of kiln's layers (``MultiheadAttention``, ``Linear``, ``LayerNorm``, ``Dropout``),
so they trace into the same graph, train, save and export as any module."""

from __future__ import annotations

import copy
from typing import Any, Callable, Union

from .errors import InvalidInputError
from .layers import Dropout, LayerNorm, Linear, MultiheadAttention
from .model import Module, ModuleList
from .nn import functional as F

Activation = Union[str, Callable[[Any], Any]]


def _activation(activation: Activation) -> Callable[[Any], Any]:
    if activation in ("relu", F.relu):
        return F.relu
    if activation in ("gelu", F.gelu):
        return F.gelu
    raise InvalidInputError(f"TransformerEncoderLayer: activation must be 'relu' or 'gelu', got {activation!r}")


class TransformerEncoderLayer(Module):
    """Self-attention and a feed-forward block, each with a residual connection and a LayerNorm, as
    ``torch.nn.TransformerEncoderLayer``: ``x = norm1(x + dropout1(self_attn(x)))`` then
    ``x = norm2(x + dropout2(linear2(dropout(activation(linear1(x))))))``; with ``norm_first=True`` the
    norms come first inside each residual branch. ``src`` is ``[batch, seq, d_model]`` with
    ``batch_first=True``, else ``[seq, batch, d_model]``; ``src_mask`` and ``src_key_padding_mask`` are
    :class:`MultiheadAttention`'s ``attn_mask`` and ``key_padding_mask``, ``is_causal=True`` masks the
    future. Names: ``self_attn.in_proj_weight``, ``linear1.weight``, ``norm1.weight``, ….
    """

    def __init__(self, d_model: int, nhead: int, dim_feedforward: int = 2048, dropout: float = 0.1,
                 activation: Activation = "relu", layer_norm_eps: float = 1e-5, batch_first: bool = False,
                 norm_first: bool = False, bias: bool = True) -> None:
        super().__init__()
        if not bias:
            raise InvalidInputError("TransformerEncoderLayer: bias=False is not supported (kiln's LayerNorm has a bias)")
        self.self_attn = MultiheadAttention(d_model, nhead, dropout=dropout, bias=bias, batch_first=batch_first)
        self.linear1 = Linear(d_model, dim_feedforward, bias=bias)
        self.dropout = Dropout(dropout)
        self.linear2 = Linear(dim_feedforward, d_model, bias=bias)
        self.norm_first = bool(norm_first)
        self.norm1 = LayerNorm(d_model, eps=layer_norm_eps)
        self.norm2 = LayerNorm(d_model, eps=layer_norm_eps)
        self.dropout1 = Dropout(dropout)
        self.dropout2 = Dropout(dropout)
        self.activation = _activation(activation)

    def forward(self, src: Any, src_mask: Any = None, src_key_padding_mask: Any = None,
                is_causal: bool = False) -> Any:
        x = src
        if self.norm_first:
            x = x + self._sa_block(self.norm1(x), src_mask, src_key_padding_mask, is_causal)
            x = x + self._ff_block(self.norm2(x))
        else:
            x = self.norm1(x + self._sa_block(x, src_mask, src_key_padding_mask, is_causal))
            x = self.norm2(x + self._ff_block(x))
        return x

    def _sa_block(self, x: Any, attn_mask: Any, key_padding_mask: Any, is_causal: bool) -> Any:
        out, _ = self.self_attn(x, x, x, attn_mask=attn_mask, key_padding_mask=key_padding_mask,
                                need_weights=False, is_causal=is_causal)
        return self.dropout1(out)

    def _ff_block(self, x: Any) -> Any:
        return self.dropout2(self.linear2(self.dropout(self.activation(self.linear1(x)))))


class TransformerEncoder(Module):
    """``num_layers`` copies of ``encoder_layer`` (deep copies, as PyTorch; their weights are drawn
    each on its own when the model is built), then ``norm`` if given: names ``layers.0.self_attn.…``,
    ``norm.weight``. ``forward(src, mask=None, src_key_padding_mask=None, is_causal=None)`` passes the
    masks to every layer."""

    def __init__(self, encoder_layer: TransformerEncoderLayer, num_layers: int, norm: Any = None,
                 enable_nested_tensor: bool = True, mask_check: bool = True) -> None:
        super().__init__()
        if not isinstance(encoder_layer, Module):
            raise InvalidInputError(
                f"TransformerEncoder: encoder_layer must be an nn.TransformerEncoderLayer, got {type(encoder_layer).__name__}")
        if encoder_layer._core is not None:
            raise InvalidInputError("TransformerEncoder: the layer has been used already; give a fresh one")
        if not isinstance(num_layers, int) or num_layers < 1:
            raise InvalidInputError(f"TransformerEncoder: num_layers must be a positive integer, got {num_layers!r}")
        self.layers = ModuleList([copy.deepcopy(encoder_layer) for _ in range(num_layers)])
        self.num_layers = num_layers
        if norm is not None:
            self.norm = norm

    def forward(self, src: Any, mask: Any = None, src_key_padding_mask: Any = None,
                is_causal: bool | None = None) -> Any:
        x = src
        for layer in self.layers:
            x = layer(x, src_mask=mask, src_key_padding_mask=src_key_padding_mask, is_causal=bool(is_causal))
        if "norm" in self._modules:
            x = self.norm(x)
        return x
