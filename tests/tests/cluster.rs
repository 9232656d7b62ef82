//! Multi-process cluster tests: three cores and one replicant, each a real `halyard`
//! process on 127.0.0.1 with its own ports and data directory, driven by rumqttc clients.
//!
//! Checked: the cluster forms (every node sees four members, the replicant streams in
//! `normal` state); a message published on a core reaches a subscriber on the replicant and
//! the other way round; a QoS 1 message crosses nodes exactly once; a shared group with
//! members on two nodes gets each message once; after SIGKILL of the core the replicant
//! streams from, the cluster keeps routing and the replicant resumes on another core
//! without a new bootstrap; the killed core restarts from its Raft log on disk.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use halyard_tests::broker::free_port;
use halyard_tests::rumq::v4::{Client, QoS, opts};
use halyard_tests::{TestBroker, WAIT, halyard_bin, require_halyard, wait_for};

/// Bound on the cluster forming or recovering.
const FORM: Duration = Duration::from_secs(30);

struct Node {
    name: &'static str,
    role: &'static str,
    cluster_port: u16,
    store: PathBuf,
    broker: Option<TestBroker>,
}

struct Cluster {
    nodes: Vec<Node>,
    seeds: String,
    root: PathBuf,
}

impl Drop for Cluster {
    fn drop(&mut self) {
        // Stop every node first (TestBroker's drop kills it), then remove the data dirs;
        // kept after a failure for inspection.
        for n in &mut self.nodes {
            n.broker.take();
        }
        if !std::thread::panicking() {
            let _ = std::fs::remove_dir_all(&self.root);
        }
    }
}

impl Cluster {
    fn new(names: &[(&'static str, &'static str)]) -> Cluster {
        let root = std::env::temp_dir().join("halyard-tests").join(format!(
            "cluster-{}-{}",
            std::process::id(),
            free_port()
        ));
        let _ = std::fs::remove_dir_all(&root);
        let nodes: Vec<Node> = names
            .iter()
            .map(|(name, role)| Node {
                name,
                role,
                cluster_port: free_port(),
                store: root.join(name),
                broker: None,
            })
            .collect();
        let seeds = nodes
            .iter()
            .filter(|n| n.role == "core")
            .map(|n| format!("127.0.0.1:{}", n.cluster_port))
            .collect::<Vec<_>>()
            .join(",");
        Cluster { nodes, seeds, root }
    }

    fn start(&mut self, i: usize) {
        let cores = self
            .nodes
            .iter()
            .filter(|n| n.role == "core")
            .map(|n| n.name)
            .collect::<Vec<_>>()
            .join(",");
        let n = &self.nodes[i];
        let listen = format!("127.0.0.1:{}", n.cluster_port);
        let store = n.store.display().to_string();
        let env = [
            ("HALYARD_NODE__NAME", n.name),
            ("HALYARD_NODE__ROLE", n.role),
            ("HALYARD_CLUSTER__LISTEN", listen.as_str()),
            ("HALYARD_CLUSTER__SEEDS", self.seeds.as_str()),
            ("HALYARD_CLUSTER__INITIAL_CORES", cores.as_str()),
            ("HALYARD_STORE__DIR", store.as_str()),
        ];
        let b = TestBroker::start_with(&env);
        self.nodes[i].broker = Some(b);
    }

    fn broker(&self, i: usize) -> &TestBroker {
        self.nodes[i].broker.as_ref().expect("node running")
    }

    fn status(&self, i: usize) -> serde_json::Value {
        let body = self.broker(i).http_get("/status").body;
        let doc: serde_json::Value = serde_json::from_str(&body).expect("/status is JSON");
        doc["cluster"].clone()
    }

    /// Waits until every running node sees `members` members and has applied what its
    /// cores committed, and running replicants stream in `normal` state.
    fn wait_formed(&self, members: u64) {
        let ok = wait_for(FORM, || {
            let all = self.nodes.iter().enumerate().all(|(i, n)| {
                if n.broker.is_none() {
                    return true;
                }
                let c = self.status(i);
                let members_ok = c["members"].as_u64() == Some(members);
                let applied = c["applied_index"].as_u64().unwrap_or(0);
                let has_leader = n.role != "core" || !c["raft_leader"].is_null();
                let streaming = n.role != "replicant" || c["stream_state"] == "normal";
                members_ok && applied > 0 && has_leader && streaming
            });
            all.then_some(())
        });
        if ok.is_none() {
            let st: BTreeMap<&str, String> = self
                .nodes
                .iter()
                .enumerate()
                .filter(|(_, n)| n.broker.is_some())
                .map(|(i, n)| (n.name, self.status(i).to_string()))
                .collect();
            panic!("cluster did not form within {FORM:?}: {st:#?}");
        }
    }

