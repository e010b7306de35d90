//! [`Info`]: what a plugin says about itself in `describe`.

use crate::bindings::capstan::plugin::types::{CapabilityRequest, PluginInfo};

/// One thing a plugin may do outside its sandbox (the WIT `capability`).
pub use crate::bindings::capstan::plugin::types::Capability;

/// A plugin's name, version, description and requested capabilities.
///
/// Every request carries a reason, shown to operators and security teams by
/// `capstan audit`. A capability is usable only when it is requested here
/// *and* granted by the pipeline.
///
/// ```
/// use capstan_plugin::{Capability, Info};
///
/// let info = Info::new("terraform", "0.1.0")
///     .description("Plans and applies Terraform configurations.")
///     .exec("terraform", "to run `terraform plan` and `terraform apply`")
///     .read("to read the Terraform configuration")
///     .write("to write the plan file into the work dir")
///     .env("TF_LOG", "to pass Terraform's log level through")
///     .request(Capability::Secret("TF_TOKEN".into()), "to authenticate");
/// assert_eq!(info.requests().len(), 5);
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[must_use]
pub struct Info {
    name: String,
    version: String,
    description: String,
    requests: Vec<(Capability, String)>,
}

impl Info {
    /// A plugin called `name` (short and stable, e.g. `terraform`) at
    /// `version` (semver; usually `env!("CARGO_PKG_VERSION")`).
    pub fn new(name: impl Into<String>, version: impl Into<String>) -> Self {
        Info {
            name: name.into(),
            version: version.into(),
            description: String::new(),
            requests: Vec::new(),
        }
    }

    /// One sentence for humans.
    pub fn description(mut self, description: impl Into<String>) -> Self {
        self.description = description.into();
        self
    }

    /// Request `capability`, saying why.
    pub fn request(mut self, capability: Capability, reason: impl Into<String>) -> Self {
        self.requests.push((capability, reason.into()));
        self
    }

    /// Request to start `program` (a bare name such as `terraform`).
    pub fn exec(self, program: impl Into<String>, reason: impl Into<String>) -> Self {
        self.request(Capability::Exec(program.into()), reason)
    }

    /// Request to start every program the stage's `exec` grants name (the
    /// WIT `exec("*")`), for a plugin whose programs come from the pipeline
    /// file rather than from its own code, such as the command stage. The
    /// host grants it when the stage grants at least one program, and
    /// checks each call against that program's own grant, as for
    /// [`Info::exec`]. Prefer [`Info::exec`] when the programs are known.
    pub fn exec_granted(self, reason: impl Into<String>) -> Self {
        self.request(Capability::Exec(Self::GRANTED_PROGRAMS.into()), reason)
    }

    /// The program name that [`Info::exec_granted`] requests.
    pub const GRANTED_PROGRAMS: &str = "*";

    /// Request to read the directories the pipeline grants.
    pub fn read(self, reason: impl Into<String>) -> Self {
        self.request(Capability::Read, reason)
    }

    /// Request to write the directories the pipeline grants.
    pub fn write(self, reason: impl Into<String>) -> Self {
        self.request(Capability::Write, reason)
    }

    /// Request to read the host environment variable `name`.
    pub fn env(self, name: impl Into<String>, reason: impl Into<String>) -> Self {
        self.request(Capability::Env(name.into()), reason)
    }

    /// Request every host environment variable the stage's `env` grants
    /// name (the WIT `env("*")`), for a plugin that reads a variable's name
    /// from its `with`, such as the notify stage's `url_env`. The host
    /// always grants it, and the plugin sees exactly the variables the
    /// stage grants (possibly none). Prefer [`Info::env`] when the
    /// names are known. Needs a host of contract 0.1.1 or later.
    pub fn env_granted(self, reason: impl Into<String>) -> Self {
        self.request(Capability::Env(Self::GRANTED_VARIABLES.into()), reason)
    }

