//! Builds the test guests (`tests/guests/*`) from source and hands their
//! paths to tests and benches as `*_WASM` variables.

use std::path::PathBuf;

/// Guests that only tests and benches load: (cargo package, artifact stem, env var).
const TEST_GUESTS: &[(&str, &str, &str)] = &[
    ("test-guest", "test_guest", "TEST_GUEST_WASM"),
    ("describe-panics", "describe_panics", "DESCRIBE_PANICS_WASM"),
    ("describe-spins", "describe_spins", "DESCRIBE_SPINS_WASM"),
    ("init-spins", "init_spins", "INIT_SPINS_WASM"),
    ("other-world", "other_world", "OTHER_WORLD_WASM"),
    ("contract-0-1", "contract_0_1", "CONTRACT_0_1_WASM"),
];

fn main() {
    let manifest_dir = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").expect("set by cargo"));
    let root = manifest_dir
        .parent()
        .expect("runtime/ sits in the workspace");
    let packages: Vec<&str> = TEST_GUESTS.iter().map(|(package, _, _)| *package).collect();
    let artifacts = build_guests::build(root, &packages);
    for (_, stem, var) in TEST_GUESTS {
        println!(
            "cargo:rustc-env={var}={}",
            build_guests::artifact(&artifacts, stem).display()
        );
    }
}
