//! [`TestBroker`]: one broker process per test, on its own free loopback ports.

use std::fs::{self, File};
use std::io::Read;
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use crate::http;

/// Bound on broker start-up: listening and answering `/healthz`.
pub const START_TIMEOUT: Duration = Duration::from_secs(20);
/// Bound on waiting for the broker process to exit after a signal.
pub const EXIT_TIMEOUT: Duration = Duration::from_secs(10);

/// Environment keys of Halyard's configuration used by the tests (`HALYARD_<SECTION>__<KEY>`).
/// Kept in one place so that a renamed key in the server's config is fixed here only.
pub mod keys {
    /// MQTT listener address.
    pub const TCP_BIND: &str = "HALYARD_LISTENERS__TCP__BIND";
    /// Admin HTTP address.
    pub const ADMIN_BIND: &str = "HALYARD_ADMIN__BIND";
    /// `auto | uring | epoll`.
    pub const IO_BACKEND: &str = "HALYARD_IO__BACKEND";
    /// Largest keepalive the server accepts; a larger one is answered with Server Keep Alive.
    pub const MAX_KEEPALIVE: &str = "HALYARD_MQTT__MAX_KEEPALIVE_SECS";
    /// Largest packet the server accepts (announced as Maximum Packet Size).
    pub const MAX_PACKET_SIZE: &str = "HALYARD_MQTT__MAX_PACKET_SIZE";
    /// Receive Maximum announced by the server (QoS 1/2 in flight from one client).
    pub const RECEIVE_MAXIMUM: &str = "HALYARD_MQTT__RECEIVE_MAXIMUM";
    /// Maximum QoS accepted from publishers (announced as Maximum QoS).
    pub const MAXIMUM_QOS: &str = "HALYARD_MQTT__MAXIMUM_QOS";
    /// Whether retained messages are supported (announced as Retain Available).
    pub const RETAIN_AVAILABLE: &str = "HALYARD_MQTT__RETAIN_AVAILABLE";
}

/// Which broker the tests talk to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    /// The `halyard` binary (default).
    Halyard,
    /// A local `mosquitto`, to validate the tests against a reference implementation.
    Mosquitto,
}

/// The broker selected by `HALYARD_TEST_AGAINST` (`mosquitto` or unset/`halyard`).
pub fn target() -> Target {
    match std::env::var("HALYARD_TEST_AGAINST").as_deref() {
        Ok("mosquitto") => Target::Mosquitto,
        Ok("halyard") | Ok("") | Err(_) => Target::Halyard,
        Ok(other) => panic!("HALYARD_TEST_AGAINST={other}: expected `halyard` or `mosquitto`"),
    }
}

/// Fails the calling test when the suite runs against Mosquitto: the test checks a
/// Halyard-only feature (admin HTTP, metrics, CLI, config errors, I/O backends).
pub fn require_halyard() {
    if target() != Target::Halyard {
        panic!(
            "this test needs halyard: it checks a Halyard-only feature and cannot run with \
             HALYARD_TEST_AGAINST=mosquitto (filter it out of the mosquitto run)"
        );
    }
}

/// Path of the `halyard` binary under test.
pub fn halyard_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("HALYARD_BIN") {
        return PathBuf::from(p);
    }
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut candidates = Vec::new();
    if let Some(dir) = std::env::var_os("CARGO_TARGET_DIR") {
        let dir = PathBuf::from(dir);
        let dir = if dir.is_absolute() {
            dir
        } else {
            workspace.join(dir)
        };
        candidates.push(dir.join("debug").join("halyard"));
    }
    // The test executable lives in <target>/debug/deps/.
    if let Ok(exe) = std::env::current_exe()
        && let Some(debug) = exe.parent().and_then(Path::parent)
    {
        candidates.push(debug.join("halyard"));
    }
    candidates.push(workspace.join("target").join("debug").join("halyard"));
    for c in &candidates {
        if c.is_file() {
            check_fresh(c);
            return c.clone();
        }
    }
    panic!(
        "halyard binary not found (looked at {candidates:?}); build it first with \
         `cargo build -p halyard-server` or set HALYARD_BIN"
    );
}

