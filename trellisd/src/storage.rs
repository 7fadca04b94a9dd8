//! Where this member lets the replicated configuration put a device's
//! blocks. The API token writes the replicated configuration, so it must
//! not reach past what the member's own config file allows:
//!
//! - a **file** only inside `[cluster] storage_dir`, after every symbolic
//!   link and `..` is resolved;
//! - a **block device** only where it is one that a `[cluster]
//!   block_devices` pattern names (again after resolving links, so
//!   `/dev/disk/by-id/x` and the `/dev/sdX` it points to are one), opened
//!   exclusively (a mounted or otherwise held device is refused);
//! - a file is **extended only if Trellis created it for that device**: a
//!   new file gets the device's UUID in the extended attribute
//!   `user.trellis.device`; a file without that tag is used as it is, and
//!   a device larger than it is refused.
//!
//! ```text
//!  backing path ─> Storage::place ─┬ File(canonical)        existing regular file under the dir
//!                                  ├ NewFile(canonical)     missing; its directory is under the dir
//!                                  └ BlockDevice(canonical) matches a block_devices pattern
//!  Place ─> Storage::open   (every data member, as it serves the device)
//!        └> Storage::check  (the member taking a create or a grow, before Raft)
//! ```
//!
//! The opened descriptor is checked again through `/proc/self/fd`, so a
//! link swapped in between resolving and opening is caught too.

use std::io::ErrorKind;
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileTypeExt;
use std::path::{Component, Path, PathBuf};

use trellis_control::config::{Backing, ConfigError, Device, MAX_DEVICE_SIZE};
use trellis_datapath::{BackingStore, FileOpen, FileStore, OWNER_XATTR};

/// This member's storage rules, from its own config file.
#[derive(Debug, Clone)]
pub struct Storage {
    /// The storage directory, canonical.
    dir: PathBuf,
    /// Absolute patterns of allowed block devices (`*` and `?` within a
    /// component).
    block_devices: Vec<PathBuf>,
    /// This member's own state (its data directory, canonical): a file
    /// there backs a device only if Trellis created it for that device
    /// (never the configuration database, reservation or UUID files).
    private: Option<PathBuf>,
}

/// Where a backing path resolves to, once allowed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Place {
    /// An existing regular file inside the storage directory.
    File(PathBuf),
    /// A file to create inside the storage directory.
    NewFile(PathBuf),
    /// An allowed block device.
    BlockDevice(PathBuf),
}

impl Storage {
    /// Rules with files under `dir` (which must exist) and block devices
    /// matching `block_devices`.
    pub fn new(dir: &Path, block_devices: Vec<PathBuf>) -> std::io::Result<Self> {
        Ok(Self {
            dir: std::fs::canonicalize(dir)?,
            block_devices,
            private: None,
        })
    }

    /// The same rules, and `data_dir` (this member's own state) off limits
    /// but for files Trellis created for their device.
    pub fn with_private(mut self, data_dir: &Path) -> std::io::Result<Self> {
        self.private = Some(std::fs::canonicalize(data_dir)?);
        Ok(self)
    }

    /// Refuses an existing file without `d`'s tag inside the member's own
    /// state.
    fn own_state(&self, path: &Path, owned: bool) -> Result<(), String> {
        match &self.private {
            Some(p) if !owned && path.starts_with(p) => Err(format!(
                "resolves to {}, in this member's data directory {}, where only a file Trellis created for this device may back it (set [cluster] storage_dir to a directory of its own for other files)",
                path.display(),
                p.display()
            )),
            _ => Ok(()),
        }
    }

    /// Rules that allow nothing (a witness has no storage).
    pub fn none() -> Self {
        Self {
            dir: PathBuf::new(),
            block_devices: Vec::new(),
            private: None,
        }
    }

