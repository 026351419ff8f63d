//! A coalition of blocks.

use std::fmt;
use std::str::FromStr;

/// Why a mask could not be built or parsed.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum MaskError {
    /// `text` is the whole string; the message shows at most its first thousand characters.
    #[error(
        "mask {} has {found:?} at position {position}, where only '0' (removed) and '1' (kept) \
         may stand",
        shown_start(text)
    )]
    BadCharacter {
        text: String,
        position: usize,
        found: char,
    },
    #[error("block {block} is out of range for a model of {num_blocks} blocks")]
    BlockOutOfRange { block: usize, num_blocks: usize },
    #[error("mask has {got} entries but the model has {expected} blocks")]
    WrongLength { got: usize, expected: usize },
}

/// Characters of a mask that a message shows: a mask of any real model (hundreds of blocks) in
/// full; of a longer string (a file read as a mask, a column of another table), the start.
const SHOWN_CHARACTERS: usize = 1_000;

/// `text` quoted for a message, whole up to [`SHOWN_CHARACTERS`] characters; beyond, its start
/// and its length, so that an error about a string of megabytes is a line, not megabytes.
fn shown_start(text: &str) -> String {
    match text.char_indices().nth(SHOWN_CHARACTERS) {
        None => format!("{text:?}"),
        Some((end, _)) => format!("{:?}… ({} characters)", &text[..end], text.chars().count()),
    }
}

/// Which blocks are kept: entry `i` is `true` when block `i` (0 = the block nearest the
/// embedding) stays in the network. Ordering is lexicographic on the entries with block 0
/// first, so sorting masks puts masks that share a prefix of kept/removed blocks next to each
/// other, which is what lets the evaluator reuse hidden states.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Mask {
    kept: Vec<bool>,
}

impl Mask {
    /// All `num_blocks` blocks kept: the full model.
    pub fn full(num_blocks: usize) -> Self {
        Mask {
            kept: vec![true; num_blocks],
        }
    }

    /// No block kept (the empty coalition).
    pub fn empty(num_blocks: usize) -> Self {
        Mask {
            kept: vec![false; num_blocks],
        }
    }

    pub fn from_kept(kept: Vec<bool>) -> Self {
        Mask { kept }
    }

    /// The full model with `removed_blocks` deleted.
    pub fn from_removed(num_blocks: usize, removed_blocks: &[usize]) -> Result<Self, MaskError> {
        let mut kept = vec![true; num_blocks];
        for &block in removed_blocks {
            if block >= num_blocks {
                return Err(MaskError::BlockOutOfRange { block, num_blocks });
            }
            kept[block] = false;
        }
        Ok(Mask { kept })
    }

    pub fn num_blocks(&self) -> usize {
        self.kept.len()
    }

    pub fn kept(&self) -> &[bool] {
        &self.kept
    }

    pub fn is_kept(&self, block: usize) -> bool {
        self.kept[block]
    }

    pub fn num_kept(&self) -> usize {
        self.kept.iter().filter(|&&k| k).count()
    }

    pub fn num_removed(&self) -> usize {
        self.kept.len() - self.num_kept()
    }

    pub fn kept_blocks(&self) -> Vec<usize> {
        (0..self.kept.len()).filter(|&i| self.kept[i]).collect()
    }

    pub fn removed_blocks(&self) -> Vec<usize> {
        (0..self.kept.len()).filter(|&i| !self.kept[i]).collect()
    }

    /// The same mask with block `block` set to `keep`.
    pub fn with(&self, block: usize, keep: bool) -> Self {
        let mut kept = self.kept.clone();
        kept[block] = keep;
        Mask { kept }
    }

    pub fn set(&mut self, block: usize, keep: bool) {
        self.kept[block] = keep;
    }

    /// Every block flipped: kept blocks removed and removed blocks kept.
    pub fn complement(&self) -> Self {
        Mask {
            kept: self.kept.iter().map(|&k| !k).collect(),
        }
    }

    /// The stable id of a mask: its entries as '1' (kept) / '0' (removed), block 0 first.
    /// Readable, unique, and the same in every run and every tool.
    pub fn id(&self) -> String {
        self.kept
            .iter()
            .map(|&k| if k { '1' } else { '0' })
            .collect()
    }

