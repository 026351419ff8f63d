//! Values masks on token windows with the real model.

use std::ops::Range;
use std::time::Instant;

use layerprune_core::{Device, Mask};
use ndarray::Array2;

use crate::arena::Arena;
use crate::batching::run_masks_batched;
use crate::captured::RUNS_BEFORE_CAPTURE;
use crate::hidden::HiddenState;
use crate::model::{non_finite_loss, LayeredModel};
use crate::Manifest;
use crate::RuntimeError;

/// How the evaluator trades memory for reuse.
#[derive(Clone, Debug)]
pub struct EvalOptions {
    /// Windows run together in one batch (0 = automatic: all windows in one batch unless the
    /// head's logits would pass `HEAD_LOGITS_BYTES_PER_BATCH`, 2 GiB, or a block's attention
    /// `ATTENTION_BYTES_PER_BATCH`, 2 GiB).
    pub batch_windows: usize,
    /// Memory for hidden states kept for reuse by later masks, in bytes: within a call and from
    /// one call to the next ([`Evaluator::evaluate`]).
    pub cache_bytes: usize,
    /// Reuse hidden states of shared prefixes (off: every mask from the embedding).
    pub reuse_prefixes: bool,
    /// Masks whose hidden states run through a block in one call (1 = one mask at a time).
    /// More than 1 advances the masks together block by block, concatenating the states of
    /// those that run the same block along the batch axis: larger matrix products, which is
    /// what a GPU needs; the states of all masks in flight are held at once, within
    /// `cache_bytes` with the prefix carried between slices of the masks, beyond it only by a
    /// block call's own tensors (its joined input and output and the split outputs, about three
    /// times `mask_batch` states) and, where `cache_bytes` holds fewer than `mask_batch`
    /// states beside a prefix, the `mask_batch` masks of one call. Needs `reuse_prefixes`.
    pub mask_batch: usize,
    /// With `mask_batch` > 1, masks whose final states go through the head in one call
    /// (concatenated where they are, their NLL rows split on the host). 0 = automatic: 1 on
    /// the CPU provider, where larger calls only cost memory (the head's logits grow with
    /// them), else `mask_batch`; either way within `HEAD_LOGITS_BYTES_PER_BATCH`.
    pub head_batch: usize,
    /// Whether a window batch smaller than the largest (a call on part of the windows, as a
    /// race's rounds make, or the last batch of an uneven split) batches more masks a block
    /// call, so that a call carries about as many windows as one mask's largest batch does
    /// (never more: no block call larger than a full one), where that is more than
    /// `mask_batch`. Why: on CUDA a block call of a few windows costs about what a full one
    /// does, as the host's launches set the pace; on an H100 (GPU run 3, docs/benchmarks.md
    /// §5) a race's round of 3 of 10 windows measured 52 whole masks' worth a second on a
    /// TinyLlama-1.1B shape against 163 for whole masks, and 150 with four masks a call (7B:
    /// 28 and 42 against 41; 135M: 30 and 86 against 143). On the CPU time follows the rows
    /// and batching does not pay. `None`: on for CUDA unless the blocks are captured as CUDA
    /// graphs (which remove the launches' cost otherwise: 108 whole masks a second at 135M,
    /// 107 at 1.1B; the two together are not measured, and batched shapes would outnumber
    /// the captured ones), off on the CPU ([`RuntimeOptions::fills_small_batches`]). Needs
    /// `reuse_prefixes`.
    ///
    /// [`RuntimeOptions::fills_small_batches`]: crate::RuntimeOptions::fills_small_batches
    pub fill_small_batches: Option<bool>,
}

impl Default for EvalOptions {
    fn default() -> Self {
        EvalOptions {
            batch_windows: 0,
            cache_bytes: 1 << 30,
            reuse_prefixes: true,
            mask_batch: 1,
            head_batch: 0,
            fill_small_batches: None,
        }
    }
}

impl EvalOptions {
    /// These options with `batch_windows` as the evaluator runs `windows` on the model of
    /// `manifest` (its vocabulary and attention heads): automatic (0) resolved, and more than
    /// the windows cut to their number.
    /// What evaluation tables record as evaluated on ([`crate::RuntimeOptions::evaluated_on`]):
    /// two runs that batch the windows alike compute alike, whether the batch was asked for or
    /// chosen.
    pub fn for_windows(&self, windows: &[Vec<u32>], manifest: &Manifest) -> EvalOptions {
        let seq_len = windows.first().map_or(0, Vec::len);
        let per_batch = if self.batch_windows == 0 {
            windows_per_batch(
                windows.len(),
                seq_len,
                manifest.vocab_size,
                manifest.attention_heads().unwrap_or(0),
            )
        } else {
            self.batch_windows.min(windows.len())
        };
        EvalOptions {
            batch_windows: per_batch.max(1),
            ..self.clone()
        }
    }
}

/// Joins of up to this many masks' states are opened with the evaluator (above it, when first
/// needed): enough for the mask batches that pay on a GPU, few enough to open in moments.
const PREPARED_MASK_BATCH: usize = 64;

/// The head's float32 logits one window batch may hold when the batch size is automatic
/// (`batch_windows` 0). The head graph's peak is about four times its logits (the log-softmax
/// and its temporaries): a 262k-token vocabulary (Gemma 3) makes 40 windows of 128 tokens 5.4
/// GB of logits and a 22 GB peak, where SmolLM2's 49k vocabulary makes 1 GB.
pub const HEAD_LOGITS_BYTES_PER_BATCH: usize = 2 << 30;

/// The attention's float32 tensors one window batch's block call may hold when the batch size
/// is automatic: a block's attention holds about [`ATTENTION_TENSORS_AT_PEAK`] tensors of
/// heads × seq_len² at once, which grows with the square of the window. Without this bound only
/// the logits bounded the batch, and 2 windows of 4,096 tokens on SmolLM2-135M (9 heads, its
/// context is 8,192) ran out of a 14 GiB machine at block 2 (bad-input audit, 2026-12-08).
pub const ATTENTION_BYTES_PER_BATCH: usize = 2 << 30;

/// Attention-sized float32 tensors (heads × seq_len² each) a block call holds at its peak:
/// the scores, the causal mask added, the softmax and its temporaries. Measured on the CPU
/// provider (the 6-block fixture at 3,200 tokens a window: 0.85 GB a window and graph, five
/// times its 164 MB of scores; SmolLM2-135M at 4,096: 5.1 GB for 2 windows).
pub const ATTENTION_TENSORS_AT_PEAK: usize = 5;

