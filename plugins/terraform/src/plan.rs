//! Reading `terraform show -json <plan>`: counts per action, one line per
//! changing resource, output changes with sensitive and unknown values
//! masked, and the plan policy.
//!
//! Pure Rust over the documented JSON format
//! (<https://developer.hashicorp.com/terraform/internals/json-format>),
//! format 0.x (Terraform 0.12–1.0) and 1.x (Terraform ≥ 1.1 and OpenTofu).
//! Properties this module does not know are ignored, as the format's
//! compatibility rules ask; an unknown *major* version is refused.
//!
//! Symbols of the change lines follow Terraform's own plan output:
//!
//! | actions               | symbol | counted as |
//! |-----------------------|--------|------------|
//! | `create`              | `+`    | create     |
//! | `update`              | `~`    | update     |
//! | `delete`              | `-`    | delete     |
//! | `delete`, `create`    | `-/+`  | replace    |
//! | `create`, `delete`    | `+/-`  | replace    |
//! | `read`                | `<=`   | read       |
//! | `forget`              | `.`    | forget (removed from state, not destroyed) |
//! | `no-op`               | `=`    | no_op; listed only when it moves or imports an object |
//! | anything else         | `?`    | other (and treated as destructive if it includes `delete`) |

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// What replaces a sensitive value everywhere this plugin reports values.
pub const SENSITIVE: &str = "<sensitive>";
/// What replaces a value Terraform only knows after apply.
pub const UNKNOWN: &str = "<known after apply>";

/// The parts of the plan JSON this plugin reads.
#[derive(Debug, Deserialize)]
struct RawPlan {
    format_version: Option<String>,
    terraform_version: Option<String>,
    #[serde(default)]
    resource_changes: Vec<RawResourceChange>,
    #[serde(default)]
    output_changes: BTreeMap<String, RawChange>,
    /// 1.x: the plan stopped at an error (Terraform exits non-zero then,
    /// but a plan file can still be written).
    #[serde(default)]
    errored: bool,
    /// 1.x: false when some changes are deferred to a later plan.
    complete: Option<bool>,
}

#[derive(Debug, Deserialize)]
struct RawResourceChange {
    address: String,
    /// Set when the change is to a deposed object (create-before-destroy
    /// left it behind).
    deposed: Option<String>,
    /// 1.x: where the object was before a `moved` block.
    previous_address: Option<String>,
    /// 1.x: why Terraform chose this action, e.g. `replace_because_tainted`.
    action_reason: Option<String>,
    change: RawChange,
}

#[derive(Debug, Deserialize)]
struct RawChange {
    actions: Vec<String>,
    #[serde(default)]
    before: Value,
    #[serde(default)]
    after: Value,
    #[serde(default)]
    after_unknown: Value,
    #[serde(default)]
    before_sensitive: Value,
    #[serde(default)]
    after_sensitive: Value,
    /// 1.5+: present when the object is being imported.
    importing: Option<Value>,
}

/// What Terraform will do to one object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Kind {
    NoOp,
    Create,
    Read,
    Update,
    /// Destroy and re-create; `create_first` for create-before-destroy.
    Replace {
        create_first: bool,
    },
    Delete,
    Forget,
    /// An action list this plugin does not know, as written.
    Other(String),
}

impl Kind {
    fn from_actions(actions: &[String]) -> Kind {
        let actions: Vec<&str> = actions.iter().map(String::as_str).collect();
        match actions.as_slice() {
            ["no-op"] => Kind::NoOp,
            ["create"] => Kind::Create,
            ["read"] => Kind::Read,
            ["update"] => Kind::Update,
            ["delete", "create"] => Kind::Replace {
                create_first: false,
            },
            ["create", "delete"] => Kind::Replace { create_first: true },
            ["delete"] => Kind::Delete,
            ["forget"] => Kind::Forget,
            other => Kind::Other(other.join(",")),
        }
    }

    fn symbol(&self) -> &'static str {
        match self {
            Kind::NoOp => "=",
            Kind::Create => "+",
            Kind::Read => "<=",
            Kind::Update => "~",
            Kind::Replace {
                create_first: false,
            } => "-/+",
            Kind::Replace { create_first: true } => "+/-",
            Kind::Delete => "-",
            Kind::Forget => ".",
            Kind::Other(_) => "?",
        }
    }

    /// The name used in reports and `output_changes`.
    pub fn name(&self) -> &str {
        match self {
            Kind::NoOp => "no-op",
            Kind::Create => "create",
            Kind::Read => "read",
            Kind::Update => "update",
            Kind::Replace { .. } => "replace",
            Kind::Delete => "delete",
            Kind::Forget => "forget",
            Kind::Other(actions) => actions,
        }
    }

    /// Whether the object is destroyed (deleted or replaced).
    pub fn destroys(&self) -> bool {
        match self {
            Kind::Delete | Kind::Replace { .. } => true,
            Kind::Other(actions) => actions.split(',').any(|a| a == "delete"),
            _ => false,
        }
    }
}

