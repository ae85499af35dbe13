//! Runs the ONNX backend node conformance cases through both of kiln's engines: tract's
//! (`TractSession`) and kiln's own (`KilnSession`).
//!
//! The cases come from `scripts/gen_onnx_cases.py` (onnx's own definitions, written to
//! `target/onnx-node-cases`). Each case runs in isolation (a panic is caught and counted as a
//! failure); outputs are compared like numpy's `allclose(rtol=1e-3, atol=1e-4)`, NaN equal to NaN.
//!
//! kiln's engine either runs a case exactly or declines it at load (then, in a browser or in
//! `kiln.InferenceSession`, tract runs it). So for it every case is one of: accepted and passing,
//! declined (counted, with the reason), or failing — accepted and then wrong or erroring, which
//! must never happen: any such case makes the run exit 1.
//!
//! ```text
//! cargo run --release -p kiln-core --example onnx_conformance -- \
//!     [--cases target/onnx-node-cases] [--check core/tests/onnx_conformance/passing.txt] \
//!     [--write core/tests/onnx_conformance/passing.txt] [--filter SUBSTRING]
//! ```
//! `--check LIST` exits 1 when a case on LIST no longer passes on tract, or one on
//! `kiln_passing.txt` beside it no longer passes on kiln's engine; `--write LIST` rewrites both.
//! Every case's result and the reason for each failure or decline go to `<cases>/report.txt`. The
//! last line printed is `conformance: N passed, M failed` (tract).
//!
//! Then whole models from other tools (`--foreign tests/fixtures/foreign`: PyTorch's legacy and
//! dynamo exporters, skl2onnx, onnxruntime's quantizer, onnx.helper): how many of each tool's files
//! kiln's engine takes, each taken one checked against the outputs recorded beside it. `--check`
//! also fails when a file on `kiln_foreign.txt` is no longer taken; `--write` rewrites it.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Arc};
use std::time::Instant;

use kiln_core::onnx::engine::{KilnSession, Value};
use kiln_core::onnx::tract::{TensorData, TractSession};
use tract_onnx::prelude::*;

const RTOL: f64 = 1e-3;
const ATOL: f64 = 1e-4;

struct Args {
    cases: PathBuf,
    check: Option<PathBuf>,
    write: Option<PathBuf>,
    filter: Option<String>,
    foreign: PathBuf,
}

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        cases: "target/onnx-node-cases".into(),
        check: None,
        write: None,
        filter: None,
        foreign: "tests/fixtures/foreign".into(),
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().ok_or(format!("{flag} needs a value"));
        match flag.as_str() {
            "--cases" => args.cases = value()?.into(),
            "--check" => args.check = Some(value()?.into()),
            "--write" => args.write = Some(value()?.into()),
            "--filter" => args.filter = Some(value()?),
            "--foreign" => args.foreign = value()?.into(),
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    Ok(args)
}

/// A tract tensor from the data file as the `TensorData` kiln takes and returns (the same
/// widenings as kiln: float16 → float32, int16/uint16 → int32, uint32/uint64 → int64).
fn to_data(t: Tensor) -> Result<TensorData, String> {
    let e = |e: TractError| e.to_string();
    let widen = |t: &Tensor, dt: DatumType| t.cast_to_dt(dt).map(|c| c.into_owned()).map_err(e);
    Ok(match t.datum_type() {
        DatumType::F32 => TensorData::F32(t.into_plain_array().map_err(e)?),
        DatumType::F64 => TensorData::F64(t.into_plain_array().map_err(e)?),
        DatumType::I64 => TensorData::I64(t.into_plain_array().map_err(e)?),
        DatumType::I32 => TensorData::I32(t.into_plain_array().map_err(e)?),
        DatumType::I8 => TensorData::I8(t.into_plain_array().map_err(e)?),
        DatumType::U8 => TensorData::U8(t.into_plain_array().map_err(e)?),
        DatumType::Bool => TensorData::Bool(t.into_plain_array().map_err(e)?),
        DatumType::F16 => {
            TensorData::F32(widen(&t, DatumType::F32)?.into_plain_array().map_err(e)?)
        }
        DatumType::I16 | DatumType::U16 => {
            TensorData::I32(widen(&t, DatumType::I32)?.into_plain_array().map_err(e)?)
        }
        DatumType::U32 | DatumType::U64 => {
            TensorData::I64(widen(&t, DatumType::I64)?.into_plain_array().map_err(e)?)
        }
        other => {
            return Err(format!(
                "test data of type {other:?} cannot be passed to kiln"
            ))
        }
    })
}

