//! Update files built from a recipe, signed with the lab's trusted key: the bytes of
//! every part operation, the body and the file can be forged one field at a time.
//! `tests/data/hostile/README.md` lists the statements.

use format::ops::{ObjRef, TreeOp};
use format::update::{Body, PartInfo, encode_head};
use format::{EntryKind, FileHeader, ObjectId};

use super::{Fields, bytes, num, num32, split_commas, varint};

/// What recipes can refer to: the device's commit (v1) and its base walk, the commit
/// the real update makes (v2), the real update itself, and the trusted signing key.
pub struct Ctx {
    pub repo: store::Repo,
    pub v1: ObjectId,
    pub v2_root: ObjectId,
    /// v1's base walk (`format::ops::base_order`) and each entry's path.
    pub base: Vec<(ObjectId, EntryKind)>,
    pub paths: Vec<String>,
    pub key: ed25519_dalek::SigningKey,
    /// `berth-image delta` from v1 to v2, in several parts.
    pub lab_update: Vec<u8>,
}

impl Ctx {
    fn base_index(&self, r: &str) -> u64 {
        match r.strip_prefix("v1:") {
            Some(p) => {
                let p = p.trim_matches('/');
                let i = self
                    .paths
                    .iter()
                    .position(|x| x == p)
                    .unwrap_or_else(|| panic!("v1 has no {p:?}"));
                i as u64
            }
            None => num(r),
        }
    }
}

const PLACEHOLDER: ObjectId = ObjectId::from_bytes([0xee; 32]);

/// A hand-made zstd frame around a part's operations.
struct Frame {
    window: u64,
    content_size: Option<u64>,
    single_segment: bool,
    /// Runs of one byte after the operations, as RLE blocks: (byte, count).
    rle: Vec<(u8, u64)>,
}

#[derive(Default)]
struct Part {
    plain: Vec<u8>,
    made: Vec<(ObjectId, EntryKind)>,
    frame: Option<Frame>,
    signed_size: Option<u64>,
}

/// A built update: the file's bytes and where its regions start.
struct Layout {
    file: Vec<u8>,
    body: usize,
    sig_len: usize,
    sig: usize,
    parts: Vec<usize>,
}

impl Layout {
    fn addr(&self, a: &str) -> usize {
        // Region names hold '-' ("sig-len"), so the offset starts after the name.
        let name_end = ["sig-len", "head", "body", "sig", "end", "part"]
            .iter()
            .find(|n| a.starts_with(*n))
            .map_or_else(|| panic!("unknown region in {a:?}"), |n| n.len());
        let name_end = name_end + a[name_end..].find(['+', '-']).unwrap_or(a.len() - name_end);
        let (region, rest) = a.split_at(name_end);
        let base = match region {
            "head" => 0,
            "body" => self.body,
            "sig-len" => self.sig_len,
            "sig" => self.sig,
            "end" => self.file.len(),
            p if p.starts_with("part") => self.parts[p[4..].parse::<usize>().unwrap()],
            _ => panic!("unknown region {region:?}"),
        };
        match rest.as_bytes().first() {
            None => base,
            Some(b'+') => base + usize::try_from(num(&rest[1..])).unwrap(),
            Some(_) => base - usize::try_from(num(&rest[1..])).unwrap(),
        }
    }

    /// Every place a cut makes a file end at a boundary: nothing, the head, the body,
    /// the signature length, the signatures, and each part.
    fn boundaries(&self) -> Vec<usize> {
        let mut b = vec![0, self.body, self.sig_len, self.sig];
        b.extend(&self.parts[1..]);
        b
    }
}

