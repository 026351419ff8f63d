//! What GPTQ's unit tests and the `gptq_scale` example share: reproducible weights and inputs
//! without a random-number crate.

/// `count` values in [−0.5, 0.5), an xorshift stream seeded by `seed`.
pub fn noise(count: usize, seed: u64) -> Vec<f32> {
    let mut state = seed.wrapping_add(0x9e37_79b9_7f4a_7c15);
    (0..count)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state >> 40) as f32 / (1u64 << 24) as f32 - 0.5
        })
        .collect()
}
