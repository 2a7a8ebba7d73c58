//! Where captured records go. For now: JSON lines (or counted and discarded, for
//! benchmarks). The collector shipper plugs in here later.
pub mod jsonl;
pub mod note;
pub mod record;
pub mod text;
pub mod wire;

pub use jsonl::{Sink, SinkError};
pub use note::AgentNote;
pub use record::JsonRecord;
