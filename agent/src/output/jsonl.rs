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
    /// Records are counted but not written (benchmarks).
    Discard,
}

impl Sink {
    pub fn stdout() -> Self {
        Sink::Jsonl(std::io::BufWriter::with_capacity(
            1 << 20,
            Box::new(std::io::stdout()),
        ))
    }

    pub fn file(path: &str) -> Result<Self, SinkError> {
        let f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .map_err(|source| SinkError::Open {
                path: path.into(),
                source,
            })?;
        Ok(Sink::Jsonl(std::io::BufWriter::with_capacity(
            1 << 20,
            Box::new(f),
        )))
    }

    pub fn write(&mut self, rec: &JsonRecord) -> Result<(), SinkError> {
        if let Sink::Jsonl(w) = self {
            serde_json::to_writer(&mut *w, rec)
                .map_err(|e| SinkError::Write { source: e.into() })?;
            w.write_all(b"\n")
                .map_err(|source| SinkError::Write { source })?;
        }
        Ok(())
    }

    pub fn flush(&mut self) -> Result<(), SinkError> {
        if let Sink::Jsonl(w) = self {
            w.flush().map_err(|source| SinkError::Write { source })?;
        }
        Ok(())
    }
}