/// Fails the test when the found binary is older than one of the source files it was built
/// from (listed by Cargo in `<binary>.d`): testing a stale build would report results for code
/// that is no longer there. An explicit `HALYARD_BIN` is taken as is.
fn check_fresh(bin: &Path) {
    static CHECKED: std::sync::OnceLock<Result<(), String>> = std::sync::OnceLock::new();
    let r = CHECKED.get_or_init(|| {
        let Ok(dep_info) = fs::read_to_string(bin.with_extension("d")) else {
            return Ok(());
        };
        let built = fs::metadata(bin)
            .and_then(|m| m.modified())
            .map_err(|e| format!("stat {}: {e}", bin.display()))?;
        // "target: dep dep ..." with spaces inside paths escaped as "\ ".
        let deps = dep_info
            .lines()
            .next()
            .unwrap_or("")
            .replace("\\ ", "\u{0}");
        let deps = deps.split_once(": ").map_or("", |(_, d)| d);
        // Files generated inside the target directory (build-script outputs such as the
        // compiled XDP object) are rewritten by any later build of a dependent crate: only
        // real sources say whether the binary is stale.
        let target_dir = bin.parent().and_then(Path::parent);
        for dep in deps.split_whitespace() {
            let path = PathBuf::from(dep.replace('\u{0}', " "));
            if target_dir.is_some_and(|t| path.starts_with(t)) {
                continue;
            }
            if let Ok(t) = fs::metadata(&path).and_then(|m| m.modified())
                && t > built
            {
                return Err(format!(
                    "{} is older than its source {}: rebuild it with `cargo build -p \
                     halyard-server` (or set HALYARD_BIN to test a specific binary)",
                    bin.display(),
                    path.display()
                ));
            }
        }
        Ok(())
    });
    if let Err(e) = r {
        panic!("{e}");
    }
}

static PORTS: Mutex<Vec<u16>> = Mutex::new(Vec::new());
static INSTANCE: AtomicU32 = AtomicU32::new(0);

/// A loopback port that was free a moment ago and that no other test of this process got.
pub fn free_port() -> u16 {
    for _ in 0..100 {
        let l = TcpListener::bind("127.0.0.1:0").expect("bind an ephemeral loopback port");
        let port = l.local_addr().expect("local addr of a bound socket").port();
        let mut used = PORTS.lock().unwrap_or_else(|e| e.into_inner());
        if !used.contains(&port) {
            used.push(port);
            return port;
        }
    }
    panic!("no free loopback port after 100 tries");
}

/// A broker process owned by one test. Killed on drop; its log is printed when the test fails.
pub struct TestBroker {
    child: Option<Child>,
    mqtt: SocketAddr,
    admin: Option<SocketAddr>,
    dir: PathBuf,
    log: PathBuf,
    target: Target,
}

impl TestBroker {
    /// Starts the broker under test with its default configuration.
    pub fn start() -> TestBroker {
        Self::start_with(&[])
    }

    /// Starts the broker under test with extra `HALYARD_*` environment overrides. Against
    /// Mosquitto the known keys are translated into its config; an unknown key fails the test.
    pub fn start_with(env: &[(&str, &str)]) -> TestBroker {
        let target = target();
        let mut last_err = String::new();
        for _attempt in 0..3 {
            let r = match target {
                Target::Halyard => Self::try_start_halyard(env),
                Target::Mosquitto => Self::try_start_mosquitto(env),
            };
            match r {
                Ok(b) => return b,
                // A port taken by someone else between free_port() and bind: try new ports.
                Err(e) => last_err = e,
            }
        }
        panic!("broker did not start: {last_err}");
    }

    /// Starts halyard with `--config FILE` holding `toml`, plus environment overrides (the
    /// listener addresses are still set through the environment, which wins over the file).
    pub fn start_with_config(toml: &str, env: &[(&str, &str)]) -> TestBroker {
        require_halyard();
        let mut last_err = String::new();
        for _attempt in 0..3 {
            let dir = Self::new_dir();
            let file = dir.join("halyard.toml");
            fs::write(&file, toml).expect("write the test's config file");
            match Self::try_start_halyard_in(dir, Some(&file), env) {
                Ok(b) => return b,
                Err(e) => last_err = e,
            }
        }
        panic!("broker did not start: {last_err}");
    }

