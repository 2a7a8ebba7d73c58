//! Request metadata recorded in access entries, and the client-side
//! interceptor that sends it (`wiretrail ... --case ID`, exports).

use tonic::metadata::MetadataValue;

/// Metadata key of the case id.
pub const CASE: &str = "x-wiretrail-case";
/// Metadata key of the purpose (`export`).
pub const PURPOSE: &str = "x-wiretrail-purpose";
/// Longest case id or purpose accepted.
pub const MAX_LEN: usize = 200;

/// Adds the case id and purpose to every request of a client.
#[derive(Debug, Clone, Default)]
pub struct Meta {
    /// Case id ("" = none).
    pub case_id: String,
    /// Purpose ("" = none, "export").
    pub purpose: String,
}

impl Meta {
    /// With `case_id` (checked: printable ASCII, at most [`MAX_LEN`]).
    pub fn case(case_id: Option<&str>) -> Result<Meta, String> {
        let c = case_id.unwrap_or("");
        if c.len() > MAX_LEN || !c.chars().all(|ch| ch.is_ascii_graphic() || ch == ' ') {
            return Err(format!("--case must be at most {MAX_LEN} printable ASCII characters"));
        }
        Ok(Meta { case_id: c.to_string(), purpose: String::new() })
    }

    /// The same with purpose `export`.
    pub fn export(mut self) -> Meta {
        self.purpose = "export".into();
        self
    }
}

impl tonic::service::Interceptor for Meta {
    fn call(&mut self, mut req: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        for (k, v) in [(CASE, &self.case_id), (PURPOSE, &self.purpose)] {
            if !v.is_empty() {
                let v = MetadataValue::try_from(v.as_str())
                    .map_err(|_| tonic::Status::invalid_argument(format!("{k} is not valid metadata")))?;
                req.metadata_mut().insert(k, v);
            }
        }
        Ok(req)
    }
}
