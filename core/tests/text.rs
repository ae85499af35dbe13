//! Generation through the core's one rule, without any binding: a next-character model trained on
//! `Tokenizer::windows` generates the same text on the tape (`Model`), on kiln's ONNX engine, on
//! tract and through `InferenceSession`, and its export carries the tokenizer.
#![cfg(feature = "onnx")]

use kiln_core::nn::LayerSpec;
use kiln_core::onnx::engine::KilnSession;
use kiln_core::onnx::export::{export_onnx, ExportOptions};
use kiln_core::onnx::session::{EngineChoice, InferenceSession};
use kiln_core::onnx::tract::TractSession;
use kiln_core::optim::OptimizerSpec;
use kiln_core::text::{generate, GenerateOptions, Tokenizer, Windowed, METADATA_KEY};
use kiln_core::train::{FitConfig, Hooks, Loss, Targets};
use kiln_core::{Model, Tensor};
use ndarray::IxDyn;

const NAMES: [&str; 12] = [
    "anna", "maria", "marta", "mario", "martin", "anton", "ada", "alan", "nina", "tina", "tom",
    "tamara",
];
const WINDOW: usize = 3;

fn trained(tok: &Tokenizer) -> Model {
    let v = tok.vocab_size();
    let layers = LayerSpec::list_from_json(&format!(
        r#"[{{"type":"Embedding","num_embeddings":{v},"embedding_dim":6}},{{"type":"Flatten"}},
            {{"type":"Linear","in_features":{},"out_features":24}},{{"type":"ReLU"}},
            {{"type":"Linear","in_features":24,"out_features":{v}}}]"#,
        WINDOW * 6
    ))
    .unwrap();
    let mut m = Model::new(&layers, 3).unwrap();
    let adam = OptimizerSpec::Adam {
        lr: 1e-2,
        betas: [0.9, 0.999],
        eps: 1e-8,
        weight_decay: 0.0,
        amsgrad: false,
    };
    m.compile(&adam, Loss::from_name("cross_entropy").unwrap(), vec![])
        .unwrap();
    let (x, y) = tok.windows(&NAMES, WINDOW).unwrap();
    let n = y.len();
    let x =
        Tensor::from_shape_vec(IxDyn(&[n, WINDOW]), x.iter().map(|&v| v as f32).collect()).unwrap();
    let y = Targets::Classes(y.iter().map(|&v| v as usize).collect());
    let cfg = FitConfig {
        epochs: 30,
        batch_size: 16,
        ..FitConfig::default()
    };
    let h = m
        .fit(x.view(), &y, None, &cfg, &mut Hooks::default())
        .unwrap();
    assert!(h.history["loss"].last().unwrap() < &(h.history["loss"][0] * 0.6));
    m
}

#[test]
fn the_tape_both_engines_and_the_session_generate_the_same_text() {
    let tok = Tokenizer::fit_char(&NAMES).unwrap();
    let mut model = trained(&tok);
    let opts = ExportOptions {
        extra_metadata: vec![(METADATA_KEY.into(), tok.to_json())],
        ..ExportOptions::default()
    };
    let bytes = export_onnx(&model, &opts).unwrap();
    assert_eq!(Tokenizer::from_onnx(&bytes).unwrap(), Some(tok.clone()));
    let engine = KilnSession::from_bytes(&bytes)
        .unwrap()
        .unwrap_or_else(|u| panic!("declined: {}", u.0));
    let tract = TractSession::from_bytes(&bytes).unwrap();
    let session = InferenceSession::from_bytes(&bytes, EngineChoice::Auto).unwrap();
    let mut seen = std::collections::BTreeSet::new();
    for seed in 0..8 {
        for (prompt, temperature, top_k) in
            [("ma", 0.8, Some(4)), ("", 1.0, None), ("t", 1.3, None)]
        {
            let o = GenerateOptions::new(12, temperature, top_k, seed).unwrap();
            let mut pieces = String::from(prompt);
            let want = generate(
                Windowed::for_model(&mut model).unwrap(),
                &tok,
                prompt,
                o,
                |t| {
                    pieces.push_str(&t.text);
                    Ok(())
                },
            )
            .unwrap();
            assert_eq!(pieces, want);
            let on = |step| generate(step, &tok, prompt, o, |_| Ok(())).unwrap();
            assert_eq!(
                on(Windowed::for_engine(&engine).unwrap()),
                want,
                "kiln's engine, seed {seed}"
            );
            assert_eq!(
                on(Windowed::for_tract(&tract).unwrap()),
                want,
                "tract, seed {seed}"
            );
            assert_eq!(
                on(Windowed::for_session(&session).unwrap()),
                want,
                "session, seed {seed}"
            );
            seen.insert(want);
        }
    }
    assert!(seen.len() > 8, "{seen:?}");
    // a model without the tokenizer says so
    assert_eq!(
        Tokenizer::from_onnx(&export_onnx(&model, &ExportOptions::default()).unwrap()).unwrap(),
        None
    );
}