/// One entry of `resource_changes`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResourceChange {
    pub address: String,
    pub kind: Kind,
    pub deposed: Option<String>,
    pub previous_address: Option<String>,
    pub reason: Option<String>,
    pub importing: bool,
}

impl ResourceChange {
    /// The address, with the deposed object's key when there is one.
    pub fn object(&self) -> String {
        match &self.deposed {
            Some(key) => format!("{} (deposed object {key})", self.address),
            None => self.address.clone(),
        }
    }

    /// Whether this entry changes anything, state included.
    pub fn changes(&self) -> bool {
        self.kind != Kind::NoOp || self.moved() || self.importing
    }

    fn moved(&self) -> bool {
        self.previous_address
            .as_deref()
            .is_some_and(|p| p != self.address)
    }

    /// E.g. `-/+ aws_instance.db (cannot update in place)`.
    pub fn line(&self) -> String {
        let mut notes = Vec::new();
        if let Some(key) = &self.deposed {
            notes.push(format!("deposed object {key}"));
        }
        if self.moved()
            && let Some(previous) = &self.previous_address
        {
            notes.push(format!("moved from {previous}"));
        }
        if self.importing {
            notes.push("import".to_string());
        }
        if let Some(reason) = &self.reason {
            notes.push(humanize_reason(reason));
        }
        if let Kind::Other(actions) = &self.kind {
            notes.push(format!("actions {actions}"));
        }
        let mut line = format!("{} {}", self.kind.symbol(), self.address);
        if !notes.is_empty() {
            let _ = write!(line, " ({})", notes.join("; "));
        }
        line
    }
}

fn humanize_reason(reason: &str) -> String {
    match reason {
        "replace_because_tainted" => "tainted".into(),
        "replace_because_cannot_update" => "cannot update in place".into(),
        "replace_by_request" => "replacement requested".into(),
        "replace_by_triggers" => "replace_triggered_by".into(),
        "delete_because_no_resource_config" => "no longer in the configuration".into(),
        "delete_because_no_module" => "its module is no longer in the configuration".into(),
        "delete_because_wrong_repetition" => "count/for_each changed".into(),
        "delete_because_count_index" => "count index out of range".into(),
        "delete_because_each_key" => "for_each key removed".into(),
        "delete_because_no_move_target" => "moved to an address not in the configuration".into(),
        "read_because_config_unknown" => "configuration known only after apply".into(),
        "read_because_dependency_pending" => "depends on pending changes".into(),
        other => other.replace('_', " "),
    }
}

/// One entry of `output_changes`, values masked.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct OutputChange {
    #[serde(skip)]
    pub name: String,
    #[serde(skip)]
    pub kind: Kind,
    /// `kind` as reported.
    pub action: String,
    /// The value before, with sensitive parts replaced by `<sensitive>`.
    pub before: Value,
    /// The value after, with sensitive parts replaced by `<sensitive>` and
    /// unknown parts by `<known after apply>`.
    pub after: Value,
    /// Whether (part of) the value is sensitive.
    pub sensitive: bool,
}

impl OutputChange {
    /// Short description for the summary paragraph, e.g.
    /// `image_id = golden-20261126T101500Z`, and whether it shows a value.
    fn brief(&self) -> (String, bool) {
        if self.kind == Kind::Delete {
            return (format!("{} removed", self.name), false);
        }
        if self.sensitive {
            return (format!("{} (sensitive)", self.name), false);
        }
        match &self.after {
            Value::String(s) if s == UNKNOWN => {
                (format!("{} (known after apply)", self.name), false)
            }
            after => match short(after) {
                Some(v) => (format!("{} = {v}", self.name), true),
                None => (self.name.clone(), false),
            },
        }
    }
}

