//! Text from agents (agent ids, hosts, identities) made safe for logs and
//! terminal tables: control characters (newlines, ESC...) are escaped so one
//! client cannot forge log lines or repaint an operator's terminal.

use std::borrow::Cow;

/// `s` with every control character written as `\n`, `\t`, `\r` or `\u{..}`.
pub fn escape(s: &str) -> Cow<'_, str> {
    if !s.chars().any(char::is_control) {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        if c.is_control() {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    #[test]
    fn control_characters_are_escaped() {
        assert_eq!(super::escape("node-a"), "node-a");
        assert_eq!(super::escape("a\nb\x1b[31mc\t"), "a\\nb\\u{1b}[31mc\\t");
    }
}
