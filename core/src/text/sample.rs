//! Picking the next token from a model's logits, the same way in Python and in wasm: a seeded
//! ChaCha8 stream, f64 arithmetic in a fixed order, and libm's `exp` (not the platform's), so
//! the same logits and seed give the same id on every target.

use rand::{RngCore, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::{value_err, Result};

/// The random numbers generation draws: ChaCha8 seeded from a `u64`, one draw per sampled token.
pub struct SeededRng(ChaCha8Rng);

impl SeededRng {
    /// The stream for `seed`.
    pub fn new(seed: u64) -> Self {
        SeededRng(ChaCha8Rng::seed_from_u64(seed))
    }

    /// A uniform number in [0, 1): the top 53 bits of the next `u64`.
    pub fn uniform(&mut self) -> f64 {
        (self.0.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }
}

/// The next id from `logits` (one per id): never one of `banned`. `temperature` 0 takes the
/// highest logit (the lowest id among equals) and draws nothing; otherwise the `top_k` highest
/// (all when `None`; ties in logit broken by id) are weighted `exp((logit - max) / temperature)`
/// and one is drawn. A NaN or +∞ logit is an error; −∞ means "never".
pub fn sample(
    logits: &[f32],
    banned: &[u32],
    temperature: f32,
    top_k: Option<usize>,
    rng: &mut SeededRng,
) -> Result<u32> {
    if let Some(i) = logits
        .iter()
        .position(|v| v.is_nan() || *v == f32::INFINITY)
    {
        value_err!(
            "generate: the model's logit for id {i} is {} (the model's weights or input are broken)",
            logits[i]
        );
    }
    let mut order: Vec<u32> = (0..logits.len() as u32)
        .filter(|i| !banned.contains(i) && logits[*i as usize] > f32::NEG_INFINITY)
        .collect();
    if order.is_empty() {
        value_err!("generate: the model gives every token a probability of zero");
    }
    order.sort_by(|&a, &b| {
        logits[b as usize]
            .total_cmp(&logits[a as usize])
            .then(a.cmp(&b))
    });
    if let Some(k) = top_k {
        order.truncate(k.max(1));
    }
    if temperature == 0.0 {
        return Ok(order[0]);
    }
    let max = logits[order[0] as usize] as f64;
    let t = temperature as f64;
    let weights: Vec<f64> = order
        .iter()
        .map(|&i| libm::exp((logits[i as usize] as f64 - max) / t))
        .collect();
    let total: f64 = weights.iter().sum();
    let mut u = rng.uniform() * total;
    for (&id, &w) in order.iter().zip(&weights) {
        if u < w {
            return Ok(id);
        }
        u -= w;
    }
    Ok(*order.last().expect("not empty"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_stream_is_fixed_by_the_seed() {
        let draw = |seed| {
            let mut r = SeededRng::new(seed);
            (0..4).map(|_| r.uniform()).collect::<Vec<_>>()
        };
        assert_eq!(draw(7), draw(7));
        assert_ne!(draw(7), draw(8));
        assert!(draw(0).iter().all(|u| (0.0..1.0).contains(u)));
        // pinned: a change of generator or of its seeding would change every text ever generated
        let mut r = SeededRng::new(0);
        let first: Vec<u64> = (0..3).map(|_| r.0.next_u64()).collect();
        assert_eq!(
            first,
            [
                13080132717333068652,
                8594738769458413623,
                12896916468484187878
            ]
        );
    }

    #[test]
    fn greedy_top_k_and_banned_ids() {
        let mut r = SeededRng::new(0);
        let l = [1.0, 3.0, 3.0, 2.0, f32::NEG_INFINITY];
        assert_eq!(sample(&l, &[], 0.0, None, &mut r).unwrap(), 1);
        assert_eq!(sample(&l, &[1], 0.0, None, &mut r).unwrap(), 2);
        for _ in 0..200 {
            let id = sample(&l, &[], 1.0, Some(2), &mut r).unwrap();
            assert!(id == 1 || id == 2);
            assert_ne!(sample(&l, &[0, 1, 2], 5.0, None, &mut r).unwrap(), 4);
        }
        assert!(sample(&[f32::NAN, 1.0], &[], 1.0, None, &mut r).is_err());
        assert!(sample(&[1.0, 2.0], &[0, 1], 1.0, None, &mut r).is_err());
        assert!(sample(&[], &[], 1.0, None, &mut r).is_err());
    }

    #[test]
    fn draws_follow_the_softmax() {
        let mut r = SeededRng::new(3);
        let l = [0.0f32, (2.0f32).ln(), (3.0f32).ln()]; // probabilities 1/6, 2/6, 3/6
        let mut counts = [0usize; 3];
        for _ in 0..12000 {
            counts[sample(&l, &[], 1.0, None, &mut r).unwrap() as usize] += 1;
        }
        for (c, p) in counts.iter().zip([1.0 / 6.0, 2.0 / 6.0, 0.5]) {
            assert!((*c as f64 / 12000.0 - p).abs() < 0.015, "{counts:?}");
        }
        // a high temperature flattens, a low one sharpens
        let mut hot = 0;
        let mut cold = 0;
        for _ in 0..3000 {
            hot += (sample(&l, &[], 100.0, None, &mut r).unwrap() == 0) as usize;
            cold += (sample(&l, &[], 0.05, None, &mut r).unwrap() == 0) as usize;
        }
        assert!(hot > 850 && cold < 5, "{hot} {cold}");
    }
}
