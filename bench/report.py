#!/usr/bin/env python3
"""Turn bench/out/results/*.json into BENCHMARKS.md (medians, ratios, the machine) and a PNG chart.

    bench/.venv-peers/bin/python bench/report.py --results bench/out/results \
        --machine bench/out/machine.json --markdown BENCHMARKS.md --chart bench/chart.png

Result files (one JSON object each, written by run.sh):
  <framework>_<case>_<seed>.json  training: samples_per_s, test_accuracy, peak_rss_mb, ... (common.emit)
  pytorch_sgemm.json / kiln_sgemm.json  {"gflops": {"<threads>": {"<n>": GFLOP/s}}, ...}
  pytorch_step.json               PyTorch µs per train step (MLP 64-128-64-10, batch 32)
  inference_<env>_<engine>_<model>.json   inference (bench/report_infer.py reads these)
A file holding {"error": ...} is reported as "not measured" with the error; nothing is ever made up.
"""
from __future__ import annotations

import argparse
import json
import statistics
from collections import defaultdict
from pathlib import Path

import common
import report_infer

FRAMEWORKS = ("pytorch", "kiln")
NAMES = {"pytorch": "PyTorch", "kiln": "kiln"}
CASES = {
    "mlp": "MLP 64-128-64-10, digits",
    "cnn": "CNN conv16-pool-conv32-pool-linear, digits",
    "gemm": "MLP 784-1024-1024-10, random data, batch 256",
    "resnet": "ResNet-8 (nn.Module, residual adds, BatchNorm), digits as 3×32×32",
}
LOADED = 0.05  # share of the machine's CPU time taken by other processes above which a run is flagged
NOT_MEASURED = "not measured yet"

METHOD = f"""\
How these numbers are made (bench/run.sh; `make bench` reruns everything and rewrites this file).
Training:
- Every case runs in its own process, one after another, with **2 threads** per framework
  (PyTorch: `torch.set_num_threads(2)`, `OMP_NUM_THREADS=2`; kiln: `RAYON_NUM_THREADS=2`,
  `MATMUL_NUM_THREADS=2`). The machine has 2 cores; nothing else should run during a benchmark.
- **Data**: scikit-learn's digits, pixels / 16, one stratified 75/25 split (`random_state=0`):
  1347 training and 450 test images, the same for every seed and framework.
- **Same training on both sides** (bench/common.py holds the one definition both scripts read):
  same architecture (ReLU after each hidden layer), PyTorch's default initialisation (which kiln
  mirrors), Adam lr 1e-3, cross-entropy, batch 32, 30 epochs, a fresh shuffle each epoch, last
  partial batch kept; seeds 0, 1, 2. PyTorch's loop is the fast idiomatic one (tensors in memory,
  a permutation, slices; no DataLoader); kiln's is `model.fit(..., verbose=0)`, all in Rust.
- **samples/s** = training samples × epochs / wall time of the training call alone (no imports,
  data loading or evaluation); **median** over seeds. **Ratio** = kiln / PyTorch (> 1: kiln faster).
- **Test accuracy**: argmax of the model's outputs on the 450 test images, **mean** over seeds.
- **ResNet-8 case**: bench/common.py's `resnet8(nn, F)`, one `nn.Module` definition both frameworks build
  from (`kiln.nn` / `kiln.nn.functional` or `torch.nn` / `torch.nn.functional`): conv stem 3→16 +
  BatchNorm + ReLU, three basic blocks (16@32×32, 32@16×16 and 64@8×8, 1×1 conv + BatchNorm
  projection shortcut on the stride-2 blocks), global average pool, Linear 64→10; 78k parameters.
  Data: the same digits split, each image blown up 8×8→32×32 and coloured (stroke and background
  colours drawn per image from a fixed seed); the first {common.RESNET_TRAIN} training images, {common.RESNET_EPOCHS} epochs, batch {common.BATCH['resnet']},
  test accuracy on all 450 test images (BatchNorm in eval mode). {common.RESNET_EPOCHS * -(-common.RESNET_TRAIN // common.BATCH['resnet'])} steps: a speed race with a
  sanity check on accuracy (95-98%), not a converged model.
- **GEMM-bound case**: MLP 784-1024-1024-10 on 4096 random samples (random labels), batch 256,
  10 epochs (160 steps, so start-up costs are amortised): only its speed means anything.
- **Peak RSS**: `getrusage(RUSAGE_SELF).ru_maxrss`, the whole process (interpreter, libraries, data,
  training); "before training" is the resident size once imports, data and model are in place.
- **sgemm**: numpy `matmul` on float32 n×n (best of 5 timed batches), with `OPENBLAS_CORETYPE` and
  `OPENBLAS_L2_SIZE` unset for that command; the kernel OpenBLAS chose is read from threadpoolctl.
- A ⚠ marks a figure measured while other processes took more than 5% of the machine's CPU time
  (from /proc/stat, the benchmark's own CPU time subtracted): treat it as a lower bound on speed."""


