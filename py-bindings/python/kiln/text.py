"""``kiln.text``: tokenizers that travel with the model, and text generation.

    tok = kiln.text.CharTokenizer.fit(names)            # or BPETokenizer.fit(texts, vocab_size=500)
    X, y = tok.windows(names, 8)                         # next-token pairs over a window of 8 ids
    model.fit(X, y, ...)
    model.export_onnx("names.onnx", tokenizer=tok)       # the tokenizer travels in the metadata
    kiln.text.generate(model, tok, "Ma", max_new_tokens=8, temperature=0.8, top_k=5, seed=0)

The tokenizers and the sampling loop are kiln-core's (``core/src/text``), the code kiln-wasm's
``model.tokenizer`` and ``model.generate`` run, so a string gives the same ids and a seed the same
text in the notebook and in the page.

Ids 0–3 are the special tokens of every kiln tokenizer: ``<pad>`` (fills batches and short
windows), ``<unk>`` (a character the character tokenizer never saw), ``<bos>`` (starts every
sequence generation feeds a model) and ``<eos>`` (ends one). Text never encodes to them;
``decode`` drops pad, bos and eos and writes unk as U+FFFD.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any, Callable, Iterable, Optional, Union

import numpy as np

from . import _kiln
from .errors import InvalidInputError
from .session import InferenceSession

if TYPE_CHECKING:
    from .model import Module

__all__ = ["Tokenizer", "CharTokenizer", "BPETokenizer", "generate", "PAD", "UNK", "BOS", "EOS"]

PAD, UNK, BOS, EOS = range(len(_kiln.TEXT_SPECIALS))
"""The special ids, the same in every kiln tokenizer."""

_Path = Union[str, "os.PathLike[str]"]


def _unicode(text: str) -> str:
    """``text`` as UTF-8 can carry it: a lone surrogate (which Python strings may hold and UTF-8
    cannot) becomes U+FFFD, as a JavaScript string becomes when it reaches kiln-wasm, so both
    languages give the same ids for it."""
    try:
        text.encode("utf-8")
        return text
    except UnicodeEncodeError:
        return text.encode("utf-16", "surrogatepass").decode("utf-16", "replace")


def _texts(texts: Any, what: str) -> list[str]:
    if isinstance(texts, str):
        return [_unicode(texts)]
    try:
        items = list(texts)
    except TypeError:
        raise InvalidInputError(f"{what}: expected a list of strings, got {type(texts).__name__}") from None
    for i, t in enumerate(items):
        if not isinstance(t, str):
            raise InvalidInputError(f"{what}: item {i} is {type(t).__name__}, not a string")
    return [_unicode(t) for t in items]


def _ids(ids: Any, what: str) -> np.ndarray:
    arr = np.asarray(ids)
    if arr.ndim == 0 or arr.ndim > 1:
        raise InvalidInputError(f"{what}: expected a 1-D sequence of token ids, got shape {arr.shape}")
    if arr.size == 0:
        return np.zeros(0, np.int64)
    if not np.issubdtype(arr.dtype, np.integer):
        raise InvalidInputError(f"{what}: token ids must be integers, got dtype {arr.dtype}")
    if arr.dtype == np.uint64 and arr.max() > np.iinfo(np.int64).max:
        raise InvalidInputError(f"{what}: id {arr.max()} is not in the vocabulary")
    return np.ascontiguousarray(arr, dtype=np.int64)


class Tokenizer:
    """A kiln tokenizer: :class:`CharTokenizer` or :class:`BPETokenizer`. Load one with
    :meth:`load`, :meth:`from_json` or :meth:`from_onnx` (the right class comes back)."""

    def __init__(self, core: _kiln.Tokenizer) -> None:
        self._core = core

    @staticmethod
    def _wrap(core: _kiln.Tokenizer) -> "Tokenizer":
        return CharTokenizer(core) if core.kind == "char" else BPETokenizer(core)

    @property
    def vocab_size(self) -> int:
        """The number of ids, the four special tokens included: the logits a language model
        gives per position."""
        return int(self._core.vocab_size)

    def encode(self, text: str) -> np.ndarray:
        """The ids of ``text`` (np.int64; no bos or eos added). A lone surrogate reads as U+FFFD,
        as in JavaScript."""
        if not isinstance(text, str):
            raise InvalidInputError(f"encode: expected a string, got {type(text).__name__}")
        return self._core.encode(_unicode(text))

    def decode(self, ids: Any) -> str:
        """The text of ``ids``: special tokens dropped, unknown characters as U+FFFD. An id outside
        the vocabulary raises InvalidInputError."""
        return self._core.decode(_ids(ids, "decode"))

    def token(self, id: int) -> str:
        """How one id reads: ``"<eos>"`` for the specials, its text otherwise."""
        return self._core.token(int(id))

    def encode_batch(self, texts: Iterable[str], max_len: Optional[int] = None, bos: bool = False,
                     eos: bool = False) -> tuple[np.ndarray, np.ndarray]:
        """``(ids, lengths)``: one row per text in an int64 matrix ``[len(texts), T]``, padded on the
        right with ``<pad>``, with ``<bos>`` in front and ``<eos>`` behind when asked, cut to
        ``max_len`` ids when given (else ``T`` is the longest row); ``lengths`` counts each row's
        real tokens."""
        if max_len is not None and (not isinstance(max_len, int) or max_len < 1):
            raise InvalidInputError(f"encode_batch: max_len must be a positive integer, got {max_len!r}")
        return self._core.encode_batch(_texts(texts, "encode_batch"), max_len, bool(bos), bool(eos))

    def windows(self, texts: Iterable[str], size: int) -> tuple[np.ndarray, np.ndarray]:
        """Training pairs for a model that predicts the next id from the ``size`` ids before it:
        ``(X [n, size], y [n])``, int64. Each text is ``<bos>`` + its ids + ``<eos>``; every id
        after bos is a target, its context left-padded with ``<pad>`` — exactly the context
        :func:`generate` gives a model with a fixed window."""
        if not isinstance(size, int) or size < 1:
            raise InvalidInputError(f"windows: size must be a positive integer, got {size!r}")
        return self._core.windows(_texts(texts, "windows"), size)

    def to_json(self) -> str:
        """The JSON document ``export_onnx(..., tokenizer=tok)`` stores as ``kiln.tokenizer``."""
        return self._core.to_json()

    @staticmethod
    def from_json(text: str) -> "Tokenizer":
        """The tokenizer a :meth:`to_json` document describes; anything else raises InvalidInputError."""
        if not isinstance(text, str):
            raise InvalidInputError(f"from_json: expected a string, got {type(text).__name__}")
        return Tokenizer._wrap(_kiln.Tokenizer.from_json(text))

    def save(self, path: _Path) -> None:
        """Write the JSON document to ``path``."""
        with open(path, "w", encoding="utf-8") as f:
            f.write(self.to_json())

    @staticmethod
    def load(path: _Path) -> "Tokenizer":
        """Read a tokenizer written by :meth:`save`."""
        with open(path, encoding="utf-8") as f:
            return Tokenizer.from_json(f.read())

    @staticmethod
    def from_onnx(model: Union[_Path, bytes]) -> "Tokenizer":
        """The tokenizer an ONNX file carries (``export_onnx(..., tokenizer=tok)``); a model without
        one raises InvalidInputError."""
        if isinstance(model, (bytes, bytearray, memoryview)):
            data = bytes(model)
        else:
            with open(model, "rb") as f:
                data = f.read()
        core = _kiln.Tokenizer.from_onnx(data)
        if core is None:
            raise InvalidInputError(f"this model carries no tokenizer (no {_kiln.TOKENIZER_METADATA_KEY!r} metadata): "
                                    "export it with export_onnx(..., tokenizer=tok)")
        return Tokenizer._wrap(core)

    def __getstate__(self) -> str:  # pickling (multiprocessing, Ray) goes through the JSON
        return self.to_json()

    def __setstate__(self, state: str) -> None:
        self._core = _kiln.Tokenizer.from_json(state)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Tokenizer) and other.to_json() == self.to_json()

    def __hash__(self) -> int:
        return hash(self.to_json())

    def __len__(self) -> int:
        return self.vocab_size

    def __repr__(self) -> str:
        return f"{type(self).__name__}(vocab_size={self.vocab_size})"


class CharTokenizer(Tokenizer):
    """One id per character seen in training (in code-point order, after the four specials); a
    character never seen encodes to ``<unk>`` (id 1)."""

    @classmethod
    def fit(cls, texts: Iterable[str]) -> "CharTokenizer":
        """Every character of ``texts`` (a list of strings, or one string)."""
        return cls(_kiln.Tokenizer.fit_char(_texts(texts, "CharTokenizer.fit")))


class BPETokenizer(Tokenizer):
    """Byte-level BPE: ids 4–259 are the 256 bytes of UTF-8, then one id per merge learnt on the
    corpus. Any string encodes (there are no unknown characters) and decodes back to itself."""

    @classmethod
    def fit(cls, texts: Iterable[str], vocab_size: int = 1000) -> "BPETokenizer":
        """Learn merges on ``texts`` until ``vocab_size`` ids (at least 260) or until no pair of
        neighbouring tokens occurs twice, whichever comes first."""
        if not isinstance(vocab_size, int) or isinstance(vocab_size, bool) or vocab_size < 0:
            raise InvalidInputError(f"BPETokenizer.fit: vocab_size must be a positive integer, got {vocab_size!r}")
        return cls(_kiln.Tokenizer.fit_bpe(_texts(texts, "BPETokenizer.fit"), vocab_size))


def generate(model: Union["Module", InferenceSession, _Path], tokenizer: Optional[Tokenizer] = None, prompt: str = "",
             max_new_tokens: int = 32, temperature: float = 1.0, top_k: Optional[int] = None, seed: int = 0,
             on_token: Optional[Callable[[str, int], Any]] = None) -> str:
    """The prompt followed by up to ``max_new_tokens`` generated tokens (fewer when the model
    picks ``<eos>``), sampled by kiln-core's loop: ``temperature`` 0 always takes the most likely
    token, ``top_k`` samples among the k most likely only, and ``seed`` fixes the draws — the same
    seed gives the same text here and in kiln-wasm's ``model.generate``.

    ``model``: a trained kiln model, a :class:`kiln.InferenceSession`, or the path of an ONNX file.
    Its input is the token ids ``[batch, T]``; its output the logits ``[batch, vocab]`` for the
    next token, or ``[batch, T, vocab]``. A model with a fixed window sees the last ``T`` ids of
    ``<bos>`` + prompt + what was generated, padded as :meth:`Tokenizer.windows` pads. A causal
    language model (a one-direction GRU/LSTM or causal self-attention, everything else per
    position) runs one new position per token, its state or keys and values kept, on a kiln model
    and on kiln's engine alike; any other model reruns the window for every token, with the same
    text. ``tokenizer`` defaults to the one an ONNX model carries.
    ``on_token(text, id)`` is called with each token's text as it comes.

    Edge cases, the same in kiln-wasm: prompt characters the tokenizer never saw are ``<unk>``
    (a lone surrogate is U+FFFD first); an empty prompt starts from ``<bos>`` alone; a prompt longer
    than the model's window is seen by its last ids; ``max_new_tokens=0`` gives the prompt back;
    ``top_k`` at least the vocabulary samples from every token, as ``None`` does; a model whose
    logits are not one per tokenizer id (a classifier exported with a tokenizer) raises ShapeError."""
    if not isinstance(prompt, str):
        raise InvalidInputError(f"generate: prompt must be a string, got {type(prompt).__name__}")
    for name, v in (("max_new_tokens", max_new_tokens), ("seed", seed)):
        if not isinstance(v, (int, np.integer)) or isinstance(v, bool):
            raise InvalidInputError(f"generate: {name} must be an integer, got {v!r}")
    if not 0 <= seed < 2**64:
        raise InvalidInputError(f"generate: seed must be 0 to 2**64 - 1, got {seed}")
    if not -(2**63) <= max_new_tokens < 2**63:  # the core checks the range; this one does not fit its int64
        raise InvalidInputError(f"generate: max_new_tokens {max_new_tokens} is out of range")
    if top_k is not None and (not isinstance(top_k, (int, np.integer)) or isinstance(top_k, bool)):
        raise InvalidInputError(f"generate: top_k must be an integer or None, got {top_k!r}")
    if top_k is not None and top_k >= 2**63:  # more than any vocabulary: every token, as the core reads any k >= vocab
        top_k = 2**63 - 1
    if top_k is not None and top_k < -(2**63):
        raise InvalidInputError(f"generate: top_k must be at least 1 (or None, to sample from every token), got {top_k}")
    if on_token is not None and not callable(on_token):
        raise InvalidInputError(f"generate: on_token must be a function (text, id), got {type(on_token).__name__}")
    if not isinstance(temperature, (int, float, np.floating, np.integer)) or isinstance(temperature, bool):
        raise InvalidInputError(f"generate: temperature must be a number, got {temperature!r}")
    if tokenizer is not None and not isinstance(tokenizer, Tokenizer):
        raise InvalidInputError(f"generate: tokenizer must be a kiln.text tokenizer, got {type(tokenizer).__name__}")
    args = (_unicode(prompt), int(max_new_tokens), float(temperature), None if top_k is None else int(top_k), int(seed), on_token)
    if isinstance(model, (str, os.PathLike)):
        model = InferenceSession(model)
    if isinstance(model, InferenceSession):
        return _kiln.generate_session(model._core, None if tokenizer is None else tokenizer._core, *args)
    if not hasattr(model, "_ensure_core"):
        raise InvalidInputError(f"generate: expected a kiln model, an InferenceSession or an ONNX path, "
                                f"got {type(model).__name__}")
    if tokenizer is None:
        raise InvalidInputError("generate: pass the tokenizer the model was trained with "
                                "(a kiln model does not carry one; its ONNX export does)")
    return _kiln.generate_model(model._ensure_core(), tokenizer._core, *args)
