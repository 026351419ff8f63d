//! Log-likelihoods of continuations given contexts (multiple-choice questions), for many masks.
//!
//! The block graphs take whole sequences (no key/value cache), so a choice's context is run
//! with its continuation. What can be shared is shared: the choices of one question go into
//! the same batch; choices whose model inputs coincide (single-token continuations such as
//! BoolQ's " yes" / " no") share one row and differ only in the targets given to the head,
//! which is run once per such variant; and, as in [`crate::Evaluator`], masks sorted next to
//! each other reuse the hidden states of the blocks they share. Rows are right-padded: the
//! attention is causal, so padding after a row's tokens cannot change the scores before it.
//!
//! A log-likelihood is a sum over up to a few hundred tokens, so a per-token bias adds up:
//! ONNX Runtime's fp32 LogSoftmax over a 49k vocabulary is low by ~7.5e-6 per token against
//! float64 (measured on SmolLM2), enough to miss a 1e-3 agreement with transformers on long
//! PIQA choices. Where the export has a logits head, the scorer therefore takes the logits
//! and does the log-softmax itself in float64 ([`Scoring::LogitsF64`]).

use std::collections::HashMap;

use layerprune_core::Mask;
use ndarray::{Array2, Array3};

use crate::evaluator::{prefix_order, run_masks, PrefixStack};
use crate::hidden::{on_host, HiddenState};
use crate::manifest::Manifest;
use crate::model::{non_finite_loss, LayeredModel};
use crate::RuntimeError;

/// One scoring request: log p(continuation | context).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LoglikRequest {
    pub context: Vec<u32>,
    pub continuation: Vec<u32>,
    /// Requests with the same group (the choices of one question) are batched together.
    pub group: usize,
}

#[derive(Clone, Debug)]
pub struct ChoiceOptions {
    /// Padded tokens per forward pass (rows × longest row); a question larger than this still
    /// goes in one batch of its own.
    pub batch_tokens: usize,
    /// Longest input the model is given (`--max-length`); longer requests lose context tokens
    /// from the left (lm-eval's truncation). A continuation longer than the longest input
    /// ([`ChoiceOptions::input_limit`]) is an error.
    pub max_length: usize,
    /// Memory for hidden states kept for reuse by later masks, in bytes.
    pub cache_bytes: usize,
    pub reuse_prefixes: bool,
}

impl Default for ChoiceOptions {
    fn default() -> Self {
        ChoiceOptions {
            batch_tokens: 2048,
            max_length: 2048,
            cache_bytes: 1 << 30,
            reuse_prefixes: true,
        }
    }
}

impl ChoiceOptions {
    /// The longest input `manifest`'s model is given: `max_length`, or fewer for a model made
    /// for shorter sequences (`context_length`) or a fused-attention export, which runs at
    /// most its rotary tables' positions.
    pub fn longest_input(&self, manifest: &Manifest) -> usize {
        self.input_limit(manifest).tokens()
    }

    /// The longest input with what sets it, for messages: the export's own bound where it is
    /// the shorter (on a tie too, since a longer `max_length` would not lift it), the
    /// checkpoint's `context_length` before the rotary tables made from it.
    pub fn input_limit(&self, manifest: &Manifest) -> InputLimit {
        let export = match (manifest.context_length(), manifest.rotary_positions()) {
            (Some(context), Some(rotary)) if rotary < context => {
                Some(InputLimit::RotaryPositions(rotary))
            }
            (Some(context), _) => Some(InputLimit::ContextLength(context)),
            (None, Some(rotary)) => Some(InputLimit::RotaryPositions(rotary)),
            (None, None) => None,
        };
        match export {
            Some(limit) if limit.tokens() <= self.max_length => limit,
            _ => InputLimit::MaxLength(self.max_length),
        }
    }
}

/// What bounds the inputs of a scored request, and to how many tokens.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum InputLimit {
    /// [`ChoiceOptions::max_length`] (`evaluate --max-length`).
    MaxLength(usize),
    /// The checkpoint's context (`context_length` in the manifest: its max_position_embeddings).
    ContextLength(usize),
    /// A fused-attention export's rotary tables (`rotary_positions` in the manifest).
    RotaryPositions(usize),
}

impl InputLimit {
    pub fn tokens(self) -> usize {
        match self {
            InputLimit::MaxLength(n)
            | InputLimit::ContextLength(n)
            | InputLimit::RotaryPositions(n) => n,
        }
    }
}

