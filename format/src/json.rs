//! A minimal JSON writer, for `/run/berth/boot.json` ([`crate::bootreport`]) and
//! berth-init's dry-run output.
//!
//! No `core::fmt` and no serde: berth-init links this, and its size budget counts every
//! formatting routine. The output is compact (no spaces), keys come in the order written.

use alloc::vec::Vec;

/// Appends JSON to a byte buffer. The caller keeps the structure balanced; commas are
/// inserted automatically.
#[derive(Debug, Default)]
pub struct Json {
    /// The JSON text so far.
    pub out: Vec<u8>,
    need_comma: bool,
}

impl Json {
    fn sep(&mut self) {
        if self.need_comma {
            self.out.push(b',');
        }
        self.need_comma = true;
    }

    /// `{`
    pub fn open(&mut self) -> &mut Self {
        self.sep();
        self.out.push(b'{');
        self.need_comma = false;
        self
    }
    /// `}`
    pub fn close(&mut self) -> &mut Self {
        self.out.push(b'}');
        self.need_comma = true;
        self
    }
    /// `[`
    pub fn open_list(&mut self) -> &mut Self {
        self.sep();
        self.out.push(b'[');
        self.need_comma = false;
        self
    }
    /// `]`
    pub fn close_list(&mut self) -> &mut Self {
        self.out.push(b']');
        self.need_comma = true;
        self
    }
    /// `"key":` (the value follows).
    pub fn key(&mut self, k: &str) -> &mut Self {
        self.sep();
        self.string_raw(k.as_bytes());
        self.out.push(b':');
        self.need_comma = false;
        self
    }
    /// A string; bytes that are not printable ASCII are escaped as `\u00XX`.
    pub fn str(&mut self, s: &[u8]) -> &mut Self {
        self.sep();
        self.string_raw(s);
        self
    }
    /// A string, or `null`.
    pub fn opt_str(&mut self, s: Option<&[u8]>) -> &mut Self {
        match s {
            Some(s) => self.str(s),
            None => self.null(),
        }
    }
    /// A number.
    pub fn num(&mut self, n: u64) -> &mut Self {
        self.sep();
        let mut b = [0u8; 20];
        self.out.extend_from_slice(u64_dec(&mut b, n));
        self
    }
    /// A number, or `null`.
    pub fn opt_num(&mut self, n: Option<u64>) -> &mut Self {
        match n {
            Some(n) => self.num(n),
            None => self.null(),
        }
    }
    /// `true`/`false`.
    pub fn bool(&mut self, v: bool) -> &mut Self {
        self.sep();
        self.out
            .extend_from_slice(if v { b"true" } else { b"false" });
        self
    }
    /// `null`.
    pub fn null(&mut self) -> &mut Self {
        self.sep();
        self.out.extend_from_slice(b"null");
        self
    }

    fn string_raw(&mut self, s: &[u8]) {
        const HEX: &[u8; 16] = b"0123456789abcdef";
        self.out.push(b'"');
        for &c in s {
            match c {
                b'"' => self.out.extend_from_slice(b"\\\""),
                b'\\' => self.out.extend_from_slice(b"\\\\"),
                0x20..=0x7e => self.out.push(c),
                // `c >> 4` and `c & 15` are below 16, the length of HEX.
                _ => self.out.extend_from_slice(&[
                    b'\\',
                    b'u',
                    b'0',
                    b'0',
                    HEX[usize::from(c >> 4)],
                    HEX[usize::from(c & 15)],
                ]),
            }
        }
        self.out.push(b'"');
    }
}

/// The decimal digits of `n`, written at the end of `buf` (berth-init's log lines use
/// this too: one number formatter in the binary, and no `core::fmt`).
pub fn u64_dec(buf: &mut [u8; 20], mut n: u64) -> &[u8] {
    let mut i = buf.len();
    // u64::MAX has 20 digits, so `i` reaches 0 at the latest with the last digit.
    for slot in buf.iter_mut().rev() {
        // n % 10 < 10, so the cast cannot truncate.
        *slot = b'0' + u8::try_from(n % 10).unwrap_or(0);
        i -= 1;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    buf.get(i..).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_valid_json() {
        let mut j = Json::default();
        j.open()
            .key("a")
            .str(b"x\"y\n\xff")
            .key("b")
            .open_list()
            .num(1)
            .num(22)
            .close_list()
            .key("c")
            .null()
            .key("d")
            .bool(true)
            .close();
        let text = core::str::from_utf8(&j.out).unwrap();
        assert_eq!(
            text,
            r#"{"a":"x\"y\u000a\u00ff","b":[1,22],"c":null,"d":true}"#
        );
    }

    #[test]
    fn numbers() {
        for (n, text) in [
            (0, "0"),
            (7, "7"),
            (10, "10"),
            (1_234_567_890, "1234567890"),
            (u64::MAX, "18446744073709551615"),
        ] {
            let mut j = Json::default();
            j.num(n);
            assert_eq!(j.out, text.as_bytes());
        }
    }
}
