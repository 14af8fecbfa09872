//! Property tests of `fix nokmem`'s three editors on generated boot files: for every
//! generated /etc/default/grub, BLS entry and grub environment block, the edit keeps every
//! old option, adds `cgroup.memory=nokmem` exactly once (or `,nokmem` to an existing
//! `cgroup.memory=` list), keeps every other line byte for byte, is idempotent, and
//! refuses the values that are no plain literal, naming their line.
//!
//! The truth for /etc/default/grub is the real shell: each generated file (and each
//! edited one) is sourced by this machine's /bin/sh, as grub-mkconfig does, and the value
//! it prints is split by cgleak's reading of grub's lexer; the edited file must also pass
//! `sh -n`. The kernel words are known by construction (the generator renders chosen
//! words with grub quoting, then that text with shell quoting), so the grub split is
//! checked against them too.
//!
//! `CGLEAK_EDIT_CASES` (default 400 per editor) and `CGLEAK_EDIT_SEED` change the run.

use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};

use cgleak_actions::fix::nokmem::{edit_bls_entry, edit_grub_default, edit_grubenv, with_nokmem, PARAM};
use cgleak_readers::bootloader::{bls_cmdline, grub_cmdline_linux, grub_words, grubenv_cmdline};

// ---------------------------------------------------------------------------------
// Generation

/// xorshift64*: reproducible without a dependency.
use cgleak_fixtures::rng::Rng;

fn cases() -> usize {
    std::env::var("CGLEAK_EDIT_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(400)
}

fn seed(salt: u64) -> Rng {
    let s = std::env::var("CGLEAK_EDIT_SEED").ok().and_then(|v| v.parse().ok()).unwrap_or(0x005e_edc9_1ea4_b007_u64);
    Rng((s.wrapping_mul(0xbf58_476d_1ce4_e5b9) ^ salt.wrapping_mul(0x9e37_79b9_7f4a_7c15)) | 1)
}

/// Kernel options, some of which need grub quoting (blanks, `;`, quotes, `$`, `#`).
const OPTIONS: [&str; 22] = [
    "ro",
    "quiet",
    "rhgb",
    "crashkernel=auto",
    "rd.lvm.lv=cl/root",
    "console=ttyS0,115200n8",
    "root=UUID=4b2d6c1e-8f3a",
    "systemd.unified_cgroup_hierarchy=0",
    "a=b=c",
    "uni=\u{fc}\u{e9}",
    "init=/bin/sh;x",
    "q\"uote",
    "s'ingle",
    "d$x",
    "b\\ack",
    "sp ace",
    "#hash",
    "ip=[fe80::1]:eth0",
    "x*y?",
    "~tilde",
    "t\tab",
    "{brace}",
];

/// `cgroup.memory=` forms: absent, to be extended, or holding nokmem already.
const CGROUP_MEMORY: [&str; 5] = ["cgroup.memory=nosocket", "cgroup.memory=", "cgroup.memory=nokmem", "cgroup.memory=nosocket,nokmem", "cgroup.memory=nokmem,nosocket"];

fn kernel_words(rng: &mut Rng, max: usize) -> Vec<String> {
    let mut w: Vec<String> = (0..rng.below(max + 1)).map(|_| rng.pick(&OPTIONS).to_string()).collect();
    if rng.chance(40) {
        let at = rng.below(w.len() + 1);
        w.insert(at, rng.pick(&CGROUP_MEMORY).to_string());
    }
    w
}

fn grub_plain_char(c: char) -> bool {
    !matches!(c, '{' | '}' | '|' | '&' | '$' | ';' | '<' | '>' | ' ' | '\t' | '\n' | '\'' | '"' | '\\')
}

/// One kernel word as grub script text (yylex.l): plain, double- or single-quoted,
/// backslash-escaped, or quoted after its `=`.
fn grub_render(rng: &mut Rng, w: &str) -> String {
    let dq = |s: &str| format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\"").replace('$', "\\$"));
    let sq_ok = !w.contains('\'');
    let plain_ok = w.chars().all(grub_plain_char) && !w.starts_with('#') && !w.is_empty();
    loop {
        match rng.below(5) {
            0 if plain_ok => return w.to_string(),
            1 => return dq(w),
            2 if sq_ok => return format!("'{w}'"),
            3 => {
                let mut out = String::new();
                for (i, c) in w.chars().enumerate() {
                    // `\x` followed by two hex digits stays as it is (execute.c): never made here.
                    if (grub_plain_char(c) && !(i == 0 && c == '#') && rng.chance(70)) || c == 'x' {
                        out.push(c);
                    } else {
                        out.push('\\');
                        out.push(c);
                    }
                }
                if !out.is_empty() {
                    return out;
                }
            }
            4 => {
                if let Some((k, v)) = w.split_once('=') {
                    if k.chars().all(grub_plain_char) && !k.is_empty() && !k.starts_with('#') {
                        return format!("{k}={}", dq(v));
                    }
                }
            }
            _ => {}
        }
    }
}

