//! `quantize`: work in progress.
fn main() -> anyhow::Result<()> {
    anyhow::bail!("quantize is not implemented yet")
}
