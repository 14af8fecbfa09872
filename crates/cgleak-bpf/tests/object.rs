//! The embedded object against the Rust side, and the fallbacks that need no privilege:
//! the record layout the parser reads is the one clang laid out (read from the object's
//! own BTF), and a missing, unreadable or too-old kernel BTF gives its reason, not a panic.

use std::collections::HashMap;
use std::fs;

use cgleak_bpf::loader::OBJECT;
use cgleak_bpf::record::{self, offsets, summary_offsets};
use cgleak_bpf::Walker;

/// The object's BTF, as aya reads it.
fn object_btf() -> Vec<u8> {
    let obj = aya_obj::Object::parse(OBJECT).expect("the embedded object parses");
    obj.btf.expect("the object carries BTF (clang -g)").to_bytes()
}

/// Struct name -> (size, member name -> byte offset), from raw BTF (kernel
/// Documentation/bpf/btf.rst): enough of the format to find two structs.
fn structs(btf: &[u8]) -> HashMap<String, (u32, HashMap<String, u32>)> {
    let u32_at = |at: usize| u32::from_le_bytes(btf[at..at + 4].try_into().unwrap());
    assert_eq!(u16::from_le_bytes([btf[0], btf[1]]), 0xeb9f, "BTF magic");
    let hdr = u32_at(4) as usize;
    let (type_off, type_len, str_off) = (u32_at(8) as usize, u32_at(12) as usize, u32_at(16) as usize);
    let strings = hdr + str_off;
    let name = |off: u32| {
        let s = &btf[strings + off as usize..];
        String::from_utf8_lossy(&s[..s.iter().position(|c| *c == 0).unwrap()]).into_owned()
    };
    let mut out = HashMap::new();
    let (mut at, end) = (hdr + type_off, hdr + type_off + type_len);
    while at < end {
        let (name_off, info, size) = (u32_at(at), u32_at(at + 4), u32_at(at + 8));
        let (kind, vlen, kflag) = ((info >> 24) & 0x1f, (info & 0xffff) as usize, info >> 31);
        at += 12;
        let extra = match kind {
            1 | 14 | 17 => 4,
            3 => 12,
            4 | 5 => 12 * vlen,
            6 | 13 => 8 * vlen,
            15 | 19 => 12 * vlen,
            _ => 0,
        };
        if kind == 4 {
            let mut members = HashMap::new();
            for m in 0..vlen {
                let b = at + 12 * m;
                let bits = if kflag == 1 { u32_at(b + 8) & 0xff_ffff } else { u32_at(b + 8) };
                members.insert(name(u32_at(b)), bits / 8);
            }
            out.insert(name(name_off), (size, members));
        }
        at += extra;
    }
    out
}

#[test]
fn record_layout_is_the_one_clang_laid_out() {
    let s = structs(&object_btf());
    let (size, m) = &s["memcg_rec"];
    let want = [
        ("len", offsets::LEN),
        ("version", offsets::VERSION),
        ("kind", offsets::KIND),
        ("css_flags", offsets::CSS_FLAGS),
        ("cgroup_id", offsets::CGROUP_ID),
        ("parent_cgroup_id", offsets::PARENT_CGROUP_ID),
        ("depth", offsets::DEPTH),
        ("memcg_id", offsets::MEMCG_ID),
        ("id_refs", offsets::ID_REFS),
        ("have", offsets::HAVE),
        ("memory_pages", offsets::MEMORY_PAGES),
        ("swap_pages", offsets::SWAP_PAGES),
        ("kmem_pages", offsets::KMEM_PAGES),
        ("file_lru_pages", offsets::FILE_LRU_PAGES),
        ("anon_lru_pages", offsets::ANON_LRU_PAGES),
        ("unevictable_lru_pages", offsets::UNEVICTABLE_LRU_PAGES),
        ("name_len", offsets::NAME_LEN),
        ("name", offsets::NAME),
    ];
    for (field, off) in want {
        assert_eq!(m.get(field).copied(), Some(off as u32), "memcg_rec.{field}");
    }
    assert_eq!(m.len(), want.len() + 1, "every field but pad is read: {m:?}");
    assert_eq!(*size as usize, record::HEADER_BYTES + record::NAME_MAX + 1, "header + NAME_MAX_BYTES");

    let (size, m) = &s["walk_summary"];
    assert_eq!(*size as usize, record::SUMMARY_BYTES);
    for (field, off) in [
        ("version", summary_offsets::VERSION),
        ("status", summary_offsets::STATUS),
        ("visited", summary_offsets::VISITED),
        ("emitted", summary_offsets::EMITTED),
        ("dropped", summary_offsets::DROPPED),
        ("start_cgroup_id", summary_offsets::START_CGROUP_ID),
        ("root_cgroup_id", summary_offsets::ROOT_CGROUP_ID),
        ("steps", summary_offsets::STEPS),
        ("lru_zones", summary_offsets::LRU_ZONES),
        ("nodes", summary_offsets::NODES),
    ] {
        assert_eq!(m.get(field).copied(), Some(off as u32), "walk_summary.{field}");
    }
}

#[test]
fn missing_btf_is_no_btf() {
    let d = tempfile::tempdir().unwrap();
    let e = Walker::new(d.path()).btf_path(d.path().join("vmlinux")).walk().unwrap_err();
    assert_eq!(e.code(), "no_btf", "{e}");
    let msg = e.to_string();
    assert!(msg.contains("vmlinux") && msg.contains("CONFIG_DEBUG_INFO_BTF"), "{msg}");
}

#[test]
fn unreadable_btf_is_no_btf() {
    let d = tempfile::tempdir().unwrap();
    fs::write(d.path().join("vmlinux"), b"not BTF at all").unwrap();
    let e = Walker::new(d.path()).btf_path(d.path().join("vmlinux")).walk().unwrap_err();
    assert_eq!(e.code(), "no_btf", "{e}");
    assert!(e.to_string().contains("unreadable"), "{e}");
}

#[test]
fn a_kernel_btf_without_the_cgroup_iterator_is_too_old() {
    // Valid BTF that lacks bpf_iter_cgroup, as a kernel before 6.1 (or without
    // CONFIG_CGROUPS' iterator) has: the object's own.
    let d = tempfile::tempdir().unwrap();
    fs::write(d.path().join("vmlinux"), object_btf()).unwrap();
    let e = Walker::new(d.path()).btf_path(d.path().join("vmlinux")).walk().unwrap_err();
    assert_eq!(e.code(), "kernel_too_old", "{e}");
    assert!(e.to_string().contains("bpf_iter_cgroup") && e.to_string().contains("6.1"), "{e}");
}

#[test]
fn a_directory_that_is_no_cgroup_is_no_hierarchy() {
    // The real BTF where there is one (this host): then the directory decides.
    if !std::path::Path::new("/sys/kernel/btf/vmlinux").exists() {
        let e = Walker::new("/").walk().unwrap_err();
        assert_eq!(e.code(), "no_btf");
        return;
    }
    let d = tempfile::tempdir().unwrap();
    let e = Walker::new(d.path()).walk().unwrap_err();
    assert_eq!(e.code(), "no_memory_hierarchy", "{e}");
    assert!(e.to_string().contains("not a cgroup file system"), "{e}");
}
