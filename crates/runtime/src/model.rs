//! One layered model loaded into ONNX Runtime sessions: its graphs checked against the
//! manifest, and the runs of the embedding, the blocks and the head that evaluation is made of.

use std::path::{Path, PathBuf};
use std::time::Instant;

use layerprune_core::Device;
use ndarray::{Array2, Array3};
use ort::memory::{Allocator, MemoryInfo};
use ort::session::{RunOptions, Session};
use ort::value::{Tensor, TensorElementType, TensorRef};

use crate::arena::{Arena, ArenaUse};
use crate::captured::{CapturedBlocks, Copies, CAPTURED_SHAPES};
use crate::hidden::{
    first_output, fresh_state_like, model_run_options, on_host, run_bound, run_into, run_to_host,
    HiddenState,
};
use crate::manifest::Manifest;
use crate::options::RuntimeOptions;
use crate::session::{onnx_error, open_session, open_sessions};
use crate::stitch::Stitcher;
use crate::tally::RunTally;
use crate::RuntimeError;
use layerprune_model::confined;

/// The graph files of a layered model, each [`confined`] to its folder when the model opened.
struct GraphPaths {
    embed: PathBuf,
    blocks: Vec<PathBuf>,
    head: PathBuf,
    head_logits: Option<PathBuf>,
}

impl GraphPaths {
    fn of(manifest: &Manifest, dir: &Path) -> Result<GraphPaths, RuntimeError> {
        Ok(GraphPaths {
            embed: confined(dir, &manifest.embedding.file)?,
            blocks: (0..manifest.num_blocks)
                .map(|i| manifest.block_path(dir, i))
                .collect::<Result<_, _>>()?,
            head: confined(dir, &manifest.head.file)?,
            head_logits: manifest
                .head_logits
                .as_ref()
                .map(|graph| confined(dir, &graph.file))
                .transpose()?,
        })
    }
}

/// The last dimension of a tensor input or output, when the graph fixes it.
fn fixed_width(value: &ort::value::ValueType) -> Option<i64> {
    match value {
        ort::value::ValueType::Tensor { shape, .. } => shape.last().copied().filter(|d| *d > 0),
        _ => None,
    }
}

/// Refuses a graph whose hidden-state input or output is fixed at another width than the
/// manifest's `hidden_size`: the manifest sizes memory and checks inputs by that number, so a
/// folder whose manifest and graphs disagree is damaged and fails here, naming both, rather
/// than with a shape error from inside ONNX Runtime later.
/// `state_is_output`: the embedding's hidden state is its output (its input is token ids);
/// every other graph's is its first input.
fn check_hidden_width(
    manifest: &Manifest,
    dir: &Path,
    session: &Session,
    path: &Path,
    state_is_output: bool,
) -> Result<(), RuntimeError> {
    let state = if state_is_output {
        session.outputs().first().map(|o| o.dtype())
    } else {
        session.inputs().first().map(|i| i.dtype())
    };
    match state.and_then(fixed_width) {
        Some(width) if width as u64 != manifest.hidden_size as u64 => {
            Err(RuntimeError::BadInput(format!(
                "{}: hidden_size is {}, but {} has hidden states of width {width}; the manifest \
                 does not describe its graphs",
                dir.join(crate::manifest::MANIFEST_FILE).display(),
                manifest.hidden_size,
                path.display()
            )))
        }
        _ => Ok(()),
    }
}

/// Refuses a graph whose inputs or outputs are not the ones the manifest names for it
/// (`graph`: `embedding`, `head` or `head_logits`; `part` its field name): the stages feed
/// the graphs by position, so the names run nothing here, but tools/export/merge_layered.py
/// joins the graphs by them and anyone reading the manifest takes them for the graph's. A
/// manifest naming tensors its graphs lack does not describe them. `input` is the first input,
/// `inputs` all of them in order, `output` the first output.
fn check_tensor_names(
    dir: &Path,
    part: &str,
    graph: &crate::manifest::GraphRef,
    session: &Session,
    path: &Path,
) -> Result<(), RuntimeError> {
    let inputs: Vec<&str> = session.inputs().iter().map(|i| i.name()).collect();
    let outputs: Vec<&str> = session.outputs().iter().map(|o| o.name()).collect();
    let mismatch = |field: &str, named: String, has: &str, actual: String| {
        RuntimeError::Model(layerprune_model::ModelError::BadManifest {
            path: dir.join(crate::manifest::MANIFEST_FILE),
            problem: format!(
                "{part}.{field} is {named}, but {} has {has} {actual}; the manifest does not \
                 describe its graphs",
                path.display()
            ),
        })
    };
    if let Some(input) = &graph.input {
        if inputs.first() != Some(&input.as_str()) {
            return Err(mismatch(
                "input",
                format!("{input:?}"),
                "the first input",
                format!("{:?}", inputs.first().unwrap_or(&"")),
            ));
        }
    }
    if let Some(named) = &graph.inputs {
        if named.iter().map(String::as_str).ne(inputs.iter().copied()) {
            return Err(mismatch(
                "inputs",
                format!("{named:?}"),
                "the inputs",
                format!("{inputs:?}"),
            ));
        }
    }
    if outputs.first() != Some(&graph.output.as_str()) {
        return Err(mismatch(
            "output",
            format!("{:?}", graph.output),
            "the first output",
            format!("{:?}", outputs.first().unwrap_or(&"")),
        ));
    }
    Ok(())
}