/// The bytes of one window's attention at the peak of a block call
/// ([`ATTENTION_TENSORS_AT_PEAK`] tensors of `attention_heads` × `seq_len`²); 0 for a model
/// without attention heads (a state-space model) or whose manifest records none.
pub fn attention_bytes_per_window(seq_len: usize, attention_heads: usize) -> usize {
    attention_heads
        .saturating_mul(seq_len)
        .saturating_mul(seq_len)
        .saturating_mul(4 * ATTENTION_TENSORS_AT_PEAK)
}

/// Windows per head call when the batch size is automatic: all of them, unless the head's
/// logits would pass [`HEAD_LOGITS_BYTES_PER_BATCH`] (then as many as fit, at least one).
fn windows_per_head_call(windows: usize, seq_len: usize, vocab_size: usize) -> usize {
    let per_window = seq_len.saturating_mul(vocab_size).saturating_mul(4).max(1);
    windows.min(HEAD_LOGITS_BYTES_PER_BATCH / per_window).max(1)
}

/// Windows per batch when the batch size is automatic: all of them, unless the head's logits
/// would pass [`HEAD_LOGITS_BYTES_PER_BATCH`] or a block's attention
/// [`ATTENTION_BYTES_PER_BATCH`] (then as many as fit both, at least one).
pub fn windows_per_batch(
    windows: usize,
    seq_len: usize,
    vocab_size: usize,
    attention_heads: usize,
) -> usize {
    let attention = attention_bytes_per_window(seq_len, attention_heads).max(1);
    windows_per_head_call(windows, seq_len, vocab_size)
        .min(ATTENTION_BYTES_PER_BATCH / attention)
        .max(1)
}

/// Refuses, on the CPU, a run whose blocks' attention would need more memory than the machine
/// has: the kernel would kill it part-way with nothing said (exit 137). Each graph's arena keeps
/// its largest call's buffers ([`Arena::Keep`]), so windows long enough for the attention to
/// matter multiply it by the graphs, and a block call carries `mask_batch` masks' windows. The
/// message says what would fit. (On a GPU the device's
/// memory is the bound, and ONNX Runtime reports running out of it as an error.)
fn refuse_attention_past_memory(
    model: &LayeredModel,
    seq_len: usize,
    per_batch: usize,
    mask_batch: usize,
) -> Result<(), RuntimeError> {
    let manifest = model.manifest();
    let (Device::Cpu, Some(heads), Some(memory)) = (
        model.device(),
        manifest.attention_heads(),
        layerprune_core::memory::machine_memory(),
    ) else {
        return Ok(());
    };
    let per_window = attention_bytes_per_window(seq_len, heads) as u128;
    let keeping = matches!(model.arena(), Arena::Keep | Arena::KeepExact);
    // The blocks, the embedding and the head each hold their own arena.
    let graphs = if keeping { manifest.num_blocks + 2 } else { 1 } as u128;
    // A block call carries the window batch of each of `mask_batch` masks.
    let call_windows = per_batch as u128 * mask_batch.max(1) as u128;
    let needed = graphs * call_windows * per_window;
    if needed <= memory as u128 {
        return Ok(());
    }
    let gib = |bytes: u128| bytes as f64 / (1u64 << 30) as f64;
    let lean = per_window;
    let advice = if lean > memory as u128 {
        format!(
            "even one window a pass with --arena shrink needs about {:.1} GiB: give shorter \
             windows (prepare-tokens --seq-len)",
            gib(lean)
        )
    } else if keeping {
        let one_window = if call_windows > 1 {
            format!(
                "; with --batch-windows 1 --mask-batch 1, {:.1} GiB",
                gib(lean)
            )
        } else {
            String::new()
        };
        format!(
            "--arena shrink keeps one call's ({:.1} GiB{one_window}), at the cost of allocating \
             each call's buffers again",
            gib(call_windows * per_window),
        )
    } else {
        format!(
            "--batch-windows 1 --mask-batch 1 needs about {:.1} GiB",
            gib(lean)
        )
    };
    Err(RuntimeError::BadInput(format!(
        "{}: windows of {seq_len} tokens, {per_batch} a pass{}, need about {:.1} GiB for the \
         blocks' attention ({heads} heads x {seq_len}^2 x {ATTENTION_TENSORS_AT_PEAK} float32 \
         tensors a window{}), more than this machine's {:.1} GiB; {advice}",
        model.dir().display(),
        if mask_batch > 1 {
            format!(" of each of {mask_batch} masks a block call")
        } else {
            String::new()
        },
        gib(needed),
        if keeping {
            format!("; each of the {graphs} graphs' arenas keeps its own, --arena keep")
        } else {
            String::new()
        },
        gib(memory as u128)
    )))
}

/// Masks a block call carries on a window batch of `batch_size` windows: `mask_batch`, or,
/// when small batches are filled ([`EvalOptions::fill_small_batches`]) and this one is smaller
/// than the `largest`, as many as bring the call to about the largest batch's windows.
fn masks_a_block_call(mask_batch: usize, fills: bool, largest: usize, batch_size: usize) -> usize {
    if fills && batch_size < largest {
        mask_batch.max(largest / batch_size.max(1))
    } else {
        mask_batch
    }
}

/// One mask's result: the summed NLL over the scored tokens.
#[derive(Clone, Debug, PartialEq)]
pub struct MaskEvaluation {
    pub nll_sum: f64,
    pub tokens_scored: u64,
    /// The summed NLL of each window, in the token table's order (each window scores the same
    /// number of tokens): what a paired comparison of two masks over windows needs.
    pub window_nll_sums: Vec<f64>,
    /// Compute time attributed to this mask (the blocks it did not share, and its head).
    pub seconds: f64,
}

impl MaskEvaluation {
    /// Mean NLL per scored token, in nats.
    pub fn nll(&self) -> f64 {
        self.nll_sum / self.tokens_scored as f64
    }
}

/// The model plus the token windows it is judged on.
pub struct Evaluator {
    model: LayeredModel,
    /// Each batch: (input ids [b, s], next-token targets [b, s]; the last target is padding).
    batches: Vec<(Array2<i64>, Array2<i64>)>,
    /// The windows, kept to batch a range of them ([`Evaluator::evaluate_windows`]).
    windows: Vec<Vec<u32>>,
    /// Windows per batch.
    per_batch: usize,
    options: EvalOptions,
    tokens_scored: u64,
    blocks_run: u64,
    /// Prefix stacks kept from one call to the next, one per window batch (the windows of a
    /// call are batched alike; a race measures a few windows at a time), the most recently used
    /// last.
    carried: Vec<CarriedPrefix>,
}

/// The states of one mask's prefix on one window batch, left by the last call that ran masks
/// on those windows, for the next call's masks to start from.
struct CarriedPrefix {
    windows: Range<usize>,
    stack: PrefixStack,
    /// Bytes of one of its states.
    state_bytes: usize,
}

impl CarriedPrefix {
    fn bytes(&self) -> usize {
        self.stack.states.len() * self.state_bytes
    }
}

