//! Parses `curl --trace FILE` output: the exact bytes curl sent and received.

/// (sent, received) byte streams from a curl trace file.
pub fn parse(trace: &str) -> (Vec<u8>, Vec<u8>) {
    let mut sent = Vec::new();
    let mut recv = Vec::new();
    let mut target: Option<bool> = None;
    for line in trace.lines() {
        if line.starts_with("=> Send header") || line.starts_with("=> Send data") {
            target = Some(true);
            continue;
        }
        if line.starts_with("<= Recv header") || line.starts_with("<= Recv data") {
            target = Some(false);
            continue;
        }
        if line.starts_with("==") || line.starts_with("=>") || line.starts_with("<=") {
            target = None;
            continue;
        }
        let Some(to_sent) = target else { continue };
        // "0000: 47 45 54 20 ...  GET ..." : offset, up to 16 hex bytes, then ASCII.
        let Some((off, rest)) = line.split_once(": ") else {
            continue;
        };
        if off.len() != 4 || !off.chars().all(|c| c.is_ascii_hexdigit()) {
            continue;
        }
        let out = if to_sent { &mut sent } else { &mut recv };
        for tok in rest.split(' ').take(16) {
            if tok.len() == 2 && tok.chars().all(|c| c.is_ascii_hexdigit()) {
                out.push(u8::from_str_radix(tok, 16).unwrap());
            } else {
                break;
            }
        }
    }
    (sent, recv)
}

#[cfg(test)]
mod tests {
    #[test]
    fn parses_send_and_receive_blocks() {
        let t = "== Info: Connected\n=> Send header, 4 bytes (0x4)\n0000: 47 45 54 20                                     GET \n<= Recv header, 2 bytes (0x2)\n0000: 0d 0a                                           ..\n== Info: done\n";
        let (s, r) = super::parse(t);
        assert_eq!(s, b"GET ");
        assert_eq!(r, b"\r\n");
    }
}
