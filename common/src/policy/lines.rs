//! Where each YAML node is: a second, event-level pass over the file (with
//! libyaml, the parser serde_yaml itself uses) that maps node paths such as
//! `rules[2].from.cidr[0]` to their line and column, so that semantic errors
//! found after deserialization still name the offending node.
use std::boxed::Box;
use std::collections::HashMap;
use std::format;
use std::string::String;
use std::vec::Vec;

use unsafe_libyaml as unsafe_yaml;

use super::error::Pos;

/// Node path → position of the node's first character.
#[derive(Debug, Default)]
pub(crate) struct LineMap {
    nodes: HashMap<String, Pos>,
}

enum Frame {
    Seq { path: String, next: usize },
    Map { path: String, key: Option<String> },
}

/// What one libyaml event means to the walk.
enum Ev {
    Scalar(String),
    SeqStart,
    MapStart,
    Alias,
    End,
    Other,
    Done,
}

/// Safe owner of a libyaml parser reading from a borrowed string.
struct Events<'a> {
    parser: Box<unsafe_yaml::yaml_parser_t>,
    _input: &'a [u8],
}

impl<'a> Events<'a> {
    fn new(input: &'a str) -> Option<Self> {
        // SAFETY: yaml_parser_initialize fully initializes the (boxed, so
        // never moved) parser; the input outlives the parser (`'a`).
        unsafe {
            let mut p: Box<core::mem::MaybeUninit<unsafe_yaml::yaml_parser_t>> =
                Box::new(core::mem::MaybeUninit::uninit());
            if unsafe_yaml::yaml_parser_initialize(p.as_mut_ptr()).fail {
                return None;
            }
            let mut parser = Box::from_raw(Box::into_raw(p).cast::<unsafe_yaml::yaml_parser_t>());
            unsafe_yaml::yaml_parser_set_encoding(&mut *parser, unsafe_yaml::YAML_UTF8_ENCODING);
            unsafe_yaml::yaml_parser_set_input_string(&mut *parser, input.as_ptr(), input.len() as u64);
            Some(Events { parser, _input: input.as_bytes() })
        }
    }

    /// The next event and where it starts; `Done` at the end or on a syntax error.
    fn next(&mut self) -> (Ev, Pos) {
        // SAFETY: the parser is initialized; the event is read only after a
        // successful parse and deleted before returning.
        unsafe {
            let mut event = core::mem::MaybeUninit::<unsafe_yaml::yaml_event_t>::uninit();
            if unsafe_yaml::yaml_parser_parse(&mut *self.parser, event.as_mut_ptr()).fail {
                return (Ev::Done, Pos::default());
            }
            let e = event.as_mut_ptr();
            let pos = Pos { line: (*e).start_mark.line as u32 + 1, column: (*e).start_mark.column as u32 + 1 };
            let ev = match (*e).type_ {
                unsafe_yaml::YAML_SCALAR_EVENT => {
                    let s = (*e).data.scalar;
                    let bytes = core::slice::from_raw_parts(s.value, s.length as usize);
                    Ev::Scalar(String::from_utf8_lossy(bytes).into_owned())
                }
                unsafe_yaml::YAML_SEQUENCE_START_EVENT => Ev::SeqStart,
                unsafe_yaml::YAML_MAPPING_START_EVENT => Ev::MapStart,
                unsafe_yaml::YAML_ALIAS_EVENT => Ev::Alias,
                unsafe_yaml::YAML_SEQUENCE_END_EVENT | unsafe_yaml::YAML_MAPPING_END_EVENT => Ev::End,
                unsafe_yaml::YAML_STREAM_END_EVENT | unsafe_yaml::YAML_NO_EVENT => Ev::Done,
                _ => Ev::Other,
            };
            unsafe_yaml::yaml_event_delete(e);
            (ev, pos)
        }
    }
}