/// The states after the kept blocks of a prefix of `mask` (the embedding at depth 0): where a
/// run of masks in prefix order starts, each mask from the deepest state it shares with the
/// one before.
pub(crate) struct PrefixStack {
    /// (depth d, the state after blocks 0..d), by depth.
    pub(crate) states: Vec<(usize, HiddenState)>,
    /// The mask whose prefix the states are; `None`: only the embedding, shared by every mask.
    pub(crate) mask: Option<Mask>,
}

impl PrefixStack {
    pub(crate) fn embedded(state: HiddenState) -> Self {
        PrefixStack {
            states: vec![(0, state)],
            mask: None,
        }
    }
}

/// Refuses token windows a model with a vocabulary of `vocab_size` cannot run: no window,
/// windows of fewer than 2 tokens (nothing to score) or of unequal lengths, or an id outside
/// the vocabulary (tokenized for another model). Every stage that runs a model on a token
/// table checks it before any work, naming the table's file.
pub fn check_token_windows(windows: &[Vec<u32>], vocab_size: usize) -> Result<(), RuntimeError> {
    let Some(first) = windows.first() else {
        return Err(RuntimeError::BadInput(
            "the token table has no windows".into(),
        ));
    };
    let seq_len = first.len();
    if seq_len < 2 {
        return Err(RuntimeError::BadInput(format!(
            "windows have {seq_len} tokens; at least 2 are needed to score one"
        )));
    }
    for (index, window) in windows.iter().enumerate() {
        if window.len() != seq_len {
            return Err(RuntimeError::BadInput(format!(
                "window {index} has {} tokens, window 0 has {seq_len}",
                window.len()
            )));
        }
        if let Some(&bad) = window.iter().find(|&&id| id as usize >= vocab_size) {
            return Err(RuntimeError::BadInput(format!(
                "window {index} has token id {bad}, outside the model's vocabulary of \
                 {vocab_size} (was it tokenized for another model?)"
            )));
        }
    }
    Ok(())
}

/// A token table's windows and tokenizer id checked against the model: every id in its
/// vocabulary and every window long enough ([`check_token_windows`]), made with its tokenizer
/// ([`check_tokenizer`]), and no longer than the model takes (`Manifest::check_window_length`).
/// What a stage runs before it measures tokens on the model (evaluate, apply-prune and
/// quantize's GPTQ each checked the length after this, apart, until 2026-12-07).
pub fn check_tokens(
    manifest: &layerprune_model::Manifest,
    dir: &std::path::Path,
    windows: &[Vec<u32>],
    tokenizer_sha256: &str,
) -> Result<(), RuntimeError> {
    check_token_windows(windows, manifest.vocab_size)?;
    check_tokenizer(manifest, dir, tokenizer_sha256)?;
    // Non-empty windows of one length now (check_token_windows).
    Ok(manifest.check_window_length(dir, windows[0].len())?)
}

/// Refuses token windows cut by another tokenizer than the model's in `dir`:
/// `tokenizer_sha256` (a token table's record of the `tokenizer.json` it was made with, see
/// [`layerprune_core::tokenizer_sha256`]) against the model's own. Two models can share a
/// vocabulary size and not their tokenizers (Llama 2 and Mistral 7B: 32,000 each), so the ids
/// alone would pass and every NLL be wrong. A record equal to the sha256 the manifest lists for
/// the file's bytes passes at once (tables written before 2026-12-04 recorded that); else the
/// file is read and its canonical JSON's sha256 compared. Nothing to compare (no record, no
/// listed file) passes.
pub fn check_tokenizer(
    manifest: &layerprune_model::Manifest,
    dir: &std::path::Path,
    tokenizer_sha256: &str,
) -> Result<(), RuntimeError> {
    let Some(listed) = manifest.files.get(&manifest.tokenizer) else {
        return Ok(());
    };
    if tokenizer_sha256.is_empty() || listed == tokenizer_sha256 {
        return Ok(());
    }
    let path = manifest.tokenizer_path(dir)?;
    let bytes = layerprune_core::read_input(&path).map_err(|e| {
        RuntimeError::BadInput(format!(
            "{}: cannot read the tokenizer: {e}",
            path.display()
        ))
    })?;
    let model_id = layerprune_core::tokenizer_sha256(&bytes);
    if model_id == tokenizer_sha256 {
        return Ok(());
    }
    Err(RuntimeError::BadInput(format!(
        "the tokens were made with another tokenizer (id {tokenizer_sha256}) than the model's \
         {} (id {model_id}): prepare them again with `prepare-tokens --model` of this model",
        manifest.tokenizer
    )))
}

impl Evaluator {
    /// Checks the windows against the model (non-empty, equal lengths ≥ 2, ids inside the
    /// vocabulary) and batches them.
    pub fn new(
        model: LayeredModel,
        windows: &[Vec<u32>],
        options: EvalOptions,
    ) -> Result<Self, RuntimeError> {
        check_token_windows(windows, model.manifest().vocab_size)?;
        let seq_len = windows[0].len();
        model
            .manifest()
            .check_window_length(model.dir(), seq_len)
            .map_err(|e| RuntimeError::BadInput(e.to_string()))?;
        let options = options.for_windows(windows, model.manifest());
        let per_batch = options.batch_windows;
        refuse_attention_past_memory(&model, seq_len, per_batch, options.mask_batch)?;
        let batches = batch_windows(windows, per_batch);
        let sizes: Vec<usize> = batches.iter().map(|(ids, _)| ids.nrows()).collect();
        let mut evaluator = Evaluator {
            model,
            batches,
            windows: windows.to_vec(),
            per_batch,
            options,
            tokens_scored: (windows.len() * (seq_len - 1)) as u64,
            blocks_run: 0,
            carried: Vec::new(),
        };
        // A whole evaluation's joins now, before any mask is timed.
        evaluator.prepare_joins(&sizes)?;
        Ok(evaluator)
    }

    pub fn model(&self) -> &LayeredModel {
        &self.model
    }

    pub fn num_blocks(&self) -> usize {
        self.model.num_blocks()
    }

    /// Predicted tokens per mask: (seq_len − 1) per window.
    pub fn tokens_scored(&self) -> u64 {
        self.tokens_scored
    }

    /// Token windows each mask is judged on.
    pub fn num_windows(&self) -> usize {
        self.windows.len()
    }

    /// A result's mean NLL on each window (nats per token, the token table's order): what a
    /// paired comparison of two masks over the windows needs. Every window scores the same
    /// number of tokens.
    pub fn window_nlls(&self, result: &MaskEvaluation) -> Vec<f64> {
        let per_window = (self.tokens_scored / self.num_windows().max(1) as u64).max(1) as f64;
        result
            .window_nll_sums
            .iter()
            .map(|sum| sum / per_window)
            .collect()
    }

