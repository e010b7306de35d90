//! The `approval` capability: asking humans. This host version records the
//! request and answers `unavailable`: prompting and `capstan approve` come
//! with the approval stage.

use serde_json::json;
use wasmtime::component::{HasSelf, Linker};

use super::audit::StageAudit;
use crate::runtime::StageState;
use crate::runtime::bindings::capstan::plugin::approval as wit;

/// Per-stage state of the `approval` interface.
pub struct ApprovalHost {
    pub granted: bool,
    pub audit: StageAudit,
}

impl wit::Host for ApprovalHost {
    async fn ask(
        &mut self,
        request: wit::Request,
    ) -> wasmtime::Result<Result<wit::Decision, wit::Error>> {
        let detail = json!({ "subject": request.subject, "digest": request.digest });
        if !self.granted {
            let reason =
                "approval is not granted; add `approval = true` to the stage's grants".to_string();
            self.audit.denied("approval", detail, &reason);
            return Ok(Err(wit::Error::NotPermitted(reason)));
        }
        let reason = "this host cannot collect approvals yet".to_string();
        self.audit.log.record(
            &self.audit.stage,
            &self.audit.plugin,
            "approval",
            true,
            detail,
            Some(reason.clone()),
        );
        Ok(Err(wit::Error::Unavailable(reason)))
    }
}

pub fn add_to_linker(linker: &mut Linker<StageState>) -> wasmtime::Result<()> {
    wit::add_to_linker::<StageState, HasSelf<ApprovalHost>>(linker, |s| &mut s.approval)
}