/// Builds the update(s) a recipe describes: one file, or one per boundary or part for
/// the `each-…` statements.
pub fn build(ctx: &Ctx, statements: &[Vec<String>]) -> Vec<Vec<u8>> {
    let mut b = Builder {
        ctx,
        from: None,
        parts: vec![Part::default()],
        made: Vec::new(),
        last_tree: None,
        commit: None,
        commit_sigs: Vec::new(),
    };
    let mut lab = false;
    let mut presign: Vec<&[String]> = Vec::new();
    let mut postsign: Vec<&[String]> = Vec::new();
    for toks in statements {
        match toks[0].as_str() {
            "lab-update" => lab = true,
            "info" | "body-poke" | "body-cut" | "body-append" => presign.push(toks),
            "cut" | "flip" | "poke" | "append" | "sig-bytes" | "each-boundary" | "each-part" => {
                postsign.push(toks);
            }
            _ => b.statement(toks),
        }
    }
    let layout = if lab {
        b.lab_layout(&presign)
    } else {
        b.assemble(&presign)
    };
    let loops: Vec<&&[String]> = postsign
        .iter()
        .filter(|t| t[0].starts_with("each-"))
        .collect();
    let plain: Vec<&[String]> = postsign
        .iter()
        .copied()
        .filter(|t| !t[0].starts_with("each-"))
        .collect();
    let once = |layout: &Layout, extra: Option<&[String]>| -> Vec<u8> {
        let mut file = layout.file.clone();
        for t in plain.iter().copied().chain(extra) {
            file_edit(layout, &mut file, t);
        }
        file
    };
    match loops.as_slice() {
        [] => vec![once(&layout, None)],
        [l] if l[0] == "each-boundary" && l[1] == "cut" => layout
            .boundaries()
            .into_iter()
            .map(|at| {
                let mut f = once(&layout, None);
                f.truncate(at);
                f
            })
            .collect(),
        [l] if l[0] == "each-part" => (0..layout.parts.len())
            .map(|i| {
                // `each-part flip +3 [MASK]`: the edit at that offset into every part.
                let mut t: Vec<String> = l[1..].to_vec();
                t[1] = format!("part{i}{}", t[1]);
                once(&layout, Some(&t))
            })
            .collect(),
        other => panic!("one each-boundary cut or each-part statement per case: {other:?}"),
    }
}

fn file_edit(layout: &Layout, file: &mut Vec<u8>, t: &[String]) {
    match t[0].as_str() {
        "cut" => file.truncate(layout.addr(&t[1])),
        "flip" => {
            let at = layout.addr(&t[1]);
            let mask = t.get(2).map_or(1, |m| u8::try_from(num(m)).unwrap());
            file[at] ^= mask;
        }
        "poke" => {
            let at = layout.addr(&t[1]);
            let b = bytes(&t[2]);
            if file.len() < at + b.len() {
                file.resize(at + b.len(), 0);
            }
            file[at..at + b.len()].copy_from_slice(&b);
        }
        "append" => file.extend_from_slice(&bytes(&t[1])),
        "sig-bytes" => {
            // Replaces the signature block (and its length) after signing.
            let sig = bytes(&t[1]);
            let mut out = file[..layout.sig_len].to_vec();
            out.extend_from_slice(&u32::try_from(sig.len()).unwrap().to_le_bytes());
            out.extend_from_slice(&sig);
            out.extend_from_slice(&file[layout.parts[0]..]);
            *file = out;
        }
        other => panic!("unknown statement {other:?}"),
    }
}

struct Builder<'c> {
    ctx: &'c Ctx,
    from: Option<ObjectId>,
    parts: Vec<Part>,
    /// Every object made so far, in order, across parts (for `id made:N`).
    made: Vec<ObjectId>,
    last_tree: Option<ObjectId>,
    commit: Option<Vec<u8>>,
    commit_sigs: Vec<u8>,
}