/// A layered model: the embedding, every block and the head, each its own session.
pub struct LayeredModel {
    dir: PathBuf,
    manifest: Manifest,
    paths: GraphPaths,
    model_id: String,
    options: RuntimeOptions,
    /// Where the embedding's and the blocks' outputs are bound ([`RuntimeOptions::io_binding`]);
    /// `None`: ONNX Runtime returns them in host memory.
    bound_memory: Option<MemoryInfo<'static>>,
    /// Run options ([`model_run_options`]) of the embedding's runs: queued when the host
    /// overlaps the device; never shrinking, as its arena holds the kept states with
    /// [`Arena::Shrink`].
    embed_runs: Option<RunOptions>,
    /// Of the blocks' runs (and the joins and splits of batched states): queued when the host
    /// overlaps the device, shrinking with [`Arena::Shrink`].
    block_runs: Option<RunOptions>,
    /// Of the head's runs, whose results come back to the host: waited for, shrinking with
    /// [`Arena::Shrink`].
    head_runs: Option<RunOptions>,
    /// With [`Arena::Shrink`], where the blocks' outputs are written: the embedding session's
    /// arena, in the memory states are kept in, so that a kept state never holds a region of
    /// a block's arena that would otherwise be given back.
    state_allocator: Option<Allocator>,
    /// The blocks' runs captured as CUDA graphs ([`RuntimeOptions::cuda_graphs`]).
    captured: Option<CapturedBlocks>,
    embed: Session,
    blocks: Vec<Session>,
    head: Session,
    head_logits: Option<Session>,
    /// Concat and Split along the batch axis, for masks batched through shared blocks.
    stitcher: Stitcher,
    /// Runs of each kind of graph so far and the host's time inside them.
    tally: RunTally,
}

impl LayeredModel {
    /// [`LayeredModel::open`] of the model whose manifest a stage read before it
    /// ([`Manifest::load_with_id`], which gave `model_id`) to check its inputs, refused if
    /// `dir/manifest.json` is another now ("changed while this run read it; run again"): what
    /// was checked was checked against the model that runs.
    pub fn open_as_read(
        dir: &Path,
        options: &RuntimeOptions,
        model_id: &str,
    ) -> Result<Self, RuntimeError> {
        let model = LayeredModel::open(dir, options)?;
        if model.model_id != model_id {
            return Err(RuntimeError::Model(
                layerprune_model::ModelError::BadManifest {
                    path: dir.to_path_buf(),
                    problem: format!(
                        "its {} changed while this run read it; run again",
                        crate::manifest::MANIFEST_FILE
                    ),
                },
            ));
        }
        Ok(model)
    }

