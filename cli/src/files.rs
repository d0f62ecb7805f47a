//! The one reader for every file the CLI reads: bounded, so a wrong path to a huge file fails fast and says so; and the writer of new output files.

use std::io::{Read, Write};
use std::path::Path;

use crate::code::Code;
use crate::failure::Failure;

/// A key file or a one-line public key: a few hundred bytes.
pub const MAX_KEY_FILE_BYTES: usize = 64 * 1024;

/// Reads `path` as UTF-8 text of at most `max` bytes.
///
/// Reads at most `max + 1` bytes whatever the file's size says, so a file
/// that grows while it is read cannot exceed the limit either.
pub fn read_text(path: &Path, max: usize) -> Result<String, Failure> {
    let unreadable =
        |e: std::io::Error| Failure::new(Code::ReadFailed, format!("{}: {e}", path.display()));
    let file = std::fs::File::open(path).map_err(unreadable)?;
    let mut bytes = Vec::new();
    file.take(max as u64 + 1)
        .read_to_end(&mut bytes)
        .map_err(unreadable)?;
    if bytes.len() > max {
        return Err(Failure::new(
            Code::TooLarge,
            format!(
                "{} is over the limit of {max} bytes for this kind of file: is it the right file?",
                path.display()
            ),
        ));
    }
    String::from_utf8(bytes).map_err(|_| {
        Failure::new(
            Code::ReadFailed,
            format!(
                "{} is not UTF-8 text: is it the right file?",
                path.display()
            ),
        )
    })
}

/// Writes `text` to `path`, a new file: an existing file is never overwritten.
pub fn write_new(path: &Path, text: &str) -> Result<(), Failure> {
    let failed =
        |e: std::io::Error| Failure::new(Code::WriteFailed, format!("{}: {e}", path.display()));
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(path)
        .map_err(failed)?;
    file.write_all(text.as_bytes()).map_err(failed)
}