impl Builder<'_> {
    fn part(&mut self) -> &mut Part {
        self.parts.last_mut().unwrap()
    }

    fn statement(&mut self, toks: &[String]) {
        let f = Fields::parse(&toks[1..]);
        match toks[0].as_str() {
            "from" => {
                assert_eq!(toks[1], "v1", "updates start from the device's v1");
                self.from = Some(self.ctx.v1);
            }
            "part" => self.parts.push(Part::default()),
            "repeat" => {
                for _ in 0..num(&toks[1]) {
                    self.statement(&toks[2..]);
                }
            }
            "op" => self.op(&toks[1..]),
            "bytes" => {
                let b = bytes(&toks[1]);
                self.part().plain.extend_from_slice(&b);
            }
            "signed-size" => self.part().signed_size = Some(num(&toks[1])),
            "frame" => {
                self.part().frame = Some(Frame {
                    window: f.get("window").map_or(128 << 10, num),
                    content_size: f.get("content-size").map(num),
                    single_segment: f.words.iter().any(|w| w == "single-segment"),
                    rle: Vec::new(),
                });
            }
            "rle" => {
                let run = (u8::try_from(num(&toks[1])).unwrap(), num(&toks[2]));
                self.part()
                    .frame
                    .as_mut()
                    .expect("rle after frame")
                    .rle
                    .push(run);
            }
            "commit" => {
                let root = match f.get("root").unwrap_or("last") {
                    "last" => self.last_tree.expect("root=last needs a tree made"),
                    "v2" => self.ctx.v2_root,
                    other => id_ref(self.ctx, &self.made, other),
                };
                let c = format::Commit::new(
                    root,
                    None,
                    f.get("timestamp").map_or(1, num),
                    format::Version::new(f.get("version").unwrap_or("9.0")).unwrap(),
                    Vec::new(),
                )
                .unwrap();
                self.commit = Some(c.encode());
            }
            "commit-bytes" => self.commit = Some(bytes(&toks[1])),
            "commit-sigs" => self.commit_sigs = bytes(&toks[1]),
            other => panic!("unknown statement {other:?}"),
        }
    }

    fn op(&mut self, toks: &[String]) {
        let f = Fields::parse(&toks[1..]);
        let (kind, head, payload) = match toks[0].as_str() {
            "file" => {
                let h = header(&f, None);
                let content = f
                    .get("content")
                    .or(f.get("target"))
                    .map(bytes)
                    .unwrap_or_default();
                (format::ops::FILE, h, content)
            }
            "patch" => (format::ops::FILE_PATCH, self.patch_head(&f), Vec::new()),
            "deflate" => (
                format::ops::DEFLATE_PATCH,
                self.deflate_head(&f),
                Vec::new(),
            ),
            "elf" => (format::ops::ELF_PATCH, self.elf_head(&f), Vec::new()),
            "zip" => (format::ops::ZIP_PATCH, self.zip_head(&f), Vec::new()),
            "tree" => (format::ops::TREE, self.tree_head(&f), Vec::new()),
            "raw" => (
                u8::try_from(num(&f.words[0])).unwrap(),
                f.get("head").map(bytes).unwrap_or_default(),
                Vec::new(),
            ),
            other => panic!("unknown operation {other:?}"),
        };
        let payload = f.get("payload").map_or(payload, bytes);
        let head_len = f
            .get("head-len")
            .map_or(u32::try_from(head.len()).unwrap(), num32);
        self.track(kind, &head, &payload);
        let p = self.part();
        p.plain.push(kind);
        p.plain.extend_from_slice(&head_len.to_le_bytes());
        p.plain.extend_from_slice(&head);
        p.plain.extend_from_slice(&payload);
    }

    /// Works out the object an operation makes, as the device would, so that later
    /// trees and the commit can name it; a hostile operation makes a placeholder.
    fn track(&mut self, kind: u8, head: &[u8], payload: &[u8]) {
        let made = match kind {
            format::ops::FILE => FileHeader::decode(head)
                .ok()
                .and_then(|h| h.object_id(payload).ok())
                .map(|id| (id, EntryKind::File)),
            format::ops::TREE => self.simulate_tree(head).map(|id| (id, EntryKind::Tree)),
            _ => None,
        };
        let (id, k) = made.unwrap_or((PLACEHOLDER, EntryKind::File));
        if k == EntryKind::Tree && id != PLACEHOLDER {
            self.last_tree = Some(id);
        }
        self.made.push(id);
        self.part().made.push((id, k));
    }

    fn simulate_tree(&self, head: &[u8]) -> Option<ObjectId> {
        let op = TreeOp::decode(head).ok()?;
        let base = match op.base {
            Some(i) => {
                let (id, _) = self.ctx.base.get(usize::try_from(i).ok()?)?;
                Some(self.ctx.repo.read_tree(id).ok()?)
            }
            None => None,
        };
        let made = &self.parts.last().unwrap().made;
        let tree = op
            .build(base.as_ref(), |r, _| {
                let bad = format::FormatError::Invalid {
                    what: "simulated reference",
                    value: 0,
                };
                match *r {
                    ObjRef::Local(n) => usize::try_from(n)
                        .ok()
                        .filter(|&n| n >= 1)
                        .and_then(|n| made.len().checked_sub(n))
                        .map(|i| made[i].0)
                        .ok_or(bad),
                    ObjRef::Base(i) => usize::try_from(i)
                        .ok()
                        .and_then(|i| self.ctx.base.get(i))
                        .map(|e| e.0)
                        .ok_or(bad),
                    ObjRef::Id(id) => Ok(id),
                }
            })
            .ok()?;
        Some(tree.id())
    }

    fn patch_head(&self, f: &Fields) -> Vec<u8> {
        let windows: Vec<[u64; 4]> = f
            .all("window")
            .map(|w| {
                let v: Vec<u64> = split_commas(w).into_iter().map(num).collect();
                v.try_into().expect("window=START,LEN,OUT,PATCH")
            })
            .collect();
        let out: u64 = windows.iter().map(|w| w[2]).fold(0, u64::wrapping_add);
        let h = header(f, Some(out));
        let mut w = Vec::new();
        varint(&mut w, f.get("header-len").map_or(h.len() as u64, num));
        w.extend_from_slice(&h);
        varint(
            &mut w,
            self.ctx.base_index(f.get("base").expect("patch base=")),
        );
        varint(&mut w, f.get("windows").map_or(windows.len() as u64, num));
        for win in &windows {
            for v in win {
                varint(&mut w, *v);
            }
        }
        w
    }

    /// An ELF patch's head (docs/FORMAT.md): a patch head, then `arch=` (default 1),
    /// each `range=KIND,OFFSET,LEN,ADDR` and each `map=NEW,OLD,LEN` (encoded as the
    /// format says, from the previous range), with their counts (`ranges=`, `maps=`)
    /// taken from them unless given.
    fn elf_head(&self, f: &Fields) -> Vec<u8> {
        let mut w = self.patch_head(f);
        varint(&mut w, num(f.get("arch").unwrap_or("1")));
        let list = |key: &str, width: usize| -> Vec<Vec<u64>> {
            f.all(key)
                .map(|v| {
                    let item: Vec<u64> = split_commas(v).into_iter().map(num).collect();
                    assert_eq!(item.len(), width, "{key}= takes {width} numbers");
                    item
                })
                .collect()
        };
        let ranges = list("range", 4);
        varint(&mut w, f.get("ranges").map_or(ranges.len() as u64, num));
        for v in ranges.iter().flatten() {
            varint(&mut w, *v);
        }
        let maps = list("map", 3);
        varint(&mut w, f.get("maps").map_or(maps.len() as u64, num));
        let (mut end, mut shift) = (0u64, 0u64);
        for m in &maps {
            let (new, old, len) = (m[0], m[1], m[2]);
            let s = old.wrapping_sub(new);
            let d = s.wrapping_sub(shift).cast_signed();
            varint(&mut w, new.wrapping_sub(end));
            varint(&mut w, ((d << 1) ^ (d >> 63)).cast_unsigned());
            varint(&mut w, len);
            (end, shift) = (new.wrapping_add(len), s);
        }
        w
    }

    /// A deflate patch's head (docs/FORMAT.md): the header's size defaults to the
    /// prefix, stream and suffix.
    fn deflate_head(&self, f: &Fields) -> Vec<u8> {
        let prefix = f.get("prefix").map(bytes).unwrap_or_default();
        let suffix = f.get("suffix").map(bytes).unwrap_or_default();
        let stream = num(f.get("stream").expect("deflate stream="));
        let h = header(
            f,
            Some(stream.wrapping_add((prefix.len() + suffix.len()) as u64)),
        );
        let mut w = Vec::new();
        varint(&mut w, h.len() as u64);
        w.extend_from_slice(&h);
        varint(
            &mut w,
            self.ctx.base_index(f.get("base").expect("deflate base=")),
        );
        for key in ["start", "base-plain", "plain"] {
            varint(&mut w, num(f.get(key).unwrap_or("0")));
        }
        varint(&mut w, prefix.len() as u64);
        w.extend_from_slice(&prefix);
        varint(&mut w, stream);
        varint(&mut w, suffix.len() as u64);
        w.extend_from_slice(&suffix);
        for key in ["corrections", "patch"] {
            varint(&mut w, num(f.get(key).unwrap_or("0")));
        }
        w
    }

    /// A zip patch's head (docs/FORMAT.md): each `base=stored,LEN` or
    /// `base=stream,LEN,PLAIN` piece of the base (`bpiece=`), each `piece=stored,LEN` or
    /// `piece=stream,LEN,PLAIN,CORRECTIONS` of the new file, their counts (`bpieces=`,
    /// `pieces=`) taken from them unless given, and the header's size from the pieces.
    fn zip_head(&self, f: &Fields) -> Vec<u8> {
        let list = |key: &str| -> Vec<Vec<u64>> {
            f.all(key)
                .map(|p| {
                    let mut it = p.split(',');
                    let tag = match it.next().unwrap() {
                        "stored" => 0,
                        "stream" => 1,
                        t => num(t),
                    };
                    std::iter::once(tag).chain(it.map(num)).collect()
                })
                .collect()
        };
        let (base, new) = (list("bpiece"), list("piece"));
        let size = new
            .iter()
            .map(|p| p.get(1).copied().unwrap_or(0))
            .fold(0u64, u64::wrapping_add);
        let h = header(f, Some(size));
        let mut w = Vec::new();
        varint(&mut w, h.len() as u64);
        w.extend_from_slice(&h);
        varint(
            &mut w,
            self.ctx.base_index(f.get("base").expect("zip base=")),
        );
        for (pieces, count) in [(&base, "bpieces"), (&new, "pieces")] {
            varint(&mut w, f.get(count).map_or(pieces.len() as u64, num));
            for p in pieces {
                for &v in p {
                    varint(&mut w, v);
                }
            }
        }
        varint(&mut w, num(f.get("patch").unwrap_or("0")));
        w
    }

    fn tree_head(&self, f: &Fields) -> Vec<u8> {
        let mut w = Vec::new();
        match f.get("base") {
            None | Some("none") => varint(&mut w, 0),
            Some(r) => varint(&mut w, self.ctx.base_index(r).wrapping_add(1)),
        }
        w.extend_from_slice(&num32(f.get("mode").unwrap_or("0o755")).to_le_bytes());
        w.extend_from_slice(&num32(f.get("uid").unwrap_or("0")).to_le_bytes());
        w.extend_from_slice(&num32(f.get("gid").unwrap_or("0")).to_le_bytes());
        xattrs(&mut w, f);
        let words: Vec<&str> = f.words.iter().map(String::as_str).collect();
        let mut i = 0;
        while i < words.len() {
            let cmd = |w: &mut Vec<u8>, arg: u64, c: u64| varint(w, arg << 3 | c);
            match words[i] {
                "copy" | "skip" => {
                    let c = u64::from(words[i] == "skip");
                    cmd(&mut w, num(words[i + 1]), c);
                    i += 2;
                }
                "replace" => {
                    let (how, r) = (words[i + 1], words[i + 2]);
                    match how {
                        "local" => cmd(&mut w, num(r), 2),
                        "base" => cmd(&mut w, self.ctx.base_index(r), 3),
                        "id" => {
                            cmd(&mut w, 0, 4);
                            w.extend_from_slice(id_ref(self.ctx, &self.made, r).as_bytes());
                        }
                        other => panic!("replace {other:?}"),
                    }
                    i += 3;
                }
                "new" => {
                    let tree = match words[i + 1] {
                        "file" => 0,
                        "tree" => 1,
                        other => panic!("new {other:?}"),
                    };
                    let name = bytes(words[i + 2]);
                    let (how, r) = (words[i + 3], words[i + 4]);
                    let refkind = match how {
                        "local" => 0,
                        "base" => 1,
                        "id" => 2,
                        other => panic!("new … {other:?}"),
                    };
                    cmd(&mut w, refkind << 1 | tree, 5);
                    w.push(u8::try_from(name.len() % 256).unwrap());
                    w.extend_from_slice(&name);
                    match how {
                        "local" => varint(&mut w, num(r)),
                        "base" => varint(&mut w, self.ctx.base_index(r)),
                        _ => w.extend_from_slice(id_ref(self.ctx, &self.made, r).as_bytes()),
                    }
                    i += 5;
                }
                "edit" => {
                    w.extend_from_slice(&bytes(words[i + 1]));
                    i += 2;
                }
                other => panic!("unknown tree edit {other:?}"),
            }
        }
        w
    }

    /// The signed body and the file around it.
    fn assemble(&mut self, presign: &[&[String]]) -> Layout {
        let mut compressed = Vec::new();
        let mut infos = Vec::new();
        let mut offset = 0u64;
        for p in &self.parts {
            let c = match &p.frame {
                Some(fr) => frame(fr, &p.plain),
                None => zstd::encode_all(&p.plain[..], 3).unwrap(),
            };
            infos.push(PartInfo {
                offset,
                len: c.len() as u64,
                size: p.signed_size.unwrap_or(p.plain.len() as u64),
                sha256: ObjectId::digest(&c),
            });
            offset += c.len() as u64;
            compressed.push(c);
        }
        let body = Body {
            from: self.from,
            commit: self.commit.clone().expect("a commit statement"),
            commit_signatures: self.commit_sigs.clone(),
            parts: infos,
            flags: 0,
        };
        sign_and_lay_out(self.ctx, body, presign, &compressed)
    }

    /// The real update, re-signed only if the recipe edits its body.
    fn lab_layout(&self, presign: &[&[String]]) -> Layout {
        let file = &self.ctx.lab_update;
        let body_len = u32::from_le_bytes(file[8..12].try_into().unwrap()) as usize;
        let body = Body::decode(&file[12..12 + body_len]).unwrap();
        let sig_len =
            u32::from_le_bytes(file[12 + body_len..16 + body_len].try_into().unwrap()) as usize;
        let at = 16 + body_len + sig_len;
        let compressed: Vec<Vec<u8>> = body
            .parts
            .iter()
            .map(|p| {
                let s = at + usize::try_from(p.offset).unwrap();
                file[s..s + usize::try_from(p.len).unwrap()].to_vec()
            })
            .collect();
        if presign.is_empty() {
            return Layout {
                file: file.clone(),
                body: 12,
                sig_len: 12 + body_len,
                sig: 16 + body_len,
                parts: body
                    .parts
                    .iter()
                    .map(|p| at + usize::try_from(p.offset).unwrap())
                    .collect(),
            };
        }
        sign_and_lay_out(self.ctx, body, presign, &compressed)
    }
}