fn blanks(rng: &mut Rng) -> &'static str {
    const BLANKS: [&str; 5] = [" ", " ", " ", "\t", "  "];
    BLANKS[rng.below(BLANKS.len())]
}

/// The words as one grub line: blanks between, maybe around, maybe a comment after.
fn grub_line(rng: &mut Rng, words: &[String]) -> String {
    let mut s = String::new();
    if rng.chance(10) {
        s.push_str(blanks(rng));
    }
    for (i, w) in words.iter().enumerate() {
        if i > 0 {
            s.push_str(blanks(rng));
        }
        s.push_str(&grub_render(rng, w));
    }
    if rng.chance(10) {
        s.push(' ');
    }
    if rng.chance(5) && !words.is_empty() {
        s.push_str(" #grub-comment");
    }
    s
}

/// Shell text whose value is `v`: double quotes, single quotes, backslash escapes, or a
/// concatenation of those.
fn shell_render(rng: &mut Rng, v: &str) -> String {
    fn dq(v: &str) -> String {
        let mut s = String::from("\"");
        for c in v.chars() {
            if matches!(c, '\\' | '"' | '$' | '`') {
                s.push('\\');
            }
            s.push(c);
        }
        s.push('"');
        s
    }
    fn sq(v: &str) -> String {
        format!("'{}'", v.replace('\'', "'\\''"))
    }
    fn bare(v: &str) -> String {
        let mut s = String::new();
        for c in v.chars() {
            if !(c.is_alphanumeric() || "_-.,/=:+@%".contains(c)) {
                s.push('\\');
            }
            s.push(c);
        }
        s
    }
    let one = |rng: &mut Rng, v: &str| match rng.below(3) {
        0 => dq(v),
        1 => sq(v),
        _ if v.is_empty() => String::new(),
        _ => bare(v),
    };
    if v.is_empty() || rng.chance(60) {
        return one(rng, v);
    }
    let chars: Vec<char> = v.chars().collect();
    let mut cuts: Vec<usize> = (0..rng.below(3) + 1).map(|_| rng.below(chars.len() + 1)).collect();
    cuts.push(0);
    cuts.push(chars.len());
    cuts.sort();
    cuts.dedup();
    cuts.windows(2).map(|w| one(rng, &chars[w[0]..w[1]].iter().collect::<String>())).collect()
}

const OTHER_LINES: [&str; 14] = [
    "# If you change this file, run 'update-grub' afterwards to update /boot/grub/grub.cfg.",
    "GRUB_DEFAULT=0",
    "GRUB_TIMEOUT=5",
    "GRUB_DISTRIBUTOR=`echo Debian`",
    "GRUB_DISTRIBUTOR=\"$(echo 'CentOS Linux release 7' | sed 's, release .*$,,g')\"",
    "GRUB_CMDLINE_LINUX_DEFAULT=\"quiet splash\"",
    "#GRUB_CMDLINE_LINUX=\"commented out\"",
    "if [ -z \"$GRUB_TIMEOUT\" ]; then GRUB_TIMEOUT=5; fi",
    "case x in (a|b) GRUB_X=1 ;; *) GRUB_X=2 ;; esac",
    "export GRUB_ENABLE_BLSCFG=true",
    "",
    "GRUB_TERMINAL_OUTPUT='console'",
    "GRUB_TIMEOUT_STYLE=${GRUB_TIMEOUT_STYLE:-menu}",
    "grub_note() { echo \"$1\" >/dev/null; }",
];

/// Lines a CRLF end leaves harmless (the CR lands in a comment or another variable).
fn crlf_safe(line: &str) -> bool {
    line.is_empty() || line.starts_with('#') || (line.starts_with("GRUB_") && !line.contains(' ') && !line.contains('$'))
}

/// A generated /etc/default/grub: its text, the kernel words of its effective
/// `GRUB_CMDLINE_LINUX` (None: no assignment), and the assignment's line (1-based).
struct GrubDefault {
    text: String,
    words: Option<Vec<String>>,
    line: usize,
    /// A CR at the end of the value: the shell keeps it, cgleak must refuse.
    cr_in_value: bool,
}

