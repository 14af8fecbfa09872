//! The kernel BTF cut down to what the walk's CO-RE relocations look at, before aya sees it.
//!
//! aya parses every type of the BTF it is given (`/sys/kernel/btf/vmlinux`: 5.5 MB and
//! 126,000 types on 6.18) into owned structures: some 30 MB for one walk. The relocations
//! of our object name about twenty types; aya-obj (btf/relocation.rs) looks at the target
//! BTF only through:
//! - `find_candidates`: every type whose name less its `___flavor` and whose kind match a
//!   relocation's root type;
//! - `match_member`/`match_candidate`/`compute_field_relocation`: members, anonymous
//!   members, arrays, typedefs and modifiers reached from such a root, never through a
//!   pointer (`fields_are_compatible` answers true for any pointer, and a pointer's size is
//!   its own), enum variants;
//! - `types_are_compatible` (type-exists and type-size relocations): also through pointers,
//!   arrays and function prototypes;
//!
//! The kernel's own ID of the attach function (`bpf_iter_cgroup`, the program's
//! attach_btf_id) is found on the way and returned beside the blob: IDs in the blob are new.
//!
//! So the minimal BTF holds the roots and everything reachable from them except through
//! pointers to structs and unions outside that set, which point at a `BTF_KIND_FWD` of the
//! same name instead; kept types keep their order (candidates are tried in it). Relocation kinds
//! whose value is a target type ID would differ: such an object is refused
//! ([`MinError::Unsupported`]) and the caller uses the full BTF.
//!
//! The BTF is host input: every length and offset is checked (kernel
//! Documentation/bpf/btf.rst), errors name the byte offset, nothing panics.

use std::collections::HashMap;

const HEADER_LEN: usize = 24;
const MAGIC: u16 = 0xeb9f;
/// aya's MAX_RESOLVE_DEPTH: chains longer than this fail there too.
const MAX_DEPTH: usize = 32;

// BTF kinds (include/uapi/linux/btf.h).
const INT: u8 = 1;
const PTR: u8 = 2;
const ARRAY: u8 = 3;
const STRUCT: u8 = 4;
const UNION: u8 = 5;
const ENUM: u8 = 6;
const FWD: u8 = 7;
const TYPEDEF: u8 = 8;
const VOLATILE: u8 = 9;
const CONST: u8 = 10;
const RESTRICT: u8 = 11;
const FUNC: u8 = 12;
const FUNC_PROTO: u8 = 13;
const VAR: u8 = 14;
const DATASEC: u8 = 15;
const FLOAT: u8 = 16;
const DECL_TAG: u8 = 17;
const TYPE_TAG: u8 = 18;
const ENUM64: u8 = 19;

// bpf_core_relo_kind (include/uapi/linux/bpf.h).
const RELO_TYPE_ID_LOCAL: u32 = 6;
const RELO_TYPE_ID_TARGET: u32 = 7;
const RELO_TYPE_EXISTS: u32 = 8;
const RELO_TYPE_SIZE: u32 = 9;
const RELO_ENUMVAL_VALUE: u32 = 11;

/// Why a BTF blob or the object could not be cut down.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MinError {
    /// The bytes are not well-formed BTF (or ELF): what is wrong and at which byte.
    #[error("{what} at byte {offset}")]
    Malformed { offset: usize, what: String },
    /// Well-formed, but the minimal BTF would not relocate the object as the full one does.
    #[error("{0}")]
    Unsupported(String),
}

fn bad(offset: usize, what: impl Into<String>) -> MinError {
    MinError::Malformed { offset, what: what.into() }
}

/// A relocation's root type, as the target's candidates are chosen: flavorless name and kind.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Root {
    pub name: Vec<u8>,
    pub kind: u8,
    /// A type-exists or type-size relocation: compared through pointers too.
    pub through_pointers: bool,
}

/// What an object's relocations need of the kernel's BTF.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Needs {
    pub roots: Vec<Root>,
}

/// The minimal BTF and what the scan found on the way.
#[derive(Debug)]
pub struct Minimal {
    /// A BTF blob (little-endian, as the host's) for aya's `Btf::parse`.
    pub blob: Vec<u8>,
    /// The kernel's ID of the attach function (not in `blob`); None: the BTF has no such FUNC.
    pub attach_id: Option<u32>,
    /// Per name of `also_funcs`: is there a FUNC of that name.
    pub found: Vec<bool>,
    /// Types of the full BTF, and those kept (forward declarations not counted).
    pub total_types: u32,
    pub kept_types: u32,
    pub forwards: u32,
}

/// A parsed view of BTF bytes: the types' start offsets and the string section.
struct View<'a> {
    types: &'a [u8],
    types_at: usize,
    strings: &'a [u8],
    strings_at: usize,
    /// starts[id - 1]: offset of type `id` in `types`.
    starts: Vec<u32>,
}

fn u32_at(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(b.get(at..at.checked_add(4)?)?.try_into().ok()?))
}

