//! ACL tests: the Mosquitto `acl_file` semantics, in our own examples.

use super::*;

const FILE: &str = "
# Anonymous clients may read the public tree.
topic read public/#

user alice
topic readwrite alice/#
topic deny alice/secret
topic sensors/+/temp

user bob smith
topic write inbox/bob

# Patterns apply to everybody, even when written after a `user` section.
pattern write devices/%c/up
pattern read users/%u/#
";

fn acl(default: AclDefault) -> Acl {
    Acl::parse(FILE, "/etc/halyard/acl", default).unwrap()
}

const R: Access = Access::Read;
const W: Access = Access::Write;

#[test]
fn user_sections_scope_topic_rules() {
    let a = acl(AclDefault::Deny);
    assert_eq!(a.rule_count(), 7);
    assert!(a.check_topic("c1", Some("alice"), "alice/notes", W));
    assert!(a.check_topic("c1", Some("alice"), "alice/notes", R));
    assert!(!a.check_topic("c1", Some("bob smith"), "alice/notes", R));
    // A user name may contain spaces: the rest of the `user` line is the name.
    assert!(a.check_topic("c2", Some("bob smith"), "inbox/bob", W));
    assert!(
        !a.check_topic("c2", Some("bob smith"), "inbox/bob", R),
        "write-only"
    );
    // An access word may be omitted: readwrite.
    assert!(a.check_topic("c1", Some("alice"), "sensors/k/temp", W));
    assert!(a.check_topic("c1", Some("alice"), "sensors/k/temp", R));
}

#[test]
fn rules_before_any_user_are_for_anonymous_clients() {
    let a = acl(AclDefault::Deny);
    assert!(a.check_topic("anon", None, "public/news", R));
    assert!(!a.check_topic("anon", None, "public/news", W));
    assert!(
        !a.check_topic("c1", Some("alice"), "public/news", R),
        "not alice's rule"
    );
}

#[test]
fn deny_overrides_grants() {
    let a = acl(AclDefault::Allow);
    assert!(!a.check_topic("c1", Some("alice"), "alice/secret", R));
    assert!(!a.check_topic("c1", Some("alice"), "alice/secret", W));
    assert!(
        a.check_topic("c1", Some("alice"), "alice/secret/x", R),
        "deny is exact here"
    );
}

#[test]
fn patterns_substitute_client_id_and_user() {
    let a = acl(AclDefault::Deny);
    assert!(a.check_topic("dev7", None, "devices/dev7/up", W));
    assert!(a.check_topic("dev7", Some("alice"), "devices/dev7/up", W));
    assert!(!a.check_topic("dev7", None, "devices/dev8/up", W));
    assert!(a.check_topic("x", Some("carol"), "users/carol/inbox", R));
    assert!(!a.check_topic("x", Some("carol"), "users/dave/inbox", R));
    // %u never matches a client without a user name.
    assert!(!a.check_topic("x", None, "users//inbox", R));
    // A client id with a wildcard cannot widen a pattern.
    assert!(!a.check_topic("+", None, "devices/+/up", W));
    assert!(!a.check_topic("#", None, "devices/#", W));
    // Substitution is one pass: a client id spelled "%u" is literal.
    assert!(a.check_topic("%u", Some("carol"), "devices/%u/up", W));
    assert!(!a.check_topic("%u", Some("carol"), "devices/carol/up", W));
}

#[test]
fn default_decides_unmentioned_topics_only() {
    let deny = acl(AclDefault::Deny);
    let allow = acl(AclDefault::Allow);
    assert!(!deny.check_topic("c1", Some("alice"), "elsewhere", W));
    assert!(allow.check_topic("c1", Some("alice"), "elsewhere", W));
    // A topic some rule mentions is decided by the rules, not by the default.
    assert!(!allow.check_topic("c2", Some("bob smith"), "inbox/bob", R));
    assert!(!allow.check_topic("anon", None, "public/x", W));
    // Unknown users have no topic rules; patterns still apply.
    assert!(!deny.check_topic("c9", Some("nobody"), "alice/notes", R));
    assert!(deny.check_topic("c9", Some("nobody"), "devices/c9/up", W));
}

