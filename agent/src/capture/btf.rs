//! A minimal reader of kernel BTF (`/sys/kernel/btf/vmlinux`): just enough to find
//! the byte offset of a struct member, following anonymous structs/unions.
//!
//! Rust eBPF has no CO-RE relocations, so these offsets are computed at start and
//! handed to the programs; a missing member is a start-up error, never a zero.
use std::collections::HashMap;

const BTF_MAGIC: u16 = 0xeb9f;
const KIND_INT: u32 = 1;
const KIND_PTR: u32 = 2;
const KIND_ARRAY: u32 = 3;
const KIND_STRUCT: u32 = 4;
const KIND_UNION: u32 = 5;
const KIND_ENUM: u32 = 6;
const KIND_FWD: u32 = 7;
const KIND_TYPEDEF: u32 = 8;
const KIND_VOLATILE: u32 = 9;
const KIND_CONST: u32 = 10;
const KIND_RESTRICT: u32 = 11;
const KIND_FUNC: u32 = 12;
const KIND_FUNC_PROTO: u32 = 13;
const KIND_VAR: u32 = 14;
const KIND_DATASEC: u32 = 15;
const KIND_FLOAT: u32 = 16;
const KIND_DECL_TAG: u32 = 17;
const KIND_TYPE_TAG: u32 = 18;
const KIND_ENUM64: u32 = 19;

#[derive(Debug, thiserror::Error)]
pub enum BtfError {
    #[error("reading BTF from {path}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("malformed BTF: {what}")]
    Malformed { what: String },
    #[error("kernel BTF has no struct `{name}`")]
    NoStruct { name: String },
    #[error("kernel BTF struct `{strukt}` has no member `{member}` (path `{path}`)")]
    NoMember { strukt: String, member: String, path: String },
    #[error("member `{path}` of `{strukt}` is a bitfield or not byte aligned")]
    Unaligned { strukt: String, path: String },
}

#[derive(Debug, Clone)]
struct Member {
    name: u32,
    ty: u32,
    /// Offset in bits from the start of the containing struct.
    bit_offset: u32,
    /// Non-zero for bitfields (only when the struct's kind_flag is set).
    bitfield_size: u32,
}

#[derive(Debug, Clone)]
enum Type {
    /// struct or union with its members.
    Composite {
        name: u32,
        members: Vec<Member>,
    },
    /// typedef / const / volatile / restrict / type tag: refers to another type.
    Alias {
        target: u32,
    },
    Other,
}

/// Parsed BTF: types by id and the string section.
pub struct Btf {
    types: Vec<Type>,
    strings: Vec<u8>,
    structs_by_name: HashMap<String, u32>,
}

fn u16_at(b: &[u8], off: usize) -> Result<u16, BtfError> {
    b.get(off..off + 2)
        .map(|s| u16::from_le_bytes([s[0], s[1]]))
        .ok_or_else(|| BtfError::Malformed { what: format!("short read at {off}") })
}

fn u32_at(b: &[u8], off: usize) -> Result<u32, BtfError> {
    b.get(off..off + 4)
        .map(|s| u32::from_le_bytes([s[0], s[1], s[2], s[3]]))
        .ok_or_else(|| BtfError::Malformed { what: format!("short read at {off}") })
}

impl Btf {
    /// Reads the running kernel's BTF.
    pub fn from_sys_fs() -> Result<Self, BtfError> {
        Self::from_file("/sys/kernel/btf/vmlinux")
    }

    pub fn from_file(path: &str) -> Result<Self, BtfError> {
        let data = std::fs::read(path).map_err(|source| BtfError::Read { path: path.into(), source })?;
        Self::parse(&data)
    }

