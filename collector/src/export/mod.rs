//! Evidence bundles from the collector: `wiretrail export` writes the
//! records matching a query with everything needed to check them offline.
//! The bundle format, reading and offline verification (`wiretrail
//! verify-bundle`) are [`wiretrail_log::bundle`]'s; this module builds a
//! bundle through the query API ([`export`]), writes it and seals its
//! manifest on the collector's side ([`seal`]).

mod build;
pub mod seal;

use std::path::{Path, PathBuf};

use wiretrail_log::bundle::{BundleError, Files, tar};

pub use build::{Progress, export, export_as};

/// Errors of export and bundle writing.
#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    /// A query API call failed.
    #[error("{what}: {source}")]
    Rpc {
        /// Which call.
        what: &'static str,
        /// The status.
        #[source]
        source: tonic::Status,
    },
    /// The collector's answer does not check out (the export is refused).
    #[error("collector answer does not verify: {0}")]
    Invalid(String),
    /// The checkpoint or key does not parse or verify.
    #[error(transparent)]
    Note(#[from] wiretrail_log::merkle::NoteError),
    /// Writing bundle files failed.
    #[error(transparent)]
    Bundle(#[from] BundleError),
    /// The output exists and is not an empty directory.
    #[error("{0} already exists (a file, or a directory that is not empty); refusing to overwrite")]
    Exists(PathBuf),
}

fn io(what: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> ExportError {
    let f = wiretrail_log::bundle::io(what, path);
    move |source| ExportError::Bundle(f(source))
}

/// Whether `out` names a single-file (tar) bundle.
pub fn is_archive(out: &Path) -> bool {
    out.extension().is_some_and(|e| e == "tar")
}

/// Creates `out` as a directory, or accepts it if it exists empty.
pub fn empty_dir(out: &Path) -> Result<(), ExportError> {
    match std::fs::read_dir(out) {
        Ok(mut d) => match d.next() {
            Some(_) => Err(ExportError::Exists(out.to_path_buf())),
            None => Ok(()),
        },
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => std::fs::create_dir_all(out).map_err(io("creating", out)),
        Err(e) => Err(io("reading", out)(e)),
    }
}

/// Writes a bundle as a directory or, for `*.tar`, an archive; fsyncs it.
pub fn write(out: &Path, files: &Files) -> Result<(), ExportError> {
    use std::io::Write;
    let put = |path: &Path, bytes: &[u8]| -> Result<(), ExportError> {
        let mut f = std::fs::OpenOptions::new().write(true).create_new(true).open(path).map_err(|e| {
            if e.kind() == std::io::ErrorKind::AlreadyExists {
                ExportError::Exists(path.to_path_buf())
            } else {
                io("creating", path)(e)
            }
        })?;
        f.write_all(bytes).and_then(|_| f.sync_all()).map_err(io("writing", path))
    };
    if is_archive(out) {
        return put(out, &tar::write(files));
    }
    empty_dir(out)?;
    for (name, bytes) in files {
        put(&out.join(name), bytes)?;
    }
    Ok(())
}