struct CaseData {
    inputs: Vec<TensorData>,
    outputs: Vec<TensorData>,
    /// The inputs as stored, to embed into the model on the second try.
    input_protos: Vec<tract_onnx::pb::TensorProto>,
}

/// `input.0, input.1, …` and `output.0, …` from a case's data.onnx.
fn load_data(path: &Path) -> Result<CaseData, String> {
    let onnx = tract_onnx::onnx();
    let proto = onnx
        .proto_model_for_path(path)
        .map_err(|e| format!("{}: {e}", path.display()))?;
    let graph = proto.graph.ok_or("data file without graph")?;
    let (mut inputs, mut outputs) = (vec![], vec![]);
    for t in &graph.initializer {
        let tensor =
            tract_onnx::tensor::load_tensor(&*onnx.provider, t, None).map_err(|e| e.to_string())?;
        let (list, ix) = if let Some(ix) = t.name.strip_prefix("input.") {
            (&mut inputs, ix)
        } else {
            (&mut outputs, t.name.trim_start_matches("output."))
        };
        let ix: usize = ix
            .parse()
            .map_err(|_| format!("bad tensor name {}", t.name))?;
        list.push((ix, to_data(tensor)?, t.clone()));
    }
    inputs.sort_by_key(|p| p.0);
    outputs.sort_by_key(|p| p.0);
    let input_protos = inputs.iter().map(|p| p.2.clone()).collect();
    Ok(CaseData {
        inputs: inputs.into_iter().map(|p| p.1).collect(),
        outputs: outputs.into_iter().map(|p| p.1).collect(),
        input_protos,
    })
}

fn compare(got: &TensorData, want: &TensorData) -> Result<(), String> {
    if got.dtype() != want.dtype() {
        return Err(format!("dtype {} instead of {}", got.dtype(), want.dtype()));
    }
    if got.shape() != want.shape() {
        return Err(format!(
            "shape {:?} instead of {:?}",
            got.shape(),
            want.shape()
        ));
    }
    let values = |t: &TensorData| -> Vec<f64> {
        match t {
            TensorData::F32(a) => a.iter().map(|&v| v as f64).collect(),
            TensorData::F64(a) => a.iter().copied().collect(),
            TensorData::I64(a) => a.iter().map(|&v| v as f64).collect(),
            TensorData::I32(a) => a.iter().map(|&v| v as f64).collect(),
            TensorData::I8(a) => a.iter().map(|&v| v as f64).collect(),
            TensorData::U8(a) => a.iter().map(|&v| v as f64).collect(),
            TensorData::Bool(a) => a.iter().map(|&v| v as u8 as f64).collect(),
        }
    };
    for (i, (g, w)) in values(got).into_iter().zip(values(want)).enumerate() {
        let same = (g.is_nan() && w.is_nan()) || g == w || (g - w).abs() <= ATOL + RTOL * w.abs();
        if !same {
            return Err(format!("value {i}: {g} instead of {w}"));
        }
    }
    Ok(())
}

/// How a case passed: with every input fed at run time, or only once its parameter inputs (every
/// input after the first: axes, shapes, pads, scales, …) were embedded as initializers, the way
/// exported models carry them.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Pass {
    Strict,
    ConstInputs,
}

fn check_outputs(
    sess: &TractSession,
    inputs: Vec<TensorData>,
    expected: &[TensorData],
) -> Result<(), String> {
    let outputs = sess.run(inputs).map_err(|e| format!("run: {e}"))?;
    if outputs.len() != expected.len() {
        return Err(format!(
            "{} outputs instead of {}",
            outputs.len(),
            expected.len()
        ));
    }
    for (k, (g, w)) in outputs.iter().zip(expected).enumerate() {
        compare(g, w).map_err(|e| format!("output {k}: {e}"))?;
    }
    Ok(())
}

