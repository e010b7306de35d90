//! Host bindings generated from `wit/`, the single source of truth for the
//! contract.

wasmtime::component::bindgen!({
    path: "../wit",
    world: "stage",
    imports: { default: async | trappable },
    exports: { default: async },
});

/// The contract version this host speaks (the WIT package version).
pub const CONTRACT_VERSION: &str = "0.1.1";
/// The WIT package name.
pub const CONTRACT_PACKAGE: &str = "capstan:plugin";
