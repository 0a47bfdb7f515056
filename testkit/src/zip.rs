//! Zip archives for the zip patch tests, made by Python's `zipfile` (the archives real
//! wheels and jars are like), with fixed dates so the same members make the same bytes.

use std::fmt::Write as _;
use std::process::Command;

/// A zip archive of `members` (name, content, and whether it is stored rather than
/// deflated), deflated at `level`; `None` without python3.
///
/// # Panics
/// When the temporary files cannot be written or Python fails on them.
#[must_use]
pub fn python_zip(members: &[(&str, &[u8], bool)], level: u32) -> Option<Vec<u8>> {
    let dir = tempfile::tempdir().unwrap();
    let mut script = String::from("import sys, zipfile\nz = zipfile.ZipFile(sys.argv[1], 'w')\n");
    for (i, (name, data, stored)) in members.iter().enumerate() {
        let file = dir.path().join(format!("m{i}"));
        std::fs::write(&file, data).unwrap();
        let kind = if *stored {
            "ZIP_STORED"
        } else {
            "ZIP_DEFLATED"
        };
        writeln!(
            script,
            "i = zipfile.ZipInfo('{name}', (2020, 1, 1, 0, 0, 0)); i.compress_type = zipfile.{kind}\n\
             z.writestr(i, open('{}', 'rb').read(), compresslevel={level})",
            file.display()
        )
        .unwrap();
    }
    script.push_str("z.close()\n");
    let out = dir.path().join("out.zip");
    let status = Command::new("python3")
        .arg("-c")
        .arg(&script)
        .arg(&out)
        .status()
        .ok()?;
    assert!(status.success(), "python3 zipfile failed");
    std::fs::read(&out).ok()
}