def load(results: Path):
    train = defaultdict(lambda: defaultdict(list))  # case -> framework -> [result]
    errors, extra = [], {}
    for p in sorted(results.glob("*.json")):
        r = json.loads(p.read_text() or "{}")
        if "error" in r:
            errors.append((p.stem, r["error"]))
            continue
        parts = p.stem.split("_")
        if parts[0] in FRAMEWORKS and len(parts) == 3 and parts[1] in CASES:
            train[parts[1]][parts[0]].append(r)
        elif parts[0] != "inference":  # report_infer reads those
            extra[p.stem] = r
    return train, errors, extra


TEXT = {
    "names": "char-GRU classifier: surname → language (T 14, 7 classes, 10 epochs)",
    "names-lm": "char-GRU language model ([B, 16] → [B, 16, V], 4 epochs)",
    "names-gpt": "small causal transformer (d 48, 4 heads, 2 pre-norm layers, 4 epochs)",
}


def text_summary(extra):
    """text_<kiln|torch>_<case>_<run> results (bench/rnn_speed.py): medians per case and framework."""
    runs = defaultdict(lambda: defaultdict(list))
    for name, r in extra.items():
        parts = name.split("_")
        if parts[0] == "text" and len(parts) == 4 and parts[2] in TEXT:
            runs[parts[2]][parts[1]].append(r)
    return {case: {fw: {"sps": statistics.median(r["samples_per_s"] for r in rs),
                        "all": [r["samples_per_s"] for r in rs],
                        "val_loss": statistics.median(r["val_loss"] for r in rs),
                        "val_acc": rs[0].get("val_accuracy"), "threads": rs[0].get("threads"),
                        "loaded": any(r.get("other_cpu_share", 0) > LOADED for r in rs)}
                   for fw, rs in fws.items()} for case, fws in runs.items()}


