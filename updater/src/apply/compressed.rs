//! Deflate and zip patches: files made through their uncompressed data, whose streams
//! the part's children recreate (`crate::deflate`).

use std::io::Read;

use format::ops::DeflateHead;
use format::zippatch::ZipHead;
use format::{EntryKind, ObjectId};
use store::Txn;

use super::patch::Slice;
use super::{Applier, Waiting, hash_only};
use crate::UpdaterError;
use crate::error::bad;

impl Applier<'_, '_> {
    /// A gzip file from its base's uncompressed data (see `redeflate`): the base
    /// inflated to its declared size and no further and the patch applied, in memory
    /// (each side at most `ops::DEFLATE_PLAIN_MAX` uncompressed); the stream is then
    /// recreated by the part's child while the next operations are applied, and the
    /// file written and hashed as any file when it is settled.
    pub(super) fn apply_deflate<R: Read>(
        &mut self,
        txn: &mut Txn<'_>,
        r: &mut R,
        dh: DeflateHead,
    ) -> Result<(), UpdaterError> {
        let shown = self.shown;
        let op = self.ops;
        let base = self
            .base_entry(dh.base, EntryKind::File)
            .map_err(|e| bad(shown, format!("operation {op}: {e}")))?;
        let (bheader, base_file) = self.base_file(&base, "a deflate patch")?;
        if dh.base_start > bheader.size {
            return Err(bad(
                shown,
                format!(
                    "a deflate patch's stream starts at byte {}, past the end of {base} ({} bytes)",
                    dh.base_start, bheader.size
                ),
            ));
        }
        let stream = std::io::BufReader::new(Slice {
            file: &base_file,
            start: dh.base_start,
            len: bheader.size - dh.base_start,
            pos: 0,
        });
        let request = redeflate::prepare(stream, &dh, r)
            .map_err(|e| bad(shown, format!("operation {op}: {e}")))?;
        let bytes = (request.plain.len() + request.corrections.len()) as u64 + request.max;
        self.settle_over(txn, bytes)?;
        self.background.send(request);
        let slot = self.made.len();
        self.made.push((None, EntryKind::File));
        self.waiting_bytes += bytes;
        self.waiting.push_back(Waiting::Deflate {
            op,
            slot,
            head: Box::new(dh),
            bytes,
        });
        Ok(())
    }
}

impl Applier<'_, '_> {
    /// A zip archive from its base's expansion (see `redeflate::rebuild_zip`): the base
    /// expanded in memory (its streams inflated, each to its declared size and no
    /// further), the patch applied, each new stream recreated by the part's child, and
    /// the file written and hashed as it streams out.
    pub(super) fn apply_zip<R: Read>(
        &mut self,
        txn: &mut Txn<'_>,
        r: &mut R,
        zh: &ZipHead,
    ) -> Result<ObjectId, UpdaterError> {
        let shown = self.shown;
        let op = self.ops;
        let base = self
            .base_entry(zh.base, EntryKind::File)
            .map_err(|e| bad(shown, format!("operation {op}: {e}")))?;
        let (bheader, base_file) = self.base_file(&base, "a zip patch")?;
        if zh.base_len() != bheader.size {
            return Err(bad(
                shown,
                format!(
                    "a zip patch's pieces cover {} bytes of its base {base}, which has {}",
                    zh.base_len(),
                    bheader.size
                ),
            ));
        }
        // Its streams are recreated one by one by the same child: what waits for it
        // is settled first.
        self.finish(txn)?;
        let base_reader = std::io::BufReader::new(&base_file);
        let refuses = self.forbid.refuses(&zh.header);
        let background = &mut self.background;
        let made = redeflate::rebuild_zip(
            base_reader,
            zh,
            r,
            |plain, corrections, max| {
                background.send(redeflate::Request {
                    plain,
                    corrections,
                    max,
                });
                background.take()
            },
            |content| match &refuses {
                Some(_) => hash_only(&zh.header, content, shown).map(Err),
                None => txn
                    .write_file(&zh.header, content, shown)
                    .map(Ok)
                    .map_err(Into::into),
            },
        );
        match made {
            Ok(Ok(id)) => Ok(id),
            Ok(Err(id)) => Err(self.forbidden(refuses.as_deref().unwrap_or_default(), &id, op)),
            Err(redeflate::ZipError::Rebuild(e)) => Err(bad(shown, format!("operation {op}: {e}"))),
            Err(redeflate::ZipError::Consume(e)) => Err(e),
        }
    }
}
