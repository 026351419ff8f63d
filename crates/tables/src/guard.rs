//! Structural checks of a Parquet file made before the `parquet` crate decodes it, so that a
//! corrupted file is refused with an error instead of hanging or panicking the reader.
//!
//! Why: parquet 60.1 parses page headers with a Thrift skipper that trusts the sizes it reads.
//! A corrupted header announcing, say, a list of 2^31 doubles in an unknown field makes it
//! "skip" past the end of the file 2^31 times; each skip at end of file reads zero bytes and
//! succeeds, so the reader spins for hours. A list of 2^31 booleans costs no bytes
//! per element and spins too. Corrupted column offsets or sizes make it panic instead.
//!
//! The checks here need no clock. From the footer: the file starts and ends with `PAR1`, the
//! footer length fits, and the footer is well-formed compact Thrift in which every list, set,
//! map and binary announces no more elements or bytes than remain. Then: the file's row count
//! is the sum of its row groups' (the reader sizes its batches by it: a footer saying 0 rows
//! read as an empty table); and for every column chunk: its byte range lies between the
//! leading magic and the footer; every page header in it is well-formed Thrift of the same
//! kind and lies inside the chunk; each page's compressed size fits in the chunk, its
//! uncompressed size is in `0..=MAX_PAGE_BYTES`, its value count is not negative; and the data
//! pages' value counts add up to the chunk's, which for a column that is not a list equals the
//! row group's number of rows. What remains (decoding inside a page) only ever walks bytes
//! that exist, and any panic left in the decoder is caught by the caller (`io.rs`).

use parquet::file::metadata::ParquetMetaData;

/// The largest uncompressed page accepted (256 MiB). The writer cuts pages at about 1 MiB;
/// this bound only stops a corrupted size from asking for an absurd allocation.
pub(crate) const MAX_PAGE_BYTES: i64 = 256 << 20;

/// Nesting depth of Thrift structures accepted (Parquet footers nest about 6 deep).
const MAX_DEPTH: u32 = 32;

const MAGIC: &[u8; 4] = b"PAR1";

/// The longest footer read before the file is (64 MiB; a table's footer is kilobytes).
const MAX_FOOTER_BYTES: u64 = 64 << 20;

/// Bytes a file may hold that its footer does not account for (neither column chunks nor
/// page indexes nor bloom filters) before it is refused unread.
const MAX_UNACCOUNTED_BYTES: u64 = 64 << 20;

/// The values (over every column chunk) a file of `len` bytes may announce:
/// `MIN_VALUES_ALLOWED + VALUES_PER_FILE_BYTE × len`. Run-length and dictionary encoding let a
/// page of a few dozen bytes announce 2^31 values, which the reader would decode into memory
/// (3 GB from a 5 KB file). A table's columns carry information (masks, NLLs, tokens), so a
/// real one holds about a value per byte or fewer (a token table compressed: ~0.7; an
/// evaluation table: ~0.1); the bound leaves room for long constant columns beside them.
const MIN_VALUES_ALLOWED: u64 = 1 << 24;
const VALUES_PER_FILE_BYTE: u64 = 64;

/// The footer's length from a file's first 4 bytes and last 8 (of `len`), checked: the magic at
/// both ends, and a footer that fits. The one frame check of [`check_ends`] and [`check_frame`].
fn footer_length(len: u64, head: &[u8], tail: &[u8]) -> Result<u64, String> {
    if len < 12 {
        return Err(format!(
            "the file has {len} bytes, too short for Parquet (at least 12)"
        ));
    }
    if head != MAGIC || &tail[4..] != MAGIC {
        return Err("the file does not start and end with the Parquet magic PAR1".into());
    }
    let footer_len = u64::from(u32::from_le_bytes([tail[0], tail[1], tail[2], tail[3]]));
    if footer_len > len - 12 {
        return Err(format!(
            "the footer claims {footer_len} bytes, the file has room for {}",
            len - 12
        ));
    }
    Ok(footer_len)
}

