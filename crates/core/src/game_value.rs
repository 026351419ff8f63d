//! Which number measures a mask's quality: the one definition of a mask's value, used by the
//! LLM as a game, by the evaluation table read as a game (`shapley --value`), by what a
//! surrogate is fitted to predict (`fit-surrogate --value`, the surrogate file's `value`) and
//! by the evaluation run's `utility` column. One name, "value", for the choice in every flag,
//! field and column (`--value`, a surrogate's `value`, the metrics' `value`, a plan's
//! `predicted_value`); `utility` names one of the choices.

use std::str::FromStr;

/// How a mask's mean token NLL becomes the value of its coalition (higher is better).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GameValue {
    /// PPL(full model) / PPL(mask) = exp(nll_full − nll_mask), in (0, 1] for masks worse than
    /// the full model: the published utility.
    Utility,
    /// −nll: the log-likelihood itself; additive over tokens, no reference needed.
    NegNll,
    /// −(nll_mask − nll_full): minus the loss increase, 0 for the full model; −nll shifted by
    /// a constant, so the same game up to the empty coalition's value.
    NllIncrease,
}

impl GameValue {
    pub fn value(self, nll: f64, full_model_nll: f64) -> f64 {
        match self {
            GameValue::Utility => (full_model_nll - nll).exp(),
            GameValue::NegNll => -nll,
            GameValue::NllIncrease => -(nll - full_model_nll),
        }
    }

    /// What the value means, with its sign and units (recorded in surrogate files).
    pub fn description(self) -> &'static str {
        match self {
            GameValue::Utility => {
                "utility = PPL(full model) / PPL(mask), positive; higher is better, 1 = no loss \
                 (above 1 where removing blocks lowers the perplexity)"
            }
            GameValue::NegNll => "value = -NLL(mask), mean NLL per token in nats; higher is better",
            GameValue::NllIncrease => {
                "value = -(NLL(mask) - NLL(full model)), mean NLL per token in nats: the NEGATED \
                 loss increase, so higher is better and 0 = no loss; negative for worse masks"
            }
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            GameValue::Utility => "utility",
            GameValue::NegNll => "neg-nll",
            GameValue::NllIncrease => "nll-increase",
        }
    }
}

impl FromStr for GameValue {
    type Err = String;
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        match text {
            "utility" => Ok(GameValue::Utility),
            "neg-nll" | "neg_nll" => Ok(GameValue::NegNll),
            "nll-increase" => Ok(GameValue::NllIncrease),
            _ => Err(format!(
                "value {text:?} is not one of utility, neg-nll, nll-increase"
            )),
        }
    }
}
