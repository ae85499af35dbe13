"""The inference half of BENCHMARKS.md: tables, the targets and a chart row, from
bench/out/results/inference_<env>_<engine>_<model>.json (written by bench/infer/node.mjs,
bench/infer/browser.mjs and bench/infer_native.py; report.py calls this module).

Ratios are kiln / peer of a time or a size, so below 1 means kiln is better (faster, smaller).
"""
from __future__ import annotations

import gzip
import json
import statistics
from pathlib import Path

NOT_MEASURED = "not measured yet"
MODELS = {"cnn": "digits CNN", "mlp": "digits MLP", "resnet": "ResNet-8 3×32×32", "resnet-torch": "ResNet-8, PyTorch's export"}
# int8 twins (kiln.optimize.quantize's QDQ files, bench/make_models.py) and their float models
INT8 = {"cnn_int8": "cnn", "resnet_int8": "resnet"}
WASM = ("kiln-wasm", "onnxruntime-web")
NATIVE = ("kiln", "onnxruntime", "onnxruntime-2t")
LOADED = 0.05

METHOD = """\
- **Inference models** (bench/make_models.py, regenerated each run into bench/out/models/, each checked
  by onnx.checker and kiln vs onnxruntime to 1e-4): the web demo's digits CNN (exported by kiln), the
  digits MLP 64-128-64-10 (trained 10 epochs and exported by kiln) and the training race's ResNet-8 at
  3×32×32 (bench/common.py's `resnet8` nn.Module: three residual stages with BatchNorm, 78k parameters,
  12.5M multiply-adds per image), trained by kiln as its seed-0 training run and exported by kiln's
  `export_onnx`.
- **Engines**: kiln-wasm (wasm/pkg; `loadModel` runs a model on kiln's own engine, or on tract when
  kiln's declines it: the tables name the one that ran) vs onnxruntime-web's wasm backend (SIMD, **1 thread**, no
  proxy worker: threads need a cross-origin-isolated page; in a page its wasm-only build
  `ort.wasm.bundle.min.mjs`, i.e. `import "onnxruntime-web/wasm"`); natively kiln.InferenceSession
  (kiln's engine, or tract where it declines, one thread) vs onnxruntime's Python API with 1 and with
  2 intra-op threads, in **three rounds** of one process per engine, the engines alternating: each
  native figure is the median over the rounds (the VM's speed swings 1.5-2x within minutes).
- **Same calls everywhere**: bench/infer/measure.mjs runs in Node and in the page alike; the input is the
  same deterministic batch ((i·7919 mod 17)/16); a call includes copying the input in and the output out.
- **Latency**: after a warm-up of ≥ 1 s and ≥ 10 calls (V8 swaps its baseline wasm code for optimised
  code in the background meanwhile), calls run back-to-back in groups of ≥ 25 ms; **median** of up to
  21 groups (≥ 7, within ~4 s), ms per call, at batch 1 and batch 64.
- **Cold start** = engine import + wasm fetch/compile/instantiate + model load + first prediction at
  batch 1, the model's bytes already in memory; **median of 5** fresh processes (Node, native) or fresh
  browsers on fresh profiles (Chromium: no HTTP cache, no compiled-wasm cache). In Chromium also
  **navigation → first prediction** (the page's `performance.now()` at the first result, from a
  127.0.0.1 server, model fetch included), and a **repeat visit** (second tab, same profile: HTTP and
  wasm code caches warm; one run, so noisier).
- **Download**: every file the page fetched for the engine (JS + wasm, logged by the benchmark's server;
  the page and model excluded), raw and as gzip -9 / brotli -11 would send it.
- **Wasm memory**: byte length of the engine's WebAssembly.Memory after the first prediction and after
  the timed batch-64 runs (memory only grows, so that is the peak), read by wrapping
  WebAssembly.instantiate/instantiateStreaming/Instance before the engine loads and keeping the memories
  its instance imports (onnxruntime-web's Emscripten build) or exports (kiln's wasm-bindgen build).
  Native: peak RSS of the Python process (interpreter and numpy included)."""