/// The web demo's generator as users write it: Embedding → GRU (batch first) →
/// `head(out.reshape(-1, H)).reshape(-1, T, vocab)`, untrained but with weights large enough
/// that samples differ.
fn gru_lm(tok: &Tokenizer, window: usize) -> Model {
    let v = tok.vocab_size();
    let json = format!(
        r#"{{"modules":[{{"name":"emb","spec":{{"type":"Embedding","num_embeddings":{v},"embedding_dim":6}}}},
            {{"name":"gru","spec":{{"type":"GRU","input_size":6,"hidden_size":8,"batch_first":true}}}},
            {{"name":"head","spec":{{"type":"Linear","in_features":8,"out_features":{v}}}}}],
          "graph":{{"inputs":[{{"name":"ids","dtype":"int64","shape":[{window}]}}],"nodes":[
            {{"op":{{"Call":{{"module":"emb"}}}},"inputs":[0]}},
            {{"op":{{"Call":{{"module":"gru"}}}},"inputs":[1]}},
            {{"op":{{"Item":{{"index":0}}}},"inputs":[2]}},
            {{"op":{{"Reshape":{{"shape":[-1,8]}}}},"inputs":[3]}},
            {{"op":{{"Call":{{"module":"head"}}}},"inputs":[4]}},
            {{"op":{{"Reshape":{{"shape":[-1,{window},{v}]}}}},"inputs":[5]}}],
          "outputs":[6]}}}}"#
    );
    let spec: kiln_core::nn::GraphSpec = serde_json::from_str(&json).unwrap();
    let mut m = Model::from_graph_spec(&spec, 5).unwrap();
    for (_, p) in m.net.tensors_mut() {
        p.value_mut().mapv_inplace(|w| w * 4.0);
    }
    m
}

#[test]
fn a_gru_on_kilns_engine_carries_its_state_and_generates_the_windowed_text() {
    use kiln_core::text::{engine_step, session_step, Cached, Step};
    let tok = Tokenizer::fit_char(&NAMES).unwrap();
    let window = 6;
    let mut model = gru_lm(&tok, window);
    let bytes = export_onnx(&model, &ExportOptions::default()).unwrap();
    let engine = KilnSession::from_bytes(&bytes)
        .unwrap()
        .unwrap_or_else(|u| panic!("declined: {}", u.0));
    // logits position by position, past the window's end, against the whole window's rerun
    let seq = [2u32, 5, 9, 4, 6, 7, 8, 5, 4, 10, 6];
    let mut cached = Cached::for_engine(&engine)
        .unwrap()
        .expect("the imported GRU generator qualifies");
    let mut windowed = Windowed::for_engine(&engine).unwrap();
    let mut pairs = vec![(
        cached.start(&seq[..1]).unwrap(),
        windowed.start(&seq[..1]).unwrap(),
    )];
    for &id in &seq[1..] {
        pairs.push((cached.next(id).unwrap(), windowed.next(id).unwrap()));
    }
    for (k, (c, w)) in pairs.iter().enumerate() {
        assert_eq!(c.len(), tok.vocab_size());
        let err = c.iter().zip(w).fold(0f32, |e, (a, b)| e.max((a - b).abs()));
        assert!(
            err < 1e-5,
            "position {k}: cached and windowed differ by {err}"
        );
    }
    // the tape's model with the same reshapes qualifies too
    assert!(Cached::for_model(&mut model).unwrap().is_some());
    // the same text for every seed, whichever step runs it
    let session = InferenceSession::from_bytes(&bytes, EngineChoice::Kiln).unwrap();
    let mut seen = std::collections::BTreeSet::new();
    for seed in 0..10 {
        for prompt in ["", "ma", "tamarinda"] {
            let o = GenerateOptions::new(14, 1.0, None, seed).unwrap();
            let want = generate(
                Windowed::for_engine(&engine).unwrap(),
                &tok,
                prompt,
                o,
                |_| Ok(()),
            )
            .unwrap();
            let on = |step| generate(step, &tok, prompt, o, |_| Ok(())).unwrap();
            assert_eq!(on(engine_step(&engine).unwrap()), want, "seed {seed}");
            assert_eq!(on(session_step(&session).unwrap()), want, "seed {seed}");
            let tape = generate(
                Cached::for_model(&mut model).unwrap().unwrap(),
                &tok,
                prompt,
                o,
                |_| Ok(()),
            )
            .unwrap();
            assert_eq!(tape, want, "the tape, seed {seed}");
            seen.insert(want);
        }
    }
    assert!(seen.len() > 10, "{seen:?}");
}