impl std::fmt::Display for InputLimit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            InputLimit::MaxLength(n) => write!(f, "--max-length {n}"),
            InputLimit::ContextLength(n) => write!(
                f,
                "the export's context of {n} tokens (context_length in its manifest)"
            ),
            InputLimit::RotaryPositions(n) => write!(
                f,
                "the {n} positions of the export's fused-attention rotary tables \
                 (rotary_positions in its manifest)"
            ),
        }
    }
}

/// How many of its oldest context tokens a request of these lengths loses so that it fits
/// `longest` inputs plus the one token scored past them (lm-eval's truncation).
pub fn context_tokens_cut(context: usize, continuation: usize, longest: usize) -> usize {
    (context + continuation).saturating_sub(longest + 1)
}

/// How a token's log-probability is computed from the final hidden state.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scoring {
    /// The `head_logits` graph's fp32 logits, log-softmax in float64 here.
    LogitsF64,
    /// The `head` graph's own (fp32) negative log-likelihood: exports without a logits head,
    /// or whose hidden states are not fp32.
    HeadGraph,
}

impl Scoring {
    /// The name recorded with the scores, so results of the two are never mixed.
    pub fn name(self) -> &'static str {
        match self {
            Scoring::LogitsF64 => "logits-f64-log-softmax",
            Scoring::HeadGraph => "head-graph-nll",
        }
    }

    /// What the scorer does with the model of `manifest`.
    pub fn of_manifest(manifest: &Manifest) -> Scoring {
        if manifest.head_logits.is_some() && manifest.dtype == "float32" {
            Scoring::LogitsF64
        } else {
            Scoring::HeadGraph
        }
    }
}

/// Positions whose logits are held at once (× vocabulary × 4 bytes: 100 MB for 49k).
const LOGIT_POSITIONS: usize = 512;

/// log Σ exp(logits) in float64 (see the module docs); −log p(target) = this − `logits[target]`.
pub fn log_sum_exp_f64(logits: ndarray::ArrayView1<f32>) -> f64 {
    let max = f64::from(logits.iter().fold(f32::NEG_INFINITY, |m, &x| m.max(x)));
    let sum: f64 = logits.iter().map(|&x| (f64::from(x) - max).exp()).sum();
    max + sum.ln()
}

/// Where a request's continuation is scored: input positions `start..end` of `row`, whose
/// targets are those of `variant`.
#[derive(Clone, Debug)]
struct Span {
    request: usize,
    row: usize,
    variant: usize,
    start: usize,
    end: usize,
}

struct RowBatch {
    inputs: Array2<i64>,
    /// One target array per variant.
    targets: Vec<Array2<i64>>,
    spans: Vec<Span>,
    /// The head only needs the scored positions: each row's from `window_start[row]` on,
    /// `window_len` of them (`compact_targets` are the targets there). The logits of a 49k
    /// vocabulary cost a fifth of a 30-block model per position, and contexts are long.
    window_start: Vec<usize>,
    window_len: usize,
    compact_targets: Vec<Array2<i64>>,
}

impl RowBatch {
    /// The hidden states of the scored windows (copied to the host when they are in device
    /// memory), or `None` for a model whose states are not f32 (then the head runs on every
    /// position).
    fn compact_state(&self, state: &HiddenState) -> Result<Option<Array3<f32>>, RuntimeError> {
        let state = on_host(state)?;
        let Ok(view) = state.try_extract_array::<f32>() else {
            return Ok(None);
        };
        let Ok(view) = view.into_dimensionality::<ndarray::Ix3>() else {
            return Ok(None);
        };
        let (rows, _, hidden) = view.dim();
        let mut compact = Array3::<f32>::zeros((rows, self.window_len, hidden));
        for (row, &start) in self.window_start.iter().enumerate() {
            let end = (start + self.window_len).min(view.dim().1);
            compact
                .slice_mut(ndarray::s![row, ..end - start, ..])
                .assign(&view.slice(ndarray::s![row, start..end, ..]));
        }
        Ok(Some(compact))
    }
}

/// The model plus the requests it scores.
pub struct ChoiceScorer {
    model: LayeredModel,
    batches: Vec<RowBatch>,
    num_requests: usize,
    options: ChoiceOptions,
    scoring: Scoring,
    blocks_run: u64,
    padded_tokens: u64,
}

