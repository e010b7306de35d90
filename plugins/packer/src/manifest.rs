//! The manifest post-processor's JSON file:
//! `{"builds": [{name, builder_type, build_time, files, artifact_id,
//! packer_run_uuid, custom_data}], "last_run_uuid": ...}`.
//!
//! Packer appends to an existing manifest, so a file can hold the builds of
//! several runs; [`Manifest::last_run`] keeps those of the last one.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// The whole file.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
pub struct Manifest {
    /// Every build recorded, oldest first.
    #[serde(default)]
    pub builds: Vec<Build>,
    /// The run that wrote the file last.
    #[serde(default)]
    pub last_run_uuid: Option<String>,
}

/// One build of one run.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
pub struct Build {
    /// The build's name (`name` in the template, or the builder type).
    #[serde(default)]
    pub name: String,
    /// E.g. `null`, `amazon-ebs`.
    #[serde(default)]
    pub builder_type: String,
    /// When the build finished, Unix seconds.
    #[serde(default)]
    pub build_time: i64,
    /// Files of the artifact (`null` when there are none).
    #[serde(default, deserialize_with = "null_as_empty")]
    pub files: Vec<File>,
    /// E.g. `eu-west-1:ami-0abc`, or `Null` for the null builder.
    #[serde(default)]
    pub artifact_id: String,
    /// The run this build belongs to.
    #[serde(default)]
    pub packer_run_uuid: String,
    /// The post-processor's `custom_data`, rendered.
    #[serde(default, deserialize_with = "null_as_empty")]
    pub custom_data: BTreeMap<String, serde_json::Value>,
}

/// One file of an artifact.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize)]
pub struct File {
    /// Path as Packer reported it.
    pub name: String,
    /// Size in bytes.
    #[serde(default)]
    pub size: u64,
}

fn null_as_empty<'de, D, T>(de: D) -> Result<T, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de> + Default,
{
    Ok(Option::<T>::deserialize(de)?.unwrap_or_default())
}

impl Manifest {
    /// Parse the file's text.
    pub fn parse(text: &str) -> Result<Manifest, serde_json::Error> {
        serde_json::from_str(text)
    }

    /// The builds of the last run (all builds when the file names no run).
    pub fn last_run(&self) -> Vec<&Build> {
        match &self.last_run_uuid {
            Some(uuid) if self.builds.iter().any(|b| &b.packer_run_uuid == uuid) => self
                .builds
                .iter()
                .filter(|b| &b.packer_run_uuid == uuid)
                .collect(),
            _ => self.builds.iter().collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TESTDATA: &str = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../examples/golden-image/packer/testdata/"
    );

    fn sample(name: &str) -> Manifest {
        let text = std::fs::read_to_string(format!("{TESTDATA}{name}")).unwrap();
        Manifest::parse(&text).unwrap()
    }

    /// What every build of the example template records.
    fn check_example_build(b: &Build) {
        assert_eq!(b.name, "golden-image");
        assert_eq!(b.builder_type, "null");
        assert!(b.build_time > 1_600_000_000, "{}", b.build_time);
        assert!(b.files.is_empty());
        assert_eq!(b.artifact_id, "Null");
        assert!(!b.packer_run_uuid.is_empty());
        let name = b.custom_data["image_name"].as_str().unwrap();
        assert!(name.starts_with("golden-"), "{name}");
        let dir = b.custom_data["image_dir"].as_str().unwrap();
        assert!(dir.ends_with(&format!("/{name}")), "{dir}");
        assert_eq!(b.custom_data["healthcheck"], "1.0.0");
    }

    #[test]
    fn real_manifest() {
        let m = sample("packer-manifest.json");
        let builds = m.last_run();
        assert_eq!(builds.len(), 1);
        check_example_build(builds[0]);
        assert_eq!(
            m.last_run_uuid.as_deref(),
            Some(&*builds[0].packer_run_uuid)
        );
    }

    #[test]
    fn real_manifest_of_two_runs_keeps_the_last() {
        let m = sample("packer-manifest-two-runs.json");
        assert_eq!(m.builds.len(), 2);
        assert_ne!(m.builds[0].packer_run_uuid, m.builds[1].packer_run_uuid);
        let builds = m.last_run();
        assert_eq!(builds.len(), 1);
        check_example_build(builds[0]);
        assert_eq!(builds[0], &m.builds[1]);
        assert_ne!(
            builds[0].custom_data["image_name"],
            m.builds[0].custom_data["image_name"]
        );
    }

    #[test]
    fn files_multiple_builds_and_missing_fields() {
        let m = Manifest::parse(
            r#"{"builds": [
                {"name": "a", "builder_type": "qemu", "build_time": 5, "artifact_id": "x",
                 "files": [{"name": "out/disk.qcow2", "size": 1024}], "packer_run_uuid": "r2"},
                {"name": "b", "builder_type": "null", "packer_run_uuid": "r2", "custom_data": null},
                {"name": "old", "packer_run_uuid": "r1"}
            ], "last_run_uuid": "r2"}"#,
        )
        .unwrap();
        let builds = m.last_run();
        assert_eq!(builds.len(), 2);
        assert_eq!(
            builds[0].files,
            [File {
                name: "out/disk.qcow2".into(),
                size: 1024
            }]
        );
        assert!(builds[1].custom_data.is_empty());
        // A run id that matches nothing, or none at all: every build.
        let m = Manifest::parse(r#"{"builds": [{"name": "a"}], "last_run_uuid": "zz"}"#).unwrap();
        assert_eq!(m.last_run().len(), 1);
        assert!(Manifest::parse("{}").unwrap().last_run().is_empty());
        assert!(Manifest::parse("[1]").is_err());
    }
}
