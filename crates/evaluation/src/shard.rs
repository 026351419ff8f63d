//! Spreading a run's masks over machines.

use layerprune_core::Mask;

/// Shard `index` of `count` (0 ≤ index < count): a fixed part of any mask list, so `count`
/// runs cover every mask exactly once.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Shard {
    index: u64,
    count: u64,
}

impl Shard {
    /// Shard `index` of `count`, or `None` unless 0 ≤ index < count.
    pub fn new(index: u64, count: u64) -> Option<Shard> {
        (index < count).then_some(Shard { index, count })
    }

    pub fn index(&self) -> u64 {
        self.index
    }

    pub fn count(&self) -> u64 {
        self.count
    }

    /// A mask's shard: the first 8 bytes of the sha256 of its id, modulo the count. Depends on
    /// the mask alone, so it survives reordering and appending to the mask table.
    pub fn owns(&self, mask: &Mask) -> bool {
        let digest = layerprune_core::sha256_hex(mask.id().as_bytes());
        let value = u64::from_str_radix(&digest[..16], 16).unwrap_or(0);
        value % self.count == self.index
    }

    /// The masks of this shard, in their order.
    pub fn select(&self, mut masks: Vec<Mask>) -> Vec<Mask> {
        masks.retain(|mask| self.owns(mask));
        masks
    }
}

/// `I/N`, as `--shard` takes it.
impl std::str::FromStr for Shard {
    type Err = String;
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let bad = || format!("shard {text:?} is not I/N with 0 <= I < N");
        let (index, count) = text.split_once('/').ok_or_else(bad)?;
        let index: u64 = index.trim().parse().map_err(|_| bad())?;
        let count: u64 = count.trim().parse().map_err(|_| bad())?;
        Shard::new(index, count).ok_or_else(bad)
    }
}

impl std::fmt::Display for Shard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.index, self.count)
    }
}
