//! A full disk (ENOSPC from the file system) refuses writes with `QuotaExceeded { DiskFull }`,
//! is counted, never panics, and the store recovers once space is available again.

use std::fs::OpenOptions;
use std::io;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use redb::StorageBackend;
use redb::backends::FileBackend;

use crate::error::{QuotaLimit, StoreError, from_open};
use crate::record::StoredMessage;
use crate::store::Store;
use crate::writer::Opener;
use crate::{Batch, StoreConfig, db};

/// A file backend on a "disk" whose capacity the test controls.
#[derive(Debug)]
struct SmallDisk {
    file: FileBackend,
    capacity: Arc<AtomicU64>,
}

fn enospc() -> io::Error {
    io::Error::from_raw_os_error(28)
}

impl StorageBackend for SmallDisk {
    fn len(&self) -> Result<u64, io::Error> {
        self.file.len()
    }
    fn read(&self, offset: u64, len: usize) -> Result<Vec<u8>, io::Error> {
        self.file.read(offset, len)
    }
    fn set_len(&self, len: u64) -> Result<(), io::Error> {
        if len > self.capacity.load(Ordering::SeqCst) {
            return Err(enospc());
        }
        self.file.set_len(len)
    }
    fn sync_data(&self, eventual: bool) -> Result<(), io::Error> {
        self.file.sync_data(eventual)
    }
    fn write(&self, offset: u64, data: &[u8]) -> Result<(), io::Error> {
        if offset + data.len() as u64 > self.capacity.load(Ordering::SeqCst) {
            return Err(enospc());
        }
        self.file.write(offset, data)
    }
}

fn message(n: usize) -> StoredMessage {
    StoredMessage {
        topic: "t".into(),
        payload: Bytes::from(vec![7u8; n]),
        qos: 1,
        retain: false,
        properties: Bytes::new(),
        expires_at_unix_ms: None,
        publisher_id: None,
    }
}

#[test]
fn enospc_refuses_writes_then_recovers() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = StoreConfig::with_dir(dir.path());
    let path = cfg.file_path();
    drop(db::open_database(&path, 1 << 20).unwrap()); // create the file normally
    let capacity = Arc::new(AtomicU64::new(u64::MAX));
    let opener: Opener = {
        let capacity = capacity.clone();
        let path = path.clone();
        Arc::new(move || {
            let file = OpenOptions::new()
                .read(true)
                .write(true)
                .open(&path)
                .map_err(|e| StoreError::io(&path, e))?;
            let file = FileBackend::new(file).map_err(|e| from_open(&path, e))?;
            redb::Database::builder()
                .create_with_backend(SmallDisk {
                    file,
                    capacity: capacity.clone(),
                })
                .map_err(|e| from_open(&path, e))
        })
    };
    let store = Store::open_with(&cfg, opener).unwrap();
    let session = crate::SessionRecord {
        client_id: "c".into(),
        session_expiry_interval_secs: crate::NEVER_EXPIRES,
        disconnected_at_unix_ms: None,
        protocol_version: 5,
        subscriptions: vec![],
        inflight: vec![],
        incoming_qos2: vec![],
    };
    store.put_session(&session).wait().unwrap();
    store.enqueue("c", &message(100)).wait().unwrap();

    // The disk fills up: the file cannot grow past its current size.
    capacity.store(std::fs::metadata(&path).unwrap().len(), Ordering::SeqCst);
    let mut refused = 0;
    for _ in 0..3 {
        let mut b = Batch::new();
        for _ in 0..50 {
            b.enqueue("c", &message(64 * 1024));
        }
        match store.submit(b).wait() {
            Err(StoreError::QuotaExceeded {
                limit: QuotaLimit::DiskFull,
            }) => refused += 1,
            Err(other) => panic!("unexpected error {other}"),
            Ok(_) => {}
        }
    }
    assert!(refused >= 1, "a 3 MiB batch fitted in a full file");
    let snap = store.stats().snapshot();
    assert_eq!(snap.rejected_disk_full, refused);
    assert_eq!(snap.commit_failures, refused);

    // Space is freed: the writer reopens the file and goes on; the first write is intact.
    capacity.store(u64::MAX, Ordering::SeqCst);
    let committed = store.enqueue("c", &message(100)).wait().unwrap();
    assert!(store.stats().snapshot().reopens >= 1);
    let state = store.load_all(0).unwrap();
    let q = &state.queues["c"];
    assert_eq!(q[0].seq, 0);
    assert_eq!(q.last().unwrap().seq, committed.seqs[0].unwrap());
    assert_eq!(q.len() as u64, 2 + (3 - refused) * 50);
}
