//! Which number measures a mask's quality.

use std::str::FromStr;

/// How a mask's mean token NLL becomes the value of its coalition (higher is better).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Objective {
    /// PPL(full model) / PPL(mask) = exp(nll_full − nll_mask), in (0, 1] for masks worse than
    /// the full model: the published utility.
    Utility,
    /// −nll: the log-likelihood itself; additive over tokens, no reference needed.
    NegNll,
}

impl Objective {
    pub fn value(self, nll: f64, full_model_nll: f64) -> f64 {
        match self {
            Objective::Utility => (full_model_nll - nll).exp(),
            Objective::NegNll => -nll,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Objective::Utility => "utility",
            Objective::NegNll => "neg-nll",
        }
    }
}

impl FromStr for Objective {
    type Err = String;
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        match text {
            "utility" => Ok(Objective::Utility),
            "neg-nll" | "neg_nll" => Ok(Objective::NegNll),
            _ => Err(format!("objective {text:?} is not one of utility, neg-nll")),
        }
    }
}
