//! Why a sampling request cannot be carried out.

/// A sampling request that cannot be carried out, with the offending value.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum SamplingError {
    #[error(transparent)]
    Players(#[from] layerprune_core::PlayersError),
    #[error(
        "stratum {stratum} (number of removed blocks) is out of range: with {players} players \
         (blocks not fixed) a stratum must be between 0 and {players}"
    )]
    /// `stratum` as the user gave it: negative, or past any game's players (wide enough for
    /// any `i64` of a [`crate::StrataSpec`] and any `usize` of `--strata`).
    StratumOutOfRange { stratum: i128, players: usize },
    #[error("no strata given: list at least one number of removed blocks")]
    NoStrata,
    #[error("pruning ratio {ratio} is not a number strictly between 0 and 1")]
    BadRatio { ratio: f64 },
    #[error(
        "strata derived from ratios or the published default need at least 2 players, \
         the game has {players}; give the strata explicitly"
    )]
    TooFewPlayers { players: usize },
    #[error("zero {what} requested: ask for at least one")]
    ZeroRequested { what: &'static str },
    #[error(
        "nothing to sample: ask for stratified masks, full enumeration, anchors or \
         permutation chains"
    )]
    NothingRequested,
    #[error("complement pairs pair up stratified masks: ask for stratified masks as well")]
    ComplementsNeedStrata,
    #[error(
        "full enumeration of 2^{players} masks is too large: at most {max} players \
         (2^{max} masks) can be enumerated; use stratified sampling instead"
    )]
    EnumerationTooLarge { players: usize, max: usize },
    #[error(
        "existing mask number {index} has {got} entries, but the model has {expected} blocks: \
         it belongs to another model"
    )]
    ExistingWrongBlockCount {
        index: usize,
        got: usize,
        expected: usize,
    },
    #[error(
        "new pair/chain group ids would pass i64::MAX: {needed} ids are needed from {first} on \
         (the table appended to already uses ids up to {max}); renumber its group_id column",
        max = first - 1
    )]
    GroupIdOverflow { first: i128, needed: u128 },
    #[error(
        "pilot mask number {index} has {got} entries, but the model has {expected} blocks: \
         it belongs to another model"
    )]
    PilotWrongBlockCount {
        index: usize,
        got: usize,
        expected: usize,
    },
    #[error(
        "the pilot table has no evaluations in stratum {stratum} (blocks removed), which the \
         Neyman allocation needs; it has strata {available:?}"
    )]
    PilotMissingStratum {
        stratum: usize,
        available: Vec<usize>,
    },
    #[error(
        "the pilot table has only {count} evaluation(s) in stratum {stratum}; the Neyman \
         allocation needs at least 2 to estimate a standard deviation"
    )]
    PilotTooFew { stratum: usize, count: usize },
    #[error(
        "the pilot standard deviation {std_dev} of stratum {stratum} is not a finite, \
         non-negative number"
    )]
    PilotBadStdDev { stratum: usize, std_dev: f64 },
}
