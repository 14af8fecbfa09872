//! Log sources for `cgleak logs` and the log evidence of `cgleak check`: files (plain,
//! rotated, gzip), standard input, journald and the kernel's buffer (`crate::kmsg`).
//!
//! Every source hands its lines, as bytes, to a [`LineSink`] (the incident parser
//! behind a prefilter), numbered from 1 within the source. Memory stays bounded
//! whatever the input: one reusable buffer per source, long lines cut (see [`split`]).

pub mod clock;
pub mod files;
pub mod journal;
pub mod mapped;
pub mod split;

pub use split::{scan_reader, LineSink, LineSplitter, ScanStats};
