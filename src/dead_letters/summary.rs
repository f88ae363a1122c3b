//! What `dead-letters resend` prints on stdout when it is done: how many
//! were accepted, and the kept ones per connection id and reason.

use std::collections::BTreeMap;
use std::fmt;

/// What a resend did, printed on stdout.
#[derive(Default)]
pub struct Summary {
    pub target: String,
    pub dry_run: bool,
    pub accepted: u64,
    /// Failures per connection id and reason.
    pub failed: BTreeMap<(String, String), u64>,
    pub unreadable: u64,
    pub other_connections: u64,
}

impl fmt::Display for Summary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let failed: u64 = self.failed.values().sum();
        if self.dry_run {
            writeln!(
                f,
                "dry run: would send {failed} dead letters to {}",
                self.target
            )?;
            for ((connection, _), n) in &self.failed {
                writeln!(f, "  {connection}: {n}")?;
            }
        } else {
            writeln!(
                f,
                "resent to {}: {} accepted (removed), {failed} failed (kept)",
                self.target, self.accepted
            )?;
            for ((connection, reason), n) in &self.failed {
                writeln!(f, "  kept {n} of {connection}: {reason}")?;
            }
        }
        if self.other_connections > 0 {
            writeln!(
                f,
                "{} of other connections left as they are",
                self.other_connections
            )?;
        }
        if self.unreadable > 0 {
            writeln!(f, "{} unreadable lines kept (see stderr)", self.unreadable)?;
        }
        Ok(())
    }
}
