//! Name lookups of the statically linked `cargo xtask dist` binary.
//!
//! A static glibc still reads the root's /etc/nsswitch.conf. Since glibc 2.34 the `files`
//! and `dns` services are built into libc (nss/nss_module.c: module_load), but any other
//! service named there (`myhostname`, `sss`, `mdns4_minimal`, ...) is dlopened as
//! libnss_<name>.so.2 from the host: a library built against the host's libc (2.17 on
//! CentOS 7), not the one linked in, which fails or misbehaves (measured with glibc 2.36
//! static, `hosts: files dns myhostname` and no module present: an unknown name gave
//! EAI_SYSTEM with a stray EBUSY instead of a name-resolution error).
//!
//! cgleak looks names up in two places only: the API server's host name from a kubeconfig
//! (`agent --kubernetes`; kube's hyper-util connector skips the lookup for an IP literal
//! such as the in-cluster KUBERNETES_SERVICE_HOST, and getaddrinfo's through std
//! otherwise), and the home directory for ~/.kube/config when $HOME is unset
//! (getpwuid_r). So the static build keeps `hosts` to /etc/hosts and DNS
//! (/etc/resolv.conf) and `passwd`/`group` to the files, and never loads a host's module.

/// In the static build: confine NSS to glibc's built-in services. Call before any lookup.
pub fn confine_to_builtin_services() {
    #[cfg(target_feature = "crt-static")]
    {
        use std::ffi::{c_char, c_int, CStr};
        extern "C" {
            // glibc <nss.h>: replaces the nsswitch.conf line of `db` for this process and
            // stops the file being re-read (nss/nss_database.c: reload_disabled).
            fn __nss_configure_lookup(db: *const c_char, service_line: *const c_char) -> c_int;
        }
        let lines: [(&CStr, &CStr); 3] = [(c"hosts", c"files dns"), (c"passwd", c"files"), (c"group", c"files")];
        for (db, line) in lines {
            // SAFETY: both are NUL-terminated static strings; called from main before any
            // other thread exists. It fails only on a malformed line, and these are fixed.
            let r = unsafe { __nss_configure_lookup(db.as_ptr(), line.as_ptr()) };
            debug_assert_eq!(r, 0, "__nss_configure_lookup({db:?}, {line:?})");
        }
    }
}
