//! Policy: the decisions and violations recorded (policy alerts) and a
//! what-if of a policy file against recorded flows (`wiretrail policy check`).

use axum::Extension;
use axum::extract::{Form, State};
use axum::response::Html;
use wiretrail_common::policy::Policy;

use super::Console;
use super::fail::Failure;
use super::html::{esc, input, page as frame, table};
use super::principal::Principal;

/// Most records searched for a what-if.
pub const MAX_RECORDS: u64 = 100_000;

/// The what-if form.
#[derive(Debug, Clone, Default, serde::Deserialize)]
#[serde(default)]
pub struct WhatIf {
    /// The policy file's text.
    pub policy: String,
    /// Flows recorded in the last ... ("" = all).
    pub since: String,
}

fn form(w: &WhatIf) -> String {
    format!(
        "<form class=\"stack\" method=\"post\" action=\"/policy\" aria-label=\"What-if\">\
         <label for=\"f-file\">Policy file</label><input type=\"file\" id=\"f-file\" data-into=\"f-policy\" accept=\".yaml,.yml,.json,.txt\">\
         <label for=\"f-policy\">Policy (YAML, see docs/policy.md)</label>\
         <textarea id=\"f-policy\" name=\"policy\" rows=\"10\">{}</textarea>{}\
         <div class=\"actions\"><button type=\"submit\" id=\"what-if\">Check against recorded flows</button></div></form>",
        esc(&w.policy),
        input("since", "Flows recorded since", &w.since, "last 24h")
    )
}

async fn decisions(c: &Console, who: &Principal) -> Result<String, Failure> {
    let mut rows = Vec::new();
    for kind in ["policy_denied", "policy_violation"] {
        rows.extend(super::alerts::list(c, who, kind).await?.iter().map(super::alerts::cells));
    }
    Ok(table("decisions", &super::alerts::HEAD, &rows))
}

/// `GET /policy`.
pub async fn page(State(c): State<Console>, Extension(who): Extension<Principal>) -> Result<Html<String>, Failure> {
    let body = format!(
        "<h2>Decisions and violations</h2>{}<h2>What if</h2>{}",
        decisions(&c, &who).await?,
        form(&WhatIf::default())
    );
    Ok(Html(frame(&who, "/policy", "Policy", &body)))
}

/// `POST /policy`: the what-if report.
pub async fn what_if(
    State(c): State<Console>,
    Extension(who): Extension<Principal>,
    Form(w): Form<WhatIf>,
) -> Result<Html<String>, Failure> {
    let policy = Policy::parse(&w.policy).map_err(|e| Failure::Input(format!("policy: {e}")))?;
    let shortfalls = policy.shortfalls();
    if !shortfalls.is_empty() {
        let list: Vec<_> = shortfalls.iter().map(|s| s.to_string()).collect();
        return Err(Failure::Input(format!("the agent cannot install this policy: {}", list.join("; "))));
    }
    let params = super::search::Params { since: w.since.clone(), ..Default::default() };
    let filter = params.filter(wiretrail_log::store::now_ns(), MAX_RECORDS)?;
    let channel = c.backend.channel(&who).await?;
    let opened = crate::policy_check::search(channel, filter).await.map_err(|e| match e {
        crate::policy_check::CheckError::Collector(m) if m.contains("needs role") => {
            Failure::Api(tonic::Status::permission_denied(m))
        }
        other => Failure::Api(tonic::Status::internal(other.to_string())),
    })?;
    let report = crate::policy_check::replay(&policy, &opened);
    let mut out = Vec::new();
    crate::policy_check::table(&mut out, &policy, &report).map_err(|e| Failure::Input(e.to_string()))?;
    let body = format!(
        "<h2>What if: {} connection opens replayed</h2><pre id=\"report\">{}</pre><h2>Check another</h2>{}",
        opened.len(),
        esc(&String::from_utf8_lossy(&out)),
        form(&w)
    );
    Ok(Html(frame(&who, "/policy", "Policy", &body)))
}