/// A value short enough for a summary paragraph: a one-line string of at
/// most 48 characters (unquoted; `""` when empty), a number or a boolean.
pub fn short(value: &Value) -> Option<String> {
    match value {
        Value::String(s) if s.is_empty() => Some("\"\"".into()),
        Value::String(s) if s.chars().count() <= 48 && !s.contains('\n') => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

/// Up to 8 briefs for a summary paragraph, those showing a value first
/// (they say the most: `image_id = golden-…`), then `and N more`.
pub fn brief_list(briefs: Vec<(String, bool)>) -> String {
    const SHOWN: usize = 8;
    let total = briefs.len();
    let (mut list, rest): (Vec<_>, Vec<_>) = briefs.into_iter().partition(|(_, value)| *value);
    list.extend(rest);
    let mut shown: Vec<String> = list.into_iter().take(SHOWN).map(|(b, _)| b).collect();
    if total > SHOWN {
        shown.push(format!("and {} more", total - SHOWN));
    }
    shown.join(", ")
}

/// Counts per action (the `summary` output).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Counts {
    pub create: usize,
    pub update: usize,
    pub delete: usize,
    pub replace: usize,
    pub no_op: usize,
    pub read: usize,
    pub forget: usize,
    /// Objects imported (1.5+), whatever else happens to them.
    pub import: usize,
    /// Objects moved to a new address (`moved` blocks).
    #[serde(rename = "move")]
    pub moved: usize,
    /// Action lists this plugin does not know.
    pub other: usize,
    /// Outputs that are created, updated or removed.
    pub output_changes: usize,
}

/// A parsed plan.
#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    pub format_version: String,
    pub terraform_version: String,
    pub resources: Vec<ResourceChange>,
    /// Outputs that change (no-ops left out), by name.
    pub outputs: Vec<OutputChange>,
    pub counts: Counts,
    /// False when Terraform deferred some changes to a later plan.
    pub complete: bool,
    /// Every value the plan marks sensitive (of resources and outputs,
    /// before and after), in clear: for the host to redact (see
    /// [`flagged`]), never to report.
    pub sensitive: Vec<String>,
}

/// Parse `terraform show -json <plan>` output.
pub fn parse(json: &str) -> Result<Plan, String> {
    let raw: RawPlan = serde_json::from_str(json)
        .map_err(|e| format!("`terraform show -json` printed no plan JSON I can read: {e}"))?;
    let format_version = raw
        .format_version
        .ok_or("`terraform show -json` printed JSON without a `format_version`: not a plan")?;
    let major = format_version.split('.').next().unwrap_or_default();
    if major != "0" && major != "1" {
        return Err(format!(
            "plan JSON format_version {format_version} is not supported (this plugin reads \
             0.x from Terraform 0.12–1.0 and 1.x from Terraform ≥ 1.1 and OpenTofu)"
        ));
    }
    if raw.errored {
        return Err(
            "Terraform marked the plan as errored: it is incomplete and cannot be \
                    applied (see the errors in the stage log)"
                .into(),
        );
    }

    let mut sensitive = Vec::new();
    let changes = raw
        .resource_changes
        .iter()
        .map(|rc| &rc.change)
        .chain(raw.output_changes.values());
    for c in changes {
        flagged(&c.before, &c.before_sensitive, &mut sensitive);
        flagged(&c.after, &c.after_sensitive, &mut sensitive);
    }

    let mut counts = Counts::default();
    let resources: Vec<ResourceChange> = raw
        .resource_changes
        .into_iter()
        .map(|rc| {
            let change = ResourceChange {
                kind: Kind::from_actions(&rc.change.actions),
                address: rc.address,
                deposed: rc.deposed,
                previous_address: rc.previous_address,
                reason: rc.action_reason,
                importing: rc.change.importing.is_some_and(|v| !v.is_null()),
            };
            match change.kind {
                Kind::NoOp => counts.no_op += 1,
                Kind::Create => counts.create += 1,
                Kind::Read => counts.read += 1,
                Kind::Update => counts.update += 1,
                Kind::Replace { .. } => counts.replace += 1,
                Kind::Delete => counts.delete += 1,
                Kind::Forget => counts.forget += 1,
                Kind::Other(_) => counts.other += 1,
            }
            counts.import += usize::from(change.importing);
            counts.moved += usize::from(change.moved());
            change
        })
        .collect();

    let outputs: Vec<OutputChange> = raw
        .output_changes
        .into_iter()
        .map(|(name, c)| {
            let kind = Kind::from_actions(&c.actions);
            let after = mask(&c.after, &c.after_unknown, UNKNOWN);
            let sensitive = any_true(&c.before_sensitive) || any_true(&c.after_sensitive);
            OutputChange {
                name,
                action: kind.name().to_string(),
                before: mask_sensitive(&c.before, &c.before_sensitive),
                after: mask_sensitive(&after, &c.after_sensitive),
                kind,
                sensitive,
            }
        })
        .filter(|o| o.kind != Kind::NoOp)
        .collect();
    counts.output_changes = outputs.len();

    Ok(Plan {
        format_version,
        terraform_version: raw
            .terraform_version
            .unwrap_or_else(|| "unknown".to_string()),
        resources,
        outputs,
        counts,
        complete: raw.complete.unwrap_or(true),
        sensitive,
    })
}