    /// Blocks run so far (a measure of the work prefix reuse saved).
    pub fn blocks_run(&self) -> u64 {
        self.blocks_run
    }

    /// Runs every graph once on the largest batch [`EvalOptions::mask_batch`] makes (each
    /// window batch's embedding repeated that many times, through every block and the head)
    /// and discards the result, so that the device's memory for those shapes is allocated
    /// before masks are timed: each block's session has its own arena, which grows on its
    /// first batched calls. On an H200, 50 masks of a TinyLlama-1.1B shape took 0.83 s batched
    /// by 8 against 0.41 s one at a time, without this; with it (GPU run 3, an H100) batching
    /// by 8 was 1.31x faster than one at a time there. With masks one at a time there is nothing to do (the full model,
    /// evaluated first, is their warm-up), unless the blocks are captured as CUDA graphs
    /// ([`LayeredModel::captures_blocks`]): then one mask's shape and the batched one are run
    /// until captured, so that timed runs are replays.
    pub fn warm_up(&mut self) -> Result<(), RuntimeError> {
        let copies = self.options.mask_batch.min(PREPARED_MASK_BATCH);
        let batched = copies >= 2 && self.options.reuse_prefixes;
        let captured = self.model.captures_blocks();
        if !batched && !captured {
            return Ok(());
        }
        let passes = if captured { RUNS_BEFORE_CAPTURE + 1 } else { 1 };
        for batch in 0..self.batches.len() {
            let embedded = self.model.embed(&self.batches[batch].0)?;
            for _ in 0..passes {
                if captured {
                    let mut state: Option<HiddenState> = None;
                    for block in 0..self.model.num_blocks() {
                        let input = state.as_ref().unwrap_or(&embedded);
                        state = Some(self.model.run_block(block, input)?);
                    }
                }
                if batched {
                    self.warm_up_batched(batch, &embedded, copies)?;
                }
            }
        }
        Ok(())
    }

    /// Window batch `batch` (`embedded`) through every graph as `copies` masks at once.
    fn warm_up_batched(
        &mut self,
        batch: usize,
        embedded: &HiddenState,
        copies: usize,
    ) -> Result<(), RuntimeError> {
        // As many as `evaluate` sends through the head at once.
        let (rows, seq_len) = self.batches[batch].0.dim();
        let head_copies = self.head_batch(rows, seq_len).clamp(1, copies);
        let targets = &self.batches[batch].1;
        let mut state = self.model.concat_states(&vec![embedded; copies])?;
        for block in 0..self.model.num_blocks() {
            state = self.model.run_block(block, &state)?;
        }
        let parts = self.model.split_state(&state, copies)?;
        let head_input = if head_copies == 1 {
            parts.into_iter().next().expect("at least two parts")
        } else {
            self.model
                .concat_states(&parts.iter().take(head_copies).collect::<Vec<_>>())?
        };
        let views = vec![targets.view(); head_copies];
        let stacked =
            ndarray::concatenate(ndarray::Axis(0), &views).expect("equal window batches stack");
        self.model.token_nll(&head_input, &stacked)?;
        Ok(())
    }

    /// Opens the graphs that join and split the states of as many masks as a block call on
    /// window batches of `sizes` can carry (2 up to that: a call joins those of its masks that
    /// share a block), before the call's masks run: on CUDA each costs more than the batched
    /// call it serves. Only those sizes' (a call on one window of ten, filled, joins up to ten
    /// masks; a race's rounds of 3 and 4 windows, three), and each once.
    fn prepare_joins(&mut self, sizes: &[usize]) -> Result<(), RuntimeError> {
        let most = sizes
            .iter()
            .map(|&size| self.mask_batch_for(size))
            .max()
            .unwrap_or(1)
            // Larger joins (rare: as many masks must share a block) are opened when met.
            .min(PREPARED_MASK_BATCH);
        if most < 2 || !self.options.reuse_prefixes {
            return Ok(());
        }
        let started = std::time::Instant::now();
        let opened = self.model.prepare_mask_batches(most)?;
        if opened > 0 {
            tracing::info!(
                "opened {opened} graphs joining and splitting up to {most} masks' states in {:.2} s",
                started.elapsed().as_secs_f64()
            );
        }
        Ok(())
    }

    /// Masks whose final states go through the head in one call, for window batches of
    /// `batch_size` × `seq_len` ([`EvalOptions::head_batch`] resolved for the device, within
    /// [`HEAD_LOGITS_BYTES_PER_BATCH`]).
    fn head_batch(&self, batch_size: usize, seq_len: usize) -> usize {
        match (self.options.head_batch, self.model.device()) {
            (0, Device::Cpu) => 1,
            (0, _) => self.mask_batch_for(batch_size),
            (n, _) => n,
        }
        .min(
            windows_per_head_call(usize::MAX, seq_len, self.model.manifest().vocab_size)
                / batch_size.max(1),
        )
    }

    /// Masks a block call on a window batch of `batch_size` windows
    /// ([`EvalOptions::mask_batch`], or more on a batch smaller than the largest:
    /// [`EvalOptions::fill_small_batches`]). The largest batch is the table's first (not
    /// `self.batches`, which [`Evaluator::evaluate`] takes out for its call).
    fn mask_batch_for(&self, batch_size: usize) -> usize {
        masks_a_block_call(
            self.options.mask_batch,
            self.model.fills_small_batches(&self.options),
            self.per_batch.min(self.windows.len()),
            batch_size,
        )
    }

    /// Evaluates `masks` (results in their order). `progress(done, total)` is called as masks
    /// finish a window batch: `done` is the masks' worth of work done of `total` masks (with k
    /// window batches, each mask's run on one batch counts 1/k, rounded down over the call),
    /// so it reaches `total` when the last batch ends; the results come only then.
    pub fn evaluate(
        &mut self,
        masks: &[Mask],
        progress: &mut dyn FnMut(usize, usize),
    ) -> Result<Vec<MaskEvaluation>, RuntimeError> {
        // Taken out for the call (`evaluate_batches` needs the evaluator mutably) and put back.
        let batches = std::mem::take(&mut self.batches);
        let all = 0..self.windows.len();
        let results = self.evaluate_batches(masks, all, &batches, progress);
        self.batches = batches;
        results
    }

