//! File and ELF patches: windows of a bidiff patch over slices of the base file, and
//! ELF references turned back as the new file streams by.

use std::cell::{Cell, RefCell};
use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};
use std::os::unix::fs::FileExt;

use format::elfpatch::{Direction, ElfHead, Rewriter};
use format::ops::{self, PatchHead};
use format::{EntryKind, ObjectId};
use store::Txn;

use super::{Applier, hash_only};
use crate::UpdaterError;
use crate::error::bad;

impl Applier<'_, '_> {
    /// A file patch, or with `elf` an ELF patch: the windows make the normalized file,
    /// whose references the head's map turns back as it streams by.
    pub(super) fn apply_patch<R: Read>(
        &self,
        txn: &mut Txn<'_>,
        r: &mut R,
        ph: &PatchHead,
        elf: Option<&ElfHead>,
    ) -> Result<ObjectId, UpdaterError> {
        let shown = self.shown;
        let base = self
            .base_entry(ph.base, EntryKind::File)
            .map_err(|e| bad(shown, e.to_string()))?;
        let (bheader, base_file) = self.base_file(&base, "a patch")?;
        if let Some(w) = ph
            .windows
            .iter()
            .find(|w| w.base_start + w.base_len > bheader.size)
        {
            return Err(bad(
                shown,
                format!(
                    "a patch window reads base bytes {}..{}, past the end of {base} ({} bytes)",
                    w.base_start,
                    w.base_start + w.base_len,
                    bheader.size
                ),
            ));
        }
        let src = RefCell::new(r);
        let patch_left = Cell::new(0);
        let mut windows = Windows {
            src: &src,
            patch_left: &patch_left,
            base: &base_file,
            list: &ph.windows,
            next: 0,
            current: None,
        };
        let rewriter = elf
            .map(|h| Rewriter::new(h.arch, &h.code, &h.map, Direction::Restore))
            .transpose()
            .map_err(|e| bad(shown, format!("operation {}: {e}", self.ops)))?;
        let mut restored;
        let content: &mut dyn Read = match rewriter {
            Some(rw) => {
                restored = Restore::new(&mut windows, rw, ph.header.size);
                &mut restored
            }
            None => &mut windows,
        };
        if let Some(why) = self.forbid.refuses(&ph.header) {
            let id = hash_only(&ph.header, content, shown)?;
            windows.finish().map_err(|e| bad(shown, e.to_string()))?;
            return Err(self.forbidden(&why, &id, self.ops));
        }
        let id = txn.write_file(&ph.header, content, shown)?;
        // write_file stops at the header's size; every window must have ended exactly.
        windows.finish().map_err(|e| bad(shown, e.to_string()))?;
        Ok(id)
    }
}

/// An ELF patch's new file, from its normalized form as the windows make it: the sites
/// are turned back a buffer at a time (64 KiB), holding back the few bytes a site
/// that straddles the buffer's end needs.
struct Restore<'a> {
    inner: &'a mut dyn Read,
    rw: Rewriter,
    buf: Vec<u8>,
    /// File offset of `buf[0]`; bytes of `buf` before `ready` are final, before `out`
    /// already given out.
    start: u64,
    ready: usize,
    out: usize,
    /// The file's size: reaching it ends the stream, whatever comes after.
    size: u64,
}

impl<'a> Restore<'a> {
    fn new(inner: &'a mut dyn Read, rw: Rewriter, size: u64) -> Self {
        Self {
            inner,
            rw,
            buf: Vec::with_capacity(64 << 10),
            start: 0,
            ready: 0,
            out: 0,
            size,
        }
    }
}

impl Read for Restore<'_> {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        while self.out == self.ready {
            // Drop what was given out; read on after what was kept.
            self.buf.drain(..self.out);
            self.start += self.out as u64;
            self.ready = 0;
            self.out = 0;
            let have = self.start + self.buf.len() as u64;
            if have >= self.size {
                return Ok(0);
            }
            let want = usize::try_from((self.size - have).min(64 << 10)).unwrap_or(64 << 10);
            let at = self.buf.len();
            self.buf.resize(at + want, 0);
            let k = self.inner.read(&mut self.buf[at..])?;
            self.buf.truncate(at + k);
            let last = k == 0 || self.start + self.buf.len() as u64 == self.size;
            let done = self.rw.run(&mut self.buf, self.start, last);
            self.ready = usize::try_from(done - self.start).unwrap_or(self.buf.len());
            if k == 0 && self.ready == 0 {
                // The windows ended early; write_file reports the short file.
                return Ok(0);
            }
        }
        let n = out.len().min(self.ready - self.out);
        out[..n].copy_from_slice(&self.buf[self.out..self.out + n]);
        self.out += n;
        Ok(n)
    }
}