impl Drop for Events<'_> {
    fn drop(&mut self) {
        // SAFETY: initialized in `new`, deleted once.
        unsafe { unsafe_yaml::yaml_parser_delete(&mut *self.parser) }
    }
}

impl LineMap {
    /// Positions of the nodes of the first document (best effort: stops at a syntax error).
    pub(crate) fn new(text: &str) -> LineMap {
        let mut map = LineMap::default();
        let Some(mut events) = Events::new(text) else { return map };
        let mut stack: Vec<Frame> = Vec::new();
        let mut seen_root = false;
        loop {
            let (ev, pos) = events.next();
            let starts_node = matches!(ev, Ev::Scalar(_) | Ev::SeqStart | Ev::MapStart | Ev::Alias);
            if matches!(ev, Ev::Done) {
                break;
            }
            if !starts_node {
                if let Ev::End = ev {
                    stack.pop();
                }
                continue;
            }
            // The path of this node, or None when it is a mapping key.
            let path = match stack.last_mut() {
                None if seen_root => break, // a second document
                None => {
                    seen_root = true;
                    Some(String::new())
                }
                Some(Frame::Seq { path, next }) => {
                    *next += 1;
                    Some(format!("{path}[{}]", *next - 1))
                }
                Some(Frame::Map { path, key }) => match key.take() {
                    None => {
                        *key = Some(match &ev {
                            Ev::Scalar(s) => s.clone(),
                            _ => String::from("?"),
                        });
                        None
                    }
                    Some(k) if path.is_empty() => Some(k),
                    Some(k) => Some(format!("{path}.{k}")),
                },
            };
            let container = matches!(ev, Ev::SeqStart | Ev::MapStart);
            // Scalars (most nodes) move their path into the map; only
            // containers keep a copy for their children.
            let child = match path {
                Some(p) if container => {
                    map.nodes.entry(p.clone()).or_insert(pos);
                    p
                }
                Some(p) => {
                    map.nodes.entry(p).or_insert(pos);
                    continue;
                }
                None if container => String::from("?key"),
                None => continue,
            };
            match ev {
                Ev::SeqStart => stack.push(Frame::Seq { path: child, next: 0 }),
                Ev::MapStart => stack.push(Frame::Map { path: child, key: None }),
                _ => {}
            }
        }
        map
    }

    /// Where the node at `path` is; falls back to its nearest recorded
    /// ancestor (a field left out is reported at its parent).
    pub(crate) fn pos(&self, path: &str) -> Pos {
        let mut p = path;
        loop {
            if let Some(pos) = self.nodes.get(p) {
                return *pos;
            }
            match p.rfind(['.', '[']) {
                Some(i) => p = &p[..i],
                None => return self.nodes.get("").copied().unwrap_or(Pos { line: 1, column: 1 }),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths() {
        let text = r#"version: 1
zones:
  - name: a
    members:
      - uid: 5
      - {exe: /bin/x}
rules:
  - from: {cidr: [10.0.0.0/8, "fd00::/8"]}
    to: a
"#;
        let m = LineMap::new(text);
        assert_eq!(m.pos("version"), Pos { line: 1, column: 10 });
        assert_eq!(m.pos("zones[0]"), Pos { line: 3, column: 5 });
        assert_eq!(m.pos("zones[0].name"), Pos { line: 3, column: 11 });
        assert_eq!(m.pos("zones[0].members[0].uid"), Pos { line: 5, column: 14 });
        assert_eq!(m.pos("zones[0].members[1].exe"), Pos { line: 6, column: 15 });
        assert_eq!(m.pos("rules[0].from.cidr[1]"), Pos { line: 8, column: 31 });
        assert_eq!(m.pos("rules[0].to"), Pos { line: 9, column: 9 });
        // Missing: the nearest ancestor.
        assert_eq!(m.pos("rules[0].ports"), Pos { line: 8, column: 5 });
        assert_eq!(m.pos("nothing"), Pos { line: 1, column: 1 });
    }
}
