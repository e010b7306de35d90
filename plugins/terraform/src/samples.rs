//! Real Terraform JSON written by the golden-image example
//! (`examples/golden-image/infrastructure/testdata`), for the parsers' tests.

use std::path::PathBuf;

/// Every `<prefix>*.json` sample, with its file name; there must be some.
pub fn golden_image(prefix: &str) -> Vec<(String, String)> {
    let dir = PathBuf::from(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../examples/golden-image/infrastructure/testdata"
    ));
    let mut samples: Vec<(String, String)> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|entry| entry.unwrap().path())
        .filter_map(|path| {
            let name = path.file_name()?.to_string_lossy().into_owned();
            (name.starts_with(prefix) && name.ends_with(".json"))
                .then(|| (name, std::fs::read_to_string(&path).unwrap()))
        })
        .collect();
    samples.sort();
    assert!(
        !samples.is_empty(),
        "no {prefix}*.json in {}",
        dir.display()
    );
    samples
}
