//! Arbitrary bytes as a BLS entry (its options line): `fix nokmem`'s edit keeps the
//! property of common/nokmem_edit.rs.
#![no_main]

use cgleak_actions::fix::nokmem::BootFile;
use libfuzzer_sys::fuzz_target;

#[path = "common/nokmem_edit.rs"]
mod nokmem_edit;

fuzz_target!(|data: &[u8]| nokmem_edit::check(BootFile::BlsEntry, data));
