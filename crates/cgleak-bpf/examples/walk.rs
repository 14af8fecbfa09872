//! Print every memcg the BPF walk finds: `cargo run -p cgleak-bpf --example walk -- [MEMORY_ROOT]`.
fn main() {
    let root = std::env::args().nth(1).unwrap_or_else(|| "/sys/fs/cgroup/memory".into());
    match cgleak_bpf::walk_memcgs(std::path::Path::new(&root)) {
        Ok(w) => {
            println!("{:?}: {} memcgs ({} dying) in {:?}, {} attempt(s), ring {} bytes", w.version, w.memcgs.len(), w.dying().count(), w.kernel_time, w.attempts, w.ring_bytes);
            for m in &w.memcgs {
                println!(
                    "{:<7} id={:<6} refs={:<3} mem={:<10} local={:<10} lru={:<10} file={:<10} anon={:<10} kmem={:<10} swap={:<6} {}",
                    if m.online { "online" } else { "DYING" },
                    m.memcg_id.map_or("-".to_string(), |i| i.to_string()),
                    m.id_refs,
                    m.memory_bytes,
                    m.local_memory_bytes,
                    m.lru_bytes().map_or("-".into(), |b| b.to_string()),
                    m.file_bytes.map_or("-".into(), |b| b.to_string()),
                    m.anon_bytes.map_or("-".into(), |b| b.to_string()),
                    m.kmem_bytes.map_or("-".into(), |b| b.to_string()),
                    m.swap_bytes.map_or("-".into(), |b| b.to_string()),
                    m.path.display()
                );
            }
        }
        Err(e) => {
            eprintln!("unavailable ({}): {e}", e.code());
            std::process::exit(1);
        }
    }
}
