//! Interoperability with independent clients driven as processes: mosquitto_pub/mosquitto_sub
//! (apt `mosquitto-clients`) and paho-mqtt 2.x (PyPI, scripts in `tests/python/`). A missing
//! client fails the test with the install command; nothing is skipped.
//!
//! Against Mosquitto 2.0.11 (`HALYARD_TEST_AGAINST=mosquitto`) every test here passes.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use halyard_tests::TestBroker;

/// Bound on one client process.
const PROC_TIMEOUT: Duration = Duration::from_secs(30);

fn tool(name: &str, install: &str) -> PathBuf {
    for dir in ["/usr/bin", "/usr/local/bin", "/bin"] {
        let p = Path::new(dir).join(name);
        if p.is_file() {
            return p;
        }
    }
    let found = Command::new("sh")
        .args(["-c", &format!("command -v {name}")])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| PathBuf::from(String::from_utf8_lossy(&o.stdout).trim().to_string()));
    found.unwrap_or_else(|| panic!("`{name}` not found: install it with `{install}`"))
}

fn mosquitto_pub() -> PathBuf {
    tool("mosquitto_pub", "apt-get install -y mosquitto-clients")
}

fn mosquitto_sub() -> PathBuf {
    tool("mosquitto_sub", "apt-get install -y mosquitto-clients")
}

/// Waits for `child` to exit within `limit` (killing it otherwise) and collects its output.
fn finish(mut child: Child, limit: Duration) -> Output {
    let start = Instant::now();
    loop {
        if let Ok(Some(_)) = child.try_wait() {
            break;
        }
        if start.elapsed() > limit {
            let _ = child.kill();
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child.wait_with_output().expect("collect child output")
}

fn run(cmd: &mut Command) -> Output {
    let child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("spawn {cmd:?}: {e}"));
    finish(child, PROC_TIMEOUT)
}

fn port_args(b: &TestBroker) -> Vec<String> {
    vec![
        "-h".into(),
        "127.0.0.1".into(),
        "-p".into(),
        b.mqtt_addr().port().to_string(),
    ]
}

fn version_arg(v5: bool) -> &'static str {
    if v5 { "mqttv5" } else { "mqttv311" }
}

