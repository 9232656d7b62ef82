//! Crash safety: a child process writes and prints every acknowledged write after its commit
//! completes; the parent SIGKILLs it at a random moment, reopens the store and checks that
//! every acknowledged write is there. The child is this test binary re-executed with
//! `CHILD_ENV` set (running only `crash_workload`).

mod common;

use std::collections::{BTreeMap, VecDeque};
use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{config, msg, now_ms, session};
use halyard_store::{CheckStatus, Commit, NEVER_EXPIRES, Store, check};

const CHILD_ENV: &str = "HALYARD_STORE_CRASH_CHILD_DIR";
const WRITERS: usize = 4;
const WINDOW: usize = 8;
const ROUNDS: usize = 5;
/// Bound on one child's life even if nobody kills it.
const CHILD_MAX_SECS: u64 = 30;

fn client(t: usize) -> String {
    format!("c{t}")
}

/// The writes: per writer thread, enqueues to its own client with up to `WINDOW`
/// outstanding commits, a dequeue every 16 acknowledged enqueues, and (thread 0) retained
/// messages. Lines: `ISSUE-DEQ c seq` before a dequeue is submitted; `ACK-ENQ c seq i`,
/// `ACK-DEQ c seq`, `ACK-RET topic i` after the commit completed.
fn workload(dir: &Path, limit: Option<u64>, out: &(dyn Fn(String) + Sync)) {
    let store = Store::open(&config(dir)).unwrap();
    for t in 0..WRITERS {
        store
            .put_session(&session(&client(t), NEVER_EXPIRES, None))
            .wait()
            .unwrap();
    }
    let deadline = Instant::now() + Duration::from_secs(CHILD_MAX_SECS);
    std::thread::scope(|s| {
        for t in 0..WRITERS {
            let store = store.clone();
            s.spawn(move || writer(&store, t, limit, deadline, out));
        }
    });
}

enum Pending {
    Enq(u64, Commit),
    Deq(u64, Commit),
    Ret(String, u64, Commit),
}

fn writer(
    store: &Store,
    t: usize,
    limit: Option<u64>,
    deadline: Instant,
    out: &(dyn Fn(String) + Sync),
) {
    let c = client(t);
    // Continue numbering after earlier rounds: i is unique per client across rounds.
    let base = now_ms() * 1000;
    let mut window: VecDeque<Pending> = VecDeque::new();
    let mut acked_enq = 0u64;
    let mut i = 0u64;
    while limit.is_none_or(|l| i < l) && Instant::now() < deadline {
        let n = base + i;
        window.push_back(Pending::Enq(
            n,
            store.enqueue(&c, &msg("q", &n.to_le_bytes())),
        ));
        if t == 0 && i.is_multiple_of(5) {
            let topic = format!("r/{}", i % 3);
            let commit = store.set_retained(&msg(&topic, &n.to_le_bytes()));
            window.push_back(Pending::Ret(topic, n, commit));
        }
        i += 1;
        while window.len() >= WINDOW {
            let Some(p) = window.pop_front() else { break };
            match p {
                Pending::Enq(n, commit) => {
                    let seq = commit.wait().unwrap().seqs[0].unwrap();
                    out(format!("ACK-ENQ {c} {seq} {n}"));
                    acked_enq += 1;
                    if acked_enq.is_multiple_of(16) && seq >= 8 {
                        let upto = seq - 8;
                        out(format!("ISSUE-DEQ {c} {upto}"));
                        window.push_back(Pending::Deq(upto, store.dequeue_upto(&c, upto)));
                    }
                }
                Pending::Deq(upto, commit) => {
                    commit.wait().unwrap();
                    out(format!("ACK-DEQ {c} {upto}"));
                }
                Pending::Ret(topic, n, commit) => {
                    commit.wait().unwrap();
                    out(format!("ACK-RET {topic} {n}"));
                }
            }
        }
    }
    for p in window {
        if let Pending::Enq(n, commit) = p {
            let seq = commit.wait().unwrap().seqs[0].unwrap();
            out(format!("ACK-ENQ {c} {seq} {n}"));
        }
    }
}

/// What the acknowledgement log promises.
#[derive(Default)]
struct Promises {
    /// client -> seq -> payload number
    enqueued: BTreeMap<String, BTreeMap<u64, u64>>,
    /// client -> highest dequeue that was issued (entries up to it may be gone)
    deq_issued: BTreeMap<String, u64>,
    /// client -> highest dequeue that was acknowledged (entries up to it must be gone)
    deq_acked: BTreeMap<String, u64>,
    /// topic -> highest acknowledged payload number
    retained: BTreeMap<String, u64>,
    acks: u64,
}

impl Promises {
    fn absorb(&mut self, line: &str) {
        let f: Vec<&str> = line.split_whitespace().collect();
        let num = |s: &str| s.parse::<u64>().unwrap();
        match f.as_slice() {
            ["ACK-ENQ", c, seq, n] => {
                self.enqueued
                    .entry(c.to_string())
                    .or_default()
                    .insert(num(seq), num(n));
                self.acks += 1;
            }
            ["ISSUE-DEQ", c, seq] => {
                let e = self.deq_issued.entry(c.to_string()).or_default();
                *e = (*e).max(num(seq));
            }
            ["ACK-DEQ", c, seq] => {
                let e = self.deq_acked.entry(c.to_string()).or_default();
                *e = (*e).max(num(seq));
                self.acks += 1;
            }
            ["ACK-RET", topic, n] => {
                let e = self.retained.entry(topic.to_string()).or_default();
                *e = (*e).max(num(n));
                self.acks += 1;
            }
            _ => {} // test-harness output, or a line cut by the kill
        }
    }