/// What kiln's engine made of a case.
#[derive(Debug, Clone)]
enum Kiln {
    Pass,
    /// Passing once its int64 inputs (shapes, axes, indices) were embedded as constants.
    PassEmbedded,
    Declined(String),
    Fail(String),
}

/// Every input fed at run time first. kiln's engine evaluates shapes, axes and indices when it
/// imports a graph (they must be fixed by the model, as every exporter writes them), so a case
/// that feeds them as int64 inputs is declined; it is tried again with those inputs embedded as
/// constants (the convention the tract run uses too), the float inputs still fed.
fn run_kiln(dir: &Path, data: &CaseData) -> Kiln {
    let bytes = match std::fs::read(dir.join("model.onnx")) {
        Ok(b) => b,
        Err(e) => return Kiln::Fail(e.to_string()),
    };
    match KilnSession::from_bytes(&bytes) {
        Ok(Ok(s)) => check_kiln(&s, data, None),
        Ok(Err(why)) => match embed_int_inputs(&bytes, data) {
            Some((bytes, fed)) => match KilnSession::from_bytes(&bytes) {
                Ok(Ok(s)) => match check_kiln(&s, data, Some(&fed)) {
                    Kiln::Pass => Kiln::PassEmbedded,
                    other => other,
                },
                _ => Kiln::Declined(why.0),
            },
            None => Kiln::Declined(why.0),
        },
        Err(e) => Kiln::Declined(format!("not loadable: {e}")),
    }
}

/// The model with its int64 inputs made initializers, and the indices of the
/// inputs still fed; `None` when there are none to embed.
fn embed_int_inputs(bytes: &[u8], data: &CaseData) -> Option<(Vec<u8>, Vec<usize>)> {
    use kiln_core::onnx::pb;
    use prost::Message;
    let mut proto = pb::ModelProto::decode(bytes).ok()?;
    let graph = proto.graph.as_mut()?;
    let initialized: BTreeSet<String> = graph.initializer.iter().map(|t| t.name.clone()).collect();
    let names: Vec<String> = graph
        .input
        .iter()
        .map(|i| i.name.clone())
        .filter(|n| !initialized.contains(n))
        .collect();
    let mut fed = vec![];
    for (ix, (name, t)) in names.iter().zip(&data.inputs).enumerate() {
        if matches!(t, TensorData::I64(_)) {
            let mut init =
                pb::TensorProto::decode(data.input_protos[ix].encode_to_vec().as_slice()).ok()?;
            init.name = name.clone();
            graph.initializer.push(init);
        } else {
            fed.push(ix);
        }
    }
    (fed.len() < names.len()).then(|| (proto.encode_to_vec(), fed))
}

/// Runs a session on the case's inputs (`fed`: which of them; `None`: all) against its outputs.
fn check_kiln(sess: &KilnSession, data: &CaseData, fed: Option<&[usize]>) -> Kiln {
    let inputs: Vec<&TensorData> = match fed {
        None => data.inputs.iter().collect(),
        Some(fed) => fed.iter().map(|&i| &data.inputs[i]).collect(),
    };
    if sess.inputs().len() != inputs.len() {
        return Kiln::Fail(format!(
            "{} inputs instead of {}",
            sess.inputs().len(),
            inputs.len()
        ));
    }
    let mut feeds = vec![];
    for (info, t) in sess.inputs().iter().zip(inputs) {
        let value = match t {
            TensorData::F32(a) => Value::F32(a.clone()),
            TensorData::I64(a) => Value::I64(a.clone()),
            other => return Kiln::Fail(format!("input of type {}", other.dtype())),
        };
        feeds.push((info.name.clone(), value));
    }
    let outputs = match sess.run(feeds) {
        Ok(o) => o,
        Err(e) => return Kiln::Fail(format!("run: {e}")),
    };
    if outputs.len() != data.outputs.len() {
        return Kiln::Fail(format!(
            "{} outputs instead of {}",
            outputs.len(),
            data.outputs.len()
        ));
    }
    for (k, (g, w)) in outputs.into_iter().zip(&data.outputs).enumerate() {
        if let Err(e) = compare(&TensorData::F32(g), w) {
            return Kiln::Fail(format!("output {k}: {e}"));
        }
    }
    Kiln::Pass
}

