//! An allocator that measures what one harness execution allocates, so that unbounded allocation is a finding.
//!
//! Installed as the global allocator of every binary that links this crate
//! (the `witmed-fuzz` runner and its tests). While a thread is [`track`]ing,
//! it counts that thread's live bytes and their peak. A single request over
//! [`HARD_LIMIT`] is never passed on: the input being executed is written to
//! the file named by [`set_abort_file`] and the process aborts, because a
//! decoder that asks for that much from a bounded input would take the node
//! down the same way.
//!
//! Only thread-local cells and atomics are touched inside the allocator:
//! nothing here allocates or takes a lock.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::fs::File;
use std::io::Write;
use std::sync::atomic::{AtomicPtr, AtomicUsize, Ordering};
use std::sync::OnceLock;

/// Largest single allocation any harness may request: no witmed decoder
/// needs a quarter of this for the biggest input it accepts.
pub const HARD_LIMIT: usize = 1 << 30;

thread_local! {
    static TRACKING: Cell<bool> = const { Cell::new(false) };
    static LIVE: Cell<usize> = const { Cell::new(0) };
    static PEAK: Cell<usize> = const { Cell::new(0) };
}

/// The input under execution (set by [`track`]), for the abort file.
static INPUT_PTR: AtomicPtr<u8> = AtomicPtr::new(std::ptr::null_mut());
static INPUT_LEN: AtomicUsize = AtomicUsize::new(0);
static ABORT_FILE: OnceLock<File> = OnceLock::new();

/// Sets the file the current input is written to before an over-limit abort.
pub fn set_abort_file(file: File) {
    let _ = ABORT_FILE.set(file);
}

/// The global allocator: the system's, with per-thread accounting.
pub struct Tracking;

unsafe impl GlobalAlloc for Tracking {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        before_alloc(layout.size());
        System.alloc(layout)
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        before_alloc(layout.size());
        System.alloc_zeroed(layout)
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        freed(layout.size());
        System.dealloc(ptr, layout)
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        before_alloc(new_size);
        freed(layout.size());
        System.realloc(ptr, layout, new_size)
    }
}

#[global_allocator]
static GLOBAL: Tracking = Tracking;

fn before_alloc(size: usize) {
    // `try_with` because thread-locals may be gone while a thread exits.
    let tracking = TRACKING.try_with(Cell::get).unwrap_or(false);
    if !tracking {
        return;
    }
    if size > HARD_LIMIT {
        abort_over_limit(size);
    }
    let _ = LIVE.try_with(|live| {
        let now = live.get().saturating_add(size);
        live.set(now);
        let _ = PEAK.try_with(|peak| peak.set(peak.get().max(now)));
    });
}

fn freed(size: usize) {
    let _ = LIVE.try_with(|live| live.set(live.get().saturating_sub(size)));
}

fn abort_over_limit(size: usize) -> ! {
    let mut stderr = std::io::stderr();
    let _ = stderr.write_all(b"witmed-fuzz: a single allocation of ");
    let _ = write_decimal(&mut stderr, size);
    let _ = stderr.write_all(b" bytes was requested, over the 1 GiB limit\n");
    abort_with_input("unbounded allocation")
}

/// Saves the input under execution to the abort file and aborts the process.
///
/// Allocates nothing, so it is safe inside the allocator and from the watchdog.
pub fn abort_with_input(reason: &str) -> ! {
    let mut stderr = std::io::stderr();
    let _ = stderr.write_all(b"witmed-fuzz: aborting: ");
    let _ = stderr.write_all(reason.as_bytes());
    let _ = stderr.write_all(b"; the input is in the target's abort file under crashes/\n");
    if let Some(mut file) = ABORT_FILE.get() {
        let ptr = INPUT_PTR.load(Ordering::SeqCst);
        let len = INPUT_LEN.load(Ordering::SeqCst);
        if !ptr.is_null() {
            // SAFETY: `track` keeps the input borrowed, alive and unmoved while
            // it is published here, and the execution is still inside `track`.
            let input = unsafe { std::slice::from_raw_parts(ptr, len) };
            let _ = file.write_all(input);
            let _ = file.sync_all();
        }
    }
    std::process::abort()
}

/// Writes `n` in decimal without allocating.
fn write_decimal(out: &mut impl Write, mut n: usize) -> std::io::Result<()> {
    let mut digits = [0u8; 20];
    let mut i = digits.len();
    loop {
        i -= 1;
        digits[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.write_all(&digits[i..])
}

/// Runs `f` on `input`, returning its result and the peak bytes it held
/// live at once beyond what was live when it started.
pub fn track<R>(input: &[u8], f: impl FnOnce() -> R) -> (R, usize) {
    INPUT_PTR.store(input.as_ptr().cast_mut(), Ordering::SeqCst);
    INPUT_LEN.store(input.len(), Ordering::SeqCst);
    LIVE.with(|live| live.set(0));
    PEAK.with(|peak| peak.set(0));
    TRACKING.with(|t| t.set(true));
    let result = f();
    TRACKING.with(|t| t.set(false));
    INPUT_PTR.store(std::ptr::null_mut(), Ordering::SeqCst);
    (result, PEAK.with(Cell::get))
}
