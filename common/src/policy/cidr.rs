//! Address ranges. IPv4 is handled as IPv4-mapped IPv6 (`::ffff:a.b.c.d`),
//! exactly as the kernel's LPM keys hold it, so `::/0` also covers IPv4.
use std::format;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::string::{String, ToString};

/// An address range: `addr` is the network (no host bits set).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Cidr {
    pub addr: IpAddr,
    pub prefix: u8,
}

/// The 16 bytes of an address as the kernel keys hold it (IPv4-mapped for IPv4).
pub fn mapped(ip: IpAddr) -> [u8; 16] {
    match ip {
        IpAddr::V4(v4) => v4.to_ipv6_mapped().octets(),
        IpAddr::V6(v6) => v6.octets(),
    }
}

fn mask(bytes: &mut [u8], prefix: u32) {
    for (i, b) in bytes.iter_mut().enumerate() {
        let bits = prefix.saturating_sub(i as u32 * 8).min(8);
        *b &= if bits == 0 { 0 } else { 0xffu8 << (8 - bits) };
    }
}

/// Do the first `bits` bits of `a` and `b` agree?
pub(crate) fn prefix_eq(a: &[u8], b: &[u8], bits: u32) -> bool {
    let full = (bits / 8) as usize;
    if a[..full] != b[..full] {
        return false;
    }
    let rest = bits % 8;
    rest == 0 || (a[full] ^ b[full]) >> (8 - rest) == 0
}

impl Cidr {
    /// Parses `a.b.c.d/n`, `x::y/n`, or a bare address (a single host).
    /// Host bits set are an error that suggests the network.
    pub fn parse(text: &str) -> Result<Cidr, CidrError> {
        let (a, p) = match text.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (text, None),
        };
        let addr: IpAddr = a.trim().parse().map_err(|_| CidrError::Invalid(format!("{a:?} is not an IP address")))?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match p {
            None => max,
            Some(p) => match p.trim().parse::<u8>() {
                Ok(n) if n <= max => n,
                _ => return Err(CidrError::Invalid(format!("prefix length {p:?} is not in 0..={max}"))),
            },
        };
        let net = Cidr::network(addr, prefix);
        if net != addr {
            return Err(CidrError::HostBits(Cidr { addr: net, prefix }.to_string()));
        }
        Ok(Cidr { addr, prefix })
    }

    fn network(addr: IpAddr, prefix: u8) -> IpAddr {
        match addr {
            IpAddr::V4(v4) => {
                let mut b = v4.octets();
                mask(&mut b, prefix as u32);
                IpAddr::V4(Ipv4Addr::from(b))
            }
            IpAddr::V6(v6) => {
                let mut b = v6.octets();
                mask(&mut b, prefix as u32);
                IpAddr::V6(Ipv6Addr::from(b))
            }
        }
    }

    /// The prefix length over the 128-bit (mapped) address.
    pub fn mapped_prefix(&self) -> u32 {
        match self.addr {
            IpAddr::V4(_) => 96 + self.prefix as u32,
            IpAddr::V6(_) => self.prefix as u32,
        }
    }

    /// The network's 16 key bytes (IPv4-mapped for IPv4).
    pub fn key_addr(&self) -> [u8; 16] {
        mapped(self.addr)
    }

    /// Is `ip` in the range? Compared in the mapped form, as the kernel does.
    pub fn contains(&self, ip: IpAddr) -> bool {
        prefix_eq(&self.key_addr(), &mapped(ip), self.mapped_prefix())
    }
}

impl core::fmt::Display for Cidr {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

/// Why a CIDR did not parse.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CidrError {
    Invalid(String),
    /// Host bits are set; the network meant is given.
    HostBits(String),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_and_contains() {
        let c = Cidr::parse("10.0.0.0/24").unwrap();
        assert!(c.contains("10.0.0.77".parse().unwrap()));
        assert!(c.contains("::ffff:10.0.0.77".parse().unwrap()));
        assert!(!c.contains("10.0.1.0".parse().unwrap()));
        assert_eq!(c.mapped_prefix(), 120);
        assert_eq!(Cidr::parse("10.0.0.1/24"), Err(CidrError::HostBits("10.0.0.0/24".into())));
        assert_eq!(Cidr::parse("fd00::1/64"), Err(CidrError::HostBits("fd00::/64".into())));
        assert_eq!(Cidr::parse("1.2.3.4").unwrap().prefix, 32);
        assert!(matches!(Cidr::parse("1.2.3.4/33"), Err(CidrError::Invalid(_))));
        assert!(matches!(Cidr::parse("nope/8"), Err(CidrError::Invalid(_))));
        let any6 = Cidr::parse("::/0").unwrap();
        assert!(any6.contains("1.2.3.4".parse().unwrap()));
        let v4any = Cidr::parse("0.0.0.0/0").unwrap();
        assert!(!v4any.contains("fd00::1".parse().unwrap()));
        let c = Cidr::parse("10.1.2.128/25").unwrap();
        assert!(c.contains("10.1.2.200".parse().unwrap()) && !c.contains("10.1.2.100".parse().unwrap()));
    }
}