/// A request's model input (its tokens but the last) and the first scored input position.
fn request_input(
    index: usize,
    request: &LoglikRequest,
    max_length: usize,
    longest_named: &str,
    vocab_size: usize,
) -> Result<(Vec<u32>, Vec<u32>, usize), RuntimeError> {
    let bad = |problem: String| RuntimeError::BadRequest { index, problem };
    if request.context.is_empty() {
        return Err(bad("empty context".into()));
    }
    if request.continuation.is_empty() {
        return Err(bad("empty continuation".into()));
    }
    if request.continuation.len() > max_length {
        return Err(bad(format!(
            "the continuation has {} tokens, more than {longest_named}",
            request.continuation.len()
        )));
    }
    let mut whole: Vec<u32> = request
        .context
        .iter()
        .chain(&request.continuation)
        .copied()
        .collect();
    if let Some(&id) = whole.iter().find(|&&id| id as usize >= vocab_size) {
        return Err(bad(format!(
            "token id {id} is outside the model's vocabulary of {vocab_size}"
        )));
    }
    whole.drain(
        ..context_tokens_cut(
            request.context.len(),
            request.continuation.len(),
            max_length,
        ),
    );
    let targets = whole[1..].to_vec();
    whole.pop();
    let start = whole.len() - request.continuation.len();
    Ok((whole, targets, start))
}

