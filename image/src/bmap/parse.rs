//! Reading a bmap: the tokens (`xml.rs`), then the element structure, the file's own
//! checksum, then the meaning (counts, ranges). Untrusted bytes in, a checked [`Bmap`]
//! or a one-line [`BmapError`] out; no I/O.

use format::ObjectId;

use super::xml::{Lexer, Token, attribute, escape, leaf};
use super::{Bmap, BmapError, CHECKSUM_TYPE, MAX_BMAP_BYTES, Range};

impl Bmap {
    /// Parses and checks a bmap (untrusted bytes). Does no I/O.
    pub fn parse(bytes: &[u8]) -> Result<Self, BmapError> {
        if bytes.len() as u64 > MAX_BMAP_BYTES {
            return Err(BmapError::TooLarge);
        }
        let text = std::str::from_utf8(bytes).map_err(|_| BmapError::NotText)?;
        let doc = Document::parse(text)?;
        doc.check_file_checksum(text)?;
        doc.into_bmap()
    }
}

/// The elements of a parsed bmap, before their meaning is checked.
#[derive(Debug, Default)]
struct Document<'a> {
    version: Option<&'a str>,
    image_size: Option<(usize, &'a str)>,
    block_size: Option<(usize, &'a str)>,
    blocks_count: Option<(usize, &'a str)>,
    mapped_count: Option<(usize, &'a str)>,
    checksum_type: Option<&'a str>,
    /// The checksum's text and its byte offset in the file.
    file_checksum: Option<(&'a str, usize)>,
    block_map: bool,
    /// (line, chksum attribute, text).
    ranges: Vec<(usize, Option<&'a str>, &'a str)>,
}

impl<'a> Document<'a> {
    /// The element structure: `<bmap version>` holding each field once and `<BlockMap>`
    /// holding `<Range>`s; whitespace between elements; nothing after `</bmap>`.
    fn parse(text: &'a str) -> Result<Self, BmapError> {
        let mut lex = Lexer::new(text);
        let mut doc = Document::default();
        // Before the root: only whitespace (comments and the declaration are skipped).
        let root_attrs = loop {
            match lex.next()? {
                Some(Token::Text(t, _)) if t.trim().is_empty() => {}
                Some(Token::Open {
                    name: "bmap",
                    attrs,
                }) => break attrs,
                Some(_) => return Err(lex.err("expected <bmap version=\"2.0\">")),
                None => return Err(BmapError::Missing("bmap")),
            }
        };
        doc.version =
            Some(attribute(root_attrs, "version", &lex)?.ok_or(BmapError::Missing("version"))?);
        loop {
            let line = lex.line();
            match lex.next()? {
                Some(Token::Text(t, _)) if t.trim().is_empty() => {}
                Some(Token::Close("bmap")) => break,
                Some(Token::Open { name, attrs }) => {
                    if !attrs.trim().is_empty() {
                        return Err(lex.err(format!("unexpected attributes on <{name}>")));
                    }
                    if name == "BlockMap" {
                        if doc.block_map {
                            return Err(BmapError::Duplicate("BlockMap"));
                        }
                        doc.block_map = true;
                        doc.read_block_map(&mut lex)?;
                        continue;
                    }
                    let (value, at) = leaf(&mut lex, name)?;
                    let (slot, field): (&mut Option<(usize, &str)>, &'static str) = match name {
                        "ImageSize" => (&mut doc.image_size, "ImageSize"),
                        "BlockSize" => (&mut doc.block_size, "BlockSize"),
                        "BlocksCount" => (&mut doc.blocks_count, "BlocksCount"),
                        "MappedBlocksCount" => (&mut doc.mapped_count, "MappedBlocksCount"),
                        "ChecksumType" => {
                            if doc.checksum_type.replace(value.trim()).is_some() {
                                return Err(BmapError::Duplicate("ChecksumType"));
                            }
                            continue;
                        }
                        "BmapFileChecksum" => {
                            let lead = value.len() - value.trim_start().len();
                            if doc
                                .file_checksum
                                .replace((value.trim(), at + lead))
                                .is_some()
                            {
                                return Err(BmapError::Duplicate("BmapFileChecksum"));
                            }
                            continue;
                        }
                        other => {
                            return Err(BmapError::Syntax {
                                line,
                                what: format!("unknown element <{}>", escape(other)),
                            });
                        }
                    };
                    if slot.replace((line, value.trim())).is_some() {
                        return Err(BmapError::Duplicate(field));
                    }
                }
                Some(Token::Close(name)) => {
                    return Err(lex.err(format!("unexpected </{}>", escape(name))));
                }
                Some(Token::Text(t, _)) => {
                    return Err(lex.err(format!("unexpected text {:?}", escape(t.trim()))));
                }
                None => return Err(lex.err("unterminated <bmap>")),
            }
        }
        loop {
            match lex.next()? {
                Some(Token::Text(t, _)) if t.trim().is_empty() => {}
                None => break,
                Some(_) => return Err(lex.err("content after </bmap>")),
            }
        }
        Ok(doc)
    }

    fn read_block_map(&mut self, lex: &mut Lexer<'a>) -> Result<(), BmapError> {
        loop {
            let line = lex.line();
            match lex.next()? {
                Some(Token::Text(t, _)) if t.trim().is_empty() => {}
                Some(Token::Close("BlockMap")) => return Ok(()),
                Some(Token::Open {
                    name: "Range",
                    attrs,
                }) => {
                    let sum = attribute(attrs, "chksum", lex)?;
                    let (value, _) = leaf(lex, "Range")?;
                    self.ranges.push((line, sum, value.trim()));
                }
                Some(_) => return Err(lex.err("expected <Range> or </BlockMap>")),
                None => return Err(lex.err("unterminated <BlockMap>")),
            }
        }
    }

    /// The stated `BmapFileChecksum` against the sha256 of the file with that value
    /// replaced by '0's, as bmap-tools computes it.
    fn check_file_checksum(&self, text: &str) -> Result<(), BmapError> {
        let (stated, at) = self
            .file_checksum
            .ok_or(BmapError::Missing("BmapFileChecksum"))?;
        let stated_id = ObjectId::parse_hex(stated.as_bytes()).map_err(|_| {
            BmapError::Inconsistent(format!(
                "BmapFileChecksum {:?} is not a sha256 (64 hexadecimal digits)",
                escape(stated)
            ))
        })?;
        let mut zeroed = text.as_bytes().to_vec();
        zeroed[at..at + 64].fill(b'0');
        let computed = ObjectId::digest(&zeroed);
        if computed != stated_id {
            return Err(BmapError::FileChecksum {
                computed: computed.to_string(),
                stated: stated.to_owned(),
            });
        }
        Ok(())
    }

    /// The meaning: version 2.x, sha256, counts that agree, ranges sorted, disjoint,
    /// inside the image and each with its checksum.
    fn into_bmap(self) -> Result<Bmap, BmapError> {
        let version = self.version.unwrap_or_default();
        if version.split('.').next() != Some("2") || !version.contains('.') {
            return Err(BmapError::Version(escape(version)));
        }
        let checksum_type = self
            .checksum_type
            .ok_or(BmapError::Missing("ChecksumType"))?;
        if checksum_type != CHECKSUM_TYPE {
            return Err(BmapError::ChecksumType(escape(checksum_type)));
        }
        let image_size = number(self.image_size, "ImageSize")?;
        let block_size = number(self.block_size, "BlockSize")?;
        let blocks_count = number(self.blocks_count, "BlocksCount")?;
        let mapped_count = number(self.mapped_count, "MappedBlocksCount")?;
        if !self.block_map {
            return Err(BmapError::Missing("BlockMap"));
        }
        if !(512..=1 << 20).contains(&block_size) || !block_size.is_power_of_two() {
            return Err(BmapError::Inconsistent(format!(
                "BlockSize {block_size} is not a power of two from 512 to 1 MiB"
            )));
        }
        if image_size == 0 {
            return Err(BmapError::Inconsistent("ImageSize is 0".into()));
        }
        if image_size.div_ceil(block_size) != blocks_count {
            return Err(BmapError::Inconsistent(format!(
                "BlocksCount {blocks_count} does not match ImageSize {image_size} in blocks of {block_size}"
            )));
        }
        let mut ranges: Vec<Range> = Vec::with_capacity(self.ranges.len());
        for (line, sum, text) in self.ranges {
            let bad = |what| BmapError::Range {
                line,
                text: escape(text),
                what,
            };
            let (first, last) = match text.split_once('-') {
                Some((a, b)) => (digits(a.trim()), digits(b.trim())),
                None => (digits(text), digits(text)),
            };
            let (Some(first), Some(last)) = (first, last) else {
                return Err(bad("not a block number or FIRST-LAST"));
            };
            if first > last {
                return Err(bad("first block after last"));
            }
            if last >= blocks_count {
                return Err(bad("past the end of the image"));
            }
            if let Some(prev) = ranges.last()
                && first <= prev.last
            {
                return Err(bad("overlaps or comes before the previous range"));
            }
            let sum = sum.ok_or_else(|| bad("no chksum"))?;
            let sha256 = ObjectId::parse_hex(sum.as_bytes())
                .map_err(|_| bad("chksum is not a sha256 (64 hexadecimal digits)"))?;
            ranges.push(Range {
                first,
                last,
                sha256: *sha256.as_bytes(),
            });
        }
        let bmap = Bmap {
            image_size,
            block_size,
            ranges,
        };
        if bmap.mapped_blocks() != mapped_count {
            return Err(BmapError::Inconsistent(format!(
                "MappedBlocksCount {mapped_count} but the ranges hold {} blocks",
                bmap.mapped_blocks()
            )));
        }
        Ok(bmap)
    }
}

/// A decimal number of at most 19 digits (no sign, no spaces inside), below 2^63 so
/// products with a block size are checked rather than wrapped.
fn digits(s: &str) -> Option<u64> {
    if s.is_empty() || s.len() > 19 || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok().filter(|n: &u64| *n < 1 << 62)
}

fn number(field: Option<(usize, &str)>, name: &'static str) -> Result<u64, BmapError> {
    let (line, text) = field.ok_or(BmapError::Missing(name))?;
    digits(text).ok_or_else(|| BmapError::Syntax {
        line,
        what: format!("<{name}> {:?} is not a number", escape(text)),
    })
}

#[cfg(test)]
mod tests {
    use super::super::tests::sample;
    use super::*;

    fn resign(x: &str) -> String {
        let at = x.find("<BmapFileChecksum> ").unwrap() + 19;
        let mut z = x.to_owned();
        z.replace_range(at..at + 64, &"0".repeat(64));
        let sum = ObjectId::digest(z.as_bytes()).to_string();
        z.replace_range(at..at + 64, &sum);
        z
    }

    fn without_line(x: &str, needle: &str) -> String {
        x.lines()
            .filter(|l| !l.contains(needle))
            .flat_map(|l| [l, "\n"])
            .collect()
    }

    #[test]
    #[allow(clippy::too_many_lines)] // one table of cases
    fn hostile_bmaps_are_refused_with_the_cause() {
        let good = sample().to_xml();
        let r0 = format!("<Range chksum=\"{}\"> 0-2 </Range>", "01".repeat(32));
        let sum2 = "02".repeat(32);
        // (name, edit of the good text, re-sign after, expected message part)
        #[rustfmt::skip]
        let cases: Vec<(&str, String, bool, &str)> = vec![
            (
                "flipped byte",
                good.replacen("0-2", "0-3", 1),
                false,
                "checksum mismatch",
            ),
            (
                "no checksum field",
                without_line(&good, "<BmapFileChecksum>"),
                false,
                "<BmapFileChecksum> is missing",
            ),
            (
                "version 1.4",
                good.replacen("version=\"2.0\"", "version=\"1.4\"", 1),
                true,
                "version 1.4",
            ),
            (
                "version 3.0",
                good.replacen("version=\"2.0\"", "version=\"3.0\"", 1),
                true,
                "version 3.0",
            ),
            (
                "sha1",
                good.replacen("> sha256 <", "> sha1 <", 1),
                true,
                "checksum type \"sha1\"",
            ),
            (
                "range past the end",
                good.replacen("9-10 ", "9-11 ", 1),
                true,
                "past the end",
            ),
            (
                "unsorted",
                good.replacen("> 5 <", "> 1 <", 1),
                true,
                "overlaps or comes before",
            ),
            (
                "overlapping",
                good.replacen("> 5 <", "> 2 <", 1),
                true,
                "overlaps or comes before",
            ),
            (
                "first after last",
                good.replacen("9-10 ", "10-9 ", 1),
                true,
                "first block after last",
            ),
            (
                "range text",
                good.replacen("> 5 <", "> five <", 1),
                true,
                "not a block number",
            ),
            (
                "negative",
                good.replacen("> 5 <", "> -5 <", 1),
                true,
                "not a block number",
            ),
            (
                "huge",
                good.replacen("> 5 <", "> 99999999999999999999999 <", 1),
                true,
                "not a block number",
            ),
            (
                "no chksum",
                good.replacen(&format!(" chksum=\"{sum2}\""), "", 1),
                true,
                "no chksum",
            ),
            (
                "short chksum",
                good.replacen(&sum2, "0202", 1),
                true,
                "not a sha256",
            ),
            (
                "mapped count",
                good.replacen("> 6 </Mapped", "> 7 </Mapped", 1),
                true,
                "MappedBlocksCount 7",
            ),
            (
                "blocks count",
                good.replacen("> 11 </Blocks", "> 12 </Blocks", 1),
                true,
                "BlocksCount 12",
            ),
            (
                "block size",
                good.replacen("> 4096 </BlockSize", "> 4000 </BlockSize", 1),
                true,
                "BlockSize 4000",
            ),
            (
                "zero size",
                good.replacen("> 41060 <", "> 0 <", 1)
                    .replacen("> 11 </Blocks", "> 0 </Blocks", 1),
                true,
                "ImageSize is 0",
            ),
            (
                "size text",
                good.replacen("> 41060 <", "> 4e4 <", 1),
                true,
                "<ImageSize> \"4e4\" is not a number",
            ),
            (
                "two sizes",
                good.replacen("<BlockSize>", "<ImageSize> 1 </ImageSize><BlockSize>", 1),
                true,
                "<ImageSize> appears twice",
            ),
            (
                "unknown element",
                good.replacen("<BlockSize>", "<Extra> 1 </Extra><BlockSize>", 1),
                true,
                "unknown element <Extra>",
            ),
            (
                "entity",
                good.replacen("> 5 <", "> &#53; <", 1),
                true,
                "entities",
            ),
            (
                "doctype",
                good.replacen("<bmap ", "<!DOCTYPE x><bmap ", 1),
                true,
                "unexpected <!DOCTYPE",
            ),
            (
                "unknown attribute",
                good.replacen(&r0, "<Range x=\"1\"> 0-2 </Range>", 1),
                true,
                "unknown attribute",
            ),
            (
                "nested in range",
                good.replacen("> 5 <", "><b>5</b><", 1),
                true,
                "holds something other than text",
            ),
            (
                "unterminated",
                good.replacen("</bmap>", "", 1),
                true,
                "unterminated <bmap>",
            ),
            (
                "trailing",
                format!("{good}<bmap>"),
                true,
                "content after </bmap>",
            ),
            (
                "no block map",
                without_line(&without_line(&good, "Range"), "BlockMap>"),
                true,
                "<BlockMap> is missing",
            ),
            ("not xml", "hello".into(), false, "expected <bmap"),
            ("empty", String::new(), false, "<bmap> is missing"),
        ];
        for (name, text, sign, want) in cases {
            let text = if sign { resign(&text) } else { text };
            let err = Bmap::parse(text.as_bytes()).expect_err(name).to_string();
            assert!(err.contains(want), "{name}: {err:?} lacks {want:?}");
            assert!(!err.contains('\n'), "{name}: not one line: {err:?}");
        }
        assert_eq!(Bmap::parse(&[0xff, 0xfe]), Err(BmapError::NotText));
        let big = vec![b' '; usize::try_from(MAX_BMAP_BYTES).unwrap() + 1];
        assert_eq!(Bmap::parse(&big), Err(BmapError::TooLarge));
    }

    #[test]
    fn a_bmap_from_bmap_tools_parses() {
        // Written by bmaptool 3.6 (`bmaptool create`) for a 3-block image whose middle
        // block is a hole: its declaration, comments and spacing.
        let text = include_str!("../../tests/data/bmaptool-3.6.bmap");
        let b = Bmap::parse(text.as_bytes()).unwrap();
        assert_eq!(b.image_size, 12288);
        assert_eq!(b.block_size, 4096);
        assert_eq!(
            b.ranges
                .iter()
                .map(|r| (r.first, r.last))
                .collect::<Vec<_>>(),
            [(0, 0), (2, 2)]
        );
    }
}
