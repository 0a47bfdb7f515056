//! The tokens of a bmap: a tokenizer for the subset of XML bmaps use (the declaration,
//! comments, elements with attributes, text), attributes and leaf elements. Errors name
//! the line; untrusted text in them is quoted, shortened and on one line.

use super::BmapError;

/// One piece of the XML.
#[derive(Debug)]
pub(super) enum Token<'a> {
    Open {
        name: &'a str,
        attrs: &'a str,
    },
    Close(&'a str),
    /// Text between tags, with its byte offset.
    Text(&'a str, usize),
}

/// A tokenizer for the subset of XML a bmap uses: the declaration, comments, elements
/// with attributes, text. Anything else is a syntax error.
pub(super) struct Lexer<'a> {
    text: &'a str,
    /// Byte offset of the next token.
    pub(super) pos: usize,
}

impl<'a> Lexer<'a> {
    pub(super) fn new(text: &'a str) -> Self {
        Self { text, pos: 0 }
    }

    /// The line the next token starts on (from 1).
    pub(super) fn line(&self) -> usize {
        self.text[..self.pos].matches('\n').count() + 1
    }

    pub(super) fn err(&self, what: impl Into<String>) -> BmapError {
        BmapError::Syntax {
            line: self.line(),
            what: what.into(),
        }
    }

    pub(super) fn next(&mut self) -> Result<Option<Token<'a>>, BmapError> {
        loop {
            let rest = &self.text[self.pos..];
            if rest.is_empty() {
                return Ok(None);
            }
            if let Some(after) = rest.strip_prefix("<!--") {
                let end = after
                    .find("-->")
                    .ok_or_else(|| self.err("unterminated comment"))?;
                self.pos += 4 + end + 3;
                continue;
            }
            if rest.starts_with("<?") {
                if self.pos != 0 {
                    return Err(self.err("a processing instruction after the start"));
                }
                let end = rest
                    .find("?>")
                    .ok_or_else(|| self.err("unterminated XML declaration"))?;
                if !rest.starts_with("<?xml ") {
                    return Err(self.err("a processing instruction other than <?xml"));
                }
                self.pos += end + 2;
                continue;
            }
            if let Some(after) = rest.strip_prefix('<') {
                let end = after
                    .find('>')
                    .ok_or_else(|| self.err("unterminated tag"))?;
                let inner = &after[..end];
                if inner.contains('<') {
                    return Err(self.err("'<' inside a tag"));
                }
                let tok = if let Some(name) = inner.strip_prefix('/') {
                    Token::Close(name.trim_end())
                } else {
                    if inner.ends_with('/') || inner.starts_with('!') {
                        return Err(self.err(format!("unexpected <{}>", escape(inner))));
                    }
                    let name_end = inner
                        .find(|c: char| c.is_ascii_whitespace())
                        .unwrap_or(inner.len());
                    Token::Open {
                        name: &inner[..name_end],
                        attrs: &inner[name_end..],
                    }
                };
                self.pos += 1 + end + 1;
                return Ok(Some(tok));
            }
            let end = rest.find('<').unwrap_or(rest.len());
            let text = &rest[..end];
            if text.contains('&') || text.contains('>') {
                return Err(self.err("'&' or '>' in text (entities are not used in a bmap)"));
            }
            let at = self.pos;
            self.pos += end;
            return Ok(Some(Token::Text(text, at)));
        }
    }
}

/// Quoted untrusted text, shortened and on one line.
pub(super) fn escape(s: &str) -> String {
    let short: String = s.chars().take(40).collect();
    let mut out = short.escape_default().to_string();
    if s.chars().count() > 40 {
        out.push('…');
    }
    out
}

/// The value of attribute `want` in `attrs` (` a="1" b='2'`); errors on malformed ones.
pub(super) fn attribute<'a>(
    attrs: &'a str,
    want: &str,
    lex: &Lexer<'_>,
) -> Result<Option<&'a str>, BmapError> {
    let mut found = None;
    let mut rest = attrs.trim_start();
    while !rest.is_empty() {
        let eq = rest
            .find('=')
            .ok_or_else(|| lex.err(format!("malformed attributes {:?}", escape(attrs))))?;
        let name = rest[..eq].trim();
        let value_part = rest[eq + 1..].trim_start();
        let quote = value_part
            .chars()
            .next()
            .filter(|c| *c == '"' || *c == '\'')
            .ok_or_else(|| lex.err(format!("unquoted attribute {:?}", escape(name))))?;
        let body = &value_part[1..];
        let close = body
            .find(quote)
            .ok_or_else(|| lex.err(format!("unterminated attribute {:?}", escape(name))))?;
        let value = &body[..close];
        if value.contains('&') {
            return Err(lex.err("'&' in an attribute (entities are not used in a bmap)"));
        }
        if name == want {
            if found.is_some() {
                return Err(lex.err(format!("attribute {want} twice")));
            }
            found = Some(value);
        } else {
            return Err(lex.err(format!("unknown attribute {:?}", escape(name))));
        }
        rest = body[close + 1..].trim_start();
    }
    Ok(found)
}

/// The text of a leaf element whose start tag was just read, and its byte offset; then
/// its end tag.
pub(super) fn leaf<'a>(lex: &mut Lexer<'a>, name: &str) -> Result<(&'a str, usize), BmapError> {
    let (value, at) = match lex.next()? {
        Some(Token::Text(t, at)) => (t, at),
        Some(Token::Close(n)) if n == name => return Ok(("", lex.pos)),
        _ => return Err(lex.err(format!("<{name}> holds something other than text"))),
    };
    match lex.next()? {
        Some(Token::Close(n)) if n == name => Ok((value, at)),
        _ => Err(lex.err(format!("<{name}> is not closed after its text"))),
    }
}
