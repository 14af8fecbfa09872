//! Kernel command lines as boot files hold them, read the way the programs that use them
//! read them, with where each word came from, so that an option can be added in place.
//!
//! - `/etc/default/grub` is sourced by grub-mkconfig with /bin/sh: [`grub_cmdline_linux`]
//!   parses the whole file as the shell does (quotes, escapes, `export`, comments,
//!   compound commands; the last assignment wins) and refuses a value that is no plain
//!   literal. grub-mkconfig puts that value verbatim on the `linux` lines (10_linux:
//!   `linux ... ro ${args}`), where grub's script lexer splits it into the kernel's words.
//! - [`grub_words`]: that split, after grub-core/script/yylex.l (blanks, `'...'`,
//!   `"..."` with `\$ \\ \"`, unquoted `\c`, `$var`, `#` comments) and execute.c
//!   (`wildcard_unescape` keeps `\xHH`).
//! - BLS entries: blscfg splits `options` on blanks and expands `$name` from the grub
//!   environment (`$kernelopts`): [`bls_cmdline`].
//! - grubenv: `kernelopts=` of the environment block (grub-core/lib/envblk.c):
//!   [`grubenv_cmdline`].

use std::fmt;
use std::ops::Range;

/// The variable grub-mkconfig reads the kernel command line of every entry from.
const VAR: &str = "GRUB_CMDLINE_LINUX";

/// A line that cgleak does not edit: it is no plain literal, or this parser cannot be sure
/// what the shell or the boot loader make of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NotLiteral {
    /// 1-based; 0: the file as a whole.
    pub line: usize,
    /// The line as the file has it (control characters shown escaped).
    pub text: String,
    pub why: String,
}

impl fmt::Display for NotLiteral {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.line == 0 {
            write!(f, "{}", self.why)
        } else {
            write!(f, "line {}: {} (the line: `{}`)", self.line, self.why, self.text)
        }
    }
}

impl std::error::Error for NotLiteral {}

/// One word of a kernel command line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CmdlineWord {
    /// As the kernel gets it (the boot loader's quotes and escapes removed); a BLS
    /// variable reference as written (`$kernelopts`).
    pub text: String,
    /// The name of a boot loader variable the word is (BLS `$kernelopts`), expanded at boot.
    pub var: Option<String>,
    /// File offset just after the word's last character: where `,value` extends it.
    pub end: usize,
}

/// A boot file's kernel command line: its words and how to add one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileCmdline {
    /// 1-based line that holds it; None: the file has none (adding one appends a line).
    pub line: Option<usize>,
    /// The value as the program that reads the file gets it (the shell's value of
    /// `GRUB_CMDLINE_LINUX`, an `options` line, `kernelopts`).
    pub value: String,
    pub words: Vec<CmdlineWord>,
    append: Append,
}

/// Where a new word goes, and the text around it that keeps the file's syntax.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Append {
    /// `{before}{word}{after}` inserted at `at`.
    At { at: usize, before: String, after: String },
    /// An unquoted value put in double quotes: `"` at `open`, ` {word}"` at `close`.
    Wrap { open: usize, close: usize },
}

/// Characters that mean the same in every quoting of sh and grub: a word of them can be
/// inserted anywhere a character of a value is.
fn inert(s: &str) -> bool {
    s.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, ',' | '.' | '_' | '=' | '-' | '/' | ':' | '+'))
}

impl FileCmdline {
    /// The insertions (file offset, text; ascending) that add `word` as the last word.
    pub fn add_word(&self, word: &str) -> Vec<(usize, String)> {
        assert!(inert(word) && !word.is_empty(), "{word:?} needs quoting");
        match &self.append {
            Append::At { at, before, after } => vec![(*at, format!("{before}{word}{after}"))],
            Append::Wrap { open, close } => vec![(*open, "\"".to_string()), (*close, format!(" {word}\""))],
        }
    }

    /// The insertion that appends `suffix` to word `i` (`,nokmem` to `cgroup.memory=nosocket`).
    pub fn extend_word(&self, i: usize, suffix: &str) -> (usize, String) {
        assert!(inert(suffix), "{suffix:?} needs quoting");
        (self.words[i].end, suffix.to_string())
    }

    /// The words as the kernel gets them (variables as written).
    pub fn texts(&self) -> Vec<String> {
        self.words.iter().map(|w| w.text.clone()).collect()
    }
}

/// `text` with the insertions made (offsets into `text`, any order).
pub fn apply_insertions(text: &str, insertions: &[(usize, String)]) -> String {
    let mut ins: Vec<&(usize, String)> = insertions.iter().collect();
    ins.sort_by_key(|(at, _)| *at);
    let mut out = String::with_capacity(text.len() + ins.iter().map(|(_, s)| s.len()).sum::<usize>());
    let mut from = 0;
    for (at, s) in ins {
        out.push_str(&text[from..*at]);
        out.push_str(s);
        from = *at;
    }
    out.push_str(&text[from..]);
    out
}

// ---------------------------------------------------------------------------------
// Lines

fn line_of(text: &str, at: usize) -> usize {
    text.as_bytes()[..at.min(text.len())].iter().filter(|b| **b == b'\n').count() + 1
}

/// Line `n` (1-based) without its newline, control characters escaped.
fn line_text(text: &str, n: usize) -> String {
    let l = text.split('\n').nth(n.saturating_sub(1)).unwrap_or_default();
    l.chars().map(|c| if c.is_control() && c != '\t' { c.escape_default().to_string() } else { c.to_string() }).collect()
}

fn not_literal(text: &str, at: usize, why: impl Into<String>) -> NotLiteral {
    let line = line_of(text, at);
    NotLiteral { line, text: line_text(text, line), why: why.into() }
}

/// A control character other than a tab: the shell keeps a CR (of a CRLF line end) in
/// the value, grub reads it as part of a word, the kernel as a blank.
fn control_char(value: &str) -> Option<char> {
    value.chars().find(|c| c.is_control() && *c != '\t')
}

fn control_why(c: char) -> String {
    if c == '\r' {
        "a carriage return in the value (a CRLF line end?): the shell keeps it in the value and grub in a word".into()
    } else {
        format!("a control character ({}) in the value", c.escape_default())
    }
}

// ---------------------------------------------------------------------------------
// grub's word splitting

/// A word of a grub command line (offsets into the line).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GrubWord {
    /// Quotes and escapes removed; a variable as `$name`.
    pub text: String,
    /// Variables the word refers to (grub expands them when it runs the line).
    pub vars: Vec<String>,
    /// The word's characters in the line, quotes included.
    pub span: Range<usize>,
    /// Just after the last character that gave the word text (inside a closing quote).
    pub content_end: usize,
}

fn is_name_start(c: char) -> bool {
    c.is_ascii_alphabetic() || c == '_'
}

fn is_name_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_'
}

