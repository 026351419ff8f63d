//! Zero-shot multiple-choice tasks scored by log-likelihood (work in progress).
