//! Does a component implement a version of the `executor` world this host runs?
//!
//! Checked before linking so the error says what the component is instead of
//! what the linker missed: which contract version it targets, or which
//! exports it has instead of `describe` and `execute`.

use wasmtime::Engine;
use wasmtime::component::Component;

/// Versions of `orchestrator:plugin` this host runs. Every released version
/// stays here.
pub const HOSTED_VERSIONS: &[&str] = &["0.1.0", "0.2.0"];

const PACKAGE: &str = "orchestrator:plugin";

/// Checks the component's contract version and exports.
pub(super) fn check(component: &Component, engine: &Engine) -> Result<(), String> {
    let ty = component.component_type();
    check_imports(ty.imports(engine).map(|(name, _)| name))?;
    let exports: Vec<&str> = ty.exports(engine).map(|(name, _)| name).collect();
    let missing: Vec<&str> = ["describe", "execute"]
        .into_iter()
        .filter(|f| !exports.contains(f))
        .collect();
    if !missing.is_empty() {
        let has = if exports.is_empty() {
            "nothing".to_owned()
        } else {
            exports
                .iter()
                .map(|e| format!("`{e}`"))
                .collect::<Vec<_>>()
                .join(", ")
        };
        return Err(format!(
            "it exports {has} but not {}: it was built for another world. Build it against wit/{} (world `executor`)",
            missing
                .iter()
                .map(|m| format!("`{m}`"))
                .collect::<Vec<_>>()
                .join(" and "),
            HOSTED_VERSIONS[HOSTED_VERSIONS.len() - 1]
        ));
    }
    Ok(())
}

/// Refuses imports of a contract version this host does not run.
fn check_imports<'a>(names: impl Iterator<Item = &'a str>) -> Result<(), String> {
    for name in names {
        let Some(rest) = name.strip_prefix(PACKAGE).and_then(|r| r.strip_prefix('/')) else {
            continue;
        };
        let version = rest.split_once('@').map_or("", |(_, v)| v);
        if !HOSTED_VERSIONS.contains(&version) {
            return Err(format!(
                "it targets {PACKAGE}@{version} (it imports `{name}`); this runtime hosts {PACKAGE}@{}: rebuild it against one of those, or upgrade the runtime",
                HOSTED_VERSIONS.join(", @")
            ));
        }
    }
    Ok(())
}

/// What the bytes are, when they are not a component.
pub(super) fn not_a_component(bytes: &[u8]) -> Option<String> {
    const MAGIC: &[u8] = b"\0asm";
    if bytes.len() < 8 || !bytes.starts_with(MAGIC) {
        let start: Vec<String> = bytes.iter().take(4).map(|b| format!("{b:02x}")).collect();
        return Some(if bytes.is_empty() {
            "the file is empty".to_owned()
        } else if bytes.starts_with(MAGIC) {
            "the file is cut short (a truncated WebAssembly file)".to_owned()
        } else {
            format!(
                "it is not WebAssembly at all (it starts with bytes {}, not `00 61 73 6d`)",
                start.join(" ")
            )
        });
    }
    match bytes[4..8] {
        [0x0d, 0x00, 0x01, 0x00] => None,
        [0x01, 0x00, 0x00, 0x00] => Some(
            "it is a core WebAssembly module, not a component; build the plugin for `wasm32-wasip2` (or wrap the module with `wasm-tools component new`)".to_owned(),
        ),
        _ => Some("it is WebAssembly of an unknown version or layer".to_owned()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_hosted_contract_versions_pass() {
        let ok = [
            "wasi:cli/environment@0.2.6",
            "orchestrator:plugin/host@0.1.0",
        ];
        assert!(check_imports(ok.into_iter()).is_ok());
        assert!(check_imports(["orchestrator:plugin/host@0.2.0"].into_iter()).is_ok());
        let newer = ["orchestrator:plugin/types@0.3.0"];
        let error = check_imports(newer.into_iter()).unwrap_err();
        assert!(
            error.contains("targets orchestrator:plugin@0.3.0"),
            "{error}"
        );
        assert!(
            error.contains("hosts orchestrator:plugin@0.1.0, @0.2.0"),
            "{error}"
        );
    }

    #[test]
    fn headers_say_what_the_bytes_are() {
        assert!(not_a_component(b"").unwrap().contains("empty"));
        assert!(
            not_a_component(b"hello world")
                .unwrap()
                .contains("68 65 6c 6c")
        );
        assert!(
            not_a_component(b"\0asm\x01\0\0\0")
                .unwrap()
                .contains("core WebAssembly module")
        );
        assert!(
            not_a_component(b"\0asm\x0d\0")
                .unwrap()
                .contains("truncated")
        );
        assert_eq!(not_a_component(b"\0asm\x0d\0\x01\0"), None);
    }
}