    fn mqtt(&self, i: usize) -> std::net::SocketAddr {
        self.broker(i).mqtt_addr()
    }
}

async fn client(c: &Cluster, node: usize, id: &str) -> Client {
    Client::connect(opts(c.mqtt(node), id)).await.0
}

/// Collects publishes until `n` arrived, then keeps listening briefly for extra copies.
async fn collect(c: &mut Client, n: usize) -> Vec<Vec<u8>> {
    let mut got = Vec::new();
    while got.len() < n {
        got.push(c.next_publish().await.payload.to_vec());
    }
    got.extend(drain(c).await);
    got
}

/// Publishes that arrive within a short quiet window (duplicates would show here).
async fn drain(c: &mut Client) -> Vec<Vec<u8>> {
    let mut got = Vec::new();
    while let Some(Ok(ev)) = c.next_event(Duration::from_millis(500)).await {
        if let rumqttc::Event::Incoming(rumqttc::Packet::Publish(p)) = ev {
            got.push(p.payload.to_vec());
        }
    }
    got
}

const C1: usize = 0;
const C2: usize = 1;
const C3: usize = 2;
const R1: usize = 3;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_cores_and_a_replicant_route_fail_over_and_recover() {
    require_halyard();
    let mut cl = Cluster::new(&[
        ("c1", "core"),
        ("c2", "core"),
        ("c3", "core"),
        ("r1", "replicant"),
    ]);
    for i in [C1, C2, C3, R1] {
        cl.start(i);
    }
    cl.wait_formed(4);

    // Core -> replicant (QoS 0 and 1) and replicant -> core (QoS 2); each copy exactly once.
    let mut sub_r = client(&cl, R1, "sub-r1").await;
    sub_r.subscribe("x/+/y", QoS::AtLeastOnce).await;
    let mut sub_c = client(&cl, C2, "sub-c2").await;
    sub_c.subscribe("back/#", QoS::ExactlyOnce).await;
    let mut pub_c = client(&cl, C1, "pub-c1").await;
    pub_c.publish("x/1/y", QoS::AtMostOnce, false, b"q0").await;
    pub_c.publish("x/2/y", QoS::AtLeastOnce, false, b"q1").await;
    let got = collect(&mut sub_r, 2).await;
    assert_eq!(
        got,
        vec![b"q0".to_vec(), b"q1".to_vec()],
        "core -> replicant, once each"
    );
    let mut pub_r = client(&cl, R1, "pub-r1").await;
    pub_r
        .publish("back/a", QoS::ExactlyOnce, false, b"from-r1")
        .await;
    assert_eq!(collect(&mut sub_c, 1).await, vec![b"from-r1".to_vec()]);

    // A subscriber on the publishing node and on a remote one: each gets one copy.
    let mut local = client(&cl, C1, "sub-c1").await;
    local.subscribe("x/+/y", QoS::AtLeastOnce).await;
    pub_c
        .publish("x/3/y", QoS::AtLeastOnce, false, b"both")
        .await;
    assert_eq!(collect(&mut local, 1).await, vec![b"both".to_vec()]);
    assert_eq!(collect(&mut sub_r, 1).await, vec![b"both".to_vec()]);

    // A shared group with one member on the replicant and one on c3: each message once
    // [MQTT-4.8.2-2].
    let mut g1 = client(&cl, R1, "g-r1").await;
    g1.subscribe("$share/g/s/t", QoS::AtLeastOnce).await;
    let mut g2 = client(&cl, C3, "g-c3").await;
    g2.subscribe("$share/g/s/t", QoS::AtLeastOnce).await;
    let total = 20;
    for k in 0..total {
        pub_c
            .publish("s/t", QoS::AtLeastOnce, false, format!("m{k}").as_bytes())
            .await;
    }
    let mut all = Vec::new();
    while all.len() < total {
        tokio::select! {
            p = g1.next_publish() => all.push(p.payload.to_vec()),
            p = g2.next_publish() => all.push(p.payload.to_vec()),
        }
    }
    all.extend(drain(&mut g1).await);
    all.extend(drain(&mut g2).await);
    all.sort();
    let mut want: Vec<Vec<u8>> = (0..total).map(|k| format!("m{k}").into_bytes()).collect();
    want.sort();
    assert_eq!(
        all, want,
        "each shared message delivered exactly once across the nodes"
    );
    drop((g1, g2));

    // SIGKILL the core the replicant streams from: the replicant resumes on another core
    // from its index (no new bootstrap) and routing goes on.
    let before = cl.status(R1);
    let upstream = before["upstream_core"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let bootstraps = before["bootstraps"].as_u64();
    let victim = (0..3)
        .find(|&i| upstream.ends_with(&format!(":{}", cl.nodes[i].cluster_port)))
        .unwrap_or(C3);
    let victim_name = cl.nodes[victim].name;
    let mut dead = cl.nodes[victim].broker.take().expect("running");
    dead.kill();
    drop(dead);
    let resumed = wait_for(FORM, || {
        let c = cl.status(R1);
        let up = c["upstream_core"].as_str().unwrap_or_default().to_string();
        (c["stream_state"] == "normal" && !up.is_empty() && up != upstream).then_some(c)
    })
    .unwrap_or_else(|| panic!("replicant did not resume after {victim_name} died"));
    assert_eq!(
        resumed["bootstraps"].as_u64(),
        bootstraps,
        "the replicant resumed from its index without a new bootstrap"
    );
    let alive = [C1, C2, C3]
        .into_iter()
        .find(|&i| i != victim && i != C1)
        .expect("a second surviving core");
    let pub_node = if victim == C1 { alive } else { C1 };
    let mut pub2 = client(&cl, pub_node, "pub-after-kill").await;
    // A new route written after the kill (needs the surviving majority).
    let mut late = client(&cl, R1, "late-r1").await;
    late.subscribe("after/kill", QoS::AtLeastOnce).await;
    pub2.publish("after/kill", QoS::AtLeastOnce, false, b"still")
        .await;
    assert_eq!(collect(&mut late, 1).await, vec![b"still".to_vec()]);

    // Restart the killed core on the same data directory: it recovers its Raft log and
    // routes again (a subscriber on it gets a message published on the replicant).
    cl.start(victim);
    cl.wait_formed(4);
    let st = cl.status(victim);
    assert_eq!(st["raft_durable"], true, "{st}");
    let mut back = client(&cl, victim, "sub-restarted").await;
    back.subscribe("restarted/t", QoS::AtLeastOnce).await;
    pub_r
        .publish("restarted/t", QoS::AtLeastOnce, false, b"again")
        .await;
    assert_eq!(collect(&mut back, 1).await, vec![b"again".to_vec()]);

    // The operations surfaces show the cluster.
    let m = cl.broker(R1).http_get("/metrics").body;
    assert!(
        m.contains("halyard_cluster_lag"),
        "cluster metrics on /metrics"
    );
    assert!(
        m.contains("halyard_cluster_wiring_inbound"),
        "wiring metrics on /metrics"
    );

    // `halyard ctl cluster status` shows the replicant's stream; `ctl cluster leave` removes
    // it from the member table everywhere.
    let admin = cl.broker(R1).admin_addr().to_string();
    let ctl = |args: &[&str]| {
        let out = std::process::Command::new(halyard_bin())
            .args(["ctl", "cluster"])
            .args(args)
            .args(["--admin", &admin])
            .output()
            .expect("run halyard ctl");
        assert!(out.status.success(), "ctl {args:?}: {out:?}");
        String::from_utf8_lossy(&out.stdout).to_string()
    };
    let text = ctl(&["status"]);
    assert!(
        text.contains("replicant") && text.contains("normal"),
        "{text}"
    );
    ctl(&["leave"]);
    let left = wait_for(WAIT, || {
        (cl.status(C1)["members"].as_u64() == Some(3)).then_some(())
    });
    assert!(left.is_some(), "r1 left: {}", cl.status(C1));
}
