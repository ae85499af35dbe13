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
