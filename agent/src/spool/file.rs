//! One spooled batch on disk: `WTSB` magic, version, length, CRC-32 and the
//! protobuf-encoded `Batch`. Written to a temporary name, fsynced, renamed,
//! and the directory fsynced, so a file either exists whole or not at all.

use std::io::Write;
use std::path::Path;

use prost::Message;
use wiretrail_proto::v1::Batch;

use super::SpoolError;

/// File magic and format version.
const MAGIC: &[u8; 5] = b"WTSB1";
/// Magic + u32 length + u32 CRC-32.
pub const HEADER_LEN: usize = 5 + 4 + 4;

/// The bytes of a batch file.
pub fn encode(batch: &Batch) -> Vec<u8> {
    let body = batch.encode_to_vec();
    let mut out = Vec::with_capacity(HEADER_LEN + body.len());
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&(body.len() as u32).to_le_bytes());
    out.extend_from_slice(&crc32fast::hash(&body).to_le_bytes());
    out.extend_from_slice(&body);
    out
}

/// Parses a batch file's bytes; `path` is only used in errors.
pub fn decode(path: &Path, bytes: &[u8]) -> Result<Batch, SpoolError> {
    let bad = |why: String| SpoolError::Corrupt { path: path.to_path_buf(), why };
    if bytes.len() < HEADER_LEN || &bytes[..5] != MAGIC {
        return Err(bad("bad header".into()));
    }
    let len = u32::from_le_bytes(bytes[5..9].try_into().expect("4 bytes")) as usize;
    let crc = u32::from_le_bytes(bytes[9..13].try_into().expect("4 bytes"));
    let body = &bytes[HEADER_LEN..];
    if body.len() != len {
        return Err(bad(format!("length {} but header says {len}", body.len())));
    }
    if crc32fast::hash(body) != crc {
        return Err(bad("checksum mismatch".into()));
    }
    Batch::decode(body).map_err(|e| bad(format!("does not decode: {e}")))
}

/// Writes `bytes` to `path` durably (temp file, fsync, rename, fsync directory).
pub fn write_durable(path: &Path, bytes: &[u8]) -> Result<(), SpoolError> {
    let dir = path.parent().expect("spool files live in a directory");
    let tmp = path.with_extension("tmp");
    let io = |what: &'static str, p: &Path| {
        let p = p.to_path_buf();
        move |source| SpoolError::Io { what, path: p, source }
    };
    let mut f = std::fs::File::create(&tmp).map_err(io("creating", &tmp))?;
    f.write_all(bytes).map_err(io("writing", &tmp))?;
    f.sync_data().map_err(io("fsyncing", &tmp))?;
    drop(f);
    std::fs::rename(&tmp, path).map_err(io("renaming", path))?;
    sync_dir(dir)
}

/// fsyncs a directory so renames and unlinks in it are durable.
pub fn sync_dir(dir: &Path) -> Result<(), SpoolError> {
    std::fs::File::open(dir).and_then(|d| d.sync_all()).map_err(|source| SpoolError::Io {
        what: "fsyncing directory",
        path: dir.to_path_buf(),
        source,
    })
}
