//! Replays the committed fuzz corpus (`fuzz/corpus/decode/`) through the fuzz target's body,
//! so that every input the fuzzer found interesting stays a regression test on stable Rust.

use std::path::Path;

use bytes::BytesMut;
use halyard_codec::{MAX_PACKET_SIZE, ProtocolVersion, decode, fuzzing::decode_roundtrip};

fn corpus() -> Vec<(String, Vec<u8>)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus/decode");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|entry| {
            let path = entry.expect("corpus entry").path();
            let name = path
                .file_name()
                .expect("file name")
                .to_string_lossy()
                .into_owned();
            (name, std::fs::read(&path).expect("read corpus file"))
        })
        .collect();
    files.sort();
    files
}

#[test]
fn corpus_replays_through_the_fuzz_target() {
    let files = corpus();
    assert!(files.len() >= 30, "corpus has only {} files", files.len());
    for (name, data) in &files {
        let outcome = std::panic::catch_unwind(|| decode_roundtrip(data));
        assert!(outcome.is_ok(), "fuzz target failed on corpus file {name}");
    }
}

#[test]
fn seed_packets_are_valid_and_bad_seeds_are_rejected() {
    for (name, data) in corpus() {
        let version = if name.starts_with("v5-") {
            ProtocolVersion::V5
        } else if name.starts_with("v311-") {
            ProtocolVersion::V311
        } else {
            if name.starts_with("bad-") {
                let mut buf = BytesMut::from(&data[..]);
                assert!(
                    decode(&mut buf, ProtocolVersion::V5, 1024).is_err(),
                    "{name} decodes"
                );
            }
            continue;
        };
        let mut buf = BytesMut::from(&data[..]);
        while !buf.is_empty() {
            let packet = decode(&mut buf, version, MAX_PACKET_SIZE);
            assert!(matches!(packet, Ok(Some(_))), "{name}: {packet:?}");
        }
    }
}
