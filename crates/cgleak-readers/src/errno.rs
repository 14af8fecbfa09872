//! The one errno table of cgleak: names ("ENOSPC"), numbers and the words programs print
//! for them ("no space left on device"). The probe's reports, the model's exhaustion
//! errnos, the log catalog's words and the guest lab all read it here.
//!
//! Numbers come from rustix (linux-raw-sys: right on every architecture). The words are
//! glibc's strerror text with its first letter lower-cased, which is also what Go's
//! syscall package prints (kubelet, containerd, runc) and what `mkdir` writes after the
//! path: fixed here, not taken from the C library at run time, so a musl or static build
//! says the same words the node's logs do (musl's strerror(ENOMEM) is "Out of memory").

use std::io;

use rustix::io::Errno;

macro_rules! errno_table {
    ($($name:ident = $raw:ident, $message:literal;)*) => {
        $(pub const $name: i32 = Errno::$raw.raw_os_error();)*

        /// (number, name, words), in the order of the numbers on x86-64.
        const TABLE: &[(i32, &str, &str)] = &[$(($name, stringify!($name), $message)),*];
    };
}

errno_table! {
    EPERM = PERM, "operation not permitted";
    ENOENT = NOENT, "no such file or directory";
    ESRCH = SRCH, "no such process";
    EINTR = INTR, "interrupted system call";
    EIO = IO, "input/output error";
    ENXIO = NXIO, "no such device or address";
    EAGAIN = AGAIN, "resource temporarily unavailable";
    ENOMEM = NOMEM, "cannot allocate memory";
    EACCES = ACCESS, "permission denied";
    EFAULT = FAULT, "bad address";
    EBUSY = BUSY, "device or resource busy";
    EEXIST = EXIST, "file exists";
    EXDEV = XDEV, "invalid cross-device link";
    ENODEV = NODEV, "no such device";
    ENOTDIR = NOTDIR, "not a directory";
    EISDIR = ISDIR, "is a directory";
    EINVAL = INVAL, "invalid argument";
    EMFILE = MFILE, "too many open files";
    ENOSPC = NOSPC, "no space left on device";
    EROFS = ROFS, "read-only file system";
    EMLINK = MLINK, "too many links";
    ENAMETOOLONG = NAMETOOLONG, "file name too long";
    ENOSYS = NOSYS, "function not implemented";
    ENOTEMPTY = NOTEMPTY, "directory not empty";
    ELOOP = LOOP, "too many levels of symbolic links";
    EOPNOTSUPP = OPNOTSUPP, "operation not supported";
    ESTALE = STALE, "stale file handle";
    EDQUOT = DQUOT, "disk quota exceeded";
}

fn entry(code: i32) -> Option<&'static (i32, &'static str, &'static str)> {
    TABLE.iter().find(|(c, _, _)| *c == code)
}

/// The symbolic name of an errno ("ENOSPC"), if the table has it.
pub fn static_name(code: i32) -> Option<&'static str> {
    entry(code).map(|(_, n, _)| *n)
}

/// The words of an errno ("no space left on device"), if the table has it.
pub fn static_message(code: i32) -> Option<&'static str> {
    entry(code).map(|(_, _, m)| *m)
}

/// The symbolic name of an errno ("ENOSPC"); "errno 123" for one not in the table.
pub fn name(code: i32) -> String {
    static_name(code).map(str::to_string).unwrap_or_else(|| format!("errno {code}"))
}

/// The inverse of [`name`]: "ENOSPC" and "errno 28" both give 28.
pub fn code(name: &str) -> Option<i32> {
    TABLE
        .iter()
        .find(|(_, n, _)| *n == name)
        .map(|(c, _, _)| *c)
        .or_else(|| name.strip_prefix("errno ").and_then(|n| n.parse().ok()))
}

/// "no space left on device": the table's words, else the C library's strerror without
/// the "(os error 28)" tail, lower-cased like the rest.
pub fn message(code: i32) -> String {
    if let Some(m) = static_message(code) {
        return m.to_string();
    }
    let text = io::Error::from_raw_os_error(code).to_string();
    let text = match text.rfind(" (os error ") {
        Some(i) => &text[..i],
        None => &text,
    };
    let mut chars = text.chars();
    match chars.next() {
        Some(first) => first.to_lowercase().chain(chars).collect(),
        None => String::new(),
    }
}

/// The errno name of an I/O error ("ENOSPC"); an error that carries no errno (one made
/// by cgleak itself, such as a refused filesystem) by its kind ("Other").
pub fn name_of(e: &io::Error) -> String {
    match e.raw_os_error() {
        Some(code) => name(code),
        None => format!("{:?}", e.kind()),
    }
}

/// EACCES, EPERM or EROFS: a lack of rights (or a read-only mount), not a fault of the host.
pub fn is_not_permitted(code: i32) -> bool {
    matches!(code, EACCES | EPERM | EROFS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_numbers_and_words() {
        assert_eq!(name(28), "ENOSPC");
        assert_eq!(name(12), "ENOMEM");
        assert_eq!(name(16), "EBUSY");
        assert_eq!(name(EACCES), "EACCES");
        assert_eq!(name(4095), "errno 4095");
        assert_eq!(code("ENOSPC"), Some(ENOSPC));
        assert_eq!(code("errno 4095"), Some(4095));
        assert_eq!(code("EWHATEVER"), None);
        assert_eq!(message(ENOSPC), "no space left on device");
        assert_eq!(message(ENOMEM), "cannot allocate memory");
        assert_eq!(message(EBUSY), "device or resource busy");
        assert_eq!(name_of(&io::Error::from_raw_os_error(ENOSPC)), "ENOSPC");
        assert_eq!(name_of(&io::Error::other("refused")), "Other");
    }

    /// Every entry: a unique number and name, and the words this host's C library gives
    /// (the tests run on glibc, whose strerror the table copies).
    #[test]
    fn table_agrees_with_the_c_library() {
        for (i, (c, n, m)) in TABLE.iter().enumerate() {
            assert!(TABLE[..i].iter().all(|(c2, n2, _)| c2 != c && n2 != n), "{n} twice");
            assert_eq!(code(n), Some(*c), "{n}");
            let libc = io::Error::from_raw_os_error(*c).to_string();
            let libc = libc.split(" (os error ").next().unwrap().to_lowercase();
            assert_eq!(libc, m.to_lowercase(), "{n}");
        }
        // Not in the table: the C library's words, lower-cased.
        assert_eq!(message(rustix::io::Errno::NOEXEC.raw_os_error()), "exec format error");
    }

    #[test]
    fn not_permitted_is_rights_or_a_read_only_mount() {
        for c in [EACCES, EPERM, EROFS] {
            assert!(is_not_permitted(c), "{}", name(c));
        }
        for c in [ENOENT, EBUSY, ENOSPC] {
            assert!(!is_not_permitted(c), "{}", name(c));
        }
    }
}