#[test]
fn subscriptions_must_be_covered_by_a_read_rule() {
    let a = acl(AclDefault::Deny);
    let sub = |user, filter| a.check_subscribe("c1", user, filter);
    assert!(sub(Some("alice"), "alice/#"));
    assert!(sub(Some("alice"), "alice/+/x"));
    assert!(sub(Some("alice"), "sensors/+/temp"));
    assert!(!sub(Some("alice"), "sensors/#"), "wider than the rule");
    assert!(!sub(Some("alice"), "#"));
    assert!(sub(None, "public/+"));
    assert!(!sub(None, "+/news"));
    // Write-only rules do not allow subscribing.
    assert!(!a.check_subscribe("c2", Some("bob smith"), "inbox/bob"));
    // A deny rule refuses subscriptions it covers; a wider subscription is allowed and the
    // denied topic is filtered at delivery.
    assert!(!sub(Some("alice"), "alice/secret"));
    assert!(sub(Some("alice"), "alice/#"));
    assert!(!a.check_topic("c1", Some("alice"), "alice/secret", R));
    // Patterns are substituted before the comparison.
    assert!(a.check_subscribe("k", Some("carol"), "users/carol/#"));
    assert!(!a.check_subscribe("k", Some("carol"), "users/+/#"));
    // Shared subscriptions are checked on their inner filter.
    assert!(sub(Some("alice"), "$share/g/alice/+"));
    assert!(!sub(Some("alice"), "$share/g/sensors/#"));
}

#[test]
fn subscriptions_under_default_allow() {
    let a = acl(AclDefault::Allow);
    assert!(
        a.check_subscribe("c1", Some("alice"), "news/#"),
        "no rule covers it"
    );
    assert!(
        !a.check_subscribe("c2", Some("bob smith"), "inbox/bob"),
        "covered, write-only"
    );
    assert!(!a.check_subscribe("c1", Some("alice"), "alice/secret"));
}

#[test]
fn dollar_topics_are_not_granted_by_leading_wildcards() {
    let a = Acl::parse("topic readwrite #\n", "acl", AclDefault::Deny).unwrap();
    assert!(a.check_topic("c", None, "a/b", R));
    assert!(!a.check_topic("c", None, "$SYS/broker/uptime", R));
    assert!(!a.check_subscribe("c", None, "$SYS/#"));
    let a = Acl::parse("topic read $SYS/#\n", "acl", AclDefault::Deny).unwrap();
    assert!(a.check_subscribe("c", None, "$SYS/broker/+"));
}

#[test]
fn check_dispatches_on_wildcards() {
    let a = acl(AclDefault::Deny);
    assert!(a.check("c1", Some("alice"), "alice/+", R));
    assert!(!a.check("c1", Some("alice"), "sensors/#", R));
    assert!(a.check("c1", Some("alice"), "alice/x", W));
}

#[test]
fn comments_blank_lines_and_spaces() {
    let text = "\n   # indented comment\n\t\ntopic   read   a b/#  \n";
    let a = Acl::parse(text, "acl", AclDefault::Deny).unwrap();
    assert!(
        a.check_topic("c", None, "a b/x", R),
        "the filter may contain spaces"
    );
    // `topic #` is a rule on "#", not a comment.
    let a = Acl::parse("topic #\n", "acl", AclDefault::Deny).unwrap();
    assert!(a.check_topic("c", None, "x/y", W));
}