def text_table(text):
    if not text:
        return [NOT_MEASURED]
    rows = ["| case | PyTorch samples/s (runs) | kiln samples/s (runs) | kiln / PyTorch | PyTorch validation loss "
            "| kiln validation loss | accuracy PyTorch / kiln |", "| --- | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for case, label in TEXT.items():
        t, k = text.get(case, {}).get("torch"), text.get(case, {}).get("kiln")
        if not t and not k:
            continue

        def sps(s):
            if not s:
                return NOT_MEASURED
            each = " / ".join(f"{v:,.0f}" for v in s["all"])
            return f"{s['sps']:,.0f}{' ⚠' if s['loaded'] else ''} ({each})"
        acc = " / ".join(f"{s['val_acc']:.3f}" for s in (t, k) if s and s["val_acc"] is not None) or "–"
        ratio = f"{k['sps'] / t['sps']:.2f}×" if t and k else "–"
        rows.append(f"| {label} | {sps(t)} | {sps(k)} | {ratio} "
                    f"| {fmt(t and t['val_loss'], '.4f')} | {fmt(k and k['val_loss'], '.4f')} | {acc} |")
    return rows + ["", "bench/rnn_speed.py: the text page's models on Faker's surnames (notebooks/04-text.ipynb), the "
                   "same model definition, data, batch 32, epochs and Adam on both sides, 2 threads each "
                   "(`torch.set_num_threads(2)`, `RAYON_NUM_THREADS=2`); kiln's `fit` against PyTorch's idiomatic "
                   "loop (tensors in memory, a permutation and slices per epoch). samples/s of the timed fit "
                   "(after a warm-up fit), median over runs that alternate kiln and PyTorch case by case; "
                   "validation loss (nats per character for the language models) on the held-out split."]


def fmt(v, spec=",.0f", flag=False):
    return NOT_MEASURED if v is None else f"{v:{spec}}{' ⚠' if flag else ''}"


def summarise(runs):
    if not runs:
        return None
    accs = [r["test_accuracy"] for r in runs if r.get("test_accuracy") is not None]
    return {
        "sps": statistics.median(r["samples_per_s"] for r in runs),
        "acc": statistics.mean(accs) if accs else None,
        "acc_sd": statistics.pstdev(accs) if len(accs) > 1 else None,
        "rss": max(r["peak_rss_mb"] for r in runs),
        "rss_before": max(r["rss_before_training_mb"] for r in runs),
        "us_step": statistics.median(r["us_per_step"] for r in runs),
        "n": len(runs), "version": runs[0].get("version"),
        "loaded": any(r.get("other_cpu_share", 0) > LOADED for r in runs),
        "other": max(r.get("other_cpu_share", 0) for r in runs),
        "epochs": runs[0]["epochs"],
        "threads": runs[0].get("threads"),
    }


def training_table(summary):
    rows = ["| case | PyTorch samples/s | kiln samples/s | kiln / PyTorch | PyTorch test acc. | kiln test acc. | seeds |",
            "| --- | ---: | ---: | ---: | ---: | ---: | --- |"]
    for case, label in CASES.items():
        t, k = summary[case].get("pytorch"), summary[case].get("kiln")
        ratio = f"{k['sps'] / t['sps']:.2f}×" if t and k else "–"

        def acc(s):
            if case == "gemm" or (s and s["acc"] is None):  # random labels: accuracy means nothing
                return "–"
            if not s:
                return NOT_MEASURED
            return f"{s['acc']:.3f}" + (f" ± {s['acc_sd']:.3f}" if s["acc_sd"] else "")
        seeds = " / ".join(f"{NAMES[f]} {summary[case][f]['n']}" for f in FRAMEWORKS if summary[case].get(f))
        rows.append(f"| {label} | {fmt(t and t['sps'], flag=bool(t and t['loaded']))} | "
                    f"{fmt(k and k['sps'], flag=bool(k and k['loaded']))} | {ratio} | {acc(t)} | {acc(k)} | {seeds or '–'} |")
    return rows


def memory_table(summary):
    rows = ["| case | PyTorch peak RSS (MB) | PyTorch before training | kiln peak RSS (MB) | kiln before training |",
            "| --- | ---: | ---: | ---: | ---: |"]
    for case, label in CASES.items():
        t, k = summary[case].get("pytorch"), summary[case].get("kiln")
        rows.append(f"| {label} | {fmt(t and t['rss'])} | {fmt(t and t['rss_before'])} | "
                    f"{fmt(k and k['rss'])} | {fmt(k and k['rss_before'])} |")
    return rows


def sgemm_table(extra):
    ob, ks = extra.get("pytorch_sgemm"), extra.get("kiln_sgemm")
    if not ob:
        return [f"OpenBLAS sgemm: {NOT_MEASURED}."]
    kern = ", ".join(f"OpenBLAS {b['version']} kernel **{b['architecture']}** ({b['threading_layer']})"
                     for b in ob["openblas"]) or "no BLAS found by threadpoolctl"
    rows = [f"numpy {ob['numpy']}, {kern}; OPENBLAS_CORETYPE / OPENBLAS_L2_SIZE during the run: "
            f"{ob['env']}.", "",
            "| n × n × n | OpenBLAS 1 thread (GFLOP/s) | OpenBLAS 2 threads | kiln 1 thread | kiln 2 threads |",
            "| ---: | ---: | ---: | ---: | ---: |"]
    flag = ob.get("other_cpu_share", 0) > LOADED
    for n in ob["gflops"]["1"]:
        kv = lambda t: fmt(ks["gflops"].get(t, {}).get(n), ".1f") if ks else NOT_MEASURED  # noqa: E731
        rows.append(f"| {n} | {fmt(ob['gflops']['1'][n], '.1f', flag)} | {fmt(ob['gflops']['2'][n], '.1f', flag)} "
                    f"| {kv('1')} | {kv('2')} |")
    return rows


def load_table(extra):
    """Load time (parse + plan + first prediction) against graph size: bench/load/chains.py."""
    r = extra.get("load_scaling")
    if not r:
        return [NOT_MEASURED]

    def t(v):
        return "not timed" if v is None else (f"{v * 1e3:,.0f} ms" if v < 1 else f"{v:,.2f} s")

    rows = ["| Relu nodes | file | kiln's engine (native) | tract (native) | onnxruntime (1 thread) "
            "| kiln-wasm, kiln's engine (Node) | kiln-wasm, tract (Node) | onnxruntime-web (Node) |",
            "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for row in r["rows"]:
        n, w = row["native"], row["wasm_node"]
        rows.append(f"| {row['nodes']:,} | {row['bytes'] / 1e6:.2f} MB | {t(n['kiln'])} | {t(n['tract'])} | "
                    f"{t(n['onnxruntime'])} | {t(w['kiln'])} | {t(w['tract'])} | {t(w['onnxruntime-web'])} |")
    rows += ["", f"Median of {r['repeats']} loads each, the engine's module already started; load average "
             f"{r['loadavg']:.1f} at the end. tract's load grows faster than the graph, so it is timed only up "
             f"to {r['tract_max']:,} nodes (a page falling back to tract on a graph that size is warned in the "
             "console; see wasm/pkg/README.md)."]
    return rows


def threads_table(extra):
    """Batch 64 on one and two threads in Node (bench/infer/threads.mjs)."""
    runs = [r for r in (extra.get(f"threads_node_{m}") for m in ("resnet", "cnn")) if r]
    if not runs:
        return [NOT_MEASURED]
    rows = ["| model | kiln-wasm/worker, 1 | kiln-wasm/worker, 2 threads | speed-up | onnxruntime-web, 1 | onnxruntime-web, 2 threads | speed-up | kiln / ort at 2 |",
            "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for r in runs:
        t = {(row["engine"], row["threads"]): row["ms"] for row in r["rows"]}
        k1, k2 = t[("kiln-wasm/worker", 1)], t[("kiln-wasm/worker", 2)]
        o1, o2 = t[("onnxruntime-web", 1)], t[("onnxruntime-web", 2)]
        rows.append(f"| {r['model']} | {k1:.2f} ms | {k2:.2f} ms | {k1 / k2:.2f}× | {o1:.2f} ms | {o2:.2f} ms | "
                    f"{o1 / o2:.2f}× | {k2 / o2:.2f}× |")
    r = runs[0]
    return rows + ["", f"Node {r.get('env_version', '')}, batch {r['batch']}, medians, {r['cores']} cores; load average "
                   f"{r['loadavg_start']:.1f} at the start, other processes {r['other_cpu_share'] * 100:.0f}% of the CPU. "
                   "kiln-wasm/worker's threads are workers each holding a copy of the model, a batch split by rows "
                   "(no shared memory, so no COOP/COEP headers); onnxruntime-web's are its threaded wasm (SharedArrayBuffer: "
                   "in a page, only a cross-origin-isolated one)."]


def race_table(extra):
    """kiln-wasm's Trainer against TF.js's model.fit on the digits CNN (bench/peers-js/race.mjs), in
    Node (TF.js cpu and wasm) and in Chromium (TF.js WebGL)."""
    k = extra.get("train_race_node_kiln") or extra.get("train_race_chromium_kiln")
    if not k:
        return [NOT_MEASURED]
    rows = ["| where | engine | backend | samples/s | kiln / it (same place) | test accuracy after the same epochs |",
            "| --- | --- | --- | ---: | ---: | ---: |"]
    for env, engines in (("node", ("kiln", "tfjs-cpu", "tfjs-wasm")), ("chromium", ("kiln", "tfjs-webgl"))):
        mine = extra.get(f"train_race_{env}_kiln")
        for e in engines:
            r = extra.get(f"train_race_{env}_{e}")
            if not r:
                continue
            where = "Node" if env == "node" else "Chromium"
            if "cannot_train" in r:
                rows.append(f"| {where} | {'kiln-wasm Trainer' if e == 'kiln' else 'TF.js'} | "
                            f"{e.split('-')[-1]} | cannot train: {r['cannot_train']} | – | – |")
                continue
            name = "kiln-wasm Trainer" if e == "kiln" else f"TF.js {r['version']} `model.fit`"
            ratio = "–" if e == "kiln" or not mine or "samples_per_s" not in mine \
                else f"{mine['samples_per_s'] / r['samples_per_s']:.1f}×"
            rows.append(f"| {where} | {name} | {r['backend']} | {r['samples_per_s']:,.0f} | {ratio} | {r['accuracy']:.3f} |")
    return rows + ["", f"Digits CNN, the same initial weights (kiln's seed 0), {k['epochs']} epochs of "
                   f"{k['train_samples']:,} samples, batch {k['batch_size']}, Adam 1e-3, cross-entropy on logits; "
                   f"load average {k['loadavg_start']:.1f} at the start. TF.js's wasm backend cannot train a CNN, so "
                   "its fastest backend that trains here is WebGL in Chromium; this machine has no GPU, so that "
                   "WebGL is SwiftShader (a GPU emulated on the CPU), as the backend column says."]


def chart(summary, inf, path: Path, quick: bool):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, grid = plt.subplots(2, 3, figsize=(15, 8.4))
    axes = grid[0][:2]
    report_infer.chart_native(grid[0][2], inf)
    report_infer.chart_row(grid[1], inf)
    colours = {"pytorch": "#ee4c2c", "kiln": "#4a6fa5"}
    labels = [c.upper() for c in CASES]
    for ax, key, title in ((axes[0], "sps", "training throughput (samples/s, median, log scale)"),
                           (axes[1], "rss", "peak RSS of the training process (MB)")):
        if key == "sps":
            ax.set_yscale("log")  # the cases differ by 30x; a linear axis flattens the small ones
        for i, fw in enumerate(FRAMEWORKS):
            for j, case in enumerate(CASES):
                s = summary[case].get(fw)
                x = j + (i - 0.5) * 0.38
                if s:
                    ax.bar(x, s[key], 0.36, color=colours[fw], label=NAMES[fw] if j == 0 else None)
                    ax.text(x, s[key], f"{s[key]:,.0f}", ha="center", va="bottom", fontsize=8)
                else:  # axes-fraction y: works on the log axis too
                    ax.text(x, 0.02, "not\nmeasured", ha="center", va="bottom", fontsize=7,
                            color="grey", transform=ax.get_xaxis_transform())
        ax.set_xticks(range(len(CASES)), labels)
        ax.set_title(title, fontsize=10)
        lo, hi = ax.get_ylim()
        ax.set_ylim(lo, hi * (4 if key == "sps" else 1.15))  # room for the value labels and legend
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=8, loc="upper left", ncols=2, frameon=False)
        ax.spines[["top", "right"]].set_visible(False)
    fig.suptitle("kiln vs PyTorch CPU (training, 2 threads) and vs onnxruntime (inference, 1 thread)"
                 + (" (QUICK RUN: not comparable)" if quick else ""))
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)


def generate_table(extra):
    """Per-token generation latency, kiln-wasm's model.generate vs onnxruntime-web with the sampling in
    JS (bench/generate_speed.mjs): the web demo's GRU and transformer, overall and early/late in the window."""
    runs = {k[len("generate_"):]: r for k, r in extra.items() if k.startswith("generate_")}
    if not runs:
        return [NOT_MEASURED]

    def ms(v):
        return "–" if v is None else f"{v:.3f}"

    rows = ["| model | environment | kiln-wasm ms/token (positions 2-5 / 12-15) | onnxruntime-web ms/token (2-5 / 12-15) "
            "| kiln / ort | load average |", "| --- | --- | ---: | ---: | ---: | ---: |"]
    for model in ("gru", "transformer"):
        for env in ("node", "chromium"):
            k, o = runs.get(f"{env}_kiln-wasm_{model}"), runs.get(f"{env}_onnxruntime-web_{model}")
            if not k and not o:
                continue

            def cell(r):
                if not r:
                    return NOT_MEASURED
                return (f"{r['ms_per_step_median']:.3f} ({ms(r.get('ms_per_step_early'))} / "
                        f"{ms(r.get('ms_per_step_late'))})")
            ratio = f"{k['ms_per_step_median'] / o['ms_per_step_median']:.2f}×" if k and o else "–"
            load = "/".join(f"{r['loadavg_start']:.1f}" for r in (k, o) if r)
            cached = " (cached)" if k and k.get("cached") else ""
            rows.append(f"| {model}{cached} | {env} | {cell(k)} | {cell(o)} | {ratio} | {load} |")
    return rows + ["", "ms per step (a model run: each token and the one that picks <eos>), median over generations of "
                   "up to 20 tokens (prompts \"\", \"Ma\", \"Ber\"; temperature 0.8, top-k 5), 1 thread, after 1 s of "
                   "warm-up, the yield between tokens included; in brackets the step at positions 2-5 and 12-15 of "
                   "the window (per generation the mean there, then the median; the late ones from the prompt \"Hohenzoll\", cut at the window; first steps left out). kiln-wasm runs the files position by "
                   "position (cached: the GRU's state, the attention's keys and values); onnxruntime-web reruns "
                   "the 16-id window for every token, as a JS loop around an exported file does. In Chromium "
                   "performance.now() ticks in 0.1 ms steps (the page is not cross-origin isolated), so its "
                   "figures are coarse."]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--results", type=Path, required=True)
    ap.add_argument("--machine", type=Path, required=True)
    ap.add_argument("--markdown", type=Path, required=True)
    ap.add_argument("--chart", type=Path, required=True)
    ap.add_argument("--quick", action="store_true", help="mark the report as a plumbing check")
    args = ap.parse_args()

    train, errors, extra = load(args.results)
    summary = {case: {fw: summarise(train[case][fw]) for fw in FRAMEWORKS if train[case][fw]}
               for case in CASES}
    m = json.loads(args.machine.read_text())
    versions = ", ".join(f"{NAMES[fw]} {s['version']}" for fw in FRAMEWORKS
                         for s in [next((summary[c][fw] for c in CASES if fw in summary[c]), None)] if s)
    inf = report_infer.load(args.results)
    text = text_summary(extra)
    chart(summary, inf, args.chart, args.quick)

    shares = [s["other"] for c in CASES for s in summary[c].values()]
    other = f"{max(shares):.0%}" if shares else "–"
    step = extra.get("pytorch_step")
    kiln_mlp = summary["mlp"].get("kiln")
    md = ["# Benchmarks", "",
          f"_Written by `make bench` (bench/run.sh) on {m['date']}, commit {m['git'] or '?'}. "
          "Do not edit by hand._", ""]
    if args.quick:
        md += ["> **Quick run** (1 epoch, 1 seed, short timings): checks the plumbing; the numbers are not "
               "comparable.", ""]
    md += ["## Targets and where we stand", "",
           "The goals of the open issues (18: convolutions, int8, native, training; 14: text) and the earlier "
           "ones still promised (issue 8: cold start, download). A target is judged only when both sides were "
           "measured in this run; ⚠ marks a verdict taken while other processes used the CPU.", "",
           *report_infer.targets(summary, inf, text, extra, args.results.parent / "kiln-wasm-pkg"), "",
           "## Method", "", METHOD, "", "Inference:", report_infer.METHOD, "",
           "## Machine", "",
           "| | |", "| --- | --- |",
           f"| CPU | {m['cpu']} ({m['simd']}) |", f"| cores / memory | {m['cores']} / {m['mem_gib']} GiB |",
           f"| kernel | Linux {m['kernel']} |", f"| Python / Rust | {m['python']} / {m['rustc'] or '?'} |",
           f"| Node / Chromium | {m.get('node') or '?'} / {m.get('chromium') or '?'} |",
           f"| versions | {versions or '–'} |",
           f"| load average at start | {m['loadavg_start']:.2f} |",
           f"| ran at raised CPU priority (BENCH_PRIORITY) | {'yes' if m.get('high_priority') else 'no'} |",
           f"| busiest other-process CPU share during a training run | {other} |", "",
           "## Training", "", *training_table(summary), "",
           "![training throughput and memory; inference latency, cold start and download](bench/chart.png)", "",
           "## Memory", "", *memory_table(summary), "",
           "## One training step", "",
           "MLP 64-128-64-10, batch 32: forward, cross-entropy, backward, Adam step.", "",
           "| | µs / step |", "| --- | ---: |",
           f"| PyTorch (median of 5 × 2000 steps, no data handling) | "
           f"{fmt(step and step['us_per_step'], ',.1f', bool(step and step.get('other_cpu_share', 0) > LOADED))} |",
           f"| kiln (from `fit`: wall time / steps, includes shuffling and batching) | "
           f"{fmt(kiln_mlp and kiln_mlp['us_step'], ',.1f', bool(kiln_mlp and kiln_mlp['loaded']))} |",
           f"| PyTorch (same measure as kiln's row) | "
           f"{fmt(summary['mlp'].get('pytorch') and summary['mlp']['pytorch']['us_step'], ',.1f')} |", "",
           "## GEMM: OpenBLAS sgemm (numpy) as the yardstick", "", *sgemm_table(extra), "",
           "## Inference: kiln-wasm vs onnxruntime-web, kiln.InferenceSession vs onnxruntime", "",
           *report_infer.section(inf), "",
           "## Two threads: batch 64 in Node", "", *threads_table(extra), "",
           "## Text training: kiln vs PyTorch", "", *text_table(text), "",
           "## Text generation: kiln-wasm's generate vs onnxruntime-web with the loop in JS", "",
           *generate_table(extra), "",
           "## Training in JavaScript: kiln-wasm's Trainer vs TensorFlow.js", "", *race_table(extra), "",
           "## Load time against graph size", "",
           "A chain of Relu nodes, `x [batch, 16]` in, loaded and run once (bench/load/chains.py).", "",
           *load_table(extra)]
    # Rows run.sh does not make (measured by hand with their own scripts, e.g. the text models'):
    # kept in bench/sequences.md so a full run keeps them beside its own tables.
    kept = Path(__file__).with_name("sequences.md")
    if kept.exists():
        md += ["", kept.read_text().rstrip(), ""]
    if errors:
        md += ["## Runs that failed", "", "These produced no numbers; the tables say \"not measured yet\".", ""]
        md += [f"- `{name}`: {msg[:300]}" for name, msg in errors] + [""]
    args.markdown.write_text("\n".join(md))


if __name__ == "__main__":
    main()