    /// Loads `dir`. Every path the manifest and the graphs name must stay inside `dir`; with
    /// `options.verify_hashes`, every file the graphs read must also be listed in the manifest
    /// and every listed file's sha256 must match (`Manifest::check_folder`).
    pub fn open(dir: &Path, options: &RuntimeOptions) -> Result<Self, RuntimeError> {
        options.check()?;
        let (manifest, model_id) = Manifest::load_with_id(dir)?;
        manifest.check_folder(dir, options.verify_hashes)?;
        let paths = GraphPaths::of(&manifest, dir)?;
        if manifest.fused_attention()
            && manifest.dtype == "float32"
            && matches!(options.device, Device::Cuda(_))
        {
            // ONNX Runtime would place every block's attention node on the CPU provider,
            // copying the states to the host and back around it: a CPU run reported as a GPU one.
            return Err(RuntimeError::BadInput(format!(
                "{}'s blocks compute attention with ONNX Runtime's fused GroupQueryAttention in \
                 float32 (attention_kernel \"fused\", dtype float32 in its manifest.json), which \
                 the CUDA provider runs only in float16 / bfloat16: export the model with --dtype \
                 bf16 or fp16 for a GPU, or with --attention-kernel standard, or evaluate it with \
                 --device cpu",
                dir.display()
            )));
        }
        if manifest.dtype == "bfloat16" && matches!(options.device, Device::Cpu) {
            // The CPU provider has no bfloat16 kernels at all (the causal mask's Trilu is the
            // first node it fails on, with ONNX Runtime's bare "could not find an
            // implementation"): say so, with the ways out, before any graph opens.
            return Err(RuntimeError::BadInput(format!(
                "{} holds bfloat16 weights (dtype in its manifest.json), which ONNX Runtime's CPU \
                 provider cannot run: evaluate it with --device cuda, or export the model again \
                 with --dtype fp16 or fp32 (the default) for the CPU",
                dir.display()
            )));
        }
        if manifest.dtype != "float32" && matches!(options.device, Device::Cpu) {
            tracing::warn!(
                "{} holds {} weights; the CPU provider runs them slowly",
                dir.display(),
                manifest.dtype
            );
        }
        if let Device::Cuda(index) = options.device {
            // A device that does not answer is refused by the opening below, in its own words.
            if let Ok(memory) = crate::cuda::device_memory(index) {
                let weights = manifest.graph_bytes(dir, &manifest.evaluated_graphs())?;
                if let Some(warning) = crate::device_fit::check_fits(weights, memory, index, dir)? {
                    tracing::warn!("{warning}");
                }
            }
        }
        let mut graphs = vec![paths.embed.clone()];
        graphs.extend(paths.blocks.iter().cloned());
        graphs.push(paths.head.clone());
        let started = Instant::now();
        // The blocks, not the embedding (first) or the head (last).
        let last = graphs.len() - 1;
        let mut sessions = open_sessions(&graphs, options, |i| i > 0 && i < last)?.into_iter();
        tracing::info!(
            "opened the {} graphs of {} in {:.2} s",
            graphs.len(),
            dir.display(),
            started.elapsed().as_secs_f64()
        );
        let (Some(embed), Some(head)) = (sessions.next(), sessions.next_back()) else {
            unreachable!("one session per graph, and there are at least two graphs")
        };
        let blocks: Vec<Session> = sessions.collect();
        check_hidden_width(&manifest, dir, &embed, &paths.embed, true)?;
        check_tensor_names(dir, "embedding", &manifest.embedding, &embed, &paths.embed)?;
        check_tensor_names(dir, "head", &manifest.head, &head, &paths.head)?;
        for (session, path) in blocks
            .iter()
            .zip(&paths.blocks)
            .chain([(&head, &paths.head)])
        {
            check_hidden_width(&manifest, dir, session, path, false)?;
        }
        let bound_memory = if options.binds_outputs() {
            Some(options.output_memory()?)
        } else {
            None
        };
        let shrink = options.arena == Arena::Shrink;
        let embed_runs = model_run_options(options, options.overlaps(), false, dir)?;
        let block_runs = model_run_options(options, options.overlaps(), shrink, dir)?;
        let head_runs = model_run_options(options, false, shrink, dir)?;
        let state_allocator = if shrink {
            let memory = match &bound_memory {
                Some(memory) => memory.clone(),
                None => RuntimeOptions::default().output_memory()?,
            };
            Some(Allocator::new(&embed, memory).map_err(onnx_error(&paths.embed))?)
        } else {
            None
        };
        let captured = if options.cuda_graphs {
            let memory = options.output_memory()?;
            let allocator = Allocator::new(&embed, memory).map_err(onnx_error(&paths.embed))?;
            Some(CapturedBlocks::new(
                allocator,
                Copies::SharedStream,
                options.overlaps(),
                CAPTURED_SHAPES,
                dir,
            )?)
        } else {
            None
        };
        Ok(LayeredModel {
            dir: dir.to_path_buf(),
            model_id,
            manifest,
            paths,
            options: options.clone(),
            bound_memory,
            embed_runs,
            block_runs,
            head_runs,
            state_allocator,
            captured,
            embed,
            blocks,
            head,
            head_logits: None,
            stitcher: Stitcher::default(),
            tally: RunTally::default(),
        })
    }