/// `info I key=N…` overrides a part's entry in the table; `body-poke ADDR BYTES`,
/// `body-cut ADDR` and `body-append BYTES` edit the encoded body; then it is signed.
fn sign_and_lay_out(
    ctx: &Ctx,
    mut body: Body,
    presign: &[&[String]],
    compressed: &[Vec<u8>],
) -> Layout {
    for t in presign.iter().filter(|t| t[0] == "info") {
        let i: usize = t[1].parse().unwrap();
        let f = Fields::parse(&t[2..]);
        let p = &mut body.parts[i];
        for (k, v) in &f.fields {
            // `+N` adds to what the part really has.
            let set = |old: u64| v.strip_prefix('+').map_or_else(|| num(v), |d| old + num(d));
            match k.as_str() {
                "offset" => p.offset = set(p.offset),
                "len" => p.len = set(p.len),
                "size" => p.size = set(p.size),
                "sha" => p.sha256 = ObjectId::from_bytes([0; 32]),
                other => panic!("info {other:?}"),
            }
        }
    }
    let mut enc = body.encode();
    // Symbolic places in the body, from its layout (see docs/FORMAT.md).
    let from_flag = 8;
    let commit_len = 9 + if body.from.is_some() { 32 } else { 0 };
    let sigs_len = commit_len + 4 + body.commit.len();
    let part_count = sigs_len + 4 + body.commit_signatures.len();
    let addr = |a: &str, end: usize| -> usize {
        let (name, off) = a.split_once('+').unwrap_or((a, "0"));
        let base = match name {
            "@from-flag" => from_flag,
            "@commit-len" => commit_len,
            "@sigs-len" => sigs_len,
            "@part-count" => part_count,
            "@parts" => part_count + 4,
            "@end" => end,
            n => usize::try_from(num(n)).unwrap(),
        };
        base + usize::try_from(num(off)).unwrap()
    };
    for t in presign.iter().filter(|t| t[0] != "info") {
        match t[0].as_str() {
            "body-poke" => {
                let at = addr(&t[1], enc.len());
                let b = bytes(&t[2]);
                enc.splice(at..(at + b.len()).min(enc.len()), b);
            }
            "body-cut" => enc.truncate(addr(&t[1], enc.len())),
            "body-append" => enc.extend_from_slice(&bytes(&t[1])),
            _ => unreachable!(),
        }
    }
    let mut sigs = format::sig::Signatures::new();
    sigs.sign(&enc, &ctx.key).unwrap();
    let sig = sigs.encode();
    let mut file = encode_head(enc.len());
    file.extend_from_slice(&enc);
    file.extend_from_slice(&u32::try_from(sig.len()).unwrap().to_le_bytes());
    file.extend_from_slice(&sig);
    let mut parts = Vec::new();
    for c in compressed {
        parts.push(file.len());
        file.extend_from_slice(c);
    }
    Layout {
        file,
        body: 12,
        sig_len: 12 + enc.len(),
        sig: 16 + enc.len(),
        parts,
    }
}

