//! Why a mask is in a mask table: the design that chose it (the `design` column).

/// Why a mask is in the table; the mask table's `design` column holds [`Design::as_str`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Design {
    /// Uniform at random inside its stratum (the published design). When complement pairs are
    /// requested it carries the pair's `group_id` and `position` 0.
    Stratum,
    /// The complement of the stratum mask with the same `group_id`; `position` 1.
    Complement,
    /// A prefix of a permutation chain: `group_id` is the chain, `position` the number of
    /// players kept (the first `position` players of the chain's order).
    Permutation,
    /// The full model or a single player removed.
    Anchor,
    /// One of all the masks of a small game.
    Enumeration,
}

impl Design {
    pub fn as_str(self) -> &'static str {
        match self {
            Design::Stratum => "stratum",
            Design::Complement => "complement",
            Design::Permutation => "permutation",
            Design::Anchor => "anchor",
            Design::Enumeration => "enumeration",
        }
    }
}

impl Design {
    pub const ALL: [Design; 5] = [
        Design::Stratum,
        Design::Complement,
        Design::Permutation,
        Design::Anchor,
        Design::Enumeration,
    ];
}

impl std::str::FromStr for Design {
    type Err = String;
    /// The name written in a mask table's `design` column.
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        Design::ALL
            .into_iter()
            .find(|d| d.as_str() == text)
            .ok_or_else(|| format!("unknown design {text:?}"))
    }
}

impl std::fmt::Display for Design {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}