/// Checks that the footer is well-formed compact Thrift (bounded: see the module documentation).
fn check_footer_thrift(footer: &[u8]) -> Result<(), String> {
    Cursor::new(footer)
        .read_struct(0)
        .map(|_| ())
        .map_err(|e| format!("the footer is corrupted: {e}"))
}

/// [`check_frame`] on an open file, reading its first 4 bytes and its footer only (the file is
/// left at its start), then the footer decoded: every column chunk, page index and bloom filter
/// it places must lie in the file, and the file may hold little else. A large file that is no
/// Parquet (a 4 GB sparse file, a disk image, one with a made-up footer) is refused before it is
/// read into memory. `decode` decodes the footer (the caller contains its panics).
pub(crate) fn check_ends(
    file: &mut (impl std::io::Read + std::io::Seek),
    decode: impl FnOnce(&[u8]) -> Result<ParquetMetaData, String>,
) -> Result<(), String> {
    use std::io::SeekFrom;
    let io = |e: std::io::Error| format!("cannot read its ends: {e}");
    let len = file.seek(SeekFrom::End(0)).map_err(io)?;
    let mut head = [0u8; 4];
    let mut tail = [0u8; 8];
    if len >= 12 {
        file.seek(SeekFrom::Start(0)).map_err(io)?;
        file.read_exact(&mut head).map_err(io)?;
        file.seek(SeekFrom::End(-8)).map_err(io)?;
        file.read_exact(&mut tail).map_err(io)?;
    }
    let footer_len = footer_length(len, &head, &tail)?;
    if footer_len > MAX_FOOTER_BYTES {
        return Err(format!(
            "the footer claims {footer_len} bytes, more than the {MAX_FOOTER_BYTES} a table's \
             footer may have"
        ));
    }
    let mut footer = vec![0u8; footer_len as usize];
    file.seek(SeekFrom::Start(len - 8 - footer_len))
        .map_err(io)?;
    file.read_exact(&mut footer).map_err(io)?;
    file.seek(SeekFrom::Start(0)).map_err(io)?;
    check_footer_thrift(&footer)?;
    let metadata = decode(&footer)?;
    // The byte ranges the footer places (chunks, page indexes, bloom filters): each inside the
    // file, and together covering all but a little of it.
    let footer_start = len - 8 - footer_len;
    let mut ranges: Vec<(u64, u64)> = Vec::new();
    // Older writers (parquet-mr) give a bloom filter's offset but not its length: its bytes
    // cannot be counted, so the file is not held to the bound.
    let mut uncounted_parts = false;
    let values_allowed =
        MIN_VALUES_ALLOWED.saturating_add(VALUES_PER_FILE_BYTE.saturating_mul(len));
    let mut values: u64 = 0;
    for group in metadata.row_groups() {
        for chunk in group.columns() {
            values = values.saturating_add(u64::try_from(chunk.num_values()).unwrap_or(u64::MAX));
            if values > values_allowed {
                return Err(format!(
                    "the footer announces more than {values_allowed} values in a file of {len} \
                     bytes (at most {MIN_VALUES_ALLOWED} + {VALUES_PER_FILE_BYTE} a byte): more \
                     than a table of this size holds; refusing to decode it"
                ));
            }
            let start = chunk
                .dictionary_page_offset()
                .unwrap_or(chunk.data_page_offset());
            let parts = [
                (Some(start), Some(chunk.compressed_size())),
                (
                    chunk.column_index_offset(),
                    chunk.column_index_length().map(i64::from),
                ),
                (
                    chunk.offset_index_offset(),
                    chunk.offset_index_length().map(i64::from),
                ),
                (
                    chunk.bloom_filter_offset(),
                    chunk.bloom_filter_length().map(i64::from),
                ),
            ];
            uncounted_parts |=
                chunk.bloom_filter_offset().is_some() && chunk.bloom_filter_length().is_none();
            for (offset, length) in parts {
                if let (Some(offset), Some(length)) = (offset, length) {
                    match offset.checked_add(length) {
                        Some(end) if offset >= 0 && length >= 0 && end as u64 <= footer_start => {
                            ranges.push((offset as u64, end as u64));
                        }
                        _ => {
                            return Err(format!(
                                "the footer places {length} bytes at offset {offset}, outside \
                                 the file's {footer_start} bytes before the footer"
                            ))
                        }
                    }
                }
            }
        }
    }
    let unaccounted = (footer_start - 4).saturating_sub(covered_bytes(ranges));
    if !uncounted_parts && unaccounted > MAX_UNACCOUNTED_BYTES {
        return Err(format!(
            "{unaccounted} bytes of the file are in no column chunk, page index or bloom filter \
             of its footer"
        ));
    }
    Ok(())
}

