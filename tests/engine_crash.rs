//! Crash test with real processes: a child writes from several threads and reports each
//! acknowledged write; the parent SIGKILLs it at a random moment, reopens, and checks that
//! every acknowledged write is there and that no batch is partly applied.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use minidb::engine::{Engine, Error, Options, WriteBatch};
use rand::Rng;

const CHILD_ENV: &str = "MINIDB_CRASH_CHILD_DIR";
const ROUND_ENV: &str = "MINIDB_CRASH_ROUND";
const BATCH_SIZE: usize = 5;

fn options() -> Options {
    // Small memtables so kills land during rotations, flushes and compactions too.
    {
        let mut o = Options::default();
        o.flush_size = 500;
        o.memtable_bytes = 64 << 10;
        o.level0_compaction_trigger = 2;
        o.level_base_bytes = 256 << 10;
        o.target_file_bytes = 128 << 10;
        o
    }
}

/// The child: not a test of its own; the parent runs it with `--ignored`.
#[test]
#[ignore = "run by crash_recovery_keeps_every_acknowledged_write"]
fn crash_child() {
    let (Ok(dir), Ok(round)) = (std::env::var(CHILD_ENV), std::env::var(ROUND_ENV)) else {
        return;
    };
    let db = Arc::new(Engine::open(&dir, options()).expect("child open"));
    let out = Arc::new(std::sync::Mutex::new(std::io::stdout()));
    let threads: Vec<_> = (0..4)
        .map(|t| {
            let (db, out) = (db.clone(), out.clone());
            let round = round.clone();
            std::thread::spawn(move || {
                for i in 0u64.. {
                    let value = format!("r{round}-t{t}-i{i}");
                    let line = if i % 3 == 0 {
                        let mut b = WriteBatch::new();
                        for j in 0..BATCH_SIZE {
                            b.put(
                                format!("b/{round}/{t}/{i}/{j}").as_bytes(),
                                value.as_bytes(),
                            );
                        }
                        match db.write(b) {
                            Ok(()) => format!("ACK B b/{round}/{t}/{i} {value}\n"),
                            Err(Error::Busy { .. }) => continue,
                            Err(e) => panic!("write: {e}"),
                        }
                    } else {
                        let key = format!("s/{round}/{t}/{i}");
                        match db.put(key.as_bytes(), value.as_bytes()) {
                            Ok(()) => format!("ACK S {key} {value}\n"),
                            Err(Error::Busy { .. }) => continue,
                            Err(e) => panic!("write: {e}"),
                        }
                    };
                    if let Ok(mut o) = out.lock() {
                        let _ = o.write_all(line.as_bytes());
                        let _ = o.flush();
                    }
                }
            })
        })
        .collect();
    for t in threads {
        let _ = t.join();
    }
}

#[test]
fn crash_recovery_keeps_every_acknowledged_write() {
    let dir = tempfile::tempdir().expect("tempdir");
    let exe = std::env::current_exe().expect("test binary");
    let mut rng = rand::rng();
    let mut acked_single: HashMap<String, String> = HashMap::new();
    let mut acked_batches: HashMap<String, String> = HashMap::new();
    for round in 0..6 {
        let mut child = Command::new(&exe)
            .args([
                "--exact",
                "crash_child",
                "--ignored",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(CHILD_ENV, dir.path())
            .env(ROUND_ENV, round.to_string())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn child");
        let stdout = child.stdout.take().expect("child stdout");
        let kill_after = Duration::from_millis(rng.random_range(150..900));
        let reader = std::thread::spawn(move || {
            let mut lines = Vec::new();
            for line in BufReader::new(stdout).lines() {
                match line {
                    Ok(l) => lines.push(l),
                    Err(_) => break,
                }
            }
            lines
        });
        let start = Instant::now();
        while start.elapsed() < kill_after {
            std::thread::sleep(Duration::from_millis(10));
        }
        child.kill().expect("SIGKILL child");
        let _ = child.wait();
        let lines = reader.join().expect("reader");
        let mut acks = 0;
        for l in lines {
            let parts: Vec<&str> = l.split(' ').collect();
            // A line cut by the kill is not a whole acknowledgement.
            if let ["ACK", kind, key, value] = parts.as_slice() {
                acks += 1;
                let map = if *kind == "B" {
                    &mut acked_batches
                } else {
                    &mut acked_single
                };
                map.insert((*key).to_string(), (*value).to_string());
            }
        }
        let db = Engine::open(dir.path(), options()).expect("reopen after SIGKILL");
        for (k, v) in &acked_single {
            let got = db.get(k.as_bytes()).expect("get");
            assert_eq!(got.as_deref(), Some(v.as_bytes()), "acknowledged {k} lost");
        }
        for (k, v) in &acked_batches {
            for j in 0..BATCH_SIZE {
                let got = db.get(format!("{k}/{j}").as_bytes()).expect("get");
                assert_eq!(
                    got.as_deref(),
                    Some(v.as_bytes()),
                    "acknowledged batch {k} lost"
                );
            }
        }
        // Every batch present at all must be whole, acknowledged or not.
        let mut members: HashMap<String, usize> = HashMap::new();
        for kv in db.scan_prefix(b"b/") {
            let (k, _) = kv.expect("scan");
            let k = String::from_utf8(k.to_vec()).expect("utf8 key");
            let batch = k
                .rsplit_once('/')
                .map(|(b, _)| b.to_string())
                .unwrap_or_default();
            *members.entry(batch).or_default() += 1;
        }
        for (batch, n) in members {
            assert_eq!(n, BATCH_SIZE, "batch {batch} partly applied");
        }
        assert!(
            acks > 0 || round > 0,
            "child acknowledged nothing in round {round}"
        );
        db.close().expect("close");
    }
    assert!(!acked_single.is_empty() && !acked_batches.is_empty());
}
