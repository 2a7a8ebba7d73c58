//! What TLS discovery finds in files, and what inspecting them costs in
//! memory: `cargo run --release -p wiretrail-agent --example tls_inspect --
//! FILE...` prints each file's inspection, the time it took and the
//! process's peak RSS (`VmHWM`) after it (issue 13: discovery within 128 MiB).

fn status(field: &str) -> String {
    let s = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    s.lines().find(|l| l.starts_with(field)).map(|l| l[field.len()..].trim().to_string()).unwrap_or_default()
}

fn main() {
    let paths: Vec<String> = std::env::args().skip(1).collect();
    if paths.is_empty() {
        eprintln!("usage: tls_inspect FILE...");
        std::process::exit(2);
    }
    println!("start: VmHWM {}", status("VmHWM:"));
    for p in paths {
        let t = std::time::Instant::now();
        let r = wiretrail_agent::capture::tls::elf::inspect(std::path::Path::new(&p));
        let size = std::fs::metadata(&p).map(|m| m.len()).unwrap_or(0);
        println!(
            "{p} ({:.1} MB): {:?} in {:.0} ms; VmHWM {}, VmRSS {}",
            size as f64 / 1e6,
            r.map_err(|e| e.to_string()),
            t.elapsed().as_secs_f64() * 1e3,
            status("VmHWM:"),
            status("VmRSS:")
        );
    }
}
