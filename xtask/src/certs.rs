//! `cargo xtask certs --out DIR`: a local CA, the collector's server certificate
//! and client certificates (agents, the security team's CLI) for demos and tests.
//!
//! Files: `ca.pem`/`ca.key`, `collector.pem`/`.key` (SAN collector, localhost,
//! 127.0.0.1), and `<client>.pem`/`.key` per client: CN = name and one URI SAN
//! `spiffe://wiretrail/role/<role>/<name>` per role (the collector's roles,
//! see docs/roles.md). A client is `name` or `name:role+role` (`name:` = no
//! role); without roles, `security` (the security team's CLI) is reviewer and
//! auditor, `reviewer`, `auditor` and `admin` are that role, any other name
//! (a node) is agent.

use std::path::Path;

use anyhow::Context;
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SanType,
};

fn write(dir: &Path, name: &str, cert: &str, key: &KeyPair) -> anyhow::Result<()> {
    std::fs::write(dir.join(format!("{name}.pem")), cert).with_context(|| format!("writing {name}.pem"))?;
    let kp = dir.join(format!("{name}.key"));
    std::fs::write(&kp, key.serialize_pem()).with_context(|| format!("writing {}", kp.display()))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&kp, std::fs::Permissions::from_mode(0o600))?;
    }
    Ok(())
}

fn dn(cn: &str) -> DistinguishedName {
    let mut d = DistinguishedName::new();
    d.push(DnType::CommonName, cn);
    d.push(DnType::OrganizationName, "wiretrail local");
    d
}

/// A client's name and roles (`name` or `name:role+role`).
pub fn client_roles(client: &str) -> (&str, Vec<&str>) {
    if let Some((name, roles)) = client.split_once(':') {
        return (name, roles.split('+').filter(|r| !r.is_empty()).collect());
    }
    let roles = match client {
        "security" => vec!["reviewer", "auditor"],
        "reviewer" | "auditor" | "admin" => vec![client],
        _ => vec!["agent"],
    };
    (client, roles)
}

/// Creates the CA, the collector certificate and one client certificate per name in `clients`.
pub fn generate(out: &Path, clients: &[&str]) -> anyhow::Result<()> {
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    let ca_key = KeyPair::generate()?;
    let mut ca = CertificateParams::new(Vec::<String>::new())?;
    ca.distinguished_name = dn("wiretrail local CA");
    ca.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
    let ca_cert = ca.self_signed(&ca_key)?;
    write(out, "ca", &ca_cert.pem(), &ca_key)?;
    let issuer = Issuer::new(ca, &ca_key);

    let key = KeyPair::generate()?;
    let mut p =
        CertificateParams::new(vec!["collector".to_string(), "localhost".to_string(), "127.0.0.1".to_string()])?;
    p.distinguished_name = dn("collector");
    p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    write(out, "collector", &p.signed_by(&key, &issuer)?.pem(), &key)?;

    for client in clients {
        let (name, roles) = client_roles(client);
        let key = KeyPair::generate()?;
        let mut p = CertificateParams::new(Vec::<String>::new())?;
        p.distinguished_name = dn(name);
        p.subject_alt_names = roles
            .iter()
            .map(|r| Ok(SanType::URI(format!("spiffe://wiretrail/role/{r}/{name}").try_into()?)))
            .collect::<anyhow::Result<_>>()?;
        if roles.is_empty() {
            p.subject_alt_names = vec![SanType::URI(format!("spiffe://wiretrail/{name}").try_into()?)];
        }
        p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        write(out, name, &p.signed_by(&key, &issuer)?.pem(), &key)?;
    }
    Ok(())
}
