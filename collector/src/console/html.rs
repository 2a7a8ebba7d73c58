//! HTML building blocks: escaping, the page frame, tables, times.

use std::fmt::Write;

use super::principal::Principal;

/// `s` escaped for HTML text and attribute values.
pub fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// `s` percent-encoded for a query string value.
pub fn url(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            out.push(b as char);
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
    out
}

/// A time in ns since the epoch as RFC 3339 UTC ("-" for 0).
pub fn time(ns: i64) -> String {
    match ns {
        0 => "-".into(),
        _ => format!("<time>{}</time>", esc(&crate::when::fmt_ns(ns))),
    }
}

/// The pages in the navigation bar: (path, label).
const NAV: [(&str, &str); 7] = [
    ("/search", "Search"),
    ("/identities", "Identities"),
    ("/alerts", "Alerts"),
    ("/policy", "Policy"),
    ("/review", "Review"),
    ("/access", "Access log"),
    ("/conversation", "Conversation"),
];

/// A whole page: `title`, the navigation with `current` marked, `body` (already HTML).
pub fn page(who: &Principal, current: &str, title: &str, body: &str) -> String {
    let mut nav = String::new();
    for (href, label) in NAV {
        let cur = if href == current { " aria-current=\"page\"" } else { "" };
        let _ = write!(nav, "<a href=\"{href}\"{cur}>{label}</a>");
    }
    format!(
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>{t} · wiretrail</title><link rel=\"stylesheet\" href=\"/assets/console.css\">\
         <script src=\"/assets/console.js\" defer></script></head><body>\
         <a class=\"skip\" href=\"#main\">Skip to content</a>\
         <header><span class=\"brand\">wiretrail</span><nav aria-label=\"Pages\">{nav}</nav>\
         <span class=\"who\" title=\"{id}\">{id}</span></header>\
         <main id=\"main\"><h1>{t}</h1>{body}</main></body></html>\n",
        t = esc(title),
        id = esc(&who.identity),
    )
}

/// A table with `head` columns and `rows` (cells already HTML).
pub fn table(id: &str, head: &[&str], rows: &[Vec<String>]) -> String {
    let mut s = format!("<table id=\"{}\"><thead><tr>", esc(id));
    for h in head {
        let _ = write!(s, "<th scope=\"col\">{}</th>", esc(h));
    }
    s.push_str("</tr></thead><tbody>");
    for r in rows {
        s.push_str(&row(r));
    }
    s.push_str("</tbody></table>");
    if rows.is_empty() {
        s.push_str("<p class=\"empty\">Nothing matches.</p>");
    }
    s
}

/// One table row (cells already HTML).
pub fn row(cells: &[String]) -> String {
    let mut s = String::from("<tr>");
    for c in cells {
        let _ = write!(s, "<td>{c}</td>");
    }
    s.push_str("</tr>");
    s
}

/// A labelled text input.
pub fn input(name: &str, label: &str, value: &str, hint: &str) -> String {
    format!(
        "<div><label for=\"f-{n}\">{l}</label><input id=\"f-{n}\" name=\"{n}\" value=\"{v}\" placeholder=\"{h}\"></div>",
        n = esc(name),
        l = esc(label),
        v = esc(value),
        h = esc(hint)
    )
}

/// A definition list of (term, value HTML).
pub fn fields(items: &[(&str, String)]) -> String {
    let mut s = String::from("<dl>");
    for (k, v) in items {
        let _ = write!(s, "<dt>{}</dt><dd>{v}</dd>", esc(k));
    }
    s.push_str("</dl>");
    s
}

/// The first `n` characters of a payload as printable text.
pub fn preview(payload: &[u8], n: usize) -> String {
    let t: String =
        String::from_utf8_lossy(payload).chars().take(n).map(|c| if c.is_control() { '.' } else { c }).collect();
    esc(&t)
}

/// A classic hex dump (offset, 16 bytes in hex, ASCII).
pub fn hexdump(b: &[u8]) -> String {
    let mut s = String::new();
    for (i, chunk) in b.chunks(16).enumerate() {
        let _ = write!(s, "{:08x}  ", i * 16);
        for j in 0..16 {
            match chunk.get(j) {
                Some(x) => {
                    let _ = write!(s, "{x:02x} ");
                }
                None => s.push_str("   "),
            }
        }
        s.push(' ');
        s.extend(chunk.iter().map(|&c| if c.is_ascii_graphic() || c == b' ' { c as char } else { '.' }));
        s.push('\n');
    }
    esc(&s)
}

#[cfg(test)]
mod tests {
    #[test]
    fn escapes_markup_and_quotes() {
        assert_eq!(super::esc("<a href=\"x\">'&'</a>"), "&lt;a href=&quot;x&quot;&gt;&#39;&amp;&#39;&lt;/a&gt;");
        assert_eq!(super::url("a b&c=d/é"), "a%20b%26c%3Dd%2F%C3%A9");
        assert_eq!(
            super::hexdump(b"GET <\x00"),
            "00000000  47 45 54 20 3c 00                                GET &lt;.\n"
        );
    }
}
