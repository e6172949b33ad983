//! Tests too heavy to run beside each other on the 2-core CI machine (the stack
//! test's private dockerd building images, a real Home Assistant) take this turn:
//! one at a time, while the light tests go on in the other test thread. Each used to
//! be alone in its own test binary; in the one binary they would otherwise meet.

use std::sync::{Condvar, Mutex};

static BUSY: Mutex<bool> = Mutex::new(false);
static FREED: Condvar = Condvar::new();

/// Held while a heavy test runs; the next one starts when it is dropped (also when
/// the test panicked).
#[must_use]
pub struct HeavyTurn(());

/// Waits until no other heavy test runs.
pub fn turn() -> HeavyTurn {
    let mut busy = BUSY.lock().unwrap_or_else(|e| e.into_inner());
    while *busy {
        busy = FREED.wait(busy).unwrap_or_else(|e| e.into_inner());
    }
    *busy = true;
    HeavyTurn(())
}

impl Drop for HeavyTurn {
    fn drop(&mut self) {
        *BUSY.lock().unwrap_or_else(|e| e.into_inner()) = false;
        FREED.notify_one();
    }
}
