//! The identity key: one canonical, stable name per workload.

use std::collections::HashMap;

/// The canonical name of the workload described by an identity map.
///
/// - `k8s:<k8s_namespace>/<k8s_service_account>` when either Kubernetes key is
///   present and non-empty: every pod of a deployment running under one
///   service account is one identity, whichever node or pod name.
/// - otherwise `host:<host>:<cgroup_path>:<exe>`, where `host` is the
///   identity map's `host` key if set, else `fallback_host` (the record's host).
///
/// Missing parts are empty (`host:node-a::`). The key is a name, not a format
/// to parse back: a `:` inside a cgroup path or exe is kept as is.
pub fn identity_key(identity: &HashMap<String, String>, fallback_host: &str) -> String {
    let mut key = String::new();
    identity_key_into(&mut key, identity, fallback_host);
    key
}

/// [`identity_key`] written into `key` (cleared first): the indexer keeps one
/// buffer instead of allocating a key per record.
pub fn identity_key_into(key: &mut String, identity: &HashMap<String, String>, fallback_host: &str) {
    let get = |k: &str| identity.get(k).map(String::as_str).unwrap_or("");
    key.clear();
    let (ns, sa) = (get("k8s_namespace"), get("k8s_service_account"));
    if !ns.is_empty() || !sa.is_empty() {
        for part in ["k8s:", ns, "/", sa] {
            key.push_str(part);
        }
        return;
    }
    let host = match get("host") {
        "" => fallback_host,
        h => h,
    };
    for part in ["host:", host, ":", get("cgroup_path"), ":", get("exe")] {
        key.push_str(part);
    }
}

/// A short name for people to read in tables: `curl on vm`,
/// `postgres on db-1 (/system.slice/postgres.service)`; Kubernetes keys are
/// already short (`k8s:payments/api`). Only for display: filters and JSON
/// keep the key. A key that does not split cleanly is shown as it is.
pub fn identity_label(key: &str) -> String {
    let Some(rest) = key.strip_prefix("host:") else { return key.to_string() };
    let Some((host, cg_exe)) = rest.split_once(':') else { return key.to_string() };
    // The exe is an absolute path (or empty): split at the last ":/" or a trailing ':'.
    let (cgroup, exe) = match cg_exe.strip_suffix(':') {
        Some(cg) if !cg.contains(":/") => (cg, ""),
        _ => match cg_exe.rfind(":/") {
            Some(i) => (&cg_exe[..i], &cg_exe[i + 1..]),
            None => return key.to_string(),
        },
    };
    let name = match exe.rsplit('/').next() {
        Some(n) if !n.is_empty() => n,
        _ => "(unknown program)",
    };
    let host = if host.is_empty() { "(unknown host)" } else { host };
    match cgroup {
        "" | "/" => format!("{name} on {host}"),
        cg => format!("{name} on {host} ({cg})"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_read_as_program_on_host() {
        assert_eq!(identity_label("host:vm:/:/usr/bin/curl"), "curl on vm");
        assert_eq!(
            identity_label("host:db-1:/system.slice/postgres.service:/usr/bin/postgres"),
            "postgres on db-1 (/system.slice/postgres.service)"
        );
        assert_eq!(identity_label("host:db-1::"), "(unknown program) on db-1");
        assert_eq!(identity_label("host:h:/a:b:/bin/x"), "x on h (/a:b)");
        assert_eq!(identity_label("host:::/bin/sh"), "sh on (unknown host)");
        assert_eq!(identity_label("k8s:payments/api"), "k8s:payments/api");
        assert_eq!(identity_label("host:h:odd"), "host:h:odd");
        let key = identity_key(&map(&[("cgroup_path", "/wt/test-1"), ("exe", "/usr/sbin/nginx")]), "vm");
        assert_eq!(identity_label(&key), "nginx on vm (/wt/test-1)");
    }

    fn map(kv: &[(&str, &str)]) -> HashMap<String, String> {
        kv.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn kubernetes_identity_is_namespace_and_service_account() {
        let id = map(&[
            ("k8s_namespace", "payments"),
            ("k8s_service_account", "api"),
            ("k8s_pod", "api-7d9f-abcde"),
            ("k8s_node", "node-3"),
            ("cgroup_path", "/kubepods/burstable/pod1/abc"),
            ("exe", "/app/api"),
        ]);
        assert_eq!(identity_key(&id, "node-3"), "k8s:payments/api");
        // Another pod of the same deployment on another node: the same identity.
        let other = map(&[
            ("k8s_namespace", "payments"),
            ("k8s_service_account", "api"),
            ("k8s_pod", "api-7d9f-zzzzz"),
            ("cgroup_path", "/kubepods/besteffort/pod2/def"),
        ]);
        assert_eq!(identity_key(&other, "node-9"), "k8s:payments/api");
        assert_eq!(identity_key(&map(&[("k8s_namespace", "batch")]), "h"), "k8s:batch/");
    }

    #[test]
    fn host_identity_is_host_cgroup_and_exe() {
        let id = map(&[("cgroup_path", "/system.slice/postgres.service"), ("exe", "/usr/bin/postgres")]);
        assert_eq!(identity_key(&id, "db-1"), "host:db-1:/system.slice/postgres.service:/usr/bin/postgres");
        assert_eq!(identity_key(&HashMap::new(), "db-1"), "host:db-1::");
        assert_eq!(identity_key(&map(&[("exe", "/bin/sh")]), ""), "host:::/bin/sh");
        // An explicit host key (peer identities) wins over the record's host.
        assert_eq!(identity_key(&map(&[("host", "web-2"), ("exe", "/bin/x")]), "db-1"), "host:web-2::/bin/x");
        // Empty Kubernetes values do not make a Kubernetes identity.
        assert_eq!(identity_key(&map(&[("k8s_namespace", ""), ("exe", "/bin/x")]), "h"), "host:h::/bin/x");
    }

    #[test]
    fn key_is_independent_of_map_order_and_other_keys() {
        let a = map(&[("exe", "/a"), ("cgroup_path", "/c"), ("exe_sha256", "00"), ("container_id", "x")]);
        let b = map(&[("cgroup_path", "/c"), ("exe", "/a")]);
        assert_eq!(identity_key(&a, "h"), identity_key(&b, "h"));
        // A reused buffer holds only the new key.
        let mut buf = "k8s:stale/key-from-before".to_string();
        identity_key_into(&mut buf, &a, "h");
        assert_eq!(buf, "host:h:/c:/a");
    }
}
