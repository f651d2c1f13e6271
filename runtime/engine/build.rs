//! Builds the built-in plugins (`plugins/*`) from source and embeds them:
//! `$OUT_DIR/builtin.rs` holds each one's name, bytes and sha256 (computed
//! here, so a start does not hash megabytes to see they are installed).

use std::fmt::Write as _;
use std::path::PathBuf;

use sha2::{Digest, Sha256};

/// Built-in plugins: (name the workflow `uses:`, cargo package, artifact stem).
const BUILTINS: &[(&str, &str, &str)] = &[
    ("transform", "transform", "transform"),
    ("llm", "llm", "llm"),
    ("policy", "policy", "policy"),
    ("evaluation", "evaluation", "evaluation"),
];

fn main() {
    let manifest_dir = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").expect("set by cargo"));
    let root = manifest_dir
        .ancestors()
        .nth(2)
        .expect("runtime/engine sits in the workspace");
    let packages: Vec<&str> = BUILTINS.iter().map(|(_, package, _)| *package).collect();
    let artifacts = build_guests::build(root, &packages);

    let mut builtin_rs = String::from(
        "/// Built-in plugins compiled from `plugins/`: (name, component bytes,\n\
         /// sha256 of the bytes in lower-case hex).\n\
         pub static BUILTINS: &[(&str, &[u8], &str)] = &[\n",
    );
    for (name, _, stem) in BUILTINS {
        let wasm = build_guests::artifact(&artifacts, stem);
        let bytes = std::fs::read(&wasm).expect("the built component");
        let digest: String = Sha256::digest(&bytes)
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        writeln!(
            builtin_rs,
            "    ({name:?}, include_bytes!({:?}), {digest:?}),",
            wasm.display()
        )
        .expect("writing to a String");
    }
    builtin_rs.push_str("];\n");
    let out_dir = PathBuf::from(std::env::var("OUT_DIR").expect("set by cargo"));
    std::fs::write(out_dir.join("builtin.rs"), builtin_rs).expect("writing $OUT_DIR/builtin.rs");
}
