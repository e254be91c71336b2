//! Replays every committed corpus file through its target's harness on stable Rust, so the
//! inputs the fuzzers found keep passing without nightly or libFuzzer:
//! `cargo test --manifest-path fuzz/Cargo.toml --no-default-features`.

use std::path::Path;

#[test]
fn every_corpus_input_passes_its_harness() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("corpus");
    let mut total = 0;
    for (name, harness) in kept_fuzz::TARGETS {
        let dir = root.join(name);
        let mut files: Vec<_> = std::fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
            .map(|entry| entry.unwrap().path())
            .collect();
        files.sort();
        assert!(!files.is_empty(), "{}: no corpus", dir.display());
        for file in &files {
            let data = std::fs::read(file).unwrap();
            if std::panic::catch_unwind(|| harness(&data)).is_err() {
                panic!("{} fails its harness", file.display());
            }
        }
        total += files.len();
        println!("{name}: {} inputs", files.len());
    }
    println!(
        "fuzz corpora: {} targets, {total} inputs replayed",
        kept_fuzz::TARGETS.len()
    );
}
