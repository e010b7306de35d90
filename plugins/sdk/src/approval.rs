//! Ask humans to approve a change (the WIT `approval` interface; needs the
//! `approval` capability).
//!
//! ```no_run
//! use capstan_plugin::approval::{self, Decision, Request};
//!
//! # fn main() -> Result<(), capstan_plugin::Error> {
//! let request = Request::new("apply plan to production", "sha256:ab12…")
//!     .details("2 to add, 0 to change, 1 to destroy")
//!     .check("the destroyed resource is the old load balancer");
//! match approval::ask(&request)? {
//!     Decision::Approved(answers) => println!("approved by {}", answers[0].by),
//!     Decision::Rejected(answer) => println!("rejected by {}", answer.by),
//!     Decision::Pending(how) => println!("waiting: {how}"),
//! }
//! # Ok(())
//! # }
//! ```

use crate::Error;
use crate::bindings::capstan::plugin::approval as wit;

pub use wit::{Answer, Decision, Emergency, Policy, Request};

impl Request {
    /// A request to approve `subject` (one line), bound to `digest` (e.g.
    /// the plan file's sha256); one manual approval from anyone but the
    /// run's author.
    #[must_use]
    pub fn new(subject: impl Into<String>, digest: impl Into<String>) -> Self {
        Request {
            subject: subject.into(),
            digest: digest.into(),
            details: String::new(),
            checklist: Vec::new(),
            approvers: Vec::new(),
            required: 1,
            policy: Policy::Manual,
        }
    }

    /// Let the policy approve by itself (e.g. in dev), saying why; the host
    /// records it as an automatic approval.
    #[must_use]
    pub fn automatic(mut self, why: impl Into<String>) -> Self {
        self.policy = Policy::Automatic(why.into());
        self
    }

    /// An emergency override by `by` for `reason`: approved without review,
    /// recorded loudly. The host refuses an empty name or reason.
    #[must_use]
    pub fn emergency_override(mut self, by: impl Into<String>, reason: impl Into<String>) -> Self {
        self.policy = Policy::EmergencyOverride(Emergency {
            by: by.into(),
            reason: reason.into(),
        });
        self
    }

    /// The change, for the reviewer.
    #[must_use]
    pub fn details(mut self, details: impl Into<String>) -> Self {
        self.details = details.into();
        self
    }

    /// Add a point the reviewer must check.
    #[must_use]
    pub fn check(mut self, item: impl Into<String>) -> Self {
        self.checklist.push(item.into());
        self
    }

    /// Add someone who may approve (none: anyone but the run's author).
    #[must_use]
    pub fn approver(mut self, who: impl Into<String>) -> Self {
        self.approvers.push(who.into());
        self
    }

    /// How many distinct approvals are needed.
    #[must_use]
    pub fn required(mut self, count: u32) -> Self {
        self.required = count;
        self
    }
}

/// Ask for approval of `request`. A refused capability is
/// [`Error::NotPermitted`]; an unavailable approval service is
/// [`Error::Failed`].
pub fn ask(request: &Request) -> Result<Decision, Error> {
    wit::ask(request).map_err(|e| match e {
        wit::Error::NotPermitted(m) => Error::not_permitted(m),
        wit::Error::Unavailable(m) => Error::failed(format!("approval unavailable: {m}")),
    })
}