    /// Fails unless the mask has `num_blocks` entries.
    pub fn check_len(&self, num_blocks: usize) -> Result<(), MaskError> {
        if self.kept.len() == num_blocks {
            Ok(())
        } else {
            Err(MaskError::WrongLength {
                got: self.kept.len(),
                expected: num_blocks,
            })
        }
    }

    /// Entries as 0.0/1.0, the input layout of every surrogate.
    pub fn to_features(&self) -> Vec<f64> {
        self.kept
            .iter()
            .map(|&k| if k { 1.0 } else { 0.0 })
            .collect()
    }

    /// Number of leading blocks on which two masks agree (the shareable prefix).
    pub fn common_prefix_len(&self, other: &Mask) -> usize {
        self.kept
            .iter()
            .zip(&other.kept)
            .take_while(|(a, b)| a == b)
            .count()
    }
}

impl FromStr for Mask {
    type Err = MaskError;

    /// Parses the form written by [`Mask::id`].
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let mut kept = Vec::with_capacity(text.len());
        for (position, c) in text.chars().enumerate() {
            match c {
                '1' => kept.push(true),
                '0' => kept.push(false),
                found => {
                    return Err(MaskError::BadCharacter {
                        text: text.to_string(),
                        position,
                        found,
                    })
                }
            }
        }
        Ok(Mask { kept })
    }
}

impl fmt::Debug for Mask {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Mask({})", self.id())
    }
}

impl fmt::Display for Mask {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.id())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn id_round_trips_and_orders_prefixes_together() {
        let mask = Mask::from_removed(6, &[1, 4]).unwrap();
        assert_eq!(mask.id(), "101101");
        assert_eq!(mask.id().parse::<Mask>().unwrap(), mask);
        assert_eq!(mask.num_removed(), 2);
        assert_eq!(mask.removed_blocks(), vec![1, 4]);
        assert_eq!(mask.complement().kept_blocks(), vec![1, 4]);
        let mut masks = [
            "110".parse::<Mask>().unwrap(),
            "011".parse().unwrap(),
            "111".parse().unwrap(),
            "100".parse().unwrap(),
        ];
        masks.sort();
        let ids: Vec<_> = masks.iter().map(Mask::id).collect();
        assert_eq!(ids, ["011", "100", "110", "111"]);
        assert_eq!(masks[2].common_prefix_len(&masks[3]), 2);
    }

    #[test]
    fn bad_input_is_reported() {
        assert!(matches!(
            "10x".parse::<Mask>(),
            Err(MaskError::BadCharacter { position: 2, .. })
        ));
        assert_eq!(
            Mask::from_removed(3, &[3]),
            Err(MaskError::BlockOutOfRange {
                block: 3,
                num_blocks: 3
            })
        );
        assert!(Mask::full(3).check_len(4).is_err());
    }

    /// A string that is not a mask is refused at its first wrong character, which the message
    /// names; a string of megabytes (a file read as a mask) gives a message of a line.
    #[test]
    fn hostile_strings_are_refused_with_a_message_of_a_line() {
        let error = "01\u{7}1".parse::<Mask>().unwrap_err();
        assert_eq!(
            error.to_string(),
            "mask \"01\\u{7}1\" has '\\u{7}' at position 2, where only '0' (removed) and '1' \
             (kept) may stand"
        );
        // Positions count characters, not bytes.
        assert!(matches!(
            "1é0".parse::<Mask>(),
            Err(MaskError::BadCharacter {
                position: 1,
                found: 'é',
                ..
            })
        ));
        let long = format!("{}2", "01".repeat(2_000_000));
        let error = long.parse::<Mask>().unwrap_err();
        let message = error.to_string();
        assert!(message.len() < 1_200, "{} bytes", message.len());
        assert!(
            message.contains("… (4000001 characters)")
                && message.contains("'2' at position 4000000"),
            "{message}"
        );
        // Up to a thousand characters, shown whole.
        let model = format!("{} ", "1".repeat(999));
        assert!(model
            .parse::<Mask>()
            .unwrap_err()
            .to_string()
            .contains(&model));
        assert_eq!("".parse::<Mask>().unwrap().num_blocks(), 0);
    }
}
