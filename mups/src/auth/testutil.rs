//! Test helpers: a self-removing temporary directory and a clock moved by hand.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use time::OffsetDateTime;

/// A fresh directory under the system temp dir, removed on drop.
pub(crate) struct TempDir(PathBuf);

impl TempDir {
    pub(crate) fn new() -> Self {
        static N: AtomicU64 = AtomicU64::new(0);
        let path = std::env::temp_dir().join(format!(
            "mups-auth-test-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).unwrap();
        Self(path)
    }

    pub(crate) fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A clock that only moves when told to.
#[derive(Clone)]
pub(crate) struct ManualClock(Arc<Mutex<OffsetDateTime>>);

impl ManualClock {
    pub(crate) fn new() -> Self {
        Self(Arc::new(Mutex::new(time::macros::datetime!(2026-03-01 12:00:00 UTC))))
    }

    pub(crate) fn now(&self) -> OffsetDateTime {
        *self.0.lock().unwrap()
    }

    pub(crate) fn advance(&self, d: std::time::Duration) {
        *self.0.lock().unwrap() += d;
    }
}