    /// Resolves `backing` (relative: under the storage directory) and says
    /// where it lands, or why this member does not allow it.
    pub fn place(&self, backing: &Path) -> Result<Place, String> {
        let path = if backing.is_absolute() {
            backing.to_owned()
        } else {
            self.dir.join(backing)
        };
        match std::fs::canonicalize(&path) {
            Ok(real) => {
                let meta = std::fs::metadata(&real)
                    .map_err(|e| format!("cannot be examined ({}): {e}", real.display()))?;
                if meta.is_file() {
                    self.inside(&real)?;
                    Ok(Place::File(real))
                } else if meta.file_type().is_block_device() {
                    if self.block_device_allowed(&real) {
                        Ok(Place::BlockDevice(real))
                    } else {
                        Err(format!(
                            "is the block device {}, which matches none of this member's [cluster] block_devices patterns{}",
                            real.display(),
                            self.listed_patterns()
                        ))
                    }
                } else if meta.is_dir() {
                    Err(format!(
                        "is the directory {}, not a file or block device",
                        real.display()
                    ))
                } else {
                    Err(format!(
                        "is {}, neither a regular file nor a block device",
                        real.display()
                    ))
                }
            }
            Err(e) if matches!(e.kind(), ErrorKind::NotFound | ErrorKind::NotADirectory) => {
                if let Ok(link) = std::fs::read_link(&path) {
                    return Err(format!(
                        "is a symbolic link to {}, which does not exist",
                        link.display()
                    ));
                }
                let (Some(parent), Some(Component::Normal(name))) =
                    (path.parent(), path.components().next_back())
                else {
                    return Err("names no file".into());
                };
                let dir = match std::fs::canonicalize(parent) {
                    Ok(d) if d.is_dir() => d,
                    _ => {
                        return Err(format!(
                            "would be created in {}, which is not a directory (every data member opens this path: mount the shared storage there or fix the path)",
                            parent.display()
                        ))
                    }
                };
                let new = dir.join(name);
                self.inside(&new)?;
                Ok(Place::NewFile(new))
            }
            Err(e) => Err(format!("cannot be examined ({}): {e}", path.display())),
        }
    }

    /// Refuses `real` (canonical) unless it lies inside the storage
    /// directory.
    fn inside(&self, real: &Path) -> Result<(), String> {
        if !self.dir.as_os_str().is_empty() && real.starts_with(&self.dir) && real != self.dir {
            Ok(())
        } else {
            Err(format!(
                "resolves to {}, outside this member's storage directory {} (device files live there; block devices must match [cluster] block_devices)",
                real.display(),
                self.dir.display()
            ))
        }
    }

    fn listed_patterns(&self) -> String {
        if self.block_devices.is_empty() {
            " (none are configured: no block device may be exported)".into()
        } else {
            let list: Vec<String> = self
                .block_devices
                .iter()
                .map(|p| p.display().to_string())
                .collect();
            format!(" ({})", list.join(", "))
        }
    }

    /// Whether the canonical block device `real` is what an allowed
    /// pattern names (the pattern's matches are resolved too).
    fn block_device_allowed(&self, real: &Path) -> bool {
        self.block_devices.iter().any(|pattern| {
            expand(pattern)
                .iter()
                .any(|m| std::fs::canonicalize(m).is_ok_and(|c| c == real))
        })
    }

    /// Opens `d`'s backing as a data member serves it: a new file is
    /// created (0600) and tagged for the device; an existing file is
    /// extended to the device's size only if it carries the device's tag;
    /// a block device is opened exclusively and must hold the device.
    pub fn open(&self, d: &Device) -> Result<FileStore, String> {
        self.open_once(d, true)
    }

    /// [`Storage::open`]; `again`: a file another member created first
    /// may be opened as theirs once.
    fn open_once(&self, d: &Device, again: bool) -> Result<FileStore, String> {
        let Backing::Path(p) = &d.backing else {
            return Err("is not a path".into());
        };
        let tag = d.uuid.to_string();
        let opts = FileOpen {
            no_follow: true,
            ..FileOpen::default()
        };
        let store = match self.place(p)? {
            Place::NewFile(path) => {
                // Created empty; checked to be what was asked for; tagged;
                // only then sized (by `fit`), so a file created elsewhere
                // through a swapped link is refused while still empty.
                let created = FileStore::open_opts(
                    &path,
                    FileOpen {
                        create: Some(0),
                        create_new: true,
                        ..opts
                    },
                );
                match created {
                    Ok(s) => {
                        let s = self.verify(s, &path)?;
                        if let Err(e) = s.set_owner_tag(&tag) {
                            tracing::warn!(device = %d.name, path = %path.display(), error = %e, "cannot tag the new backing file as this device's (no extended attributes here?): it will not be grown later");
                        }
                        s
                    }
                    // Another member created it first: open it as theirs.
                    Err(trellis_datapath::StoreError::Open { source, .. })
                        if again && source.kind() == ErrorKind::AlreadyExists =>
                    {
                        return self.open_once(d, false);
                    }
                    Err(e) => return Err(error_chain(&e)),
                }
            }
            Place::File(path) => {
                let s = FileStore::open_opts(&path, opts).map_err(|e| error_chain(&e))?;
                self.verify(s, &path)?
            }
            Place::BlockDevice(path) => {
                let s = FileStore::open_opts(
                    &path,
                    FileOpen {
                        exclusive: true,
                        ..opts
                    },
                )
                .map_err(|e| in_use(&e).unwrap_or_else(|| error_chain(&e)))?;
                self.verify(s, &path)?
            }
        };
        self.fit(store, d)
    }

