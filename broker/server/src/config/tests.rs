use std::collections::BTreeSet;

use super::*;

fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// Loads `text` as a config file (written to a directory of its own, removed afterwards, so
/// that parallel tests neither share nor leave anything in the temp dir).
fn load_str(text: &str, vars: &[(&str, &str)]) -> Result<Config, ConfigError> {
    static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let dir = std::env::temp_dir().join(format!("halyard-config-test-{}-{n}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(format!("{:x}.toml", fxhash(text)));
    std::fs::write(&path, text).unwrap();
    let result = Config::load(Some(&path), env(vars));
    std::fs::remove_dir_all(&dir).unwrap();
    result
}

fn fxhash(s: &str) -> u64 {
    s.bytes().fold(0xcbf29ce484222325u64, |h, b| {
        (h ^ b as u64).wrapping_mul(0x100000001b3)
    })
}

#[test]
fn default_file_parses() {
    let c = Config::load(None, env(&[])).unwrap();
    assert_eq!(c.listeners.tcp.bind.to_string(), "127.0.0.1:1883");
    assert_eq!(c.admin.bind.to_string(), "127.0.0.1:8081");
    assert_eq!(c.io.backend, Backend::Auto);
    assert_eq!(c, Config::default());
    assert!(c.io.effective_threads() >= 1);
}

#[test]
fn env_overrides_apply() {
    let c = Config::load(
        None,
        env(&[
            ("HALYARD_LISTENERS__TCP__BIND", "127.0.0.1:18831"),
            ("HALYARD_ADMIN__BIND", "127.0.0.1:18081"),
            ("HALYARD_IO__BACKEND", "epoll"),
            ("HALYARD_IO__THREADS", "3"),
            ("HALYARD_NODE__ROLE", "replicant"),
            ("HALYARD_NODE__NAME", "42"),
        ]),
    )
    .unwrap();
    assert_eq!(c.listeners.tcp.bind.to_string(), "127.0.0.1:18831");
    assert_eq!(c.admin.bind.to_string(), "127.0.0.1:18081");
    assert_eq!(c.io.backend, Backend::Epoll);
    assert_eq!(c.io.threads, 3);
    assert_eq!(c.node.role, Role::Replicant);
    assert_eq!(c.node.name, "42");
}

#[test]
fn bad_backend_names_key_and_choices() {
    let err = Config::load(None, env(&[("HALYARD_IO__BACKEND", "foo")]))
        .unwrap_err()
        .to_string();
    assert_eq!(
        err,
        r#"config error: io.backend: expected one of "auto", "uring", "epoll", got "foo""#
    );
}

#[test]
fn bad_address_names_key_and_form() {
    let err = Config::load(None, env(&[("HALYARD_ADMIN__BIND", "localhost")]))
        .unwrap_err()
        .to_string();
    assert!(
        err.starts_with("config error: admin.bind: expected an address like"),
        "{err}"
    );
}

#[test]
fn unknown_keys_and_sections_fail_naming_them() {
    let err = load_str("[io]\nthreadz = 2\n", &[])
        .unwrap_err()
        .to_string();
    assert_eq!(err, "config error: io.threadz: unknown key");
    let err = load_str("[nope]\n", &[]).unwrap_err().to_string();
    assert_eq!(err, "config error: nope: unknown key");
    let err = Config::load(None, env(&[("HALYARD_MQTT__BOGUS", "1")]))
        .unwrap_err()
        .to_string();
    assert_eq!(err, "config error: mqtt.bogus: unknown key");
}

#[test]
fn wrong_type_names_key() {
    let err = load_str("[io]\nthreads = \"many\"\n", &[])
        .unwrap_err()
        .to_string();
    assert!(err.starts_with("config error: io.threads: "), "{err}");
}

#[test]
fn file_overrides_only_the_keys_it_names_and_env_wins() {
    let c = load_str(
        "[io]\nthreads = 2\n[mqtt]\nmax_inflight = 5\n[listeners.ws]\nbind = \"127.0.0.1:0\"\n[cluster]\n",
        &[
            ("HALYARD_IO__THREADS", "6"),
            ("HALYARD_LISTENERS__TLS__BIND", "127.0.0.1:8883"),
            ("HALYARD_LISTENERS__TLS__CERT", "/c.pem"),
            ("HALYARD_LISTENERS__TLS__KEY", "/k.pem"),
        ],
    )
    .unwrap();
    assert_eq!(c.io.threads, 6);
    assert_eq!(c.mqtt.max_inflight, 5);
    assert_eq!(
        c.mqtt.max_queued_messages,
        Config::default().mqtt.max_queued_messages
    );
    assert_eq!(c.listeners.ws.as_ref().map(|w| w.backlog), Some(1024));
    let tls = c.listeners.tls.expect("tls listener from the environment");
    assert_eq!(tls.bind.to_string(), "127.0.0.1:8883");
    assert_eq!(tls.key, std::path::PathBuf::from("/k.pem"));
    assert_eq!(tls.ca, None);
    assert!(!tls.use_identity_as_username);
    assert!(c.listeners.wss.is_none());
}

#[test]
fn tls_listener_requires_cert_and_key() {
    let err = load_str("[listeners.tls]\nbind = \"127.0.0.1:0\"\n", &[])
        .unwrap_err()
        .to_string();
    assert!(err.starts_with("config error: listeners.tls"), "{err}");
}

#[test]
fn syntax_errors_name_the_file() {
    let err = load_str("[io\n", &[]).unwrap_err().to_string();
    assert!(err.starts_with("config error: "), "{err}");
    assert!(err.contains(".toml"), "{err}");
}

#[test]
fn store_section_parses_with_env_overrides_and_names_bad_fields() {
    let c = Config::default();
    assert!(!c.store.enabled, "stateless by default");
    let c = load_str(
        "[store]\nenabled = true\ndir = \"/var/lib/h\"\ncommit_interval_ms = 5\n",
        &[("HALYARD_STORE__COMMIT_MAX_BYTES", "65536")],
    )
    .unwrap();
    assert!(c.store.enabled);
    assert_eq!(c.store.dir, std::path::PathBuf::from("/var/lib/h"));
    assert_eq!(c.store.commit_interval_ms, 5);
    assert_eq!(c.store.commit_max_bytes, 65536);
    assert_eq!(c.store.max_messages_per_session, 10_000);
    let c = Config::load(
        None,
        env(&[
            ("HALYARD_STORE__ENABLED", "true"),
            ("HALYARD_STORE__DIR", "/tmp/s"),
        ]),
    )
    .unwrap();
    assert!(c.store.enabled);
    assert_eq!(c.store.dir, std::path::PathBuf::from("/tmp/s"));
    let err = load_str("[store]\nbogus = 1\n", &[])
        .unwrap_err()
        .to_string();
    assert_eq!(err, "config error: store.bogus: unknown key");
    let err = load_str("[store]\nenabled = true\ncommit_interval_ms = 5000\n", &[])
        .unwrap_err()
        .to_string();
    assert!(
        err.starts_with("config error: store.commit_interval_ms: is 5000"),
        "{err}"
    );
}

#[test]
fn relational_checks_name_the_key() {
    let err = Config::load(None, env(&[("HALYARD_MQTT__MAXIMUM_QOS", "3")]))
        .unwrap_err()
        .to_string();
    assert_eq!(err, "config error: mqtt.maximum_qos: expected 0, 1 or 2");
}

fn leaf_keys(prefix: &str, v: &toml::Value, out: &mut BTreeSet<String>) {
    if let toml::Value::Table(t) = v {
        for (k, child) in t {
            let key = if prefix.is_empty() {
                k.clone()
            } else {
                format!("{prefix}.{k}")
            };
            if child.is_table() {
                leaf_keys(&key, child, out);
            } else {
                out.insert(key);
            }
        }
    }
}

#[test]
fn reference_documents_every_key_with_its_default() {
    let serialized = toml::Value::try_from(Config::default()).unwrap();
    let mut from_struct = BTreeSet::new();
    leaf_keys("", &serialized, &mut from_struct);
    let entries = reference::entries();
    let documented: BTreeSet<String> = entries.iter().map(|e| e.key.clone()).collect();
    assert_eq!(from_struct, documented);
    for e in &entries {
        assert!(!e.doc.is_empty(), "{} has no documentation", e.key);
    }
}

#[test]
fn committed_config_md_is_in_sync() {
    let committed = include_str!("../../CONFIG.md");
    assert_eq!(
        committed,
        reference::markdown(),
        "CONFIG.md is stale: run `cargo run -p halyard-server --bin halyard -- config reference > broker/server/CONFIG.md`"
    );
}

#[test]
fn cluster_is_off_without_seeds_and_built_from_the_env_contract() {
    let c = Config::load(None, env(&[])).unwrap();
    assert!(!c.cluster.enabled(), "no seeds: single node");
    let c = Config::load(
        None,
        env(&[
            ("HALYARD_NODE__NAME", "r1"),
            ("HALYARD_NODE__ROLE", "replicant"),
            ("HALYARD_CLUSTER__LISTEN", "127.0.0.2:29901"),
            ("HALYARD_CLUSTER__SEEDS", "127.0.0.1:29901,127.0.0.3:29901"),
            ("HALYARD_CLUSTER__INITIAL_CORES", "c1,c2,c3"),
            ("HALYARD_CLUSTER__ROUTE_BATCH_MAX", "50"),
            ("HALYARD_STORE__DIR", "/tmp/halyard-x"),
        ]),
    )
    .unwrap();
    assert!(c.cluster.enabled());
    let n = c.cluster_node_config().unwrap();
    assert_eq!(n.node_name, "r1");
    assert_eq!(n.role, halyard_cluster::NodeRole::Replicant);
    assert_eq!(n.listen.to_string(), "127.0.0.2:29901");
    assert_eq!(n.seeds, ["127.0.0.1:29901", "127.0.0.3:29901"]);
    assert_eq!(n.initial_cores, ["c1", "c2", "c3"]);
    assert_eq!(n.route_batch_max, 50);
    assert_eq!(
        n.data_dir.as_deref(),
        Some(std::path::Path::new("/tmp/halyard-x/cluster"))
    );
}

#[test]
fn cluster_errors_name_the_field() {
    let seeds = ("HALYARD_CLUSTER__SEEDS", "127.0.0.1:1");
    let name = ("HALYARD_NODE__NAME", "c1");
    let cases: [(&[(&str, &str)], &str); 4] = [
        (&[seeds, name], "cluster.initial_cores"),
        (
            &[
                seeds,
                name,
                ("HALYARD_CLUSTER__INITIAL_CORES", "c1"),
                ("HALYARD_CLUSTER__LINK_QUEUE_MAX", "0"),
            ],
            "cluster.link_queue_max",
        ),
        (&[seeds, ("HALYARD_CLUSTER__BOGUS", "1")], "cluster.bogus"),
        (
            &[seeds, name, ("HALYARD_CLUSTER__LISTEN", "nowhere")],
            "cluster.listen",
        ),
    ];
    for (vars, key) in cases {
        let err = Config::load(None, env(vars)).unwrap_err().to_string();
        assert!(
            err.starts_with(&format!("config error: {key}:")),
            "{vars:?}: {err}"
        );
    }
}