/// The values inside `value` that `marks` flags (as in [`mask`]): each
/// string, and each number as written; not booleans and nulls, which are
/// no secret on their own and would mask every `true` of the run.
pub fn flagged(value: &Value, marks: &Value, out: &mut Vec<String>) {
    fn leaves(value: &Value, out: &mut Vec<String>) {
        match value {
            Value::String(s) => out.push(s.clone()),
            Value::Number(n) => out.push(n.to_string()),
            Value::Array(items) => items.iter().for_each(|v| leaves(v, out)),
            Value::Object(map) => map.values().for_each(|v| leaves(v, out)),
            Value::Bool(_) | Value::Null => {}
        }
    }
    match (marks, value) {
        (Value::Bool(true), _) => leaves(value, out),
        (Value::Object(m), Value::Object(v)) => {
            for (k, mark) in m {
                if let Some(x) = v.get(k) {
                    flagged(x, mark, out);
                }
            }
        }
        (Value::Array(m), Value::Array(v)) => {
            for (mark, x) in m.iter().zip(v) {
                flagged(x, mark, out);
            }
        }
        _ => {}
    }
}

/// Replace the parts of `value` that `marks` flags (`true`, or nested
/// objects/arrays of flags, as in `after_unknown` and `*_sensitive`) by
/// `replacement`. Flagged parts missing from `value` (unknown attributes
/// are absent from `after`) are added.
pub fn mask(value: &Value, marks: &Value, replacement: &str) -> Value {
    match marks {
        Value::Bool(true) => Value::String(replacement.to_string()),
        Value::Object(m) => {
            let Value::Object(v) = value else {
                return value.clone();
            };
            let mut out: Map<String, Value> = v
                .iter()
                .map(|(k, x)| {
                    let x = match m.get(k) {
                        Some(mark) => mask(x, mark, replacement),
                        None => x.clone(),
                    };
                    (k.clone(), x)
                })
                .collect();
            for (k, mark) in m {
                if !out.contains_key(k) && any_true(mark) {
                    out.insert(k.clone(), Value::String(replacement.to_string()));
                }
            }
            Value::Object(out)
        }
        Value::Array(marks) => {
            let Value::Array(v) = value else {
                return value.clone();
            };
            v.iter()
                .enumerate()
                .map(|(i, x)| match marks.get(i) {
                    Some(mark) => mask(x, mark, replacement),
                    None => x.clone(),
                })
                .collect()
        }
        _ => value.clone(),
    }
}

/// [`mask`] with `<sensitive>`; an absent value (`null`, e.g. `before` of
/// a create) stays `null`: there is nothing to hide.
fn mask_sensitive(value: &Value, marks: &Value) -> Value {
    if value.is_null() {
        Value::Null
    } else {
        mask(value, marks, SENSITIVE)
    }
}

/// Whether a flag structure flags anything.
fn any_true(marks: &Value) -> bool {
    match marks {
        Value::Bool(b) => *b,
        Value::Object(m) => m.values().any(any_true),
        Value::Array(a) => a.iter().any(any_true),
        _ => false,
    }
}

/// The plan policy of the stage's config.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Policy {
    pub max_destroy: Option<u64>,
    pub forbid_replace: bool,
    pub require_changes: bool,
}

impl Plan {
    /// Whether applying the plan changes anything: a resource (state
    /// included: moves, imports, forgets, reads) or an output.
    pub fn has_changes(&self) -> bool {
        self.resources.iter().any(ResourceChange::changes) || !self.outputs.is_empty()
    }

    /// One line per resource change (no-ops left out unless they move or
    /// import an object), in the plan's order.
    pub fn change_lines(&self) -> Vec<String> {
        self.resources
            .iter()
            .filter(|r| r.changes())
            .map(ResourceChange::line)
            .collect()
    }

    /// The `output_changes` output: changing outputs by name.
    pub fn output_changes(&self) -> Map<String, Value> {
        self.outputs
            .iter()
            .map(|o| {
                // A struct of JSON values always serialises.
                let v = serde_json::to_value(o).unwrap_or(Value::Null);
                (o.name.clone(), v)
            })
            .collect()
    }

    /// Objects the plan destroys (deleted or replaced).
    pub fn destroyed(&self) -> Vec<&ResourceChange> {
        self.resources
            .iter()
            .filter(|r| r.kind.destroys())
            .collect()
    }