    pub fn manifest(&self) -> &Manifest {
        &self.manifest
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// sha256 of the manifest (which holds every part's hash).
    pub fn model_id(&self) -> &str {
        &self.model_id
    }

    pub fn num_blocks(&self) -> usize {
        self.manifest.num_blocks
    }

    /// Whether block runs are captured as CUDA graphs ([`RuntimeOptions::cuda_graphs`]; on the
    /// CPU provider, in tests, the same fixed buffers without capture).
    pub fn captures_blocks(&self) -> bool {
        self.captured.is_some()
    }

    /// Block runs through [`CapturedBlocks`]' fixed buffers on the CPU provider, capturing up to
    /// `capacity` shapes (the CPU provider captures nothing: this tests the buffers, bindings
    /// and copies that CUDA graphs need).
    #[cfg(test)]
    pub(crate) fn capture_blocks_on_the_host(&mut self, capacity: usize) {
        let captured = CapturedBlocks::new(
            Allocator::default(),
            Copies::Host,
            false,
            capacity,
            &self.dir,
        )
        .expect("run options on the CPU");
        self.captured = Some(captured);
    }

    /// Shapes whose block runs are captured so far (0 without [`Self::captures_blocks`]).
    pub fn captured_shapes(&self) -> usize {
        self.captured
            .as_ref()
            .map_or(0, CapturedBlocks::captured_shapes)
    }

    /// Runs of each kind of graph since the model was opened, and the host's time inside them.
    pub fn run_tally(&self) -> RunTally {
        self.tally
    }

    /// The device the graphs run on.
    pub fn device(&self) -> Device {
        self.options.device
    }

    /// What the sessions' arenas do with the buffers a run freed.
    pub fn arena(&self) -> Arena {
        self.options.arena
    }

    /// Whether evaluating with `evaluation` batches more masks on small window batches
    /// ([`RuntimeOptions::fills_small_batches`]).
    pub fn fills_small_batches(&self, evaluation: &crate::EvalOptions) -> bool {
        self.options.fills_small_batches(evaluation)
    }

    /// What evaluation tables record the rows of this model, evaluated with `evaluation`, as
    /// measured on ([`RuntimeOptions::evaluated_on`]).
    pub fn evaluated_on(&self, evaluation: &crate::EvalOptions) -> String {
        self.options.evaluated_on(evaluation)
    }

    /// Whether hidden states stay in the device's memory between graphs
    /// ([`RuntimeOptions::io_binding`]).
    pub fn io_binding(&self) -> bool {
        self.bound_memory.is_some()
    }

    /// What the arenas of the embedding's, the blocks' and the head's sessions hold now, in
    /// the device's memory; `None` when they have no arena ([`Arena::Off`]).
    pub fn arena_use(&self) -> Option<ArenaUse> {
        self.arena_use_by_graph().into_iter().sum()
    }

    /// [`Self::arena_use`] graph by graph: the embedding, each block, the head.
    pub fn arena_use_by_graph(&self) -> Vec<Option<ArenaUse>> {
        let memory = self.options.output_memory().ok();
        std::iter::once(&self.embed)
            .chain(&self.blocks)
            .chain([&self.head])
            .map(|session| ArenaUse::of(session, memory.as_ref()?))
            .collect()
    }

    /// Token ids [batch, seq] → hidden states.
    pub fn embed(&mut self, input_ids: &Array2<i64>) -> Result<HiddenState, RuntimeError> {
        let started = Instant::now();
        let state = self.embed_untimed(input_ids);
        self.tally.embedding.record(started);
        let state = state?;
        let (batch, seq_len) = input_ids.dim();
        let expected = [batch, seq_len, self.manifest.hidden_size].map(|d| d as i64);
        check_output_shape(&self.paths.embed, "hidden states", dims(&state), &expected)?;
        Ok(state)
    }

    fn embed_untimed(&mut self, input_ids: &Array2<i64>) -> Result<HiddenState, RuntimeError> {
        let path = self.paths.embed.clone();
        if let Some(memory) = &self.bound_memory {
            // Owned, so the binding holds it rather than copying a borrowed view.
            let input = Tensor::from_array(input_ids.clone()).map_err(onnx_error(&path))?;
            return run_bound(
                &mut self.embed,
                &input,
                memory,
                self.embed_runs.as_ref(),
                &path,
            );
        }
        let input = TensorRef::from_array_view(input_ids).map_err(onnx_error(&path))?;
        let outputs = run_to_host(
            &mut self.embed,
            ort::inputs![input],
            self.embed_runs.as_ref(),
        )
        .map_err(onnx_error(&path))?;
        first_output(outputs, &path)
    }

    /// Runs block `index` (0-based position in this model).
    pub fn run_block(
        &mut self,
        index: usize,
        hidden: &HiddenState,
    ) -> Result<HiddenState, RuntimeError> {
        let started = Instant::now();
        let state = self.run_block_untimed(index, hidden);
        self.tally.blocks.record(started);
        let state = state?;
        // A block's output is the next block's input and, split by mask, several masks'
        // states: one of another shape would fail in a later graph, named there.
        check_output_shape(
            &self.paths.blocks[index],
            "hidden states",
            dims(&state),
            dims(hidden),
        )?;
        Ok(state)
    }

    fn run_block_untimed(
        &mut self,
        index: usize,
        hidden: &HiddenState,
    ) -> Result<HiddenState, RuntimeError> {
        let path = &self.paths.blocks[index];
        if let Some(captured) = &mut self.captured {
            return captured.run(index, &mut self.blocks[index], hidden, path);
        }
        if let Some(allocator) = &self.state_allocator {
            let fresh = fresh_state_like(hidden, allocator, path)?;
            return run_into(
                &mut self.blocks[index],
                hidden,
                fresh,
                self.block_runs.as_ref(),
                path,
            );
        }
        if let Some(memory) = &self.bound_memory {
            return run_bound(
                &mut self.blocks[index],
                hidden,
                memory,
                self.block_runs.as_ref(),
                path,
            );
        }
        let outputs = run_to_host(
            &mut self.blocks[index],
            ort::inputs![hidden],
            self.block_runs.as_ref(),
        )
        .map_err(onnx_error(path))?;
        first_output(outputs, path)
    }

    /// The states one after another along the batch axis, in the memory the blocks' outputs
    /// go to: on the device by a graph when states are bound there, else on the host.
    pub(crate) fn concat_states(
        &mut self,
        states: &[&HiddenState],
    ) -> Result<HiddenState, RuntimeError> {
        let started = Instant::now();
        let joined = self.stitcher.concat(
            states,
            self.bound_memory.as_ref(),
            self.block_runs.as_ref(),
            &self.options,
        );
        self.tally.stitching.record(started);
        joined
    }

    /// Opens now the graphs that join and split the states of up to `max_parts` masks on the
    /// device (nothing to open when states are on the host); how many it opened (those open
    /// already are not opened again).
    pub(crate) fn prepare_mask_batches(&mut self, max_parts: usize) -> Result<usize, RuntimeError> {
        if self.bound_memory.is_none() {
            return Ok(0);
        }
        let ty = self.state_type();
        self.stitcher.prepare(ty, max_parts, &self.options)
    }

    /// How many join and split graphs are open (for tests).
    #[cfg(test)]
    pub(crate) fn open_stitching_graphs(&self) -> usize {
        self.stitcher.open_graphs()
    }

    /// The inverse of [`LayeredModel::concat_states`]: `parts` equal slices along the batch
    /// axis, where the state is.
    pub(crate) fn split_state(
        &mut self,
        state: &HiddenState,
        parts: usize,
    ) -> Result<Vec<HiddenState>, RuntimeError> {
        let started = Instant::now();
        let split = self.stitcher.split(
            state,
            parts,
            self.bound_memory.as_ref(),
            self.block_runs.as_ref(),
            &self.options,
        );
        self.tally.stitching.record(started);
        split
    }

    /// −log p(target_ids[b, t] | tokens ≤ t) for every position: [batch, seq]. `hidden` may
    /// be in the device's memory; ONNX Runtime returns the NLL in host memory (its default for
    /// outputs not bound), the only transfer back per mask.
    pub fn token_nll(
        &mut self,
        hidden: &HiddenState,
        target_ids: &Array2<i64>,
    ) -> Result<Array2<f32>, RuntimeError> {
        let started = Instant::now();
        let path = self.paths.head.clone();
        let targets = TensorRef::from_array_view(target_ids).map_err(onnx_error(&path))?;
        let outputs = run_to_host(
            &mut self.head,
            ort::inputs![hidden, targets],
            self.head_runs.as_ref(),
        )
        .map_err(onnx_error(&path))?;
        let nll = nll_matrix(outputs, path, target_ids.dim());
        self.tally.head.record(started);
        nll
    }

    /// [`Self::token_nll`] on hidden states held as an f32 array (e.g. only the positions
    /// that are scored, gathered from a longer state), for fp32 models.
    pub fn token_nll_of_array(
        &mut self,
        hidden: &Array3<f32>,
        target_ids: &Array2<i64>,
    ) -> Result<Array2<f32>, RuntimeError> {
        let started = Instant::now();
        let path = self.paths.head.clone();
        let state = TensorRef::from_array_view(hidden).map_err(onnx_error(&path))?;
        let targets = TensorRef::from_array_view(target_ids).map_err(onnx_error(&path))?;
        let outputs = run_to_host(
            &mut self.head,
            ort::inputs![state, targets],
            self.head_runs.as_ref(),
        )
        .map_err(onnx_error(&path))?;
        let nll = nll_matrix(outputs, path, target_ids.dim());
        self.tally.head.record(started);
        nll
    }

    /// Logits [batch, seq, vocab] through the `head_logits` graph (loaded on first use).
    pub fn logits(&mut self, hidden: &HiddenState) -> Result<Array3<f32>, RuntimeError> {
        let rows_and_positions = match dims(hidden) {
            [batch, seq_len, _] => (*batch as usize, *seq_len as usize),
            _ => (0, 0),
        };
        let vocab_size = self.manifest.vocab_size;
        // Opening the session on first use is not a run.
        let (session, run_options, path) = self.logits_session()?;
        let started = Instant::now();
        let outputs =
            run_to_host(session, ort::inputs![hidden], run_options).map_err(onnx_error(&path))?;
        let logits = logits_array(outputs, path, rows_and_positions, vocab_size);
        self.tally.head.record(started);
        logits
    }

    /// [`Self::logits`] of hidden states held as an f32 array (fp32 models).
    pub fn logits_of_array(&mut self, hidden: &Array3<f32>) -> Result<Array3<f32>, RuntimeError> {
        let (batch, seq_len, _) = hidden.dim();
        let vocab_size = self.manifest.vocab_size;
        // Opening the session on first use is not a run.
        let (session, run_options, path) = self.logits_session()?;
        let started = Instant::now();
        let state = TensorRef::from_array_view(hidden).map_err(onnx_error(&path))?;
        let outputs =
            run_to_host(session, ort::inputs![state], run_options).map_err(onnx_error(&path))?;
        let logits = logits_array(outputs, path, (batch, seq_len), vocab_size);
        self.tally.head.record(started);
        logits
    }

    /// The `head_logits` session (opened on first use), its run options and its path.
    fn logits_session(
        &mut self,
    ) -> Result<(&mut Session, Option<&RunOptions>, PathBuf), RuntimeError> {
        let path = self.paths.head_logits.clone().ok_or_else(|| {
            RuntimeError::BadInput(format!(
                "{}: the manifest has no head_logits graph",
                self.dir.display()
            ))
        })?;
        if self.head_logits.is_none() {
            let session = open_session(&path, &self.options, false)?;
            check_hidden_width(&self.manifest, &self.dir, &session, &path, false)?;
            if let Some(graph) = &self.manifest.head_logits {
                check_tensor_names(&self.dir, "head_logits", graph, &session, &path)?;
            }
            if let Some(width) = session
                .outputs()
                .first()
                .and_then(|o| fixed_width(o.dtype()))
            {
                if width as u64 != self.manifest.vocab_size as u64 {
                    return Err(RuntimeError::BadInput(format!(
                        "{}: vocab_size is {}, but {} gives logits of width {width}",
                        self.dir.join(crate::manifest::MANIFEST_FILE).display(),
                        self.manifest.vocab_size,
                        path.display()
                    )));
                }
            }
            self.head_logits = Some(session);
        }
        let Some(session) = self.head_logits.as_mut() else {
            unreachable!("head_logits was just opened")
        };
        Ok((session, self.head_runs.as_ref(), path))
    }

    /// Hidden states as f32 [batch, seq, hidden], copied from the device when they are there
    /// (fp16 and bf16 states widened: block statistics of a reduced-precision export are of
    /// its own states, accumulated in f64 as an fp32 export's are).
    pub fn hidden_to_array(&self, hidden: &HiddenState) -> Result<Array3<f32>, RuntimeError> {
        let hidden = on_host(hidden)?;
        let not_read = |e: ort::Error| {
            RuntimeError::BadInput(format!(
                "{}: hidden states of dtype {} cannot be read ({})",
                self.dir.display(),
                self.manifest.dtype,
                e.message()
            ))
        };
        let array = match self.state_type() {
            TensorElementType::Float16 => hidden
                .try_extract_array::<half::f16>()
                .map_err(not_read)?
                .mapv(f32::from),
            TensorElementType::Bfloat16 => hidden
                .try_extract_array::<half::bf16>()
                .map_err(not_read)?
                .mapv(f32::from),
            _ => hidden
                .try_extract_array::<f32>()
                .map_err(not_read)?
                .to_owned(),
        };
        array
            .into_dimensionality::<ndarray::Ix3>()
            .map_err(|e| RuntimeError::BadInput(format!("hidden states have the wrong rank: {e}")))
    }

    /// The element type of the hidden states between graphs (the manifest's `dtype`).
    fn state_type(&self) -> TensorElementType {
        match self.manifest.dtype.as_str() {
            "float16" => TensorElementType::Float16,
            "bfloat16" => TensorElementType::Bfloat16,
            _ => TensorElementType::Float32,
        }
    }

    /// Bytes one hidden state of `batch` × `seq_len` takes.
    pub fn state_bytes(&self, batch: usize, seq_len: usize) -> usize {
        let element = self.state_type().byte_size(1).unwrap_or(4);
        // Saturating: the manifest's sizes are bounded, but a caller's batch need not be.
        batch
            .saturating_mul(seq_len)
            .saturating_mul(self.manifest.hidden_size)
            .saturating_mul(element)
            .max(1)
    }
}

/// The dimensions of a tensor (none for another kind of value).
fn dims(value: &HiddenState) -> &[i64] {
    match value.dtype() {
        ort::value::ValueType::Tensor { shape, .. } => shape,
        _ => &[],
    }
}

/// Refuses a graph's output (`what`) whose shape is not `expected`: the evaluator reads an
/// output by its position (a window's NLL by its row, a mask's states by their slice of the
/// batch), so one of another shape — a graph with dynamic axes that computes something else,
/// which opening it cannot tell — would give rows to the wrong windows, panic, or fail in a
/// later graph named instead of this one.
fn check_output_shape(
    path: &Path,
    what: &str,
    got: &[i64],
    expected: &[i64],
) -> Result<(), RuntimeError> {
    if got == expected {
        return Ok(());
    }
    Err(RuntimeError::BadInput(format!(
        "{}: its {what} have shape {got:?} where {expected:?} was expected; the graph does \
         not compute what its manifest.json says (damaged, or exported for another model?)",
        path.display()
    )))
}

/// The logits head's [batch, seq, vocab] output, for hidden states of `batch` × `seq` rows.
fn logits_array(
    outputs: ort::session::SessionOutputs<'_>,
    path: PathBuf,
    (batch, seq_len): (usize, usize),
    vocab_size: usize,
) -> Result<Array3<f32>, RuntimeError> {
    let logits = first_output(outputs, &path)?;
    let expected = [batch, seq_len, vocab_size].map(|d| d as i64);
    check_output_shape(&path, "logits", dims(&logits), &expected)?;
    let view = logits
        .try_extract_array::<f32>()
        .map_err(onnx_error(&path))?;
    view.into_dimensionality::<ndarray::Ix3>()
        .map(|v| v.to_owned())
        .map_err(|e| RuntimeError::Onnx {
            path,
            message: format!("logits output has the wrong rank: {e}"),
        })
}

/// The head's [batch, seq] NLL output, one per target of `targets` (its dimensions).
fn nll_matrix(
    outputs: ort::session::SessionOutputs<'_>,
    path: PathBuf,
    targets: (usize, usize),
) -> Result<Array2<f32>, RuntimeError> {
    let nll = first_output(outputs, &path)?;
    let expected = [targets.0, targets.1].map(|d| d as i64);
    check_output_shape(&path, "token NLLs", dims(&nll), &expected)?;
    let view = nll.try_extract_array::<f32>().map_err(onnx_error(&path))?;
    view.into_dimensionality::<ndarray::Ix2>()
        .map(|v| v.to_owned())
        .map_err(|e| RuntimeError::Onnx {
            path,
            message: format!("nll output has the wrong rank: {e}"),
        })
}

/// The error for a loss that came out NaN or infinite (`what`: which mask and value) in the
/// model folder `dir` of `dtype`: the model or its export is broken for it, or, in a float16
/// folder, its activations passed float16's largest value (65504) on this text, which Gemma 3
/// 270M's do on ordinary text (docs/model-format.md, "The export check").
pub(crate) fn non_finite_loss(dir: &Path, dtype: &str, what: String) -> RuntimeError {
    let hint = if dtype == "float16" {
        "; this folder is float16, whose largest value is 65504: a model whose activations pass \
         it on this text (Gemma 3 does) overflows, so export it in bf16 (for a GPU) or fp32 \
         instead"
    } else {
        ""
    };
    RuntimeError::BadInput(format!(
        "{}: {what} (NaN or infinite); the model or its export is broken for this mask{hint}",
        dir.display()
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hidden::{copy_to_host, OnHost};

    /// The fixture's manifest in an empty folder, changed by `change`.
    fn folder_with(change: impl FnOnce(&mut serde_json::Value)) -> tempfile::TempDir {
        let fixture = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../data/fixtures/tiny-llama")
            .join(crate::manifest::MANIFEST_FILE);
        let mut manifest: serde_json::Value =
            serde_json::from_slice(&std::fs::read(fixture).unwrap()).unwrap();
        change(&mut manifest);
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join(crate::manifest::MANIFEST_FILE),
            serde_json::to_vec(&manifest).unwrap(),
        )
        .unwrap();
        dir
    }

    #[test]
    fn a_copy_to_the_host_holds_the_same_state() {
        // On a GPU `on_host` copies bound states this way; here the copy goes host to host,
        // through the same Identity-graph machinery, inside this process's one environment.
        let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../data/fixtures/tiny-llama");
        let mut model = LayeredModel::open(&fixture, &RuntimeOptions::default()).unwrap();
        let ids = Array2::from_shape_fn((2, 5), |(b, t)| (b * 7 + t * 3) as i64);
        let embedded = model.embed(&ids).unwrap();
        let state = model.run_block(0, &embedded).unwrap();
        let copy = copy_to_host(&state).unwrap();
        assert_eq!(
            model.hidden_to_array(&copy).unwrap(),
            model.hidden_to_array(&state).unwrap()
        );
        assert!(matches!(on_host(&state).unwrap(), OnHost::Borrowed(_)));
    }

    /// Graphs are opened several at a time, but the sessions come back in the manifest's order
    /// and, of two broken graphs, the first in that order is the one named.
    #[test]
    fn sessions_opened_together_keep_their_order_and_the_first_error() {
        let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../data/fixtures/tiny-llama");
        let options = RuntimeOptions {
            verify_hashes: false,
            ..RuntimeOptions::default()
        };
        let mut model = LayeredModel::open(&fixture, &options).unwrap();
        let ids = Array2::from_shape_fn((1, 4), |(_, t)| t as i64 + 5);
        let embedded = model.embed(&ids).unwrap();
        // Each block's session is the block's own: block i's output differs from block j's.
        let outputs: Vec<_> = (0..model.num_blocks())
            .map(|i| {
                let state = model.run_block(i, &embedded).unwrap();
                model.hidden_to_array(&state).unwrap()
            })
            .collect();
        // Opened again (the workers take the graphs in another interleaving), every block
        // still runs its own graph.
        let mut reopened = LayeredModel::open(&fixture, &options).unwrap();
        for (i, expected) in outputs.iter().enumerate() {
            let state = reopened.run_block(i, &embedded).unwrap();
            assert_eq!(
                &reopened.hidden_to_array(&state).unwrap(),
                expected,
                "block {i}"
            );
        }
        assert_ne!(outputs[0], outputs[1]);

        let dir = tempfile::tempdir().unwrap();
        layerprune_tests::copy_dir(&fixture, dir.path());
        for block in ["block_004.onnx", "block_001.onnx"] {
            std::fs::write(dir.path().join(block), b"\x08\x07 not a graph").unwrap();
        }
        let Err(error) = LayeredModel::open(dir.path(), &options) else {
            panic!("opened");
        };
        assert!(error.to_string().contains("block_001.onnx"), "{error}");
    }

    /// A manifest whose `hidden_size` disagrees with the graphs is refused when the model
    /// opens, naming the manifest and the graph.
    #[test]
    fn a_manifest_that_does_not_describe_its_graphs_is_refused() {
        let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../data/fixtures/tiny-llama");
        let dir = tempfile::tempdir().unwrap();
        layerprune_tests::copy_dir(&fixture, dir.path());
        let manifest = dir.path().join(crate::manifest::MANIFEST_FILE);
        let mut value: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&manifest).unwrap()).unwrap();
        value["hidden_size"] = 32.into();
        std::fs::write(&manifest, serde_json::to_vec(&value).unwrap()).unwrap();
        let options = RuntimeOptions {
            verify_hashes: false,
            ..RuntimeOptions::default()
        };
        let Err(error) = LayeredModel::open(dir.path(), &options) else {
            panic!("opened");
        };
        let message = error.to_string();
        assert!(
            message.contains("hidden_size is 32, but")
                && message.contains("embed.onnx has hidden states of width 64")
                && message.contains("manifest.json"),
            "{message}"
        );
    }

