//! The tests the monitor runs, in f64 so that native and wasm builds give the same numbers:
//! population stability index, a two-sample Kolmogorov–Smirnov p-value on binned CDFs, and
//! Pearson's chi-square on class counts.

/// Population stability index of `live` counts against reference proportions `reference`
/// (same bins). Both sides get half a pseudo-count per bin so an empty bin stays finite:
/// `Σ (q - p) ln(q / p)`.
pub fn psi(reference: &[f64], reference_n: f64, live: &[u64], live_n: u64) -> f64 {
    let bins = reference.len() as f64;
    let live_n = live_n as f64;
    reference
        .iter()
        .zip(live)
        .map(|(&p, &c)| {
            let p = (p * reference_n + 0.5) / (reference_n + 0.5 * bins);
            let q = (c as f64 + 0.5) / (live_n + 0.5 * bins);
            (q - p) * (q / p).ln()
        })
        .sum()
}

/// The p-value of a two-sample Kolmogorov–Smirnov statistic `d` between samples of `n` and `m`
/// observations (asymptotic Kolmogorov distribution with Stephens' small-sample correction).
/// On binned CDFs the statistic can only shrink, so the p-value errs on the quiet side.
pub fn ks_p_value(d: f64, n: f64, m: f64) -> f64 {
    if n <= 0.0 || m <= 0.0 || d <= 0.0 {
        return 1.0;
    }
    let ne = n * m / (n + m);
    let lambda = (ne.sqrt() + 0.12 + 0.11 / ne.sqrt()) * d;
    if lambda < 0.3 {
        return 1.0; // Q_KS(0.3) > 0.99999; the series below converges slowly there
    }
    let mut sum = 0.0;
    let mut sign = 1.0;
    for k in 1..=100 {
        let k = k as f64;
        let term = (-2.0 * k * k * lambda * lambda).exp();
        sum += sign * term;
        if term < 1e-16 {
            break;
        }
        sign = -sign;
    }
    (2.0 * sum).clamp(0.0, 1.0)
}

/// Pearson's chi-square statistic of `live` counts against reference proportions (each given
/// half a pseudo-count, as in [`psi`]) and its p-value with `bins - 1` degrees of freedom.
pub fn chi_square(reference: &[f64], reference_n: f64, live: &[u64], live_n: u64) -> (f64, f64) {
    let bins = reference.len() as f64;
    let n = live_n as f64;
    if live_n == 0 || reference.len() < 2 {
        return (0.0, 1.0);
    }
    let stat: f64 = reference
        .iter()
        .zip(live)
        .map(|(&p, &c)| {
            let p = (p * reference_n + 0.5) / (reference_n + 0.5 * bins);
            let e = n * p;
            (c as f64 - e).powi(2) / e
        })
        .sum();
    (stat, gamma_q((bins - 1.0) / 2.0, stat / 2.0))
}

/// ln Γ(x) for x > 0 (Lanczos, g = 7, 9 terms: ~1e-15 relative).
fn ln_gamma(x: f64) -> f64 {
    const G: [f64; 9] = [
        0.999_999_999_999_809_9,
        676.520_368_121_885_1,
        -1_259.139_216_722_402_8,
        771.323_428_777_653_1,
        -176.615_029_162_140_6,
        12.507_343_278_686_905,
        -0.138_571_095_265_720_12,
        9.984_369_578_019_572e-6,
        1.505_632_735_149_311_6e-7,
    ];
    if x < 0.5 {
        let pi = std::f64::consts::PI;
        return (pi / (pi * x).sin()).ln() - ln_gamma(1.0 - x);
    }
    let x = x - 1.0;
    let mut a = G[0];
    let t = x + 7.5;
    for (i, &g) in G.iter().enumerate().skip(1) {
        a += g / (x + i as f64);
    }
    0.5 * (2.0 * std::f64::consts::PI).ln() + (x + 0.5) * t.ln() - t + a.ln()
}

