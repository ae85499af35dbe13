"""kiln.text: tokenizers (character, byte-level BPE), their JSON and ONNX metadata, the sampling
loop on kiln models and on ONNX sessions, and cross_entropy over [B, T, V] logits."""

import pickle

import numpy as np
import pytest

import kiln
from kiln import nn, optim
from kiln.errors import InvalidInputError, ShapeError
from kiln.text import BOS, EOS, PAD, UNK, BPETokenizer, CharTokenizer, Tokenizer, generate

NAMES = ["anna", "maria", "marta", "mario", "martin", "anton", "antonia", "ada", "alan", "alina",
         "marina", "nina", "tina", "tim", "tom", "tamara", "amanda", "miranda"]
WINDOW = 4


@pytest.fixture(scope="module")
def tok():
    return CharTokenizer.fit(NAMES)


@pytest.fixture(scope="module")
def window_model(tok):
    """A next-character model over a fixed window: Embedding → Flatten → Linear, trained briefly."""
    X, y = tok.windows(NAMES, WINDOW)
    kiln.manual_seed(0)
    model = nn.Sequential(nn.Embedding(tok.vocab_size, 8), nn.Flatten(), nn.Linear(WINDOW * 8, 32), nn.ReLU(),
                          nn.Linear(32, tok.vocab_size))
    model.compile(optimizer=optim.Adam(lr=1e-2), loss="cross_entropy", metrics=["accuracy"])
    model.fit(X, y, epochs=40, batch_size=32, verbose=0)
    return model


def test_char_ids_follow_code_points_and_unseen_characters_are_unk(tok):
    chars = sorted(set("".join(NAMES)))
    assert tok.vocab_size == 4 + len(chars) == len(tok)
    assert (PAD, UNK, BOS, EOS) == (0, 1, 2, 3)
    ids = tok.encode("mia")
    assert ids.dtype == np.int64 and list(ids) == [4 + chars.index(c) for c in "mia"]
    assert list(tok.encode("Mia?")) == [UNK, ids[1], ids[2], UNK]
    assert tok.decode(tok.encode("Mia?")) == "\ufffdia\ufffd"
    assert tok.decode([BOS, *ids, EOS, PAD]) == "mia"
    assert tok.decode(np.array([], np.int64)) == "" and tok.encode("").shape == (0,)
    assert [tok.token(i) for i in range(5)] == ["<pad>", "<unk>", "<bos>", "<eos>", chars[0]]


def test_bpe_encodes_any_string_and_decodes_it_back():
    corpus = [f"{a} {b}" for a in NAMES for b in NAMES[:6]]
    bpe = BPETokenizer.fit(corpus, vocab_size=320)
    assert isinstance(bpe, BPETokenizer) and 260 < bpe.vocab_size <= 320
    for s in ["maria anna", "Zoë Ågren 李娜 😀", "", "\x00\t\n  ", "a" * 500]:
        ids = bpe.encode(s)
        assert UNK not in ids and ids.dtype == np.int64
        assert bpe.decode(ids) == s
    assert len(bpe.encode("maria anna")) < len("maria anna") / 2
    # a lone byte of a multi-byte character decodes to U+FFFD, not an error
    assert bpe.decode([4 + 0xC3]) == "\ufffd"
    with pytest.raises(InvalidInputError, match="vocab_size must be at least 260"):
        BPETokenizer.fit(corpus, vocab_size=100)


def test_bad_input_raises_invalid_input_errors(tok):
    for bad in ([tok.vocab_size], [-1], [2**40]):
        with pytest.raises(InvalidInputError, match="not in the vocabulary"):
            tok.decode(bad)
    with pytest.raises(InvalidInputError, match="integers"):
        tok.decode([1.5])
    with pytest.raises(InvalidInputError, match="1-D"):
        tok.decode([[4, 5]])
    with pytest.raises(InvalidInputError, match="string"):
        tok.encode(42)  # type: ignore[arg-type]
    with pytest.raises(InvalidInputError, match="item 1 is int"):
        CharTokenizer.fit(["ab", 3])  # type: ignore[list-item]
    with pytest.raises(InvalidInputError, match="no characters"):
        CharTokenizer.fit(["", ""])
    with pytest.raises(InvalidInputError, match="size must be a positive integer"):
        tok.windows(NAMES, 0)