impl ChoiceScorer {
    /// Checks the requests against the model and lays them out in batches.
    pub fn new(
        model: LayeredModel,
        requests: &[LoglikRequest],
        options: ChoiceOptions,
    ) -> Result<Self, RuntimeError> {
        if requests.is_empty() {
            return Err(RuntimeError::BadInput("no requests to score".into()));
        }
        if let Some(fixed) = model.manifest().fixed_seq_len() {
            // Questions have contexts of every length; padding them would change a
            // recurrent model's state.
            return Err(RuntimeError::BadInput(format!(
                "{} was exported for sequences of exactly {fixed} tokens ({}); zero-shot \
                 tasks need any length: export it without a fixed length to score tasks",
                model.dir().display(),
                model.manifest().architecture
            )));
        }
        let vocab_size = model.manifest().vocab_size;
        // Longer inputs lose their oldest context tokens.
        let limit = options.input_limit(model.manifest());
        let max_length = limit.tokens();
        // What sets the longest input, for a request refused as longer.
        let longest_named = limit.to_string();
        // Groups in order of first appearance.
        let mut group_index: HashMap<usize, usize> = HashMap::new();
        let mut groups: Vec<Vec<usize>> = Vec::new();
        for (index, request) in requests.iter().enumerate() {
            let next = groups.len();
            let slot = *group_index.entry(request.group).or_insert(next);
            if slot == next {
                groups.push(Vec::new());
            }
            groups[slot].push(index);
        }
        // Per group: its distinct input rows, and each request's (row, variant, start, targets).
        struct GroupRows {
            rows: Vec<Vec<u32>>,
            requests: Vec<(usize, usize, usize, usize, Vec<u32>)>,
            longest: usize,
        }
        let mut laid_out = Vec::with_capacity(groups.len());
        for members in &groups {
            let mut rows: Vec<Vec<u32>> = Vec::new();
            let mut variants: Vec<usize> = Vec::new();
            let mut by_input: HashMap<Vec<u32>, usize> = HashMap::new();
            let mut placed = Vec::with_capacity(members.len());
            for &index in members {
                let (input, targets, start) = request_input(
                    index,
                    &requests[index],
                    max_length,
                    &longest_named,
                    vocab_size,
                )?;
                let row = *by_input.entry(input.clone()).or_insert_with(|| {
                    rows.push(input);
                    variants.push(0);
                    rows.len() - 1
                });
                placed.push((index, row, variants[row], start, targets));
                variants[row] += 1;
            }
            let longest = rows.iter().map(Vec::len).max().unwrap_or(0);
            laid_out.push(GroupRows {
                rows,
                requests: placed,
                longest,
            });
        }
        // Longest first, so that rows of similar length share a batch and padding stays small.
        let mut order: Vec<usize> = (0..laid_out.len()).collect();
        order.sort_by_key(|&g| std::cmp::Reverse(laid_out[g].longest));
        let mut packs: Vec<Vec<usize>> = Vec::new();
        let (mut rows_in_pack, mut longest_in_pack) = (0usize, 0usize);
        for g in order {
            let group = &laid_out[g];
            let rows = rows_in_pack + group.rows.len();
            let longest = longest_in_pack.max(group.longest);
            match packs.last_mut() {
                Some(pack) if rows * longest <= options.batch_tokens => {
                    pack.push(g);
                    (rows_in_pack, longest_in_pack) = (rows, longest);
                }
                _ => {
                    packs.push(vec![g]);
                    (rows_in_pack, longest_in_pack) = (group.rows.len(), group.longest);
                }
            }
        }
        let mut batches = Vec::with_capacity(packs.len());
        let mut padded_tokens = 0u64;
        for pack in packs {
            let num_rows: usize = pack.iter().map(|&g| laid_out[g].rows.len()).sum();
            let seq_len = pack.iter().map(|&g| laid_out[g].longest).max().unwrap_or(1);
            let num_variants = pack
                .iter()
                .flat_map(|&g| laid_out[g].requests.iter().map(|r| r.2 + 1))
                .max()
                .unwrap_or(1);
            let mut inputs = Array2::<i64>::zeros((num_rows, seq_len));
            let mut targets = vec![Array2::<i64>::zeros((num_rows, seq_len)); num_variants];
            let mut spans = Vec::new();
            let mut first_row = 0;
            for &g in &pack {
                let group = &laid_out[g];
                for (r, row) in group.rows.iter().enumerate() {
                    for (t, &id) in row.iter().enumerate() {
                        inputs[[first_row + r, t]] = i64::from(id);
                    }
                }
                // Variant 0 of every row first, so a row with fewer variants has real targets
                // (its first request's) in the variants it does not use.
                let mut sorted: Vec<&(usize, usize, usize, usize, Vec<u32>)> =
                    group.requests.iter().collect();
                sorted.sort_by_key(|r| r.2);
                for (request, row, variant, start, row_targets) in sorted {
                    let arrays = if *variant == 0 {
                        0..num_variants
                    } else {
                        *variant..*variant + 1
                    };
                    for array in &mut targets[arrays] {
                        for (t, &id) in row_targets.iter().enumerate() {
                            array[[first_row + row, t]] = i64::from(id);
                        }
                    }
                    spans.push(Span {
                        request: *request,
                        row: first_row + row,
                        variant: *variant,
                        start: *start,
                        end: row_targets.len(),
                    });
                }
                first_row += group.rows.len();
            }
            let mut window_start = vec![usize::MAX; num_rows];
            let mut window_end = vec![0; num_rows];
            for span in &spans {
                window_start[span.row] = window_start[span.row].min(span.start);
                window_end[span.row] = window_end[span.row].max(span.end);
            }
            let window_len = (0..num_rows)
                .map(|r| window_end[r].saturating_sub(window_start[r]))
                .max()
                .unwrap_or(1);
            for start in &mut window_start {
                if *start == usize::MAX {
                    *start = 0;
                }
            }
            let compact_targets = targets
                .iter()
                .map(|full| {
                    Array2::from_shape_fn((num_rows, window_len), |(r, t)| {
                        full.get([r, window_start[r] + t]).copied().unwrap_or(0)
                    })
                })
                .collect();
            padded_tokens += (num_rows * seq_len) as u64;
            batches.push(RowBatch {
                inputs,
                targets,
                spans,
                window_start,
                window_len,
                compact_targets,
            });
        }
        Ok(ChoiceScorer {
            scoring: Scoring::of_manifest(model.manifest()),
            model,
            batches,
            num_requests: requests.len(),
            options,
            blocks_run: 0,
            padded_tokens,
        })
    }

    pub fn model(&self) -> &LayeredModel {
        &self.model
    }

    pub fn num_blocks(&self) -> usize {
        self.model.num_blocks()
    }

    /// Forward passes per mask.
    pub fn num_batches(&self) -> usize {
        self.batches.len()
    }

    /// Tokens one mask runs through each kept block, padding included.
    pub fn padded_tokens(&self) -> u64 {
        self.padded_tokens
    }

    pub fn scoring(&self) -> Scoring {
        self.scoring
    }

    pub fn blocks_run(&self) -> u64 {
        self.blocks_run
    }