    /// Parses a little-endian BTF blob.
    pub fn parse(data: &[u8]) -> Result<Self, BtfError> {
        if u16_at(data, 0)? != BTF_MAGIC {
            return Err(BtfError::Malformed { what: "bad magic (not little-endian BTF)".into() });
        }
        let hdr_len = u32_at(data, 4)? as usize;
        let type_off = u32_at(data, 8)? as usize;
        let type_len = u32_at(data, 12)? as usize;
        let str_off = u32_at(data, 16)? as usize;
        let str_len = u32_at(data, 20)? as usize;
        let types_sec = data
            .get(hdr_len + type_off..hdr_len + type_off + type_len)
            .ok_or_else(|| BtfError::Malformed { what: "type section out of bounds".into() })?;
        let strings = data
            .get(hdr_len + str_off..hdr_len + str_off + str_len)
            .ok_or_else(|| BtfError::Malformed { what: "string section out of bounds".into() })?
            .to_vec();

        // Type id 0 is `void`.
        let mut types = vec![Type::Other];
        let mut off = 0usize;
        while off < types_sec.len() {
            let name = u32_at(types_sec, off)?;
            let info = u32_at(types_sec, off + 4)?;
            let size_or_type = u32_at(types_sec, off + 8)?;
            off += 12;
            let vlen = (info & 0xffff) as usize;
            let kind = (info >> 24) & 0x1f;
            let kind_flag = info >> 31 == 1;
            let ty = match kind {
                KIND_INT => {
                    off += 4;
                    Type::Other
                }
                KIND_PTR | KIND_FWD | KIND_FUNC | KIND_FLOAT => Type::Other,
                KIND_TYPEDEF | KIND_VOLATILE | KIND_CONST | KIND_RESTRICT | KIND_TYPE_TAG => {
                    Type::Alias { target: size_or_type }
                }
                KIND_ARRAY => {
                    off += 12;
                    Type::Other
                }
                KIND_STRUCT | KIND_UNION => {
                    let mut members = Vec::with_capacity(vlen);
                    for i in 0..vlen {
                        let m = off + i * 12;
                        let raw = u32_at(types_sec, m + 8)?;
                        let (bit_offset, bitfield_size) =
                            if kind_flag { (raw & 0xff_ffff, raw >> 24) } else { (raw, 0) };
                        members.push(Member {
                            name: u32_at(types_sec, m)?,
                            ty: u32_at(types_sec, m + 4)?,
                            bit_offset,
                            bitfield_size,
                        });
                    }
                    off += vlen * 12;
                    Type::Composite { name, members }
                }
                KIND_ENUM => {
                    off += vlen * 8;
                    Type::Other
                }
                KIND_FUNC_PROTO => {
                    off += vlen * 8;
                    Type::Other
                }
                KIND_VAR | KIND_DECL_TAG => {
                    off += 4;
                    Type::Other
                }
                KIND_DATASEC | KIND_ENUM64 => {
                    off += vlen * 12;
                    Type::Other
                }
                other => {
                    return Err(BtfError::Malformed {
                        what: format!("unknown BTF kind {other} at type {}", types.len()),
                    });
                }
            };
            types.push(ty);
        }
        if off != types_sec.len() {
            return Err(BtfError::Malformed { what: "type section ends mid-type".into() });
        }
        let mut btf = Btf { types, strings, structs_by_name: HashMap::new() };
        for (id, t) in btf.types.iter().enumerate() {
            if let Type::Composite { name, members } = t {
                // Prefer the definition with members over empty duplicates.
                let n = btf.str(*name).to_string();
                if n.is_empty() {
                    continue;
                }
                let keep = match btf.structs_by_name.get(&n) {
                    Some(&prev) => {
                        matches!(&btf.types[prev as usize], Type::Composite { members: pm, .. } if pm.is_empty())
                            && !members.is_empty()
                    }
                    None => true,
                };
                if keep {
                    btf.structs_by_name.insert(n, id as u32);
                }
            }
        }
        Ok(btf)
    }

    fn str(&self, off: u32) -> &str {
        let s = self.strings.get(off as usize..).unwrap_or(&[]);
        let end = s.iter().position(|&b| b == 0).unwrap_or(s.len());
        std::str::from_utf8(&s[..end]).unwrap_or("")
    }

    fn resolve(&self, mut id: u32) -> u32 {
        for _ in 0..32 {
            match self.types.get(id as usize) {
                Some(Type::Alias { target }) => id = *target,
                _ => break,
            }
        }
        id
    }

    /// Finds `name` among `id`'s members, descending into anonymous members.
    /// Returns (bit offset, member).
    fn find_member(&self, id: u32, name: &str, depth: u32) -> Option<(u32, Member)> {
        if depth > 8 {
            return None;
        }
        let Type::Composite { members, .. } = self.types.get(self.resolve(id) as usize)? else {
            return None;
        };
        for m in members {
            let mname = self.str(m.name);
            if mname == name {
                return Some((m.bit_offset, m.clone()));
            }
            if mname.is_empty()
                && let Some((off, found)) = self.find_member(m.ty, name, depth + 1)
            {
                return Some((m.bit_offset + off, found));
            }
        }
        None
    }

