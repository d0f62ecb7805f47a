//! The one writer for everything the CLI prints on stdout: a reader that stops early (`| head`) ends output quietly.
//!
//! Why a writer and not SIGPIPE's default: with SIGPIPE restored, a closed
//! pipe would kill the process mid-command, e.g. in the middle of an import's
//! last durable batch or before the audit entry of a query is written. Here the
//! command finishes its work and its exit status says how the work went; only
//! the printing stops. A write that fails for another reason (disk full on a
//! redirected stdout) is reported once on stderr and makes the exit status
//! non-zero, since the reader did not get the output.

use std::fmt::Arguments;
use std::io::{self, Write};
use std::sync::atomic::{AtomicU8, Ordering};

use serde::Serialize;

use crate::code::Code;

const OPEN: u8 = 0;
const CLOSED_BY_READER: u8 = 1;
const FAILED: u8 = 2;

static STATE: AtomicU8 = AtomicU8::new(OPEN);

/// Writes `args` and a newline to stdout, unless the reader has gone.
pub fn line(args: Arguments<'_>) {
    if STATE.load(Ordering::Relaxed) != OPEN {
        return;
    }
    let mut out = io::stdout().lock();
    let written = out.write_fmt(args).and_then(|()| out.write_all(b"\n"));
    if let Err(e) = written {
        note_failure(&e);
    }
}

/// Writes `args` without a newline (for prompts and progress on one line).
pub fn text(args: Arguments<'_>) {
    if STATE.load(Ordering::Relaxed) != OPEN {
        return;
    }
    let mut out = io::stdout().lock();
    let written = out.write_fmt(args).and_then(|()| out.flush());
    if let Err(e) = written {
        note_failure(&e);
    }
}

/// Writes `value` as one pretty-printed JSON object (what `--json` prints).
pub fn json(value: &impl Serialize) {
    line(format_args!(
        "{}",
        serde_json::to_string_pretty(value).expect("output serializes")
    ));
}

fn note_failure(e: &io::Error) {
    if e.kind() == io::ErrorKind::BrokenPipe {
        STATE.store(CLOSED_BY_READER, Ordering::Relaxed);
    } else {
        eprintln!(
            "error[{}]: could not write to stdout: {e}; check where stdout goes (disk full?)",
            Code::OutputFailed
        );
        STATE.store(FAILED, Ordering::Relaxed);
    }
}

/// Flushes what is buffered; true unless writing failed for a reason other than a closed pipe.
pub fn finish() -> bool {
    if STATE.load(Ordering::Relaxed) == OPEN {
        if let Err(e) = io::stdout().lock().flush() {
            note_failure(&e);
        }
    }
    STATE.load(Ordering::Relaxed) != FAILED
}