    /// Evaluates `masks` on the windows `windows` only (a range of the token table's windows,
    /// batched as the whole table is): each result scores those windows' tokens and has their
    /// NLLs, in order. What racing measures first: a mask clearly worse than another on a few
    /// windows need not be run on the rest. A window's NLL is the same whatever else shares
    /// its batch, to float rounding.
    pub fn evaluate_windows(
        &mut self,
        masks: &[Mask],
        windows: std::ops::Range<usize>,
        progress: &mut dyn FnMut(usize, usize),
    ) -> Result<Vec<MaskEvaluation>, RuntimeError> {
        if windows.is_empty() || windows.end > self.windows.len() {
            return Err(RuntimeError::BadInput(format!(
                "windows {}..{} of a token table of {} windows",
                windows.start,
                windows.end,
                self.windows.len()
            )));
        }
        if windows == (0..self.windows.len()) {
            return self.evaluate(masks, progress);
        }
        let batches = batch_windows(&self.windows[windows.clone()], self.per_batch);
        self.evaluate_batches(masks, windows, &batches, progress)
    }

    /// Evaluates `masks` on `batches`, the windows `windows` batched.
    fn evaluate_batches(
        &mut self,
        masks: &[Mask],
        windows: Range<usize>,
        batches: &[(Array2<i64>, Array2<i64>)],
        progress: &mut dyn FnMut(usize, usize),
    ) -> Result<Vec<MaskEvaluation>, RuntimeError> {
        // Asked to end: before the batch, so that every mask of the calls before it is kept
        // (each caller saves what it measured when this returns an error).
        layerprune_core::interrupt::check()?;
        let order = prefix_order(masks, self.num_blocks())?;
        let sizes: Vec<usize> = batches.iter().map(|(ids, _)| ids.nrows()).collect();
        self.prepare_joins(&sizes)?;
        let num_windows = windows.len();
        let scored_per_window = self.tokens_scored / self.num_windows().max(1) as u64;
        let mut results = vec![
            MaskEvaluation {
                nll_sum: 0.0,
                tokens_scored: num_windows as u64 * scored_per_window,
                window_nll_sums: Vec::with_capacity(num_windows),
                seconds: 0.0,
            };
            masks.len()
        ];
        let mut done_units = 0;
        let dtype = self.model.manifest().dtype.clone();
        let model_dir = self.model.dir().to_path_buf();
        // The states of the last mask's prefix on each window batch are kept for the next call
        // on the same windows: consecutive calls (a run checkpointed every few masks, the steps
        // of a selection method) ask for neighbouring masks.
        let carry = self.options.reuse_prefixes;
        let mut first_window = windows.start;
        for (inputs, targets) in batches.iter() {
            let started = Instant::now();
            let batch_size = inputs.nrows();
            let seq_len = inputs.ncols();
            let mask_batch = self.mask_batch_for(batch_size);
            let one_at_a_time = mask_batch <= 1 || !self.options.reuse_prefixes;
            // A batch is its windows: its states are those of any call that batched them alike.
            let batch_windows = first_window..first_window + batch_size;
            first_window += batch_size;
            let state_bytes = self.model.state_bytes(batch_size, seq_len);
            let carried = if carry {
                self.take_carried(&batch_windows, state_bytes)
            } else {
                None
            };
            let stack = match carried {
                Some(stack) => stack,
                None => PrefixStack::embedded(self.model.embed(inputs)?),
            };
            let shared_seconds = started.elapsed().as_secs_f64() / masks.len().max(1) as f64;
            let mut last = Instant::now();
            let num_batches = batches.len();
            let (dtype, model_dir) = (&dtype, &model_dir);
            // One mask's NLL rows [batch_size, seq_len] → its sum, timing and progress.
            let mut record = |index: usize, nll: ndarray::ArrayView2<'_, f32>, seconds: f64| {
                let mask = &masks[index];
                let window_sums: Vec<f64> = nll
                    .rows()
                    .into_iter()
                    .map(|row| {
                        row.iter()
                            .take(seq_len - 1)
                            .map(|&x| f64::from(x))
                            .sum::<f64>()
                    })
                    .collect();
                let nll_sum: f64 = window_sums.iter().sum();
                if !nll_sum.is_finite() {
                    return Err(non_finite_loss(
                        model_dir,
                        dtype,
                        format!(
                            "mask {mask}: the loss is {nll_sum} on windows {}..{} (counted \
                             from 0)",
                            batch_windows.start, batch_windows.end
                        ),
                    ));
                }
                results[index].nll_sum += nll_sum;
                results[index].window_nll_sums.extend(window_sums);
                results[index].seconds += seconds + shared_seconds;
                done_units += 1;
                progress(done_units / num_batches, masks.len());
                Ok(())
            };
            // States this call may keep: what the prefixes carried on other windows leave of
            // the budget.
            let carried_bytes: usize = self.carried.iter().map(CarriedPrefix::bytes).sum();
            let max_states =
                (self.options.cache_bytes.saturating_sub(carried_bytes) / state_bytes).max(1);
            let (blocks_run, stack) = if !one_at_a_time {
                let head_batch = self.head_batch(batch_size, seq_len);
                let mut finish = |model: &mut LayeredModel, finished: &[(usize, &HiddenState)]| {
                    for chunk in finished.chunks(head_batch.max(1)) {
                        let nll = if let [(_, state)] = chunk {
                            model.token_nll(state, targets)?
                        } else {
                            let states: Vec<&HiddenState> = chunk.iter().map(|(_, s)| *s).collect();
                            let views = vec![targets.view(); chunk.len()];
                            let stacked = ndarray::concatenate(ndarray::Axis(0), &views)
                                .expect("equal window batches stack");
                            let joined = model.concat_states(&states)?;
                            model.token_nll(&joined, &stacked)?
                        };
                        let seconds = last.elapsed().as_secs_f64() / chunk.len() as f64;
                        last = Instant::now();
                        for (part, (index, _)) in chunk.iter().enumerate() {
                            let rows = part * batch_size..(part + 1) * batch_size;
                            record(*index, nll.slice(ndarray::s![rows, ..]), seconds)?;
                        }
                    }
                    Ok(())
                };
                run_masks_batched(
                    &mut self.model,
                    stack,
                    masks,
                    &order,
                    mask_batch,
                    max_states,
                    &mut finish,
                )?
            } else {
                let mut finish =
                    |model: &mut LayeredModel, index: usize, final_state: &HiddenState| {
                        let nll = model.token_nll(final_state, targets)?;
                        let seconds = last.elapsed().as_secs_f64();
                        last = Instant::now();
                        record(index, nll.view(), seconds)
                    };
                run_masks(
                    &mut self.model,
                    stack,
                    masks,
                    &order,
                    self.options.reuse_prefixes.then_some(max_states),
                    &mut finish,
                )?
            };
            self.blocks_run += blocks_run;
            if carry {
                self.carried.push(CarriedPrefix {
                    windows: batch_windows,
                    stack,
                    state_bytes,
                });
            }
        }
        Ok(results)
    }

    /// The prefix stack carried on the window batch `windows` (states of `state_bytes`) from an
    /// earlier call, if any, after making room for this batch's states: the stacks carried on
    /// other batches, the least recently used first, are dropped until this batch can keep a
    /// state after each of its blocks within [`EvalOptions::cache_bytes`] (or until none is
    /// left).
    fn take_carried(&mut self, windows: &Range<usize>, state_bytes: usize) -> Option<PrefixStack> {
        let taken = self
            .carried
            .iter()
            .position(|c| c.windows == *windows)
            .map(|i| self.carried.remove(i).stack);
        let cache = self.options.cache_bytes;
        let wanted = ((self.num_blocks() + 1) * state_bytes).min(cache);
        while !self.carried.is_empty()
            && self.carried.iter().map(CarriedPrefix::bytes).sum::<usize>() + wanted > cache
        {
            self.carried.remove(0);
        }
        taken
    }

    /// Hidden states after every block of the full model for one window batch, as f32.
    fn full_model_states(
        &mut self,
        batch: usize,
    ) -> Result<Vec<ndarray::Array3<f32>>, RuntimeError> {
        let (inputs, _) = self.batches[batch].clone();
        let mut state = self.model.embed(&inputs)?;
        let mut states = vec![self.model.hidden_to_array(&state)?];
        for block in 0..self.num_blocks() {
            state = self.model.run_block(block, &state)?;
            states.push(self.model.hidden_to_array(&state)?);
        }
        Ok(states)
    }

    /// Consumes the evaluator and gives the model back.
    pub fn into_model(self) -> LayeredModel {
        self.model
    }
}