    /// Checks that the opened `store` is `path` (nothing was swapped in
    /// between resolving and opening).
    fn verify(&self, store: FileStore, path: &Path) -> Result<FileStore, String> {
        let fd = store.fd().as_raw_fd();
        let opened = std::fs::read_link(format!("/proc/self/fd/{fd}"))
            .map_err(|e| format!("cannot tell what was opened: {e}"))?;
        if opened != path {
            return Err(format!(
                "changed while it was opened: {} instead of {}",
                opened.display(),
                path.display()
            ));
        }
        Ok(store)
    }

    /// Whether the opened `store` may back `d` (at `d`'s size, growing a
    /// file if needed): a block device must be large enough; a file in
    /// the member's own state must carry `d`'s tag, and one without it
    /// must be large enough already. Returns whether it is `d`'s own file
    /// (tagged: it may be extended).
    fn judge(&self, store: &FileStore, d: &Device) -> Result<bool, String> {
        let size = store.size();
        if store.is_block_device() {
            if size < d.size {
                return Err(format!(
                    "is a block device of {size} bytes, smaller than the device ({} bytes)",
                    d.size
                ));
            }
            return Ok(false);
        }
        let owned = store.owner_tag().as_deref() == Some(d.uuid.to_string().as_str());
        if let Some(path) = store.path() {
            self.own_state(path, owned)?;
        }
        if size < d.size && !owned {
            return Err(not_ours(size, d));
        }
        Ok(owned)
    }

    /// Makes `store` hold `d` as [`Storage::judge`] allows: a file of its
    /// own is extended to the device's size, and only such a file may
    /// grow later.
    fn fit(&self, mut store: FileStore, d: &Device) -> Result<FileStore, String> {
        let owned = self.judge(&store, d)?;
        if !store.is_block_device() {
            store.set_extend(owned);
            if store.size() < d.size {
                store
                    .grow(d.size)
                    .map_err(|e| format!("cannot be extended: {e}"))?;
            }
        }
        Ok(store)
    }

    /// Whether this member could serve `d` as it would be written (a new
    /// device, or one grown to `d.size`), without changing anything:
    /// the place is allowed; an existing file opens read-write and either
    /// holds the device or carries its tag; a new file can be created at
    /// that size in its directory (probed with a hidden file, removed
    /// again); a block device holds the device and is not in use
    /// elsewhere. `served` names the device this member serves from a path
    /// already, if any (an exclusive open of it here would fail on
    /// ourselves).
    pub fn check(
        &self,
        member: &str,
        d: &Device,
        served: &dyn Fn(&Path) -> Option<String>,
    ) -> Result<(), ConfigError> {
        let Backing::Path(p) = &d.backing else {
            return Ok(());
        };
        let refuse = |reason: String| ConfigError::InvalidBacking {
            device: d.name.clone(),
            path: p.display().to_string(),
            reason: format!("{reason} (on member {member})"),
        };
        if d.size > MAX_DEVICE_SIZE {
            return Err(refuse(format!(
                "cannot hold a device of {} bytes: the largest is {MAX_DEVICE_SIZE} bytes",
                d.size
            )));
        }
        let opts = FileOpen {
            no_follow: true,
            ..FileOpen::default()
        };
        match self.place(p).map_err(&refuse)? {
            Place::File(path) => {
                let s = FileStore::open_opts(&path, opts).map_err(|e| {
                    refuse(format!(
                        "cannot be opened for reading and writing: {}",
                        error_chain(&e)
                    ))
                })?;
                self.judge(&s, d).map(|_| ()).map_err(&refuse)
            }
            Place::NewFile(path) => {
                let dir = path.parent().unwrap_or(&self.dir);
                probe_create(dir, d.size).map_err(|e| {
                    refuse(match e.raw_os_error() {
                        Some(libc::EFBIG) | Some(libc::EINVAL) => format!(
                            "would be created in {}, whose filesystem does not hold a file of {} bytes",
                            dir.display(),
                            d.size
                        ),
                        _ => format!(
                            "would be created in {}, where this member cannot create a file: {e}",
                            dir.display()
                        ),
                    })
                })
            }
            Place::BlockDevice(path) => {
                let owner = served(&path);
                if let Some(other) = owner.as_ref().filter(|n| **n != d.name) {
                    return Err(refuse(format!(
                        "is the block device {}, which already backs device {other}",
                        path.display()
                    )));
                }
                // Exclusive unless this very device holds it here now.
                let s = FileStore::open_opts(
                    &path,
                    FileOpen {
                        exclusive: owner.is_none(),
                        ..opts
                    },
                )
                .map_err(|e| refuse(in_use(&e).unwrap_or_else(|| error_chain(&e))))?;
                self.judge(&s, d).map(|_| ()).map_err(&refuse)
            }
        }
    }
}