    /// Reopens the store and checks every promise.
    fn verify(&self, dir: &Path) {
        let store = Store::open(&config(dir)).unwrap();
        let state = store.load_all(now_ms()).unwrap();
        assert_eq!(state.dropped, Default::default());
        for (c, entries) in &self.enqueued {
            let queue: BTreeMap<u64, u64> = state
                .queues
                .get(c)
                .map(|q| {
                    q.iter()
                        .map(|m| {
                            let b: [u8; 8] = m.message.payload[..].try_into().unwrap();
                            (m.seq, u64::from_le_bytes(b))
                        })
                        .collect()
                })
                .unwrap_or_default();
            let issued = self.deq_issued.get(c).copied();
            let acked = self.deq_acked.get(c).copied();
            for (&seq, &n) in entries {
                if issued.is_none_or(|d| seq > d) {
                    assert_eq!(
                        queue.get(&seq),
                        Some(&n),
                        "acknowledged enqueue {c}/{seq} lost"
                    );
                }
            }
            if let Some(d) = acked {
                assert!(
                    queue.keys().all(|&s| s > d),
                    "acknowledged dequeue of {c} up to {d} undone"
                );
            }
            // Per-client order: payload numbers grow with sequence numbers.
            let ns: Vec<u64> = queue.values().copied().collect();
            assert!(ns.windows(2).all(|w| w[0] < w[1]), "order broken for {c}");
        }
        for (topic, &n) in &self.retained {
            let stored = state
                .retained
                .iter()
                .find(|m| &m.topic == topic)
                .unwrap_or_else(|| panic!("acknowledged retained {topic} lost"));
            let b: [u8; 8] = stored.payload[..].try_into().unwrap();
            assert!(
                u64::from_le_bytes(b) >= n,
                "retained {topic} went back before an acknowledged value"
            );
        }
    }
}

/// The child's body when re-executed; otherwise a bounded in-process run checked the same way.
#[test]
fn crash_workload() {
    if let Ok(dir) = std::env::var(CHILD_ENV) {
        let stdout = Mutex::new(std::io::stdout());
        workload(Path::new(&dir), None, &|line| {
            let mut out = stdout.lock().unwrap();
            writeln!(out, "{line}").unwrap();
            out.flush().unwrap();
        });
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let lines = Mutex::new(Vec::new());
    workload(dir.path(), Some(60), &|line| {
        lines.lock().unwrap().push(line)
    });
    let mut promises = Promises::default();
    for line in lines.into_inner().unwrap() {
        promises.absorb(&line);
    }
    assert_eq!(
        promises.enqueued.values().map(BTreeMap::len).sum::<usize>(),
        240
    );
    promises.verify(dir.path());
}

/// Tiny xorshift; the seed is printed so a failure can be reproduced by hand.
fn next_rand(state: &mut u64) -> u64 {
    *state ^= *state << 13;
    *state ^= *state >> 7;
    *state ^= *state << 17;
    *state
}

#[test]
fn acknowledged_writes_survive_sigkill() {
    let dir = tempfile::tempdir().unwrap();
    let exe = std::env::current_exe().unwrap();
    let mut seed = now_ms() | 1;
    println!("seed {seed}");
    let mut promises = Promises::default();
    for round in 0..ROUNDS {
        let mut child = Command::new(&exe)
            .args([
                "--exact",
                "crash_workload",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(CHILD_ENV, dir.path())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let lines = Arc::new(Mutex::new(Vec::<String>::new()));
        let reader = {
            let lines = lines.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(stdout).lines() {
                    match line {
                        Ok(l) => lines.lock().unwrap().push(l),
                        Err(_) => break,
                    }
                }
            })
        };
        // Wait for the first acknowledgement (bounded), then kill at a random moment.
        let started = Instant::now();
        while lines.lock().unwrap().iter().all(|l| !l.starts_with("ACK-")) {
            assert!(
                started.elapsed() < Duration::from_secs(60),
                "child wrote nothing"
            );
            std::thread::sleep(Duration::from_millis(5));
        }
        let delay = 20 + next_rand(&mut seed) % 400;
        std::thread::sleep(Duration::from_millis(delay));
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        reader.join().unwrap();
        let before = promises.acks;
        for line in lines.lock().unwrap().iter() {
            promises.absorb(line);
        }
        println!(
            "round {round}: killed after {delay} ms, {} acknowledgements",
            promises.acks - before
        );
        assert!(promises.acks > before, "round {round}: no acknowledgement");
        // The operator tool sees an unclean shutdown that the next open recovers.
        let report = check(dir.path()).unwrap();
        assert_eq!(report.status, CheckStatus::Recovered, "{report}");
        promises.verify(dir.path());
    }
}