/// A `$` reference at `s[i..]` (`s[i] == '$'`): its name and the offset after it, as
/// grub's VAR state takes them (`$name`, `${name}`, `$1`, `$?`, `$#`, `$*`, `$@`).
fn grub_var(s: &str, i: usize) -> Result<(String, usize), String> {
    let rest = &s[i + 1..];
    let (braced, body) = match rest.strip_prefix('{') {
        Some(b) => (true, b),
        None => (false, rest),
    };
    let first = body.chars().next();
    let len = match first {
        Some(c) if is_name_start(c) => body.find(|c: char| !is_name_char(c)).unwrap_or(body.len()),
        Some(c) if c.is_ascii_digit() => body.find(|c: char| !c.is_ascii_digit()).unwrap_or(body.len()),
        Some('?' | '#' | '*' | '@') => 1,
        Some('"') if !braced => return Err("`$\"...\"` (a string grub translates)".into()),
        _ => return Err("a `$` that starts no variable".into()),
    };
    let name = body[..len].to_string();
    if braced {
        if !body[len..].starts_with('}') {
            return Err("`${` without its `}`".into());
        }
        Ok((name, i + 1 + 1 + len + 1))
    } else {
        Ok((name, i + 1 + len))
    }
}

/// `line` split into words as grub's script lexer splits the arguments of a command:
/// blanks separate, `'...'` is literal, `"..."` takes `\$ \\ \"` (other escapes stay),
/// an unquoted `\c` is `c` (but `\xHH` stays, execute.c `wildcard_unescape`), a word
/// that starts with `#` starts a comment. Err: what would make grub read something else
/// than words of one command (`;`, `|`, `&`, `<`, `>`, `{`, `}` outside quotes, an open
/// quote, a trailing backslash, a newline, a `$` that is no variable).
pub fn grub_words(line: &str) -> Result<Vec<GrubWord>, String> {
    let b = line.as_bytes();
    let mut words = Vec::new();
    let mut i = 0;
    let hex = |k: usize| b.get(k).is_some_and(u8::is_ascii_hexdigit);
    loop {
        while i < b.len() && (b[i] == b' ' || b[i] == b'\t') {
            i += 1;
        }
        if i >= b.len() || b[i] == b'#' {
            return Ok(words);
        }
        let start = i;
        let (mut text, mut vars, mut content_end) = (String::new(), Vec::new(), i);
        while i < b.len() {
            match b[i] {
                b' ' | b'\t' => break,
                b'\n' => return Err("a newline".into()),
                c @ (b'{' | b'}' | b'|' | b'&' | b';' | b'<' | b'>') => {
                    return Err(format!("`{}` outside quotes (grub reads it as script syntax)", c as char));
                }
                b'\\' => {
                    let Some(c) = line[i + 1..].chars().next() else { return Err("a backslash at the end".into()) };
                    if c == '\n' {
                        return Err("a newline".into());
                    }
                    if c == 'x' && hex(i + 2) && hex(i + 3) {
                        text.push_str(&line[i..i + 4]);
                        i += 4;
                    } else {
                        text.push(c);
                        i += 1 + c.len_utf8();
                    }
                    content_end = i;
                }
                b'\'' => {
                    let Some(close) = line[i + 1..].find('\'') else { return Err("an unterminated single quote".into()) };
                    let inner = &line[i + 1..i + 1 + close];
                    if inner.contains('\n') {
                        return Err("a newline".into());
                    }
                    text.push_str(inner);
                    if !inner.is_empty() {
                        content_end = i + 1 + close;
                    }
                    i += close + 2;
                }
                b'"' => {
                    i += 1;
                    loop {
                        let Some(c) = line[i..].chars().next() else { return Err("an unterminated double quote".into()) };
                        match c {
                            '"' => {
                                i += 1;
                                break;
                            }
                            '\n' => return Err("a newline".into()),
                            '\\' => match line[i + 1..].chars().next() {
                                Some(e @ ('$' | '\\' | '"')) => {
                                    text.push(e);
                                    i += 2;
                                    content_end = i;
                                }
                                Some('\n') => return Err("a newline".into()),
                                _ => {
                                    text.push('\\');
                                    i += 1;
                                    content_end = i;
                                }
                            },
                            '$' => {
                                let (name, after) = grub_var(line, i)?;
                                text.push_str(&line[i..after]);
                                vars.push(name);
                                i = after;
                                content_end = i;
                            }
                            c => {
                                text.push(c);
                                i += c.len_utf8();
                                content_end = i;
                            }
                        }
                    }
                }
                b'$' => {
                    let (name, after) = grub_var(line, i)?;
                    text.push_str(&line[i..after]);
                    vars.push(name);
                    i = after;
                    content_end = i;
                }
                _ => {
                    let c = line[i..].chars().next().expect("in bounds");
                    text.push(c);
                    i += c.len_utf8();
                    content_end = i;
                }
            }
        }
        words.push(GrubWord { text, vars, span: start..i, content_end });
    }
}

// ---------------------------------------------------------------------------------
// /etc/default/grub as /bin/sh reads it

/// Why the shell file cannot be read with certainty, and where.
#[derive(Debug)]
struct Uncertain {
    at: usize,
    why: String,
}

type Sh<T> = Result<T, Uncertain>;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    Semi,
    DSemi,
    Amp,
    AndIf,
    OrIf,
    Pipe,
    LParen,
    RParen,
    Redirect,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Tok {
    Word(Range<usize>),
    Op(Op, usize),
    Newline,
    Eof(usize),
}

/// A simple command: its words; `plain` when it runs in the shell that sources the file,
/// unconditionally, in order (no compound command, pipeline, `&&`/`||`, `&`, `$(...)`).
#[derive(Debug)]
struct SimpleCmd {
    words: Vec<Range<usize>>,
    redirects: bool,
    top: bool,
    plain: bool,
}

/// Commands that can set a variable where its name does not show, or stop the sourcing.
const OPAQUE: [&str; 12] = [".", "source", "eval", "exec", "command", "builtin", "alias", "trap", "return", "exit", "read", "getopts"];
/// Commands whose arguments are assignments or names.
const DECLARING: [&str; 3] = ["export", "readonly", "local"];
/// How deep `$(...)`, quotes and compound commands may nest before the reader gives up.
const MAX_NESTING: u32 = 64;
/// Words that close a list (reserved words at the start of a command).
const CLOSERS: [&str; 8] = ["then", "elif", "else", "fi", "do", "done", "esac", "}"];

/// A recursive-descent reader of the POSIX shell grammar, as far as telling where a
/// variable is set goes. Anything it does not know (here-documents, a stray token) is
/// an [`Uncertain`].
struct ShellReader<'a> {
    s: &'a str,
    pos: usize,
    peeked: Option<(Tok, usize)>,
    /// Inside `$(...)`: a subshell, whose assignments do not count.
    subst: u32,
    /// Inside compound commands.
    depth: u32,
    /// Nesting of everything read recursively (compound commands, `$(...)`, quotes in `${...}`).
    level: u32,
    words: Vec<Range<usize>>,
    cmds: Vec<(usize, SimpleCmd)>,
}

fn is_name(s: &str) -> bool {
    s.chars().next().is_some_and(is_name_start) && s.chars().all(is_name_char)
}

/// `NAME=` at the start of a word (the name unquoted): the name.
fn assigned_name(word: &str) -> Option<&str> {
    let (name, _) = word.split_once('=')?;
    is_name(name).then_some(name)
}