/// An object id: `v1:PATH` (that path's object in v1), `made:N` (the Nth object this
/// update made, from 1), `zero`, or 64 hex digits.
fn id_ref(ctx: &Ctx, made: &[ObjectId], r: &str) -> ObjectId {
    if r.starts_with("v1:") {
        return ctx.base[usize::try_from(ctx.base_index(r)).unwrap()].0;
    }
    if let Some(n) = r.strip_prefix("made:") {
        return made[usize::try_from(num(n)).unwrap() - 1];
    }
    if r == "zero" {
        return ObjectId::from_bytes([0; 32]);
    }
    r.parse().unwrap_or_else(|_| panic!("bad object id {r:?}"))
}

/// A file header, as `format` encodes one, but with any field forgeable:
/// KIND (regular, symlink, chardev, blockdev, fifo, or `kind=N`), `mode=`, `uid=`,
/// `gid=`, `rdev=MAJ,MIN`, `size=` (default: the content's length, or `out` for a
/// patch), `xattr=NAME,VALUE`…, `xattr-count=N`, `reserved=N`, `version=N`,
/// `trailing=BYTES`.
fn header(f: &Fields, out: Option<u64>) -> Vec<u8> {
    let kind = match f.words.first().map(String::as_str) {
        Some("regular") | None => 1,
        Some("symlink") => 2,
        Some("chardev") => 3,
        Some("blockdev") => 4,
        Some("fifo") => 5,
        Some(other) => panic!("unknown file kind {other:?}"),
    };
    let kind = f
        .get("kind")
        .map_or(kind, |k| u8::try_from(num(k)).unwrap());
    let default_mode = match kind {
        2 => 0o777,
        3..=5 => 0o600,
        _ => 0o644,
    };
    let content_len = f
        .get("content")
        .or(f.get("target"))
        .map_or(0, |c| bytes(c).len() as u64);
    let (major, minor) = f.get("rdev").map_or((0, 0), |r| {
        let v = split_commas(r);
        (num32(v[0]), num32(v[1]))
    });
    let mut w = b"BRTF".to_vec();
    w.extend_from_slice(
        &u16::try_from(f.get("version").map_or(1, num))
            .unwrap()
            .to_le_bytes(),
    );
    w.extend_from_slice(&0u16.to_le_bytes());
    w.push(kind);
    w.push(u8::try_from(f.get("reserved").map_or(0, num)).unwrap());
    w.extend_from_slice(&0u16.to_le_bytes());
    w.extend_from_slice(&num32(f.get("mode").unwrap_or(&default_mode.to_string())).to_le_bytes());
    w.extend_from_slice(&num32(f.get("uid").unwrap_or("0")).to_le_bytes());
    w.extend_from_slice(&num32(f.get("gid").unwrap_or("0")).to_le_bytes());
    w.extend_from_slice(&major.to_le_bytes());
    w.extend_from_slice(&minor.to_le_bytes());
    let size = f.get("size").map_or(out.unwrap_or(content_len), num);
    w.extend_from_slice(&size.to_le_bytes());
    xattrs(&mut w, f);
    w.extend_from_slice(&f.get("trailing").map(bytes).unwrap_or_default());
    w
}

