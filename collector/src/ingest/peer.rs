//! The agent's identity from its client certificate.

use tonic::Request;
use x509_parser::prelude::{FromDer, GeneralName, X509Certificate};

/// `"CN=<cn>; SAN=<san>,<san>"` of the client certificate, or a marker when
/// the connection carries none (plaintext test servers).
pub fn peer_identity<T>(req: &Request<T>) -> String {
    let Some(certs) = req.peer_certs() else {
        return "unauthenticated:no-client-certificate".to_string();
    };
    let Some(leaf) = certs.first() else {
        return "unauthenticated:no-client-certificate".to_string();
    };
    match X509Certificate::from_der(leaf.as_ref()) {
        Ok((_, cert)) => {
            let cn: Vec<String> =
                cert.subject().iter_common_name().filter_map(|a| a.as_str().ok().map(str::to_string)).collect();
            let mut sans = Vec::new();
            if let Ok(Some(ext)) = cert.subject_alternative_name() {
                for n in &ext.value.general_names {
                    match n {
                        GeneralName::DNSName(d) => sans.push(format!("DNS:{d}")),
                        GeneralName::URI(u) => sans.push(format!("URI:{u}")),
                        GeneralName::RFC822Name(e) => sans.push(format!("email:{e}")),
                        other => sans.push(format!("{other:?}")),
                    }
                }
            }
            format!("CN={}; SAN={}", cn.join(","), sans.join(","))
        }
        Err(e) => format!("unparsable-client-certificate:{e}"),
    }
}
