//! The hand-written ridge solver against linfa's elastic net with l1_ratio 0 (pure ridge).
//! linfa fits the intercept by centring the target only, so the features are centred here
//! before they are handed to it; its objective (1/2n)‖y − Xw‖² + ½·penalty·‖w‖² has the same
//! minimiser as ours, (1/n)‖y − c − Xw‖² + α‖w‖², with penalty = α.

use layerprune_surrogate::ridge_solve;
use linfa::traits::Fit;
use linfa::DatasetBase;
use linfa_elasticnet::ElasticNet;
use ndarray016::{Array1, Array2};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

#[test]
fn ridge_matches_linfa_elastic_net_with_l1_ratio_zero() {
    let mut rng = ChaCha8Rng::seed_from_u64(17);
    let (rows, columns) = (60, 5);
    let features: Vec<Vec<f64>> = (0..rows)
        .map(|_| {
            (0..columns)
                .map(|_| f64::from(u8::from(rng.random_bool(0.6))))
                .collect()
        })
        .collect();
    let targets: Vec<f64> = features
        .iter()
        .map(|x| 0.5 + x[0] - 2.0 * x[1] + 0.3 * x[2] * x[3] + rng.random_range(-0.1..0.1))
        .collect();

    for alpha in [0.01, 0.3] {
        let (intercept, weights) = ridge_solve(&features, &targets, alpha).unwrap();

        let means: Vec<f64> = (0..columns)
            .map(|j| features.iter().map(|x| x[j]).sum::<f64>() / rows as f64)
            .collect();
        let centred = Array2::from_shape_fn((rows, columns), |(i, j)| features[i][j] - means[j]);
        let dataset = DatasetBase::new(centred, Array1::from(targets.clone()));
        let linfa_model = ElasticNet::params()
            .l1_ratio(0.0)
            .penalty(alpha)
            .tolerance(1e-14)
            .max_iterations(100_000)
            .fit(&dataset)
            .unwrap();
        let linfa_weights = linfa_model.hyperplane();
        let linfa_intercept = linfa_model.intercept()
            - linfa_weights
                .iter()
                .zip(&means)
                .map(|(w, m)| w * m)
                .sum::<f64>();
        for (ours, theirs) in weights.iter().zip(linfa_weights.iter()) {
            assert!(
                (ours - theirs).abs() < 1e-6,
                "α={alpha}: {weights:?} vs {linfa_weights}"
            );
        }
        assert!((intercept - linfa_intercept).abs() < 1e-6, "α={alpha}");
    }
}
