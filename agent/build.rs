//! Builds the eBPF programs (`ebpf/`) for `bpfel-unknown-none` and places the
//! object in `OUT_DIR` so the agent can embed it with `include_bytes_aligned!`.
//!
//! Toolchain detection, first match wins:
//! 1. `WIRETRAIL_EBPF_OBJECT=/path/to/obj`: use a prebuilt object (container builds).
//! 2. Debian's `rustc-web` + `rust-web-src` (`/usr/bin/rustc`, sources under
//!    `/usr/lib/rustlib/src`), with `RUSTC_BOOTSTRAP=1` for `-Z build-std=core`.
//! 3. A rustup `nightly` toolchain that has the `rust-src` component.
//!
//! `bpf-linker` must be on PATH or in `~/.cargo/bin`. Anything missing fails the
//! build with a message naming it and the fix (`cargo xtask setup`).
use std::{
    env,
    path::{Path, PathBuf},
    process::Command,
};

fn main() {
    let manifest = PathBuf::from(env::var("CARGO_MANIFEST_DIR").expect("CARGO_MANIFEST_DIR"));
    let root = manifest.parent().expect("workspace root").to_path_buf();
    let out = PathBuf::from(env::var("OUT_DIR").expect("OUT_DIR")).join("wiretrail-ebpf.o");
    for p in ["ebpf/src", "ebpf/Cargo.toml", "common/src", "common/Cargo.toml"] {
        println!("cargo:rerun-if-changed={}", root.join(p).display());
    }
    println!("cargo:rerun-if-env-changed=WIRETRAIL_EBPF_OBJECT");

    if let Ok(obj) = env::var("WIRETRAIL_EBPF_OBJECT") {
        std::fs::copy(&obj, &out).unwrap_or_else(|e| fail(&format!("WIRETRAIL_EBPF_OBJECT={obj}: {e}")));
        return;
    }

    let home = env::var("HOME").unwrap_or_else(|_| "/root".into());
    let cargo_bin = Path::new(&home).join(".cargo/bin");
    let path = format!("{}:{}", cargo_bin.display(), env::var("PATH").unwrap_or_default());
    if which("bpf-linker", &path).is_none() {
        fail("bpf-linker not found on PATH or in ~/.cargo/bin");
    }
    let toolchain = detect_toolchain(&path).unwrap_or_else(|missing| fail(&missing));

    let target_dir = root.join("target/ebpf");
    let mut cmd = toolchain.cargo();
    // The outer build's variables must not leak into the nested one.
    for (k, _) in env::vars() {
        if (k.starts_with("CARGO_") && k != "CARGO_HOME")
            || k.starts_with("RUSTC")
            || k.starts_with("RUSTDOC")
            || k == "RUSTFLAGS"
        {
            cmd.env_remove(k);
        }
    }
    cmd.env("PATH", &path)
        // BTF (func_info) is required for the bpf_loop callback.
        .env("CARGO_ENCODED_RUSTFLAGS", "-Ctarget-cpu=v3\x1f-Clink-arg=--btf\x1f-Clink-arg=--disable-memory-builtins")
        .current_dir(&root)
        .args(["build", "-p", "wiretrail-ebpf", "-Z", "build-std=core", "--release"])
        .args(["--target", "bpfel-unknown-none", "--target-dir"])
        .arg(&target_dir);
    toolchain.configure(&mut cmd);
    let status = cmd.status().unwrap_or_else(|e| fail(&format!("running cargo for eBPF: {e}")));
    if !status.success() {
        eprintln!("\nwiretrail-agent build: building the eBPF programs failed ({status}); see the errors above\n");
        panic!("building the eBPF programs failed ({status})");
    }
    let built = target_dir.join("bpfel-unknown-none/release/wiretrail-ebpf");
    let mut obj = std::fs::read(&built).unwrap_or_else(|e| fail(&format!("reading {}: {e}", built.display())));
    repair_btf(&mut obj).unwrap_or_else(|e| fail(&format!("BTF of {}: {e}", built.display())));
    std::fs::write(&out, obj).unwrap_or_else(|e| fail(&format!("writing {}: {e}", out.display())));
}

fn rd32(b: &[u8], o: usize) -> Result<u32, String> {
    b.get(o..o + 4).map(|s| u32::from_le_bytes(s.try_into().unwrap())).ok_or_else(|| format!("short read at {o}"))
}

fn rd64(b: &[u8], o: usize) -> Result<u64, String> {
    b.get(o..o + 8).map(|s| u64::from_le_bytes(s.try_into().unwrap())).ok_or_else(|| format!("short read at {o}"))
}

