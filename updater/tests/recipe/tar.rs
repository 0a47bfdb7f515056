//! Tarballs written block by block, so that a recipe can say what no tar tool would
//! write: `..`, absolute paths, NUL inside a PAX path, links to anywhere.
//!
//! Statements:
//! - `entry TYPE PATH [mode=N] [uid=N] [gid=N] [major=N] [minor=N] [link=BYTES]
//!   [content=BYTES] [pax=BYTES,BYTES]…` where TYPE is file, dir, symlink, hardlink, char,
//!   block, fifo, sparse. A path or link over 100 bytes, or holding a NUL, travels in
//!   a PAX record (`path`, `linkpath`), as GNU tar and bsdtar write long names.
//! - `no-end`: leave out the two zero blocks that end an archive.

use super::{Fields, bytes, num, split_commas};

/// Builds a tarball from a recipe's statements.
pub fn build(statements: &[Vec<String>]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut end = true;
    for toks in statements {
        match toks[0].as_str() {
            "entry" => entry(&mut out, &toks[1..]),
            "no-end" => end = false,
            other => panic!("unknown tar statement {other:?}"),
        }
    }
    if end {
        out.extend_from_slice(&[0u8; 1024]);
    }
    out
}

fn entry(out: &mut Vec<u8>, toks: &[String]) {
    let f = Fields::parse(toks);
    let [ty, path] = &f.words[..] else {
        panic!("entry TYPE PATH …: {toks:?}")
    };
    let path = bytes(path);
    let flag = match ty.as_str() {
        "file" => b'0',
        "hardlink" => b'1',
        "symlink" => b'2',
        "char" => b'3',
        "block" => b'4',
        "dir" => b'5',
        "fifo" => b'6',
        "sparse" => b'S',
        other => panic!("unknown tar entry type {other:?}"),
    };
    let link = f.get("link").map(bytes).unwrap_or_default();
    let content = f.get("content").map(bytes).unwrap_or_default();
    let mut pax: Vec<(Vec<u8>, Vec<u8>)> = f
        .all("pax")
        .map(|kv| {
            let v = split_commas(kv);
            (bytes(v[0]), bytes(v[1]))
        })
        .collect();
    let fits = |b: &[u8]| b.len() <= 100 && !b.contains(&0);
    if !fits(&path) {
        pax.push((b"path".to_vec(), path.clone()));
    }
    if !fits(&link) {
        pax.push((b"linkpath".to_vec(), link.clone()));
    }
    if !pax.is_empty() {
        let mut records = Vec::new();
        for (k, v) in &pax {
            // "LEN key=value\n", where LEN counts the whole record, itself included.
            let body = k.len() + v.len() + 3;
            let mut len = body + 1;
            while len.to_string().len() + body != len {
                len = body + len.to_string().len();
            }
            records.extend_from_slice(len.to_string().as_bytes());
            records.push(b' ');
            records.extend_from_slice(k);
            records.push(b'=');
            records.extend_from_slice(v);
            records.push(b'\n');
        }
        let header = block(
            b"././@PaxHeader",
            b'x',
            0o644,
            0,
            0,
            records.len() as u64,
            b"",
            (0, 0),
        );
        out.extend_from_slice(&header);
        push_padded(out, &records);
    }
    let short = |b: &[u8]| -> Vec<u8> {
        b.iter()
            .copied()
            .take(100)
            .take_while(|&c| c != 0)
            .collect()
    };
    let size = f.get("size").map_or(content.len() as u64, num);
    let mode = f
        .get("mode")
        .map_or(if flag == b'5' { 0o755 } else { 0o644 }, num);
    let header = block(
        &short(&path),
        flag,
        mode,
        f.get("uid").map_or(0, num),
        f.get("gid").map_or(0, num),
        size,
        &short(&link),
        (f.get("major").map_or(0, num), f.get("minor").map_or(0, num)),
    );
    out.extend_from_slice(&header);
    push_padded(out, &content);
}

fn push_padded(out: &mut Vec<u8>, data: &[u8]) {
    out.extend_from_slice(data);
    out.resize(out.len().div_ceil(512) * 512, 0);
}

fn octal(field: &mut [u8], v: u64) {
    let digits = field.len() - 1;
    let s = format!("{v:0digits$o}");
    assert!(
        s.len() <= digits,
        "{v} does not fit a {digits}-digit tar field"
    );
    field[..digits].copy_from_slice(s.as_bytes());
    field[digits] = 0;
}

/// One ustar header block.
#[allow(clippy::too_many_arguments)] // a tar header has this many fields
fn block(
    name: &[u8],
    flag: u8,
    mode: u64,
    uid: u64,
    gid: u64,
    size: u64,
    link: &[u8],
    dev: (u64, u64),
) -> [u8; 512] {
    let mut h = [0u8; 512];
    h[..name.len()].copy_from_slice(name);
    octal(&mut h[100..108], mode);
    octal(&mut h[108..116], uid);
    octal(&mut h[116..124], gid);
    octal(&mut h[124..136], size);
    octal(&mut h[136..148], 0);
    h[156] = flag;
    h[157..157 + link.len()].copy_from_slice(link);
    h[257..263].copy_from_slice(b"ustar\0");
    h[263..265].copy_from_slice(b"00");
    octal(&mut h[329..337], dev.0);
    octal(&mut h[337..345], dev.1);
    // The checksum is computed with its own field taken as eight spaces.
    h[148..156].copy_from_slice(b"        ");
    let sum: u64 = h.iter().map(|&b| u64::from(b)).sum();
    let s = format!("{sum:06o}\0 ");
    h[148..156].copy_from_slice(s.as_bytes());
    h
}
