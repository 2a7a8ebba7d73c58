//! `--instructions`: the instructions the connection table executes per
//! record and per event, counted by valgrind's callgrind inside
//! `ConnTable::on_event` only (`--toggle-collect`), one run per scenario.
//!
//! Unlike time on a shared VM (where two runs of the same build differ by
//! up to 40 %), the count is the same for the same build and traffic, so a
//! change of a few per cent is visible in one run. It is not a time: memory
//! stalls and branch misses do not count, and an instruction of a copy moves
//! more bytes than one of a parse. The records counted include those of
//! `finish_all` at the end, whose instructions are not: one connection record
//! per connection (64), negligible beside the thousands of exchanges of the
//! small-message scenarios, but most of `http1-bulk`'s. Collection toggles at
//! each entry to and exit from a function whose name matches, so the
//! pattern must match `on_event` alone (a closure inside it would switch
//! counting off).

use std::process::Command;

use anyhow::{Context, bail};

/// Runs `self_exe` under callgrind for scenario `name` with `args` and
/// returns the instructions counted inside `ConnTable::on_event`.
pub fn count(name: &str, args: &[String]) -> anyhow::Result<u64> {
    let exe = std::env::current_exe().context("the benchmark's own path")?;
    let out = Command::new("valgrind")
        .args(["--tool=callgrind", "--callgrind-out-file=/dev/null", "--toggle-collect=*ConnTable*on_event*"])
        .arg(&exe)
        .args(args)
        .args(["--runs", "1", "--only", name])
        .output()
        .context("valgrind (cargo xtask setup installs it)")?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    if !out.status.success() {
        bail!("{name} under callgrind failed ({}): {}", out.status, stderr.trim());
    }
    let n = collected(&stderr)
        .with_context(|| format!("no 'Collected' line in callgrind's output for {name}:\n{stderr}"))?;
    if n == 0 {
        bail!("callgrind counted nothing for {name}: the --toggle-collect pattern matched no function");
    }
    Ok(n)
}

/// The count in callgrind's `==PID== Collected : N` summary line.
fn collected(stderr: &str) -> Option<u64> {
    stderr.lines().find_map(|l| l.split_once("Collected :").and_then(|(_, n)| n.trim().replace(',', "").parse().ok()))
}

#[cfg(test)]
mod tests {
    use super::collected;

    #[test]
    fn reads_callgrinds_summary_line() {
        let err = "==1== Callgrind, a call-graph generating cache profiler\n==1== \n==1== Events    : Ir\n==1== Collected : 160935674\n==1== \n==1== I   refs:      160,935,674\n";
        assert_eq!(collected(err), Some(160_935_674));
        assert_eq!(collected("==1== I   refs: 5\n"), None);
    }
}