/// Bytes after the 12-byte common header of a type of this kind.
fn extra_len(kind: u8, vlen: usize) -> Option<usize> {
    Some(match kind {
        INT | VAR | DECL_TAG => 4,
        ARRAY => 12,
        STRUCT | UNION | DATASEC | ENUM64 => 12 * vlen,
        ENUM | FUNC_PROTO => 8 * vlen,
        PTR | FWD | TYPEDEF | VOLATILE | CONST | RESTRICT | FUNC | FLOAT | TYPE_TAG => 0,
        _ => return None,
    })
}

impl<'a> View<'a> {
    fn parse(btf: &'a [u8]) -> Result<View<'a>, MinError> {
        if btf.len() < HEADER_LEN {
            return Err(bad(btf.len(), format!("BTF shorter than its {HEADER_LEN}-byte header")));
        }
        let magic = u16::from_le_bytes([btf[0], btf[1]]);
        if magic != MAGIC {
            return Err(bad(0, format!("not little-endian BTF (magic {magic:#06x}, want {MAGIC:#06x})")));
        }
        let word = |at: usize| u32_at(btf, at).unwrap_or(0) as usize;
        let (hdr_len, type_off, type_len, str_off, str_len) = (word(4), word(8), word(12), word(16), word(20));
        if hdr_len < HEADER_LEN || hdr_len > btf.len() {
            return Err(bad(4, format!("header length {hdr_len} outside {HEADER_LEN}..={}", btf.len())));
        }
        let section = |at_field: usize, off: usize, len: usize, name: &str| -> Result<(usize, &'a [u8]), MinError> {
            let start = hdr_len.checked_add(off).filter(|s| *s <= btf.len());
            let end = start.and_then(|s| s.checked_add(len)).filter(|e| *e <= btf.len());
            match (start, end) {
                (Some(s), Some(e)) => Ok((s, &btf[s..e])),
                _ => Err(bad(at_field, format!("{name} section ({off}+{len} after the header) runs past the end ({} bytes)", btf.len()))),
            }
        };
        let (types_at, types) = section(8, type_off, type_len, "type")?;
        let (strings_at, strings) = section(16, str_off, str_len, "string")?;
        if strings.first().is_some_and(|c| *c != 0) {
            return Err(bad(strings_at, "string section does not start with the empty string"));
        }
        if strings.last().is_some_and(|c| *c != 0) {
            return Err(bad(strings_at + strings.len() - 1, "string without its NUL at the end of the string section"));
        }
        let mut starts = Vec::new();
        let mut at = 0usize;
        while at < types.len() {
            let info = u32_at(types, at + 4).filter(|_| at + 12 <= types.len()).ok_or_else(|| bad(types_at + at, "type cut short"))?;
            // Every type's name in the string section (which ends with a NUL): so a name
            // compared in place ([`View::name_is`]) is a whole string.
            let name = u32_at(types, at).unwrap_or(0) as usize;
            if name >= strings.len() && !(name == 0 && strings.is_empty()) {
                return Err(bad(strings_at, format!("string offset {name} outside the {}-byte string section", strings.len())));
            }
            let kind = ((info >> 24) & 0x1f) as u8;
            let extra = extra_len(kind, (info & 0xffff) as usize).ok_or_else(|| bad(types_at + at, format!("unknown type kind {kind}")))?;
            let next = at + 12 + extra;
            if next > types.len() {
                return Err(bad(types_at + at, format!("type of kind {kind} needs {} bytes, {} left", 12 + extra, types.len() - at)));
            }
            if starts.len() >= u32::MAX as usize - 1 {
                return Err(bad(types_at + at, "too many types"));
            }
            starts.push(at as u32);
            at = next;
        }
        Ok(View { types, types_at, strings, strings_at, starts })
    }

    fn count(&self) -> u32 {
        self.starts.len() as u32
    }

    /// Offset of type `id` (1-based) in `types`.
    fn at(&self, id: u32) -> usize {
        self.starts[id as usize - 1] as usize
    }

    fn kind(&self, id: u32) -> u8 {
        ((u32_at(self.types, self.at(id) + 4).unwrap_or(0) >> 24) & 0x1f) as u8
    }

    fn kind_of(&self, id: u32) -> Option<u8> {
        (id != 0 && id <= self.count()).then(|| self.kind(id))
    }

    fn vlen(&self, id: u32) -> usize {
        (u32_at(self.types, self.at(id) + 4).unwrap_or(0) & 0xffff) as usize
    }

    /// Word `n` of type `id` (0 name, 1 info, 2 size/type, 3.. the rest): in bounds by parse.
    fn word(&self, id: u32, n: usize) -> u32 {
        u32_at(self.types, self.at(id) + 4 * n).unwrap_or(0)
    }

    fn string(&self, off: u32) -> Result<&'a [u8], MinError> {
        let s = self.strings.get(off as usize..).filter(|_| (off as usize) < self.strings.len());
        let s = s.ok_or_else(|| bad(self.strings_at, format!("string offset {off} outside the {}-byte string section", self.strings.len())))?;
        let end = s.iter().position(|c| *c == 0).ok_or_else(|| bad(self.strings_at + off as usize, "string without its NUL"))?;
        Ok(&s[..end])
    }