/// `windows` in batches of `per_batch`: (input ids [b, s], next-token targets [b, s]; the last
/// target is padding).
fn batch_windows(windows: &[Vec<u32>], per_batch: usize) -> Vec<(Array2<i64>, Array2<i64>)> {
    windows
        .chunks(per_batch)
        .map(|chunk| {
            let seq_len = chunk[0].len();
            let inputs =
                Array2::from_shape_fn((chunk.len(), seq_len), |(b, t)| i64::from(chunk[b][t]));
            let targets = Array2::from_shape_fn((chunk.len(), seq_len), |(b, t)| {
                i64::from(chunk[b][(t + 1) % seq_len])
            });
            (inputs, targets)
        })
        .collect()
}

/// The order to run `masks` in, after checking each has `num_blocks` blocks: sorted, so that
/// each mask sits next to the masks it shares the longest prefix with.
pub(crate) fn prefix_order(masks: &[Mask], num_blocks: usize) -> Result<Vec<usize>, RuntimeError> {
    for mask in masks {
        mask.check_len(num_blocks)
            .map_err(|e| RuntimeError::BadInput(format!("mask {mask}: {e}")))?;
    }
    let mut order: Vec<usize> = (0..masks.len()).collect();
    order.sort_by(|&a, &b| masks[a].cmp(&masks[b]));
    Ok(order)
}

/// Puts `masks` in the order prefix reuse runs them in (`prefix_order`'s). Each evaluator call
/// orders its own masks; a caller that splits a list into several calls — a run checkpointed
/// every few masks — orders the list first, so that each call's masks share prefixes with each
/// other (in a table's order, the 32 masks of a checkpoint share few: 1,002 blocks run for 50
/// masks of a 32-block model where 961 suffice).
pub fn sort_for_prefix_reuse(masks: &mut [Mask]) {
    masks.sort_unstable();
}

/// Runs every mask (in `order`, which should be sorted so that neighbours share prefixes) on
/// one window batch from `start` (its embedding, or the states of an earlier mask's prefix) and
/// hands each mask's final hidden state to `finish(model, index, state)`. With `max_cached`
/// states, those after the current mask's kept blocks are kept on a stack (at most that many,
/// the embedding included) and the next mask starts from the deepest one it shares; with `None`
/// every mask starts from the embedding. Returns the number of blocks run and the stack of the
/// last mask's prefix.
pub(crate) fn run_masks(
    model: &mut LayeredModel,
    start: PrefixStack,
    masks: &[Mask],
    order: &[usize],
    max_cached: Option<usize>,
    finish: &mut dyn FnMut(&mut LayeredModel, usize, &HiddenState) -> Result<(), RuntimeError>,
) -> Result<(u64, PrefixStack), RuntimeError> {
    let reuse = max_cached.is_some();
    let max_cached = max_cached.unwrap_or(1).max(1);
    let num_blocks = model.num_blocks();
    let mut blocks_run = 0;
    let PrefixStack {
        states: mut stack,
        mask: mut previous,
    } = start;
    // A carried stack longer than this call may keep loses its deepest states.
    stack.truncate(max_cached);
    for &index in order {
        let mask = &masks[index];
        let shared = if reuse {
            previous.as_ref().map_or(0, |p| p.common_prefix_len(mask))
        } else {
            0
        };
        while stack.len() > 1 && stack.last().is_some_and(|(depth, _)| *depth > shared) {
            stack.pop();
        }
        let (start_depth, _) = stack[stack.len() - 1];
        let mut current: Option<HiddenState> = None;
        for block in start_depth..num_blocks {
            if !mask.is_kept(block) {
                continue;
            }
            let input = current.as_ref().unwrap_or(&stack[stack.len() - 1].1);
            let output = model.run_block(block, input)?;
            blocks_run += 1;
            if reuse && stack.len() < max_cached {
                stack.push((block + 1, output));
                current = None;
            } else {
                current = Some(output);
            }
        }
        let final_state = current.as_ref().unwrap_or(&stack[stack.len() - 1].1);
        finish(model, index, final_state)?;
        previous = Some(mask.clone());
    }
    Ok((
        blocks_run,
        PrefixStack {
            states: stack,
            mask: previous,
        },
    ))
}

/// Similarity between the hidden states entering block `start_block` and leaving block
/// `start_block + run_length − 1`, over every token of every window (full model).
#[derive(Clone, Debug, PartialEq)]
pub struct BlockStatistic {
    pub start_block: usize,
    pub run_length: usize,
    /// Mean over tokens of cos(x_in, x_out). ShortGPT's block influence is 1 − this.
    pub mean_cosine: f64,
    /// Mean over tokens of arccos(cos(x_in, x_out)) / π (Gromov et al.).
    pub angular_distance: f64,
}