    /// A tensor name the manifest gives that its graph does not have is refused when the
    /// model (or, for `head_logits`, its logits head) opens, naming manifest.json, the field,
    /// the graph and the name it has.
    #[test]
    fn a_tensor_name_the_graph_lacks_is_refused() {
        let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../data/fixtures/tiny-llama");
        let options = RuntimeOptions {
            verify_hashes: false,
            ..RuntimeOptions::default()
        };
        type Change = Box<dyn Fn(&mut serde_json::Value)>;
        let cases: [(Change, &str); 5] = [
            (
                Box::new(|m| m["embedding"]["input"] = "zzz".into()),
                "embedding.input is \"zzz\", but",
            ),
            (
                Box::new(|m| m["embedding"]["output"] = "zzz".into()),
                "embedding.output is \"zzz\", but",
            ),
            (
                Box::new(|m| m["head"]["output"] = "zzz".into()),
                "head.output is \"zzz\", but",
            ),
            (
                Box::new(|m| {
                    m["head"]["inputs"] = serde_json::json!(["target_ids", "hidden_states"])
                }),
                "head.inputs is [\"target_ids\", \"hidden_states\"], but",
            ),
            (
                Box::new(|m| m["head_logits"]["output"] = "zzz".into()),
                "head_logits.output is \"zzz\", but",
            ),
        ];
        for (change, expected) in cases {
            let dir = tempfile::tempdir().unwrap();
            layerprune_tests::copy_dir(&fixture, dir.path());
            let path = dir.path().join(crate::manifest::MANIFEST_FILE);
            let mut manifest: serde_json::Value =
                serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
            change(&mut manifest);
            std::fs::write(&path, serde_json::to_vec(&manifest).unwrap()).unwrap();
            let error = match LayeredModel::open(dir.path(), &options) {
                Err(error) => error,
                Ok(mut model) => {
                    let hidden = model.embed(&Array2::from_elem((1, 4), 5)).unwrap();
                    model.logits(&hidden).expect_err(expected)
                }
            };
            let message = error.to_string();
            assert!(
                message.starts_with(&path.display().to_string())
                    && message.contains(expected)
                    && message.contains("the manifest does not describe its graphs"),
                "{message}"
            );
        }
        // The fixture's own names are its graphs'.
        let mut model = LayeredModel::open(&fixture, &options).unwrap();
        let hidden = model.embed(&Array2::from_elem((1, 4), 5)).unwrap();
        model.logits(&hidden).unwrap();
    }