fn grub_default(rng: &mut Rng) -> GrubDefault {
    let crlf = rng.chance(15);
    let mut lines: Vec<String> = Vec::new();
    let push_other = |rng: &mut Rng, lines: &mut Vec<String>| {
        let l = rng.pick(&OTHER_LINES).to_string();
        let eol = if crlf && crlf_safe(&l) && rng.chance(50) { "\r" } else { "" };
        lines.push(format!("{l}{eol}"));
    };
    for _ in 0..rng.below(5) {
        push_other(rng, &mut lines);
    }
    let mut words = None;
    let mut line = 0;
    let mut cr_in_value = false;
    // An earlier assignment, which a later one overrides.
    if rng.chance(20) {
        let w = kernel_words(rng, 3);
        let g = grub_line(rng, &w);
        lines.push(format!("GRUB_CMDLINE_LINUX={}", shell_render(rng, &g)));
        (words, line) = (Some(w), lines.len());
    }
    if rng.chance(92) {
        let w = kernel_words(rng, 6);
        let g = grub_line(rng, &w);
        let value = shell_render(rng, &g);
        let indent = if rng.chance(10) { "  " } else { "" };
        let prefix = *rng.pick(&["", "", "export ", "A=1 "]);
        let suffix = *rng.pick(&["", "", "", " # a note", "; B=2", " B=2"]);
        let cr = crlf && rng.chance(50);
        cr_in_value = cr && suffix.is_empty();
        lines.push(format!("{indent}{prefix}GRUB_CMDLINE_LINUX={value}{suffix}{}", if cr { "\r" } else { "" }));
        line = lines.len();
        words = Some(w);
    }
    for _ in 0..rng.below(4) {
        push_other(rng, &mut lines);
    }
    let mut text = lines.join("\n");
    if rng.chance(90) {
        text.push('\n');
    }
    GrubDefault { text, words, line, cr_in_value }
}

// ---------------------------------------------------------------------------------
// The shell as oracle

fn tmpfile(text: &str) -> tempfile::NamedTempFile {
    let mut f = tempfile::NamedTempFile::new().unwrap();
    f.write_all(text.as_bytes()).unwrap();
    f
}

fn assert_sh() {
    assert!(Path::new("/bin/sh").is_file(), "these tests source the generated files with /bin/sh, as grub-mkconfig does: /bin/sh is missing");
}

/// `GRUB_CMDLINE_LINUX` after /bin/sh sources `text` (unset: None).
fn sh_value(text: &str) -> Option<String> {
    let f = tmpfile(text);
    let out = Command::new("/bin/sh")
        .args(["-c", ". \"$1\" >/dev/null 2>&1; printf '%s' \"${GRUB_CMDLINE_LINUX+set}:${GRUB_CMDLINE_LINUX-}\"", "sh"])
        .arg(f.path())
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(out.status.success(), "/bin/sh failed sourcing:\n{text}\n{}", String::from_utf8_lossy(&out.stderr));
    let s = String::from_utf8(out.stdout).unwrap();
    s.strip_prefix("set:").map(str::to_string)
}