def test_batches_and_windows(tok):
    ids, lengths = tok.encode_batch(["ada", "miranda", ""], bos=True, eos=True)
    assert ids.shape == (3, 9) and ids.dtype == np.int64 and list(lengths) == [5, 9, 2]
    assert list(ids[0]) == [BOS, *tok.encode("ada"), EOS, PAD, PAD, PAD, PAD]
    cut, lengths = tok.encode_batch(["miranda"], max_len=3)
    assert cut.shape == (1, 3) and tok.decode(cut[0]) == "mir"
    X, y = tok.windows(["ada"], 3)
    a, d = tok.encode("ad")
    assert X.tolist() == [[PAD, PAD, BOS], [PAD, BOS, a], [BOS, a, d], [a, d, a]]
    assert y.tolist() == [a, d, a, EOS]


def test_json_save_load_and_mutated_documents(tok, tmp_path):
    bpe = BPETokenizer.fit(NAMES * 4, vocab_size=290)
    for t in (tok, bpe):
        t.save(tmp_path / "tok.json")
        back = Tokenizer.load(tmp_path / "tok.json")
        assert type(back) is type(t) and back == t and back.to_json() == t.to_json()
        assert list(back.encode("maria 😀")) == list(t.encode("maria 😀"))
    for t in (tok, bpe):
        back = pickle.loads(pickle.dumps(t))
        assert type(back) is type(t) and back == t
    rng = np.random.default_rng(0)
    outcomes = {"loaded": 0, "refused": 0}
    for trial in range(600):
        data = bytearray((tok if trial % 2 else bpe).to_json().encode())
        i = int(rng.integers(len(data)))
        if trial % 3 == 0:
            data[i] ^= 1 << int(rng.integers(8))
        elif trial % 3 == 1:
            del data[i:]
        else:
            data[i] = int(rng.choice(list(b'0123456789[]{},":')))
        try:
            text = data.decode()
        except UnicodeDecodeError:
            continue
        try:
            t = Tokenizer.from_json(text)
        except InvalidInputError:
            outcomes["refused"] += 1
            continue
        outcomes["loaded"] += 1
        assert t.decode(t.encode("Zoë 😀 maria")) is not None  # whatever loads works
    print(f"\nmutated tokenizer JSON (loaded, refused): {outcomes}")
    assert outcomes["refused"] > 250


def test_generation_is_the_same_on_the_model_kilns_engine_and_tract(window_model, tok):
    data = window_model.export_onnx(None, tokenizer=tok)
    kiln_engine, tract = kiln.InferenceSession(data), kiln.InferenceSession(data, engine="tract")
    assert kiln_engine.engine == "kiln" and kiln_engine.tokenizer == tok
    texts = set()
    for seed in range(6):
        for prompt, temperature, top_k in (("ma", 0.8, 5), ("", 1.0, None), ("t", 1.5, 3)):
            want = generate(window_model, tok, prompt, 12, temperature, top_k, seed)
            assert want.startswith(prompt) and len(want) <= len(prompt) + 12
            assert generate(kiln_engine, None, prompt, 12, temperature, top_k, seed) == want
            assert generate(tract, tok, prompt, 12, temperature, top_k, seed) == want
            texts.add(want)
    assert len(texts) > 6, texts  # the seed matters
    # greedy ignores the seed; top_k=1 is greedy
    greedy = {generate(window_model, tok, "ma", 12, 0.0, None, s) for s in range(4)}
    assert len(greedy) == 1 and generate(window_model, tok, "ma", 12, 2.0, 1, 9) in greedy