/// An xattr list: `xattr=NAME,VALUE` pairs as given (no sorting: order is forgeable
/// too), with `xattr-count=N` written as the count if present.
fn xattrs(w: &mut Vec<u8>, f: &Fields) {
    let pairs: Vec<(Vec<u8>, Vec<u8>)> = f
        .all("xattr")
        .map(|x| {
            let v = split_commas(x);
            (bytes(v[0]), bytes(v[1]))
        })
        .collect();
    let count = f
        .get("xattr-count")
        .map_or(u32::try_from(pairs.len()).unwrap(), num32);
    w.extend_from_slice(&count.to_le_bytes());
    for (n, v) in &pairs {
        w.extend_from_slice(&u16::try_from(n.len()).unwrap().to_le_bytes());
        w.extend_from_slice(n);
        w.extend_from_slice(&u32::try_from(v.len()).unwrap().to_le_bytes());
        w.extend_from_slice(v);
    }
}

/// A zstd frame (RFC 8878) made by hand: the operations as raw blocks, then the RLE
/// runs, so a recipe can declare any window and content size and expand to any length
/// from a few bytes.
fn frame(fr: &Frame, plain: &[u8]) -> Vec<u8> {
    const BLOCK_MAX: u64 = 128 << 10;
    let mut w = vec![0x28, 0xb5, 0x2f, 0xfd];
    let fcs_flag: u8 = if fr.content_size.is_some() { 3 } else { 0 };
    w.push(fcs_flag << 6 | u8::from(fr.single_segment) << 5);
    if !fr.single_segment {
        let exp = fr.window.trailing_zeros() - 10;
        assert!(
            fr.window.is_power_of_two() && exp < 32,
            "window: a power of two"
        );
        w.push(u8::try_from(exp << 3).unwrap());
    }
    if let Some(n) = fr.content_size {
        w.extend_from_slice(&n.to_le_bytes());
    }
    let mut blocks: Vec<(u8, u64, Option<&[u8]>)> = Vec::new();
    for chunk in plain.chunks(usize::try_from(BLOCK_MAX).unwrap()) {
        blocks.push((0, chunk.len() as u64, Some(chunk)));
    }
    for &(byte, mut count) in &fr.rle {
        while count > 0 {
            let n = count.min(BLOCK_MAX);
            blocks.push((byte, n, None));
            count -= n;
        }
    }
    if blocks.is_empty() {
        blocks.push((0, 0, Some(&[])));
    }
    let last = blocks.len() - 1;
    for (i, (byte, n, raw)) in blocks.into_iter().enumerate() {
        let ty = u64::from(raw.is_none());
        let h = n << 3 | ty << 1 | u64::from(i == last);
        w.extend_from_slice(&h.to_le_bytes()[..3]);
        match raw {
            Some(r) => w.extend_from_slice(r),
            None => w.push(byte),
        }
    }
    w
}
