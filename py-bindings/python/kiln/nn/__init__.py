"""Layers, modules and the Sequential model, with PyTorch's names and argument order."""

from ..layers import (
    GELU,
    AdaptiveAvgPool2d,
    Identity,
    AvgPool2d,
    BatchNorm1d,
    BatchNorm2d,
    Conv1d,
    Conv2d,
    Dropout,
    Embedding,
    Flatten,
    GRU,
    LSTM,
    Layer,
    LayerNorm,
    LeakyReLU,
    Linear,
    MultiheadAttention,
    MaxPool2d,
    ReLU,
    Sigmoid,
    Softmax,
    Tanh,
)
from ..model import Module, ModuleList, Parameter, Sequential
from . import functional
from ..transformer import TransformerEncoder, TransformerEncoderLayer

__all__ = [
    "Layer", "Sequential", "Linear", "Conv1d", "Conv2d", "MaxPool2d", "AvgPool2d", "Flatten", "ReLU",
    "LeakyReLU", "GELU", "Sigmoid", "Tanh", "Softmax", "Dropout", "BatchNorm1d", "BatchNorm2d", "LayerNorm",
    "Embedding", "GRU", "LSTM", "MultiheadAttention", "TransformerEncoderLayer", "TransformerEncoder", "Module", "ModuleList", "Parameter", "Identity", "AdaptiveAvgPool2d", "functional",
]
