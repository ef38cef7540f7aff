//! Black-box: a data directory holding a store file of another format (an older
//! development build's, or a newer release's) is refused by the daemon and by the offline
//! commands with a message that says what it is and what to do, and the file is left
//! exactly as it was.

mod common;

use common::Config;
use redb::{Database, TableDefinition};
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

const META: TableDefinition<&str, &[u8]> = TableDefinition::new("meta");
/// The request log as format 1 kept it: a row per record.
const OLD_LOGS: TableDefinition<&str, &[u8]> = TableDefinition::new("logs");
const KEYS: TableDefinition<&str, &[u8]> = TableDefinition::new("keys");

/// Writes `data/gemini-balance.redb` as a build of format `version` left it, with a key
/// and a log record, and answers its bytes.
fn store_of_format(data: &Path, version: u32) -> Vec<u8> {
    std::fs::create_dir_all(data).unwrap();
    let path = data.join("gemini-balance.redb");
    let db = Database::create(&path).unwrap();
    let txn = db.begin_write().unwrap();
    {
        let mut meta = txn.open_table(META).unwrap();
        meta.insert("format_version", version.to_le_bytes().as_slice())
            .unwrap();
        let key = br#"{"id":"k1","key":"AIzaSyOldStore-0123456789abcdefghij","created_at":1}"#;
        txn.open_table(KEYS)
            .unwrap()
            .insert("k1", key.as_slice())
            .unwrap();
        let record = br#"{"request_id":"r1","time":1750000000000}"#;
        txn.open_table(OLD_LOGS)
            .unwrap()
            .insert("00000197720c9c00r1", record.as_slice())
            .unwrap();
    }
    txn.commit().unwrap();
    drop(db);
    std::fs::read(&path).unwrap()
}

/// Runs the binary with `args` on the data dir; it must exit by itself within 30 s.
fn run(dir: &Path, args: &[&str]) -> (Output, String) {
    let conf = dir.join("gb.toml");
    let cfg = Config::with_url("http://127.0.0.1:9").admin_password("store-format-pw");
    std::fs::write(&conf, cfg.to_toml()).unwrap();
    let child = Command::new(env!("CARGO_BIN_EXE_gemini-balance"))
        .args(args)
        .arg("--config")
        .arg(&conf)
        .arg("--data-dir")
        .arg(dir.join("data"))
        .env_remove("RUST_LOG")
        .env_remove("GEMINI_BALANCE_CONFIG")
        .env_remove("GEMINI_BALANCE_ADMIN_PASSWORD")
        .env_remove("GEMINI_BALANCE_STORE")
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn gemini-balance");
    let pid = child.id();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || tx.send(child.wait_with_output()));
    let Ok(out) = rx.recv_timeout(Duration::from_secs(30)) else {
        let _ = Command::new("kill").arg("-9").arg(pid.to_string()).status();
        panic!("gemini-balance {args:?} kept running on a store it cannot read");
    };
    let out = out.expect("wait for gemini-balance");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out, text)
}

#[test]
fn a_store_of_an_older_format_is_refused_with_what_to_do_and_left_as_it_was() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let before = store_of_format(&data, 3);
    let file = data.join("gemini-balance.redb");
    for args in [
        &["serve", "--listen", "127.0.0.1:0"][..],
        &["keys", "export"],
    ] {
        let (out, text) = run(dir.path(), args);
        assert!(!out.status.success(), "{args:?}: {}\n{text}", out.status);
        for part in [
            file.display().to_string().as_str(),
            "format 3",
            "move the file aside",
        ] {
            assert!(text.contains(part), "{args:?}: {part:?} in\n{text}");
        }
        assert!(!text.contains("listening on"), "{args:?}:\n{text}");
        assert!(
            !text.contains("AIzaSyOldStore"),
            "a stored key leaked:\n{text}"
        );
        assert_eq!(
            std::fs::read(&file).unwrap(),
            before,
            "{args:?}: the file is untouched"
        );
    }
}

#[test]
fn a_store_of_a_newer_format_is_refused_and_left_as_it_was() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let before = store_of_format(&data, 1000);
    let (out, text) = run(dir.path(), &["serve", "--listen", "127.0.0.1:0"]);
    assert!(!out.status.success(), "{}\n{text}", out.status);
    assert!(text.contains("newer gemini-balance (format 1000"), "{text}");
    let after = std::fs::read(data.join("gemini-balance.redb")).unwrap();
    assert_eq!(after, before, "the file is untouched");
}