/// bpf-linker 0.13 can leave BTF `FUNC` entries for removed memory builtins
/// (memcpy, memset, ...) pointing at type ids that do not exist; the kernel then
/// rejects the whole BTF, and programs using `bpf_loop` (which need func_info)
/// fail to load. No program refers to those declarations, so they are repointed,
/// in place, at the first `FUNC_PROTO`. Returns how many were repaired.
fn repair_btf(obj: &mut [u8]) -> Result<usize, String> {
    if obj.get(..4) != Some(b"\x7fELF") || obj.get(4) != Some(&2) || obj.get(5) != Some(&1) {
        return Err("not a little-endian ELF64 object".into());
    }
    let shoff = rd64(obj, 0x28)? as usize;
    let shentsize = u16::from_le_bytes([obj[0x3a], obj[0x3b]]) as usize;
    let shnum = u16::from_le_bytes([obj[0x3c], obj[0x3d]]) as usize;
    let shstrndx = u16::from_le_bytes([obj[0x3e], obj[0x3f]]) as usize;
    let sh = |i: usize| shoff + i * shentsize;
    let strtab_off = rd64(obj, sh(shstrndx) + 24)? as usize;
    let mut btf = None;
    for i in 0..shnum {
        let name_off = rd32(obj, sh(i))? as usize;
        let name = obj.get(strtab_off + name_off..).unwrap_or(&[]);
        if name.starts_with(b".BTF\0") {
            btf = Some((rd64(obj, sh(i) + 24)? as usize, rd64(obj, sh(i) + 32)? as usize));
        }
    }
    let Some((base, _size)) = btf else {
        return Err("no .BTF section (was --btf passed?)".into());
    };
    let hdr_len = rd32(obj, base + 4)? as usize;
    let type_off = rd32(obj, base + 8)? as usize;
    let type_len = rd32(obj, base + 12)? as usize;
    let start = base + hdr_len + type_off;
    let end = start + type_len;
    // First pass: type count, FUNC entries and the first FUNC_PROTO.
    let mut funcs = Vec::new();
    let mut first_proto = None;
    let mut id = 0u32;
    let mut o = start;
    while o < end {
        id += 1;
        let info = rd32(obj, o + 4)?;
        let vlen = (info & 0xffff) as usize;
        let kind = (info >> 24) & 0x1f;
        let extra = match kind {
            1 | 14 | 17 => 4,
            3 => 12,
            4 | 5 | 15 | 19 => vlen * 12,
            6 | 13 => vlen * 8,
            2 | 7..=12 | 16 | 18 => 0,
            k => return Err(format!("unknown BTF kind {k}")),
        };
        if kind == 12 {
            funcs.push(o + 8);
        }
        if kind == 13 && first_proto.is_none() {
            first_proto = Some(id);
        }
        o += 12 + extra;
    }
    let mut fixed = 0;
    for at in funcs {
        if rd32(obj, at)? > id {
            let proto = first_proto.ok_or("dangling FUNC and no FUNC_PROTO to repoint it to")?;
            obj[at..at + 4].copy_from_slice(&proto.to_le_bytes());
            fixed += 1;
        }
    }
    Ok(fixed)
}

enum Toolchain {
    /// Debian's rustc-web: `/usr/bin/rustc` with sources in `/usr/lib/rustlib/src`.
    Debian,
    /// rustup nightly with rust-src.
    RustupNightly,
}

impl Toolchain {
    fn cargo(&self) -> Command {
        match self {
            Toolchain::Debian => Command::new(env::var("CARGO").unwrap_or_else(|_| "cargo".into())),
            Toolchain::RustupNightly => {
                let mut c = Command::new("rustup");
                c.args(["run", "nightly", "cargo"]);
                c
            }
        }
    }

    fn configure(&self, cmd: &mut Command) {
        if let Toolchain::Debian = self {
            cmd.env("RUSTC", "/usr/bin/rustc").env("RUSTC_BOOTSTRAP", "1");
        }
    }
}

fn detect_toolchain(path: &str) -> Result<Toolchain, String> {
    let debian_src = Path::new("/usr/lib/rustlib/src/rust/library/core");
    if Path::new("/usr/bin/rustc").exists() && debian_src.exists() {
        return Ok(Toolchain::Debian);
    }
    let mut missing = Vec::new();
    if Path::new("/usr/bin/rustc").exists() {
        missing.push("Debian's rust-web-src (apt-get install rust-web-src)".to_string());
    } else {
        missing.push("Debian's rustc-web and rust-web-src (apt-get install rustc-web rust-web-src)".to_string());
    }
    if which("rustup", path).is_some() {
        let sysroot =
            Command::new("rustup").args(["run", "nightly", "rustc", "--print", "sysroot"]).env("PATH", path).output();
        match sysroot {
            Ok(o) if o.status.success() => {
                let root = String::from_utf8_lossy(&o.stdout).trim().to_string();
                if Path::new(&root).join("lib/rustlib/src/rust/library/core").exists() {
                    return Ok(Toolchain::RustupNightly);
                }
                missing.push(
                    "rust-src for the rustup nightly toolchain (rustup component add rust-src --toolchain nightly)"
                        .into(),
                );
            }
            _ => missing.push("a rustup nightly toolchain with rust-src".into()),
        }
    }
    Err(format!("no eBPF-capable Rust toolchain found; missing: {}", missing.join("; or ")))
}

fn which(bin: &str, path: &str) -> Option<PathBuf> {
    path.split(':').map(|d| Path::new(d).join(bin)).find(|p| p.is_file())
}

fn fail(msg: &str) -> ! {
    eprintln!("\nwiretrail-agent build: {msg}\nRun `cargo xtask setup` (as root) to install the eBPF toolchain.\n");
    panic!("wiretrail-agent build: {msg}");
}