fn run_case(dir: &Path) -> (Result<Pass, String>, Kiln) {
    let data = match load_data(&dir.join("data.onnx")) {
        Ok(d) => d,
        // Test data kiln cannot read (strings, bfloat16): kiln's engine must decline the model.
        Err(e) => {
            let kiln =
                match std::fs::read(dir.join("model.onnx")).map(|b| KilnSession::from_bytes(&b)) {
                    Ok(Ok(Err(why))) => Kiln::Declined(why.0),
                    Ok(Err(load)) => Kiln::Declined(format!("not loadable: {load}")),
                    _ => Kiln::Fail(format!(
                        "accepted a model whose test data is unreadable: {e}"
                    )),
                };
            return (Err(e), kiln);
        }
    };
    let kiln = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| run_kiln(dir, &data)))
        .unwrap_or_else(|_| Kiln::Fail("panicked".into()));
    let tract = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| run_tract(dir, data)))
        .unwrap_or_else(|_| Err("panicked".to_string()));
    (tract, kiln)
}

fn run_tract(dir: &Path, data: CaseData) -> Result<Pass, String> {
    let model = dir.join("model.onnx");
    let strict = TractSession::from_path(&model).map_err(|e| format!("load: {e}"));
    let error = match strict {
        Ok(sess) => return check_outputs(&sess, data.inputs, &data.outputs).map(|_| Pass::Strict),
        Err(e) => e,
    };
    // tract wants axes, shapes, pads and scales as constants; the cases feed them as inputs.
    let mut proto = tract_onnx::onnx()
        .proto_model_for_path(&model)
        .map_err(|e| e.to_string())?;
    let graph = proto.graph.as_mut().ok_or("model without graph")?;
    let initialized: BTreeSet<String> = graph.initializer.iter().map(|t| t.name.clone()).collect();
    let names: Vec<String> = graph
        .input
        .iter()
        .map(|i| i.name.clone())
        .filter(|n| !initialized.contains(n))
        .collect();
    let mut feed = vec![];
    for (ix, ((name, data), t)) in names
        .iter()
        .zip(data.inputs)
        .zip(&data.input_protos)
        .enumerate()
    {
        if ix > 0 {
            graph.initializer.push(tract_onnx::pb::TensorProto {
                name: name.clone(),
                ..t.clone()
            });
        } else {
            feed.push(data);
        }
    }
    if graph.initializer.len() == initialized.len() {
        return Err(error);
    }
    let sess = TractSession::from_proto(proto, dir.to_str()).map_err(|_| error)?;
    check_outputs(&sess, feed, &data.outputs).map(|_| Pass::ConstInputs)
}

