//! cgroup path globs: `*` = any characters but `/`, `**` = any characters,
//! `?` = exactly one character; everything else matches itself. A glob
//! matches the whole path.
use std::string::String;
use std::vec::Vec;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Tok {
    Lit(char),
    /// `*`
    Star,
    /// `**`
    StarStar,
    /// `?`
    One,
}

/// A compiled cgroup glob.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Glob {
    text: String,
    toks: Vec<Tok>,
}

impl Glob {
    /// Compiles a glob. It must be an absolute cgroup path (start with `/`).
    pub fn new(text: &str) -> Result<Glob, &'static str> {
        if !text.starts_with('/') {
            return Err("a cgroup glob must start with '/' (paths are relative to the cgroup v2 root)");
        }
        let mut toks = Vec::new();
        let mut it = text.chars().peekable();
        while let Some(c) = it.next() {
            toks.push(match c {
                '*' if it.peek() == Some(&'*') => {
                    while it.peek() == Some(&'*') {
                        it.next();
                    }
                    Tok::StarStar
                }
                '*' => Tok::Star,
                '?' => Tok::One,
                c => Tok::Lit(c),
            });
        }
        Ok(Glob { text: text.into(), toks })
    }

    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// Does the whole of `path` match?
    pub fn matches(&self, path: &str) -> bool {
        let s: Vec<char> = path.chars().collect();
        // can[j]: the tokens so far can match s[..j].
        let mut can = std::vec![false; s.len() + 1];
        can[0] = true;
        for t in &self.toks {
            let mut next = std::vec![false; s.len() + 1];
            match t {
                Tok::Lit(c) => {
                    for j in 0..s.len() {
                        next[j + 1] = can[j] && s[j] == *c;
                    }
                }
                Tok::One => next[1..].copy_from_slice(&can[..s.len()]),
                Tok::Star | Tok::StarStar => {
                    next[0] = can[0];
                    for j in 0..s.len() {
                        let extend = next[j] && (*t == Tok::StarStar || s[j] != '/');
                        next[j + 1] = can[j + 1] || extend;
                    }
                }
            }
            can = next;
        }
        can[s.len()]
    }
}

impl core::fmt::Display for Glob {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(&self.text)
    }
}

#[cfg(test)]
mod tests {
    use super::Glob;

    fn m(g: &str, p: &str) -> bool {
        Glob::new(g).unwrap().matches(p)
    }

    #[test]
    fn globs() {
        assert!(m("/kubepods.slice/**", "/kubepods.slice/a/b/c.scope"));
        assert!(m("/kubepods.slice/**", "/kubepods.slice/"));
        assert!(!m("/kubepods.slice/**", "/kubepods.slice"));
        assert!(m("/system.slice/*.service", "/system.slice/nginx.service"));
        assert!(!m("/system.slice/*.service", "/system.slice/a/nginx.service"));
        assert!(m("/a/*/c", "/a/b/c"));
        assert!(m("/a/*/c", "/a//c"));
        assert!(!m("/a/*/c", "/a/b/x/c"));
        assert!(m("/a/**/c", "/a/b/x/c"));
        assert!(m("/a/**c", "/a/c"));
        assert!(m("/a?c", "/abc"));
        assert!(!m("/a?c", "/ac"));
        assert!(!m("/a?c", "/abbc"));
        assert!(m("/exact", "/exact"));
        assert!(!m("/exact", "/exact/more"));
        assert!(!m("/exact", "/exac"));
        assert!(m("/*", "/"));
        assert!(m("/x*y*z", "/xaaybbz"));
        assert!(!m("/x*y*z", "/xaaybb"));
        assert!(m("/é*", "/été"));
        assert!(Glob::new("relative/*").is_err());
    }
}
