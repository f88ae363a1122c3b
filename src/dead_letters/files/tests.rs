//! Taking and merging back the dead-letter files while the daemon's writer
//! appends, and picking up what a crashed resend left.

use std::os::unix::fs::PermissionsExt;
use std::time::{Duration, UNIX_EPOCH};

use bytes::Bytes;

use super::*;
use crate::spool::dead_letter::{line, DeadLetterFile};
use crate::spool::Record;

fn letter(n: u64) -> Vec<u8> {
    let record = Record {
        connection_id: format!("conn-{}", n % 2),
        credentials: Vec::new(),
        body: Bytes::from(format!("{{\"n\":{n}}}")),
        accepted_at: UNIX_EPOCH + Duration::from_millis(1_780_000_000_000 + n),
    };
    line(&record, 400, "bad", UNIX_EPOCH + Duration::from_secs(n))
}

/// What the daemon's writer thread does for one dead letter.
fn daemon_appends(dir: &Path, n: u64) {
    DeadLetterFile
        .write(dir, &RealStorage, &letter(n))
        .expect("the writer appends");
}

fn lines_of(path: &Path) -> Vec<Vec<u8>> {
    read_lines(path).unwrap()
}

fn no_newline(mut l: Vec<u8>) -> Vec<u8> {
    assert_eq!(l.pop(), Some(b'\n'));
    l
}

#[test]
fn take_moves_the_file_aside_and_the_daemon_starts_a_fresh_one() {
    let dir = tempfile::tempdir().unwrap();
    daemon_appends(dir.path(), 1);
    daemon_appends(dir.path(), 2);
    let taken = take(dir.path()).unwrap();
    assert_eq!(taken.len(), 1);
    assert!(!dir.path().join(FILE_NAME).exists());
    assert_eq!(lines_of(&taken[0]).len(), 2);

    daemon_appends(dir.path(), 3); // while the resend runs
    assert_eq!(
        lines_of(&dir.path().join(FILE_NAME)),
        vec![no_newline(letter(3))]
    );
    assert_eq!(
        lines_of(&taken[0]).len(),
        2,
        "the taken file is not appended to"
    );
}

#[test]
fn finish_puts_back_the_kept_lines_beside_those_appended_meanwhile() {
    let dir = tempfile::tempdir().unwrap();
    for n in 1..=3 {
        daemon_appends(dir.path(), n);
    }
    let taken = take(dir.path()).unwrap();
    daemon_appends(dir.path(), 4);
    let lines = lines_of(&taken[0]);
    // Line 2 was accepted; 1 and 3 failed again.
    finish(dir.path(), &taken[0], &[lines[0].clone(), lines[2].clone()]).unwrap();

    assert!(!taken[0].exists());
    let main = dir.path().join(FILE_NAME);
    let mut now = lines_of(&main);
    now.sort();
    let mut want: Vec<_> = [1, 3, 4].map(|n| no_newline(letter(n))).to_vec();
    want.sort();
    assert_eq!(now, want, "nothing lost, nothing twice");
    let mode = fs::metadata(&main).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    assert!(leftovers(dir.path()).unwrap().is_empty());
}

#[test]
fn finish_with_everything_accepted_leaves_only_new_dead_letters() {
    let dir = tempfile::tempdir().unwrap();
    daemon_appends(dir.path(), 1);
    let taken = take(dir.path()).unwrap();
    finish(dir.path(), &taken[0], &[]).unwrap();
    assert!(!dir.path().join(FILE_NAME).exists());
    assert!(all_files(dir.path()).unwrap().is_empty());
}

#[test]
fn a_crashed_resend_is_taken_again_by_the_next() {
    let dir = tempfile::tempdir().unwrap();
    daemon_appends(dir.path(), 1);
    let first = take(dir.path()).unwrap();
    // The resend dies here. The daemon goes on.
    daemon_appends(dir.path(), 2);
    let second = take(dir.path()).unwrap();
    assert_eq!(second.len(), 2, "the leftover and the new file: {second:?}");
    assert_eq!(second[0], first[0], "oldest first");
    let all: Vec<_> = second.iter().flat_map(|p| lines_of(p)).collect();
    assert_eq!(all, vec![no_newline(letter(1)), no_newline(letter(2))]);
}

#[test]
fn a_crash_between_merging_back_and_removing_leaves_no_line_twice() {
    let dir = tempfile::tempdir().unwrap();
    for n in 1..=3 {
        daemon_appends(dir.path(), n);
    }
    let taken = take(dir.path()).unwrap();
    let lines = lines_of(&taken[0]);
    let kept = vec![lines[0].clone(), lines[2].clone()];
    // finish() up to the append, then a crash before the removal:
    rewrite(&taken[0], &kept).unwrap();
    {
        let _lock = DeadLetterLock::acquire(dir.path()).unwrap();
        dead_letter::append_lines(dir.path(), &RealStorage, &joined(&kept)).unwrap();
    }
    daemon_appends(dir.path(), 4);

    let next = take(dir.path()).unwrap();
    let all: Vec<_> = next.iter().flat_map(|p| lines_of(p)).collect();
    assert_eq!(
        all,
        [1, 3, 4].map(|n| no_newline(letter(n))).to_vec(),
        "each kept line once, and not the accepted one"
    );
    assert!(!taken[0].exists(), "the leftover held only merged lines");
}

#[test]
fn a_crash_inside_a_rewrite_leaves_the_file_whole_and_the_temp_file_is_removed() {
    let dir = tempfile::tempdir().unwrap();
    daemon_appends(dir.path(), 1);
    let taken = take(dir.path()).unwrap();
    let mut temp = taken[0].as_os_str().to_owned();
    temp.push(TEMP_SUFFIX);
    fs::write(&temp, b"{\"half").unwrap();
    let next = take(dir.path()).unwrap();
    assert_eq!(next, taken);
    assert!(!Path::new(&temp).exists());
    assert_eq!(lines_of(&next[0]), vec![no_newline(letter(1))]);
}

#[test]
fn the_writer_waits_for_the_lock_and_then_appends_to_the_fresh_file() {
    let dir = tempfile::tempdir().unwrap();
    daemon_appends(dir.path(), 1);
    let lock = DeadLetterLock::acquire(dir.path()).unwrap();
    let path = dir.path().to_owned();
    let writer = std::thread::spawn(move || daemon_appends(&path, 2));
    // The writer is blocked on the lock (or not started yet); the move happens now.
    let moved = dir
        .path()
        .join("dead-letter.resending-000000000000001.jsonl");
    fs::rename(dir.path().join(FILE_NAME), &moved).unwrap();
    drop(lock);
    writer.join().unwrap();
    assert_eq!(lines_of(&moved), vec![no_newline(letter(1))]);
    assert_eq!(
        lines_of(&dir.path().join(FILE_NAME)),
        vec![no_newline(letter(2))]
    );
}

#[test]
fn only_one_resend_at_a_time() {
    let dir = tempfile::tempdir().unwrap();
    let first = ResendGuard::try_acquire(dir.path()).unwrap();
    assert!(first.is_some());
    assert!(ResendGuard::try_acquire(dir.path()).unwrap().is_none());
    drop(first);
    assert!(ResendGuard::try_acquire(dir.path()).unwrap().is_some());
}