fn main() {
    let args = parse_args().unwrap_or_else(|e| {
        eprintln!("onnx_conformance: {e}");
        std::process::exit(2)
    });
    let list = args.cases.join("cases.txt");
    let names: Vec<String> = std::fs::read_to_string(&list)
        .unwrap_or_else(|e| {
            eprintln!(
                "{}: {e} (run scripts/gen_onnx_cases.py first)",
                list.display()
            );
            std::process::exit(2)
        })
        .lines()
        .filter(|n| !n.is_empty() && args.filter.as_ref().is_none_or(|f| n.contains(f.as_str())))
        .map(String::from)
        .collect();
    // Panics are caught per case and reported as failures; keep their messages off stderr.
    std::panic::set_hook(Box::new(|_| {}));
    let started = Instant::now();
    let names = Arc::new(names);
    let next = Arc::new(AtomicUsize::new(0));
    let (tx, rx) = mpsc::channel();
    let workers = std::thread::available_parallelism().map_or(1, |n| n.get());
    for _ in 0..workers {
        let (names, next, tx, root) = (names.clone(), next.clone(), tx.clone(), args.cases.clone());
        std::thread::spawn(move || loop {
            let ix = next.fetch_add(1, Ordering::SeqCst);
            let Some(name) = names.get(ix) else { break };
            let dir = root.join(name);
            let result = run_case(&dir);
            if tx.send((ix, result)).is_err() {
                break;
            }
        });
    }
    drop(tx);
    let mut results: Vec<Option<Result<Pass, String>>> = vec![None; names.len()];
    let mut kiln: Vec<Option<Kiln>> = vec![None; names.len()];
    for (ix, (tract, k)) in rx {
        results[ix] = Some(tract);
        kiln[ix] = Some(k);
    }
    let mut report = String::new();
    let mut passing = BTreeSet::new();
    let mut kiln_passing = BTreeSet::new();
    let mut kiln_failing = vec![];
    let mut kiln_embedded = 0;
    let mut declined: std::collections::BTreeMap<String, usize> = Default::default();
    let mut strict = 0;
    for (name, (result, k)) in names.iter().zip(results.iter().zip(&kiln)) {
        match k {
            Some(Kiln::Pass) => {
                kiln_passing.insert(name.clone());
                report.push_str(&format!("kiln PASS {name}\n"));
            }
            Some(Kiln::PassEmbedded) => {
                kiln_passing.insert(name.clone());
                kiln_embedded += 1;
                report.push_str(&format!("kiln PASS (int64 inputs embedded) {name}\n"));
            }
            Some(Kiln::Declined(why)) => {
                // Count reasons by their operator or first words, not by every attribute value.
                let key: String = why.split([' ', '=']).take(2).collect::<Vec<_>>().join(" ");
                *declined.entry(key).or_default() += 1;
                report.push_str(&format!(
                    "kiln DECLINED {name}: {}\n",
                    why.replace('\n', " ")
                ));
            }
            Some(Kiln::Fail(e)) => {
                kiln_failing.push(name.clone());
                report.push_str(&format!("kiln FAIL {name}: {}\n", e.replace('\n', " ")));
            }
            None => {
                kiln_failing.push(name.clone());
                report.push_str(&format!("kiln FAIL {name}: no result\n"));
            }
        }
        match result {
            Some(Ok(how)) => {
                passing.insert(name.clone());
                strict += (*how == Pass::Strict) as usize;
                let how = if *how == Pass::Strict {
                    ""
                } else {
                    " (parameter inputs embedded as constants)"
                };
                report.push_str(&format!("PASS {name}{how}\n"));
            }
            Some(Err(e)) => report.push_str(&format!("FAIL {name}: {}\n", e.replace('\n', " "))),
            None => report.push_str(&format!("FAIL {name}: no result\n")),
        }
    }
    let report_path = args.cases.join("report.txt");
    if let Err(e) = std::fs::write(&report_path, report) {
        eprintln!("{}: {e}", report_path.display());
    }
    let kiln_list = |list: &Path| list.with_file_name("kiln_passing.txt");
    if let Some(path) = &args.write {
        let text: String = passing.iter().map(|n| format!("{n}\n")).collect();
        std::fs::write(path, text).expect("write the passing list");
        let text: String = kiln_passing.iter().map(|n| format!("{n}\n")).collect();
        std::fs::write(kiln_list(path), text).expect("write kiln's passing list");
        println!(
            "wrote {} passing cases to {} and {} to {}",
            passing.len(),
            path.display(),
            kiln_passing.len(),
            kiln_list(path).display()
        );
    }
    let mut status = 0;
    if !kiln_failing.is_empty() {
        eprintln!(
            "kiln's engine accepted {} case(s) it then got wrong (it must decline what it cannot \
             run exactly; see {}):",
            kiln_failing.len(),
            report_path.display()
        );
        for name in &kiln_failing {
            eprintln!("  {name}");
        }
        status = 1;
    }
    if let Some(path) = args.check.as_ref().map(|p| kiln_list(p)) {
        if let Ok(listed) = std::fs::read_to_string(&path) {
            let regressed: Vec<&str> = listed
                .lines()
                .filter(|n| !n.is_empty() && !kiln_passing.contains(*n))
                .collect();
            if !regressed.is_empty() {
                eprintln!(
                    "{} case(s) on {} no longer pass on kiln's engine:",
                    regressed.len(),
                    path.display()
                );
                for name in &regressed {
                    eprintln!("  {name}");
                }
                status = 1;
            }
        }
    }
    if let Some(path) = &args.check {
        let listed = std::fs::read_to_string(path).unwrap_or_else(|e| {
            eprintln!("{}: {e}", path.display());
            std::process::exit(2)
        });
        let regressed: Vec<&str> = listed
            .lines()
            .filter(|n| !n.is_empty() && !passing.contains(*n))
            .collect();
        if !regressed.is_empty() {
            eprintln!(
                "{} case(s) on {} no longer pass (see {}):",
                regressed.len(),
                path.display(),
                report_path.display()
            );
            for name in &regressed {
                eprintln!("  {name}");
            }
            status = 1;
        }
    }
    status |= foreign(&args);
    eprintln!(
        "{strict} passed with every input fed at run time, {} more once their parameter inputs \
         (all but the first) were embedded as constants",
        passing.len() - strict
    );
    let mut reasons: Vec<(&String, &usize)> = declined.iter().collect();
    reasons.sort_by(|a, b| b.1.cmp(a.1));
    let top: Vec<String> = reasons
        .iter()
        .take(8)
        .map(|(k, n)| format!("{k} ({n})"))
        .collect();
    eprintln!("kiln's engine declined most often: {}", top.join(", "));
    println!(
        "kiln's engine: {} accepted and passing ({kiln_embedded} of them once their int64 inputs were embedded), {} declined, {} failing",
        kiln_passing.len(),
        names.len() - kiln_passing.len() - kiln_failing.len(),
        kiln_failing.len()
    );
    eprintln!(
        "ran {} cases in {:.1} s on {workers} threads; details in {}",
        names.len(),
        started.elapsed().as_secs_f64(),
        report_path.display()
    );
    println!(
        "conformance: {} passed, {} failed",
        passing.len(),
        names.len() - passing.len()
    );
    std::process::exit(status);
}

