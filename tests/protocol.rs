//! The committed JSON Schemas are generated from the Rust protocol types.
//! Regenerate with `NARRALYTICA_UPDATE_SCHEMAS=1 cargo test --release protocol`.

use std::path::Path;

#[test]
fn committed_schemas_match_the_rust_types() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/schemas");
    let update = std::env::var_os("NARRALYTICA_UPDATE_SCHEMAS").is_some();
    let mut stale = Vec::new();
    for (file, schema) in orchestrator::protocol::schemas() {
        let text = serde_json::to_string_pretty(&schema).unwrap() + "\n";
        let path = dir.join(file);
        if update {
            std::fs::create_dir_all(&dir).unwrap();
            std::fs::write(&path, &text).unwrap();
        } else if std::fs::read_to_string(&path).ok().as_deref() != Some(text.as_str()) {
            stale.push(file);
        }
    }
    assert!(
        stale.is_empty(),
        "docs/schemas drifted from the protocol types: {stale:?}; regenerate with \
         NARRALYTICA_UPDATE_SCHEMAS=1 cargo test --release protocol and commit the result"
    );
}
