//! Exact Shapley values by enumerating every coalition: the estimator of record for small
//! games (a fully evaluated table replayed as a [`RecordedGame`](crate::RecordedGame)) and the
//! reference every sampled estimator is tested against.

use crate::{Game, GameError, Mask};

/// Exact Shapley values of any game by full enumeration (2^n masks): the reference for
/// small games. Uses φ_i = Σ_{S∌i} |S|!(n−|S|−1)!/n! (v(S∪i) − v(S)).
pub fn exact_shapley(game: &mut dyn Game) -> Result<Vec<f64>, GameError> {
    let n = game.num_players();
    if n > 24 {
        return Err(format!("exact Shapley values need 2^{n} masks; at most 24 players").into());
    }
    let masks: Vec<Mask> = (0..1u64 << n)
        .map(|bits| Mask::from_kept((0..n).map(|i| bits >> i & 1 == 1).collect()))
        .collect();
    let values = game.values(&masks)?;
    // weight[s] = s!(n-s-1)!/n!
    let weight: Vec<f64> = (0..n)
        .map(|s| {
            let mut w = 1.0 / n as f64;
            // 1 / (n * C(n-1, s))
            let mut c = 1.0;
            for k in 0..s {
                c *= (n - 1 - k) as f64 / (k + 1) as f64;
            }
            w /= c;
            w
        })
        .collect();
    let mut phi = vec![0.0; n];
    for bits in 0..1usize << n {
        let size = bits.count_ones() as usize;
        for (i, phi_i) in phi.iter_mut().enumerate() {
            if bits >> i & 1 == 0 {
                *phi_i += weight[size] * (values[bits | 1 << i] - values[bits]);
            }
        }
    }
    Ok(phi)
}