/// Which tool wrote a foreign fixture, from its file name's prefix.
fn exporter(name: &str) -> &'static str {
    match name {
        n if n.starts_with("torch_dynamo_") => "PyTorch, dynamo=True",
        n if n.starts_with("torch_") => "PyTorch, dynamo=False",
        n if n.starts_with("skl_") => "skl2onnx",
        n if n.starts_with("quant_") => "onnxruntime's quantizer",
        _ => "onnx.helper",
    }
}

fn tensor_json(v: &serde_json::Value) -> Result<(String, Value), String> {
    let shape: Vec<usize> = v["shape"]
        .as_array()
        .ok_or("no shape")?
        .iter()
        .map(|d| d.as_u64().map(|d| d as usize).ok_or("bad dim"))
        .collect::<Result<_, _>>()?;
    let data: Vec<f64> = v["data"]
        .as_array()
        .ok_or("no data")?
        .iter()
        .map(|d| d.as_f64().ok_or("bad value"))
        .collect::<Result<_, _>>()?;
    let name = v["name"].as_str().ok_or("no name")?.to_string();
    let dims = ndarray::IxDyn(&shape);
    let value = match v["dtype"].as_str() {
        Some("float32") => Value::F32(
            ndarray::ArrayD::from_shape_vec(dims, data.iter().map(|&x| x as f32).collect())
                .map_err(|e| e.to_string())?,
        ),
        Some("int64") => Value::I64(
            ndarray::ArrayD::from_shape_vec(dims, data.iter().map(|&x| x as i64).collect())
                .map_err(|e| e.to_string())?,
        ),
        other => {
            return Err(format!(
                "dtype {other:?} (kiln's engine feeds float32 and int64)"
            ))
        }
    };
    Ok((name, value))
}