    fn new_dir() -> PathBuf {
        let n = INSTANCE.fetch_add(1, Ordering::Relaxed);
        let dir = std::env::temp_dir()
            .join("halyard-tests")
            .join(format!("{}-{n}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).expect("create the test's temp dir");
        dir
    }

    /// Starts halyard with extra `halyard run` arguments (e.g. `--discard-corrupt`) and
    /// environment overrides.
    pub fn start_with_args(args: &[&str], env: &[(&str, &str)]) -> TestBroker {
        require_halyard();
        let mut last_err = String::new();
        for _attempt in 0..3 {
            match Self::try_start_halyard_args(Self::new_dir(), None, args, env) {
                Ok(b) => return b,
                Err(e) => last_err = e,
            }
        }
        panic!("broker did not start: {last_err}");
    }

    /// Starts halyard with its MQTT and admin listeners on `ip` (a loopback address such as
    /// 127.0.0.12, so that several nodes of one test each get their own address), plus
    /// environment overrides.
    pub fn start_on(ip: Ipv4Addr, env: &[(&str, &str)]) -> TestBroker {
        require_halyard();
        let mut last_err = String::new();
        for _attempt in 0..3 {
            match Self::try_start_halyard_at(Self::new_dir(), None, &[], env, ip) {
                Ok(b) => return b,
                Err(e) => last_err = e,
            }
        }
        panic!("broker did not start on {ip}: {last_err}");
    }

    fn try_start_halyard(env: &[(&str, &str)]) -> Result<TestBroker, String> {
        Self::try_start_halyard_in(Self::new_dir(), None, env)
    }

    fn try_start_halyard_in(
        dir: PathBuf,
        config: Option<&Path>,
        env: &[(&str, &str)],
    ) -> Result<TestBroker, String> {
        Self::try_start_halyard_args(dir, config, &[], env)
    }

    fn try_start_halyard_args(
        dir: PathBuf,
        config: Option<&Path>,
        args: &[&str],
        env: &[(&str, &str)],
    ) -> Result<TestBroker, String> {
        Self::try_start_halyard_at(dir, config, args, env, Ipv4Addr::LOCALHOST)
    }

    fn try_start_halyard_at(
        dir: PathBuf,
        config: Option<&Path>,
        args: &[&str],
        env: &[(&str, &str)],
        ip: Ipv4Addr,
    ) -> Result<TestBroker, String> {
        let log = dir.join("broker.log");
        let mqtt: SocketAddr = (ip, free_port()).into();
        let admin: SocketAddr = (ip, free_port()).into();
        let mut cmd = Command::new(halyard_bin());
        cmd.arg("run").args(args);
        if let Some(file) = config {
            cmd.arg("--config").arg(file);
        }
        cmd.env(keys::TCP_BIND, mqtt.to_string())
            .env(keys::ADMIN_BIND, admin.to_string());
        if std::env::var_os("RUST_LOG").is_none() {
            cmd.env("RUST_LOG", "info");
        }
        if let Ok(b) = std::env::var("HALYARD_TEST_BACKEND")
            && !b.is_empty()
        {
            cmd.env(keys::IO_BACKEND, b);
        }
        if std::env::var("HALYARD_TEST_STORE").as_deref() == Ok("on") {
            // The whole suite with durable sessions: each broker gets its own store.
            cmd.env("HALYARD_STORE__ENABLED", "true")
                .env("HALYARD_STORE__DIR", dir.join("store"));
        }
        for (k, v) in env {
            cmd.env(k, v);
        }
        let child = spawn_logged(&mut cmd, &log)?;
        let mut b = TestBroker {
            child: Some(child),
            mqtt,
            admin: Some(admin),
            dir,
            log,
            target: Target::Halyard,
        };
        b.wait_ready()?;
        Ok(b)
    }

    fn try_start_mosquitto(env: &[(&str, &str)]) -> Result<TestBroker, String> {
        let dir = Self::new_dir();
        let log = dir.join("broker.log");
        let mqtt: SocketAddr = ([127, 0, 0, 1], free_port()).into();
        let mut conf = format!(
            "listener {} 127.0.0.1\nallow_anonymous true\npersistence false\n\
             log_dest stderr\nlog_type all\n",
            mqtt.port()
        );
        for (k, v) in env {
            let opt = match *k {
                keys::MAX_KEEPALIVE => "max_keepalive",
                keys::MAX_PACKET_SIZE => "max_packet_size",
                keys::RECEIVE_MAXIMUM => "max_inflight_messages",
                keys::MAXIMUM_QOS => "max_qos",
                keys::RETAIN_AVAILABLE => "retain_available",
                keys::IO_BACKEND => continue,
                other => panic!("no mosquitto equivalent for {other}: this test needs halyard"),
            };
            conf.push_str(&format!("{opt} {v}\n"));
        }
        let conf_path = dir.join("mosquitto.conf");
        fs::write(&conf_path, conf).expect("write mosquitto.conf");
        let bin = ["/usr/sbin/mosquitto", "/usr/local/sbin/mosquitto"]
            .into_iter()
            .find(|p| Path::new(p).is_file())
            .unwrap_or("mosquitto");
        let mut cmd = Command::new(bin);
        cmd.arg("-c").arg(&conf_path);
        let child = spawn_logged(&mut cmd, &log)?;
        let mut b = TestBroker {
            child: Some(child),
            mqtt,
            admin: None,
            dir,
            log,
            target: Target::Mosquitto,
        };
        b.wait_ready()?;
        Ok(b)
    }

    fn wait_ready(&mut self) -> Result<(), String> {
        let start = Instant::now();
        loop {
            if let Some(st) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                return Err(format!(
                    "broker exited early ({st}); log:\n{}",
                    self.log_text()
                ));
            }
            let mqtt_ok =
                TcpStream::connect_timeout(&self.mqtt, Duration::from_millis(200)).is_ok();
            let admin_ok = match self.admin {
                None => true,
                Some(a) => matches!(http::get(a, "/healthz"), Ok(r) if r.status == 200),
            };
            if mqtt_ok && admin_ok {
                return Ok(());
            }
            if start.elapsed() > START_TIMEOUT {
                self.kill_quietly();
                return Err(format!(
                    "broker not ready after {START_TIMEOUT:?} (mqtt listening: {mqtt_ok}, \
                     /healthz 200: {admin_ok}); log:\n{}",
                    self.log_text()
                ));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Which broker this is.
    pub fn target(&self) -> Target {
        self.target
    }

    /// The MQTT TCP listener.
    pub fn mqtt_addr(&self) -> SocketAddr {
        self.mqtt
    }

    /// The admin HTTP listener (Halyard only).
    pub fn admin_addr(&self) -> SocketAddr {
        require_halyard();
        self.admin.expect("halyard always has an admin address")
    }

    /// `GET path` on the admin listener.
    pub fn http_get(&self, path: &str) -> http::Response {
        http::get(self.admin_addr(), path)
            .unwrap_or_else(|e| panic!("GET {path} failed: {e}; log:\n{}", self.log_text()))
    }

    /// `GET /metrics`, parsed into `name{labels}` -> value.
    pub fn metrics(&self) -> http::Metrics {
        let r = self.http_get("/metrics");
        assert_eq!(r.status, 200, "GET /metrics status; body:\n{}", r.body);
        http::Metrics::parse(&r.body)
    }

    /// The broker's combined stdout and stderr so far.
    pub fn log_text(&self) -> String {
        let mut s = String::new();
        if let Ok(mut f) = File::open(&self.log) {
            let _ = f.read_to_string(&mut s);
        }
        s
    }

    /// Process id of the broker.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("broker still owned").id()
    }

    /// Sends SIGTERM and waits (bounded) for the exit status.
    pub fn sigterm(&mut self) -> ExitStatus {
        let st = Command::new("kill")
            .args(["-TERM", &self.pid().to_string()])
            .status()
            .expect("run kill(1)");
        assert!(st.success(), "kill -TERM failed");
        self.wait_exit(EXIT_TIMEOUT)
            .unwrap_or_else(|| panic!("broker did not exit within {EXIT_TIMEOUT:?} of SIGTERM"))
    }

    /// Waits up to `limit` for the process to exit.
    pub fn wait_exit(&mut self, limit: Duration) -> Option<ExitStatus> {
        let child = self.child.as_mut()?;
        let start = Instant::now();
        loop {
            if let Ok(Some(st)) = child.try_wait() {
                return Some(st);
            }
            if start.elapsed() > limit {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGKILL and reap; returns the exit status.
    pub fn kill(&mut self) -> ExitStatus {
        let child = self.child.as_mut().expect("broker still owned");
        let _ = child.kill();
        child.wait().expect("reap broker")
    }

    fn kill_quietly(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for TestBroker {
    fn drop(&mut self) {
        self.kill_quietly();
        if std::thread::panicking() {
            eprintln!(
                "----- {:?} log ({}) -----\n{}\n----- end of broker log -----",
                self.target,
                self.log.display(),
                self.log_text()
            );
        } else {
            let _ = fs::remove_dir_all(&self.dir);
        }
    }
}

fn spawn_logged(cmd: &mut Command, log: &Path) -> Result<Child, String> {
    let f = File::create(log).map_err(|e| format!("create {}: {e}", log.display()))?;
    let f2 = f.try_clone().map_err(|e| format!("dup log fd: {e}"))?;
    cmd.stdin(Stdio::null())
        .stdout(Stdio::from(f))
        .stderr(Stdio::from(f2))
        .spawn()
        .map_err(|e| format!("spawn {cmd:?}: {e}"))
}

/// Runs `halyard <args>` with `env` and waits (bounded by `limit`) for it to exit, killing it
/// if it does not. Returns `None` on timeout.
pub fn run_halyard(args: &[&str], env: &[(&str, &str)], limit: Duration) -> Option<Output> {
    require_halyard();
    let dir = TestBroker::new_dir();
    let (out, err) = (dir.join("stdout"), dir.join("stderr"));
    let mut cmd = Command::new(halyard_bin());
    cmd.args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::from(File::create(&out).expect("create stdout file")))
        .stderr(Stdio::from(File::create(&err).expect("create stderr file")));
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().expect("spawn halyard");
    let start = Instant::now();
    let status = loop {
        if let Ok(Some(st)) = child.try_wait() {
            break Some(st);
        }
        if start.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let r = status.map(|status| Output {
        status,
        stdout: fs::read(&out).unwrap_or_default(),
        stderr: fs::read(&err).unwrap_or_default(),
    });
    let _ = fs::remove_dir_all(&dir);
    r
}
