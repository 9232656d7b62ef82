//! Bad disk state: truncated, garbage and empty files give the documented error, and the
//! documented ways out (check, repair, discard) work.

mod common;

use std::fs;
use std::path::Path;

use common::{config, msg, now_ms, session};
use halyard_store::{
    Batch, CheckStatus, NEVER_EXPIRES, STORE_FILE_NAME, Store, StoreError, check, discard_corrupt,
    open_discarding_corrupt, repair,
};

fn populate(dir: &Path) {
    let store = Store::open(&config(dir)).unwrap();
    let mut b = Batch::new();
    b.put_session(&session("c", NEVER_EXPIRES, Some(1)));
    for i in 0..200u32 {
        b.enqueue("c", &msg("t", &i.to_le_bytes().repeat(64)));
    }
    b.set_retained(&msg("r", b"x"));
    store.submit(b).wait().unwrap();
}

/// The documented error: names the file and the three ways out.
fn assert_documented_corrupt(err: &StoreError, dir: &Path) {
    assert!(matches!(err, StoreError::Corrupt { .. }), "{err:?}");
    let text = err.to_string();
    let file = dir.join(STORE_FILE_NAME);
    assert!(text.contains(&file.display().to_string()), "{text}");
    assert!(
        text.contains(&format!("halyard store check --dir {}", dir.display())),
        "{text}"
    );
    assert!(
        text.contains(&format!("halyard store repair --dir {}", dir.display())),
        "{text}"
    );
    assert!(text.contains("--discard-corrupt"), "{text}");
}

/// After the documented error: check and repair say corrupt, discard moves the file aside,
/// and the next open starts empty.
fn assert_way_out(dir: &Path) {
    let report = check(dir).unwrap();
    assert!(
        matches!(report.status, CheckStatus::Corrupt { .. }),
        "{report}"
    );
    assert!(!report.is_usable());
    assert!(report.to_string().contains("--discard-corrupt"), "{report}");
    let report = repair(dir).unwrap();
    assert!(
        matches!(report.status, CheckStatus::Corrupt { .. }),
        "{report}"
    );
    let file = dir.join(STORE_FILE_NAME);
    let bad = fs::read(&file).unwrap();
    let moved = discard_corrupt(dir).unwrap();
    assert_eq!(
        fs::read(&moved).unwrap(),
        bad,
        "the bad file is kept, not deleted"
    );
    assert!(!file.exists());
    let store = Store::open(&config(dir)).unwrap();
    let state = store.load_all(now_ms()).unwrap();
    assert!(state.sessions.is_empty() && state.queues.is_empty());
}

#[test]
fn truncated_file_gives_the_documented_error() {
    let dir = tempfile::tempdir().unwrap();
    populate(dir.path());
    let file = dir.path().join(STORE_FILE_NAME);
    let len = fs::metadata(&file).unwrap().len();
    fs::OpenOptions::new()
        .write(true)
        .open(&file)
        .unwrap()
        .set_len(len.min(2048))
        .unwrap();
    let err = Store::open(&config(dir.path())).unwrap_err();
    assert_documented_corrupt(&err, dir.path());
    assert_way_out(dir.path());
}

#[test]
fn garbage_file_gives_the_documented_error() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join(STORE_FILE_NAME);
    let mut x = 0x9E37_79B9_7F4A_7C15u64;
    let garbage: Vec<u8> = (0..64 * 1024)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect();
    fs::write(&file, garbage).unwrap();
    let err = Store::open(&config(dir.path())).unwrap_err();
    assert_documented_corrupt(&err, dir.path());
    assert_way_out(dir.path());
}

#[test]
fn empty_file_is_corrupt_not_silently_new() {
    let dir = tempfile::tempdir().unwrap();
    fs::write(dir.path().join(STORE_FILE_NAME), b"").unwrap();
    let err = Store::open(&config(dir.path())).unwrap_err();
    assert_documented_corrupt(&err, dir.path());
    let (store, discarded) = open_discarding_corrupt(&config(dir.path())).unwrap();
    let discarded = discarded.expect("the empty file was moved aside");
    assert!(discarded.moved_to.exists());
    assert!(discarded.reason.contains(STORE_FILE_NAME));
    assert!(store.load_all(now_ms()).unwrap().sessions.is_empty());
}

#[test]
fn check_reports_clean_files_counts_and_locks() {
    let dir = tempfile::tempdir().unwrap();
    let report = check(dir.path()).unwrap();
    assert_eq!(report.status, CheckStatus::Missing);
    populate(dir.path());
    let before = fs::read(dir.path().join(STORE_FILE_NAME)).unwrap();
    let report = check(dir.path()).unwrap();
    assert_eq!(report.status, CheckStatus::Clean, "{report}");
    let counts = report.counts.unwrap();
    assert_eq!(
        (counts.sessions, counts.queued, counts.retained),
        (1, 200, 1)
    );
    assert_eq!(
        fs::read(dir.path().join(STORE_FILE_NAME)).unwrap(),
        before,
        "check does not modify the file"
    );
    let leftovers: Vec<_> = fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(
        leftovers.len(),
        1,
        "check leaves no scratch file: {leftovers:?}"
    );

    let store = Store::open(&config(dir.path())).unwrap();
    assert!(matches!(
        Store::open(&config(dir.path())).unwrap_err(),
        StoreError::Locked { .. }
    ));
    assert!(matches!(
        check(dir.path()).unwrap_err(),
        StoreError::Locked { .. }
    ));
    assert!(matches!(
        discard_corrupt(dir.path()).unwrap_err(),
        StoreError::Locked { .. }
    ));
    drop(store);
    let report = repair(dir.path()).unwrap();
    assert_eq!(report.status, CheckStatus::Clean, "{report}");
    assert_eq!(report.counts.unwrap().queued, 200);
}
