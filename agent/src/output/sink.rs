//! Where local records go: JSON lines, text lines, or nowhere.
use std::io::Write;

use crate::record::Record;

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
    /// One human-readable line per record (see `record::text::line`).
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

    /// Writes one record.
    pub fn write(&mut self, rec: &Record) -> Result<(), SinkError> {
        match self {
            Sink::Jsonl(w) => {
                serde_json::to_writer(&mut *w, rec).map_err(|e| SinkError::Write { source: e.into() })?;
                w.write_all(b"\n").map_err(|source| SinkError::Write { source })
            }
            Sink::Text(w) => {
                w.write_all(crate::record::text::line(rec).as_bytes()).map_err(|source| SinkError::Write { source })
            }
            Sink::Discard => Ok(()),
        }
    }

    /// Whether records are written at all (false: counted only).
    pub fn writes(&self) -> bool {
        !matches!(self, Sink::Discard)
    }

    pub fn flush(&mut self) -> Result<(), SinkError> {
        if let Sink::Jsonl(w) | Sink::Text(w) = self {
            w.flush().map_err(|source| SinkError::Write { source })?;
        }
        Ok(())
    }
}
