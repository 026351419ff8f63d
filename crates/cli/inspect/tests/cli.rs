//! `inspect` on a table written by the tables crate, on JSON, and on a file of neither kind.

use layerprune_core::Design;
use std::process::Command;

use layerprune_core::Mask;
use layerprune_tables::{write_masks, MaskRow, MaskTable, Provenance};

fn inspect(args: &[&std::ffi::OsStr]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_inspect"))
        .args(args)
        .output()
        .unwrap()
}

#[test]
fn shows_kind_provenance_fields_schema_and_rows() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("masks.parquet");
    let table = MaskTable {
        num_blocks: 4,
        fixed_blocks: vec![0],
        rows: ["1011", "1100", "1111"]
            .iter()
            .map(|id| MaskRow {
                mask: id.parse::<Mask>().unwrap(),
                design: Design::Stratum,
                group_id: None,
                position: None,
            })
            .collect(),
    };
    let provenance = Provenance::new("sample-masks", "0.1.0", vec!["sample-masks".into()]);
    write_masks(&path, &table, &provenance.with_seed(7)).unwrap();

    let output = inspect(&[path.as_os_str(), "--rows".as_ref(), "2".as_ref()]);
    assert!(output.status.success());
    let text = String::from_utf8(output.stdout).unwrap();
    for expected in [
        "masks table, 3 rows",
        "tool             sample-masks",
        "seed             7",
        "fixed_blocks     [0]",
        "num_blocks       4",
        "design           Utf8",
        "1011\t1011\t1\tstratum",
        "1100\t1100\t2\tstratum",
    ] {
        assert!(
            text.contains(expected),
            "{expected:?} missing from:\n{text}"
        );
    }
    assert!(!text.contains("1111"), "only two rows asked for:\n{text}");

    let output = inspect(&[path.as_os_str(), "--json".as_ref()]);
    let json: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(json["rows"], 3);
    assert_eq!(json["metadata"]["table"], "masks");
    assert_eq!(json["metadata"]["fixed_blocks"], serde_json::json!([0]));

    let junk = dir.path().join("junk.bin");
    std::fs::write(&junk, b"\x00\x01 not a table").unwrap();
    let output = inspect(&[junk.as_os_str()]);
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("junk.bin"), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");

    // A usage error (a value out of its bounds) is told apart from a bad file by its status.
    let output = inspect(&[path.as_os_str(), "--rows".as_ref(), "70000".as_ref()]);
    assert_eq!(output.status.code(), Some(2));
}