/// The bytes after the leading magic that `ranges` (start, end) cover, counted once where they
/// overlap.
fn covered_bytes(mut ranges: Vec<(u64, u64)>) -> u64 {
    ranges.sort_unstable();
    let (mut covered, mut reach) = (0u64, 4u64);
    for (start, end) in ranges {
        let start = start.max(reach);
        if end > start {
            covered += end - start;
            reach = end;
        }
    }
    covered
}

/// Checks the magic bytes and the footer's Thrift encoding; returns where the footer starts.
pub(crate) fn check_frame(bytes: &[u8]) -> Result<usize, String> {
    let len = bytes.len();
    let (head, tail) = if len >= 12 {
        (&bytes[..4], &bytes[len - 8..])
    } else {
        (&[][..], &[0u8; 8][..])
    };
    let footer_len = footer_length(len as u64, head, tail)? as usize;
    let footer_start = len - 8 - footer_len;
    check_footer_thrift(&bytes[footer_start..len - 8])?;
    Ok(footer_start)
}

/// Checks every column chunk's byte range and page headers against the file and the footer.
pub(crate) fn check_chunks(
    bytes: &[u8],
    footer_start: usize,
    metadata: &ParquetMetaData,
) -> Result<(), String> {
    // The reader sizes its batches by the file's row count, not the row groups': a footer
    // saying 0 rows made a table of any size read as empty, with no error.
    let declared = metadata.file_metadata().num_rows();
    let held = metadata
        .row_groups()
        .iter()
        .try_fold(0_i64, |total, group| total.checked_add(group.num_rows()));
    if held != Some(declared) {
        return Err(format!(
            "the footer says the file has {declared} rows, its row groups hold {}",
            held.map_or("more than 2^63".to_string(), |rows| rows.to_string())
        ));
    }
    for (g, group) in metadata.row_groups().iter().enumerate() {
        let num_rows = group.num_rows();
        if num_rows < 0 {
            return Err(format!("row group {g} has {num_rows} rows"));
        }
        for (c, chunk) in group.columns().iter().enumerate() {
            let name = chunk.column_descr().path().string();
            let at = |message: String| format!("row group {g}, column {c} ({name}): {message}");
            let num_values = chunk.num_values();
            let flat = chunk.column_descr().max_rep_level() == 0;
            if num_values < 0 || (flat && num_values != num_rows) || num_values < num_rows {
                return Err(at(format!(
                    "{num_values} values for {num_rows} rows in the row group"
                )));
            }
            let length = chunk.compressed_size();
            // A chunk of no values (a table of no rows, as pyarrow writes it) may have no data
            // page, and then a data page offset of 0; with no bytes at all there is nothing to
            // read.
            let empty = num_values == 0;
            if empty && length == 0 {
                continue;
            }
            let start = chunk
                .dictionary_page_offset()
                .unwrap_or(chunk.data_page_offset());
            let in_file = |offset: i64| offset >= 4 && offset as u64 <= footer_start as u64;
            let end = start.checked_add(length).filter(|_| length >= 0);
            let inside = match end {
                Some(end) => {
                    in_file(start)
                        && in_file(end)
                        && (in_file(chunk.data_page_offset())
                            || (empty && chunk.data_page_offset() == 0))
                }
                None => false,
            };
            let Some(end) = end.filter(|_| inside) else {
                return Err(at(format!(
                    "byte range {start} + {length} (data from {}) is not inside the file's \
                     data (bytes 4..{footer_start})",
                    chunk.data_page_offset()
                )));
            };
            check_pages(&bytes[start as usize..end as usize], num_values)
                .map_err(|e| at(format!("{e} (chunk at byte {start})")))?;
        }
    }
    Ok(())
}

