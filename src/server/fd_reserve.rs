//! A few file descriptors held back for the admin listener. When public
//! connections use up the open-file limit, `accept` fails with EMFILE on
//! every listener, and `/healthz` would stop answering just when an
//! operator (or a liveness probe) needs it. The admin accept loop hands one
//! of these back to the kernel and accepts into it; the reserve fills again
//! whenever descriptors are free.

use std::fs::File;
use std::io;
use std::sync::{Mutex, PoisonError};

/// Descriptors kept: enough for a probe and a scrape at the same moment.
const RESERVED: usize = 4;

/// Spare descriptors (open handles on `/dev/null`).
#[derive(Debug)]
pub struct FdReserve {
    spare: Mutex<Vec<File>>,
}

impl FdReserve {
    /// Takes up to the reserved number of descriptors now.
    pub fn new() -> FdReserve {
        let reserve = FdReserve {
            spare: Mutex::new(Vec::with_capacity(RESERVED)),
        };
        reserve.refill();
        reserve
    }

    /// Gives one descriptor back to the kernel; false when none is left.
    pub fn release_one(&self) -> bool {
        self.lock().pop().is_some()
    }

    /// Takes descriptors back up to the reserved number, as far as the
    /// limit allows now.
    pub fn refill(&self) {
        let mut spare = self.lock();
        while spare.len() < RESERVED {
            match File::open("/dev/null") {
                Ok(file) => spare.push(file),
                Err(_) => break,
            }
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<File>> {
        self.spare.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Whether an accept failed because descriptors ran out (EMFILE, ENFILE).
pub fn is_out_of_descriptors(error: &io::Error) -> bool {
    matches!(error.raw_os_error(), Some(libc::EMFILE | libc::ENFILE))
}
