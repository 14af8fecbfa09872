//! The property every nokmem editor keeps, checked on arbitrary files: it never panics;
//! an edit reads back as exactly the old kernel words plus `cgroup.memory=nokmem` (once,
//! or `,nokmem` on an existing `cgroup.memory=` list), changes no other line, keeps a
//! grubenv block's size and is idempotent; a refusal names a line of the file; no edit
//! means the file has the parameter (or a BLS entry takes its options from `$kernelopts`).

use cgleak_actions::fix::nokmem::{with_nokmem, BootFile};

/// Lines of `old` and `new` (split after each `\n`) that differ, by index.
fn changed_lines(old: &str, new: &str) -> Vec<usize> {
    let (a, b): (Vec<&str>, Vec<&str>) = (old.split_inclusive('\n').collect(), new.split_inclusive('\n').collect());
    (0..a.len().max(b.len())).filter(|i| a.get(*i) != b.get(*i)).collect()
}

pub fn check(kind: BootFile, data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let lines = text.split('\n').count();
    let read = kind.read(text);
    match kind.edit(text) {
        Err(e) => {
            assert!(e.line <= lines + 1, "refusal at line {} of {lines}: {e}", e.line);
            assert!(!e.why.is_empty());
        }
        Ok(None) => {
            let c = read.expect("the editor read the file");
            let kernelopts = kind == BootFile::BlsEntry && c.words.iter().any(|w| w.var.as_deref() == Some("kernelopts"));
            assert!(kernelopts || with_nokmem(&c.texts()).is_none(), "no edit, but {:?} lacks the parameter", c.texts());
        }
        Ok(Some(new)) => {
            let c = read.expect("the editor read the file");
            let want = with_nokmem(&c.texts()).expect("edited a file that has the parameter");
            let back = kind.read(&new).unwrap_or_else(|e| panic!("the edit does not read back: {e}\n{new:?}"));
            assert_eq!(back.texts(), want, "{new:?}");
            assert_eq!(kind.edit(&new), Ok(None), "not idempotent: {new:?}");
            let changed = changed_lines(text, &new);
            match (kind, c.line) {
                // The block keeps its size: the `#` padding after the last line gives way.
                (BootFile::Grubenv, Some(l)) => {
                    assert_eq!(new.len(), text.len());
                    let last = text.split_inclusive('\n').count() - 1;
                    assert!(changed.iter().all(|i| *i == l - 1 || *i == last), "{changed:?} changed, line {l} edited");
                }
                (_, Some(l)) => assert_eq!(changed, vec![l - 1], "line {l} edited: {new:?}"),
                // A new line at the end (the last line may gain its newline).
                (_, None) => {
                    let n = text.split_inclusive('\n').count();
                    assert!(changed.iter().all(|i| *i + 1 >= n) && new.starts_with(text), "{changed:?}: {new:?}");
                }
            }
        }
    }
}