impl<'a> ShellReader<'a> {
    fn uncertain<T>(&self, at: usize, why: impl Into<String>) -> Sh<T> {
        Err(Uncertain { at, why: why.into() })
    }

    /// Runs `f` one level deeper; a bound keeps a crafted file from exhausting the stack.
    fn deeper<T>(&mut self, at: usize, f: impl FnOnce(&mut Self) -> Sh<T>) -> Sh<T> {
        if self.level >= MAX_NESTING {
            return self.uncertain(at, format!("more than {MAX_NESTING} levels of nesting"));
        }
        self.level += 1;
        let r = f(self);
        self.level -= 1;
        r
    }

    fn ch(&self, at: usize) -> Option<char> {
        self.s.get(at..).and_then(|r| r.chars().next())
    }

    fn skip_blanks(&mut self) {
        loop {
            match self.ch(self.pos) {
                Some(' ' | '\t') => self.pos += 1,
                Some('\\') if self.ch(self.pos + 1) == Some('\n') => self.pos += 2,
                _ => return,
            }
        }
    }

    fn lex(&mut self) -> Sh<Tok> {
        loop {
            self.skip_blanks();
            let at = self.pos;
            let Some(c) = self.ch(at) else { return Ok(Tok::Eof(at)) };
            let next = self.ch(at + 1);
            let (op, len) = match c {
                '#' => {
                    self.pos = self.s[at..].find('\n').map_or(self.s.len(), |n| at + n);
                    continue;
                }
                '\n' => {
                    self.pos += 1;
                    return Ok(Tok::Newline);
                }
                ';' if next == Some(';') => (Op::DSemi, 2),
                ';' => (Op::Semi, 1),
                '&' if next == Some('&') => (Op::AndIf, 2),
                '&' => (Op::Amp, 1),
                '|' if next == Some('|') => (Op::OrIf, 2),
                '|' => (Op::Pipe, 1),
                '(' => (Op::LParen, 1),
                ')' => (Op::RParen, 1),
                '<' if next == Some('<') => return self.uncertain(at, "a here-document (<<), which this parser does not read"),
                '<' if matches!(next, Some('&' | '>')) => (Op::Redirect, 2),
                '>' if matches!(next, Some('>' | '&' | '|')) => (Op::Redirect, 2),
                '<' | '>' => (Op::Redirect, 1),
                _ => return self.word().map(Tok::Word),
            };
            self.pos += len;
            return Ok(Tok::Op(op, at));
        }
    }

    fn word(&mut self) -> Sh<Range<usize>> {
        let start = self.pos;
        while let Some(c) = self.ch(self.pos) {
            match c {
                ' ' | '\t' | '\n' | ';' | '&' | '|' | '(' | ')' | '<' | '>' => break,
                '\\' => self.escape()?,
                '\'' => self.single_quoted()?,
                '"' => self.double_quoted()?,
                '$' => self.deeper(start, |p| p.dollar(false))?,
                '`' => self.backquoted()?,
                c => self.pos += c.len_utf8(),
            }
        }
        if self.pos == start {
            return self.uncertain(start, "an empty word");
        }
        self.words.push(start..self.pos);
        Ok(start..self.pos)
    }

    fn escape(&mut self) -> Sh<()> {
        match self.ch(self.pos + 1) {
            Some(c) => {
                self.pos += 1 + c.len_utf8();
                Ok(())
            }
            None => self.uncertain(self.pos, "a backslash at the end of the file"),
        }
    }

    fn single_quoted(&mut self) -> Sh<()> {
        match self.s[self.pos + 1..].find('\'') {
            Some(n) => {
                self.pos += n + 2;
                Ok(())
            }
            None => self.uncertain(self.pos, "an unterminated single quote"),
        }
    }

    fn double_quoted(&mut self) -> Sh<()> {
        let open = self.pos;
        self.pos += 1;
        loop {
            match self.ch(self.pos) {
                None => return self.uncertain(open, "an unterminated double quote"),
                Some('"') => {
                    self.pos += 1;
                    return Ok(());
                }
                Some('\\') => self.escape()?,
                Some('$') => self.deeper(open, |p| p.dollar(true))?,
                Some('`') => self.backquoted()?,
                Some(c) => self.pos += c.len_utf8(),
            }
        }
    }

    fn backquoted(&mut self) -> Sh<()> {
        let open = self.pos;
        self.pos += 1;
        loop {
            match self.ch(self.pos) {
                None => return self.uncertain(open, "an unterminated command substitution (`)"),
                Some('`') => {
                    self.pos += 1;
                    return Ok(());
                }
                Some('\\') => self.escape()?,
                Some(c) => self.pos += c.len_utf8(),
            }
        }
    }

    /// `$...` at `pos`: `$(...)` is read as the commands it holds, `$((...))`, `${...}`
    /// to their ends; `$name` is ordinary word characters.
    fn dollar(&mut self, in_dq: bool) -> Sh<()> {
        let open = self.pos;
        match (self.ch(open + 1), self.ch(open + 2)) {
            (Some('('), Some('(')) => {
                self.pos += 3;
                let mut depth = 0u32;
                loop {
                    match self.ch(self.pos) {
                        None => return self.uncertain(open, "an unterminated $(("),
                        Some('(') => {
                            depth += 1;
                            self.pos += 1;
                        }
                        Some(')') if depth > 0 => {
                            depth -= 1;
                            self.pos += 1;
                        }
                        Some(')') if self.ch(self.pos + 1) == Some(')') => {
                            self.pos += 2;
                            return Ok(());
                        }
                        Some(')') => return self.uncertain(open, "a $(( ... ) this parser cannot tell from a subshell"),
                        Some('\\') => self.escape()?,
                        Some('\'') => self.single_quoted()?,
                        Some('"') => self.deeper(open, Self::double_quoted)?,
                        Some('$') => self.deeper(open, |p| p.dollar(false))?,
                        Some('`') => self.backquoted()?,
                        Some(c) => self.pos += c.len_utf8(),
                    }
                }
            }
            (Some('('), _) => {
                self.pos += 2;
                debug_assert!(self.peeked.is_none());
                self.subst += 1;
                self.list()?;
                match self.next()? {
                    Tok::Op(Op::RParen, _) => {}
                    _ => return self.uncertain(open, "a $( without its )"),
                }
                self.subst -= 1;
                Ok(())
            }
            (Some('{'), _) => {
                self.pos += 2;
                loop {
                    match self.ch(self.pos) {
                        None => return self.uncertain(open, "an unterminated ${"),
                        Some('}') => {
                            self.pos += 1;
                            return Ok(());
                        }
                        Some('\\') => self.escape()?,
                        Some('\'') if !in_dq => self.single_quoted()?,
                        Some('"') => self.deeper(open, Self::double_quoted)?,
                        Some('$') => self.deeper(open, |p| p.dollar(in_dq))?,
                        Some('`') => self.backquoted()?,
                        Some(c) => self.pos += c.len_utf8(),
                    }
                }
            }
            _ => {
                self.pos += 1;
                Ok(())
            }
        }
    }