    /// Whether the string at `off` is `want` (false when `off` is outside the section).
    fn name_is(&self, off: u32, want: &[u8]) -> bool {
        let s = self.strings.get(off as usize..).unwrap_or_default();
        s.starts_with(want) && s.get(want.len()) == Some(&0)
    }

    /// Whether the string at `off`, less its `___flavor` ([`flavorless`]), is `want`.
    fn flavorless_name_is(&self, off: u32, want: &[u8]) -> bool {
        let s = self.strings.get(off as usize..).unwrap_or_default();
        if !s.starts_with(want) {
            return false;
        }
        let rest = &s[want.len()..];
        match rest.first() {
            Some(0) => true,
            // A longer name with `want` at its head: the whole name less its flavor.
            Some(_) => {
                let end = rest.iter().position(|c| *c == 0).unwrap_or(rest.len());
                let name = &s[..want.len() + end];
                flavorless(name) == want
            }
            None => false,
        }
    }

    fn name(&self, id: u32) -> Result<&'a [u8], MinError> {
        self.string(self.word(id, 0))
    }

    /// The type IDs type `id` refers to, each checked to exist.
    fn refs(&self, id: u32, out: &mut Vec<u32>) -> Result<(), MinError> {
        out.clear();
        match self.kind(id) {
            PTR | TYPEDEF | VOLATILE | CONST | RESTRICT | TYPE_TAG | FUNC | VAR | DECL_TAG => out.push(self.word(id, 2)),
            ARRAY => out.extend([self.word(id, 3), self.word(id, 4)]),
            STRUCT | UNION => out.extend((0..self.vlen(id)).map(|i| self.word(id, 3 + 3 * i + 1))),
            FUNC_PROTO => {
                out.push(self.word(id, 2));
                out.extend((0..self.vlen(id)).map(|i| self.word(id, 3 + 2 * i + 1)));
            }
            DATASEC => out.extend((0..self.vlen(id)).map(|i| self.word(id, 3 + 3 * i))),
            _ => {}
        }
        if let Some(r) = out.iter().find(|r| **r > self.count()) {
            return Err(bad(self.types_at + self.at(id), format!("type {id} refers to type {r}, past the last ({})", self.count())));
        }
        Ok(())
    }

    /// Through typedefs, modifiers and type tags, as aya's resolve_type.
    fn resolve(&self, mut id: u32) -> u32 {
        for _ in 0..MAX_DEPTH {
            if id == 0 || id > self.count() || !matches!(self.kind(id), TYPEDEF | VOLATILE | CONST | RESTRICT | TYPE_TAG) {
                return id;
            }
            id = self.word(id, 2);
        }
        id
    }
}

fn flavorless(name: &[u8]) -> &[u8] {
    name.windows(3).position(|w| w == b"___").map_or(name, |i| &name[..i])
}

/// Would aya's find_candidates offer a target type of `kind` for a local root of `root`'s kind?
fn kind_matches(root: u8, kind: u8) -> bool {
    root == kind || (matches!(root, ENUM | ENUM64 | UNION) && kind == ENUM64) || (matches!(root, ENUM | ENUM64) && kind == ENUM)
}

/// The roots of a BPF object's CO-RE relocations (its `.BTF` and `.BTF.ext` sections).
pub fn object_needs(object: &[u8]) -> Result<Needs, MinError> {
    let btf = elf_section(object, b".BTF")?.ok_or_else(|| MinError::Unsupported("the object has no .BTF section".into()))?;
    let Some(ext) = elf_section(object, b".BTF.ext")? else { return Ok(Needs::default()) };
    let local = View::parse(btf)?;
    let hdr_len = u32_at(ext, 4).ok_or_else(|| bad(0, ".BTF.ext shorter than its header"))? as usize;
    if u16::from_le_bytes([ext[0], ext[1]]) != MAGIC {
        return Err(bad(0, ".BTF.ext magic"));
    }
    if hdr_len < 32 {
        return Ok(Needs::default());
    }
    let (relo_off, relo_len) = (u32_at(ext, 24).unwrap_or(0) as usize, u32_at(ext, 28).unwrap_or(0) as usize);
    let relos = hdr_len
        .checked_add(relo_off)
        .and_then(|s| Some((s, s.checked_add(relo_len)?)))
        .and_then(|(s, e)| ext.get(s..e))
        .ok_or_else(|| bad(24, ".BTF.ext CO-RE relocations run past the section"))?;
    if relos.is_empty() {
        return Ok(Needs::default());
    }
    let rec = u32_at(relos, 0).ok_or_else(|| bad(hdr_len + relo_off, "CO-RE record size cut short"))? as usize;
    if rec < 16 {
        return Err(bad(hdr_len + relo_off, format!("CO-RE record size {rec} below 16")));
    }
    let mut needs = Needs::default();
    let mut at = 4;
    while at < relos.len() {
        let n = u32_at(relos, at + 4).ok_or_else(|| bad(hdr_len + relo_off + at, "CO-RE section header cut short"))? as usize;
        at += 8;
        for _ in 0..n {
            let r = relos.get(at..at.saturating_add(rec)).ok_or_else(|| bad(hdr_len + relo_off + at, "CO-RE record cut short"))?;
            let (type_id, kind) = (u32_at(r, 4).unwrap_or(0), u32_at(r, 12).unwrap_or(0));
            at += rec;
            match kind {
                RELO_TYPE_ID_LOCAL => continue,
                0..=5 | RELO_TYPE_EXISTS | RELO_TYPE_SIZE | 10 | RELO_ENUMVAL_VALUE => {}
                RELO_TYPE_ID_TARGET => return Err(MinError::Unsupported("a relocation takes a kernel type ID: the minimal BTF renumbers them".into())),
                k => return Err(MinError::Unsupported(format!("CO-RE relocation kind {k}"))),
            }
            if type_id == 0 || type_id > local.count() {
                return Err(bad(hdr_len + relo_off + at - rec, format!("CO-RE relocation on local type {type_id}, past the last")));
            }
            let root = Root { name: flavorless(local.name(type_id)?).to_vec(), kind: local.kind(type_id), through_pointers: matches!(kind, RELO_TYPE_EXISTS | RELO_TYPE_SIZE) };
            match needs.roots.iter_mut().find(|r| r.name == root.name && r.kind == root.kind) {
                Some(r) => r.through_pointers |= root.through_pointers,
                None => needs.roots.push(root),
            }
        }
    }
    Ok(needs)
}

