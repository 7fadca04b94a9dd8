//! Where a member keeps the APTPL persistent reservation state of its
//! logical units: one file per device in the state directory, in the saved
//! form of [`PrState::to_text`], written atomically (temp file, fsync,
//! rename, directory fsync) while APTPL is set and removed when it is
//! cleared. The SCSI layer calls it through [`PrStore`] after each change.

use std::io::{self, Write as _};
use std::path::PathBuf;

use crate::scsi::{PrState, PrStore};

/// Keeps APTPL state in one file.
#[derive(Debug, Clone)]
pub struct FilePrStore {
    path: PathBuf,
}

impl FilePrStore {
    /// A store at `path`.
    pub fn new(path: PathBuf) -> Self {
        FilePrStore { path }
    }
}

impl PrStore for FilePrStore {
    fn load(&self) -> io::Result<Option<PrState>> {
        match std::fs::read_to_string(&self.path) {
            Ok(text) => PrState::from_text(&text).map(Some).ok_or_else(|| {
                io::Error::new(io::ErrorKind::InvalidData, "bad reservation state file")
            }),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    fn save(&self, state: &PrState) -> io::Result<()> {
        if !state.aptpl {
            return match std::fs::remove_file(&self.path) {
                Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
                _ => Ok(()),
            };
        }
        let tmp = self.path.with_extension("pr.tmp");
        {
            use std::os::unix::fs::OpenOptionsExt;
            // Registration keys are the initiators' business: private.
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(0o600)
                .open(&tmp)?;
            f.write_all(state.to_text().as_bytes())?;
            f.sync_all()?;
        }
        std::fs::rename(&tmp, &self.path)?;
        if let Some(dir) = self.path.parent() {
            if let Ok(d) = std::fs::File::open(dir) {
                let _ = d.sync_all();
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scsi::{ItNexus, Registration};

    #[test]
    fn aptpl_file_written_and_removed() {
        let dir = std::env::temp_dir().join(format!("trellis-pr-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("disk0.pr");
        let store = FilePrStore::new(path.clone());
        assert_eq!(store.load().unwrap(), None);
        let mut s = PrState::default();
        s.aptpl = true;
        s.generation = 3;
        s.registrations.push(Registration {
            key: 42,
            nexus: ItNexus::iscsi("iqn.2026-01.test:ini", [0x80, 0, 0, 0, 0, 1], 1),
        });
        store.save(&s).unwrap();
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let back = store.load().unwrap().unwrap();
        assert_eq!(back.registrations, s.registrations);
        assert_eq!(back.generation, 3);
        // APTPL cleared: the file goes.
        s.aptpl = false;
        store.save(&s).unwrap();
        assert!(!path.exists());
        assert_eq!(store.load().unwrap(), None);
        std::fs::write(&path, "garbage").unwrap();
        assert_eq!(store.load().unwrap_err().kind(), io::ErrorKind::InvalidData);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