/// Walks the pages of one column chunk (`chunk` = its bytes).
fn check_pages(chunk: &[u8], num_values: i64) -> Result<(), String> {
    let mut position = 0;
    let mut values = 0_i64;
    let mut page = 0;
    let mut dictionary_seen = false;
    while position < chunk.len() {
        let mut cursor = Cursor::new(&chunk[position..]);
        let header = cursor
            .read_struct(0)
            .map_err(|e| format!("page {page}: corrupted page header: {e}"))?;
        position += cursor.position;
        let required = |id: i16, what: &str| {
            header
                .int(id)
                .ok_or_else(|| format!("page {page}: the page header has no {what}"))
        };
        let kind = required(1, "page type")?;
        let uncompressed = required(2, "uncompressed size")?;
        let compressed = required(3, "compressed size")?;
        let room = (chunk.len() - position) as i64;
        if !(0..=room).contains(&compressed) {
            return Err(format!(
                "page {page}: compressed size {compressed} does not fit in the {room} bytes left \
                 in the column chunk"
            ));
        }
        if !(0..=MAX_PAGE_BYTES).contains(&uncompressed) {
            return Err(format!(
                "page {page}: uncompressed size {uncompressed} is outside 0..={MAX_PAGE_BYTES}"
            ));
        }
        let header_of = |id: i16| {
            header
                .structure(id)
                .ok_or_else(|| format!("page {page}: the page header has no header for its type"))
        };
        let count = |sub: &Fields| -> Result<i64, String> {
            match sub.int(1) {
                Some(count) if (0..=i64::from(i32::MAX)).contains(&count) => Ok(count),
                Some(count) => Err(format!("page {page}: value count {count} is out of range")),
                None => Err(format!("page {page}: the page header has no value count")),
            }
        };
        // A dictionary-encoded data page (PLAIN_DICTIONARY = 2, RLE_DICTIONARY = 8) needs
        // the dictionary page before it (the decoder panics otherwise).
        let needs_dictionary = |encoding: Option<i64>| {
            if matches!(encoding, Some(2 | 8)) && !dictionary_seen {
                Err(format!(
                    "page {page}: dictionary-encoded data page without a dictionary page before it"
                ))
            } else {
                Ok(())
            }
        };
        match kind {
            // DATA_PAGE
            0 => {
                let sub = header_of(5)?;
                values += count(sub)?;
                needs_dictionary(sub.int(2))?;
            }
            // DATA_PAGE_V2: the level bytes lie inside the page too.
            3 => {
                let sub = header_of(8)?;
                values += count(sub)?;
                needs_dictionary(sub.int(4))?;
                let (definition, repetition) = (sub.int(5).unwrap_or(0), sub.int(6).unwrap_or(0));
                if definition < 0
                    || repetition < 0
                    || definition.saturating_add(repetition) > compressed
                {
                    return Err(format!(
                        "page {page}: level lengths do not fit in the page's {compressed} bytes"
                    ));
                }
            }
            // DICTIONARY_PAGE: every entry takes at least one byte.
            2 => {
                let entries = count(header_of(7)?)?;
                dictionary_seen = true;
                if entries > uncompressed {
                    return Err(format!(
                        "page {page}: {entries} dictionary entries in {uncompressed} bytes"
                    ));
                }
            }
            // INDEX_PAGE: skipped by readers.
            1 => {}
            other => return Err(format!("page {page}: unknown page type {other}")),
        }
        if values > num_values {
            return Err(format!(
                "the pages hold more values than the chunk's {num_values}"
            ));
        }
        position += compressed as usize;
        page += 1;
    }
    if values != num_values {
        return Err(format!(
            "the pages hold {values} values, the footer says {num_values}"
        ));
    }
    Ok(())
}

