//! Build fixtures and leave them on disk, to run cgleak on them by hand:
//!
//!   cargo run -p cgleak-fixtures --example mkfixture            # list the fixtures
//!   cargo run -p cgleak-fixtures --example mkfixture -- centos7-957-kmem
//!   cgleak --host-root <printed path> check

fn main() {
    let names: Vec<String> = std::env::args().skip(1).collect();
    if names.is_empty() {
        for (name, _) in cgleak_fixtures::all() {
            println!("{name}");
        }
        return;
    }
    for name in names {
        match cgleak_fixtures::by_name(&name) {
            Some(f) => println!("{name}\t{}", f.keep().display()),
            None => {
                eprintln!(
                    "mkfixture: no fixture named {name:?} (run without arguments for the list)"
                );
                std::process::exit(2);
            }
        }
    }
}