    /// The variable name that [`Info::env_granted`] requests.
    pub const GRANTED_VARIABLES: &str = "*";

    /// Request the secret `name` (declared in the pipeline's `[secrets]`)
    /// for the programs this plugin starts. The plugin itself never gets
    /// the value: the host hands it to each program the stage's grant
    /// names, in an environment variable or as the path of a 0600 file
    /// (`[stages.<stage>.grants.secrets] name = { env = "VAR" }`), and
    /// redacts it from everything the run shows and keeps.
    ///
    /// ```
    /// use capstan_plugin::{Exec, Info};
    ///
    /// let info = Info::new("deploy", "1.0.0")
    ///     .exec("terraform", "to apply the plan")
    ///     .secret("cloud_token", "Terraform authenticates with it (TF_VAR_token)");
    /// // In `run`: nothing to pass, the host sets the variable for `terraform`.
    /// let _apply = Exec::new("terraform").args(["apply", "tfplan"]);
    /// # let _ = info;
    /// ```
    pub fn secret(self, name: impl Into<String>, reason: impl Into<String>) -> Self {
        self.request(Capability::Secret(name.into()), reason)
    }

    /// Request every secret the stage grants, possibly none (the WIT
    /// `secret("*")`), for a plugin whose programs come from the pipeline
    /// file, such as the command stage: the pipeline decides which secrets
    /// its programs get, and the host hands each to them as granted.
    pub fn secret_granted(self, reason: impl Into<String>) -> Self {
        self.request(Capability::Secret(Self::GRANTED_SECRETS.into()), reason)
    }

    /// The secret name that [`Info::secret_granted`] requests.
    pub const GRANTED_SECRETS: &str = "*";

    /// Request the `network` interface: TCP reachability probes, HTTP GETs
    /// and webhook POSTs to the stage's `connect` grant (see
    /// [`crate::network`]).
    pub fn connect(self, reason: impl Into<String>) -> Self {
        self.request(Capability::Connect, reason)
    }

    /// Request to ask humans for approval (see [`crate::approval`]).
    pub fn approval(self, reason: impl Into<String>) -> Self {
        self.request(Capability::Approval, reason)
    }

    /// The plugin's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The plugin's version.
    pub fn version(&self) -> &str {
        &self.version
    }

    /// The requested capabilities with their reasons, in request order.
    pub fn requests(&self) -> &[(Capability, String)] {
        &self.requests
    }

    pub(crate) fn into_wit(self, config_schema: Option<String>) -> PluginInfo {
        PluginInfo {
            name: self.name,
            version: self.version,
            description: self.description,
            requests: self
                .requests
                .into_iter()
                .map(|(capability, reason)| CapabilityRequest { capability, reason })
                .collect(),
            config_schema,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builder_keeps_requests_in_order() {
        let info = Info::new("hello", "1.2.3")
            .description("says hello")
            .exec("echo", "to greet")
            .exec_granted("to run the steps")
            .read("r")
            .write("w")
            .env("HOME", "e")
            .env_granted("e*")
            .secret("TOKEN", "s")
            .secret_granted("s*")
            .connect("c")
            .approval("a");
        let wit = info.into_wit(Some("{}".into()));
        assert_eq!(wit.name, "hello");
        assert_eq!(wit.version, "1.2.3");
        assert_eq!(wit.description, "says hello");
        assert_eq!(wit.config_schema.as_deref(), Some("{}"));
        let caps: Vec<_> = wit.requests.iter().map(|r| r.capability.clone()).collect();
        assert_eq!(
            caps,
            [
                Capability::Exec("echo".into()),
                Capability::Exec("*".into()),
                Capability::Read,
                Capability::Write,
                Capability::Env("HOME".into()),
                Capability::Env("*".into()),
                Capability::Secret("TOKEN".into()),
                Capability::Secret("*".into()),
                Capability::Connect,
                Capability::Approval,
            ]
        );
        assert_eq!(wit.requests[0].reason, "to greet");
    }
}