/// Block statistics for every run of 1..=`max_run` consecutive blocks of the full model.
pub fn block_statistics(
    evaluator: &mut Evaluator,
    max_run: usize,
) -> Result<Vec<BlockStatistic>, RuntimeError> {
    let num_blocks = evaluator.num_blocks();
    let max_run = max_run.clamp(1, num_blocks);
    let mut sums: Vec<(usize, usize, f64, f64, u64)> = Vec::new();
    for run_length in 1..=max_run {
        for start in 0..=num_blocks - run_length {
            sums.push((start, run_length, 0.0, 0.0, 0));
        }
    }
    for batch in 0..evaluator.batches.len() {
        let states = evaluator.full_model_states(batch)?;
        for (start, run_length, cos_sum, angle_sum, count) in &mut sums {
            let before = &states[*start];
            let after = &states[*start + *run_length];
            // One lane per token: the hidden vector along the last axis.
            let token_axis = ndarray::Axis(2);
            for (x, y) in before
                .lanes(token_axis)
                .into_iter()
                .zip(after.lanes(token_axis))
            {
                let dot: f64 = x
                    .iter()
                    .zip(y.iter())
                    .map(|(a, b)| f64::from(*a) * f64::from(*b))
                    .sum();
                let norm_x: f64 = x.iter().map(|a| f64::from(*a).powi(2)).sum::<f64>().sqrt();
                let norm_y: f64 = y.iter().map(|a| f64::from(*a).powi(2)).sum::<f64>().sqrt();
                let cosine = (dot / (norm_x * norm_y).max(f64::MIN_POSITIVE)).clamp(-1.0, 1.0);
                *cos_sum += cosine;
                *angle_sum += cosine.acos() / std::f64::consts::PI;
                *count += 1;
            }
        }
    }
    Ok(sums
        .into_iter()
        .map(
            |(start_block, run_length, cos_sum, angle_sum, count)| BlockStatistic {
                start_block,
                run_length,
                mean_cosine: cos_sum / count as f64,
                angular_distance: angle_sum / count as f64,
            },
        )
        .collect())
}

#[cfg(test)]
mod tests {
    use super::{
        attention_bytes_per_window, masks_a_block_call, windows_per_batch, EvalOptions, Evaluator,
    };
    use crate::arena::Arena;
    use crate::Manifest;
    use crate::{LayeredModel, RuntimeOptions};
    use layerprune_core::Device;

    /// A CUDA table records the windows a pass the evaluator runs, not how the flag was
    /// spelled: automatic, the same number asked for, and more than the windows are one entry
    /// (a run resumed or merged with either is the same arithmetic); a smaller batch is another.
    #[test]
    fn tables_record_the_windows_a_pass_that_run() {
        let cuda = RuntimeOptions {
            device: Device::Cuda(0),
            ..RuntimeOptions::default()
        };
        let windows = vec![vec![1_u32; 16]; 10];
        let manifest_of = |vocab_size: usize, attention_heads: Option<usize>| {
            let mut manifest = Manifest::load(&layerprune_tests::tiny_model_dir()).unwrap();
            manifest.vocab_size = vocab_size;
            match attention_heads {
                Some(heads) => manifest
                    .extra
                    .insert("num_attention_heads".into(), heads.into()),
                None => manifest.extra.remove("num_attention_heads"),
            };
            manifest
        };
        let small = manifest_of(100, None);
        let recorded = |batch_windows| {
            let options = EvalOptions {
                batch_windows,
                ..EvalOptions::default()
            };
            cuda.evaluated_on(&options.for_windows(&windows, &small))
        };
        assert_eq!(
            recorded(0),
            "cuda, tf32 on, mask batch 1, windows a pass 10"
        );
        assert_eq!(recorded(10), recorded(0));
        assert_eq!(recorded(64), recorded(0));
        assert_eq!(recorded(4), "cuda, tf32 on, mask batch 1, windows a pass 4");
        // Automatic splits where the head's fp32 logits would pass their 2 GiB: a quarter of
        // it a window here, so 4 a pass.
        let big_vocabulary = (2 << 30) / (16 * 4) / 4;
        let options =
            EvalOptions::default().for_windows(&windows, &manifest_of(big_vocabulary, None));
        assert_eq!(options.batch_windows, 4);
        assert_eq!(
            options.batch_windows,
            windows_per_batch(windows.len(), 16, big_vocabulary, 0)
        );
        // And where a block's attention would pass its 2 GiB: a third of it a window here
        // (the manifest's heads), so 3 a pass.
        let many_heads = (2 << 30) / attention_bytes_per_window(16, 1) / 3;
        let options =
            EvalOptions::default().for_windows(&windows, &manifest_of(100, Some(many_heads)));
        assert_eq!(options.batch_windows, 3);
    }

    /// The join and split graphs a call opens are those its window batches can use, opened
    /// before its masks run, each once: none for a whole evaluation one mask at a time, up to
    /// 3 masks' for a race's round of 3 of 10 windows (10 / 3, filled), up to 10 for a call
    /// on one window. States bound to the memory the provider runs in (on the CPU as on CUDA),
    /// so the joins are graphs.
    #[test]
    fn joins_are_opened_for_the_batches_a_call_has_before_its_masks_run() {
        let options = RuntimeOptions {
            io_binding: Some(true),
            ..RuntimeOptions::default()
        };
        let windows = layerprune_tests::fixture_windows(9, 10, 12);
        let evaluator_filling = |fill: bool| {
            let model = LayeredModel::open(&layerprune_tests::tiny_model_dir(), &options);
            let options = EvalOptions {
                fill_small_batches: Some(fill),
                ..EvalOptions::default()
            };
            Evaluator::new(model.unwrap(), &windows, options).unwrap()
        };
        let mut evaluator = evaluator_filling(true);
        let masks = layerprune_tests::every_mask(6);
        let open = |evaluator: &Evaluator| evaluator.model.open_stitching_graphs();
        assert_eq!(open(&evaluator), 0);
        evaluator.evaluate(&masks[..4], &mut |_, _| {}).unwrap();
        assert_eq!(open(&evaluator), 0);
        // Concat and Split of 2 and 3 states.
        evaluator
            .evaluate_windows(&masks, 0..3, &mut |_, _| {})
            .unwrap();
        assert_eq!(open(&evaluator), 4);
        evaluator
            .evaluate_windows(&masks, 3..7, &mut |_, _| {})
            .unwrap();
        assert_eq!(open(&evaluator), 4);
        evaluator
            .evaluate_windows(&masks, 9..10, &mut |_, _| {})
            .unwrap();
        assert_eq!(open(&evaluator), 18);
        // Not filled: nothing to join one mask at a time.
        let mut plain = evaluator_filling(false);
        plain
            .evaluate_windows(&masks, 9..10, &mut |_, _| {})
            .unwrap();
        assert_eq!(open(&plain), 0);
    }

    #[test]
    fn small_batches_are_filled_up_to_the_largest_batchs_windows() {
        // 10 windows a full batch: a round of 3 carries 3 masks a call, of 1 ten (the most,
        // which the evaluator opens the joins for), a full batch `mask_batch`.
        assert_eq!(masks_a_block_call(1, true, 10, 3), 3);
        assert_eq!(masks_a_block_call(1, true, 10, 1), 10);
        assert_eq!(masks_a_block_call(4, true, 10, 10), 4);
        // Never fewer than `mask_batch`; nothing filled when filling is off.
        assert_eq!(masks_a_block_call(8, true, 10, 3), 8);
        assert_eq!(masks_a_block_call(1, false, 10, 1), 1);
        assert_eq!(masks_a_block_call(1, true, 1, 1), 1);
    }

