//! End-to-end tests: the real inletd and the AEP stand-in on 127.0.0.1,
//! port 0. Tests wait for events (answers, records); none asserts speed.

mod support;

mod backpressure;
mod chaos;
pub mod cli;
mod connect_proxy;
mod connections;
mod credentials;
mod dead_letters;
mod failures;
mod fanout;
mod flush;
mod forward;
mod ims;
mod ims_cli;
mod logs;
mod memory;
mod metrics;
mod paths;
mod prometheus;
mod shutdown;
mod slow;
mod spool;
mod spool_crash;
mod spool_overflow;
mod tls;
mod upstream_answers;