/// Starts `mosquitto_sub` for `count` messages (bounded by `-W`), then publishes with
/// `mosquitto_pub` until the subscriber has its messages (it cannot signal that its
/// subscription is active, so the publish is repeated, at most for 10 s). Returns the
/// subscriber's output lines (format `%q %r %t %p`: QoS, retain, topic, payload).
fn sub_then_pub(
    b: &TestBroker,
    v5: bool,
    topic: &str,
    sub_qos: u8,
    pub_args: &[&str],
) -> Vec<String> {
    let mut sub = Command::new(mosquitto_sub());
    sub.args(port_args(b))
        .args([
            "-V",
            version_arg(v5),
            "-t",
            topic,
            "-q",
            &sub_qos.to_string(),
        ])
        .args(["-C", "1", "-W", "20", "-F", "%q %r %t %p", "-i", "mq-sub"]);
    let child = sub
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn mosquitto_sub");
    let mut child = Some(child);
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(10) {
        let out = run(Command::new(mosquitto_pub())
            .args(port_args(b))
            .args(["-V", version_arg(v5), "-t", topic, "-i", "mq-pub"])
            .args(pub_args));
        assert!(
            out.status.success(),
            "mosquitto_pub failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let c = child.as_mut().expect("subscriber still running");
        if let Ok(Some(_)) = c.try_wait() {
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    let out = finish(child.take().expect("subscriber"), PROC_TIMEOUT);
    assert!(
        out.status.success(),
        "mosquitto_sub failed ({}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_string)
        .collect()
}

/// mosquitto_pub -> mosquitto_sub at QoS 0, 1 and 2, MQTT 3.1.1.
#[test]
fn mosquitto_clients_pubsub_v311() {
    let b = TestBroker::start();
    for q in 0..3u8 {
        let lines = sub_then_pub(&b, false, "mq/311", 2, &["-q", &q.to_string(), "-m", "hi"]);
        assert_eq!(lines, vec![format!("{q} 0 mq/311 hi")], "QoS {q}");
    }
}

/// mosquitto_pub -> mosquitto_sub at QoS 0, 1 and 2, MQTT 5.0 (`-V mqttv5`).
#[test]
fn mosquitto_clients_pubsub_v5() {
    let b = TestBroker::start();
    for q in 0..3u8 {
        let lines = sub_then_pub(&b, true, "mq/5", 2, &["-q", &q.to_string(), "-m", "hi5"]);
        assert_eq!(lines, vec![format!("{q} 0 mq/5 hi5")], "QoS {q}");
    }
}

/// A retained message set with `mosquitto_pub -r` is delivered to a later `mosquitto_sub`
/// with the retain flag [MQTT-3.3.1-6] [MQTT-3.3.1-8], in both versions, and `-r -n` deletes it
/// [MQTT-3.3.1-10].
#[test]
fn mosquitto_clients_retained() {
    let b = TestBroker::start();
    for v5 in [false, true] {
        let topic = if v5 { "mq/ret5" } else { "mq/ret311" };
        let out = run(Command::new(mosquitto_pub()).args(port_args(&b)).args([
            "-V",
            version_arg(v5),
            "-t",
            topic,
            "-q",
            "1",
            "-r",
            "-m",
            "kept",
        ]));
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let out = run(Command::new(mosquitto_sub())
            .args(port_args(&b))
            .args([
                "-V",
                version_arg(v5),
                "-t",
                topic,
                "-q",
                "1",
                "-C",
                "1",
                "-W",
                "10",
            ])
            .args(["-F", "%q %r %t %p"]));
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(
            String::from_utf8_lossy(&out.stdout).trim(),
            format!("1 1 {topic} kept")
        );
        // Delete, then the subscriber sees only a live message.
        let out = run(Command::new(mosquitto_pub()).args(port_args(&b)).args([
            "-V",
            version_arg(v5),
            "-t",
            topic,
            "-q",
            "1",
            "-r",
            "-n",
        ]));
        assert!(out.status.success());
        let lines = sub_then_pub(&b, v5, topic, 1, &["-q", "1", "-m", "live"]);
        assert_eq!(
            lines,
            vec![format!("1 0 {topic} live")],
            "retained message deleted"
        );
    }
}

/// mosquitto_pub (5.0) user properties reach a 5.0 mosquitto_sub unchanged [MQTT-3.3.2-17].
#[test]
fn mosquitto_clients_user_property_v5() {
    let b = TestBroker::start();
    let mut sub = Command::new(mosquitto_sub());
    sub.args(port_args(&b)).args([
        "-V", "mqttv5", "-t", "mq/up", "-q", "1", "-C", "1", "-W", "20", "-F", "%P %p",
    ]);
    let child = sub
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn mosquitto_sub");
    let mut child = Some(child);
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(10) {
        run(Command::new(mosquitto_pub())
            .args(port_args(&b))
            .args(["-V", "mqttv5", "-t", "mq/up", "-q", "1", "-m", "p"])
            .args(["-D", "publish", "user-property", "key", "value"]));
        if let Ok(Some(_)) = child.as_mut().expect("running").try_wait() {
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    let out = finish(child.take().expect("subscriber"), PROC_TIMEOUT);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "key:value p");
}

fn python() -> String {
    std::env::var("HALYARD_TEST_PYTHON").unwrap_or_else(|_| "python3".into())
}

fn paho(b: &TestBroker, script: &str, version: &str) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("python");
    let out = run(Command::new(python())
        .arg(dir.join(script))
        .arg(b.mqtt_addr().port().to_string())
        .arg(version)
        .current_dir(&dir));
    assert!(
        out.status.success(),
        "paho {script} {version} failed ({}):\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// paho-mqtt 3.1.1: pub/sub at QoS 0/1/2 and a retained message.
#[test]
fn paho_pubsub_v311() {
    paho(&TestBroker::start(), "pubsub.py", "311");
}

/// paho-mqtt 5.0: pub/sub at QoS 0/1/2 and a retained message.
#[test]
fn paho_pubsub_v5() {
    paho(&TestBroker::start(), "pubsub.py", "5");
}

/// paho-mqtt 5.0: user properties, content type, response topic, correlation data.
#[test]
fn paho_properties_v5() {
    paho(&TestBroker::start(), "properties.py", "5");
}

/// paho-mqtt 3.1.1: will on abnormal close, none after DISCONNECT.
#[test]
fn paho_will_v311() {
    paho(&TestBroker::start(), "will.py", "311");
}

/// paho-mqtt 5.0: will on abnormal close, none after DISCONNECT.
#[test]
fn paho_will_v5() {
    paho(&TestBroker::start(), "will.py", "5");
}
