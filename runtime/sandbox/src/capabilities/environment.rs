//! Environment variables: a plugin sees the ones it was granted, with the
//! host's values, and no other (an unset one stays unset).

use wasmtime_wasi::WasiCtxBuilder;

/// Gives `wasi` the host's values of the variables `names`.
pub(super) fn grant(wasi: &mut WasiCtxBuilder, names: &[String]) {
    for name in names {
        if let Ok(value) = std::env::var(name) {
            wasi.env(name, value);
        }
    }
}