def load(results: Path) -> dict:
    out = {}
    # what make_models.py recorded of each model (file sizes, test accuracy), beside the results
    index = results.parent / "models" / "models.json"
    if index.exists():
        out["models"] = json.loads(index.read_text())
    rounds: dict[tuple, list] = {}
    for p in sorted(results.glob("inference_*.json")):
        r = json.loads(p.read_text() or "{}")
        if "error" not in r and "env" in r:
            rounds.setdefault((r["env"], r["engine"], r["model"]), []).append(r)
    for key, rs in rounds.items():
        out[key] = merge_rounds(rs)
    return out


def merge_rounds(rs: list) -> dict:
    """One result from several rounds of the same case (bench/run.sh runs the native ones three
    times, the engines alternating): each latency's and the cold start's median over the rounds,
    the round whose cold start is that median for its phases, the most memory, the busiest host's
    share of other processes (a ⚠ if any round was loaded)."""
    if len(rs) == 1:
        return rs[0]
    med = statistics.median
    out = dict(rs[0], rounds=len(rs))
    out["latency"] = {}
    for b, first in rs[0].get("latency", {}).items():
        got = [r["latency"][b] for r in rs if b in r.get("latency", {})]
        out["latency"][b] = dict(
            first,
            median_ms=med(g["median_ms"] for g in got),
            min_ms=min(g["min_ms"] for g in got),
            max_ms=max(g["max_ms"] for g in got),
            round_medians_ms=[g["median_ms"] for g in got],
        )
    colds = sorted((r for r in rs if "cold" in r), key=lambda r: r["cold"]["total_ms"])
    if colds:
        out["cold"] = dict(colds[len(colds) // 2]["cold"],
                           round_totals_ms=[r["cold"]["total_ms"] for r in rs if "cold" in r])
    if all("memory" in r for r in rs):
        out["memory"] = max((r["memory"] for r in rs), key=lambda m: m.get("peak_rss_mb", 0))
    out["other_cpu_share"] = max(r.get("other_cpu_share", 0) for r in rs)
    return out


def _ms(v):
    if v is None:
        return NOT_MEASURED
    return f"{v:,.0f}" if v >= 100 else f"{v:.1f}" if v >= 10 else f"{v:.2f}" if v >= 1 else f"{v:.3f}"


def _mb(n):
    return NOT_MEASURED if n is None else f"{n / 1e6:.2f}"


def _ratio(k, p):
    return f"{k / p:.2f}" if k is not None and p else "–"


def _lat(r, batch):
    return r and r["latency"][str(batch)]["median_ms"]


def _speedup(k8, k32, batch):
    """float32 ms / int8 ms: from the int8 run's paired measurement (both models in one process,
    groups alternating: bench/infer/measure.mjs pairedLatency) when it has one, else the ratio of
    the two runs' medians (two processes minutes apart). Returns (ratio, fp32 ms, int8 ms, paired)."""
    p = (k8 or {}).get("paired") or {}
    if str(batch) in p:
        q = p[str(batch)]
        return q["twin_over_self"], q["twin_median_ms"], q["median_ms"], True
    f, q = _lat(k32, batch), _lat(k8, batch)
    return (f / q if f and q else None), f, q, False


def _cold(r):
    return r and r["cold"]["total_ms"]


def _nav(r):
    return r and r["cold"].get("first_prediction_at_ms")


def _diff(a, b):
    """Largest difference between the two engines' first 10 outputs of the first prediction."""
    if not a or not b:
        return "–"
    d = max(abs(x - y) for x, y in zip(a["sample"], b["sample"]))
    return "identical" if d == 0 else f"{d:.0e}"


def _flag(*rs):
    return " ⚠" if any(r and r.get("other_cpu_share", 0) > LOADED for r in rs) else ""


def wasm_table(inf, env):
    nav = env == "chromium"
    head = ["model", "kiln cold start ms", "ort-web cold start ms", "ratio"]
    if nav:
        head += ["kiln navigation → 1st prediction ms", "ort-web", "ratio"]
    head += ["kiln batch 1 ms", "ort-web batch 1 ms", "ratio", "kiln batch 64 ms", "ort-web batch 64 ms", "ratio", "outputs agree to"]
    rows = ["| " + " | ".join(head) + " |", "| --- |" + " ---: |" * (len(head) - 2) + " --- |"]
    for m, label in MODELS.items():
        k, o = inf.get((env, "kiln-wasm", m)), inf.get((env, "onnxruntime-web", m))
        ran = k and k.get("model_engine")  # which of kiln-wasm's engines loadModel picked
        simd = k and k.get("model_simd")  # and which build of its module ('relaxed-simd', 'simd128')
        ran_on = f"{ran}'s engine" if ran == "kiln" else ran
        cells = [label + (f" (kiln-wasm: {ran_on}{', ' + simd if simd else ''})" if ran else "")
                 + _flag(k, o), _ms(_cold(k)), _ms(_cold(o)), _ratio(_cold(k), _cold(o))]
        if nav:
            cells += [_ms(_nav(k)), _ms(_nav(o)), _ratio(_nav(k), _nav(o))]
        for b in (1, 64):
            cells += [_ms(_lat(k, b)), _ms(_lat(o, b)), _ratio(_lat(k, b), _lat(o, b))]
        cells.append(_diff(k, o))
        rows.append("| " + " | ".join(cells) + " |")
    return rows


def phases_table(inf):
    rows = ["| model | engine | import | init | load | first run | total (median of 5) | repeat visit total |",
            "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for m, label in MODELS.items():
        for e in WASM:
            r = inf.get(("chromium", e, m))
            if not r:
                continue
            p = r["cold"]["phases"]
            init = p.get("init", p.get("init+load"))
            load = "(in init)" if "init+load" in p else _ms(p.get("load"))
            rep = r.get("repeat_visit")
            rows.append(f"| {label} | {e} | {_ms(p.get('import'))} | {_ms(init)} | {load} | {_ms(p.get('first run'))} "
                        f"| {_ms(_cold(r))} | {_ms(rep and rep['total_ms'])} |")
    return rows


def download_table(inf):
    def sizes(e):  # the engine's files do not depend on the model: take the first measured
        return next((inf[("chromium", e, m)]["bytes"] for m in MODELS if ("chromium", e, m) in inf), None)
    k, o = sizes("kiln-wasm"), sizes("onnxruntime-web")
    rows = ["| | kiln-wasm (MB) | onnxruntime-web (MB) | kiln / ort-web |", "| --- | ---: | ---: | ---: |"]
    for key in ("raw", "gzip", "brotli"):
        rows.append(f"| {key} | {_mb(k and k[key])} | {_mb(o and o[key])} | {_ratio(k and k[key], o and o[key])} |")
    for name, s in (("kiln-wasm", k), ("onnxruntime-web", o)):
        if s:
            files = ", ".join(f"`{f['path'].rsplit('/', 1)[-1]}` {f['raw'] / 1e6:.2f} / {f['gzip'] / 1e6:.2f}" for f in s["files"])
            rows.append(f"| {name} files (raw / gzip MB) | {files} | | |")
    return rows


def memory_table(inf):
    rows = ["| model | kiln-wasm after 1st prediction (MB) | after batch-64 runs | ort-web after 1st prediction | after batch-64 runs "
            "| native kiln peak RSS (MB) | native onnxruntime peak RSS |",
            "| --- | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for m, label in MODELS.items():
        k, o = inf.get(("chromium", "kiln-wasm", m)), inf.get(("chromium", "onnxruntime-web", m))
        nk, no = inf.get(("native", "kiln", m)), inf.get(("native", "onnxruntime", m))
        mem = lambda r, when: _mb(r and r["memory"][when]["total"])  # noqa: E731
        rss = lambda r: f"{r['memory']['peak_rss_mb']:.0f}" if r else NOT_MEASURED  # noqa: E731
        rows.append(f"| {label} | {mem(k, 'after_first')} | {mem(k, 'after_runs')} | {mem(o, 'after_first')} "
                    f"| {mem(o, 'after_runs')} | {rss(nk)} | {rss(no)} |")
    return rows


def native_table(inf):
    rows = ["| model | batch | kiln ms | onnxruntime 1 thread ms | kiln / ort 1t | onnxruntime 2 threads ms | kiln / ort 2t |",
            "| --- | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for m, label in MODELS.items():
        k, o1, o2 = (inf.get(("native", e, m)) for e in NATIVE)
        for what, get in (("cold start", _cold), ("1", lambda r: _lat(r, 1)), ("64", lambda r: _lat(r, 64))):
            rows.append(f"| {label}{_flag(k, o1, o2)} | {what} | {_ms(get(k))} | {_ms(get(o1))} | {_ratio(get(k), get(o1))} "
                        f"| {_ms(get(o2))} | {_ratio(get(k), get(o2))} |")
    return rows


def versions(inf):
    seen = {}
    for (env, engine, _), r in sorted((k, r) for k, r in inf.items() if k != "models"):
        seen.setdefault(engine.removesuffix("-2t"), r["engine_version"])
        if env != "native":  # native's is the Python version, in the machine table
            seen.setdefault(env.capitalize(), r["env_version"])
    return ", ".join(f"{k} {v}" for k, v in seen.items())


def _verdict(ok, loaded=False):
    if ok is None:
        return "–"
    return ("✅ met" if ok else "❌ not met") + (" ⚠ under load: rerun on a quiet machine" if loaded else "")


def _row(target, where, ok, loaded=False):
    return f"| {target} | {where} | {_verdict(ok, loaded)} |"


def _worst(pairs):
    """The largest of kiln / peer over (kiln, peer) time pairs, or None when any side is missing."""
    rs = [k / p if k is not None and p else None for k, p in pairs]
    return None if not rs or None in rs else max(rs)


def targets(summary, inf, text=None, extra=None, pkg=None):
    """Rows of (target, where we stand, verdict) for the open issues' goals (18: convolutions, int8,
    native, training; 14: text) and the earlier ones still promised (issue 8: cold start, download);
    nothing is judged unmeasured. `text` is report.py's text-race summary, `extra` the other results
    (races, generation), `pkg` the benchmarked kiln-wasm package directory (module sizes)."""
    text, extra = text or {}, extra or {}
    rows = ["| target | where we stand | |", "| --- | --- | --- |"]

    def train_ratio(case):
        t, k = summary[case].get("pytorch"), summary[case].get("kiln")
        return k["sps"] / t["sps"] if t and k else None
    for case, goal, label in (("mlp", 5.0, "digits MLP"), ("cnn", 5.0, "digits CNN"), ("gemm", 1.0, "GEMM-bound MLP")):
        r = train_ratio(case)
        loaded = any(s["loaded"] for s in summary[case].values())
        threads = next((s["threads"] for s in summary[case].values() if s.get("threads")), None)
        each = f" ({threads} threads each)" if threads else ""
        rows.append(_row(f"training samples/s, {label}: ≥ {goal:g}× PyTorch{each}",
                         f"{r:.2f}×" if r else NOT_MEASURED, None if r is None else r >= goal, loaded))
    for case in ("mlp", "cnn"):
        t, k = summary[case].get("pytorch"), summary[case].get("kiln")
        d = (k["acc"] - t["acc"]) * 100 if t and k and t["acc"] is not None and k["acc"] is not None else None
        rows.append(_row(f"test accuracy, {case.upper()}: within 0.5 points of PyTorch",
                         f"{d:+.2f} points" if d is not None else NOT_MEASURED, None if d is None else d >= -0.5))
    for case, label in (("names", "char-GRU classifier"), ("names-lm", "char-GRU language model"),
                        ("names-gpt", "small transformer")):
        k, t = (text.get(case, {}).get(fw) for fw in ("kiln", "torch"))
        r = k["sps"] / t["sps"] if k and t else None
        threads = next((s["threads"] for s in (k, t) if s and s.get("threads")), None)
        each = f" ({threads} threads each)" if threads else ""
        rows.append(_row(f"text training samples/s, {label}: ≥ 2× PyTorch{each}",
                         f"{r:.2f}× ({k['sps']:,.0f} vs {t['sps']:,.0f})" if r else NOT_MEASURED,
                         None if r is None else r >= 2.0, bool(k and t and (k["loaded"] or t["loaded"]))))
        if k and t and case == "names":  # a classifier: judged on accuracy (its loss moves with dropout's draws)
            d = (k["val_acc"] - t["val_acc"]) * 100
            rows.append(_row(f"text validation accuracy, {label}: within 1 point of PyTorch",
                             f"{k['val_acc']:.3f} vs {t['val_acc']:.3f} ({d:+.1f} points)", d >= -1))
        elif k and t:  # language models: nats per character
            d = k["val_loss"] - t["val_loss"]
            rows.append(_row(f"text validation loss, {label}: within noise of PyTorch (≤ +0.03 nats)",
                             f"{k['val_loss']:.4f} vs {t['val_loss']:.4f} ({d:+.4f})", d <= 0.03))
    for model in ("gru", "transformer"):
        k, o = (extra.get(f"generate_chromium_{e}_{model}") for e in WASM)
        r = k["ms_per_step_median"] / o["ms_per_step_median"] if k and o else None
        rows.append(_row(f"generation ms/token in Chromium, {model}: ≤ onnxruntime-web",
                         f"{k['ms_per_step_median']:.3f} vs {o['ms_per_step_median']:.3f} ({r:.2f}×)" if r else NOT_MEASURED,
                         None if r is None else r <= 1.0))
    for env in ("chromium", "node"):
        for m in ("resnet", "cnn"):
            k, o = inf.get((env, "kiln-wasm", m)), inf.get((env, "onnxruntime-web", m))
            relaxed = bool(k and k.get("model_simd") == "relaxed-simd")
            goal = 0.6 if relaxed else 0.8
            r = [_lat(k, b) / _lat(o, b) if k and o else None for b in (1, 64)]
            where = f"{r[0]:.2f}× at batch 1, {r[1]:.2f}× at batch 64" if None not in r else NOT_MEASURED
            build = (k.get("model_simd") or "?") if k else "?"
            rows.append(_row(f"{env} latency, {MODELS[m]}: ≤ {goal}× onnxruntime-web ({build} build)", where,
                             None if None in r else max(r) <= goal, bool(_flag(k, o))))
    for m in ("mlp", "resnet-torch"):
        k, o = inf.get(("chromium", "kiln-wasm", m)), inf.get(("chromium", "onnxruntime-web", m))
        r = _lat(k, 1) / _lat(o, 1) if k and o else None
        rows.append(_row(f"chromium latency at batch 1, {MODELS[m]}: ≤ onnxruntime-web",
                         f"{_ms(_lat(k, 1))} vs {_ms(_lat(o, 1))} ms ({r:.2f}×)" if r else NOT_MEASURED,
                         None if r is None else r <= 1, bool(_flag(k, o))))
    for env in ("chromium", "node"):
        for m in ("resnet", "cnn"):
            k, t = inf.get((env, "kiln-wasm", m)), inf.get((env, "tfjs-wasm", m))
            r = _worst([(_lat(k, b), _lat(t, b)) for b in (1, 64)]) if k and t else None
            rows.append(_row(f"{env} latency, {MODELS[m]}: no worse than TF.js wasm (worse of batch 1 and 64)",
                             f"{r:.2f}×" if r else NOT_MEASURED, None if r is None else r <= 1.0, bool(_flag(k, t))))
    for m in ("resnet", "cnn", "mlp"):
        k, o = inf.get(("native", "kiln", m)), inf.get(("native", "onnxruntime", m))
        r = [_lat(k, b) / _lat(o, b) if k and o else None for b in (1, 64)]
        rows.append(_row(f"native kiln.InferenceSession, {MODELS[m]}: ≤ 1.0× onnxruntime (1 thread)",
                         f"{r[0]:.2f}× at batch 1, {r[1]:.2f}× at batch 64" if None not in r else NOT_MEASURED,
                         None if None in r else max(r) <= 1.0, bool(_flag(k, o))))
    for env, peer in (("node", "tfjs-cpu"), ("chromium", "tfjs-webgl")):
        k, t = extra.get(f"train_race_{env}_kiln"), extra.get(f"train_race_{env}_{peer}")
        ok = k and t and "samples_per_s" in k and "samples_per_s" in t
        r = k["samples_per_s"] / t["samples_per_s"] if ok else None
        rows.append(_row(f"in-browser training, digits CNN, {env}: Trainer ≥ 10× TF.js {peer.split('-')[1]}",
                         f"{r:.0f}×" if r else NOT_MEASURED, None if r is None else r >= 10))
    k, o = inf.get(("chromium", "kiln-wasm", "resnet")), inf.get(("chromium", "onnxruntime-web", "resnet"))
    mk, mo = (r and r["memory"]["after_runs"]["total"] for r in (k, o))
    rows.append(_row("wasm memory after batch-64 runs, ResNet-8 (Chromium): ≤ 1.5× onnxruntime-web",
                     f"{_mb(mk)} vs {_mb(mo)} MB ({mk / mo:.2f}×)" if mk and mo else NOT_MEASURED,
                     None if not (mk and mo) else mk / mo <= 1.5))
    for m, label in MODELS.items():
        k, o = inf.get(("chromium", "kiln-wasm", m)), inf.get(("chromium", "onnxruntime-web", m))
        r = _cold(k) / _cold(o) if k and o else None
        rows.append(_row(f"browser cold start, {label}: ≤ ½ onnxruntime-web",
                         f"{_ms(_cold(k))} vs {_ms(_cold(o))} ms ({r:.2f}×)" if r else NOT_MEASURED,
                         None if r is None else r <= 0.5, bool(_flag(k, o))))
    k = next((inf[("chromium", "kiln-wasm", m)]["bytes"]["gzip"] for m in MODELS if ("chromium", "kiln-wasm", m) in inf), None)
    o = next((inf[("chromium", "onnxruntime-web", m)]["bytes"]["gzip"] for m in MODELS if ("chromium", "onnxruntime-web", m) in inf), None)
    r = k / o if k and o else None
    rows.append(_row("download, gzip: ≤ ½ onnxruntime-web", f"{_mb(k)} vs {_mb(o)} MB ({r:.2f}×)" if r else NOT_MEASURED,
                     None if r is None else r <= 0.5))
    for name in ("kiln_core_bg.wasm", "kiln_core_relaxed_bg.wasm"):
        f = pkg and Path(pkg) / name
        if f and f.exists():
            n = len(gzip.compress(f.read_bytes(), 9))
            rows.append(_row(f"predict-only module `{name}`: ≤ 0.5 MB gzip -9", f"{n:,} B", n <= 500_000))
        else:
            rows.append(_row(f"predict-only module `{name}`: ≤ 0.5 MB gzip -9", NOT_MEASURED, None))
    return rows + int8_targets(inf)


def tfjs_table(inf):
    """kiln-wasm against TensorFlow.js's wasm backend (XNNPACK), both environments, same weights."""
    head = ["environment", "model", "kiln cold start ms", "TF.js cold start ms", "ratio", "kiln batch 1 ms",
            "TF.js batch 1 ms", "ratio", "kiln batch 64 ms", "TF.js batch 64 ms", "ratio", "outputs agree to"]
    rows = ["| " + " | ".join(head) + " |", "| --- | --- |" + " ---: |" * (len(head) - 3) + " --- |"]
    for env in ("chromium", "node"):
        for m, label in MODELS.items():
            k, t = inf.get((env, "kiln-wasm", m)), inf.get((env, "tfjs-wasm", m))
            if not t:
                continue
            cells = [env, label + _flag(k, t), _ms(_cold(k)), _ms(_cold(t)), _ratio(_cold(k), _cold(t))]
            for b in (1, 64):
                cells += [_ms(_lat(k, b)), _ms(_lat(t, b)), _ratio(_lat(k, b), _lat(t, b))]
            cells.append(_diff(k, t))
            rows.append("| " + " | ".join(cells) + " |")
    if len(rows) == 2:
        return [NOT_MEASURED]
    return rows + ["", "TF.js builds each model with tfjs-layers from kiln's trained weights in NHWC "
                   "(bench/tfjs_spec.py; the input is handed over in NHWC, converted outside the timing), "
                   "so the outputs are comparable; one thread, its `@tensorflow/tfjs-core`, `-layers` and "
                   "`-backend-wasm` 4.22 ES modules (bench/peers-js)."]


def int8_table(inf):
    """kiln-wasm on the int8 files against the float ones (the speed-up is fp32 ms / int8 ms), with
    onnxruntime-web's time on the same int8 file for reference, the file sizes and test accuracy."""
    models = inf.get("models", {})
    head = ["environment", "model", "kiln fp32 batch 1 ms", "kiln int8 batch 1 ms", "int8 speed-up",
            "ort-web int8 batch 1 ms", "kiln fp32 batch 64 ms", "kiln int8 batch 64 ms", "int8 speed-up",
            "ort-web int8 batch 64 ms"]
    rows = ["| " + " | ".join(head) + " |", "| --- | --- |" + " ---: |" * (len(head) - 2)]
    for env in ("chromium", "node"):
        for m8, m32 in INT8.items():
            k8, k32, o8 = (inf.get((env, e, m)) for e, m in
                           (("kiln-wasm", m8), ("kiln-wasm", m32), ("onnxruntime-web", m8)))
            if not k8:
                continue
            ran = k8.get("model_engine")
            cells = [env, MODELS[m32] + (f" (kiln-wasm: {ran})" if ran and ran != "kiln" else "") + _flag(k8, k32)]
            for b in (1, 64):
                r, f, q, paired = _speedup(k8, k32, b)
                cells += [_ms(f), _ms(q), f"{r:.2f}×" + ("" if paired else " (two runs)") if r else "–",
                          _ms(_lat(o8, b))]
            rows.append("| " + " | ".join(cells) + " |")
    if len(rows) == 2:
        return [NOT_MEASURED]
    rows += ["", "| model | fp32 file bytes | int8 file bytes | smaller by | fp32 test accuracy | int8 test accuracy "
             "| kiln vs onnxruntime (int8, batch of 4) |", "| --- | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for m8, m32 in INT8.items():
        i = models.get(m8)
        if not i:
            continue
        rows.append(f"| {MODELS[m32]} | {i['fp32_bytes']:,} | {i['bytes']:,} | {i['fp32_bytes'] / i['bytes']:.2f}× "
                    f"| {i['fp32_test_accuracy'] * 100:.2f}% | {i['test_accuracy'] * 100:.2f}% "
                    f"| {i['kiln_vs_onnxruntime_max_diff']:.1e} |")
    return rows + ["", "int8 files: kiln's `kiln.optimize.quantize` (QDQ, static, per-channel int8 weights, uint8 "
                   "activations; bench/make_models.py). kiln's engine runs their convolutions on integer kernels "
                   "(i16 × i16 → i32 dot products, the input quantized once per layer); the accuracy is on the "
                   "held-out digits of each model's own test split, by kiln.InferenceSession. The fp32 and int8 "
                   "times here and the speed-up come from the int8 run itself: it loads the float model too and "
                   "times the two in alternating groups in one process (one page), the speed-up being the median "
                   "of each round's ratio, so the machine's drift between two runs does not enter it; "
                   "\"(two runs)\" marks a ratio of two separate runs' medians."]


def int8_targets(inf):
    """The int8 goals: ≥ 1.5× faster than float32 in kiln-wasm, accuracy within 1 point, ResNet-8 ≥ 3.5× smaller."""
    rows, models = [], inf.get("models", {})
    for m8, m32 in INT8.items():
        for env in ("chromium", "node"):
            k8, k32 = inf.get((env, "kiln-wasm", m8)), inf.get((env, "kiln-wasm", m32))
            r = [_speedup(k8, k32, b)[0] for b in (1, 64)]
            ok = None if None in r else min(r) >= 1.5
            where = f"{r[0]:.2f}× at batch 1, {r[1]:.2f}× at batch 64" if ok is not None else NOT_MEASURED
            rows.append(f"| int8 ≥ 1.5× float32 in kiln-wasm ({env}), {MODELS[m32]} | {where} "
                        f"| {_verdict(ok, bool(_flag(k8, k32)))} |")
        i = models.get(m8)
        if i:
            d = (i["test_accuracy"] - i["fp32_test_accuracy"]) * 100
            rows.append(f"| int8 accuracy within 1 point of float32, {MODELS[m32]} | {d:+.2f} points | {_verdict(d >= -1)} |")
    i = models.get("resnet_int8")
    if i:
        r = i["fp32_bytes"] / i["bytes"]
        rows.append(f"| int8 file ≥ 3.5× smaller, ResNet-8 | {r:.2f}× | {_verdict(r >= 3.5)} |")
    return rows


def section(inf) -> list[str]:
    if not inf:
        return ["No inference results: run `make bench` (or `BENCH_ONLY=inference bash bench/run.sh`).", ""]
    return [
        f"Versions: {versions(inf)}. Times in ms (medians); ratios are kiln / peer, so **below 1 kiln is "
        "faster or smaller**. ⚠: other processes took > 5% of the CPU while the row was measured.", "",
        "### In the browser: headless Chromium", "", *wasm_table(inf, "chromium"), "",
        "Where a cold start goes (Chromium, medians of 5 fresh profiles; onnxruntime-web's init and load "
        "are one call):", "", *phases_table(inf), "",
        "### What a page downloads", "", *download_table(inf), "",
        "### In Node", "", *wasm_table(inf, "node"), "",
        "### Against TensorFlow.js (wasm backend)", "", *tfjs_table(inf), "",
        "### int8 against float32 in kiln-wasm", "", *int8_table(inf), "",
        "### Native (Python)", "", *native_table(inf), "",
        "### Memory", "", "Wasm linear memory in Chromium (MB = 10⁶ bytes) and the native processes' peak RSS.", "",
        *memory_table(inf), ""]


def chart_row(axes, inf):
    """Three panels: Chromium latency at batch 1 and cold start per model, and the download (gzip)."""
    colours = {"kiln-wasm": "#4a6fa5", "onnxruntime-web": "#7f7f7f"}
    panels = ((axes[0], lambda r: _lat(r, 1), "Chromium: ms per prediction, batch 1 (log)", 1.0),
              (axes[1], _cold, "Chromium: cold start ms (init + load + 1st prediction)", 0.5))
    for ax, get, title, goal in panels:
        if goal == 1.0:
            ax.set_yscale("log")  # the models differ by 100x
        for i, e in enumerate(WASM):
            for j, m in enumerate(MODELS):
                r = inf.get(("chromium", e, m))
                x = j + (i - 0.5) * 0.38
                if r:
                    ax.bar(x, get(r), 0.36, color=colours[e], label=e if j == 0 else None)
                    ax.text(x, get(r), _ms(get(r)), ha="center", va="bottom", fontsize=7)
        for j, m in enumerate(MODELS):  # the target for kiln's bar: goal x onnxruntime-web's figure
            o = inf.get(("chromium", "onnxruntime-web", m))
            if o:
                ax.hlines(goal * get(o), j - 0.4, j + 0.02, colors="black", linestyles="dashed", linewidth=1,
                          label="target" if j == 0 else None)
        ax.set_xticks(range(len(MODELS)), list(MODELS.values()), fontsize=8)
        ax.set_title(title, fontsize=10)
        lo, hi = ax.get_ylim()
        ax.set_ylim(lo, hi * (4 if goal == 1.0 else 1.2))
    ax = axes[2]
    for i, e in enumerate(WASM):
        s = next((inf[("chromium", e, m)]["bytes"] for m in MODELS if ("chromium", e, m) in inf), None)
        if s:
            for j, key in enumerate(("raw", "gzip", "brotli")):
                x = j + (i - 0.5) * 0.38
                ax.bar(x, s[key] / 1e6, 0.36, color=colours[e], label=e if j == 0 else None)
                ax.text(x, s[key] / 1e6, f"{s[key] / 1e6:.1f}", ha="center", va="bottom", fontsize=7)
                if e == "onnxruntime-web" and key == "gzip":  # the target: half of onnxruntime-web's gzip
                    ax.hlines(s[key] / 2e6, j - 0.4, j + 0.02, colors="black", linestyles="dashed", linewidth=1, label="target")
    ax.set_xticks(range(3), ["raw", "gzip", "brotli"])
    ax.set_title("page download: engine JS + wasm (MB)", fontsize=10)
    for ax in axes:
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=8, loc="upper right", frameon=False)
        ax.spines[["top", "right"]].set_visible(False)


def chart_native(ax, inf):
    """Native ms per call at batch 64: kiln.InferenceSession vs onnxruntime (1 thread), per model."""
    colours = {"kiln": "#4a6fa5", "onnxruntime": "#7f7f7f"}
    ax.set_yscale("log")
    for i, e in enumerate(colours):
        for j, m in enumerate(MODELS):
            r = inf.get(("native", e, m))
            x = j + (i - 0.5) * 0.38
            if r:
                ax.bar(x, _lat(r, 64), 0.36, color=colours[e], label=f"{e} (1 thread)" if j == 0 else None)
                ax.text(x, _lat(r, 64), _ms(_lat(r, 64)), ha="center", va="bottom", fontsize=7)
    ax.set_xticks(range(len(MODELS)), list(MODELS.values()), fontsize=8)
    ax.set_title("native (Python): ms per call, batch 64 (log)", fontsize=10)
    lo, hi = ax.get_ylim()
    ax.set_ylim(lo, hi * 4)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=8, loc="upper left", frameon=False)
    ax.spines[["top", "right"]].set_visible(False)