def test_generation_streams_tokens_and_defines_its_edge_cases(window_model, tok):
    pieces = []
    text = generate(window_model, tok, "Ma€", 8, 1.0, None, 3, on_token=lambda s, i: pieces.append((s, i)))
    assert text == "Ma€" + "".join(s for s, _ in pieces)  # unknown prompt characters are fine
    assert all(i >= 4 for _, i in pieces) and tok.decode([i for _, i in pieces]) == text[3:]
    assert generate(window_model, tok, "ma", 0) == "ma"
    long = generate(window_model, tok, "ma", 300, 3.0, None, 1)
    assert len(long) <= 302

    def stop(s, i):
        raise KeyError("from the callback")

    with pytest.raises(KeyError, match="from the callback"):
        generate(window_model, tok, "ma", 5, on_token=stop)
    for kwargs, match in [({"temperature": -1.0}, "temperature must be 0"), ({"temperature": float("nan")}, "temperature"),
                          ({"max_new_tokens": -1}, "max_new_tokens must be 0 to"),
                          ({"max_new_tokens": 10**6}, "max_new_tokens must be 0 to"),
                          ({"top_k": 0}, "top_k must be at least 1"), ({"seed": -1}, "seed")]:
        with pytest.raises(InvalidInputError, match=match):
            generate(window_model, tok, "ma", **kwargs)
    with pytest.raises(InvalidInputError, match="pass the tokenizer"):
        generate(window_model, None, "ma")
    plain = kiln.InferenceSession(window_model.export_onnx(None))
    assert plain.tokenizer is None
    with pytest.raises(InvalidInputError, match="no tokenizer"):
        generate(plain, None, "ma")
    with pytest.raises(InvalidInputError, match="no tokenizer"):
        Tokenizer.from_onnx(window_model.export_onnx(None))
    other = CharTokenizer.fit(["xyz"])
    with pytest.raises(ShapeError, match="the tokenizer has 7 ids"):
        generate(window_model, other, "x")
    untrained = nn.Sequential(nn.Embedding(5, 2), nn.Flatten(), nn.Linear(8, 5))
    with pytest.raises(InvalidInputError, match="not seen data"):
        generate(untrained, other, "x")


class PerPositionLM(nn.Module):
    """[B, T] ids → [B, T, V] logits, each position from its own id: a bigram model."""

    def __init__(self, vocab, steps):
        super().__init__()
        self.vocab, self.steps = vocab, steps
        self.emb, self.out = nn.Embedding(vocab, 16), nn.Linear(16, vocab)

    def forward(self, x):
        return self.out(self.emb(x).reshape(-1, 16)).reshape(-1, self.steps, self.vocab)


def test_cross_entropy_over_every_position_and_generation_from_a_row_per_position(tok):
    ids, lengths = tok.encode_batch(NAMES, bos=True, eos=True)
    X, Y = ids[:, :-1], ids[:, 1:]
    kiln.manual_seed(1)
    lm = PerPositionLM(tok.vocab_size, X.shape[1])
    lm.compile(optimizer=optim.Adam(lr=2e-2), loss="cross_entropy", metrics=["accuracy"])
    first = lm.evaluate(X, Y)
    logits = lm.predict(X).astype(np.float64)  # [B, T, V]
    assert logits.shape == (len(NAMES), X.shape[1], tok.vocab_size)
    lse = np.log(np.exp(logits - logits.max(-1, keepdims=True)).sum(-1)) + logits.max(-1)
    want = (lse - np.take_along_axis(logits, Y[..., None], -1)[..., 0]).mean()
    assert abs(first["loss"] - want) < 1e-5
    assert abs(first["accuracy"] - (logits.argmax(-1) == Y).mean()) < 1e-9
    history = lm.fit(X, Y, epochs=60, batch_size=8, verbose=0)
    assert history.history["loss"][-1] < 0.6 * history.history["loss"][0]
    # generation reads the row of the last real id of a right-padded window
    data = lm.export_onnx(None, tokenizer=tok)
    sess = kiln.InferenceSession(data)
    assert sess.outputs[0].shape == (None, X.shape[1], tok.vocab_size)
    for seed in range(4):
        want = generate(lm, tok, "m", 10, 1.0, None, seed)
        assert generate(sess, None, "m", 10, 1.0, None, seed) == want
    # the bigram model's greedy choice after "m" is what its logits say
    row = lm.predict(np.array([[BOS, *tok.encode("m")] + [PAD] * (X.shape[1] - 2)]))[0, 1]
    best = int(np.argsort(-row, kind="stable")[[i >= 4 or i == EOS for i in np.argsort(-row, kind="stable")]][0])
    assert generate(lm, tok, "m", 1, 0.0) == "m" + tok.decode([best])
    with pytest.raises(ShapeError, match=r"labels of shape \[18, 3\]"):
        lm.evaluate(X, Y[:, :3])