    /// Byte offset of a dotted member path, e.g. `member_offset("sock", "__sk_common.skc_daddr")`.
    pub fn member_offset(&self, strukt: &str, path: &str) -> Result<u32, BtfError> {
        let mut id = *self.structs_by_name.get(strukt).ok_or_else(|| BtfError::NoStruct { name: strukt.into() })?;
        let mut bits = 0u32;
        for part in path.split('.') {
            let (off, m) = self.find_member(id, part, 0).ok_or_else(|| BtfError::NoMember {
                strukt: strukt.into(),
                member: part.into(),
                path: path.into(),
            })?;
            if m.bitfield_size != 0 {
                return Err(BtfError::Unaligned { strukt: strukt.into(), path: path.into() });
            }
            bits += off;
            id = m.ty;
        }
        if !bits.is_multiple_of(8) {
            return Err(BtfError::Unaligned { strukt: strukt.into(), path: path.into() });
        }
        Ok(bits / 8)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Builds a BTF blob: `struct outer { int a; union { int x; struct { int y; int z; }; }; }`.
    fn synthetic() -> Vec<u8> {
        let strings = b"\0int\0outer\0a\0x\0y\0z\0";
        let s = |name: &str| -> u32 {
            let pos = strings
                .windows(name.len() + 2)
                .position(|w| &w[1..=name.len()] == name.as_bytes() && w[0] == 0 && w[name.len() + 1] == 0)
                .unwrap();
            (pos + 1) as u32
        };
        let mut t = Vec::new();
        let mut push = |v: &[u32]| v.iter().for_each(|x| t.extend_from_slice(&x.to_le_bytes()));
        // 1: int
        push(&[s("int"), KIND_INT << 24, 4, 32]);
        // 2: anonymous struct { int y @0; int z @32 }
        push(&[0, (KIND_STRUCT << 24) | 2, 8, s("y"), 1, 0, s("z"), 1, 32]);
        // 3: anonymous union { int x; struct(2) }
        push(&[0, (KIND_UNION << 24) | 2, 8, s("x"), 1, 0, 0, 2, 0]);
        // 4: typedef-like const to the union
        push(&[0, KIND_CONST << 24, 3]);
        // 5: struct outer { int a @0; anon(4) @64 }
        push(&[s("outer"), (KIND_STRUCT << 24) | 2, 16, s("a"), 1, 0, 0, 4, 64]);
        let mut b = Vec::new();
        b.extend_from_slice(&BTF_MAGIC.to_le_bytes());
        b.push(1);
        b.push(0);
        b.extend_from_slice(&24u32.to_le_bytes());
        b.extend_from_slice(&0u32.to_le_bytes());
        b.extend_from_slice(&(t.len() as u32).to_le_bytes());
        b.extend_from_slice(&(t.len() as u32).to_le_bytes());
        b.extend_from_slice(&(strings.len() as u32).to_le_bytes());
        b.extend_from_slice(&t);
        b.extend_from_slice(strings);
        b
    }

    #[test]
    fn finds_members_through_anonymous_unions() {
        let btf = Btf::parse(&synthetic()).unwrap();
        assert_eq!(btf.member_offset("outer", "a").unwrap(), 0);
        assert_eq!(btf.member_offset("outer", "x").unwrap(), 8);
        assert_eq!(btf.member_offset("outer", "y").unwrap(), 8);
        assert_eq!(btf.member_offset("outer", "z").unwrap(), 12);
    }

    #[test]
    fn missing_member_is_an_error_naming_it() {
        let btf = Btf::parse(&synthetic()).unwrap();
        let e = btf.member_offset("outer", "nope").unwrap_err().to_string();
        assert!(e.contains("nope") && e.contains("outer"), "{e}");
        assert!(matches!(btf.member_offset("inner", "a"), Err(BtfError::NoStruct { .. })));
    }

    #[test]
    fn truncated_blob_is_rejected() {
        let b = synthetic();
        assert!(Btf::parse(&b[..b.len() - 30]).is_err());
        assert!(Btf::parse(&[0u8; 4]).is_err());
    }

    #[test]
    fn running_kernel_has_the_offsets_we_need() {
        // Kernel BTF is world-readable; skip only where the kernel has none, and say so.
        let Ok(btf) = Btf::from_sys_fs() else {
            panic!("/sys/kernel/btf/vmlinux unreadable: wiretrail requires kernel BTF");
        };
        let off = crate::capture::offsets::compute(&btf).unwrap();
        assert_eq!(off.skc_family % 2, 0);
        assert!(off.task_files > 0 && off.sk_protocol > 0);
    }
}
