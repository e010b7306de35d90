//! The `skip_unchanged` state file: the inputs digest and the outputs of the
//! last good build, kept between runs in a write-granted directory.

use std::io;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::BuildOutputs;

/// What the state file holds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct State {
    /// Format version of this file.
    pub version: u32,
    /// Digest of the inputs of the last good build.
    pub inputs_digest: String,
    /// The Capstan run that built it.
    pub run_id: String,
    /// That build's outputs.
    pub outputs: BuildOutputs,
}

/// This plugin's state file format.
pub const VERSION: u32 = 1;

/// Read the state; `Ok(None)` when there is none yet, or it is of another
/// format version or unreadable as JSON (the next good build rewrites it).
pub fn load(path: &Path) -> io::Result<Option<State>> {
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    match serde_json::from_str::<State>(&text) {
        Ok(state) if state.version == VERSION => Ok(Some(state)),
        Ok(state) => {
            capstan_plugin::warn!(
                "state file {} has format version {}, not {VERSION}: ignoring it",
                path.display(),
                state.version
            );
            Ok(None)
        }
        Err(e) => {
            capstan_plugin::warn!(
                "state file {} is not valid: {e}; ignoring it",
                path.display()
            );
            Ok(None)
        }
    }
}

/// Write the state atomically (a temporary file renamed over the old one),
/// creating its directory if needed.
pub fn save(path: &Path, state: &State) -> io::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let text = serde_json::to_string_pretty(state).map_err(io::Error::other)?;
    std::fs::write(&tmp, text + "\n")?;
    std::fs::rename(&tmp, path)
}

/// Test helpers shared with the crate's other tests.
#[cfg(test)]
pub(crate) mod tests_support {
    use crate::BuildOutputs;

    /// Outputs of a plausible build.
    pub(crate) fn outputs() -> BuildOutputs {
        BuildOutputs {
            template_id: "golden-1".into(),
            image_name: "golden-1".into(),
            artifact_id: "Null".into(),
            build_time: 17,
            builder: "null".into(),
            builds: vec![],
            artifact_files: vec![],
            software: [("bash".to_string(), "5.2".to_string())].into(),
            custom_data: Default::default(),
            manifest_file: "/w/packer-manifest.json".into(),
            inputs_digest: Some("ab".into()),
            skipped: false,
            built_by_run: "r1".into(),
            duration_ms: 12,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::tests_support::outputs;
    use super::*;
    use crate::inputs::tests::scratch;

    #[test]
    fn round_trip_and_tolerance() {
        let dir = scratch("state");
        let path = dir.join("sub/packer.json");
        assert_eq!(load(&path).unwrap(), None);
        let state = State {
            version: VERSION,
            inputs_digest: "ab".into(),
            run_id: "r1".into(),
            outputs: outputs(),
        };
        save(&path, &state).unwrap();
        assert_eq!(load(&path).unwrap(), Some(state));
        std::fs::write(&path, "{ not json").unwrap();
        assert_eq!(load(&path).unwrap(), None);
        std::fs::write(
            &path,
            r#"{"version": 99, "inputs_digest": "", "run_id": "", "outputs": {}}"#,
        )
        .unwrap();
        assert_eq!(load(&path).unwrap(), None);
    }
}