/// A section of a little-endian ELF64 file by name.
fn elf_section<'a>(elf: &'a [u8], want: &[u8]) -> Result<Option<&'a [u8]>, MinError> {
    if elf.get(..6) != Some(b"\x7fELF\x02\x01".as_slice()) {
        return Err(bad(0, "not a little-endian ELF64 object"));
    }
    let u64_at = |at: usize| elf.get(at..at.saturating_add(8)).map(|b| u64::from_le_bytes(b.try_into().unwrap_or_default()) as usize);
    let u16_at = |at: usize| elf.get(at..at + 2).map(|b| u16::from_le_bytes([b[0], b[1]]) as usize);
    let (shoff, shentsize, shnum, shstrndx) = match (u64_at(0x28), u16_at(0x3a), u16_at(0x3c), u16_at(0x3e)) {
        (Some(a), Some(b), Some(c), Some(d)) if b >= 64 => (a, b, c, d),
        _ => return Err(bad(0x28, "ELF header cut short")),
    };
    let section = |i: usize| -> Result<(u32, &'a [u8]), MinError> {
        let h = shoff.saturating_add(i.saturating_mul(shentsize));
        let (name, off, size) = match (u32_at(elf, h), u64_at(h.saturating_add(24)), u64_at(h.saturating_add(32))) {
            (Some(n), Some(o), Some(s)) => (n, o, s),
            _ => return Err(bad(h, "section header cut short")),
        };
        let body = off.checked_add(size).and_then(|e| elf.get(off..e)).ok_or_else(|| bad(h, "section runs past the file"))?;
        Ok((name, body))
    };
    let (_, names) = section(shstrndx)?;
    for i in 0..shnum {
        let (name, body) = section(i)?;
        let n = names.get(name as usize..).unwrap_or_default();
        if n.split(|c| *c == 0).next() == Some(want) {
            return Ok(Some(body));
        }
    }
    Ok(None)
}

const IN: u8 = 1;
/// A pointer whose pointee is kept (reached on a type-exists/size path).
const KEEP: u8 = 2;