    #[test]
    fn hostile_manifests_are_refused_before_any_graph_is_opened() {
        let options = RuntimeOptions {
            verify_hashes: false,
            ..RuntimeOptions::default()
        };
        for (change, expected) in [
            (
                Box::new(|m: &mut serde_json::Value| m["files"]["/etc/passwd"] = "00".into())
                    as Box<dyn FnOnce(&mut serde_json::Value)>,
                "entry \"/etc/passwd\" is an absolute path",
            ),
            (
                Box::new(|m: &mut serde_json::Value| m["head"]["file"] = "../head.onnx".into()),
                "entry \"../head.onnx\" has a `..` component",
            ),
            (
                Box::new(|m: &mut serde_json::Value| m["format_version"] = 99.into()),
                "format_version 99 is not supported",
            ),
            (
                Box::new(|m: &mut serde_json::Value| m["hidden_size"] = (1u64 << 63).into()),
                "hidden_size 9223372036854775808 × vocab_size 320 is more than",
            ),
        ] {
            let dir = folder_with(change);
            let Err(error) = LayeredModel::open(dir.path(), &options) else {
                panic!("{expected}: opened");
            };
            let message = error.to_string();
            assert!(message.contains(expected), "{message}");
            assert!(
                matches!(
                    error,
                    RuntimeError::Model(layerprune_model::ModelError::BadManifest { .. })
                ),
                "{error:?}"
            );
        }
    }

    #[test]
    fn a_non_finite_loss_in_a_float16_folder_says_why_and_what_to_export() {
        let dir = Path::new("models/gemma3-fp16");
        let half = non_finite_loss(dir, "float16", "mask 1111: the loss is NaN".into()).to_string();
        assert!(
            half.starts_with("models/gemma3-fp16: mask 1111: the loss is NaN (NaN or infinite)"),
            "{half}"
        );
        assert!(half.contains("65504") && half.contains("bf16"), "{half}");
        for dtype in ["float32", "bfloat16"] {
            let other =
                non_finite_loss(dir, dtype, "mask 1111: the loss is inf".into()).to_string();
            assert!(
                other.ends_with("the model or its export is broken for this mask"),
                "{other}"
            );
        }
    }
}