/// One foreign file on kiln's engine: Ok(None) taken and matching, Ok(Some(why)) declined,
/// Err(what) taken and then wrong.
fn foreign_one(path: &Path) -> Result<Option<String>, String> {
    let bytes = std::fs::read(path).map_err(|e| e.to_string())?;
    let sess = match KilnSession::from_bytes(&bytes).map_err(|e| e.to_string())? {
        Ok(s) => s,
        Err(why) => return Ok(Some(why.0)),
    };
    let text = std::fs::read_to_string(path.with_extension("json")).map_err(|e| e.to_string())?;
    let record: serde_json::Value = serde_json::from_str(&text).map_err(|e| e.to_string())?;
    let tolerance = record["tolerance"].as_f64().unwrap_or(1e-5);
    let feeds = record["inputs"]
        .as_array()
        .ok_or("no inputs")?
        .iter()
        .map(tensor_json)
        .collect::<Result<Vec<_>, _>>()?;
    let got = sess.run(feeds).map_err(|e| format!("run: {e}"))?;
    let want = record["outputs"].as_array().ok_or("no outputs")?;
    // kiln's engine returns the float outputs; integer ones (class labels) are tract's to give
    for (g, w) in got.iter().zip(want) {
        let (name, w) = tensor_json(w)?;
        let Value::F32(w) = w else {
            return Err(format!("{name}: an int64 output"));
        };
        if g.shape() != w.shape() {
            return Err(format!(
                "{name}: shape {:?}, expected {:?}",
                g.shape(),
                w.shape()
            ));
        }
        let worst = g
            .iter()
            .zip(w.iter())
            .map(|(a, b)| (a - b).abs() as f64)
            .fold(0.0, f64::max);
        if worst.is_nan() || worst > tolerance {
            return Err(format!("{name}: max |diff| {worst:e} > {tolerance:e}"));
        }
    }
    Ok(None)
}

/// The foreign fixtures on kiln's engine, counted per tool; 1 when one is wrong or a listed one
/// is no longer taken.
fn foreign(args: &Args) -> i32 {
    let Ok(dir) = std::fs::read_dir(&args.foreign) else {
        eprintln!("{}: no foreign fixtures", args.foreign.display());
        return 1;
    };
    let mut files: Vec<PathBuf> = dir
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "onnx"))
        .collect();
    files.sort();
    let mut counts: std::collections::BTreeMap<&str, (usize, usize, BTreeSet<String>)> =
        Default::default();
    let (mut taken, mut status) = (BTreeSet::new(), 0);
    for path in &files {
        let name = path
            .file_stem()
            .unwrap_or_default()
            .to_string_lossy()
            .to_string();
        let entry = counts.entry(exporter(&name)).or_default();
        entry.1 += 1;
        match std::panic::catch_unwind(|| foreign_one(path)) {
            Ok(Ok(None)) => {
                entry.0 += 1;
                taken.insert(name);
            }
            Ok(Ok(Some(why))) => {
                entry
                    .2
                    .insert(why.split([' ', '=']).take(3).collect::<Vec<_>>().join(" "));
            }
            Ok(Err(e)) => {
                eprintln!(
                    "kiln's engine took {name} from {} and got it wrong: {e}",
                    args.foreign.display()
                );
                status = 1;
            }
            Err(_) => {
                eprintln!("kiln's engine panicked on {name}");
                status = 1;
            }
        }
    }
    for (tool, (n, of, why)) in &counts {
        let why: Vec<&str> = why.iter().map(String::as_str).collect();
        let why = if why.is_empty() {
            String::new()
        } else {
            format!("; declined: {}", why.join(", "))
        };
        println!("kiln's engine takes {n} of {of} files from {tool}{why}");
    }
    let list = |p: &Path| p.with_file_name("kiln_foreign.txt");
    if let Some(path) = args.write.as_ref().map(|p| list(p)) {
        let text: String = taken.iter().map(|n| format!("{n}\n")).collect();
        std::fs::write(&path, text).expect("write kiln_foreign.txt");
    }
    if let Some(path) = args.check.as_ref().map(|p| list(p)) {
        let listed = std::fs::read_to_string(&path).unwrap_or_default();
        let lost: Vec<&str> = listed
            .lines()
            .filter(|n| !n.is_empty() && !taken.contains(*n))
            .collect();
        if !lost.is_empty() {
            eprintln!(
                "kiln's engine no longer takes {} file(s) on {}: {}",
                lost.len(),
                path.display(),
                lost.join(", ")
            );
            status = 1;
        }
    }
    status
}
