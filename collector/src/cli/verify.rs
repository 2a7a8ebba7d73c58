//! `wiretrail verify`: a data directory against its signed checkpoints, or
//! every log stored in ClickHouse (clustered mode).

use std::path::PathBuf;

use anyhow::{Context, bail};

use wiretrail_log::merkle::Verifier;

/// Verifies the log in `data_dir` (resuming from `state` when given).
pub(super) fn data_dir(data_dir: Option<PathBuf>, key: Option<PathBuf>, state: Option<PathBuf>) -> anyhow::Result<()> {
    let data_dir = data_dir.context("--data-dir or --clickhouse is required")?;
    let key = key.unwrap_or_else(|| data_dir.join("verifier.key"));
    let v = Verifier::parse(&std::fs::read_to_string(&key).with_context(|| format!("reading {}", key.display()))?)?;
    let resume = match &state {
        Some(p) if p.exists() => Some(serde_json::from_slice(&std::fs::read(p)?).context("parsing state file")?),
        _ => None,
    };
    let t = std::time::Instant::now();
    let (report, new_state) = wiretrail_log::verify::verify(&data_dir, &v, resume, |n, b| {
        eprintln!(
            "verified {n} records, {:.1} MB of leaves, {:.0} MB/s",
            b as f64 / 1e6,
            b as f64 / 1e6 / t.elapsed().as_secs_f64()
        );
    })?;
    println!("{}", serde_json::to_string_pretty(&report)?);
    if let (Some(p), Some(s)) = (&state, new_state) {
        std::fs::write(p, serde_json::to_vec(&s)?)?;
    }
    if let Some(i) = report.first_bad {
        bail!("verification FAILED at record {i}: {}", report.problem.unwrap_or_default());
    }
    eprintln!(
        "OK: {} records verified against {} checkpoint(s); {} deleted by retention verified by kept hash only",
        report.leaves, report.checkpoints_checked, report.kept_hash_only
    );
    Ok(())
}

/// Verifies every log stored in ClickHouse, per origin; `pins` are
/// `ORIGIN=FILE` pairs naming the first key of a log.
pub(super) async fn from_clickhouse(args: &crate::clickhouse::ClickHouseArgs, pins: &[String]) -> anyhow::Result<()> {
    let cfg = args.config().expect("url is set");
    let pins = parse_pins(pins)?;
    let r = crate::clickhouse::reader::Reader::open(&cfg).await?;
    let t = std::time::Instant::now();
    let reports = r.verify_pinned(&pins).await?;
    let bytes: u64 = reports.iter().map(|r| r.bytes).sum();
    eprintln!(
        "verified {} logs, {:.1} MB of leaves, {:.0} MB/s",
        reports.len(),
        bytes as f64 / 1e6,
        bytes as f64 / 1e6 / t.elapsed().as_secs_f64()
    );
    println!("{}", serde_json::to_string_pretty(&reports)?);
    if reports.is_empty() || reports.iter().any(|r| !r.ok) {
        bail!("verification from ClickHouse FAILED (or nothing to verify)");
    }
    let unpinned: Vec<&str> = reports
        .iter()
        .filter(|r| r.key_source == crate::clickhouse::verify::KeySource::ClickHouse)
        .map(|r| r.origin.as_str())
        .collect();
    if !unpinned.is_empty() {
        eprintln!(
            "note: {} verified from the key registered in ClickHouse itself; pin each log's first key \
             (--verifier-key ORIGIN=FILE) for a check independent of the database",
            unpinned.join(", ")
        );
    }
    Ok(())
}

/// `ORIGIN=FILE` pairs → the verifier key in each file, per origin.
pub(super) fn parse_pins(pins: &[String]) -> anyhow::Result<crate::clickhouse::verify::Pins> {
    let mut out = crate::clickhouse::verify::Pins::new();
    for p in pins {
        let (origin, file) = p
            .split_once('=')
            .filter(|(o, f)| !o.is_empty() && !f.is_empty())
            .with_context(|| format!("--verifier-key {p:?}: expected ORIGIN=FILE"))?;
        let text = std::fs::read_to_string(file).with_context(|| format!("--verifier-key {origin}: reading {file}"))?;
        let key =
            Verifier::parse(&text).with_context(|| format!("--verifier-key {origin}: {file} is not a verifier key"))?;
        if out.insert(origin.to_string(), key).is_some() {
            bail!("--verifier-key: origin {origin} given twice");
        }
    }
    Ok(out)
}
