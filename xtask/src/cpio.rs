//! An initramfs in the cpio "newc" format (the kernel's initramfs-buffer-format.rst),
//! uncompressed: the kernel unpacks it faster under TCG than it would gunzip it.

use std::collections::BTreeSet;

#[derive(Default)]
pub struct Cpio {
    buf: Vec<u8>,
    ino: u32,
    dirs: BTreeSet<String>,
}

const S_IFDIR: u32 = 0o040000;
const S_IFREG: u32 = 0o100000;
const S_IFLNK: u32 = 0o120000;
const S_IFCHR: u32 = 0o020000;

impl Cpio {
    fn entry(&mut self, name: &str, mode: u32, rdev: (u32, u32), data: &[u8]) {
        self.ino += 1;
        let name = name.trim_start_matches('/');
        let fields = [self.ino, mode, 0, 0, 1, 0, data.len() as u32, 0, 0, rdev.0, rdev.1, name.len() as u32 + 1, 0];
        self.buf.extend_from_slice(b"070701");
        for f in fields {
            self.buf.extend_from_slice(format!("{f:08x}").as_bytes());
        }
        self.buf.extend_from_slice(name.as_bytes());
        self.buf.push(0);
        self.pad();
        self.buf.extend_from_slice(data);
        self.pad();
    }

    fn pad(&mut self) {
        let pad = (4 - self.buf.len() % 4) % 4;
        self.buf.resize(self.buf.len() + pad, 0);
    }

    /// A directory and every missing parent.
    pub fn dir(&mut self, path: &str) {
        let path = path.trim_matches('/');
        if path.is_empty() || self.dirs.contains(path) {
            return;
        }
        if let Some((parent, _)) = path.rsplit_once('/') {
            self.dir(parent);
        }
        self.dirs.insert(path.to_string());
        self.entry(path, S_IFDIR | 0o755, (0, 0), &[]);
    }

    fn parent_of(&mut self, path: &str) {
        if let Some((parent, _)) = path.trim_matches('/').rsplit_once('/') {
            self.dir(parent);
        }
    }

    pub fn file(&mut self, path: &str, mode: u32, data: &[u8]) {
        self.parent_of(path);
        self.entry(path, S_IFREG | mode, (0, 0), data);
    }

    pub fn symlink(&mut self, path: &str, target: &str) {
        self.parent_of(path);
        self.entry(path, S_IFLNK | 0o777, (0, 0), target.as_bytes());
    }

    pub fn char_dev(&mut self, path: &str, major: u32, minor: u32) {
        self.parent_of(path);
        self.entry(path, S_IFCHR | 0o600, (major, minor), &[]);
    }

    pub fn finish(mut self) -> Vec<u8> {
        self.entry("TRAILER!!!", 0, (0, 0), &[]);
        self.buf
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn newc_header_layout() {
        let mut c = Cpio::default();
        c.file("/bin/x", 0o755, b"abc");
        let b = c.finish();
        // "bin" directory first, then the file.
        assert_eq!(&b[..6], b"070701");
        let second = b.windows(6).skip(1).position(|w| w == b"070701").unwrap() + 1;
        let hdr = std::str::from_utf8(&b[second..second + 110]).unwrap();
        assert_eq!(&hdr[14..22], "000081ed"); // mode: regular 0755
        assert_eq!(&hdr[54..62], "00000003"); // size
        assert_eq!(&hdr[94..102], "00000006"); // name size: "bin/x" and its NUL
        assert_eq!(b.len() % 4, 0);
    }
}