    /// `result[m][r]` = log p(continuation of request r | its context) under mask m.
    /// `progress(done, total)` counts batches.
    pub fn score(
        &mut self,
        masks: &[Mask],
        progress: &mut dyn FnMut(usize, usize),
    ) -> Result<Vec<Vec<f64>>, RuntimeError> {
        // Asked to end: before the masks, as `Evaluator::evaluate` (the caller saves).
        layerprune_core::interrupt::check()?;
        let order = prefix_order(masks, self.num_blocks())?;
        let mut results = vec![vec![f64::NAN; self.num_requests]; masks.len()];
        let num_batches = self.batches.len();
        for (done, batch) in self.batches.iter().enumerate() {
            let embedded = self.model.embed(&batch.inputs)?;
            let (rows, seq_len) = batch.inputs.dim();
            let state_bytes = self.model.state_bytes(rows, seq_len);
            let (blocks_run, _) = run_masks(
                &mut self.model,
                PrefixStack::embedded(embedded),
                masks,
                &order,
                self.options
                    .reuse_prefixes
                    .then(|| (self.options.cache_bytes / state_bytes).max(1)),
                &mut |model, index, final_state| {
                    for (request, nll_sum) in span_nlls(model, batch, final_state, self.scoring)? {
                        if !nll_sum.is_finite() {
                            // By the request, which the caller can name (a task's question
                            // and choice); the folder, mask and likely cause in the problem.
                            let problem = non_finite_loss(
                                model.dir(),
                                &model.manifest().dtype,
                                format!(
                                    "mask {}: the log-likelihood is {}",
                                    masks[index], -nll_sum
                                ),
                            );
                            return Err(RuntimeError::BadRequest {
                                index: request,
                                problem: problem.to_string(),
                            });
                        }
                        results[index][request] = -nll_sum;
                    }
                    Ok(())
                },
            )?;
            self.blocks_run += blocks_run;
            progress(done + 1, num_batches);
        }
        Ok(results)
    }

    pub fn into_model(self) -> LayeredModel {
        self.model
    }
}

/// (request, −log-likelihood of its continuation) for every span of `batch`.
fn span_nlls(
    model: &mut LayeredModel,
    batch: &RowBatch,
    final_state: &HiddenState,
    scoring: Scoring,
) -> Result<Vec<(usize, f64)>, RuntimeError> {
    let compact = batch.compact_state(final_state)?;
    let mut sums = Vec::with_capacity(batch.spans.len());
    match (scoring, &compact) {
        (Scoring::LogitsF64, Some(state)) => {
            let (rows, window_len, _) = state.dim();
            let rows_at_once = (LOGIT_POSITIONS / window_len.max(1)).max(1);
            for first in (0..rows).step_by(rows_at_once) {
                let last = (first + rows_at_once).min(rows);
                let logits = model
                    .logits_of_array(&state.slice(ndarray::s![first..last, .., ..]).to_owned())?;
                let vocab = logits.dim().2;
                // The normaliser of a position is shared by every variant's target there.
                let mut lse: HashMap<(usize, usize), f64> = HashMap::new();
                for span in batch
                    .spans
                    .iter()
                    .filter(|s| (first..last).contains(&s.row))
                {
                    let offset = batch.window_start[span.row];
                    let targets = &batch.compact_targets[span.variant];
                    let mut sum = 0.0;
                    for t in span.start - offset..span.end - offset {
                        let row_logits = logits.slice(ndarray::s![span.row - first, t, ..]);
                        let target = usize::try_from(targets[[span.row, t]]).unwrap_or(vocab);
                        if target >= vocab {
                            return Err(RuntimeError::BadInput(format!(
                                "request {}: target {target} is outside the logits ({vocab})",
                                span.request
                            )));
                        }
                        let normaliser = *lse
                            .entry((span.row, t))
                            .or_insert_with(|| log_sum_exp_f64(row_logits));
                        sum += normaliser - f64::from(row_logits[target]);
                    }
                    sums.push((span.request, sum));
                }
            }
        }
        (Scoring::LogitsF64, None) => {
            return Err(RuntimeError::BadInput(
                "the hidden states are not float32, which the float64 log-softmax needs".into(),
            ))
        }
        (Scoring::HeadGraph, _) => {
            for (variant, targets) in batch.targets.iter().enumerate() {
                let (nll, offsets) = match &compact {
                    Some(state) => (
                        model.token_nll_of_array(state, &batch.compact_targets[variant])?,
                        batch.window_start.as_slice(),
                    ),
                    None => (model.token_nll(final_state, targets)?, &[][..]),
                };
                for span in batch.spans.iter().filter(|s| s.variant == variant) {
                    let offset = offsets.get(span.row).copied().unwrap_or(0);
                    let sum: f64 = (span.start..span.end)
                        .map(|t| f64::from(nll[[span.row, t - offset]]))
                        .sum();
                    sums.push((span.request, sum));
                }
            }
        }
    }
    Ok(sums)
}
