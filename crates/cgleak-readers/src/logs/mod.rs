//! Log sources for `cgleak logs`, the log evidence of `cgleak check` and the agent: files
//! (plain, rotated, gzip), standard input, journald and the kernel's buffer (`crate::kmsg`).
//!
//! Every source hands its lines, as bytes, to a [`LineSink`] (the incident parser
//! behind a prefilter), numbered from 1 within the source. Memory stays bounded
//! whatever the input: one reusable buffer per source, long lines cut (see [`split`]).
//! [`sources`] says which sources a host has, [`read`] reads one (to its end, from a
//! window's start, or following it), [`follow`] keeps a daemon's followers running.

pub mod clock;
pub mod files;
pub mod follow;
pub mod journal;
pub mod mapped;
pub mod read;
pub mod sources;
pub mod split;
pub mod tail;

pub use split::{scan_reader, LineSink, LineSplitter, ScanStats};