/// Cut `btf` down to what `needs` looks at; the kernel ID of the FUNC `attach`, and whether
/// there are FUNCs named `also_funcs`, on the way.
pub fn minimize(btf: &[u8], needs: &Needs, attach: &str, also_funcs: &[&str]) -> Result<Minimal, MinError> {
    let v = View::parse(btf)?;
    let n = v.count();
    let mut state = vec![0u8; n as usize + 1];
    let mut work: Vec<u32> = Vec::new();
    let mut attach_id = None;
    let mut found = vec![false; also_funcs.len()];
    let mut path_roots = Vec::new();
    // The one pass over every type (126,000 on 6.18) compares names in place: no string of
    // a type whose kind no root and no FUNC wanted is looked at.
    for id in 1..=n {
        let kind = v.kind(id);
        if kind == FUNC {
            let off = v.word(id, 0);
            if attach_id.is_none() && v.name_is(off, attach.as_bytes()) {
                attach_id = Some(id);
            }
            for (f, want) in found.iter_mut().zip(also_funcs) {
                *f = *f || v.name_is(off, want.as_bytes());
            }
        }
        for root in &needs.roots {
            if kind_matches(root.kind, kind) && v.flavorless_name_is(v.word(id, 0), &root.name) {
                state[id as usize] |= IN;
                work.push(id);
                if root.through_pointers {
                    path_roots.push(id);
                }
            }
        }
    }
    let mut refs = Vec::new();
    let include = |id: u32, state: &mut [u8], work: &mut Vec<u32>| {
        if id != 0 && state[id as usize] & IN == 0 {
            state[id as usize] |= IN;
            work.push(id);
        }
    };
    // Type-exists/size: aya's types_are_compatible walks pointers, arrays and prototypes.
    let mut stack: Vec<(u32, usize)> = path_roots.into_iter().map(|id| (id, 0)).collect();
    while let Some((mut id, depth)) = stack.pop() {
        for _ in 0..MAX_DEPTH {
            if id == 0 {
                break;
            }
            include(id, &mut state, &mut work);
            match v.kind(id) {
                TYPEDEF | VOLATILE | CONST | RESTRICT | TYPE_TAG => id = v.word(id, 2),
                PTR => {
                    state[id as usize] |= KEEP;
                    id = v.word(id, 2);
                }
                ARRAY => id = v.word(id, 3),
                FUNC_PROTO => {
                    v.refs(id, &mut refs)?;
                    if depth < MAX_DEPTH {
                        stack.extend(refs[1..].iter().map(|p| (*p, depth + 1)));
                    }
                    id = refs[0];
                }
                _ => break,
            }
            if id > n {
                return Err(bad(v.types_at, format!("type refers to type {id}, past the last ({n})")));
            }
        }
    }
    // Everything reachable, but not through pointers to composites outside the set.
    while let Some(id) = work.pop() {
        v.refs(id, &mut refs)?;
        if v.kind(id) == PTR && state[id as usize] & KEEP == 0 && matches!(v.kind_of(v.resolve(refs[0])), Some(STRUCT | UNION)) {
            continue;
        }
        for r in &refs {
            include(*r, &mut state, &mut work);
        }
    }
    // New IDs: kept types in their order, then the forward declarations.
    let kept: Vec<u32> = (1..=n).filter(|id| state[*id as usize] & IN != 0).collect();
    drop(state);
    let new_id = |old: u32| -> Option<u32> { if old == 0 { Some(0) } else { kept.binary_search(&old).ok().map(|i| i as u32 + 1) } };
    let mut out = Strings::default();
    // (name, union): named when written, after the kept types, so that a minimal BTF's
    // strings come in its types' order and minimizing it again changes nothing.
    let mut fwds: Vec<(&[u8], bool)> = Vec::new();
    let mut types: Vec<u8> = Vec::new();
    let put = |b: &mut Vec<u8>, w: u32| b.extend_from_slice(&w.to_le_bytes());
    for &id in &kept {
        let kind = v.kind(id);
        let vlen = v.vlen(id);
        put(&mut types, out.add(v.name(id)?));
        put(&mut types, v.word(id, 1));
        let remap = |t: u32| new_id(t).ok_or_else(|| bad(v.types_at + v.at(id), format!("type {id} refers to type {t}, which was not kept")));
        match kind {
            PTR => {
                let to = v.word(id, 2);
                let target = match new_id(to) {
                    Some(t) => t,
                    None => {
                        // A composite outside the set: its forward declaration (void if anonymous).
                        let c = v.resolve(to);
                        let name = if c == 0 || c > n { b"".as_slice() } else { v.name(c)? };
                        if name.is_empty() {
                            0
                        } else {
                            let key = (name, v.kind(c) == UNION);
                            let at = fwds.iter().position(|f| *f == key).unwrap_or_else(|| {
                                fwds.push(key);
                                fwds.len() - 1
                            });
                            (kept.len() + 1 + at) as u32
                        }
                    }
                };
                put(&mut types, target);
            }
            TYPEDEF | VOLATILE | CONST | RESTRICT | TYPE_TAG | FUNC | VAR | DECL_TAG => {
                put(&mut types, remap(v.word(id, 2))?);
                if matches!(kind, VAR | DECL_TAG) {
                    put(&mut types, v.word(id, 3));
                }
            }
            ARRAY => {
                put(&mut types, v.word(id, 2));
                put(&mut types, remap(v.word(id, 3))?);
                put(&mut types, remap(v.word(id, 4))?);
                put(&mut types, v.word(id, 5));
            }
            STRUCT | UNION => {
                put(&mut types, v.word(id, 2));
                for i in 0..vlen {
                    put(&mut types, out.add(v.string(v.word(id, 3 + 3 * i))?));
                    put(&mut types, remap(v.word(id, 4 + 3 * i))?);
                    put(&mut types, v.word(id, 5 + 3 * i));
                }
            }
            ENUM => {
                put(&mut types, v.word(id, 2));
                for i in 0..vlen {
                    put(&mut types, out.add(v.string(v.word(id, 3 + 2 * i))?));
                    put(&mut types, v.word(id, 4 + 2 * i));
                }
            }
            ENUM64 => {
                put(&mut types, v.word(id, 2));
                for i in 0..vlen {
                    put(&mut types, out.add(v.string(v.word(id, 3 + 3 * i))?));
                    put(&mut types, v.word(id, 4 + 3 * i));
                    put(&mut types, v.word(id, 5 + 3 * i));
                }
            }
            FUNC_PROTO => {
                put(&mut types, remap(v.word(id, 2))?);
                for i in 0..vlen {
                    put(&mut types, out.add(v.string(v.word(id, 3 + 2 * i))?));
                    put(&mut types, remap(v.word(id, 4 + 2 * i))?);
                }
            }
            DATASEC => {
                put(&mut types, v.word(id, 2));
                for i in 0..vlen {
                    put(&mut types, remap(v.word(id, 3 + 3 * i))?);
                    put(&mut types, v.word(id, 4 + 3 * i));
                    put(&mut types, v.word(id, 5 + 3 * i));
                }
            }
            INT => {
                put(&mut types, v.word(id, 2));
                put(&mut types, v.word(id, 3));
            }
            _ => put(&mut types, v.word(id, 2)), // FWD, FLOAT: size or 0
        }
    }
    for (name, union) in &fwds {
        put(&mut types, out.add(name));
        put(&mut types, (u32::from(FWD) << 24) | (u32::from(*union) << 31));
        put(&mut types, 0);
    }
    let mut blob = Vec::with_capacity(HEADER_LEN + types.len() + out.bytes.len());
    blob.extend_from_slice(&MAGIC.to_le_bytes());
    blob.extend_from_slice(&[1, 0]);
    for w in [HEADER_LEN as u32, 0, types.len() as u32, types.len() as u32, out.bytes.len() as u32] {
        put(&mut blob, w);
    }
    blob.extend_from_slice(&types);
    blob.extend_from_slice(&out.bytes);
    Ok(Minimal { blob, attach_id, found, total_types: n, kept_types: kept.len() as u32, forwards: fwds.len() as u32 })
}

