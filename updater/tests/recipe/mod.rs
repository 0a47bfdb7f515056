//! The little language of the hostile-input corpus (`tests/data/hostile/README.md`):
//! tokens, numbers, byte expressions, and the builders that turn a case's recipe into
//! an update file, a tarball or an OCI image layout. Test code: a recipe that does not parse panics, naming
//! the line.

pub mod oci;
pub mod tar;
pub mod update;

/// Splits a line into tokens at whitespace outside double quotes; `#` at the start of a
/// token ends the line.
pub fn tokens(line: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let (mut quoted, mut escaped) = (false, false);
    for c in line.chars() {
        if quoted {
            cur.push(c);
            if escaped {
                escaped = false;
            } else if c == '\\' {
                escaped = true;
            } else if c == '"' {
                quoted = false;
            }
            continue;
        }
        match c {
            '"' => {
                quoted = true;
                cur.push(c);
            }
            '#' if cur.is_empty() => break,
            c if c.is_whitespace() => {
                if !cur.is_empty() {
                    out.push(std::mem::take(&mut cur));
                }
            }
            c => cur.push(c),
        }
    }
    assert!(!quoted, "unterminated string in {line:?}");
    if !cur.is_empty() {
        out.push(cur);
    }
    out
}

/// A number: decimal, `0x…`, `0o…`, with an optional `K`/`M`/`G`/`T` (binary) suffix;
/// `max` is `u64::MAX`; `-N` is `N` negated in two's complement (what a reader that took
/// the field as signed would see as negative).
pub fn num(s: &str) -> u64 {
    if s == "max" {
        return u64::MAX;
    }
    if let Some(rest) = s.strip_prefix('-') {
        return num(rest).wrapping_neg();
    }
    let (digits, shift) = match s.as_bytes().last() {
        Some(b'K') => (&s[..s.len() - 1], 10),
        Some(b'M') => (&s[..s.len() - 1], 20),
        Some(b'G') => (&s[..s.len() - 1], 30),
        Some(b'T') => (&s[..s.len() - 1], 40),
        _ => (s, 0),
    };
    let v = if let Some(h) = digits.strip_prefix("0x") {
        u64::from_str_radix(h, 16)
    } else if let Some(o) = digits.strip_prefix("0o") {
        u64::from_str_radix(o, 8)
    } else {
        digits.parse()
    };
    let v = v.unwrap_or_else(|e| panic!("bad number {s:?}: {e}"));
    v.checked_mul(1 << shift)
        .unwrap_or_else(|| panic!("number {s:?} overflows"))
}

/// A `u32` field: the low 32 bits of [`num`] (so `-1` is `0xffff_ffff`).
#[allow(clippy::cast_possible_truncation)] // on purpose: fields take the low bits
pub fn num32(s: &str) -> u32 {
    num(s) as u32
}

/// LEB128, as `format` writes varints.
pub fn varint(w: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        w.push(v.to_le_bytes()[0] | 0x80);
        v >>= 7;
    }
    w.push(v.to_le_bytes()[0]);
}

/// Splits `s` at commas outside double quotes.
pub fn split_commas(s: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let (mut quoted, mut escaped, mut start) = (false, false, 0);
    for (i, c) in s.char_indices() {
        if quoted {
            if escaped {
                escaped = false;
            } else if c == '\\' {
                escaped = true;
            } else if c == '"' {
                quoted = false;
            }
        } else if c == '"' {
            quoted = true;
        } else if c == ',' {
            out.push(&s[start..i]);
            start = i + 1;
        }
    }
    out.push(&s[start..]);
    out
}

