//! Stamps the build with its git revision and date, for `--version` and the
//! `inletd_build_info` gauge (`INLETD_GIT_REVISION`, `INLETD_BUILD_DATE`).
//!
//! The revision comes from `BUILD_REVISION` when set (a container build, whose
//! context has no `.git`, passes it in; not `INLETD_*`, which names
//! configuration keys), else `git rev-parse`, else `unknown`: a build never
//! fails for want of git. The date honours
//! `SOURCE_DATE_EPOCH` (reproducible builds), else it is the time this script
//! last ran: it reruns when HEAD moves or those variables change, not on every
//! edit, so a development build may show the date of its last commit's build.

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

fn main() {
    println!("cargo:rerun-if-env-changed=BUILD_REVISION");
    println!("cargo:rerun-if-env-changed=SOURCE_DATE_EPOCH");
    println!("cargo:rustc-env=INLETD_GIT_REVISION={}", revision());
    println!("cargo:rustc-env=INLETD_BUILD_DATE={}", build_date());
}

fn revision() -> String {
    if let Some(rev) = std::env::var("BUILD_REVISION")
        .ok()
        .map(|r| r.trim().to_owned())
        .filter(|r| !r.is_empty())
    {
        return rev;
    }
    let Some(rev) = git(&["rev-parse", "--short=12", "HEAD"]) else {
        return "unknown".to_owned();
    };
    // Rebuild when HEAD moves: HEAD itself (a checkout) and the refs it may
    // point to (a commit). In a worktree these live in two git directories.
    for dir in [
        git(&["rev-parse", "--git-dir"]),
        git(&["rev-parse", "--git-common-dir"]),
    ]
    .into_iter()
    .flatten()
    {
        let dir = PathBuf::from(dir);
        for file in ["HEAD", "packed-refs", "refs/heads"] {
            if dir.join(file).exists() {
                println!("cargo:rerun-if-changed={}", dir.join(file).display());
            }
        }
    }
    rev
}

/// `git ARGS` in the package directory, its trimmed output if it succeeded.
fn git(args: &[&str]) -> Option<String> {
    let out = Command::new("git")
        .args(args)
        .current_dir(std::env::var_os("CARGO_MANIFEST_DIR")?)
        .output()
        .ok()?;
    let text = String::from_utf8(out.stdout).ok()?;
    (out.status.success() && !text.trim().is_empty()).then(|| text.trim().to_owned())
}

/// The build's date as `YYYY-MM-DD` (UTC).
fn build_date() -> String {
    let when = match std::env::var("SOURCE_DATE_EPOCH") {
        Ok(secs) => match secs.trim().parse::<u64>() {
            Ok(secs) => UNIX_EPOCH + Duration::from_secs(secs),
            Err(e) => panic!("SOURCE_DATE_EPOCH={secs:?} is not a number of seconds: {e}"),
        },
        Err(_) => SystemTime::now(),
    };
    let stamp = humantime::format_rfc3339_seconds(when).to_string();
    stamp.get(..10).unwrap_or(&stamp).to_owned()
}