/// Why an existing untagged file smaller than `d` is not used.
fn not_ours(size: u64, d: &Device) -> String {
    format!(
        "is a file of {size} bytes, smaller than the device ({} bytes), that Trellis did not create for this device (no {} tag): it is never extended (give a size of at most {size} bytes, or a new path)",
        d.size,
        OWNER_XATTR.to_string_lossy()
    )
}

/// The reason for a refused exclusive open of a block device.
fn in_use(e: &trellis_datapath::StoreError) -> Option<String> {
    match e {
        trellis_datapath::StoreError::Open { path, source }
            if source.raw_os_error() == Some(libc::EBUSY) =>
        {
            Some(format!(
                "is the block device {}, which is in use (mounted, or held by another program)",
                path.display()
            ))
        }
        _ => None,
    }
}

/// `e` and its sources, one after the other.
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut next = e.source();
    while let Some(cause) = next {
        s.push_str(": ");
        s.push_str(&cause.to_string());
        next = cause.source();
    }
    s
}

/// Whether a file of `size` bytes can be created in `dir`: creates a
/// hidden probe file, sets its length and removes it (permissions alone
/// do not tell: root passes them, a read-only mount does not; nor does
/// the filesystem's largest file size).
fn probe_create(dir: &Path, size: u64) -> std::io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    let probe = dir.join(format!(".trellis-probe-{}-{nanos}", std::process::id()));
    let file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW)
        .open(&probe)?;
    let sized = file.set_len(size);
    drop(file);
    std::fs::remove_file(&probe)?;
    sized
}

/// The existing paths `pattern` (absolute; `*` and `?` match within one
/// component) names.
fn expand(pattern: &Path) -> Vec<PathBuf> {
    let mut found = vec![PathBuf::from("/")];
    for comp in pattern.components() {
        let name = match comp {
            Component::RootDir => continue,
            Component::Normal(n) => n.to_string_lossy(),
            // Refused when the config is read.
            _ => return Vec::new(),
        };
        if !name.contains(['*', '?']) {
            for f in &mut found {
                f.push(&*name);
            }
            continue;
        }
        let mut next = Vec::new();
        for dir in &found {
            let Ok(entries) = std::fs::read_dir(dir) else {
                continue;
            };
            for e in entries.flatten() {
                if wildcard(&name, &e.file_name().to_string_lossy()) {
                    next.push(dir.join(e.file_name()));
                }
            }
        }
        next.sort();
        found = next;
    }
    found
}

/// Whether `name` matches `pattern` (`*`: any run of characters, `?`: one).
fn wildcard(pattern: &str, name: &str) -> bool {
    let (p, n): (Vec<char>, Vec<char>) = (pattern.chars().collect(), name.chars().collect());
    // Classic two-pointer match with backtracking to the last `*`.
    let (mut i, mut j, mut star, mut mark) = (0, 0, None, 0);
    while j < n.len() {
        if i < p.len() && (p[i] == '?' || p[i] == n[j]) {
            i += 1;
            j += 1;
        } else if i < p.len() && p[i] == '*' {
            star = Some(i);
            mark = j;
            i += 1;
        } else if let Some(s) = star {
            i = s + 1;
            mark += 1;
            j = mark;
        } else {
            return false;
        }
    }
    p[i..].iter().all(|&c| c == '*')
}

