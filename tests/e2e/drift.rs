//! `capstan drift`: the golden-image example, deployed to dev, has no drift;
//! after its Terraform state is changed out of band it has, the check exits
//! 11 and is recorded, and `capstan stats` shows the environment drifted.

use serde_json::Value;

use crate::golden_image::{example, run};
use crate::harness::Sandbox;

#[test]
fn drift_is_found_after_the_state_changes_out_of_band_and_stats_show_it() {
    let sb = Sandbox::new();
    let pipeline = example(&sb, |t| t);
    let file = pipeline.to_str().unwrap();
    let (code, stderr, deployed) = run(&sb, &pipeline, &["--env", "dev"]);
    assert_eq!(code, 0, "{stderr}");

    let clean = sb.capstan(&["drift", file, "--env", "dev", "-q"]);
    assert_eq!(clean.code, 0, "{clean:?}");
    assert!(clean.stderr.contains("no drift"), "{clean:?}");
    let check = sb.last_run();
    assert_eq!(check.status("plan"), "succeeded");
    // Nothing after the plan ran, and the build was not repeated.
    assert!(
        !check.audit.iter().any(|e| e["capability"] == "exec"
            && ["build", "apply"].contains(&e["stage"].as_str().unwrap_or(""))),
        "a drift check builds and applies nothing"
    );

    // Someone edits the deployed state by hand.
    let state = pipeline
        .parent()
        .unwrap()
        .join("work/state/terraform-dev.tfstate");
    let text = std::fs::read_to_string(&state).unwrap();
    let image = deployed.output("apply", "image_id");
    let image = image.as_str().unwrap();
    assert!(text.contains(image), "{text}");
    std::fs::write(&state, text.replace(image, "golden-hand-edited")).unwrap();
    let drifted = sb.capstan(&["drift", file, "--env", "dev", "-q"]);
    assert_eq!(drifted.code, 11, "{drifted:?}");
    assert!(
        drifted.stderr.contains("DRIFT: `dev` differs"),
        "{drifted:?}"
    );

    let stats = sb.json(&["stats", "--json"]);
    let dev: &Value = stats["drift"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["environment"] == "dev")
        .unwrap_or_else(|| panic!("{stats:#}"));
    assert_eq!(dev["drifted"], true, "{dev}");
    assert_eq!(dev["checks"], 2, "{dev}");
    assert!(dev["drifted_since"].is_string(), "{dev}");
    // Drift checks are no deliveries.
    assert_eq!(stats["runs"]["total"], 1, "{stats:#}");
    let prom = sb.capstan(&["stats", "--prometheus"]);
    assert!(
        prom.stdout
            .contains("capstan_drifted{environment=\"dev\"} 1"),
        "{}",
        prom.stdout
    );

    // Without [drift] the command says what to add.
    let text = std::fs::read_to_string(&pipeline).unwrap();
    std::fs::write(
        &pipeline,
        text.replace("[drift]\nstages = [\"plan\"]\n", ""),
    )
    .unwrap();
    let bare = sb.capstan(&["drift", file, "--env", "dev", "-q"]);
    assert_eq!(bare.code, 2, "{bare:?}");
    assert!(
        bare.stderr.contains("[drift]\n    stages = [\"plan\"]"),
        "{bare:?}"
    );
}
