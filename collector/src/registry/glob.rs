//! Glob patterns of registry matches: `*` (any run of characters, `/` included)
//! and `?` (one character); everything else is literal.

/// Whether `text` matches `pattern` as a whole.
pub fn glob_match(pattern: &str, text: &str) -> bool {
    let p: Vec<char> = pattern.chars().collect();
    let t: Vec<char> = text.chars().collect();
    // Iterative matcher with backtracking to the last `*` (linear in practice).
    let (mut pi, mut ti) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while ti < t.len() {
        if pi < p.len() && (p[pi] == '?' || (p[pi] != '*' && p[pi] == t[ti])) {
            pi += 1;
            ti += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some((pi, ti));
            pi += 1;
        } else if let Some((sp, st)) = star {
            pi = sp + 1;
            ti = st + 1;
            star = Some((sp, st + 1));
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|&c| c == '*')
}

#[cfg(test)]
mod tests {
    use super::glob_match;

    #[test]
    fn globs() {
        for (p, t, want) in [
            ("payments", "payments", true),
            ("payments", "payment", false),
            ("pay*", "payments", true),
            ("*", "", true),
            ("", "", true),
            ("", "x", false),
            ("api-?", "api-1", true),
            ("api-?", "api-12", false),
            ("/kubepods/*/pod*", "/kubepods/burstable/pod1/abc", true),
            ("*.service", "/system.slice/postgres.service", true),
            ("*.service", "/system.slice/postgres.socket", false),
            ("a*b*c", "aXXbYYc", true),
            ("a*b*c", "aXXbYY", false),
            ("*a", "bbbba", true),
            ("ü?", "üx", true),
        ] {
            assert_eq!(glob_match(p, t), want, "{p:?} vs {t:?}");
        }
    }
}
