"""Train the text page's two models and export them where web-demo/text.html loads them (make demo runs this).

The recipe of notebooks/04-text.ipynb, as a script, trimmed to a few seconds: Faker's surname lists of
seven locales (data inside the package, nothing downloaded), one kiln.text.CharTokenizer, and

- names-language.onnx: Embedding → GRU → Linear, which language a surname comes from. It reads the
  name's last T ids left-padded with <pad> (`left_pad`; the page pads the same way);
- names-generator.onnx: a GRU language model, [B, 16] ids → [B, 16, vocab] logits, for generate;
- names-transformer.onnx: a small causal transformer language model (notebook 04's NameGPT, smaller),
  the same ids in and logits out. kiln's engine generates with both position by position (the GRU's
  state carried, the attention's keys and values cached).

Both carry the tokenizer (export_onnx(..., tokenizer=tok)); the classifier also its labels.

    python scripts/train_text_demo.py                    # train and export into web-demo/model/
    python scripts/train_text_demo.py --reference FILE   # Python's answers for the browser test (JSON in, JSON out)
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import sys
import time
from collections import Counter

import numpy as np

import kiln
from kiln import callbacks, nn, optim
from kiln.text import PAD, CharTokenizer, Tokenizer, generate

LOCALES = {"German": "de_DE", "French": "fr_FR", "Italian": "it_IT", "Spanish": "es_ES",
           "Dutch": "nl_NL", "Finnish": "fi_FI", "Croatian": "hr_HR"}
LANGUAGES = list(LOCALES)
T = 14  # the classifier's window
LM_STEPS = 16  # the generator's window
PER_LANGUAGE = 400
OUT = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "web-demo", "model")


def surnames() -> dict[str, list[str]]:
    """Each locale's surnames, from Faker's person providers (plain Python data)."""
    return {lang: sorted(set(importlib.import_module(f"faker.providers.person.{loc}").Provider.last_names))
            for lang, loc in LOCALES.items()}


def left_pad(tok: Tokenizer, names: list[str], steps: int = T) -> np.ndarray:
    """[len(names), steps] int64: each name's last `steps` ids with <pad> in front, the classifier's input."""
    x = np.full((len(names), steps), PAD, np.int64)
    for row, name in enumerate(names):
        ids = tok.encode(name)[-steps:]
        x[row, steps - len(ids):] = ids
    return x


class NameLanguage(nn.Module):
    def __init__(self, vocab: int, classes: int, emb: int = 32, hidden: int = 128):
        super().__init__()
        self.emb = nn.Embedding(vocab, emb)
        self.drop = nn.Dropout(0.2)
        self.gru = nn.GRU(emb, hidden, batch_first=True)
        self.head = nn.Linear(hidden, classes)

    def forward(self, ids):
        _, h = self.gru(self.drop(self.emb(ids)))
        return self.head(h[-1])


class NameLM(nn.Module):
    def __init__(self, vocab: int, emb: int = 32, hidden: int = 128):
        super().__init__()
        self.vocab, self.hidden = vocab, hidden
        self.emb = nn.Embedding(vocab, emb)
        self.gru = nn.GRU(emb, hidden, batch_first=True)
        self.head = nn.Linear(hidden, vocab)

    def forward(self, ids):
        out, _ = self.gru(self.emb(ids))
        return self.head(out.reshape(-1, self.hidden)).reshape(-1, ids.shape[1], self.vocab)


class NameGPT(nn.Module):
    """Token and learned position embeddings, pre-norm causal TransformerEncoderLayers, a Linear head."""

    def __init__(self, vocab: int, steps: int = LM_STEPS, d: int = 32, heads: int = 4, layers: int = 2):
        super().__init__()
        self.emb, self.pos = nn.Embedding(vocab, d), nn.Embedding(steps, d)
        layer = nn.TransformerEncoderLayer(d, heads, dim_feedforward=2 * d, dropout=0.0,
                                           batch_first=True, norm_first=True)
        self.encoder = nn.TransformerEncoder(layer, layers)
        self.head = nn.Linear(d, vocab)

    def forward(self, ids):
        return self.head(self.encoder(self.emb(ids) + self.pos.weight, is_causal=True))


def train(out: str, seed: int) -> int:
    lists = surnames()
    seen_in = Counter(n for names in lists.values() for n in names)
    tok = CharTokenizer.fit(sorted(seen_in))
    rng = np.random.default_rng(seed)
    names, labels = [], []
    for i, lang in enumerate(LANGUAGES):  # names in one list only, at most PER_LANGUAGE each
        own = [str(n) for n in rng.permutation([n for n in lists[lang] if seen_in[n] == 1])[:PER_LANGUAGE]]
        names += own
        labels += [i] * len(own)
    order = rng.permutation(len(names))
    x, y = left_pad(tok, [names[i] for i in order]), np.array(labels)[order]
    cut = int(0.8 * len(x))

    kiln.manual_seed(seed)
    start = time.perf_counter()
    classifier = NameLanguage(tok.vocab_size, len(LANGUAGES))
    classifier.compile(optimizer=optim.Adam(lr=2e-3), loss="cross_entropy", metrics=["accuracy"])
    classifier.fit(x[:cut], y[:cut], epochs=20, batch_size=32, validation_data=(x[cut:], y[cut:]),
                   callbacks=[callbacks.EarlyStopping(patience=3)], verbose=0)
    accuracy = classifier.evaluate(x[cut:], y[cut:])["accuracy"]
    print(f"classifier: validation accuracy {accuracy:.3f} over {len(LANGUAGES)} languages "
          f"({time.perf_counter() - start:.1f} s)")

    lm_names = [str(n) for n in rng.permutation(sorted(seen_in))]
    ids, _ = tok.encode_batch(lm_names, max_len=LM_STEPS + 1, bos=True, eos=True)
    start = time.perf_counter()
    lm = NameLM(tok.vocab_size)
    lm.compile(optimizer=optim.Adam(lr=3e-3), loss=kiln.losses.CrossEntropyLoss(ignore_index=PAD))
    hist = lm.fit(ids[:, :-1], ids[:, 1:], epochs=8, batch_size=32, validation_split=0.1,
                  callbacks=[callbacks.EarlyStopping(patience=2)], verbose=0)
    val_loss = min(hist.history["val_loss"])
    print(f"generator: validation loss {val_loss:.3f} nats per character ({time.perf_counter() - start:.1f} s); "
          f"e.g. {', '.join(generate(lm, tok, '', 16, 0.8, 8, s) for s in range(5))}")
    start = time.perf_counter()
    kiln.manual_seed(seed)
    gpt = NameGPT(tok.vocab_size)
    gpt.compile(optimizer=optim.Adam(lr=3e-3), loss=kiln.losses.CrossEntropyLoss(ignore_index=PAD))
    gpt_hist = gpt.fit(ids[:, :-1], ids[:, 1:], epochs=6, batch_size=32, validation_split=0.1,
                       callbacks=[callbacks.EarlyStopping(patience=2)], verbose=0)
    gpt_loss = min(gpt_hist.history["val_loss"])
    print(f"transformer: validation loss {gpt_loss:.3f} nats per character ({time.perf_counter() - start:.1f} s); "
          f"e.g. {', '.join(generate(gpt, tok, '', 16, 0.8, 8, s) for s in range(5))}")
    if accuracy < 0.6 or max(val_loss, gpt_loss) > 0.6 * np.log(tok.vocab_size):
        print("train_text_demo: the models did not learn enough, not exporting", file=sys.stderr)
        return 1

    os.makedirs(out, exist_ok=True)
    lang_path, gen_path = os.path.join(out, "names-language.onnx"), os.path.join(out, "names-generator.onnx")
    gpt_path = os.path.join(out, "names-transformer.onnx")
    classifier.export_onnx(lang_path, labels=LANGUAGES, tokenizer=tok)
    lm.export_onnx(gen_path, tokenizer=tok)
    gpt.export_onnx(gpt_path, tokenizer=tok)
    # what the page runs must be what Python predicts and generates
    diff = float(np.abs(kiln.InferenceSession(lang_path).run(x[cut:]) - classifier.predict(x[cut:])).max())
    assert diff < 1e-4, f"the exported classifier disagrees with predict by {diff}"
    for path, model in [(gen_path, lm), (gpt_path, gpt)]:
        session = kiln.InferenceSession(path)
        for s in range(4):
            assert generate(session, None, "Ma", 16, 0.8, 5, s) == generate(model, tok, "Ma", 16, 0.8, 5, s)
    print(f"wrote {lang_path} ({os.path.getsize(lang_path):,} bytes), {gen_path} ({os.path.getsize(gen_path):,} bytes) "
          f"and {gpt_path} ({os.path.getsize(gpt_path):,} bytes)")
    return 0


def reference(path: str) -> None:
    """Python's answers for the exported files, which the browser test compares the page with.

    In: {"classifier": onnx path, "generators": {key: onnx path}, "names": [...], "runs": [{model (a
    key), prompt, maxNewTokens, temperature, topK, seed}]}. Out (stdout): per name the softmaxed scores
    and the labels ranked, per run the text and its pieces, all from kiln.InferenceSession."""
    with open(path, encoding="utf-8") as f:
        ask = json.load(f)
    lang = kiln.InferenceSession(ask["classifier"])
    labels = lang.labels
    logits = lang.run(left_pad(lang.tokenizer, ask["names"], lang.inputs[0].shape[1])).astype(np.float64)
    probs = np.exp(logits - logits.max(1, keepdims=True))
    probs /= probs.sum(1, keepdims=True)
    gens = {key: kiln.InferenceSession(path) for key, path in ask["generators"].items()}
    runs = []
    for run in ask["runs"]:
        pieces: list[list] = []
        text = generate(gens[run["model"]], None, run["prompt"], run["maxNewTokens"], run["temperature"], run.get("topK"),
                        run["seed"], on_token=lambda piece, i: pieces.append([piece, i]))
        runs.append({"text": text, "pieces": pieces})
    json.dump({"labels": labels, "scores": probs.tolist(),
               "ranked": [[labels[i] for i in np.argsort(-p, kind="stable")] for p in probs],
               "runs": runs, "engines": [lang.engine, *(g.engine for g in gens.values())]}, sys.stdout,
              ensure_ascii=False)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default=OUT)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--reference", metavar="FILE", help="print Python's answers for the questions in FILE")
    args = ap.parse_args()
    if args.reference:
        reference(args.reference)
        return 0
    return train(args.out, args.seed)


if __name__ == "__main__":
    sys.exit(main())
