//! The minimal BTF (src/minbtf.rs) of this host's kernel relocates the embedded object to
//! the very instructions the whole `/sys/kernel/btf/vmlinux` does, as aya-obj applies the
//! relocations (the same code the walk's loader runs).

use std::path::Path;

use aya::{Btf, Endianness};
use cgleak_bpf::loader::OBJECT;
use cgleak_bpf::minbtf;

const VMLINUX: &str = "/sys/kernel/btf/vmlinux";

/// Every function of the object after relocating it against `target` (None: as compiled).
fn relocated(target: Option<&Btf>) -> Vec<(String, Vec<u8>)> {
    let mut obj = aya_obj::Object::parse(OBJECT).expect("the embedded object parses");
    // As the loader: the object's BTF sanitized for this kernel first.
    if let Some(features) = aya::features().btf() {
        obj.fixup_and_sanitize_btf(features).expect("the object's BTF sanitizes");
    }
    if let Some(t) = target {
        obj.relocate_btf(t).expect("the object relocates");
    }
    obj.functions
        .values()
        .map(|f| {
            // SAFETY: bpf_insn is plain 8-byte data; the slice covers exactly the Vec's elements.
            let bytes = unsafe { std::slice::from_raw_parts(f.instructions.as_ptr().cast::<u8>(), f.instructions.len() * 8) };
            (f.name.clone(), bytes.to_vec())
        })
        .collect()
}

#[test]
fn real_kernel_minimal_btf_relocates_the_object_as_the_full_one() {
    assert!(Path::new(VMLINUX).exists(), "this host's kernel (6.18) has BTF: {VMLINUX} is missing");
    let data = std::fs::read(VMLINUX).unwrap();
    let needs = minbtf::object_needs(OBJECT).expect("the object's relocations read");
    let min = minbtf::minimize(&data, &needs, "bpf_iter_cgroup", &["bpf_loop"]).expect("this host's BTF minimizes");
    let full = Btf::parse(&data, Endianness::default()).unwrap();
    assert_eq!(min.attach_id, full.id_by_type_name_kind("bpf_iter_cgroup", aya_obj::btf::BtfKind::Func).ok(), "the attach ID is the kernel's");
    assert_eq!(min.found, vec![true]);
    assert!(min.kept_types > 0 && min.kept_types < min.total_types / 50, "kept {} of {} types", min.kept_types, min.total_types);
    assert!(min.blob.len() < data.len() / 50, "minimal BTF of {} bytes from {}", min.blob.len(), data.len());
    let again = minbtf::minimize(&min.blob, &needs, "bpf_iter_cgroup", &[]).expect("the minimal BTF minimizes");
    assert_eq!(again.blob, min.blob, "the minimal BTF is its own minimum");
    let small = Btf::parse(&min.blob, Endianness::default()).expect("aya parses the minimal BTF");

    let by_full = relocated(Some(&full));
    let by_min = relocated(Some(&small));
    let as_compiled = relocated(None);
    assert!(!by_full.is_empty());
    assert_ne!(by_full, as_compiled, "the relocations change the program (else this test proves nothing)");
    for ((name, a), (_, b)) in by_full.iter().zip(&by_min) {
        let differ: Vec<usize> = a.chunks(8).zip(b.chunks(8)).enumerate().filter(|(_, (x, y))| x != y).map(|(i, _)| i).collect();
        assert!(differ.is_empty() && a.len() == b.len(), "{name}: instructions {differ:?} differ");
    }
    assert_eq!(by_full, by_min);
    eprintln!("minimal BTF: {} of {} types, {} forward declarations, {} bytes", min.kept_types, min.total_types, min.forwards, min.blob.len());
}