fn sh_syntax_ok(text: &str) -> Result<(), String> {
    let f = tmpfile(text);
    let out = Command::new("/bin/sh").arg("-n").arg(f.path()).stdin(Stdio::null()).output().unwrap();
    if out.status.success() {
        Ok(())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

fn grub_split(value: &str) -> Vec<String> {
    grub_words(value).unwrap_or_else(|e| panic!("{value:?}: {e}")).into_iter().map(|w| w.text).collect()
}

/// The lines of `old` and `new` differ only at `line` (1-based; a line appended at the end
/// also changes the last line's missing newline).
fn only_line_changed(old: &str, new: &str, line: usize) -> Result<(), String> {
    let (a, b): (Vec<&str>, Vec<&str>) = (old.split_inclusive('\n').collect(), new.split_inclusive('\n').collect());
    if line == 0 || line > a.len() {
        // Appended: every old line is there, the last one perhaps with a newline added.
        let ok = b.len() == a.len() + 1 && a.iter().zip(&b).enumerate().all(|(i, (x, y))| x == y || (i + 1 == a.len() && format!("{x}\n") == **y));
        return if ok { Ok(()) } else { Err(format!("appending changed other lines:\n{old:?}\n{new:?}")) };
    }
    if a.len() != b.len() {
        return Err(format!("{} lines became {}", a.len(), b.len()));
    }
    match a.iter().zip(&b).enumerate().find(|(i, (x, y))| i + 1 != line && x != y) {
        Some((i, (x, y))) => Err(format!("line {} changed: {x:?} -> {y:?}", i + 1)),
        None => Ok(()),
    }
}

// ---------------------------------------------------------------------------------
// /etc/default/grub

#[test]
fn grub_default_edits_keep_every_option_add_nokmem_once_and_are_idempotent() {
    assert_sh();
    let mut rng = seed(1);
    let (mut edited, mut had, mut refused_cr) = (0, 0, 0);
    for case in 0..cases() {
        let g = grub_default(&mut rng);
        let ctx = format!("case {case}:\n{}", g.text);
        // The shell's value, read by cgleak as the shell reads it.
        let sh = sh_value(&g.text);
        let parsed = grub_cmdline_linux(&g.text);
        if g.cr_in_value {
            let e = parsed.expect_err(&ctx);
            assert!(e.why.contains("carriage return") && e.line == g.line, "{ctx}\n{e}");
            assert!(edit_grub_default(&g.text).is_err(), "{ctx}");
            refused_cr += 1;
            continue;
        }
        let parsed = parsed.unwrap_or_else(|e| panic!("{ctx}\nrefused: {e}"));
        assert_eq!(Some(parsed.value.clone()), sh.clone().or(Some(String::new())), "{ctx}");
        let words = g.words.clone().unwrap_or_default();
        assert_eq!(parsed.texts(), words, "{ctx}\nvalue {:?}", parsed.value);
        assert_eq!(grub_split(&sh.clone().unwrap_or_default()), words, "{ctx}");
        assert_eq!(parsed.line, g.words.as_ref().map(|_| g.line), "{ctx}");

        let edit = edit_grub_default(&g.text).unwrap_or_else(|e| panic!("{ctx}\nrefused: {e}"));
        let Some(new) = edit else {
            assert!(with_nokmem(&words).is_none(), "{ctx}\nno edit, but the words lack {PARAM}: {words:?}");
            had += 1;
            continue;
        };
        let want = with_nokmem(&words).unwrap_or_else(|| panic!("{ctx}\nedited though it has {PARAM}:\n{new}"));
        let ctx = format!("{ctx}\n-- edited:\n{new}");
        sh_syntax_ok(&new).unwrap_or_else(|e| panic!("{ctx}\nsh -n: {e}"));
        let value = sh_value(&new).unwrap_or_else(|| panic!("{ctx}\nthe shell has no GRUB_CMDLINE_LINUX"));
        assert_eq!(grub_split(&value), want, "{ctx}\nthe shell's value {value:?}");
        assert_eq!(want.iter().filter(|w| w.split(',').any(|x| x.ends_with("nokmem"))).count(), 1, "{ctx}");
        only_line_changed(&g.text, &new, g.line).unwrap_or_else(|e| panic!("{ctx}\n{e}"));
        assert_eq!(edit_grub_default(&new), Ok(None), "{ctx}\nnot idempotent");
        edited += 1;
    }
    eprintln!("grub defaults: {edited} edited, {had} had it, {refused_cr} refused (CR in the value)");
    assert!(edited > cases() / 2 && had > 0, "the generator made too few edits: {edited} edited, {had} had it");
}

/// Values that are no plain literal, each in a file the generator made: refused, naming
/// the assignment's line, whatever surrounds it.
#[test]
fn grub_default_refuses_values_that_are_no_plain_literal() {
    let mut rng = seed(2);
    type Form = (&'static str, fn(&str) -> String);
    let forms: [Form; 10] = [
        ("command substitution", |v| format!("GRUB_CMDLINE_LINUX=\"$(echo ro) {v}\"")),
        ("command substitution", |v| format!("GRUB_CMDLINE_LINUX=`echo ro`\"{v}\"")),
        ("parameter expansion", |v| format!("GRUB_CMDLINE_LINUX=\"$GRUB_X {v}\"")),
        ("parameter expansion", |v| format!("GRUB_CMDLINE_LINUX=${{GRUB_X}}\"{v}\"")),
        ("expanded", |v| format!("GRUB_CMDLINE_LINUX=\"$GRUB_CMDLINE_LINUX {v}\"")),
        ("several lines", |v| format!("GRUB_CMDLINE_LINUX=\"{v} \\\nquiet\"")),
        ("several lines", |v| format!("GRUB_CMDLINE_LINUX=\"{v}\" \\\n  GRUB_X=1")),
        ("compound", |v| format!("if true; then GRUB_CMDLINE_LINUX=\"{v}\"; fi")),
        ("compound", |v| format!("[ -e /x ] && GRUB_CMDLINE_LINUX=\"{v}\"")),
        ("for one command", |v| format!("GRUB_CMDLINE_LINUX=\"{v}\" true")),
    ];
    for case in 0..cases() {
        let (needle, form) = rng.pick(&forms);
        let w = kernel_words(&mut rng, 3);
        let v = grub_line(&mut rng, &w).replace(['"', '\\', '$', '`'], "");
        let mut lines: Vec<String> = (0..rng.below(4)).map(|_| rng.pick(&OTHER_LINES).to_string()).collect();
        let line = lines.len() + 1;
        lines.push(form(&v));
        lines.extend((0..rng.below(3)).map(|_| rng.pick(&OTHER_LINES).to_string()));
        let text = lines.join("\n") + "\n";
        let ctx = format!("case {case}:\n{text}");
        let e = edit_grub_default(&text).expect_err(&ctx);
        assert_eq!(e.line, line, "{ctx}\n{e}");
        assert!(e.why.contains(needle), "{ctx}\n{e}");
        assert!(text.lines().nth(line - 1).unwrap().starts_with(e.text.trim_end_matches("\\r")), "{ctx}\n{e}");
    }
}

// ---------------------------------------------------------------------------------
// BLS entries

#[test]
fn bls_entry_edits_keep_every_option_add_nokmem_once_and_are_idempotent() {
    let mut rng = seed(3);
    let (mut edited, mut skipped) = (0, 0);
    for case in 0..cases() {
        // Blank-separated words; BLS options take no quoting of their own here.
        let mut words: Vec<String> = kernel_words(&mut rng, 6).into_iter().filter(|w| !w.contains([' ', '\t', '"', '\'', '\\', '$', '#', ';', '{', '}'])).collect();
        let has_options = rng.chance(90);
        let kernelopts = has_options && rng.chance(15);
        if kernelopts {
            words.insert(0, "$kernelopts".into());
        }
        if rng.chance(20) {
            words.push("$tuned_params".into());
        }
        let crlf = rng.chance(10);
        let eol = if crlf { "\r\n" } else { "\n" };
        let mut lines = vec!["title Red Hat Enterprise Linux (4.18.0-513.el8.x86_64) 8.9 (Ootpa)".to_string(), "version 4.18.0-513.el8.x86_64".into()];
        if rng.chance(20) {
            lines.push("# a comment".into());
        }
        let line = lines.len() + 1;
        if has_options {
            let sep = words.iter().map(|_| blanks(&mut rng).to_string()).collect::<Vec<_>>();
            let body: String = words.iter().zip(&sep).map(|(w, s)| format!("{s}{w}")).collect();
            lines.push(format!("{}options{body}{}", if rng.chance(10) { "  " } else { "" }, if rng.chance(10) { " " } else { "" }));
        }
        lines.push("id rhel-20231030144528-4.18.0-513.el8.x86_64".into());
        lines.push("grub_users $grub_users".into());
        let text = lines.join(eol) + eol;
        let ctx = format!("case {case}:\n{text:?}");
        let got = edit_bls_entry(&text);
        if crlf {
            // A CR in the options, or an options line to add to a CRLF file: refused.
            let want_line = if has_options { line } else { 1 };
            assert!(got.as_ref().is_err_and(|e| e.line == want_line && e.why.contains("carriage return")), "{ctx}\n{got:?}");
            continue;
        }
        let got = got.unwrap_or_else(|e| panic!("{ctx}\nrefused: {e}"));
        let old: Vec<String> = if has_options { words.clone() } else { Vec::new() };
        assert_eq!(bls_cmdline(&text).unwrap().texts(), old, "{ctx}");
        let Some(new) = got else {
            assert!(kernelopts || with_nokmem(&old).is_none(), "{ctx}");
            skipped += 1;
            continue;
        };
        assert!(!kernelopts, "{ctx}\nan entry of $kernelopts was edited: {new:?}");
        let want = with_nokmem(&old).unwrap();
        let back = bls_cmdline(&new).unwrap_or_else(|e| panic!("{ctx}\n{new:?}: {e}"));
        assert_eq!(back.texts(), want, "{ctx}\n{new:?}");
        only_line_changed(&text, &new, if has_options { line } else { 0 }).unwrap_or_else(|e| panic!("{ctx}\n{e}"));
        assert_eq!(edit_bls_entry(&new), Ok(None), "{ctx}\nnot idempotent: {new:?}");
        edited += 1;
    }
    assert!(edited > cases() / 3 && skipped > 0, "{edited} edited, {skipped} skipped");
}

#[test]
fn bls_entry_refuses_unknown_variables_and_a_second_options_line() {
    for (text, line, needle) in [
        ("title x\noptions root=/dev/sda $foo\n", 2, "does not know"),
        ("title x\noptions root=/dev/sda ${kernelopts}\n", 2, "does not know"),
        ("options a\ntitle x\noptions b\n", 3, "second"),
        ("options a \"open\n", 1, "grub would not read"),
        ("options a #b\n", 1, "comment"),
    ] {
        let e = edit_bls_entry(text).expect_err(text);
        assert_eq!(e.line, line, "{text:?}: {e}");
        assert!(e.why.contains(needle), "{text:?}: {e}");
    }
}

// ---------------------------------------------------------------------------------
// grubenv

fn block(vars: &str, size: usize) -> String {
    let head = format!("# GRUB Environment Block\n{vars}");
    format!("{head}{}", "#".repeat(size.saturating_sub(head.len())))
}

#[test]
fn grubenv_edits_keep_the_block_size_every_option_and_add_nokmem_once() {
    let mut rng = seed(4);
    let (mut edited, mut full) = (0, 0);
    for case in 0..cases() {
        let words = kernel_words(&mut rng, 8).into_iter().filter(|w| !w.contains(['\\', '$', '"'])).collect::<Vec<_>>();
        // Mostly lines without a backslash (which grub-editenv escapes, and cgleak refuses).
        let mut g = grub_line(&mut rng, &words);
        for _ in 0..20 {
            if !g.contains('\\') || rng.chance(10) {
                break;
            }
            g = grub_line(&mut rng, &words);
        }
        let mut vars = vec!["saved_entry=8f1c0e2d-4.18.0-513.el8.x86_64".to_string(), format!("kernelopts={g}"), "boot_success=1".into()];
        if rng.chance(30) {
            vars.push("tuned_params=skew_tick=1".into());
        }
        let k = rng.below(vars.len());
        vars.swap(1, k);
        let line = vars.iter().position(|v| v.starts_with("kernelopts=")).unwrap() + 2;
        let vars: String = vars.iter().map(|v| format!("{v}\n")).collect();
        let size = if rng.chance(10) { 24 + vars.len() + rng.below(PARAM.len() + 2) } else { 1024 };
        let text = block(&vars, size);
        let ctx = format!("case {case}:\n{text:?}");
        if g.contains('\\') {
            // grub-editenv writes `\\` for a backslash: such values are not edited.
            let e = edit_grubenv(&text).expect_err(&ctx);
            assert!(e.line == line && e.why.contains("backslash"), "{ctx}\n{e}");
            continue;
        }
        assert_eq!(grubenv_cmdline(&text).unwrap_or_else(|e| panic!("{ctx}\n{e}")).texts(), words, "{ctx}");
        let new = match edit_grubenv(&text) {
            Ok(Some(new)) => new,
            Ok(None) => {
                assert!(with_nokmem(&words).is_none(), "{ctx}");
                continue;
            }
            Err(e) => {
                assert!(size < 1024 && e.why.contains("no room"), "{ctx}\n{e}");
                full += 1;
                continue;
            }
        };
        assert_eq!(new.len(), text.len(), "{ctx}\n{new:?}");
        let back = grubenv_cmdline(&new).unwrap_or_else(|e| panic!("{ctx}\n{new:?}: {e}"));
        assert_eq!(back.texts(), with_nokmem(&words).unwrap(), "{ctx}\n{new:?}");
        // Every other variable line as it was; only padding gave way.
        let other = |t: &str| t.lines().filter(|l| !l.starts_with("kernelopts=") && !l.starts_with('#')).map(str::to_string).collect::<Vec<_>>();
        assert_eq!(other(&new), other(&text), "{ctx}");
        assert_eq!(new.lines().nth(line - 1).map(|l| l.starts_with("kernelopts=")), Some(true), "{ctx}");
        assert_eq!(edit_grubenv(&new), Ok(None), "{ctx}\nnot idempotent");
        edited += 1;
    }
    assert!(edited > cases() / 2 && full > 0, "{edited} edited, {full} full");
}