/// The regularized upper incomplete gamma function Q(a, x) (series below a + 1, Lentz's continued
/// fraction above, as in Numerical Recipes' `gammq`).
pub fn gamma_q(a: f64, x: f64) -> f64 {
    if x <= 0.0 || a <= 0.0 {
        return 1.0;
    }
    if !x.is_finite() {
        return 0.0;
    }
    let gln = ln_gamma(a);
    if x < a + 1.0 {
        let (mut ap, mut sum) = (a, 1.0 / a);
        let mut del = sum;
        for _ in 0..1000 {
            ap += 1.0;
            del *= x / ap;
            sum += del;
            if del.abs() < sum.abs() * 1e-15 {
                break;
            }
        }
        (1.0 - sum * (-x + a * x.ln() - gln).exp()).clamp(0.0, 1.0)
    } else {
        let tiny = 1e-300;
        let mut b = x + 1.0 - a;
        let mut c = 1.0 / tiny;
        let mut d = 1.0 / b;
        let mut h = d;
        for i in 1..1000 {
            let an = -(i as f64) * (i as f64 - a);
            b += 2.0;
            d = an * d + b;
            if d.abs() < tiny {
                d = tiny;
            }
            c = b + an / c;
            if c.abs() < tiny {
                c = tiny;
            }
            d = 1.0 / d;
            let del = d * c;
            h *= del;
            if (del - 1.0).abs() < 1e-15 {
                break;
            }
        }
        ((-x + a * x.ln() - gln).exp() * h).clamp(0.0, 1.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gamma_q_matches_known_chi_square_tails() {
        // scipy.stats.chi2.sf(x, df) = Q(df / 2, x / 2)
        assert!((gamma_q(0.5, 3.841_458_820_694_124 / 2.0) - 0.05).abs() < 1e-9);
        assert!((gamma_q(4.5, 21.665_994_333_461_924 / 2.0) - 0.01).abs() < 1e-9);
        assert!((gamma_q(1.0, 2.0) - (-2.0f64).exp()).abs() < 1e-12);
        assert_eq!(gamma_q(3.0, 0.0), 1.0);
    }

    #[test]
    fn ks_p_value_matches_the_kolmogorov_distribution() {
        // Q_KS(1.36) ≈ 0.0494, Q_KS(1.63) ≈ 0.0098 (the familiar 5% / 1% critical values)
        let big: f64 = 1e12;
        assert!((ks_p_value(1.36 / big.sqrt(), big, big * 1e6) - 0.0494).abs() < 1e-3);
        assert!((ks_p_value(1.63 / big.sqrt(), big, big * 1e6) - 0.0098).abs() < 1e-3);
        assert_eq!(ks_p_value(0.0, 10.0, 10.0), 1.0);
        assert!(ks_p_value(1.0, 200.0, 1000.0) < 1e-30);
    }

    #[test]
    fn psi_is_zero_for_equal_mixes_and_grows_with_the_shift() {
        let p = [0.25, 0.25, 0.5];
        assert!(psi(&p, 1000.0, &[250, 250, 500], 1000).abs() < 1e-12);
        let small = psi(&p, 1000.0, &[300, 250, 450], 1000);
        let large = psi(&p, 1000.0, &[600, 250, 150], 1000);
        assert!(small > 0.0 && large > 10.0 * small, "{small} {large}");
        assert!(psi(&p, 1000.0, &[0, 0, 1000], 1000).is_finite());
    }

    #[test]
    fn chi_square_flags_a_changed_class_mix() {
        let p = [0.5, 0.5];
        let (_, same) = chi_square(&p, 1000.0, &[100, 100], 200);
        let (stat, moved) = chi_square(&p, 1000.0, &[150, 50], 200);
        assert!(same > 0.9, "{same}");
        assert!(stat > 40.0 && moved < 1e-9, "{stat} {moved}");
    }
}
