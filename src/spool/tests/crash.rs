//! `kill -9` at the engine level: a child process (this test binary again)
//! appends from many tasks and prints each id once its append resolved; the
//! parent kills it mid-stream, reopens, and every printed id must come back.
//! Three cycles, each adding segments after the previous crash's torn tail.

use std::collections::HashSet;
use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};

use super::*;

const DIR_VAR: &str = "INLETD_SPOOL_CRASH_CHILD_DIR";

/// The child: appends until killed. Does nothing unless the parent started it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "run by a_kill_9_loses_no_answered_append as its child process"]
async fn crash_child() {
    let Some(dir) = std::env::var_os(DIR_VAR) else {
        return;
    };
    let (spool, _) = open(SpoolOptions::new(PathBuf::from(dir)));
    let out = Arc::new(Mutex::new(std::io::stdout()));
    let mut tasks = Vec::new();
    for task in 0..16u64 {
        let (spool, out) = (spool.clone(), Arc::clone(&out));
        tasks.push(tokio::spawn(async move {
            for n in 0.. {
                let id = spool.append(&record(task * 1_000_000 + n)).await.unwrap();
                let mut out = out.lock().unwrap();
                writeln!(out, "ID {} {}", id.segment, id.offset).unwrap();
                out.flush().unwrap();
            }
        }));
    }
    for task in tasks {
        let _ = task.await;
    }
}

#[tokio::test]
async fn a_kill_9_loses_no_answered_append() {
    let dir = tempfile::tempdir().unwrap();
    let spool_dir = dir.path().join("spool");
    let mut answered = HashSet::new();
    for _cycle in 0..3 {
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "spool::tests::crash::crash_child",
                "--ignored",
                "--nocapture",
            ])
            .env(DIR_VAR, &spool_dir)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let mut seen = 0;
        for line in BufReader::new(stdout).lines() {
            let line = line.unwrap();
            let Some(rest) = line.strip_prefix("ID ") else {
                continue;
            };
            let (segment, offset) = rest.split_once(' ').unwrap();
            answered.insert(RecordId {
                segment: segment.parse().unwrap(),
                offset: offset.parse().unwrap(),
            });
            seen += 1;
            if seen == 400 {
                child.kill().unwrap(); // SIGKILL, mid-stream
                break;
            }
        }
        child.wait().unwrap();
        assert_eq!(seen, 400, "the child stopped early");

        let (spool, back) = replayed(SpoolOptions::new(&spool_dir));
        let back: HashSet<RecordId> = back.into_iter().map(|(id, _)| id).collect();
        let lost: Vec<&RecordId> = answered.difference(&back).collect();
        assert!(lost.is_empty(), "answered but not replayed: {lost:?}");
        spool.close().await;
    }
    assert_eq!(answered.len(), 1200);
}
