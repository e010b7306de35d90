//! Test fixture: a plugin built against a *different* contract version,
//! `capstan:plugin@0.0.9` (its own WIT in `wit/`, generated here directly
//! with `wit_bindgen::generate!`, not through the SDK). The end-to-end
//! tests load it to check that the host names the contract version the
//! plugin was built for and refuses it cleanly.

wit_bindgen::generate!({
    path: "wit",
    world: "stage",
});

use exports::capstan::plugin::plugin::{Guest, PluginInfo};

struct OldContract;

impl Guest for OldContract {
    fn describe() -> PluginInfo {
        PluginInfo {
            name: "old-contract".into(),
            version: env!("CARGO_PKG_VERSION").into(),
        }
    }

    fn run(_config: String) -> Result<String, String> {
        Ok("ran under the 0.0.9 contract".into())
    }
}

export!(OldContract);