/// A byte expression: terms joined by `+`, each an atom optionally repeated `*N`.
/// Atoms: `"text"` (escapes `\\ \" \n \0 \xHH`), `hex:…`, `u8:N`, `u16:N`, `u32:N`,
/// `u64:N` (little-endian), `var:N` (LEB128), `zz:N` (zig-zag LEB128, a signed varint as
/// bipatch reads it; `zz:-5` is minus five), `bipatch` (a bipatch header: magic and
/// version), `empty`.
pub fn bytes(expr: &str) -> Vec<u8> {
    let mut out = Vec::new();
    let mut rest = expr;
    while !rest.is_empty() {
        let (atom, after) = atom(rest, expr);
        rest = after;
        let mut times = 1;
        if let Some(r) = rest.strip_prefix('*') {
            let end = r.find('+').unwrap_or(r.len());
            times = usize::try_from(num(&r[..end])).unwrap();
            rest = &r[end..];
        }
        for _ in 0..times {
            out.extend_from_slice(&atom);
        }
        if let Some(r) = rest.strip_prefix('+') {
            rest = r;
        } else {
            assert!(rest.is_empty(), "bad byte expression {expr:?} at {rest:?}");
        }
    }
    out
}

fn atom<'a>(s: &'a str, whole: &str) -> (Vec<u8>, &'a str) {
    if let Some(body) = s.strip_prefix('"') {
        let mut out = Vec::new();
        let mut chars = body.char_indices();
        while let Some((i, c)) = chars.next() {
            match c {
                '"' => return (out, &body[i + 1..]),
                '\\' => match chars.next().map(|x| x.1) {
                    Some('n') => out.push(b'\n'),
                    Some('0') => out.push(0),
                    Some('\\') => out.push(b'\\'),
                    Some('"') => out.push(b'"'),
                    Some('x') => {
                        let h: String = (0..2).filter_map(|_| chars.next().map(|x| x.1)).collect();
                        out.push(u8::from_str_radix(&h, 16).unwrap());
                    }
                    other => panic!("bad escape {other:?} in {whole:?}"),
                },
                c => {
                    let mut b = [0u8; 4];
                    out.extend_from_slice(c.encode_utf8(&mut b).as_bytes());
                }
            }
        }
        panic!("unterminated string in {whole:?}");
    }
    let end = s.find(['+', '*']).unwrap_or(s.len());
    let (word, rest) = s.split_at(end);
    let (kind, arg) = word.split_once(':').unwrap_or((word, ""));
    let v = || num(arg);
    let b = match kind {
        "hex" => (0..arg.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&arg[i..i + 2], 16).unwrap())
            .collect(),
        "u8" => vec![v().to_le_bytes()[0]],
        "u16" => v().to_le_bytes()[..2].to_vec(),
        "u32" => v().to_le_bytes()[..4].to_vec(),
        "u64" => v().to_le_bytes().to_vec(),
        "var" => {
            let mut w = Vec::new();
            varint(&mut w, v());
            w
        }
        "zz" => {
            let n = i64::from_le_bytes(v().to_le_bytes());
            let mut w = Vec::new();
            varint(
                &mut w,
                u64::from_le_bytes(((n << 1) ^ (n >> 63)).to_le_bytes()),
            );
            w
        }
        "bipatch" => [0xB1DFu32.to_le_bytes(), 0x1000u32.to_le_bytes()].concat(),
        "empty" => Vec::new(),
        _ => panic!("unknown byte atom {word:?} in {whole:?}"),
    };
    (b, rest)
}

/// `key=value` fields of a statement, in order, plus the words that are not fields.
pub struct Fields {
    pub words: Vec<String>,
    pub fields: Vec<(String, String)>,
}

impl Fields {
    pub fn parse(toks: &[String]) -> Self {
        let mut words = Vec::new();
        let mut fields = Vec::new();
        for t in toks {
            // A field's key is a plain word; a quoted word holding '=' is not a field.
            match t.split_once('=') {
                Some((k, v)) if !k.is_empty() && !k.contains('"') => {
                    fields.push((k.to_owned(), v.to_owned()));
                }
                _ => words.push(t.clone()),
            }
        }
        Self { words, fields }
    }

    pub fn get(&self, key: &str) -> Option<&str> {
        self.fields
            .iter()
            .rev()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    pub fn all(&self, key: &str) -> impl Iterator<Item = &str> {
        self.fields
            .iter()
            .filter(move |(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }
}