/// The new string section: each name once.
struct Strings {
    bytes: Vec<u8>,
    at: HashMap<Vec<u8>, u32>,
}

impl Default for Strings {
    fn default() -> Strings {
        Strings { bytes: vec![0], at: HashMap::new() }
    }
}

impl Strings {
    fn add(&mut self, s: &[u8]) -> u32 {
        if s.is_empty() {
            return 0;
        }
        if let Some(at) = self.at.get(s) {
            return *at;
        }
        let at = self.bytes.len() as u32;
        self.bytes.extend_from_slice(s);
        self.bytes.push(0);
        self.at.insert(s.to_vec(), at);
        at
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A BTF blob built by hand: types as (kind, name, info vlen/kflag, size-or-type, tail words).
    #[derive(Default)]
    struct Builder {
        types: Vec<u8>,
        strings: Vec<u8>,
    }

    impl Builder {
        fn new() -> Builder {
            Builder { types: Vec::new(), strings: vec![0] }
        }
        fn s(&mut self, name: &str) -> u32 {
            if name.is_empty() {
                return 0;
            }
            let at = self.strings.len() as u32;
            self.strings.extend_from_slice(name.as_bytes());
            self.strings.push(0);
            at
        }
        fn raw(&mut self, name: &str, kind: u8, vlen: u32, third: u32, tail: &[u32]) {
            let n = self.s(name);
            for w in [n, (u32::from(kind) << 24) | vlen, third].iter().chain(tail) {
                self.types.extend_from_slice(&w.to_le_bytes());
            }
        }
        fn int(&mut self, name: &str) {
            self.raw(name, INT, 0, 4, &[32]);
        }
        fn ptr(&mut self, to: u32) {
            self.raw("", PTR, 0, to, &[]);
        }
        fn composite(&mut self, kind: u8, name: &str, members: &[(&str, u32)]) {
            let mut tail = Vec::new();
            for (i, (m, t)) in members.iter().enumerate() {
                tail.extend([self.s(m), *t, 64 * i as u32]);
            }
            self.raw(name, kind, members.len() as u32, 8 * members.len() as u32, &tail);
        }
        fn blob(&self) -> Vec<u8> {
            let mut b = Vec::new();
            b.extend_from_slice(&MAGIC.to_le_bytes());
            b.extend_from_slice(&[1, 0]);
            for w in [24u32, 0, self.types.len() as u32, self.types.len() as u32, self.strings.len() as u32] {
                b.extend_from_slice(&w.to_le_bytes());
            }
            b.extend_from_slice(&self.types);
            b.extend_from_slice(&self.strings);
            b
        }
    }

    /// 1 int; 2 struct foo {a, next: *bar, anon union {x, arr[4]}}; 3 *bar; 4 the union;
    /// 5 int[4]; 6 struct bar {b, back: *foo}; 7 *foo; 8 struct unrelated; 9 typedef foo_t;
    /// 10 struct foo___v2 {a}; 11 FUNC bpf_iter_cgroup; 12 its prototype; 13 FUNC bpf_loop;
    /// 14 enum e {A}; 15 typedef bar_p (*bar).
    fn sample() -> Vec<u8> {
        let mut b = Builder::new();
        b.int("int");
        b.composite(STRUCT, "foo", &[("a", 1), ("next", 3), ("", 4)]);
        b.ptr(6);
        b.composite(UNION, "", &[("x", 1), ("arr", 5)]);
        b.raw("", ARRAY, 0, 0, &[1, 1, 4]);
        b.composite(STRUCT, "bar", &[("b", 1), ("back", 7)]);
        b.ptr(2);
        b.composite(STRUCT, "unrelated", &[("q", 1)]);
        b.raw("foo_t", TYPEDEF, 0, 2, &[]);
        b.composite(STRUCT, "foo___v2", &[("a", 1)]);
        b.raw("bpf_iter_cgroup", FUNC, 1, 12, &[]);
        b.raw("", FUNC_PROTO, 0, 1, &[]);
        b.raw("bpf_loop", FUNC, 1, 12, &[]);
        let e = b.s("A");
        b.raw("e", ENUM, 1, 4, &[e, 1]);
        b.raw("bar_p", TYPEDEF, 0, 3, &[]);
        b.blob()
    }

    /// (kind, name) of every type of a blob, and the types its pointers point at.
    fn listing(blob: &[u8]) -> Vec<(u8, String, Option<u32>)> {
        let v = View::parse(blob).expect("the minimal BTF parses");
        (1..=v.count())
            .map(|id| (v.kind(id), String::from_utf8_lossy(v.name(id).unwrap()).into_owned(), (v.kind(id) == PTR).then(|| v.word(id, 2))))
            .collect()
    }

    fn root(name: &str, kind: u8, through_pointers: bool) -> Needs {
        Needs { roots: vec![Root { name: name.into(), kind, through_pointers }] }
    }

    #[test]
    fn keeps_the_roots_their_members_and_forward_declares_what_pointers_reach() {
        let m = minimize(&sample(), &root("foo", STRUCT, false), "bpf_iter_cgroup", &["bpf_loop", "bpf_nothing"]).unwrap();
        assert_eq!(m.attach_id, Some(11));
        assert_eq!(m.found, vec![true, false]);
        assert_eq!((m.total_types, m.kept_types, m.forwards), (15, 6, 1));
        let want: Vec<(u8, String, Option<u32>)> = vec![
            (INT, "int".into(), None),
            (STRUCT, "foo".into(), None),
            (PTR, "".into(), Some(7)), // *bar -> the forward declaration of bar
            (UNION, "".into(), None),
            (ARRAY, "".into(), None),
            (STRUCT, "foo___v2".into(), None), // a flavor of foo is a candidate too
            (FWD, "bar".into(), None),
        ];
        assert_eq!(listing(&m.blob), want);
        // Members keep their names, types (renumbered) and offsets.
        let v = View::parse(&m.blob).unwrap();
        let members: Vec<(String, u32, u32)> =
            (0..v.vlen(2)).map(|i| (String::from_utf8_lossy(v.string(v.word(2, 3 + 3 * i)).unwrap()).into_owned(), v.word(2, 4 + 3 * i), v.word(2, 5 + 3 * i))).collect();
        assert_eq!(members, vec![("a".into(), 1, 0), ("next".into(), 3, 64), ("".into(), 4, 128)]);
        assert_eq!((v.word(5, 3), v.word(5, 4), v.word(5, 5)), (1, 1, 4), "array element, index and length");
        // Minimizing it again changes nothing; aya reads it.
        let again = minimize(&m.blob, &root("foo", STRUCT, false), "bpf_iter_cgroup", &[]).unwrap();
        assert_eq!(again.blob, m.blob);
        aya::Btf::parse(&m.blob, aya::Endianness::default()).expect("aya parses the minimal BTF");
    }

    #[test]
    fn type_relocations_keep_what_pointers_reach() {
        // A field relocation on bar_p never looks past the pointer: bar is forward declared.
        let m = minimize(&sample(), &root("bar_p", TYPEDEF, false), "bpf_iter_cgroup", &[]).unwrap();
        assert_eq!(listing(&m.blob), vec![(PTR, "".into(), Some(3)), (TYPEDEF, "bar_p".into(), None), (FWD, "bar".into(), None)]);
        // A type-exists/size relocation compares through the pointer (aya's
        // types_are_compatible): bar is kept whole; its own pointer to foo is forward declared.
        let m = minimize(&sample(), &root("bar_p", TYPEDEF, true), "bpf_iter_cgroup", &[]).unwrap();
        assert_eq!(
            listing(&m.blob),
            vec![
                (INT, "int".into(), None),
                (PTR, "".into(), Some(3)),
                (STRUCT, "bar".into(), None),
                (PTR, "".into(), Some(6)),
                (TYPEDEF, "bar_p".into(), None),
                (FWD, "foo".into(), None),
            ]
        );
    }

    #[test]
    fn enums_and_unmatched_roots() {
        let m = minimize(&sample(), &root("e", ENUM, false), "bpf_iter_cgroup", &[]).unwrap();
        assert_eq!(listing(&m.blob), vec![(ENUM, "e".into(), None)]);
        let v = View::parse(&m.blob).unwrap();
        assert_eq!((v.string(v.word(1, 3)).unwrap(), v.word(1, 4)), (b"A".as_slice(), 1));
        // A root of another kind matches nothing: foo_t is a typedef, not a struct.
        let m = minimize(&sample(), &root("foo_t", STRUCT, false), "bpf_iter_cgroup", &[]).unwrap();
        assert_eq!(m.kept_types, 0);
        // A typedef root brings what it names.
        let m = minimize(&sample(), &root("foo_t", TYPEDEF, false), "bpf_iter_x", &[]).unwrap();
        assert_eq!(m.attach_id, None);
        let l = listing(&m.blob);
        assert!(l.contains(&(TYPEDEF, "foo_t".into(), None)) && l.contains(&(STRUCT, "foo".into(), None)), "{l:?}");
    }

    fn malformed(blob: &[u8]) -> (usize, String) {
        match minimize(blob, &root("foo", STRUCT, false), "bpf_iter_cgroup", &[]) {
            Err(MinError::Malformed { offset, what }) => (offset, what),
            other => panic!("not refused: {other:?}"),
        }
    }

    #[test]
    fn malformed_blobs_are_refused_with_their_offset() {
        let good = sample();
        let (off, what) = malformed(&good[..10]);
        assert_eq!(off, 10);
        assert!(what.contains("header"), "{what}");
        let mut b = good.clone();
        b[0] = 0xeb;
        b[1] = 0x9f;
        assert_eq!(malformed(&b).0, 0, "big-endian magic");
        let mut b = good.clone();
        b[12..16].copy_from_slice(&(good.len() as u32).to_le_bytes());
        let (off, what) = malformed(&b);
        assert_eq!(off, 8);
        assert!(what.contains("type section"), "{what}");
        let mut b = good.clone();
        b[20..24].copy_from_slice(&u32::MAX.to_le_bytes());
        assert_eq!(malformed(&b).0, 16, "string section past the end");
        // Type 2 (foo) starts at 24 + 16 (the int): its kind set to 25.
        let mut b = good.clone();
        b[24 + 16 + 7] = 25;
        let (off, what) = malformed(&b);
        assert_eq!(off, 40);
        assert!(what.contains("kind 25"), "{what}");
        // foo's vlen raised past the type section.
        let mut b = good.clone();
        b[24 + 16 + 4] = 0xff;
        let (off, what) = malformed(&b);
        assert_eq!(off, 40);
        assert!(what.contains("needs"), "{what}");
        // foo's first member refers to type 99.
        let mut b = good.clone();
        b[40 + 16..40 + 20].copy_from_slice(&99u32.to_le_bytes());
        let (off, what) = malformed(&b);
        assert_eq!(off, 40);
        assert!(what.contains("type 99"), "{what}");
        // foo's name past the strings.
        let mut b = good.clone();
        b[40..44].copy_from_slice(&5000u32.to_le_bytes());
        let (off, what) = malformed(&b);
        let strings_at = 24 + u32::from_le_bytes(good[16..20].try_into().unwrap()) as usize;
        assert_eq!(off, strings_at);
        assert!(what.contains("string offset 5000"), "{what}");
        // The last string without its NUL.
        let mut b = good.clone();
        *b.last_mut().unwrap() = b'x';
        let (off, what) = malformed(&b);
        assert_eq!(off, good.len() - 1);
        assert!(what.contains("without its NUL"), "{what}");
    }

    #[test]
    fn cut_or_corrupted_blobs_never_panic() {
        let good = sample();
        let needs = Needs { roots: vec![Root { name: b"foo".to_vec(), kind: STRUCT, through_pointers: true }, Root { name: b"e".to_vec(), kind: ENUM, through_pointers: false }] };
        for len in 0..good.len() {
            let _ = minimize(&good[..len], &needs, "bpf_iter_cgroup", &["bpf_loop"]);
        }
        for at in 0..good.len() {
            for v in [0u8, 1, 0x7f, 0xff] {
                let mut b = good.clone();
                b[at] = v;
                if let Ok(m) = minimize(&b, &needs, "bpf_iter_cgroup", &["bpf_loop"]) {
                    View::parse(&m.blob).expect("what the minimizer writes parses");
                }
            }
        }
    }

    #[test]
    fn the_objects_relocations_name_the_kernel_types_it_reads() {
        let needs = object_needs(crate::loader::OBJECT).expect("the embedded object's relocations read");
        let has = |name: &str, kind: u8| needs.roots.iter().any(|r| r.name == name.as_bytes() && r.kind == kind);
        for s in ["cgroup_subsys_state", "mem_cgroup", "mem_cgroup_per_node", "cgroup", "kernfs_node"] {
            assert!(has(s, STRUCT), "{s} in {needs:?}");
        }
        assert!(has("cgroup_subsys_id", ENUM) && has("lru_list", ENUM), "{needs:?}");
        assert!(needs.roots.iter().all(|r| !r.name.windows(3).any(|w| w == b"___")), "flavors stripped: {needs:?}");
        assert!(matches!(elf_section(b"not an ELF", b".BTF"), Err(MinError::Malformed { offset: 0, .. })));
        assert!(object_needs(&crate::loader::OBJECT[..100]).is_err());
    }

    #[test]
    fn flavors_are_cut_at_the_first_triple_underscore() {
        assert_eq!(flavorless(b"task_struct___old"), b"task_struct");
        assert_eq!(flavorless(b"a___b___c"), b"a");
        assert_eq!(flavorless(b"plain"), b"plain");
    }
}