/// The integer and structure fields of a Thrift structure, by field id (others are checked
/// and dropped).
#[derive(Debug, Default)]
struct Fields {
    ints: Vec<(i16, i64)>,
    structs: Vec<(i16, Fields)>,
}

impl Fields {
    fn int(&self, id: i16) -> Option<i64> {
        self.ints.iter().find(|(i, _)| *i == id).map(|(_, v)| *v)
    }

    fn structure(&self, id: i16) -> Option<&Fields> {
        self.structs.iter().find(|(i, _)| *i == id).map(|(_, s)| s)
    }
}

/// A reader of the Thrift compact protocol over a byte slice that never reads past the slice
/// and never believes a count larger than the bytes left to hold it.
struct Cursor<'a> {
    bytes: &'a [u8],
    position: usize,
}

impl<'a> Cursor<'a> {
    fn new(bytes: &'a [u8]) -> Self {
        Cursor { bytes, position: 0 }
    }

    fn remaining(&self) -> usize {
        self.bytes.len() - self.position
    }

    fn byte(&mut self) -> Result<u8, String> {
        let byte = *self
            .bytes
            .get(self.position)
            .ok_or_else(|| format!("ends early at byte {}", self.position))?;
        self.position += 1;
        Ok(byte)
    }

    fn skip(&mut self, n: u64) -> Result<(), String> {
        if n > self.remaining() as u64 {
            return Err(format!(
                "{n} bytes announced at byte {} but only {} remain",
                self.position,
                self.remaining()
            ));
        }
        self.position += n as usize;
        Ok(())
    }

    fn varint(&mut self) -> Result<u64, String> {
        let mut value = 0_u64;
        for shift in (0..70).step_by(7) {
            let byte = self.byte()?;
            value |= u64::from(byte & 0x7f).checked_shl(shift).unwrap_or(0);
            if byte & 0x80 == 0 {
                return Ok(value);
            }
        }
        Err(format!(
            "varint longer than 10 bytes at byte {}",
            self.position
        ))
    }

    fn zigzag(&mut self) -> Result<i64, String> {
        let raw = self.varint()?;
        Ok((raw >> 1) as i64 ^ -((raw & 1) as i64))
    }

    /// A count of elements, each at least `min_bytes` long, that must fit in what remains.
    fn count(&mut self, raw: u64, min_bytes: u64) -> Result<u64, String> {
        if raw > i32::MAX as u64 || raw.saturating_mul(min_bytes) > self.remaining() as u64 {
            return Err(format!(
                "{raw} elements announced at byte {} but only {} bytes remain",
                self.position,
                self.remaining()
            ));
        }
        Ok(raw)
    }