    fn peek(&mut self) -> Sh<Tok> {
        if let Some((t, _)) = &self.peeked {
            return Ok(t.clone());
        }
        let save = self.pos;
        let t = self.lex()?;
        self.peeked = Some((t.clone(), self.pos));
        self.pos = save;
        Ok(t)
    }

    fn next(&mut self) -> Sh<Tok> {
        if let Some((t, after)) = self.peeked.take() {
            self.pos = after;
            return Ok(t);
        }
        self.lex()
    }

    fn text(&self, r: &Range<usize>) -> &'a str {
        &self.s[r.clone()]
    }

    fn peek_word(&mut self) -> Sh<Option<&'a str>> {
        Ok(match self.peek()? {
            Tok::Word(r) => Some(self.text(&r)),
            _ => None,
        })
    }

    fn at(&mut self) -> Sh<usize> {
        Ok(match self.peek()? {
            Tok::Word(r) => r.start,
            Tok::Op(_, at) | Tok::Eof(at) => at,
            Tok::Newline => self.pos,
        })
    }

    fn expect_word(&mut self, w: &str) -> Sh<()> {
        if self.peek_word()? == Some(w) {
            self.next()?;
            return Ok(());
        }
        let at = self.at()?;
        self.uncertain(at, format!("`{w}` expected here"))
    }

    fn linebreak(&mut self) -> Sh<()> {
        while self.peek()? == Tok::Newline {
            self.next()?;
        }
        Ok(())
    }

    fn at_closer(&mut self) -> Sh<bool> {
        Ok(match self.peek()? {
            Tok::Eof(_) | Tok::Op(Op::RParen | Op::DSemi, _) => true,
            Tok::Word(r) => CLOSERS.contains(&self.text(&r)),
            _ => false,
        })
    }

    /// Commands separated by `;`, `&` and newlines, up to a closing word or token.
    fn list(&mut self) -> Sh<()> {
        loop {
            self.linebreak()?;
            if self.at_closer()? {
                return Ok(());
            }
            let single = self.and_or()?;
            let in_order = match self.peek()? {
                Tok::Op(Op::Semi, _) | Tok::Newline => {
                    self.next()?;
                    true
                }
                Tok::Op(Op::Amp, _) => {
                    self.next()?;
                    false
                }
                _ if self.at_closer()? => true,
                _ => {
                    let at = self.at()?;
                    return self.uncertain(at, "a token this parser does not expect here");
                }
            };
            if let Some(i) = single {
                let c = &mut self.cmds.iter_mut().find(|(k, _)| *k == i).expect("recorded").1;
                c.plain = in_order && c.top;
            }
        }
    }

    /// Pipelines joined by `&&` and `||`; the simple command when it is the only one.
    fn and_or(&mut self) -> Sh<Option<usize>> {
        let mut one = self.pipeline()?;
        while let Tok::Op(Op::AndIf | Op::OrIf, _) = self.peek()? {
            self.next()?;
            self.linebreak()?;
            self.pipeline()?;
            one = None;
        }
        Ok(one)
    }

    fn pipeline(&mut self) -> Sh<Option<usize>> {
        let mut one = true;
        if self.peek_word()? == Some("!") {
            self.next()?;
            one = false;
        }
        let c = self.command()?;
        while let Tok::Op(Op::Pipe, _) = self.peek()? {
            self.next()?;
            self.linebreak()?;
            self.command()?;
            one = false;
        }
        Ok(if one { c } else { None })
    }

    fn nested(&mut self, f: impl FnOnce(&mut Self) -> Sh<()>) -> Sh<()> {
        let at = self.pos;
        self.depth += 1;
        self.deeper(at, f)?;
        self.depth -= 1;
        Ok(())
    }

    /// A command; Some(index) for a simple command.
    fn command(&mut self) -> Sh<Option<usize>> {
        let at = self.at()?;
        match self.peek()? {
            Tok::Word(r) => match self.text(&r) {
                "if" => self.nested(Self::if_clause)?,
                "while" | "until" => self.nested(|p| {
                    p.next()?;
                    p.list()?;
                    p.expect_word("do")?;
                    p.list()?;
                    p.expect_word("done")
                })?,
                "for" => self.nested(Self::for_clause)?,
                "case" => self.nested(Self::case_clause)?,
                "{" => self.nested(|p| {
                    p.next()?;
                    p.list()?;
                    p.expect_word("}")
                })?,
                "!" | "in" => return self.uncertain(at, "a reserved word where a command starts"),
                w if CLOSERS.contains(&w) => return self.uncertain(at, format!("`{w}` without what it closes")),
                _ => return self.simple_command(),
            },
            Tok::Op(Op::LParen, _) => self.nested(|p| {
                p.next()?;
                p.list()?;
                match p.next()? {
                    Tok::Op(Op::RParen, _) => Ok(()),
                    _ => p.uncertain(at, "a ( without its )"),
                }
            })?,
            Tok::Op(Op::Redirect, _) => return self.simple_command(),
            _ => return self.uncertain(at, "a command expected here"),
        }
        // Redirections of a compound command.
        while let Tok::Op(Op::Redirect, _) = self.peek()? {
            self.next()?;
            self.redirect_target(at)?;
        }
        Ok(None)
    }

    fn redirect_target(&mut self, at: usize) -> Sh<()> {
        match self.next()? {
            Tok::Word(_) => Ok(()),
            _ => self.uncertain(at, "a redirection without its file"),
        }
    }

    fn if_clause(&mut self) -> Sh<()> {
        self.next()?;
        self.list()?;
        self.expect_word("then")?;
        self.list()?;
        loop {
            match self.peek_word()? {
                Some("elif") => {
                    self.next()?;
                    self.list()?;
                    self.expect_word("then")?;
                    self.list()?;
                }
                Some("else") => {
                    self.next()?;
                    self.list()?;
                    return self.expect_word("fi");
                }
                _ => return self.expect_word("fi"),
            }
        }
    }

    fn for_clause(&mut self) -> Sh<()> {
        let at = self.at()?;
        self.next()?;
        match self.next()? {
            Tok::Word(_) => {}
            _ => return self.uncertain(at, "`for` without a name"),
        }
        self.linebreak()?;
        if self.peek_word()? == Some("in") {
            self.next()?;
            loop {
                match self.next()? {
                    Tok::Word(_) => {}
                    Tok::Op(Op::Semi, _) | Tok::Newline => break,
                    _ => return self.uncertain(at, "a `for` word list this parser does not read"),
                }
            }
        } else if let Tok::Op(Op::Semi, _) = self.peek()? {
            self.next()?;
        }
        self.linebreak()?;
        self.expect_word("do")?;
        self.list()?;
        self.expect_word("done")
    }

    fn case_clause(&mut self) -> Sh<()> {
        let at = self.at()?;
        self.next()?;
        match self.next()? {
            Tok::Word(_) => {}
            _ => return self.uncertain(at, "`case` without a word"),
        }
        self.linebreak()?;
        self.expect_word("in")?;
        loop {
            self.linebreak()?;
            if self.peek_word()? == Some("esac") {
                self.next()?;
                return Ok(());
            }
            if let Tok::Op(Op::LParen, _) = self.peek()? {
                self.next()?;
            }
            loop {
                match self.next()? {
                    Tok::Word(_) => {}
                    _ => return self.uncertain(at, "a `case` pattern this parser does not read"),
                }
                match self.next()? {
                    Tok::Op(Op::Pipe, _) => continue,
                    Tok::Op(Op::RParen, _) => break,
                    _ => return self.uncertain(at, "a `case` pattern this parser does not read"),
                }
            }
            self.list()?;
            match self.peek()? {
                Tok::Op(Op::DSemi, _) => {
                    self.next()?;
                }
                _ if self.peek_word()? == Some("esac") => {}
                _ => return self.uncertain(at, "a `case` item without `;;`"),
            }
        }
    }

    fn simple_command(&mut self) -> Sh<Option<usize>> {
        let start = self.at()?;
        let mut words: Vec<Range<usize>> = Vec::new();
        let mut redirects = false;
        loop {
            match self.peek()? {
                Tok::Word(r) => {
                    self.next()?;
                    words.push(r.clone());
                    if words.len() == 1 && !redirects && is_name(self.text(&r)) && matches!(self.peek()?, Tok::Op(Op::LParen, _)) {
                        return self.function_definition(start);
                    }
                }
                Tok::Op(Op::Redirect, _) => {
                    self.next()?;
                    redirects = true;
                    self.redirect_target(start)?;
                }
                _ => break,
            }
        }
        // The command that runs: one that can set variables unseen, or whose name is only
        // known when it runs, makes every later value uncertain (in a subshell it cannot).
        if self.subst == 0 {
            if let Some(name) = words.iter().find(|w| assigned_name(self.text(w)).is_none()) {
                match shell_literal(self.text(name)) {
                    Some(n) if OPAQUE.contains(&n.as_str()) => {
                        return self.uncertain(name.start, format!("`{n}` can set variables where their names do not show"));
                    }
                    Some(n) if DECLARING.contains(&n.as_str()) => {
                        let dynamic = words.iter().skip_while(|w| *w != name).skip(1).find(|w| {
                            let t = self.text(w);
                            !(assigned_name(t).is_some() || is_name(t) || t.starts_with('-'))
                        });
                        if let Some(w) = dynamic {
                            return self.uncertain(w.start, format!("`{n}` of a name known only when it runs"));
                        }
                    }
                    Some(_) => {}
                    None => return self.uncertain(name.start, "a command whose name is known only when it runs"),
                }
            }
        }
        let top = self.subst == 0 && self.depth == 0;
        self.cmds.push((start, SimpleCmd { words, redirects, top, plain: false }));
        Ok(Some(start))
    }

    fn function_definition(&mut self, at: usize) -> Sh<Option<usize>> {
        self.next()?;
        match self.next()? {
            Tok::Op(Op::RParen, _) => {}
            _ => return self.uncertain(at, "a function definition without `()`"),
        }
        self.linebreak()?;
        let body_starts_compound = match self.peek()? {
            Tok::Op(Op::LParen, _) => true,
            Tok::Word(r) => matches!(self.text(&r), "{" | "if" | "while" | "until" | "for" | "case"),
            _ => false,
        };
        if !body_starts_compound {
            return self.uncertain(at, "a function body that is no compound command");
        }
        self.nested(|p| p.command().map(|_| ()))?;
        Ok(None)
    }
}

