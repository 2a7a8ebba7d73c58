//! JSON-lines sink.
use std::io::Write;

use super::record::JsonRecord;

#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    #[error("opening output file {path}")]
    Open {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("writing output")]
    Write {
        #[source]
        source: std::io::Error,
    },
}

/// Output destination.
pub enum Sink {
    /// One JSON object per line.
    Jsonl(std::io::BufWriter<Box<dyn Write + Send>>),
    /// One human-readable line per record (see `text::line`).
    Text(std::io::BufWriter<Box<dyn Write + Send>>),
    /// Records are counted but not written (benchmarks).
    Discard,
}

impl Sink {
    pub fn stdout() -> Self {
        Sink::Jsonl(std::io::BufWriter::with_capacity(1 << 20, Box::new(std::io::stdout())))
    }

    pub fn file(path: &str) -> Result<Self, SinkError> {
        let f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .map_err(|source| SinkError::Open { path: path.into(), source })?;
        Ok(Sink::Jsonl(std::io::BufWriter::with_capacity(1 << 20, Box::new(f))))
    }

    /// The same destination, written as text lines.
    pub fn into_text(self) -> Self {
        match self {
            Sink::Jsonl(w) | Sink::Text(w) => Sink::Text(w),
            Sink::Discard => Sink::Discard,
        }
    }

    pub fn write(&mut self, rec: &JsonRecord) -> Result<(), SinkError> {
        match self {
            Sink::Jsonl(w) => {
                serde_json::to_writer(&mut *w, rec).map_err(|e| SinkError::Write { source: e.into() })?;
                w.write_all(b"\n").map_err(|source| SinkError::Write { source })
            }
            Sink::Text(w) => {
                w.write_all(super::text::line(rec).as_bytes()).map_err(|source| SinkError::Write { source })
            }
            Sink::Discard => Ok(()),
        }
    }

    /// A record that is not a captured event (e.g. a TLS library report).
    pub fn write_value(&mut self, v: &serde_json::Value) -> Result<(), SinkError> {
        match self {
            Sink::Jsonl(w) => {
                serde_json::to_writer(&mut *w, v).map_err(|e| SinkError::Write { source: e.into() })?;
                w.write_all(b"\n").map_err(|source| SinkError::Write { source })
            }
            Sink::Text(w) => {
                w.write_all(super::text::value_line(v).as_bytes()).map_err(|source| SinkError::Write { source })
            }
            Sink::Discard => Ok(()),
        }
    }

    pub fn flush(&mut self) -> Result<(), SinkError> {
        if let Sink::Jsonl(w) | Sink::Text(w) = self {
            w.flush().map_err(|source| SinkError::Write { source })?;
        }
        Ok(())
    }
}