#[test]
fn parse_errors_name_the_file_and_line() {
    for (text, line) in [
        ("topic read a\nfrobnicate x\n", 2),
        ("\n\nuser\n", 3),
        ("topic read\n", 1),
        ("topic read a/#/b\n", 1),
        ("pattern write sport+\n", 1),
    ] {
        let err = Acl::parse(text, "/etc/acl", AclDefault::Deny).unwrap_err();
        assert!(
            matches!(err, AuthError::Parse { line: l, .. } if l == line),
            "{text:?}: {err}"
        );
        assert!(
            err.to_string().starts_with(&format!("/etc/acl:{line}: ")),
            "{err}"
        );
    }
}

#[test]
fn config_and_loading() {
    let c: AclConfig = toml::from_str("").unwrap();
    assert_eq!(c, AclConfig::default());
    assert_eq!(c.default, AclDefault::Allow);
    let c: AclConfig = toml::from_str("default = \"deny\"").unwrap();
    assert_eq!(c.default, AclDefault::Deny);
    assert!(toml::from_str::<AclConfig>("default = \"maybe\"").is_err());
    assert!(toml::from_str::<AclConfig>("fil = \"x\"").is_err());
    let text = toml::to_string(&AclConfig::default()).unwrap();
    assert_eq!(text.trim(), "default = \"allow\"");

    let open = Acl::new(AclConfig::default()).unwrap();
    assert!(open.allows_everything());
    assert!(open.check_topic("c", None, "x", W));
    let closed = Acl::new(AclConfig {
        file: None,
        default: AclDefault::Deny,
    })
    .unwrap();
    assert!(!closed.allows_everything());
    assert!(!closed.check_topic("c", None, "x", W));

    let dir = std::env::temp_dir().join(format!("halyard-auth-acl-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("acl");
    std::fs::write(&path, "topic read a\n").unwrap();
    let cfg = AclConfig {
        file: Some(path.clone()),
        default: AclDefault::Deny,
    };
    let a = Acl::new(cfg).unwrap();
    assert!(!a.allows_everything());
    assert!(!a.check_topic("c", None, "b", R));
    std::fs::write(&path, "topic read b\n").unwrap();
    let b = a.reload().unwrap();
    assert!(b.check_topic("c", None, "b", R) && !a.check_topic("c", None, "b", R));
    std::fs::write(&path, "topic bad/#/x\n").unwrap();
    assert!(matches!(b.reload(), Err(AuthError::Parse { line: 1, .. })));
    std::fs::remove_file(&path).unwrap();
    let err = b.reload().unwrap_err();
    assert!(err.to_string().contains("acl"), "{err}");
    std::fs::remove_dir_all(&dir).unwrap();
}

/// The delivery decisions Mosquitto 2.0.11 made for this file (observed with mosquitto_sub
/// and mosquitto_pub on loopback): who received which of the published topics.
#[test]
fn deliveries_agree_with_mosquitto() {
    let text = "topic read pub/+\nuser alice\ntopic readwrite alice/#\ntopic deny alice/secret\n\
                pattern read dev/%u/#\nuser w\ntopic write #\n";
    let a = Acl::parse(text, "acl", AclDefault::Deny).unwrap();
    let published = [
        "alice/x",
        "alice/secret",
        "dev//x",
        "dev/bob/x",
        "dev/alice/x",
        "pub/x",
        "pub/x/y",
    ];
    for t in published {
        assert!(a.check_topic("w1", Some("w"), t, W), "w may publish {t}");
    }
    let received = |user: Option<&str>, subs: &[&str]| -> Vec<&str> {
        published
            .iter()
            .copied()
            .filter(|t| subs.iter().any(|s| topic_matches(s, t)))
            .filter(|t| a.check_topic("c", user, t, R))
            .collect()
    };
    assert_eq!(received(Some("alice"), &["alice/#"]), ["alice/x"]);
    assert_eq!(received(None, &["dev/#", "pub/#"]), ["pub/x"]);
    assert_eq!(received(Some("bob"), &["dev/#"]), ["dev/bob/x"]);
}
