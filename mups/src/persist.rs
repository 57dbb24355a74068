//! What `mups` keeps across a restart: each bank's route (the node it is on), its
//! admin intent (the node the operator chose), and maintenance flags of banks and
//! nodes. One small JSON file, `routes.json` in `[mups] state_dir`, replaced
//! atomically (write a temporary file, fsync, rename, fsync the directory), so a
//! crash at any moment leaves either the old file or the new one, never a torn one.
//!
//! The router driver publishes the state on a `watch` channel whenever it changes;
//! [`run_writer`] writes the latest version off the driver's task (writes coalesce
//! under a burst, e.g. a bulk switch of 1,000 banks is one or a few writes).

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use tokio::sync::watch;
use tracing::{error, info, warn};

/// The file's format version. A newer version is refused, not guessed at.
pub const FORMAT_VERSION: u32 = 1;

/// The file name inside the state directory.
pub const FILE_NAME: &str = "routes.json";

/// Everything kept.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteState {
    /// [`FORMAT_VERSION`].
    pub version: u32,
    /// By bank id.
    pub banks: BTreeMap<String, BankRoute>,
    /// By node id.
    #[serde(default)]
    pub nodes: BTreeMap<String, NodeAdmin>,
}

/// One bank.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BankRoute {
    /// The node the bank is routed to.
    pub active: String,
    /// The node the operator chose for it.
    pub intent: String,
    /// Automatic failover and failback leave the bank alone.
    #[serde(default)]
    pub maintenance: bool,
}

/// One node.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeAdmin {
    /// No bank is moved to the node, automatically or by an operator.
    pub maintenance: bool,
}

/// The state file could not be used.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// Reading failed.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// Cause.
        source: std::io::Error,
    },
    /// Not our JSON.
    #[error("{path}: not a routes file: {source}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// Cause.
        source: serde_json::Error,
    },
    /// Written by a newer `mups`.
    #[error("{path}: format version {found}, this mups reads version {FORMAT_VERSION}")]
    Version {
        /// The file.
        path: PathBuf,
        /// Its version.
        found: u32,
    },
}

/// The state file's path.
pub fn file_path(dir: &Path) -> PathBuf {
    dir.join(FILE_NAME)
}

/// Reads the state file; `Ok(None)` when there is none yet.
pub fn load(dir: &Path) -> Result<Option<RouteState>, LoadError> {
    let path = file_path(dir);
    let text = match std::fs::read(&path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => return Err(LoadError::Io { path, source }),
    };
    let state: RouteState =
        serde_json::from_slice(&text).map_err(|source| LoadError::Parse { path: path.clone(), source })?;
    if state.version != FORMAT_VERSION {
        return Err(LoadError::Version { path, found: state.version });
    }
    Ok(Some(state))
}

/// Moves an unusable state file aside (`routes.json.bad-<unix seconds>`), so the
/// operator can inspect it and the next write does not destroy the evidence.
pub fn set_aside(dir: &Path) -> std::io::Result<PathBuf> {
    let secs = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let aside = dir.join(format!("{FILE_NAME}.bad-{secs}"));
    std::fs::rename(file_path(dir), &aside)?;
    Ok(aside)
}

/// Replaces the state file atomically.
pub fn save(dir: &Path, state: &RouteState) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    let tmp = dir.join(format!(".{FILE_NAME}.tmp"));
    let mut body = serde_json::to_vec_pretty(state).map_err(std::io::Error::other)?;
    body.push(b'\n');
    {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(&body)?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, file_path(dir))?;
    // The rename is durable only once the directory entry is.
    std::fs::File::open(dir)?.sync_all()
}

/// Writes every new state published on `states` until the sender is dropped, then
/// writes the last one (if not yet written) and returns.
pub async fn run_writer(dir: PathBuf, mut states: watch::Receiver<RouteState>) {
    let mut written: Option<RouteState> = None;
    loop {
        let changed = states.changed().await;
        let state = states.borrow_and_update().clone();
        if written.as_ref() != Some(&state) {
            let d = dir.clone();
            let s = state.clone();
            match tokio::task::spawn_blocking(move || save(&d, &s)).await {
                Ok(Ok(())) => written = Some(state),
                Ok(Err(e)) => {
                    error!(dir = %dir.display(), error = %e, "cannot write the routes file: routes will not survive a restart")
                }
                Err(e) => error!(error = %e, "routes writer task failed"),
            }
        }
        if changed.is_err() {
            return;
        }
    }
}

/// Loads the state at start. An unusable file is set aside and logged; `mups` then
/// starts from the configuration (both nodes of a bank are valid processing nodes,
/// so this is safe; refusing to start would take every bank down instead).
pub fn load_or_set_aside(dir: &Path) -> Option<RouteState> {
    match load(dir) {
        Ok(Some(state)) => {
            info!(file = %file_path(dir).display(), banks = state.banks.len(), "routes restored");
            Some(state)
        }
        Ok(None) => None,
        Err(e) => {
            match set_aside(dir) {
                Ok(aside) => {
                    warn!(error = %e, set_aside = %aside.display(), "routes file unusable: starting from the configuration")
                }
                Err(io) => {
                    warn!(error = %e, rename_error = %io, "routes file unusable and could not be set aside: starting from the configuration")
                }
            }
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> RouteState {
        let mut s = RouteState { version: FORMAT_VERSION, ..Default::default() };
        s.banks
            .insert("bank-1".into(), BankRoute { active: "B".into(), intent: "A".into(), maintenance: true });
        s.nodes.insert("A".into(), NodeAdmin { maintenance: true });
        s
    }

    fn tempdir(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("mups-persist-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        d
    }

    #[test]
    fn save_then_load_gives_the_same_state_and_leaves_no_temporary_file() {
        let dir = tempdir("roundtrip");
        assert!(load(&dir).unwrap().is_none());
        save(&dir, &sample()).unwrap();
        assert_eq!(load(&dir).unwrap(), Some(sample()));
        let names: Vec<String> =
            std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
        assert_eq!(names, [FILE_NAME]);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_bad_or_newer_file_is_refused_and_set_aside() {
        let dir = tempdir("bad");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(file_path(&dir), b"{\"version\": 1, \"banks\": ").unwrap();
        assert!(matches!(load(&dir), Err(LoadError::Parse { .. })));
        assert!(load_or_set_aside(&dir).is_none());
        assert!(!file_path(&dir).exists());
        assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 1, "the bad file is kept aside");

        let mut newer = sample();
        newer.version = FORMAT_VERSION + 1;
        save(&dir, &newer).unwrap();
        assert!(matches!(load(&dir), Err(LoadError::Version { found, .. }) if found == FORMAT_VERSION + 1));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[tokio::test]
    async fn the_writer_writes_the_latest_state_and_the_last_one_at_shutdown() {
        let dir = tempdir("writer");
        let (tx, rx) = watch::channel(RouteState { version: FORMAT_VERSION, ..Default::default() });
        let writer = tokio::spawn(run_writer(dir.clone(), rx));
        tx.send(sample()).unwrap();
        let mut last = sample();
        last.banks.get_mut("bank-1").unwrap().active = "A".into();
        tx.send(last.clone()).unwrap();
        drop(tx);
        writer.await.unwrap();
        assert_eq!(load(&dir).unwrap(), Some(last));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