def test_padding_can_be_ignored_by_the_loss_and_accuracy(tok):
    """Right-padded [B, T] targets with ignore_index=PAD: the loss and accuracy are those of the real positions."""
    ids, lengths = tok.encode_batch(NAMES, bos=True, eos=True)
    X, Y = ids[:, :-1], ids[:, 1:]
    assert (Y == PAD).any()
    kiln.manual_seed(3)
    lm = PerPositionLM(tok.vocab_size, X.shape[1])
    lm.compile(optimizer=optim.Adam(lr=2e-2), loss=kiln.losses.CrossEntropyLoss(ignore_index=PAD), metrics=["accuracy"])
    got = lm.evaluate(X, Y)
    logits = lm.predict(X).astype(np.float64)
    real = Y != PAD
    lse = np.log(np.exp(logits - logits.max(-1, keepdims=True)).sum(-1)) + logits.max(-1)
    nll = lse - np.take_along_axis(logits, Y[..., None], -1)[..., 0]
    assert abs(got["loss"] - nll[real].mean()) < 1e-5  # one batch: the mean over the real positions
    assert abs(got["accuracy"] - (logits.argmax(-1) == Y)[real].mean()) < 1e-9
    history = lm.fit(X, Y, epochs=40, batch_size=len(NAMES), verbose=0)
    assert history.history["loss"][-1] < 0.7 * history.history["loss"][0]
    with pytest.raises(InvalidInputError, match="ignore_index must be a class index"):
        kiln.losses.CrossEntropyLoss(ignore_index=-100)


def test_bad_input_to_generate_has_one_defined_answer_in_both_languages(window_model, tok):
    """What wasm/tests/text.test.mjs checks for kiln-wasm, on the Python side: every odd input is a
    clear InvalidInputError/ShapeError or a defined text."""
    # a prompt longer than the window: the model sees its last WINDOW ids, so only they matter
    assert WINDOW == 4
    for seed in range(3):
        long = generate(window_model, tok, "x" * 5000 + "ma", 8, 0.8, 5, seed)
        assert long == "x" * 4998 + generate(window_model, tok, "xxma", 8, 0.8, 5, seed)
    # a lone surrogate (Python strings may hold one, UTF-8 cannot) reads as U+FFFD, as in JavaScript
    assert list(tok.encode("ma\ud800")) == list(tok.encode("ma\ufffd")) == [*tok.encode("ma"), UNK]
    assert generate(window_model, tok, "ma\ud800", 8, 1.0, None, 4) == generate(window_model, tok, "ma\ufffd", 8, 1.0, None, 4)
    assert generate(window_model, tok, "ma\ud800", 8, 1.0, None, 4).startswith("ma\ufffd")
    assert tok.encode_batch(["a\udfff"])[0].tolist() == [[*tok.encode("a"), UNK]]
    # top_k at least the vocabulary is every token, however large; below 1 an error, however small
    for big in (tok.vocab_size, 10**6, 2**63, 10**30):
        assert generate(window_model, tok, "ma", 10, 1.0, big, 5) == generate(window_model, tok, "ma", 10, 1.0, None, 5)
    for small in (-1, -(10**30)):
        with pytest.raises(InvalidInputError, match="top_k must be at least 1"):
            generate(window_model, tok, "ma", top_k=small)
    for bad, match in [({"max_new_tokens": 10**30}, "max_new_tokens 10+ is out of range"),
                       ({"max_new_tokens": 2.5}, "max_new_tokens must be an integer"),
                       ({"max_new_tokens": "3"}, "max_new_tokens must be an integer"),
                       ({"temperature": float("inf")}, "temperature must be 0"),
                       ({"temperature": "hot"}, "temperature must be a number"),
                       ({"on_token": 3}, "on_token must be a function")]:
        with pytest.raises(InvalidInputError, match=match):
            generate(window_model, tok, "ma", **bad)
    # a classifier exported with a tokenizer is not a language model: its 3 scores are not one per id
    X, _ = tok.windows(NAMES, WINDOW)
    kiln.manual_seed(0)
    classifier = nn.Sequential(nn.Embedding(tok.vocab_size, 4), nn.Flatten(), nn.Linear(WINDOW * 4, 3))
    classifier.compile(optimizer="adam", loss="cross_entropy")
    classifier.fit(X, X[:, -1] % 3, epochs=1, verbose=0)
    session = kiln.InferenceSession(classifier.export_onnx(None, tokenizer=tok, labels=["a", "b", "c"]))
    assert session.tokenizer == tok
    for model, t in ((session, None), (classifier, tok)):
        with pytest.raises(ShapeError, match=f"gives 3 logits per token but the tokenizer has {tok.vocab_size} ids"):
            generate(model, t, "ma")
        assert generate(model, t, "ma", max_new_tokens=0) == "ma"  # nothing to run: the prompt back