/// The value of a shell word when it has no expansion at all (quotes removed), as a
/// command name: None when anything in it is expanded.
fn shell_literal(word: &str) -> Option<String> {
    literal_value(word, 0, false).ok().map(|v| v.text)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Quote {
    None,
    Single,
    Double,
}

/// A literal shell value with where each of its bytes came from.
#[derive(Debug)]
struct ShellValue {
    text: String,
    /// Per byte of `text`: the file offset just after its source, and its quoting.
    src: Vec<(usize, Quote)>,
    /// The quoted parts: (quote, offset of the opening quote).
    parts: Vec<(Quote, usize)>,
    /// A backslash or a double quote outside quotes (double quotes around it would change it).
    bare_specials: bool,
}

/// The value of `raw` (a word or the part after `NAME=`, at file offset `base`) when it
/// is a plain literal: single quotes, double quotes with `\$ \` \" \\` escapes, unquoted
/// `\c`. Err: why not. `export`: pathname expansion may apply (dash before 0.5.11 field
/// splits and globs the arguments of `export`).
fn literal_value(raw: &str, base: usize, export: bool) -> Result<ShellValue, String> {
    let mut v = ShellValue { text: String::new(), src: Vec::new(), parts: Vec::new(), bare_specials: false };
    let push = |v: &mut ShellValue, c: char, end: usize, q: Quote| {
        v.text.push(c);
        for _ in 0..c.len_utf8() {
            v.src.push((base + end, q));
        }
    };
    let expansion = |rest: &str| -> String {
        if rest.starts_with("$((") {
            "arithmetic expansion $((...))".into()
        } else if rest.starts_with("$(") {
            "command substitution $(...)".into()
        } else if rest.starts_with('`') {
            "command substitution `...`".into()
        } else {
            "parameter expansion ($X or ${...})".into()
        }
    };
    let mut i = 0;
    while let Some(c) = raw[i..].chars().next() {
        match c {
            '\\' => {
                v.bare_specials = true;
                match raw[i + 1..].chars().next() {
                    None => return Err("a backslash at the end".into()),
                    Some('\n') => return Err("a line continuation (backslash-newline)".into()),
                    Some(e) => {
                        i += 1 + e.len_utf8();
                        push(&mut v, e, i, Quote::None);
                    }
                }
            }
            '\'' => {
                let Some(n) = raw[i + 1..].find('\'') else { return Err("an unterminated single quote".into()) };
                v.parts.push((Quote::Single, base + i));
                for (k, c) in raw[i + 1..i + 1 + n].char_indices() {
                    push(&mut v, c, i + 1 + k + c.len_utf8(), Quote::Single);
                }
                i += n + 2;
            }
            '"' => {
                v.parts.push((Quote::Double, base + i));
                i += 1;
                loop {
                    let Some(c) = raw[i..].chars().next() else { return Err("an unterminated double quote".into()) };
                    match c {
                        '"' => {
                            i += 1;
                            break;
                        }
                        '\\' => match raw[i + 1..].chars().next() {
                            Some('\n') => return Err("a line continuation (backslash-newline)".into()),
                            Some(e @ ('$' | '`' | '"' | '\\')) => {
                                i += 2;
                                push(&mut v, e, i, Quote::Double);
                            }
                            _ => {
                                i += 1;
                                push(&mut v, '\\', i, Quote::Double);
                            }
                        },
                        '$' | '`' => return Err(expansion(&raw[i..])),
                        c => {
                            i += c.len_utf8();
                            push(&mut v, c, i, Quote::Double);
                        }
                    }
                }
            }
            '$' | '`' => return Err(expansion(&raw[i..])),
            '~' => return Err("a `~` outside quotes (tilde expansion)".into()),
            '*' | '?' | '[' if export => return Err(format!("a `{c}` outside quotes in an `export` argument (pathname expansion in older dash)")),
            c => {
                i += c.len_utf8();
                push(&mut v, c, i, Quote::None);
            }
        }
    }
    Ok(v)
}

/// Where the name appears in `s` as a whole name (not `GRUB_CMDLINE_LINUX_DEFAULT`).
fn mentions(s: &str) -> Option<usize> {
    let mut from = 0;
    while let Some(k) = s[from..].find(VAR) {
        let at = from + k;
        let before = s[..at].chars().next_back();
        let after = s[at + VAR.len()..].chars().next();
        if !before.is_some_and(is_name_char) && !after.is_some_and(is_name_char) {
            return Some(at);
        }
        from = at + VAR.len();
    }
    None
}

/// `GRUB_CMDLINE_LINUX` of /etc/default/grub as grub-mkconfig gets it (the file sourced
/// by /bin/sh: the last assignment that runs wins), split into the kernel's words as
/// grub splits the `linux` line it is put on. An assignment counts when it is a plain
/// command of the file itself (alone or with other assignments, or `export`): one in a
/// compound command, a pipeline, an `&&`/`||` list, the background or with a command is
/// uncertain, as is any other mention of the name. Err when the value is not a plain
/// literal: command substitution, parameter expansion, a line continuation, anything
/// this reader cannot be sure of.
pub fn grub_cmdline_linux(text: &str) -> Result<FileCmdline, NotLiteral> {
    let mut sh = ShellReader { s: text, pos: 0, peeked: None, subst: 0, depth: 0, level: 0, words: Vec::new(), cmds: Vec::new() };
    let read = sh.list().and_then(|_| match sh.next()? {
        Tok::Eof(_) => Ok(()),
        Tok::Word(r) => sh.uncertain(r.start, format!("`{}` without what it opens", &text[r.clone()])),
        Tok::Op(_, at) => sh.uncertain(at, "a `)` or `;;` without what it closes"),
        Tok::Newline => sh.uncertain(sh.pos, "a token this parser does not expect here"),
    });
    if let Err(u) = read {
        return Err(not_literal(text, u.at, format!("{}: the shell's reading of the file is uncertain", u.why)));
    }
    sh.cmds.sort_by_key(|(at, _)| *at);
    // Assignments that run in order in the sourcing shell; words whose name part is fine.
    let mut assignments: Vec<(Range<usize>, bool, Range<usize>)> = Vec::new();
    let mut named: Vec<usize> = Vec::new();
    for (_, c) in &sh.cmds {
        if !c.plain || c.redirects || c.words.is_empty() {
            continue;
        }
        let t = |r: &Range<usize>| &text[r.clone()];
        let export = t(&c.words[0]) == "export";
        let args = if export { &c.words[1..] } else { &c.words[..] };
        if !args.iter().all(|w| assigned_name(t(w)).is_some() || (export && is_name(t(w)))) {
            continue;
        }
        let end = c.words.last().map_or(0, |w| w.end);
        let start = c.words[0].start;
        for w in args {
            if assigned_name(t(w)) == Some(VAR) {
                assignments.push((w.clone(), export, start..end));
                named.push(w.start);
            } else if t(w) == VAR {
                named.push(w.start);
            }
        }
    }
    let mut words = sh.words.clone();
    words.sort_by_key(|w| w.start);
    for w in &words {
        let skip = if named.contains(&w.start) { VAR.len() } else { 0 };
        if let Some(k) = mentions(&text[w.start + skip..w.end]) {
            let at = w.start + skip + k;
            let why = if text[..at].ends_with('$') || text[..at].ends_with("${") {
                format!("{VAR} is expanded here: its value is known only when the file runs")
            } else if text[at + VAR.len()..].starts_with('=') {
                format!("{VAR} is set here inside a compound command, a pipeline, an && or || list, the background, $(...) or for one command only: which value wins is known only when the file runs")
            } else {
                format!("{VAR} is used here in a way this parser cannot follow")
            };
            return Err(not_literal(text, at, why));
        }
    }
    let Some((word, export, cmd)) = assignments.pop() else {
        let head = if text.is_empty() || text.ends_with('\n') { "" } else { "\n" };
        return Ok(FileCmdline {
            line: None,
            value: String::new(),
            words: Vec::new(),
            append: Append::At { at: text.len(), before: format!("{head}{VAR}=\""), after: "\"\n".into() },
        });
    };
    let err = |why: String| not_literal(text, word.start, why);
    if text[cmd.clone()].contains('\n') {
        return Err(err(format!("the assignment of {VAR} continues over several lines (a backslash-newline or a quoted newline)")));
    }
    let base = word.start + VAR.len() + 1;
    let value = literal_value(&text[base..word.end], base, export).map_err(|why| err(format!("the value is no plain literal: {why}")))?;
    if let Some(c) = control_char(&value.text) {
        return Err(err(control_why(c)));
    }
    let gw = grub_words(&value.text).map_err(|why| err(format!("grub would not read the value as plain words: {why}")))?;
    if let Some(var) = gw.iter().flat_map(|w| &w.vars).next() {
        return Err(err(format!("`${var}` in the value: grub expands it when it boots")));
    }
    let src_end = |i: usize| value.src[i].0;
    let words: Vec<CmdlineWord> = gw
        .iter()
        .map(|w| {
            let last = if w.content_end > w.span.start { w.content_end - 1 } else { w.span.end - 1 };
            CmdlineWord { text: w.text.clone(), var: None, end: src_end(last) }
        })
        .collect();
    let append = match gw.last() {
        Some(last) => {
            let (at, q) = value.src[last.span.end - 1];
            match q {
                Quote::Single | Quote::Double => Append::At { at, before: " ".into(), after: String::new() },
                Quote::None if value.parts.is_empty() && !value.bare_specials => Append::Wrap { open: base, close: word.end },
                Quote::None => Append::At { at, before: "\" ".into(), after: "\"".into() },
            }
        }
        None => match value.parts.first() {
            Some((_, open)) if value.text.is_empty() || value.src[0].1 != Quote::None => {
                let after = if value.text.is_empty() { "" } else { " " };
                Append::At { at: open + 1, before: String::new(), after: after.into() }
            }
            _ => {
                let after = if value.text.is_empty() { "\"" } else { " \"" };
                Append::At { at: base, before: "\"".into(), after: after.into() }
            }
        },
    };
    Ok(FileCmdline { line: Some(line_of(text, word.start)), value: value.text, words, append })
}

// ---------------------------------------------------------------------------------
// BLS entries and the grub environment block

/// Variables of BLS `options` lines that cgleak knows: `$kernelopts` (grubenv, edited
/// there) and `$tuned_params` (tuned's, in grubenv).
pub const BLS_KNOWN_VARS: [&str; 2] = ["kernelopts", "tuned_params"];

/// Lines of `text` with their start offsets (without the newline).
fn lines_at(text: &str) -> impl Iterator<Item = (usize, &str)> {
    let mut at = 0;
    text.split_inclusive('\n').map(move |l| {
        let start = at;
        at += l.len();
        (start, l.strip_suffix('\n').unwrap_or(l))
    })
}

/// Words split on blanks (space, tab), with their offsets.
fn blank_words(s: &str, base: usize) -> Vec<(usize, &str)> {
    let mut out = Vec::new();
    let mut start = None;
    for (i, c) in s.char_indices().chain(std::iter::once((s.len(), ' '))) {
        match (c == ' ' || c == '\t', start) {
            (true, Some(st)) => {
                out.push((base + st, &s[st..i]));
                start = None;
            }
            (false, None) => start = Some(i),
            _ => {}
        }
    }
    out
}

/// The `options` line of a BLS entry, split on blanks as blscfg does; `$kernelopts` and
/// `$tuned_params` are words of their own (expanded from the grub environment at boot).
/// Err: a second `options` line (systemd-boot joins them, grub's blscfg takes one), an
/// unknown variable, a control character, or text grub's lexer would read otherwise
/// (an open quote, `;`, `{`, ...: blscfg hands the line to it).
pub fn bls_cmdline(entry: &str) -> Result<FileCmdline, NotLiteral> {
    let mut found: Option<(usize, usize, &str)> = None;
    for (start, l) in lines_at(entry) {
        let lead = l.len() - l.trim_start_matches([' ', '\t']).len();
        let Some(rest) = l[lead..].strip_prefix("options") else { continue };
        // `options` then a blank, the end, or a control character (a CR: refused below).
        if !(rest.is_empty() || rest.starts_with(|c: char| c == ' ' || c.is_control())) {
            continue;
        }
        if found.is_some() {
            return Err(not_literal(entry, start, "a second `options` line: systemd-boot joins them, grub's blscfg reads one"));
        }
        found = Some((start, start + lead + "options".len(), rest));
    }
    let Some((line_start, key_end, rest)) = found else {
        if let Some(cr) = entry.find('\r') {
            return Err(not_literal(entry, cr, "a carriage return (CRLF line ends): cgleak does not add an options line to such an entry"));
        }
        let head = if entry.is_empty() || entry.ends_with('\n') { "" } else { "\n" };
        return Ok(FileCmdline {
            line: None,
            value: String::new(),
            words: Vec::new(),
            append: Append::At { at: entry.len(), before: format!("{head}options "), after: "\n".into() },
        });
    };
    let err = |why: String| not_literal(entry, line_start, why);
    if let Some(c) = control_char(rest) {
        return Err(err(control_why(c)));
    }
    grub_words(rest).map_err(|why| err(format!("grub would not read the options as plain words: {why}")))?;
    let mut words = Vec::new();
    for (at, w) in blank_words(rest, key_end) {
        if w.starts_with('#') {
            return Err(err(format!("`{w}`: grub reads the rest of the line as a comment")));
        }
        let var = match w.strip_prefix('$') {
            Some(name) if BLS_KNOWN_VARS.contains(&name) => Some(name.to_string()),
            _ if w.contains('$') => return Err(err(format!("`{w}`: a variable cgleak does not know (known: $kernelopts, $tuned_params)"))),
            _ => None,
        };
        words.push(CmdlineWord { text: w.to_string(), var, end: at + w.len() });
    }
    let at = words.last().map_or(key_end, |w| w.end);
    let value = rest.trim_matches([' ', '\t']).to_string();
    Ok(FileCmdline { line: Some(line_of(entry, line_start)), value, words, append: Append::At { at, before: " ".into(), after: String::new() } })
}

/// `kernelopts=` of a grub environment block (grub-core/lib/envblk.c: `name=value` lines
/// after the signature, `#` padding to the block's size), split into words as grub splits
/// the `linux` line blscfg makes of `$kernelopts`. Err: none or two such lines, a
/// backslash (grub-editenv's escape of `\` and newlines), a variable, a control character.
pub fn grubenv_cmdline(block: &str) -> Result<FileCmdline, NotLiteral> {
    let mut found: Option<(usize, &str)> = None;
    for (start, l) in lines_at(block) {
        if let Some(v) = l.strip_prefix("kernelopts=") {
            if found.is_some() {
                return Err(not_literal(block, start, "a second kernelopts= line"));
            }
            found = Some((start, v));
        }
    }
    let Some((start, raw)) = found else {
        return Err(NotLiteral { line: 0, text: String::new(), why: "no kernelopts= line (the BLS entries take their options from $kernelopts)".into() });
    };
    let err = |why: String| not_literal(block, start, why);
    let base = start + "kernelopts=".len();
    if raw.contains('\\') {
        return Err(err("a backslash in the value (grub-editenv's escape for `\\` and newlines): cgleak does not edit escaped values".into()));
    }
    if let Some(c) = control_char(raw) {
        return Err(err(control_why(c)));
    }
    let gw = grub_words(raw).map_err(|why| err(format!("grub would not read the value as plain words: {why}")))?;
    if let Some(var) = gw.iter().flat_map(|w| &w.vars).next() {
        return Err(err(format!("`${var}` in the value: grub expands it when the entry boots")));
    }
    let words: Vec<CmdlineWord> = gw
        .iter()
        .map(|w| CmdlineWord { text: w.text.clone(), var: None, end: base + if w.content_end > w.span.start { w.content_end } else { w.span.end } })
        .collect();
    let append = match gw.last() {
        Some(w) => Append::At { at: base + w.span.end, before: " ".into(), after: String::new() },
        None => Append::At { at: base, before: String::new(), after: String::new() },
    };
    Ok(FileCmdline { line: Some(line_of(block, start)), value: raw.to_string(), words, append })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(s: &str) -> Vec<String> {
        grub_words(s).unwrap().into_iter().map(|w| w.text).collect()
    }

    fn value(text: &str) -> (String, Vec<String>) {
        let c = grub_cmdline_linux(text).unwrap_or_else(|e| panic!("{text:?}: {e}"));
        (c.value.clone(), c.texts())
    }

    fn refused(text: &str) -> NotLiteral {
        grub_cmdline_linux(text).expect_err(text)
    }

    #[test]
    fn grub_splits_words_as_its_script_lexer_does() {
        assert_eq!(words("ro  quiet\tsplash"), ["ro", "quiet", "splash"]);
        assert_eq!(words(r#"rd.lvm.lv="cl/root" a'b c'd"#), ["rd.lvm.lv=cl/root", "ab cd"]);
        assert_eq!(words(r#"a\ b "x\"y\$z\q" \x41"#), ["a b", r#"x"y$z\q"#, r"\x41"]);
        assert_eq!(words("ro #quiet splash"), ["ro"]);
        assert_eq!(words("a#b"), ["a#b"]);
        assert_eq!(words("ro $vt_handoff"), ["ro", "$vt_handoff"]);
        for bad in ["a;b", "a|b", "a{", "\"open", "'open", "end\\", "$", "a\nb", "$\"t\""] {
            assert!(grub_words(bad).is_err(), "{bad:?}");
        }
        let w = &grub_words(r#"x "cgroup.memory=nosocket" y"#).unwrap()[1];
        assert_eq!((w.span.clone(), w.content_end), (2..26, 25));
    }

    #[test]
    fn the_shell_value_and_the_kernel_words() {
        // The finding: escaped double quotes inside a double-quoted value.
        let (v, w) = value("GRUB_CMDLINE_LINUX=\"crashkernel=auto rd.lvm.lv=\\\"cl/root\\\" rhgb\"\n");
        assert_eq!(v, "crashkernel=auto rd.lvm.lv=\"cl/root\" rhgb");
        assert_eq!(w, ["crashkernel=auto", "rd.lvm.lv=cl/root", "rhgb"]);
        assert_eq!(value("GRUB_CMDLINE_LINUX='a \"b c\"'\n").1, ["a", "b c"]);
        assert_eq!(value("GRUB_CMDLINE_LINUX=a\\ b'c d'\"e\"\n").0, "a bc de");
        assert_eq!(value("export GRUB_CMDLINE_LINUX=\"ro quiet\" # note\n").1, ["ro", "quiet"]);
        assert_eq!(value("GRUB_CMDLINE_LINUX=\"one\"\nGRUB_CMDLINE_LINUX=\"two\"\n").1, ["two"]);
        assert_eq!(value("A=1; GRUB_CMDLINE_LINUX=x B=2\n").1, ["x"]);
        assert_eq!(value("GRUB_CMDLINE_LINUX_DEFAULT=\"quiet\"\n").1, Vec::<String>::new());
        // Other variables may run commands: their subshells set nothing here.
        let deb = "GRUB_DISTRIBUTOR=`lsb_release -i -s 2> /dev/null || echo Debian`\nGRUB_CMDLINE_LINUX=\"x\"\n";
        assert_eq!(value(deb).1, ["x"]);
        let el = "GRUB_DISTRIBUTOR=\"$(sed 's, release .*$,,g' /etc/system-release)\"\nGRUB_CMDLINE_LINUX=\"y\"\n";
        assert_eq!(value(el).1, ["y"]);
        let c = "if [ -e /x ]; then\n  GRUB_TIMEOUT=1\nfi\ncase $a in\n  (x|y) b=1 ;;\n  *) ;;\nesac\nf() { echo \"$1\"; }\nGRUB_CMDLINE_LINUX=z\n";
        assert_eq!(value(c).1, ["z"]);
        assert_eq!(value("# GRUB_CMDLINE_LINUX=\"commented\"\n").0, "");
        // Ubuntu 24.04 and Debian 13 name the distributor from os-release in a subshell.
        let ubuntu = "GRUB_DEFAULT=0\nGRUB_TIMEOUT_STYLE=hidden\nGRUB_TIMEOUT=0\nGRUB_DISTRIBUTOR=`( . /etc/os-release; echo ${NAME:-Ubuntu} ) 2>/dev/null || echo Ubuntu`\n\
GRUB_CMDLINE_LINUX_DEFAULT=\"quiet splash\"\nGRUB_CMDLINE_LINUX=\"\"\n\n#GRUB_BADRAM=\"0x01234567,0xfefefefe,0x89abcdef,0xefefefef\"\n#GRUB_INIT_TUNE=\"480 440 1\"\n";
        assert_eq!(grub_cmdline_linux(ubuntu).unwrap().line, Some(6));
        let trixie = "GRUB_DISTRIBUTOR=$( . /etc/os-release && echo ${NAME} )\nGRUB_CMDLINE_LINUX=\"quiet\"\n";
        assert_eq!(value(trixie).1, ["quiet"]);
    }

    #[test]
    fn values_that_are_no_plain_literal_are_refused_with_their_line() {
        for (text, line, needle) in [
            ("A=1\nGRUB_CMDLINE_LINUX=\"$(cat /x)\"\n", 2, "command substitution"),
            ("GRUB_CMDLINE_LINUX=`cat /x`\n", 1, "command substitution"),
            ("GRUB_CMDLINE_LINUX=\"$X ro\"\n", 1, "parameter expansion"),
            ("GRUB_CMDLINE_LINUX=\"a \\\nb\"\n", 1, "several lines"),
            ("GRUB_CMDLINE_LINUX=\"ro\"\nGRUB_CMDLINE_LINUX=\"$GRUB_CMDLINE_LINUX x\"\n", 2, "expanded"),
            ("if true; then\nGRUB_CMDLINE_LINUX=a\nfi\n", 2, "compound"),
            ("true && GRUB_CMDLINE_LINUX=a\n", 1, "compound"),
            ("GRUB_CMDLINE_LINUX=a &\n", 1, "compound"),
            ("echo x | GRUB_CMDLINE_LINUX=a\n", 1, "compound"),
            ("(GRUB_CMDLINE_LINUX=a)\n", 1, "compound"),
            ("x=\"$(GRUB_CMDLINE_LINUX=a)\"\n", 1, "compound"),
            ("GRUB_CMDLINE_LINUX=a\nf() {\n  GRUB_CMDLINE_LINUX=b\n}\n", 3, "compound"),
            ("GRUB_CMDLINE_LINUX=a true\n", 1, "for one command"),
            (". /etc/default/grub.d/x.cfg\nGRUB_CMDLINE_LINUX=a\n", 1, "`.`"),
            ("eval \"$x\"\n", 1, "`eval`"),
            ("unset GRUB_CMDLINE_LINUX\n", 1, "cannot follow"),
            ("GRUB_CMDLINE_LINUX=\"ro\"\r\n", 1, "carriage return"),
            ("GRUB_CMDLINE_LINUX=\"a;b\"\n", 1, "grub would not read"),
            ("GRUB_CMDLINE_LINUX='$x'\n", 1, "grub expands"),
            ("cat <<EOF\nx\nEOF\n", 1, "here-document"),
            ("GRUB_CMDLINE_LINUX=\"open\n", 1, "unterminated"),
            ("GRUB_CMDLINE_LINUX=~/x\n", 1, "tilde"),
            ("export GRUB_CMDLINE_LINUX=a*\n", 1, "pathname"),
            ("fi\n", 1, "without what it opens"),
        ] {
            let e = refused(text);
            assert_eq!(e.line, line, "{text:?}: {e}");
            assert!(e.why.contains(needle), "{text:?}: {e}");
            assert!(!e.text.is_empty(), "{text:?}: {e}");
        }
    }

    #[test]
    fn bls_options_and_kernelopts() {
        let c = bls_cmdline("title x\noptions root=/dev/sda1 ro $tuned_params\n").unwrap();
        assert_eq!((c.line, c.texts()), (Some(2), vec!["root=/dev/sda1".to_string(), "ro".into(), "$tuned_params".into()]));
        assert_eq!(c.words[2].var.as_deref(), Some("tuned_params"));
        assert!(bls_cmdline("options $foo\n").unwrap_err().why.contains("does not know"));
        assert!(bls_cmdline("options a\noptions b\n").unwrap_err().why.contains("second"));
        assert!(bls_cmdline("options a \"b\n").is_err());
        assert_eq!(bls_cmdline("title x\n").unwrap().line, None);
        let e = grubenv_cmdline("# GRUB Environment Block\nkernelopts=root=/dev/sda1 ro \nsaved_entry=x\n####").unwrap();
        assert_eq!((e.line, e.texts()), (Some(2), vec!["root=/dev/sda1".to_string(), "ro".into()]));
        assert!(grubenv_cmdline("kernelopts=a\\ b\n").unwrap_err().why.contains("backslash"));
        assert!(grubenv_cmdline("kernelopts=$x\n").is_err());
        assert_eq!(grubenv_cmdline("saved_entry=x\n").unwrap_err().line, 0);
    }
}