    #[test]
    fn automatic_batches_bound_the_heads_logits() {
        // SmolLM2 (49,152 tokens): 40 windows of 128 stay one batch (1 GB of logits).
        assert_eq!(windows_per_batch(40, 128, 49_152, 0), 40);
        // Gemma 3 (262,144): 16 windows (2 GiB) per batch; 10 windows stay one.
        assert_eq!(windows_per_batch(40, 128, 262_144, 0), 16);
        assert_eq!(windows_per_batch(10, 128, 262_144, 0), 10);
        // A window whose logits alone pass the bound still runs, one at a time.
        assert_eq!(windows_per_batch(3, 1 << 20, 262_144, 0), 1);
    }

    /// A run whose attention would pass the machine's memory (here, a manifest claiming a
    /// billion heads) is refused before any block runs, saying what would fit; the arenas'
    /// multiplying of it is told apart from one call's.
    #[test]
    fn attention_past_the_machines_memory_is_refused_before_the_run() {
        let dir = tempfile::tempdir().unwrap();
        let heads = |heads: u64| {
            move |manifest: &mut serde_json::Value| {
                manifest["num_attention_heads"] = heads.into();
            }
        };
        let many = dir.path().join("many");
        layerprune_tests::copy_tiny_model_with_manifest(&many, heads(1 << 30));
        let windows = layerprune_tests::fixture_windows(9, 4, 16);
        let refusal = |dir: &std::path::Path, arena| {
            let options = RuntimeOptions {
                arena,
                ..RuntimeOptions::default()
            };
            let model = LayeredModel::open(dir, &options).unwrap();
            Evaluator::new(model, &windows, EvalOptions::default())
                .err()
                .map(|error| error.to_string())
        };
        let kept = refusal(&many, Arena::Keep).unwrap();
        assert!(kept.contains("windows of 16 tokens, 1 a pass"), "{kept}");
        assert!(
            kept.contains("each of the 8 graphs' arenas keeps its own"),
            "{kept}"
        );
        assert!(kept.contains("give shorter windows"), "{kept}");
        let shrunk = refusal(&many, Arena::Shrink).unwrap();
        assert!(!shrunk.contains("arenas"), "{shrunk}");
        // Enough heads for the kept arenas to pass any machine's memory, not one call: the
        // advice is to shrink them. (The fixture's own 4 heads run.)
        let memory = layerprune_core::memory::machine_memory().unwrap() as u128;
        let per_head = attention_bytes_per_window(16, 1) as u128;
        let some = (memory / per_head / 2) as u64;
        let fits_one_call = dir.path().join("some");
        layerprune_tests::copy_tiny_model_with_manifest(&fits_one_call, heads(some));
        let advice = refusal(&fits_one_call, Arena::Keep).unwrap();
        assert!(
            advice.contains("--arena shrink keeps one call's"),
            "{advice}"
        );
        assert_eq!(refusal(&fits_one_call, Arena::Shrink), None);
        // Masks batched through a block multiply its call: four of them pass the memory that
        // one call of one mask fits in.
        let options = RuntimeOptions {
            arena: Arena::Shrink,
            ..RuntimeOptions::default()
        };
        let model = LayeredModel::open(&fits_one_call, &options).unwrap();
        let batched = EvalOptions {
            mask_batch: 4,
            ..EvalOptions::default()
        };
        let message = Evaluator::new(model, &windows, batched)
            .err()
            .unwrap()
            .to_string();
        assert!(
            message.contains("1 a pass of each of 4 masks a block call")
                && message.contains("--batch-windows 1 --mask-batch 1 needs about"),
            "{message}"
        );
        assert_eq!(
            refusal(&layerprune_tests::tiny_model_dir(), Arena::Keep),
            None
        );
    }

    #[test]
    fn automatic_batches_bound_the_attention_too() {
        // SmolLM2 (9 heads): windows of 128 tokens are far from it (3 MB a window) ...
        assert_eq!(windows_per_batch(40, 128, 49_152, 9), 40);
        // ... windows of 4,096 are not (3 GB a window: one at a time), nor 1,024 for 32 heads
        // (671 MB: 3 a pass).
        assert_eq!(windows_per_batch(2, 4096, 49_152, 9), 1);
        assert_eq!(windows_per_batch(40, 1024, 32_000, 32), 3);
        // No heads recorded (a state-space model, an older export): the logits alone.
        assert_eq!(windows_per_batch(40, 4096, 49_152, 0), 2);
    }

    /// The prefixes carried from call to call (one per window batch, as a race's calls on a few
    /// windows at a time leave) stay within the cache's budget over any run of calls, whatever
    /// the grouping: a stack on other windows is dropped, the least recently used first, to
    /// make room (one state beyond it where the budget holds none).
    #[test]
    fn carried_prefixes_stay_within_the_cache() {
        use super::CarriedPrefix;
        let windows = layerprune_tests::fixture_windows(9, 7, 10);
        let masks = layerprune_tests::every_mask(6);
        for seed in 0..12 {
            let mut rng = layerprune_tests::FuzzRng(seed + 100);
            let model = LayeredModel::open(
                &layerprune_tests::tiny_model_dir(),
                &RuntimeOptions::default(),
            )
            .unwrap();
            let state_bytes = model.state_bytes(1, 10);
            let cache = [1, 3, 7, 10, 25, 60][rng.below(6)] * state_bytes;
            let options = EvalOptions {
                batch_windows: [0, 1, 2, 3][rng.below(4)],
                cache_bytes: cache,
                mask_batch: [1, 2, 4][rng.below(3)],
                fill_small_batches: [None, Some(true)][rng.below(2)],
                ..EvalOptions::default()
            };
            let mut evaluator = Evaluator::new(model, &windows, options.clone()).unwrap();
            for _ in 0..12 {
                let start = rng.below(7);
                let end = start + 1 + rng.below(7 - start);
                let count = rng.below(8);
                let first = rng.below(masks.len() - count);
                evaluator
                    .evaluate_windows(&masks[first..first + count], start..end, &mut |_, _| {})
                    .unwrap();
                let carried: usize = evaluator.carried.iter().map(CarriedPrefix::bytes).sum();
                let largest = evaluator.carried.iter().map(|c| c.state_bytes).max();
                assert!(
                    carried <= cache.max(largest.unwrap_or(0)),
                    "seed {seed}, {options:?}: {carried} bytes carried in {} stacks, cache \
                     {cache}",
                    evaluator.carried.len()
                );
            }
        }
    }
}