    /// One value of compact type `kind`; returns its integer value for integer types.
    fn value(
        &mut self,
        kind: u8,
        depth: u32,
        fields: Option<&mut Fields>,
        id: i16,
    ) -> Result<(), String> {
        match kind {
            // Booleans as struct fields: the value is the type.
            1 | 2 => Ok(()),
            3 => self.skip(1),
            4..=6 => {
                let value = self.zigzag()?;
                if let Some(fields) = fields {
                    fields.ints.push((id, value));
                }
                Ok(())
            }
            7 => self.skip(8),
            8 => {
                let len = self.varint()?;
                self.skip(len)
            }
            9 | 10 => {
                let header = self.byte()?;
                let element = header & 0x0f;
                let raw = match header >> 4 {
                    15 => self.varint()?,
                    n => u64::from(n),
                };
                if raw == 0 {
                    return Ok(());
                }
                let size = self.count(raw, 1)?;
                for _ in 0..size {
                    self.element(element, depth + 1)?;
                }
                Ok(())
            }
            11 => {
                let raw = self.varint()?;
                if raw == 0 {
                    return Ok(());
                }
                let size = self.count(raw, 2)?;
                let types = self.byte()?;
                for _ in 0..size {
                    self.element(types >> 4, depth + 1)?;
                    self.element(types & 0x0f, depth + 1)?;
                }
                Ok(())
            }
            12 => {
                let inner = self.read_struct(depth + 1)?;
                if let Some(fields) = fields {
                    fields.structs.push((id, inner));
                }
                Ok(())
            }
            13 => self.skip(16),
            other => Err(format!(
                "invalid Thrift type {other} at byte {}",
                self.position
            )),
        }
    }

    /// An element of a list, set or map: booleans take one byte there. Its depth is checked
    /// here too, not only at structures: lists of lists nest without a structure between them
    /// (100,000 levels in a 100 KB footer overflowed the stack).
    fn element(&mut self, kind: u8, depth: u32) -> Result<(), String> {
        if depth > MAX_DEPTH {
            return Err(format!(
                "nested deeper than {MAX_DEPTH} at byte {}",
                self.position
            ));
        }
        match kind {
            1 | 2 => self.skip(1),
            _ => self.value(kind, depth, None, 0),
        }
    }

    /// A structure up to its stop byte, keeping its integer and structure fields.
    fn read_struct(&mut self, depth: u32) -> Result<Fields, String> {
        if depth > MAX_DEPTH {
            return Err(format!(
                "nested deeper than {MAX_DEPTH} at byte {}",
                self.position
            ));
        }
        let mut fields = Fields::default();
        let mut last_id: i16 = 0;
        loop {
            let header = self.byte()?;
            if header == 0 {
                return Ok(fields);
            }
            let kind = header & 0x0f;
            let id = match header >> 4 {
                0 => i16::try_from(self.zigzag()?)
                    .map_err(|_| format!("field id out of range at byte {}", self.position))?,
                delta => last_id
                    .checked_add(i16::from(delta))
                    .ok_or_else(|| format!("field id out of range at byte {}", self.position))?,
            };
            last_id = id;
            self.value(kind, depth, Some(&mut fields), id)?;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{check_footer_thrift, covered_bytes};

    #[test]
    fn lists_nested_past_the_depth_bound_are_refused_without_recursing_further() {
        // A structure whose field 1 is a list of one list of one list ...: 0x19 is both the
        // field header (delta 1, list) and the list header (one element, a list).
        for levels in [40usize, 100_001] {
            let mut footer = vec![0x19u8; levels];
            footer.extend([0x09, 0x00]);
            let error = check_footer_thrift(&footer).unwrap_err();
            assert!(error.contains("nested deeper than 32"), "{error}");
        }
        // Ten levels are fine (the innermost list is empty).
        let mut footer = vec![0x19u8; 10];
        footer.extend([0x09, 0x00]);
        let _ = check_footer_thrift(&footer);
    }

    #[test]
    fn covered_bytes_count_overlaps_once_and_gaps_not_at_all() {
        // Chunks 4..100 and 90..200 overlap by 10; a page index 1000..1100 leaves a gap.
        assert_eq!(covered_bytes(vec![(1000, 1100), (90, 200), (4, 100)]), 296);
        // A range inside another adds nothing; none covers nothing.
        assert_eq!(covered_bytes(vec![(4, 500), (10, 20)]), 496);
        assert_eq!(covered_bytes(Vec::new()), 0);
    }
}
