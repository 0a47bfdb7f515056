//! A coder that does not compress: one byte (0 or 1) per bit. `preflate-rs` uses it only
//! in its own tests, to look at the bits; Berth keeps it so that the API is complete.

use std::io::{self, Read, Write};

use crate::{CabacReader, CabacWriter};

/// The debug coder's context: nothing to learn.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct DebugContext;

/// Writes each bit as one byte, 0 or 1.
#[derive(Debug)]
pub struct DebugWriter<W> {
    out: W,
}

impl<W: Write> DebugWriter<W> {
    pub fn new(out: W) -> io::Result<Self> {
        Ok(Self { out })
    }
}

impl<W: Write> CabacWriter<DebugContext> for DebugWriter<W> {
    fn put_bypass(&mut self, bit: bool) -> io::Result<()> {
        self.out.write_all(&[u8::from(bit)])
    }

    fn put(&mut self, bit: bool, _ctx: &mut DebugContext) -> io::Result<()> {
        self.put_bypass(bit)
    }

    fn finish(&mut self) -> io::Result<()> {
        self.out.flush()
    }
}

/// Reads the bytes a [`DebugWriter`] wrote: a byte other than 0 is a 1; past the end,
/// every bit is 0.
#[derive(Debug)]
pub struct DebugReader<R> {
    input: R,
}

impl<R: Read> DebugReader<R> {
    pub fn new(input: R) -> io::Result<Self> {
        Ok(Self { input })
    }
}

impl<R: Read> CabacReader<DebugContext> for DebugReader<R> {
    fn get_bypass(&mut self) -> io::Result<bool> {
        let mut b = [0u8];
        loop {
            match self.input.read(&mut b) {
                Ok(0) => return Ok(false),
                Ok(_) => return Ok(b[0] != 0),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
    }

    fn get(&mut self, _ctx: &mut DebugContext) -> io::Result<bool> {
        self.get_bypass()
    }
}