    /// Everything `policy` forbids in this plan, one message each.
    pub fn violations(&self, policy: &Policy) -> Vec<String> {
        let mut out = Vec::new();
        if let Some(max) = policy.max_destroy {
            let destroyed = self.destroyed();
            if destroyed.len() as u64 > max {
                let list: Vec<String> = destroyed
                    .iter()
                    .map(|r| match r.kind {
                        Kind::Replace { .. } => format!("{} (replace)", r.object()),
                        _ => r.object(),
                    })
                    .collect();
                out.push(format!(
                    "plan destroys {}, more than max_destroy = {max}: {}",
                    plural(destroyed.len(), "resource"),
                    list.join(", ")
                ));
            }
        }
        if policy.forbid_replace {
            let replaced: Vec<String> = self
                .resources
                .iter()
                .filter(|r| matches!(r.kind, Kind::Replace { .. }))
                .map(ResourceChange::object)
                .collect();
            if !replaced.is_empty() {
                out.push(format!(
                    "plan replaces {}, but forbid_replace = true: {}",
                    plural(replaced.len(), "resource"),
                    replaced.join(", ")
                ));
            }
        }
        if policy.require_changes && !self.has_changes() {
            out.push(
                "plan changes nothing (no resource, no output), but require_changes = true".into(),
            );
        }
        out
    }

    /// The summary paragraph's first part, e.g. `plan: 0 to create, 0 to
    /// update, 0 to delete, 0 to replace; 5 output changes (image_id =
    /// golden-20261126T101500Z, …)`.
    pub fn summary_text(&self, label: &str) -> String {
        let c = &self.counts;
        let mut s = format!(
            "{label}: {} to create, {} to update, {} to delete, {} to replace",
            c.create, c.update, c.delete, c.replace
        );
        let extra: Vec<String> = [
            (c.read, "to read"),
            (c.forget, "to forget"),
            (c.import, "to import"),
            (c.moved, "to move"),
            (c.other, "with other actions"),
        ]
        .iter()
        .filter(|(n, _)| *n > 0)
        .map(|(n, what)| format!("{n} {what}"))
        .collect();
        if !extra.is_empty() {
            let _ = write!(s, " ({})", extra.join(", "));
        }
        if self.outputs.is_empty() {
            s.push_str("; no output changes");
        } else {
            let briefs = self.outputs.iter().map(OutputChange::brief).collect();
            let _ = write!(
                s,
                "; {} ({})",
                plural(self.outputs.len(), "output change"),
                brief_list(briefs)
            );
        }
        if !self.has_changes() {
            s.push_str("; nothing to apply");
        }
        if !self.complete {
            s.push_str("; the plan is incomplete (Terraform deferred some changes)");
        }
        s
    }

    /// The structured report stored with the run.
    pub fn report(&self) -> Value {
        let resources: Vec<Value> = self
            .resources
            .iter()
            .filter(|r| r.changes())
            .map(|r| {
                serde_json::json!({
                    "address": r.address,
                    "action": r.kind.name(),
                    "deposed": r.deposed,
                    "previous_address": r.previous_address,
                    "reason": r.reason,
                    "importing": r.importing,
                })
            })
            .collect();
        serde_json::json!({
            "format_version": self.format_version,
            "terraform_version": self.terraform_version,
            "summary": self.counts,
            "has_changes": self.has_changes(),
            "complete": self.complete,
            "changes": self.change_lines(),
            "resources": resources,
            "output_changes": self.output_changes(),
        })
    }
}

