//! Issue 5: authentication, ACL, bans, SIGHUP reload, admin token and per-source limits.
//!
//! Halyard-only (password files made by `halyard passwd`, the admin ban API and metrics).

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::time::Duration;

use halyard_tests::broker::run_halyard;
use halyard_tests::raw::{Connect, Props, Publish, RawClient, Version};
use halyard_tests::{TestBroker, WAIT, require_halyard, wait_for};

/// A fresh directory for one test's password and ACL files.
fn dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir()
        .join("halyard-tests-security")
        .join(format!("{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).expect("create the test directory");
    d
}

/// `halyard passwd [-c] -b FILE USER PASSWORD`.
fn passwd(file: &std::path::Path, create: bool, user: &str, password: &str) {
    let f = file.to_str().expect("utf-8 path");
    let mut args = vec!["passwd"];
    if create {
        args.push("-c");
    }
    args.extend(["-b", f, user, password]);
    let out = run_halyard(&args, &[], Duration::from_secs(30)).expect("halyard passwd finished");
    assert!(out.status.success(), "halyard passwd: {out:?}");
}

/// A broker whose `[acl]` file holds `rules`, with `default`; the file, to rewrite.
fn acl_broker(name: &str, rules: &str, default: &str) -> (TestBroker, PathBuf) {
    let acl = dir(name).join("acl");
    std::fs::write(&acl, rules).unwrap();
    let toml = format!(
        "[acl]\nfile = {:?}\ndefault = {default:?}\n",
        acl.to_str().unwrap()
    );
    (TestBroker::start_with_config(&toml, &[]), acl)
}

/// Sends SIGHUP (reload the password and ACL files) to the broker.
fn sighup(b: &TestBroker) {
    let st = std::process::Command::new("kill")
        .args(["-HUP", &b.pid().to_string()])
        .status()
        .expect("kill -HUP");
    assert!(st.success());
}

fn connect(
    addr: std::net::SocketAddr,
    v: Version,
    id: &str,
    user: Option<&str>,
    pw: Option<&str>,
) -> u8 {
    let mut c = Connect::new(v, id);
    c.username = user.map(str::to_owned);
    c.password = pw.map(|p| p.as_bytes().to_vec());
    RawClient::connect(addr, &c).2
}

/// One admin HTTP request with optional bearer token and body; returns the status code.
fn admin(b: &TestBroker, method: &str, path: &str, token: Option<&str>, body: &str) -> u16 {
    let mut s = TcpStream::connect(b.admin_addr()).expect("admin connect");
    s.set_read_timeout(Some(WAIT)).expect("timeout");
    let auth = token.map_or(String::new(), |t| format!("Authorization: Bearer {t}\r\n"));
    let req = format!(
        "{method} {path} HTTP/1.1\r\nHost: x\r\n{auth}Content-Length: {}\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes()).expect("admin write");
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    out.split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0)
}

/// A wrong password is refused with 0x86 (5.0, [MQTT-3.2.2-?] reason code table) and return
/// code 4 (3.1.1, "bad user name or password"); the right one is accepted.
#[test]
fn wrong_password_refused_with_the_version_code() {
    require_halyard();
    let d = dir("pw");
    let file = d.join("passwd");
    passwd(&file, true, "alice", "secret");
    let toml = format!("[auth]\npassword_file = {:?}\n", file.to_str().unwrap());
    let b = TestBroker::start_with_config(&toml, &[]);
    let a = b.mqtt_addr();
    assert_eq!(
        connect(a, Version::V5, "c5", Some("alice"), Some("nope")),
        0x86
    );
    assert_eq!(
        connect(a, Version::V311, "c3", Some("alice"), Some("nope")),
        4
    );
    assert_eq!(
        connect(a, Version::V5, "c5", Some("alice"), Some("secret")),
        0
    );
    assert_eq!(
        connect(a, Version::V311, "c3", Some("alice"), Some("secret")),
        0
    );
    let m = b.metrics();
    assert!(m.get("halyard_auth_denials_total{reason=\"bad_credentials\"}") >= Some(2.0));
}

/// With `allow_anonymous = false` a CONNECT without user name gets 0x87 / return code 5.
#[test]
fn anonymous_refused_when_not_allowed() {
    require_halyard();
    let b = TestBroker::start_with_config("[auth]\nallow_anonymous = false\n", &[]);
    let a = b.mqtt_addr();
    assert_eq!(connect(a, Version::V5, "anon5", None, None), 0x87);
    assert_eq!(connect(a, Version::V311, "anon3", None, None), 5);
}

/// ACL: SUBSCRIBE to a denied filter gets 0x87 (5.0) / 0x80 (3.1.1) [MQTT-3.9.3-?]; a QoS 1
/// PUBLISH to a denied topic gets PUBACK 0x87 (5.0) and is not delivered.
#[test]
fn acl_denies_subscribe_and_publish() {
    require_halyard();
    let (b, _) = acl_broker("acl", "topic readwrite open/#\n", "deny");
    let a = b.mqtt_addr();
    let mut c5 = RawClient::connected(a, Version::V5, "s5");
    assert_eq!(
        c5.subscribe(1, &[("secret/x", 1), ("open/x", 1)], &Props::new()),
        vec![0x87, 1]
    );
    let mut c3 = RawClient::connected(a, Version::V311, "s3");
    assert_eq!(
        c3.subscribe(1, &[("secret/x", 1)], &Props::new()),
        vec![0x80]
    );
    let mut p = RawClient::connected(a, Version::V5, "p5");
    assert_eq!(p.publish(&Publish::new("secret/x", b"m").qos(1, 7)), 0x87);
    assert_eq!(p.publish(&Publish::new("open/x", b"m").qos(1, 8)), 0);
    let got = c5.recv_publish();
    let (topic, payload, ..) = halyard_tests::raw::publish_parts(&got);
    assert_eq!((topic, payload), ("open/x", &b"m"[..]));
}

/// SIGHUP reloads the ACL file: an ACL that allowed everything (no rule, default allow: the
/// publish path skips the checks) then restricts both checks, the write check on PUBLISH
/// (0x87) and the read check at delivery, for clients connected and subscribed before.
#[test]
fn sighup_reloads_an_open_acl_into_a_restricted_one() {
    require_halyard();
    let (b, acl) = acl_broker("acl-hup", "# nothing yet\n", "allow");
    let a = b.mqtt_addr();
    let mut sub = RawClient::connected(a, Version::V5, "hup-sub");
    assert_eq!(sub.subscribe(1, &[("#", 0)], &Props::new()), vec![0]);
    let mut p = RawClient::connected(a, Version::V5, "hup-pub");
    assert_eq!(p.publish(&Publish::new("blocked/x", b"1").qos(1, 1)), 0);
    assert_eq!(p.publish(&Publish::new("secret/x", b"1").qos(1, 2)), 0);
    let got = sub.recv_publish();
    assert_eq!(halyard_tests::raw::publish_parts(&got).0, "blocked/x");
    let got = sub.recv_publish();
    assert_eq!(halyard_tests::raw::publish_parts(&got).0, "secret/x");

    // `secret/#` may be written but not read; `blocked/#` is denied; other topics stay open.
    std::fs::write(&acl, "topic write secret/#\ntopic deny blocked/#\n").unwrap();
    sighup(&b);
    let mut id = 10;
    let reloaded = wait_for(WAIT, || {
        id += 1;
        (p.publish(&Publish::new("blocked/x", b"2").qos(1, id)) == 0x87).then_some(())
    });
    assert!(
        reloaded.is_some(),
        "PUBLISH to blocked/x refused after SIGHUP"
    );
    // Written (PUBACK 0) but not delivered: the subscriber gets the later message on an
    // open topic (same publisher, so in order) and never this one. (`blocked/x` attempts
    // made before the reload took effect were delivered: skip them.)
    assert_eq!(p.publish(&Publish::new("secret/x", b"2").qos(1, 2)), 0);
    assert_eq!(p.publish(&Publish::new("open/x", b"2").qos(1, 3)), 0);
    loop {
        let got = sub.recv_publish();
        let (topic, payload, ..) = halyard_tests::raw::publish_parts(&got);
        assert_ne!(topic, "secret/x", "delivered despite the reloaded ACL");
        if topic == "open/x" {
            assert_eq!(payload, b"2");
            break;
        }
        assert_eq!(topic, "blocked/x");
    }
}

/// A client id banned through `POST /bans` is refused with 0x8A; `DELETE` lifts the ban.
#[test]
fn banned_client_id_refused_with_0x8a() {
    require_halyard();
    let b = TestBroker::start();
    let ban = r#"{"kind":"client_id","value":"bad-dev","reason":"test"}"#;
    assert_eq!(admin(&b, "POST", "/bans", None, ban), 201);
    assert_eq!(
        connect(b.mqtt_addr(), Version::V5, "bad-dev", None, None),
        0x8A
    );
    assert_eq!(
        connect(b.mqtt_addr(), Version::V5, "good-dev", None, None),
        0
    );
    assert_eq!(admin(&b, "GET", "/bans", None, ""), 200);
    assert_eq!(
        admin(&b, "DELETE", "/bans/client_id/bad-dev", None, ""),
        200
    );
    assert_eq!(
        connect(b.mqtt_addr(), Version::V5, "bad-dev", None, None),
        0
    );
}

/// SIGHUP reloads the password file: a user added afterwards can connect.
#[test]
fn sighup_reloads_the_password_file() {
    require_halyard();
    let d = dir("hup");
    let file = d.join("passwd");
    passwd(&file, true, "alice", "secret");
    let toml = format!("[auth]\npassword_file = {:?}\n", file.to_str().unwrap());
    let b = TestBroker::start_with_config(&toml, &[]);
    let a = b.mqtt_addr();
    assert_eq!(
        connect(a, Version::V5, "bob", Some("bob"), Some("pw2")),
        0x86
    );
    passwd(&file, false, "bob", "pw2");
    sighup(&b);
    let ok = wait_for(WAIT, || {
        (connect(a, Version::V5, "bob", Some("bob"), Some("pw2")) == 0).then_some(())
    });
    assert!(ok.is_some(), "bob accepted after SIGHUP");
    assert_eq!(
        connect(a, Version::V5, "al", Some("alice"), Some("secret")),
        0
    );
}

/// With `admin.token` set, every endpoint but /healthz needs `Authorization: Bearer TOKEN`.
#[test]
fn admin_token_enforced() {
    require_halyard();
    let b = TestBroker::start_with_config("[admin]\ntoken = \"s3cret\"\n", &[]);
    assert_eq!(admin(&b, "GET", "/healthz", None, ""), 200);
    assert_eq!(admin(&b, "GET", "/metrics", None, ""), 401);
    assert_eq!(admin(&b, "GET", "/metrics", Some("wrong!"), ""), 401);
    assert_eq!(admin(&b, "GET", "/bans", None, ""), 401);
    assert_eq!(admin(&b, "GET", "/metrics", Some("s3cret"), ""), 200);
    assert_eq!(admin(&b, "GET", "/status", Some("s3cret"), ""), 200);
}

/// `limits.max_connections_per_source`: the third socket from 127.0.0.1 is closed at accept
/// and counted in `halyard_limit_hits_total{limit="source_connections"}`.
#[test]
fn per_source_connection_limit_counted() {
    require_halyard();
    let b = TestBroker::start_with_config("[limits]\nmax_connections_per_source = 2\n", &[]);
    let a = b.mqtt_addr();
    // The harness's readiness probe may still hold a slot for a moment: retry the first one.
    let try_connect = |id: &str| {
        let mut c = RawClient::open(a, Version::V311);
        c.send(&Connect::new(Version::V311, id).encode());
        matches!(
            c.recv(),
            Ok(halyard_tests::raw::Packet::ConnAck { code: 0, .. })
        )
        .then_some(c)
    };
    let _c1 = wait_for(WAIT, || try_connect("one")).expect("first connection accepted");
    let _c2 = wait_for(WAIT, || try_connect("two")).expect("second connection accepted");
    let mut c3 = RawClient::open(a, Version::V311);
    c3.send(&Connect::new(Version::V311, "three").encode());
    c3.expect_closed();
    let hits = wait_for(WAIT, || {
        let m = b.metrics();
        m.get("halyard_limit_hits_total{limit=\"source_connections\"}")
            .filter(|v| *v >= 1.0)
    });
    assert!(hits.is_some(), "source_connections hit counted");
}