/// Checks a `block_devices` pattern from a config file: absolute, with no
/// `.` or `..`.
pub fn check_pattern(p: &Path) -> Result<(), String> {
    if !p.is_absolute() {
        return Err(format!("block device pattern {:?} is not absolute", p));
    }
    if p.components()
        .any(|c| !matches!(c, Component::RootDir | Component::Normal(_)))
    {
        return Err(format!(
            "block device pattern {:?} may hold no '.' or '..'",
            p
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    // Test helpers: a panic is the test failing.
    #![allow(clippy::unwrap_used)]

    use std::os::unix::fs::PermissionsExt;

    use uuid::Uuid;

    use super::*;

    fn dev(backing: Backing, size: u64) -> Device {
        Device {
            name: "d".into(),
            uuid: Uuid::from_u128(7),
            size,
            backing,
            block_size: 512,
            thin: true,
            read_only: false,
            set: trellis_control::config::DEFAULT_SET.into(),
            policy: Default::default(),
        }
    }

    fn nothing_served(_: &Path) -> Option<String> {
        None
    }

    /// The reason `storage` refuses `d` in the API's check (naming m1).
    fn check_refusal(storage: &Storage, d: &Device) -> String {
        match storage.check("m1", d, &nothing_served) {
            Err(ConfigError::InvalidBacking { device, reason, .. }) => {
                assert_eq!(device, "d");
                assert!(reason.contains("on member m1"), "{reason}");
                reason
            }
            other => panic!("{:?}: {other:?}", d.backing),
        }
    }

    /// A storage directory and, beside it, a decoy "system file" (never a
    /// real one) that no device may reach.
    struct Site {
        root: tempfile::TempDir,
    }

    const DECOY: &[u8] = b"root:x:0:0:decoy account, not a real passwd:/root:/bin/sh\n";

    impl Site {
        fn new() -> Self {
            let root = tempfile::tempdir().unwrap();
            std::fs::create_dir(root.path().join("storage")).unwrap();
            std::fs::create_dir(root.path().join("etc")).unwrap();
            std::fs::write(root.path().join("etc/passwd"), DECOY).unwrap();
            Self { root }
        }
        fn storage_dir(&self) -> PathBuf {
            self.root.path().join("storage")
        }
        fn decoy(&self) -> PathBuf {
            self.root.path().join("etc/passwd")
        }
        fn storage(&self) -> Storage {
            Storage::new(&self.storage_dir(), Vec::new()).unwrap()
        }
        /// The decoy is as it was: same bytes, same length.
        fn decoy_untouched(&self) {
            assert_eq!(std::fs::read(self.decoy()).unwrap(), DECOY);
        }
    }

    #[test]
    fn files_inside_the_storage_directory_are_allowed() {
        let site = Site::new();
        let dir = site.storage_dir();
        std::fs::write(dir.join("there.img"), vec![0u8; 1 << 20]).unwrap();
        std::fs::create_dir(dir.join("sub")).unwrap();
        let storage = site.storage();
        let path = |p: &str| Backing::Path(p.into());
        let abs = |p: &str| Backing::Path(dir.join(p));
        for ok in [
            Backing::Memory,
            path("there.img"),
            path("new.img"),
            path("sub/new.img"),
            abs("there.img"),
            abs("new.img"),
            abs("sub/../there.img"),
        ] {
            assert_eq!(
                storage.check("m1", &dev(ok.clone(), 1 << 20), &nothing_served),
                Ok(()),
                "{ok:?}"
            );
        }
        // The checks created nothing (their probes are gone).
        let mut left: Vec<_> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        left.sort();
        assert_eq!(left, ["sub", "there.img"]);
    }

    #[test]
    fn paths_leaving_the_storage_directory_are_refused_and_change_nothing() {
        let site = Site::new();
        let dir = site.storage_dir();
        let storage = site.storage();
        std::os::unix::fs::symlink(site.decoy(), dir.join("link.img")).unwrap();
        std::os::unix::fs::symlink(site.root.path().join("etc"), dir.join("etc")).unwrap();
        std::os::unix::fs::symlink(site.root.path().join("etc/new"), dir.join("dangling.img"))
            .unwrap();
        let outside = [
            Backing::Path(site.decoy()),
            Backing::Path(dir.join("../etc/passwd")),
            Backing::Path("link.img".into()),
            Backing::Path("etc/passwd".into()),
            Backing::Path("etc/fresh.img".into()),
            Backing::Path(site.root.path().join("etc/fresh.img")),
        ];
        for b in &outside {
            // Both the API's check and a member's open refuse, for a size
            // larger than the decoy (which a member used to extend).
            let d = dev(b.clone(), 4096);
            let why = check_refusal(&storage, &d);
            assert!(
                why.contains("outside this member's storage directory"),
                "{b:?}: {why}"
            );
            let open = storage.open(&d).unwrap_err();
            assert!(open.contains("outside"), "{b:?}: {open}");
        }
        let dangling = dev(Backing::Path("dangling.img".into()), 4096);
        assert!(check_refusal(&storage, &dangling).contains("which does not exist"));
        assert!(storage.open(&dangling).is_err());
        site.decoy_untouched();
        assert!(!site.root.path().join("etc/new").exists());
        assert!(!site.root.path().join("etc/fresh.img").exists());
        // Nor block or character devices outside the allow-list.
        let null = dev(Backing::Path("/dev/null".into()), 4096);
        assert!(check_refusal(&storage, &null).contains("neither"));
    }

    #[test]
    fn a_file_trellis_did_not_create_is_never_extended() {
        let site = Site::new();
        let dir = site.storage_dir();
        let storage = site.storage();
        // An admin's file of 1,221 bytes placed in the storage directory.
        let theirs = dir.join("theirs.img");
        std::fs::write(&theirs, vec![7u8; 1221]).unwrap();
        let big = dev(Backing::Path("theirs.img".into()), 4096);
        let why = check_refusal(&storage, &big);
        assert!(why.contains("did not create for this device"), "{why}");
        assert!(storage.open(&big).unwrap_err().contains("never extended"));
        assert_eq!(std::fs::metadata(&theirs).unwrap().len(), 1221);
        // A device that fits is served, but is never grown past the file.
        let small = dev(Backing::Path("theirs.img".into()), 1024);
        assert_eq!(storage.check("m1", &small, &nothing_served), Ok(()));
        let s = storage.open(&small).unwrap();
        assert!(s
            .grow(4096)
            .unwrap_err()
            .to_string()
            .contains("never extended"));
        assert_eq!(std::fs::metadata(&theirs).unwrap().len(), 1221);
    }

    #[test]
    fn a_new_file_is_private_tagged_and_grows() {
        let site = Site::new();
        let storage = site.storage();
        let d = dev(Backing::Path("new.img".into()), 1 << 20);
        let s = storage.open(&d).unwrap();
        let path = site.storage_dir().join("new.img");
        let meta = std::fs::metadata(&path).unwrap();
        assert_eq!(meta.permissions().mode() & 0o777, 0o600);
        assert_eq!(meta.len(), 1 << 20);
        assert_eq!(s.owner_tag(), Some(d.uuid.to_string()));
        s.grow(2 << 20).unwrap();
        assert_eq!(std::fs::metadata(&path).unwrap().len(), 2 << 20);
        drop(s);
        // Another member opening it (or this one after a restart) may grow
        // it; another device of the same path may not.
        let grown = dev(Backing::Path("new.img".into()), 4 << 20);
        assert_eq!(storage.check("m1", &grown, &nothing_served), Ok(()));
        storage.open(&grown).unwrap();
        assert_eq!(std::fs::metadata(&path).unwrap().len(), 4 << 20);
        let other = Device {
            uuid: Uuid::from_u128(8),
            size: 8 << 20,
            ..grown
        };
        assert!(check_refusal(&storage, &other).contains("did not create for this device"));
    }

    #[test]
    fn the_members_own_state_backs_no_device() {
        // The default: the storage directory is the data directory.
        let data = tempfile::tempdir().unwrap();
        let dir = data.path();
        std::fs::write(dir.join("control.redb"), vec![1u8; 8192]).unwrap();
        std::fs::write(dir.join("disk0.uuid"), b"uuid\n").unwrap();
        let storage = Storage::new(dir, Vec::new())
            .unwrap()
            .with_private(dir)
            .unwrap();
        for f in ["control.redb", "disk0.uuid"] {
            let d = dev(Backing::Path(f.into()), 512);
            let why = check_refusal(&storage, &d);
            assert!(
                why.contains("in this member's data directory"),
                "{f}: {why}"
            );
            assert!(
                storage.open(&d).unwrap_err().contains("data directory"),
                "{f}"
            );
        }
        assert_eq!(
            std::fs::read(dir.join("control.redb")).unwrap(),
            vec![1u8; 8192]
        );
        // A device file Trellis creates there is its own.
        let d = dev(Backing::Path("d.img".into()), 1 << 20);
        assert_eq!(storage.check("m1", &d, &nothing_served), Ok(()));
        storage.open(&d).unwrap();
        storage.open(&d).unwrap();
        assert_eq!(std::fs::metadata(dir.join("d.img")).unwrap().len(), 1 << 20);
    }

    #[test]
    fn absurd_sizes_are_refused() {
        let site = Site::new();
        let storage = site.storage();
        let why = check_refusal(
            &storage,
            &dev(Backing::Path("huge.img".into()), u64::MAX - 511),
        );
        assert!(why.contains("the largest is"), "{why}");
        assert!(!site.storage_dir().join("huge.img").exists());
    }

    /// A loop device over a file of `size` bytes, detached on drop.
    struct Loop {
        path: PathBuf,
        // Removed after the device is detached.
        _file: tempfile::NamedTempFile,
    }

    impl Loop {
        fn new(size: u64) -> Self {
            let file = tempfile::NamedTempFile::new().unwrap();
            file.as_file().set_len(size).unwrap();
            Self::over(file)
        }
        fn over(file: tempfile::NamedTempFile) -> Self {
            let out = std::process::Command::new("losetup")
                .args(["--find", "--show"])
                .arg(file.path())
                .output()
                .expect("losetup (util-linux) runs");
            assert!(out.status.success(), "losetup needs root: {out:?}");
            Self {
                path: String::from_utf8(out.stdout).unwrap().trim().into(),
                _file: file,
            }
        }
    }

    impl Drop for Loop {
        fn drop(&mut self) {
            let _ = std::process::Command::new("losetup")
                .arg("-d")
                .arg(&self.path)
                .status();
        }
    }

    fn run(cmd: &str, args: &[&std::ffi::OsStr]) {
        let out = std::process::Command::new(cmd).args(args).output().unwrap();
        assert!(out.status.success(), "{cmd} {args:?}: {out:?}");
    }

    #[test]
    fn block_devices_only_from_the_allow_list_exclusively_and_large_enough() {
        let lo = Loop::new(4 << 20);
        let site = Site::new();
        // A by-id style directory of links, as /dev/disk/by-id is.
        let by_id = site.root.path().join("by-id");
        std::fs::create_dir(&by_id).unwrap();
        std::os::unix::fs::symlink(&lo.path, by_id.join("wwn-test-a")).unwrap();
        let device = |p: &Path, size: u64| Device {
            name: "san".into(),
            ..dev(Backing::Path(p.to_owned()), size)
        };
        // Not listed: refused by path and through the link.
        let closed = site.storage();
        for p in [lo.path.clone(), by_id.join("wwn-test-a")] {
            let why = check_refusal(
                &closed,
                &Device {
                    name: "d".into(),
                    ..device(&p, 1 << 20)
                },
            );
            assert!(why.contains("none are configured"), "{why}");
        }
        let open = Storage::new(&site.storage_dir(), vec![by_id.join("wwn-*")]).unwrap();
        let other = Storage::new(&site.storage_dir(), vec![by_id.join("nvme-*")]).unwrap();
        assert!(other
            .place(&lo.path)
            .unwrap_err()
            .contains("matches none of this member's [cluster] block_devices patterns"));
        for p in [lo.path.clone(), by_id.join("wwn-test-a")] {
            assert_eq!(open.place(&p), Ok(Place::BlockDevice(lo.path.clone())));
            assert_eq!(
                open.check("m2", &device(&p, 4 << 20), &nothing_served),
                Ok(())
            );
        }
        match open.check("m2", &device(&lo.path, 8 << 20), &nothing_served) {
            Err(ConfigError::InvalidBacking { reason, .. }) => assert!(
                reason.contains("block device of 4194304 bytes")
                    && reason.contains("smaller than the device (8388608 bytes)"),
                "{reason}"
            ),
            other => panic!("{other:?}"),
        }
        // Served, it is held exclusively: another opener is refused, the
        // device itself (a grow check) is not, another device is.
        let held = open.open(&device(&lo.path, 4 << 20)).unwrap();
        let again = open.open(&device(&lo.path, 4 << 20)).unwrap_err();
        assert!(again.contains("in use"), "{again}");
        let ours = |_: &Path| Some("san".to_owned());
        assert_eq!(open.check("m2", &device(&lo.path, 4 << 20), &ours), Ok(()));
        let theirs = |_: &Path| Some("other".to_owned());
        match open.check("m2", &device(&lo.path, 4 << 20), &theirs) {
            Err(ConfigError::InvalidBacking { reason, .. }) => {
                assert!(reason.contains("already backs device other"), "{reason}")
            }
            other => panic!("{other:?}"),
        }
        drop(held);
        // A mounted device is in use too.
        let fs = Loop::new(16 << 20);
        run("mkfs.ext4", &["-q".as_ref(), fs.path.as_os_str()]);
        std::os::unix::fs::symlink(&fs.path, by_id.join("wwn-test-b")).unwrap();
        let mnt = tempfile::tempdir().unwrap();
        run("mount", &[fs.path.as_os_str(), mnt.path().as_os_str()]);
        let why = open
            .check("m2", &device(&fs.path, 1 << 20), &nothing_served)
            .unwrap_err()
            .to_string();
        let opened = open.open(&device(&fs.path, 1 << 20)).unwrap_err();
        run("umount", &[mnt.path().as_os_str()]);
        assert!(why.contains("in use (mounted"), "{why}");
        assert!(opened.contains("in use"), "{opened}");
    }

    #[test]
    fn a_size_the_filesystem_cannot_hold_is_refused() {
        // ext4 (4 KiB blocks) holds files up to 16 TiB.
        let image = tempfile::NamedTempFile::new().unwrap();
        image.as_file().set_len(32 << 20).unwrap();
        run(
            "mkfs.ext4",
            &[
                "-q".as_ref(),
                "-b".as_ref(),
                "4096".as_ref(),
                image.path().as_os_str(),
            ],
        );
        let lo = Loop::over(image);
        let mnt = tempfile::tempdir().unwrap();
        run("mount", &[lo.path.as_os_str(), mnt.path().as_os_str()]);
        let storage = Storage::new(mnt.path(), Vec::new()).unwrap();
        let fits = storage.check(
            "m1",
            &dev(Backing::Path("a.img".into()), 1 << 40),
            &nothing_served,
        );
        let why = check_refusal(&storage, &dev(Backing::Path("a.img".into()), 1 << 50));
        let left = std::fs::read_dir(mnt.path()).unwrap().count();
        run("umount", &[mnt.path().as_os_str()]);
        assert_eq!(fits, Ok(()));
        assert!(
            why.contains("does not hold a file of 1125899906842624 bytes"),
            "{why}"
        );
        assert_eq!(left, 1, "only lost+found: the probes are gone");
    }

    /// `dir` bind-mounted read-only on a new directory, unmounted on drop.
    struct ReadOnlyView(tempfile::TempDir);

    impl ReadOnlyView {
        fn of(dir: &Path) -> Self {
            let at = tempfile::tempdir().unwrap();
            run(
                "mount",
                &["--bind".as_ref(), dir.as_os_str(), at.path().as_os_str()],
            );
            let view = Self(at);
            run(
                "mount",
                &[
                    "-o".as_ref(),
                    "remount,bind,ro".as_ref(),
                    view.0.path().as_os_str(),
                ],
            );
            view
        }
    }

    impl Drop for ReadOnlyView {
        fn drop(&mut self) {
            let _ = std::process::Command::new("umount")
                .arg(self.0.path())
                .status();
        }
    }

    #[test]
    fn a_backing_members_cannot_write_is_refused() {
        let site = Site::new();
        std::fs::write(site.storage_dir().join("there.img"), [0u8; 512]).unwrap();
        let view = ReadOnlyView::of(&site.storage_dir());
        let storage = Storage::new(view.0.path(), Vec::new()).unwrap();
        // Even a read-only device: members open the store read-write.
        let d = |p: &str| Device {
            read_only: true,
            ..dev(Backing::Path(p.into()), 512)
        };
        let existing = check_refusal(&storage, &d("there.img"));
        assert!(
            existing.contains("cannot be opened for reading and writing"),
            "{existing}"
        );
        let new = check_refusal(&storage, &d("new.img"));
        assert!(new.contains("cannot create a file"), "{new}");
    }

    #[test]
    fn wildcards_match_within_a_component() {
        for (p, n, yes) in [
            ("wwn-*", "wwn-0x5000", true),
            ("wwn-*", "nvme-x", false),
            ("*", "", true),
            ("a?c", "abc", true),
            ("a?c", "ac", false),
            ("*-part?", "wwn-x-part1", true),
            ("*-part?", "wwn-x-part12", false),
            ("a*b*c", "a-b-b-c", true),
            ("a*b*c", "a-b-b-d", false),
        ] {
            assert_eq!(wildcard(p, n), yes, "{p} {n}");
        }
        assert!(check_pattern(Path::new("dev/x")).is_err());
        assert!(check_pattern(Path::new("/dev/../etc/x")).is_err());
        assert!(check_pattern(Path::new("/dev/disk/by-id/wwn-*")).is_ok());
    }
}