fn plural(n: usize, what: &str) -> String {
    if n == 1 {
        format!("1 {what}")
    } else {
        format!("{n} {what}s")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn fixture(name: &str) -> String {
        let path = format!("{}/tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"));
        std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
    }

    fn plan(name: &str) -> Plan {
        parse(&fixture(name)).unwrap_or_else(|e| panic!("{name}: {e}"))
    }

    /// Written from the documented format (offline Terraform has no
    /// providers, so it cannot plan resource changes).
    #[test]
    fn replace_and_delete_fixture_1x() {
        let p = plan("plan-replace-and-delete.json");
        assert_eq!(p.format_version, "1.2");
        assert_eq!(p.terraform_version, "1.11.4");
        assert_eq!(
            p.counts,
            Counts {
                create: 2,
                update: 1,
                delete: 2,
                replace: 2,
                no_op: 3,
                read: 1,
                forget: 1,
                import: 1,
                moved: 1,
                other: 0,
                output_changes: 3,
            }
        );
        assert_eq!(
            p.change_lines(),
            [
                "+ aws_instance.web[0]",
                "+ aws_instance.web[1]",
                "~ aws_security_group.web",
                "-/+ aws_instance.db (cannot update in place)",
                "+/- aws_lb.front (tainted)",
                "- aws_instance.old[\"a\"] (no longer in the configuration)",
                "- module.legacy.aws_s3_bucket.logs (its module is no longer in the configuration)",
                "<= data.aws_ami.golden (configuration known only after apply)",
                ". aws_iam_role.kept",
                "= aws_eip.front (moved from aws_eip.lb)",
                "= aws_route53_zone.main (import)",
            ]
        );
        assert!(p.has_changes());
        assert!(p.complete);
    }

    #[test]
    fn replace_detected_in_both_orders() {
        let p = plan("plan-replace-and-delete.json");
        let kind = |addr: &str| {
            p.resources
                .iter()
                .find(|r| r.address == addr)
                .unwrap()
                .kind
                .clone()
        };
        assert_eq!(
            kind("aws_instance.db"),
            Kind::Replace {
                create_first: false
            }
        );
        assert_eq!(kind("aws_lb.front"), Kind::Replace { create_first: true });
        assert!(kind("aws_instance.db").destroys() && kind("aws_lb.front").destroys());
        assert!(
            !kind("aws_iam_role.kept").destroys(),
            "forget does not destroy"
        );
        let destroyed: Vec<String> = p.destroyed().iter().map(|r| r.object()).collect();
        assert_eq!(
            destroyed,
            [
                "aws_instance.db",
                "aws_lb.front",
                "aws_instance.old[\"a\"]",
                "module.legacy.aws_s3_bucket.logs"
            ]
        );
    }

    #[test]
    fn format_0x_fixture_with_deposed_object() {
        let p = plan("plan-0.2-delete-deposed.json");
        assert_eq!(p.format_version, "0.2");
        assert_eq!(p.terraform_version, "1.0.3");
        assert_eq!(p.counts.delete, 2);
        assert_eq!(p.counts.replace, 1);
        assert_eq!(p.counts.create, 1);
        assert_eq!(
            p.change_lines(),
            [
                "-/+ aws_instance.app",
                "- aws_instance.app (deposed object 00000001)",
                "- aws_instance.worker[2]",
                "+ aws_instance.worker[3]",
            ]
        );
        // No action_reason in 0.x: lines have no reasons, and nothing breaks.
        assert!(p.resources.iter().all(|r| r.reason.is_none()));
        assert_eq!(
            p.violations(&Policy {
                max_destroy: Some(1),
                ..Policy::default()
            }),
            [
                "plan destroys 3 resources, more than max_destroy = 1: aws_instance.app (replace), \
              aws_instance.app (deposed object 00000001), aws_instance.worker[2]"
            ]
        );
    }

    #[test]
    fn policy_violations_have_clear_messages() {
        let p = plan("plan-replace-and-delete.json");
        assert_eq!(p.violations(&Policy::default()), Vec::<String>::new());
        assert_eq!(
            p.violations(&Policy {
                max_destroy: Some(4),
                ..Policy::default()
            }),
            Vec::<String>::new()
        );
        assert_eq!(
            p.violations(&Policy {
                max_destroy: Some(1),
                forbid_replace: true,
                require_changes: true,
            }),
            [
                "plan destroys 4 resources, more than max_destroy = 1: aws_instance.db (replace), \
                 aws_lb.front (replace), aws_instance.old[\"a\"], module.legacy.aws_s3_bucket.logs",
                "plan replaces 2 resources, but forbid_replace = true: aws_instance.db, aws_lb.front",
            ]
        );
        let one = parse(
            &json!({
                "format_version": "1.0",
                "resource_changes": [
                    {"address": "a.b", "change": {"actions": ["delete"]}}
                ]
            })
            .to_string(),
        )
        .unwrap();
        assert_eq!(
            one.violations(&Policy {
                max_destroy: Some(0),
                ..Policy::default()
            }),
            ["plan destroys 1 resource, more than max_destroy = 0: a.b"]
        );
    }

    #[test]
    fn require_changes_with_no_changes() {
        for name in ["real-1.11.4-no-changes.json", "real-1.0.3-no-changes.json"] {
            let p = plan(name);
            assert!(!p.has_changes(), "{name}");
            assert_eq!(p.counts, Counts::default(), "{name}");
            assert!(p.change_lines().is_empty());
            assert!(p.output_changes().is_empty());
            assert_eq!(
                p.violations(&Policy {
                    require_changes: true,
                    max_destroy: Some(0),
                    forbid_replace: true,
                }),
                ["plan changes nothing (no resource, no output), but require_changes = true"],
                "{name}"
            );
            assert_eq!(
                p.summary_text("plan"),
                "plan: 0 to create, 0 to update, 0 to delete, 0 to replace; no output changes; \
                 nothing to apply"
            );
        }
    }

    /// Real `terraform show -json` output of both Terraform versions for a
    /// first plan of the scratch configuration in tests/fixtures/README.md:
    /// only outputs change, one of them sensitive.
    #[test]
    fn real_first_plans_both_versions() {
        for (name, format, version) in [
            ("real-1.11.4-outputs-create.json", "1.2", "1.11.4"),
            ("real-1.0.3-outputs-create.json", "0.2", "1.0.3"),
        ] {
            let p = plan(name);
            assert_eq!(p.format_version, format);
            assert_eq!(p.terraform_version, version);
            assert_eq!(
                p.counts,
                Counts {
                    output_changes: 5,
                    ..Counts::default()
                },
                "{name}"
            );
            assert!(p.has_changes());
            assert!(p.change_lines().is_empty());
            let oc = p.output_changes();
            assert_eq!(
                oc.keys().collect::<Vec<_>>(),
                ["ansible_inventory", "hosts", "name", "secret", "tags"]
            );
            assert_eq!(
                oc["name"],
                json!({"action": "create", "before": null, "after": "demo", "sensitive": false})
            );
            assert_eq!(oc["secret"]["after"], SENSITIVE);
            assert_eq!(
                oc["secret"]["before"],
                Value::Null,
                "nothing to hide before a create"
            );
            assert_eq!(oc["secret"]["sensitive"], true);
            let text = p.summary_text("plan");
            assert_eq!(
                text,
                "plan: 0 to create, 0 to update, 0 to delete, 0 to replace; 5 output changes \
                 (name = demo, ansible_inventory, hosts, secret (sensitive), tags)"
            );
            // The secret's value is in the plan JSON, never in what we report,
            // and it is what the host is asked to redact.
            assert!(fixture(name).contains("s3cr3t-demo"));
            assert_eq!(p.sensitive, ["s3cr3t-demo"], "{name}");
            for shown in [text, p.report().to_string(), Value::Object(oc).to_string()] {
                assert!(!shown.contains("s3cr3t"), "{shown}");
            }
        }
    }

    /// Real resources (tests/fixtures/aws-config), one holding a sensitive
    /// variable's value: in the plan JSON in clear, never in the report.
    #[test]
    fn real_plan_of_resources() {
        let name = "real-1.11.4-aws-create.json";
        let p = plan(name);
        assert_eq!(
            p.counts,
            Counts {
                create: 2,
                output_changes: 1,
                ..Counts::default()
            }
        );
        assert_eq!(
            p.change_lines(),
            ["+ aws_sqs_queue.jobs", "+ aws_ssm_parameter.db_password"]
        );
        assert!(fixture(name).contains("s3cr3t-hunter"));
        assert!(
            p.sensitive.iter().any(|v| v.contains("s3cr3t-hunter")),
            "{:?}",
            p.sensitive
        );
        let shown = [p.summary_text("plan"), p.report().to_string()];
        assert!(shown.iter().all(|s| !s.contains("s3cr3t")), "{shown:?}");
    }

    #[test]
    fn real_update_and_destroy_plans_of_outputs() {
        let p = plan("real-1.11.4-outputs-update.json");
        assert_eq!(p.counts.output_changes, 5);
        let oc = p.output_changes();
        assert_eq!(oc["name"]["before"], "demo");
        assert_eq!(oc["name"]["after"], "demo2");
        assert_eq!(oc["secret"]["before"], SENSITIVE);
        assert_eq!(oc["secret"]["after"], SENSITIVE);
        assert_eq!(oc["hosts"]["action"], "update");

        let p = plan("real-1.0.3-destroy.json");
        assert_eq!(p.format_version, "0.2");
        assert!(p.outputs.iter().all(|o| o.kind == Kind::Delete));
        assert_eq!(
            p.summary_text("destroy plan"),
            "destroy plan: 0 to create, 0 to update, 0 to delete, 0 to replace; 5 output changes \
             (ansible_inventory removed, hosts removed, name removed, secret removed, tags removed)"
        );
    }

    #[test]
    fn flagged_finds_the_values_to_redact() {
        let value =
            json!({"user": "admin", "password": "pw-1234", "keys": ["a", 31337], "on": true});
        let marks = json!({"password": true, "keys": [false, true], "on": true, "gone": true});
        let mut out = Vec::new();
        flagged(&value, &marks, &mut out);
        assert_eq!(out, ["pw-1234", "31337"]);
        let mut all = Vec::new();
        flagged(&json!({"a": ["x1", {"b": "y2"}]}), &json!(true), &mut all);
        assert_eq!(all, ["x1", "y2"]);
    }

    #[test]
    fn masks_nested_sensitive_and_unknown_values() {
        let value = json!({"user": "admin", "password": "hunter2", "keys": ["a", "b"]});
        let marks = json!({"password": true, "keys": [false, true]});
        assert_eq!(
            mask(&value, &marks, SENSITIVE),
            json!({"user": "admin", "password": SENSITIVE, "keys": ["a", SENSITIVE]})
        );
        // Unknown attributes are absent from `after`.
        assert_eq!(
            mask(
                &json!({"ami": "x"}),
                &json!({"id": true, "tags": {}}),
                UNKNOWN
            ),
            json!({"ami": "x", "id": UNKNOWN})
        );
        assert_eq!(mask(&json!(null), &json!(true), UNKNOWN), json!(UNKNOWN));
        assert_eq!(mask(&json!("v"), &json!(false), SENSITIVE), json!("v"));

        let p = parse(&fixture("plan-replace-and-delete.json")).unwrap();
        let oc = p.output_changes();
        assert_eq!(oc["db_password"]["after"], SENSITIVE);
        assert_eq!(oc["db_password"]["sensitive"], true);
        assert_eq!(oc["web_ips"]["after"], json!(["10.0.0.1", UNKNOWN]));
        assert_eq!(
            oc["connection"]["after"],
            json!({"host": "db.internal", "password": SENSITIVE})
        );
        assert_eq!(oc["connection"]["sensitive"], true);
        assert!(!p.report().to_string().contains("hunter2"));
        assert!(!p.summary_text("plan").contains("hunter2"));
        assert!(fixture("plan-replace-and-delete.json").contains("hunter2"));
    }

    #[test]
    fn summary_of_resource_changes() {
        let p = plan("plan-replace-and-delete.json");
        assert_eq!(
            p.summary_text("plan"),
            "plan: 2 to create, 1 to update, 2 to delete, 2 to replace (1 to read, 1 to forget, \
             1 to import, 1 to move); 3 output changes (connection (sensitive), db_password \
             (sensitive), web_ips)"
        );
        let report = p.report();
        assert_eq!(report["summary"]["replace"], 2);
        assert_eq!(report["summary"]["move"], 1);
        assert_eq!(report["resources"].as_array().unwrap().len(), 11);
    }

    #[test]
    fn unknown_actions_and_versions() {
        let p = parse(
            &json!({
                "format_version": "1.9",
                "resource_changes": [
                    {"address": "x.y", "change": {"actions": ["create", "forget"]}},
                    {"address": "x.z", "change": {"actions": ["archive", "delete"]}}
                ],
                "some_future_property": {"ignored": true}
            })
            .to_string(),
        )
        .unwrap();
        assert_eq!(p.counts.other, 2);
        assert_eq!(
            p.change_lines(),
            [
                "? x.y (actions create,forget)",
                "? x.z (actions archive,delete)"
            ]
        );
        assert_eq!(
            p.destroyed().len(),
            1,
            "an unknown action list with delete destroys"
        );
        assert_eq!(p.terraform_version, "unknown");

        let e = parse(r#"{"format_version": "2.0"}"#).unwrap_err();
        assert!(
            e.starts_with("plan JSON format_version 2.0 is not supported"),
            "{e}"
        );
        let e = parse(r#"{"values": {}}"#).unwrap_err();
        assert!(e.contains("without a `format_version`"), "{e}");
        let e = parse("Error: not json").unwrap_err();
        assert!(
            e.starts_with("`terraform show -json` printed no plan JSON I can read"),
            "{e}"
        );
        let e = parse(r#"{"format_version": "1.2", "errored": true}"#).unwrap_err();
        assert!(e.starts_with("Terraform marked the plan as errored"), "{e}");
        let p = parse(r#"{"format_version": "1.2", "complete": false}"#).unwrap();
        assert!(
            p.summary_text("plan")
                .ends_with("(Terraform deferred some changes)")
        );
    }

    /// Real plans written by the golden-image example
    /// (examples/golden-image/infrastructure/testdata/plan*.json).
    #[test]
    fn golden_image_samples_parse() {
        for (name, text) in crate::samples::golden_image("plan") {
            let value: Value = serde_json::from_str(&text).unwrap();
            // Only plans: the directory may hold `output -json` samples too.
            if value.get("format_version").is_none() || value.get("planned_values").is_none() {
                continue;
            }
            let p = parse(&text).unwrap_or_else(|e| panic!("{name}: {e}"));
            assert!(p.format_version.starts_with("0.") || p.format_version.starts_with("1."));
            // The example has no resources (offline: no providers).
            assert!(p.destroyed().is_empty(), "{name}");
            eprintln!("{name}: {}", p.summary_text("plan"));
            if p.counts.output_changes > 0 {
                assert!(p.summary_text("plan").contains("output change"));
                assert!(p.has_changes());
            }
        }
    }
}
