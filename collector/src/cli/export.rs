//! `wiretrail export` (from a collector, or every log in ClickHouse) and
//! `wiretrail prove --clickhouse`.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, bail};

use super::{Case, Conn, FilterArgs, connect};
use crate::clickhouse::ClickHouseArgs;

/// Exports the records matching `filter` from the collector at `conn`.
pub(super) async fn from_collector(conn: &Conn, case: &Case, filter: &FilterArgs, out: &Path) -> anyhow::Result<()> {
    let t = std::time::Instant::now();
    let mut last = t;
    let meta = case.meta()?.export();
    let files = crate::export::export_as(connect(conn).await?, meta, filter.filter()?, |p| {
        if last.elapsed() >= Duration::from_secs(1) || matches!(p, crate::export::Progress::Proving(a, b) if a == b) {
            last = std::time::Instant::now();
            match p {
                crate::export::Progress::Searching(n) => eprintln!("export: {n} records found"),
                crate::export::Progress::Proving(n, of) => eprintln!(
                    "export: {n}/{of} inclusion proofs checked ({:.0}/s)",
                    n as f64 / t.elapsed().as_secs_f64()
                ),
            }
        }
    })
    .await?;
    crate::export::write(out, &files)?;
    let report =
        wiretrail_log::bundle::verify_bundle(&files, None).context("the freshly written bundle does not verify")?;
    eprintln!("exported {} records to {} (checkpoint size {})", report.records, out.display(), report.tree_size);
    Ok(())
}

/// Exports the records matching `filter` from every log stored in
/// ClickHouse: one bundle per log, in `out/<origin>` (a directory created
/// empty); `pins` are `ORIGIN=FILE` first keys.
pub(super) async fn from_clickhouse(
    args: &ClickHouseArgs,
    pins: &[String],
    filter: &FilterArgs,
    out: &Path,
) -> anyhow::Result<()> {
    if crate::export::is_archive(out) {
        bail!("with --clickhouse, --out is a directory (one bundle per log is written in it), not a .tar");
    }
    let cfg = args.config().expect("url is set");
    let pins = super::verify::parse_pins(pins)?;
    let r = crate::clickhouse::reader::Reader::open(&cfg).await?;
    eprintln!("reading ClickHouse at {} (database {})", cfg.url, cfg.database);
    let crate::clickhouse::export::Export { bundles, truncated } = r.export(&filter.filter()?, &pins).await?;
    if truncated {
        eprintln!(
            "WARNING: the search stopped at its limit (--limit); more records may match than were exported: \
             export again with a higher --limit or a narrower filter"
        );
    }
    if bundles.is_empty() {
        bail!("no record in ClickHouse matches the filter; nothing exported");
    }
    crate::export::empty_dir(out)?;
    let mut names = std::collections::BTreeSet::new();
    for b in &bundles {
        let dir = out.join(dir_name(&b.origin, &mut names));
        crate::export::write(&dir, &b.files)?;
        let pin = pins.get(&b.origin).map(|k| k.key_string());
        let report = wiretrail_log::bundle::verify_bundle(&b.files, pin.as_deref())
            .with_context(|| format!("the freshly written bundle of {} does not verify", b.origin))?;
        println!("{}\t{}", b.origin, dir.display());
        eprintln!(
            "exported {} records of {} to {} (checkpoint size {}{})",
            report.records,
            b.origin,
            dir.display(),
            b.tree_size,
            if pin.is_some() { ", pinned key" } else { ", key registered in ClickHouse: pin it with --verifier-key" }
        );
        eprintln!(
            "  the manifest is unsigned (no collector sealed it); check with: wiretrail verify-bundle --allow-unsigned \
             --key FILE {}",
            dir.display()
        );
        if b.after_checkpoint > 0 {
            eprintln!(
                "note: {} matching records of {} lie after its largest verified checkpoint (not yet acknowledged); \
                 they cannot be proven and are not in the bundle",
                b.after_checkpoint, b.origin
            );
        }
    }
    Ok(())
}

/// A directory name for `origin` (letters, digits, `.`, `_`, `-`; others
/// become `_`), unique among `taken`.
fn dir_name(origin: &str, taken: &mut std::collections::BTreeSet<String>) -> PathBuf {
    let base: String = origin
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') { c } else { '_' })
        .collect();
    let base = if base.trim_matches('.').is_empty() { "log".to_string() } else { base };
    // A name ending in ".tar" would be written as an archive.
    let base = if base.ends_with(".tar") { format!("{base}_") } else { base };
    let mut name = base.clone();
    let mut n = 1;
    while !taken.insert(name.clone()) {
        n += 1;
        name = format!("{base}-{n}");
    }
    PathBuf::from(name)
}

/// Prints the inclusion proof of one leaf from ClickHouse alone (JSON).
pub(super) async fn prove(args: &ClickHouseArgs, origin: &str, leaf: u64, pin: Option<&Path>) -> anyhow::Result<()> {
    let cfg = args.config().context("--clickhouse URL is required")?;
    let pin = match pin {
        Some(f) => {
            let text = std::fs::read_to_string(f).with_context(|| format!("reading {}", f.display()))?;
            Some(
                wiretrail_log::merkle::Verifier::parse(&text)
                    .with_context(|| format!("{} is not a verifier key", f.display()))?,
            )
        }
        None => None,
    };
    let r = crate::clickhouse::reader::Reader::open(&cfg).await?;
    eprintln!("reading ClickHouse at {} (database {})", cfg.url, cfg.database);
    let p = r.prove(origin, leaf, pin.as_ref()).await?;
    println!("{}", serde_json::to_string_pretty(&p)?);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::dir_name;

    #[test]
    fn origin_directory_names_are_safe_and_unique() {
        let mut t = Default::default();
        assert_eq!(dir_name("ns/pod/uid", &mut t).to_str(), Some("ns_pod_uid"));
        assert_eq!(dir_name("ns:pod:uid", &mut t).to_str(), Some("ns_pod_uid-2"));
        assert_eq!(dir_name("..", &mut t).to_str(), Some("log"));
        assert_eq!(dir_name("a.b-c_d", &mut t).to_str(), Some("a.b-c_d"));
        assert_eq!(dir_name("x.tar", &mut t).to_str(), Some("x.tar_"));
    }
}