/// A window of the base file, read with `pread`, seekable only within itself.
pub(super) struct Slice<'f> {
    pub(super) file: &'f File,
    pub(super) start: u64,
    pub(super) len: u64,
    pub(super) pos: u64,
}

impl Read for Slice<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let left = self.len - self.pos;
        let n = usize::try_from(left).map_or(buf.len(), |l| l.min(buf.len()));
        let k = self.file.read_at(&mut buf[..n], self.start + self.pos)?;
        self.pos += k as u64;
        Ok(k)
    }
}

impl Seek for Slice<'_> {
    fn seek(&mut self, to: SeekFrom) -> io::Result<u64> {
        let (from, delta) = match to {
            SeekFrom::Start(n) => (0i128, i128::from(n)),
            SeekFrom::Current(d) => (i128::from(self.pos), i128::from(d)),
            SeekFrom::End(d) => (i128::from(self.len), i128::from(d)),
        };
        self.pos = u64::try_from(from + delta)
            .ok()
            .filter(|&at| at <= self.len)
            .ok_or_else(|| invalid("a patch seeks outside its base window".into()))?;
        Ok(self.pos)
    }
}

/// At most `left` bytes of the part's stream, shared by the windows in turn.
struct Shared<'s, R> {
    src: &'s RefCell<&'s mut R>,
    left: &'s Cell<u64>,
}

impl<R: Read> Read for Shared<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let left = self.left.get();
        let n = usize::try_from(left).map_or(buf.len(), |l| l.min(buf.len()));
        if n == 0 {
            return Ok(0);
        }
        let k = self.src.borrow_mut().read(&mut buf[..n])?;
        if k == 0 {
            return Err(invalid("the part ends inside a patch".into()));
        }
        self.left.set(left - k as u64);
        Ok(k)
    }
}

type WindowReader<'s, 'f, R> = bipatch::Reader<Shared<'s, R>, Slice<'f>>;

/// The new file's content: each window's patch applied to its base slice, in order.
struct Windows<'s, 'f, R: Read> {
    src: &'s RefCell<&'s mut R>,
    /// Patch bytes of the current window not read yet.
    patch_left: &'s Cell<u64>,
    base: &'f File,
    list: &'s [ops::Window],
    next: usize,
    /// The window being read, and how many of its bytes are still to come.
    current: Option<(WindowReader<'s, 'f, R>, u64)>,
}

fn invalid(what: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, what)
}

impl<R: Read> Windows<'_, '_, R> {
    /// Ends the current window: it must make nothing more and have used its whole patch.
    fn close(&mut self) -> io::Result<()> {
        if let Some((mut reader, left)) = self.current.take() {
            if left != 0 {
                return Err(invalid(format!(
                    "patch window {} ends {left} bytes early",
                    self.next
                )));
            }
            let mut one = [0u8; 1];
            if reader.read(&mut one)? != 0 {
                return Err(invalid(format!(
                    "patch window {} makes more than its declared size",
                    self.next
                )));
            }
            if self.patch_left.get() != 0 {
                return Err(invalid(format!(
                    "patch window {} has {} bytes of patch left over",
                    self.next,
                    self.patch_left.get()
                )));
            }
        }
        Ok(())
    }

    /// After the last byte: every window was used, each to its end.
    fn finish(mut self) -> io::Result<()> {
        self.close()?;
        if self.next != self.list.len() {
            return Err(invalid("the patch has windows past the file's end".into()));
        }
        Ok(())
    }
}

impl<R: Read> Read for Windows<'_, '_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            let window = self.next;
            if let Some((reader, left)) = &mut self.current
                && *left > 0
            {
                let n = usize::try_from(*left).map_or(buf.len(), |l| l.min(buf.len()));
                let k = reader.read(&mut buf[..n]).map_err(|e| {
                    // bipatch says only "failed to fill whole buffer" when it runs out.
                    if e.kind() == io::ErrorKind::UnexpectedEof {
                        invalid(format!(
                            "bad patch: window {window} reads past its base bytes or past its patch"
                        ))
                    } else {
                        invalid(format!("bad patch: {e}"))
                    }
                })?;
                if k == 0 {
                    return Err(invalid(format!(
                        "patch window {} ends {left} bytes early",
                        self.next
                    )));
                }
                *left -= k as u64;
                return Ok(k);
            }
            self.close()?;
            let Some(w) = self.list.get(self.next) else {
                return Ok(0);
            };
            self.next += 1;
            self.patch_left.set(w.patch_len);
            let patch = Shared {
                src: self.src,
                left: self.patch_left,
            };
            let slice = Slice {
                file: self.base,
                start: w.base_start,
                len: w.base_len,
                pos: 0,
            };
            let reader = bipatch::Reader::new(patch, slice)
                .map_err(|e| invalid(format!("bad patch: {e}")))?;
            self.current = Some((reader, w.out_len));
        }
    }
}
